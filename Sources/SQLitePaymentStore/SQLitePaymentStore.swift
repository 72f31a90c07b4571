import Acquiring
import CSQLite
import Synchronization
import MakePayment
import Processing

/// The embedded default store: one SQLite file in WAL mode. Writes go through one writer lane that
/// commits in groups (one fsync for everything that arrived meanwhile, `synchronous=FULL`, so a
/// recorded outcome survives a crash of the process or the machine); reads run in the caller, on a
/// read-only connection from a pool (WAL readers never wait for the writer or a sync). The clear PAN
/// is never stored: only the masked form.
public final class SQLitePaymentStore: PaymentStore {
    let writer: SQLiteWriter
    private let readers = Mutex<[SQLiteConnection]>([])
    private let checkpointer: SQLiteCheckpointer
    /// Payments registered here and not moved since: the makePayment front's read, from memory.
    let pending: PendingRegistrations
    public let path: String

    /// The worker's windows (its options' defaults), chosen on the Zen 3 machine of benchmarks/README.md;
    /// on the Zen 5 one, runs could not tell them from 0.5 / 1 ms.
    public static let defaultGroupCommitWindow: Duration = .milliseconds(2)
    public static let defaultBusyGroupCommitWindow: Duration = .milliseconds(5)

    /// The writer's thread, by the name the OS shows (`top -H`, `perf`, /proc/PID/task/*/comm).
    public static let writerThreadName = "sqlite-writer"

    /// - Parameter groupCommitWindow: how long the writer may wait for a group to fill under load
    ///   (never when writes are sparse); zero commits whatever has arrived at once.
    /// - Parameter busyGroupCommitWindow: the window while the signal given to `whenBusy` says the
    ///   CPU is saturated (nil: always `groupCommitWindow`).
    /// - Parameter pendingLimit: how many registered, not yet processed payments are remembered in
    ///   memory for the makePayment front, the latest registered (an older one, likely abandoned,
    ///   is read from the file; zero: always).
    /// - Parameter walRestartFrames: the WAL's length (in pages) past which the writer completes a
    ///   checkpoint between two groups so that the WAL starts again (4,096 pages: 16 MiB).
    /// - Parameter checkpointInterval: how often the checkpointer copies the WAL into the database file.
    public init(path: String, groupCommitWindow: Duration = defaultGroupCommitWindow,
                busyGroupCommitWindow: Duration? = nil,
                pendingLimit: Int = 100_000, walRestartFrames: Int = 4096,
                checkpointInterval: Duration = .milliseconds(250)) throws {
        self.path = path
        pending = PendingRegistrations(limit: pendingLimit)
        let write = try SQLiteConnection(path: path, readOnly: false)
        // SQLite says whether the switch to WAL took only in the row it returns.
        var mode = ""
        _ = try write.run("PRAGMA journal_mode=WAL") { mode = $0.text(0) }
        guard mode == "wal" else { throw SQLiteError(code: -1, message: "the store could not be put in WAL mode (journal_mode \(mode))") }
        try write.execute("PRAGMA synchronous=FULL")
        // Checkpoints run on a thread of their own, between the writer's groups (`CheckpointGate`),
        // not inside a commit, where one would also hold every payment waiting on that commit; the
        // writer only finishes one between two groups when the WAL has grown too long (`walRestartFrames`).
        try write.execute("PRAGMA wal_autocheckpoint=0")
        // A WAL that restarts keeps its file and is written again from the start; one that grew long
        // (a reader held an old snapshot, say) is cut back to four times the restart length when it
        // restarts (4 KiB pages plus a 24-byte frame header each).
        try write.execute("PRAGMA journal_size_limit=\(max(walRestartFrames, 1) * 4 * 4120)")
        try write.execute("PRAGMA foreign_keys=ON")
        // Not zeroing every byte a delete or a growing row frees (our build's default; Debian's
        // SQLite, which the store used before, zeroes them): nothing here needs it, since no clear
        // PAN or token is ever stored (masked PANs, SHA-256 of tokens), and a row's old bytes hold
        // what its new ones do.
        try write.execute("PRAGMA secure_delete=OFF")
        // 64 MiB of pages for the writer (SQLite's default is 2 MiB): every payment's two updates
        // land on a random leaf of a table that keeps growing, and a page not in the cache is a
        // read from the OS for each of them.
        try write.execute("PRAGMA cache_size=-65536")
        // The writer's and the checkpointer's gates: one file, opened by each (`CheckpointGate`).
        let writerGate = try CheckpointGate(databasePath: path)
        // Another process on the store may be checkpointing already.
        try writerGate.withGate { try Self.migrate(write) }
        writer = SQLiteWriter(connection: write, gate: writerGate, name: Self.writerThreadName,
                              gatherWindow: groupCommitWindow, busyWindow: busyGroupCommitWindow)
        let writer = self.writer
        // FULL for the checkpoints too (the build's default already): the database file is synced
        // before the WAL may start again over what was copied.
        let checkpoints = try SQLiteConnection(path: path, readOnly: false)
        try checkpoints.execute("PRAGMA synchronous=FULL")
        checkpointer = try SQLiteCheckpointer(
            connection: checkpoints, gate: CheckpointGate(databasePath: path),
            interval: checkpointInterval, restartFrames: max(walRestartFrames, 1), walTooLong: { writer.requestWALRestart() })
    }

    /// Lends a read-only connection to `body`, made on first need and kept for the next reader.
    private func read<T>(_ body: (SQLiteConnection) throws -> T) throws -> T {
        let connection = try readers.withLock { $0.popLast() } ?? SQLiteConnection(path: path, readOnly: true)
        defer { readers.withLock { $0.append(connection) } }
        return try body(connection)
    }

    deinit { close() }

    /// Sets what tells the store that the machine is saturated (the worker: makePayments queue for a
    /// worker); while it says so, the writer gathers for `busyGroupCommitWindow`.
    func whenBusy(_ signal: @escaping @Sendable () -> Bool) {
        writer.whenBusy(signal)
    }

    /// Sets what tells the store how many writes may come soon (the worker: makePayments taken by a
    /// worker and not yet answered). The writer stops gathering a group once all of them wait in it.
    func whenWritesUnderway(_ count: @escaping @Sendable () -> Int) {
        writer.whenWritesUnderway(count)
    }

    /// Both signals from the makePayment queue that `workers` workers take jobs from: saturated
    /// while more jobs wait than the workers will take next; the writes that may come soon are the
    /// jobs taken and not yet answered (so a lone payment's writes are committed at once, not held
    /// for a group that cannot fill).
    public func follow(_ queue: some MakePaymentQueue, workers: Int) {
        let workers = max(workers, 1)
        whenBusy { queue.depth >= workers }
        whenWritesUnderway { queue.inProgress }
    }

    /// What the writer has done so far, for metrics and benchmarks.
    public struct WriterStatistics: Sendable, Equatable {
        /// Group commits (COMMITs), and the writes they carried (one per caller).
        public var commits = 0, writes = 0
        /// Checkpoints the writer completed so that the WAL could start again (`requestWALRestart`).
        public var walRestarts = 0
        /// `slowGroups[i]`: groups that took `slowThresholds[i]` or longer from BEGIN to the end
        /// of COMMIT (their statements and the WAL's fsync), and `slowRestarts[i]` the same for
        /// the checkpoints the writer runs so that the WAL can restart (complete or not). The
        /// payments in such a group, and the writes queued behind it, waited that long: this is
        /// how a slow disk shows up in the worker's tail.
        public var slowGroups = [Int](repeating: 0, count: SQLiteWriter.slowThresholds.count)
        public var slowRestarts = [Int](repeating: 0, count: SQLiteWriter.slowThresholds.count)

        public init() {}
    }

    /// The writer's counts so far, read at one moment.
    public var writerStatistics: WriterStatistics { writer.counts }

    /// Whether the store's last group of writes failed, with none committed since (a full disk,
    /// another process holding the write lock past the busy timeout). Reads may work all the while.
    public var writesFailing: Bool { writer.lastGroupFailed }

    /// A write that changes a page and is synced like any other (a row of its own table): for a
    /// readiness check to learn whether writes work again once they failed, without traffic.
    public func probeWrite(now: Int64) async throws {
        try await writer.perform { db in _ = try db.run(Self.probeSQL, [.integer(now)]) }
    }
    static let probeSQL = "INSERT INTO write_probe (id, at) VALUES (1, ?1) ON CONFLICT (id) DO UPDATE SET at = ?1"

    /// The reversals still to be acknowledged (pending, in every process on the store), and the
    /// earliest time one of them is due: after an acquirer's outage, the backlog and how far
    /// behind its sending is. A count over the `reversals_due` index, for a scrape, not a hot path.
    public func reversalBacklog() throws -> (pending: Int, earliestDue: Int64?) {
        try read { db in
            var backlog: (pending: Int, earliestDue: Int64?) = (0, nil)
            try db.run("SELECT count(*), min(next_try_at) FROM reversals WHERE state = 'pending'") { row in
                backlog = (Int(row.int(0)), row.optionalInt(1))
            }
            return backlog
        }
    }

    /// The thresholds of `WriterStatistics.slowGroups` and `slowRestarts`, in seconds: 0.005, 0.02 and 0.1.
    public static let slowThresholds: [Double] = SQLiteWriter.slowThresholds.map { Double($0) / 1e9 }

    /// Finishes queued work and stops the lanes' threads.
    public func close() {
        writer.close()
        checkpointer.close()
        readers.withLock { $0.removeAll() }
    }

    /// What a payment's and a reversal's `state` may hold, written as comparisons: SQLite tests an
    /// `IN` list of more than two constants against a throw-away B-tree it builds for each row a
    /// CHECK looks at (its cache of such lists does not apply to constraints), which cost the
    /// writer ~2 µs per makePayment (benchmarks/HISTORY.md, seventeenth session).
    static let paymentStateCheck = "state = 'pending' OR state = 'processing' OR state = 'completed' OR state = 'cancelled'"
    static let reversalStateCheck = "state = 'pending' OR state = 'acknowledged' OR state = 'failed'"
    /// The same checks as stores made before the seventeenth session wrote them.
    static let stateCheckRewrites = [
        ("CHECK (state IN ('pending', 'processing', 'completed', 'cancelled'))", "CHECK (\(paymentStateCheck))"),
        ("CHECK (state IN ('pending', 'acknowledged', 'failed'))", "CHECK (\(reversalStateCheck))"),
    ]

    /// The store's format, in `PRAGMA user_version`: raised whenever a build writes something an
    /// older build would misread (1: the attempts' orphan times, twenty-first session). A build
    /// refuses to open a store of a newer format than its own (builds before format 1 do not look).
    static let formatVersion: Int64 = 1

    static func migrate(_ db: SQLiteConnection) throws {
        var found: Int64 = 0
        try db.run("PRAGMA user_version") { found = $0.int(0) }
        guard found <= formatVersion else {
            throw SQLiteError(code: SQLITE_CANTOPEN, message: "the store is of format \(found), written by a newer psp-worker; this build knows formats up to \(formatVersion)")
        }
        try db.execute(schema)
        try rewriteStateChecks(db)
        try addColumns(db)
        if found < formatVersion { try db.execute("PRAGMA user_version = \(formatVersion)") }
    }

    /// Columns newer than the first stores: `reversals`' of the nineteenth session (late
    /// approvals), `payments`' of the twenty-first (each attempt's own orphan time).
    static let addedColumns = [("reversals", "late_approved", "INTEGER NOT NULL DEFAULT 0"),
                               ("reversals", "settled_without_original", "INTEGER NOT NULL DEFAULT 0"),
                               ("payments", "attempt_orphaned_at", "INTEGER")]

    /// Adds to a store the columns it lacks (SQLite adds a column with a constant default without
    /// touching a row), under the write lock and checked again there, for another process opening
    /// the store at the same time. A store that has them is only read.
    static func addColumns(_ db: SQLiteConnection) throws {
        func missing() throws -> [(String, String, String)] {
            var present = Set<String>()
            for table in Set(addedColumns.map(\.0)) {
                try db.run("PRAGMA table_info(\(table))") { present.insert(table + "." + $0.text(1)) }
            }
            return addedColumns.filter { !present.contains($0.0 + "." + $0.1) }
        }
        guard try !missing().isEmpty else { return }
        try db.execute("BEGIN IMMEDIATE")
        do {
            for (table, name, definition) in try missing() { try db.execute("ALTER TABLE \(table) ADD COLUMN \(name) \(definition)") }
            try db.execute("COMMIT")
        } catch {
            try? db.execute("ROLLBACK")
            throw error
        }
    }

    static let schema = """
            CREATE TABLE IF NOT EXISTS payments (
                psp_transaction_id TEXT PRIMARY KEY,
                merchant_serial_number TEXT NOT NULL,
                merchant_order_id TEXT NOT NULL,
                amount INTEGER NOT NULL CHECK (amount >= 1),
                currency TEXT NOT NULL,
                token_hash BLOB NOT NULL,
                payment_text TEXT NOT NULL,
                state TEXT NOT NULL CHECK (\(SQLitePaymentStore.paymentStateCheck)),
                created_at INTEGER NOT NULL,
                updated_at INTEGER NOT NULL,
                completed_at INTEGER,
                outcome_status TEXT,
                outcome_error_id INTEGER,
                outcome_error_text TEXT,
                masked_pan TEXT,
                acquirer_response_code TEXT,
                authorization_code TEXT,
                acquirer_reference TEXT,
                authorizations_sent INTEGER NOT NULL DEFAULT 0,
                -- The one attempt a payment can have (pending -> processing happens at most once).
                attempt_id TEXT,
                attempt_reference TEXT,
                attempt_instance_id TEXT,
                attempt_started_at INTEGER,
                attempt_orphaned_at INTEGER
            ) WITHOUT ROWID;
            CREATE TABLE IF NOT EXISTS reversals (
                reversal_id TEXT PRIMARY KEY,
                psp_transaction_id TEXT NOT NULL REFERENCES payments(psp_transaction_id),
                attempt_id TEXT NOT NULL,
                attempt_reference TEXT NOT NULL,
                amount INTEGER NOT NULL,
                currency TEXT NOT NULL,
                merchant_serial_number TEXT NOT NULL,
                reason TEXT NOT NULL,
                state TEXT NOT NULL CHECK (\(SQLitePaymentStore.reversalStateCheck)),
                tries INTEGER NOT NULL DEFAULT 0,
                next_try_at INTEGER NOT NULL,
                created_at INTEGER NOT NULL,
                updated_at INTEGER NOT NULL,
                late_approved INTEGER NOT NULL DEFAULT 0,
                settled_without_original INTEGER NOT NULL DEFAULT 0
            ) WITHOUT ROWID;
            CREATE INDEX IF NOT EXISTS reversals_due ON reversals(state, next_try_at);
            CREATE INDEX IF NOT EXISTS reversals_payment ON reversals(psp_transaction_id);
            -- The payments in flight, oldest attempt first: what the orphan sweep reads.
            CREATE INDEX IF NOT EXISTS payments_processing ON payments(attempt_started_at) WHERE state = 'processing';
            -- One row, rewritten by readiness checks while writes fail: does a synced write work again?
            CREATE TABLE IF NOT EXISTS write_probe (id INTEGER PRIMARY KEY CHECK (id = 1), at INTEGER NOT NULL);
            """

    /// Gives a store made with the `IN` lists the checks as comparisons. Both accept the same rows
    /// and leave the stored bytes as they are, so only the schema's text changes, the way SQLite
    /// documents for such changes (https://sqlite.org/lang_altertable.html#otheralter: the new text
    /// through `writable_schema`, the schema version one up, then the schema read again), in one
    /// transaction: a crash leaves the old text, and another process opening the store meanwhile
    /// waits, then finds it done. A store that needs nothing (every open but the first) is only
    /// read: no write lock is taken.
    static func rewriteStateChecks(_ db: SQLiteConnection,
                                   rewrites: [(String, String)] = stateCheckRewrites) throws {
        func tablesToRewrite() throws -> [(name: String, sql: String)] {
            var tables: [(name: String, sql: String)] = []
            try db.run("SELECT name, sql FROM sqlite_schema WHERE type = 'table' AND name IN ('payments', 'reversals')") { row in
                let old = row.text(1)
                let new = rewrites.reduce(old) { $0.replacing($1.0, with: $1.1) }
                if new != old { tables.append((row.text(0), new)) }
            }
            return tables
        }
        guard try !tablesToRewrite().isEmpty else { return }
        try db.execute("BEGIN IMMEDIATE")
        do {
            // Again inside the transaction: another process may have done it meanwhile.
            let tables = try tablesToRewrite()
            if !tables.isEmpty {
                var version: Int64 = 0
                try db.run("PRAGMA schema_version") { version = $0.int(0) }
                try db.execute("PRAGMA writable_schema = ON")
                defer { try? db.execute("PRAGMA writable_schema = OFF") }
                for table in tables {
                    try db.run("UPDATE sqlite_schema SET sql = ? WHERE type = 'table' AND name = ?", [.text(table.sql), .text(table.name)])
                }
                try db.execute("PRAGMA schema_version = \(version + 1)")
                try db.execute("PRAGMA writable_schema = OFF")
                // The new version makes SQLite parse the whole schema again before this statement: a
                // text it cannot parse fails here, and the transaction is rolled back. (No scan of
                // the rows: the new checks accept what the old ones did, and a scan would hold the
                // write lock, and every other process's commits, for as long as the file takes to read.)
                try db.run("SELECT 1 FROM payments, reversals LIMIT 0")
            }
            try db.execute("COMMIT")
        } catch {
            try? db.execute("ROLLBACK")
            throw error
        }
    }

    // MARK: PaymentStore

    // The statements that write a payment's or a reversal's state (`SQLitePaymentStoreSchemaTests`
    // checks that none builds a throw-away table to run).
    static let registerSQL = """
        INSERT INTO payments (psp_transaction_id, merchant_serial_number, merchant_order_id, amount, currency,
            token_hash, payment_text, state, created_at, updated_at)
        VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?) ON CONFLICT DO NOTHING
        """
    static let beginAttemptSQL = """
        UPDATE payments SET state = 'processing', updated_at = ?, masked_pan = ?, authorizations_sent = authorizations_sent + 1,
            attempt_id = ?, attempt_reference = ?, attempt_instance_id = ?, attempt_started_at = ?, attempt_orphaned_at = ?
        WHERE psp_transaction_id = ? AND state = 'pending'
        """
    /// `attempt_id IS ?`: the outcome of the attempt the row names, or, with none, a refusal
    /// before any authorization (a pending row names no attempt; a processing one always does).
    static let recordOutcomeSQL = """
        UPDATE payments SET state = 'completed', updated_at = ?, completed_at = ?, outcome_status = ?, outcome_error_id = ?,
            outcome_error_text = ?, masked_pan = COALESCE(?, masked_pan), acquirer_response_code = ?, authorization_code = ?,
            acquirer_reference = ?
        WHERE psp_transaction_id = ? AND state IN ('pending', 'processing') AND attempt_id IS ?
        """
    static let insertReversalSQL = """
        INSERT INTO reversals (reversal_id, psp_transaction_id, attempt_id, attempt_reference, amount, currency,
            merchant_serial_number, reason, state, tries, next_try_at, created_at, updated_at)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?) ON CONFLICT DO NOTHING
        """
    /// A try's answer. The try itself was counted when it was claimed (`claimReversal`).
    static let reversalTrySQL = """
        UPDATE reversals SET state = ?, next_try_at = ?, updated_at = ? WHERE reversal_id = ? AND state = 'pending'
        """
    /// The same, under the claim the try was sent under.
    static let claimedReversalTrySQL = reversalTrySQL + " AND next_try_at = ?"
    static let settleWithoutOriginalSQL = """
        UPDATE reversals SET state = 'acknowledged', next_try_at = 0, settled_without_original = 1, updated_at = ?
        WHERE reversal_id = ? AND state = 'pending' AND late_approved = 0 AND next_try_at = ?
        """
    /// ?1 now, ?2 the latest end of a claim taken by now, ?3 the reversal. A pending one whose next
    /// try is after now may be claimed with a try on the wire: due again only once that claim has
    /// run out (its end moved by 1 ms, so that its answer is not recorded), or no other sender
    /// would wait for that try before sending a first 0400 of its own beside it.
    static let reopenLateApprovedSQL = """
        UPDATE reversals SET state = 'pending', tries = 0,
            next_try_at = CASE WHEN state = 'pending' AND next_try_at > ?1 THEN MIN(next_try_at, ?2) + 1 ELSE ?1 END,
            updated_at = ?1, late_approved = 1, settled_without_original = 0
        WHERE reversal_id = ?3 AND (state <> 'acknowledged' OR settled_without_original = 1)
        """
    static let cancelSQL = "UPDATE payments SET state = 'cancelled', updated_at = ? WHERE psp_transaction_id = ? AND state = 'pending'"

    public func register(_ r: PaymentRegistration, now: Int64) async throws -> RegisterResult {
        let result: RegisterResult = try await writer.perform { db in
            let changed = try db.run(Self.registerSQL, [.text(r.pspTransactionId), .text(r.merchantSerialNumber), .text(r.merchantOrderId),
                      .integer(Int64(r.amount)), .text(r.currency), .blob(r.tokenHash), .text(r.paymentText),
                      .integer(now), .integer(now)])
            return changed == 1 ? .created : .alreadyExists
        }
        if result == .created { pending.insert(r, at: now) }
        return result
    }

    public func payment(_ id: String) async throws -> PaymentRecord? {
        try read { db in try Self.read(db, id) }
    }

    public func paymentForMakePayment(_ id: String) async throws -> PaymentRecord? {
        if let remembered = pending.record(id) { return remembered }
        return try await payment(id)
    }

    private static let selectPayments = """
        SELECT psp_transaction_id, merchant_serial_number, merchant_order_id, amount, currency, token_hash, payment_text,
               state, created_at, updated_at, completed_at, outcome_status, outcome_error_id, outcome_error_text,
               masked_pan, acquirer_response_code, authorization_code, acquirer_reference, authorizations_sent,
               attempt_id, attempt_instance_id, attempt_started_at, attempt_reference, attempt_orphaned_at
        FROM payments
        """
    private static let selectPaymentById = selectPayments + " WHERE psp_transaction_id = ?"
    // Served by the partial index payments_processing: only payments in flight are in it.
    private static let selectAttemptsOrphaned = selectPayments
        + " WHERE state = 'processing' AND (attempt_orphaned_at <= ?2 OR attempt_started_at + ?1 <= ?2)"
        + " ORDER BY attempt_started_at LIMIT ?3"

    static func read(_ db: SQLiteConnection, _ id: String) throws -> PaymentRecord? {
        var record: PaymentRecord?
        try db.run(selectPaymentById, [.text(id)]) { record = Self.payment($0) }
        return record
    }

    public func attemptsOrphaned(at now: Int64, unrecordedAfter: Int64, limit: Int) async throws -> [PaymentRecord] {
        try read { db in
            var out: [PaymentRecord] = []
            try db.run(Self.selectAttemptsOrphaned, [.integer(unrecordedAfter), .integer(now), .integer(Int64(limit))]) { out.append(Self.payment($0)) }
            return out
        }
    }

    static func payment(_ row: SQLiteRow) -> PaymentRecord {
        let registration = PaymentRegistration(
            pspTransactionId: row.text(0), merchantSerialNumber: row.text(1), merchantOrderId: row.text(2),
            amount: Int(row.int(3)), currency: row.text(4), tokenHash: row.blob(5), paymentText: row.text(6))
        let masked = row.optionalText(14).flatMap(MaskedPAN.init(masked:))
        var outcome: PaymentOutcome?
        if let status = row.optionalText(11).flatMap(PaymentStatus.init(rawValue:)) {
            let error = row.optionalInt(12).map { ErrorMessage(errorId: Int($0), errorText: row.optionalText(13) ?? "") }
            outcome = PaymentOutcome(status: status, error: error, maskedPAN: masked,
                                     acquirerResponseCode: row.optionalText(15), authorizationCode: row.optionalText(16),
                                     acquirerReference: row.optionalText(17))
        }
        var attempt: AttemptRecord?
        if let attemptId = row.optionalText(19), let masked {
            attempt = AttemptRecord(attemptId: attemptId, attemptReference: row.text(22), instanceId: row.text(20),
                                    maskedPAN: masked, startedAt: row.int(21), orphanedAt: row.optionalInt(23))
        }
        return PaymentRecord(
            registration: registration, state: PaymentState(rawValue: row.text(7)) ?? .pending, outcome: outcome,
            attempt: attempt, authorizationsSent: Int(row.int(18)), createdAt: row.int(8), updatedAt: row.int(9),
            completedAt: row.optionalInt(10))
    }

    public func cancel(_ id: String, now: Int64) async throws -> CancelResult {
        pending.remove(id)
        return try await writer.perform { db in
            let changed = try db.run(Self.cancelSQL, [.integer(now), .text(id)])
            if changed == 1 { return .cancelled }
            guard let record = try Self.read(db, id) else { return .notFound }
            return .notPending(record.state)
        }
    }

    public func beginAttempt(_ id: String, attempt: AttemptRecord, now: Int64) async throws -> BeginAttemptResult {
        pending.remove(id)
        return try await writer.perform { db in
            let changed = try db.run(Self.beginAttemptSQL, [.integer(now), .text(attempt.maskedPAN.value), .text(attempt.attemptId), .text(attempt.attemptReference),
                      .text(attempt.instanceId),
                      .integer(attempt.startedAt), .optional(attempt.orphanedAt), .text(id)])
            guard changed == 1 else {
                guard let record = try Self.read(db, id) else { return .notFound }
                return .notPending(record)
            }
            return .begun
        }
    }

    public func recordOutcome(_ id: String, outcome: PaymentOutcome, reversal: ReversalRequest?, attemptId: String?,
                              now: Int64, answerBy: ContinuousClock.Instant?) async throws -> PaymentOutcome? {
        if attemptId == nil && (outcome.status == .ok || reversal != nil) {
            throw RefusedTransition("an outcome without an attempt is a refusal without a reversal")
        }
        pending.remove(id)
        return try await writer.perform { db in
            // The time is read here, on the writer's thread inside the group: after every wait but the COMMIT's sync.
            var (outcome, reversal) = (outcome, reversal)
            if let answerBy, outcome.status == .ok, let attemptId, ContinuousClock.now > answerBy,
               let record = try Self.read(db, id), let attempt = record.attempt, attempt.attemptId == attemptId {
                outcome = outcome.tooLateToAnswer
                reversal = .undoing(attemptId: attemptId, attemptReference: attempt.attemptReference, of: record.registration)
            }
            let changed = try db.run(Self.recordOutcomeSQL, [.integer(now), .integer(now), .text(outcome.status.rawValue), .optional(outcome.error.map { Int64($0.errorId) }),
                      .optional(outcome.error?.errorText), .optional(outcome.maskedPAN?.value), .optional(outcome.acquirerResponseCode),
                      .optional(outcome.authorizationCode), .optional(outcome.acquirerReference), .text(id), .optional(attemptId)])
            guard changed == 1 else {
                // Already completed (or cancelled): the earlier outcome stands, and no reversal is added.
                return try Self.read(db, id)?.outcome
            }
            if let r = reversal {
                let inserted = try db.run(Self.insertReversalSQL, [.text(r.reversalId), .text(r.pspTransactionId), .text(r.attemptId), .text(r.attemptReference), .integer(Int64(r.amount)),
                          .text(r.currency), .text(r.merchantSerialNumber),
                          .text(outcome.acquirerResponseCode.map { "response code \($0)" } ?? "unknown outcome"),
                          .integer(now), .integer(now), .integer(now)])
                if inserted == 0 { try Self.checkSameReversal(db, r) }
            }
            return outcome
        }
    }

    static func reversal(_ db: SQLiteConnection, id: String) throws -> ReversalRecord? {
        var found: ReversalRecord?
        try db.run(selectReversalById, [.text(id)]) { found = Self.reversal($0) }
        return found
    }

    /// A reversal id names one attempt's reversal, and an attempt's outcome is recorded once, so the
    /// row found where the INSERT met its id is that same reversal, recorded before (the INSERT is
    /// then a no-op). Anything else is a clash: it fails the whole write, outcome included, rather
    /// than leave an approval that nothing will reverse.
    static func checkSameReversal(_ db: SQLiteConnection, _ r: ReversalRequest) throws {
        guard let found = try reversal(db, id: r.reversalId), found.request.pspTransactionId == r.pspTransactionId, found.request.attemptId == r.attemptId else {
            throw SQLiteError(code: SQLITE_CONSTRAINT, message: "reversal \(r.reversalId) is already recorded for another payment or attempt")
        }
    }

    private static let selectReversal = """
        SELECT reversal_id, psp_transaction_id, attempt_id, amount, currency, merchant_serial_number, reason, state, tries,
               next_try_at, created_at, attempt_reference, late_approved FROM reversals
        """
    // Whole statements made once: the connection's statement cache is keyed by their text.
    private static let selectReversalById = selectReversal + " WHERE reversal_id = ?"
    private static let selectDueReversals = selectReversal + " WHERE state = 'pending' AND next_try_at <= ? ORDER BY next_try_at LIMIT ?"
    private static let selectReversalsOfPayment = selectReversal + " WHERE psp_transaction_id = ? ORDER BY created_at"

    static func reversal(_ row: SQLiteRow) -> ReversalRecord {
        ReversalRecord(
            request: ReversalRequest(reversalId: row.text(0), pspTransactionId: row.text(1), attemptId: row.text(2),
                                     attemptReference: row.text(11), amount: Int(row.int(3)), currency: row.text(4), merchantSerialNumber: row.text(5),
                                     sendCount: Int(row.int(8)) + 1),
            reason: row.text(6), state: ReversalState(rawValue: row.text(7)) ?? .pending, tries: Int(row.int(8)),
            nextTryAt: row.int(9), createdAt: row.int(10), lateApproved: row.int(12) != 0)
    }

    public func dueReversals(now: Int64, limit: Int) async throws -> [ReversalRecord] {
        try read { db in
            var out: [ReversalRecord] = []
            try db.run(Self.selectDueReversals,
                       [.integer(now), .integer(Int64(limit))]) { out.append(Self.reversal($0)) }
            return out
        }
    }

    public func claimReversal(_ reversalId: String, now: Int64, until: Int64) async throws -> ReversalRecord? {
        try await writer.perform { db in
            // The try is counted as it is claimed: if its answer is never recorded (a crash mid-send,
            // a failed write), the next send is still a repeat of one the host may have had.
            let changed = try db.run("UPDATE reversals SET tries = tries + 1, next_try_at = ?, updated_at = ? WHERE reversal_id = ? AND state = 'pending' AND next_try_at <= ?",
                                     [.integer(until), .integer(now), .text(reversalId), .integer(now)])
            guard changed == 1, var claimed = try Self.reversal(db, id: reversalId) else { return nil }
            claimed.request.sendCount = claimed.tries  // the claimed send's own number
            return claimed
        }
    }

    public func recordReversalTry(_ reversalId: String, state: ReversalState, nextTryAt: Int64, now: Int64, claimedUntil: Int64?) async throws -> Bool {
        try await writer.perform { db in
            var bindings: [SQLiteValue] = [.text(state.rawValue), .integer(nextTryAt), .integer(now), .text(reversalId)]
            if let claimedUntil { bindings.append(.integer(claimedUntil)) }
            return try db.run(claimedUntil == nil ? Self.reversalTrySQL : Self.claimedReversalTrySQL, bindings) > 0
        }
    }

    public func settleReversalWithoutOriginal(_ reversalId: String, now: Int64, claimedUntil: Int64) async throws -> Bool {
        try await writer.perform { db in
            try db.run(Self.settleWithoutOriginalSQL, [.integer(now), .text(reversalId), .integer(claimedUntil)]) > 0
        }
    }

    public func lateApproval(ofReversal reversalId: String, now: Int64, claimsEndBy: Int64) async throws -> LateApprovalResult {
        try await writer.perform { db in
            try db.run(Self.reopenLateApprovedSQL, [.integer(now), .integer(claimsEndBy), .text(reversalId)]) > 0 ? .reopened : .stands
        }
    }

    public func reversals(for id: String) async throws -> [ReversalRecord] {
        try read { db in
            var out: [ReversalRecord] = []
            try db.run(Self.selectReversalsOfPayment, [.text(id)]) { out.append(Self.reversal($0)) }
            return out
        }
    }
}

/// The makePayment front's read, from memory: payments registered in this process and not moved
/// out of `pending` since (each transition forgets its payment before it is written). Bounded:
/// past `limit`, new registrations are not remembered and their front reads the file.
///
/// Ids match byte for byte, as in the file: a Swift dictionary finds keys by canonical equivalence
/// ("P\u{212A}1", with KELVIN SIGN, finds "PK1"), so a hit counts only if its bytes are the id's.
final class PendingRegistrations: Sendable {
    private struct Entry { let registration: PaymentRegistration; let createdAt: Int64 }
    /// The latest `limit` registrations: past it the oldest are forgotten (abandoned checkouts,
    /// payments another process moved), not the new ones, which are the ones about to be paid.
    private let entries: Mutex<RecentMap<String, Entry>>?

    init(limit: Int) { entries = limit > 0 ? Mutex(RecentMap(limit: limit)) : nil }

    func insert(_ registration: PaymentRegistration, at now: Int64) {
        entries?.withLock { $0.set(Entry(registration: registration, createdAt: now), for: registration.pspTransactionId) }
    }

    /// The entry registered under exactly `id`'s bytes.
    private static func entry(_ id: String, in entries: RecentMap<String, Entry>) -> Entry? {
        guard let entry = entries[id], entry.registration.pspTransactionId.utf8.elementsEqual(id.utf8) else { return nil }
        return entry
    }

    func remove(_ id: String) {
        entries?.withLock { e in
            if Self.entry(id, in: e) != nil { e.removeValue(forKey: id) }
        }
    }

    /// The record the file holds for a payment registered here and not moved since.
    func record(_ id: String) -> PaymentRecord? {
        guard let entry = entries?.withLock({ Self.entry(id, in: $0) }) else { return nil }
        return PaymentRecord(registration: entry.registration, state: .pending, outcome: nil, attempt: nil,
                             authorizationsSent: 0, createdAt: entry.createdAt, updatedAt: entry.createdAt, completedAt: nil)
    }
}
