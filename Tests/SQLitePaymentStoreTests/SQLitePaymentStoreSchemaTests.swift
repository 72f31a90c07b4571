import Foundation
import MakePayment
import Processing
@testable import SQLitePaymentStore
import Testing

/// The state checks cost nothing per write, and a store made with the older checks gets them.
@Suite struct SQLitePaymentStoreSchemaTests {
    /// Every statement that writes a payment's or a reversal's state.
    static let writes = [
        SQLitePaymentStore.registerSQL, SQLitePaymentStore.beginAttemptSQL, SQLitePaymentStore.recordOutcomeSQL,
        SQLitePaymentStore.cancelSQL, SQLitePaymentStore.insertReversalSQL, SQLitePaymentStore.reversalTrySQL,
    ]

    /// The statements of `writes` whose program builds a throw-away table (`OpenEphemeral`) each time it runs.
    static func statementsBuildingThrowAwayTables(_ db: SQLiteConnection, of writes: [String] = writes) throws -> [String] {
        try writes.filter { sql in
            var opcodes: [String] = []
            try db.run("EXPLAIN " + sql) { opcodes.append($0.text(1)) }
            #expect(!opcodes.isEmpty)
            return opcodes.contains("OpenEphemeral")
        }
    }

    /// The schema as every store made before the seventeenth session has it, to the letter (the
    /// migration of commit 5ce7241 and all before it: `IN` lists in the checks).
    static let olderSchema = """
            CREATE TABLE IF NOT EXISTS payments (
                psp_transaction_id TEXT PRIMARY KEY,
                merchant_serial_number TEXT NOT NULL,
                merchant_order_id TEXT NOT NULL,
                amount INTEGER NOT NULL CHECK (amount >= 1),
                currency TEXT NOT NULL,
                token_hash BLOB NOT NULL,
                payment_text TEXT NOT NULL,
                state TEXT NOT NULL CHECK (state IN ('pending', 'processing', 'completed', 'cancelled')),
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
                attempt_started_at INTEGER
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
                state TEXT NOT NULL CHECK (state IN ('pending', 'acknowledged', 'failed')),
                tries INTEGER NOT NULL DEFAULT 0,
                next_try_at INTEGER NOT NULL,
                created_at INTEGER NOT NULL,
                updated_at INTEGER NOT NULL
            ) WITHOUT ROWID;
            CREATE INDEX IF NOT EXISTS reversals_due ON reversals(state, next_try_at);
            CREATE INDEX IF NOT EXISTS reversals_payment ON reversals(psp_transaction_id);
            -- The payments in flight, oldest attempt first: what the orphan sweep reads.
            CREATE INDEX IF NOT EXISTS payments_processing ON payments(attempt_started_at) WHERE state = 'processing';
            """

    /// A file made with `olderSchema`, with one pending payment in it, as an older worker left it.
    static func olderStore(_ database: TemporaryDatabase) throws {
        let old = try SQLiteConnection(path: database.path, readOnly: false)
        try old.execute("PRAGMA journal_mode=WAL")
        try old.execute(olderSchema)
        try old.execute("""
            INSERT INTO payments (psp_transaction_id, merchant_serial_number, merchant_order_id, amount, currency,
                token_hash, payment_text, state, created_at, updated_at)
            VALUES ('p-old', '123456', 'o-1', 100, 'NOK', x'00', 'text', 'pending', 1, 1)
            """)
        // What the rewrite is for: with the older checks, every state write builds a throw-away table
        // (every one those stores can run: they lack the attempt's orphan time, added at open).
        let olderWrites = writes.filter { !$0.contains("attempt_orphaned_at") }
        #expect(olderWrites.count == writes.count - 1)
        #expect(try statementsBuildingThrowAwayTables(old, of: olderWrites) == olderWrites)
        #expect(try tableSQL(old).allSatisfy { $0.contains("state IN (") })
    }

    /// What `PRAGMA integrity_check` says of the file: ["ok"] when all is well.
    static func integrityCheck(_ db: SQLiteConnection) throws -> [String] {
        var check: [String] = []
        try db.run("PRAGMA integrity_check") { check.append($0.text(0)) }
        return check
    }

    /// Expects `sql` to be refused by a CHECK constraint (SQLITE_CONSTRAINT), not by any other error.
    static func expectRefusedByACheck(_ db: SQLiteConnection, _ sql: String) {
        let refusal = #expect(throws: SQLiteError.self) { try db.run(sql) }
        #expect(refusal?.code == 19 && refusal?.message.contains("CHECK constraint failed") == true, "\(String(describing: refusal))")
    }

    static func tableSQL(_ db: SQLiteConnection) throws -> [String] {
        var sql: [String] = []
        try db.run("SELECT sql FROM sqlite_schema WHERE type = 'table' AND name IN ('payments', 'reversals') ORDER BY name") { sql.append($0.text(0)) }
        return sql
    }

    /// A store records its format; a build refuses one of a newer format than its own, which it
    /// could misread, and opens its own again.
    @Test func aStoreOfANewerFormatIsRefused() async throws {
        let database = TemporaryDatabase()
        _ = try database.open()
        let db = try SQLiteConnection(path: database.path, readOnly: false)
        var version: Int64 = -1
        try db.run("PRAGMA user_version") { version = $0.int(0) }
        #expect(version == SQLitePaymentStore.formatVersion)
        database.closeAll()
        _ = try database.open()
        database.closeAll()
        try db.execute("PRAGMA user_version = \(SQLitePaymentStore.formatVersion + 1)")
        let refusal = #expect(throws: SQLiteError.self) { _ = try database.open() }
        #expect(refusal?.message.contains("newer psp-worker") == true)
    }

    @Test func noWriteBuildsAThrowAwayTable() async throws {
        let database = TemporaryDatabase()
        _ = try database.open()
        let db = try SQLiteConnection(path: database.path, readOnly: true)
        #expect(try Self.statementsBuildingThrowAwayTables(db) == [])
    }

    @Test func aStoreWithTheOlderChecksGetsTheNewOnesAndKeepsItsRows() async throws {
        let database = TemporaryDatabase()
        try Self.olderStore(database)

        let store = try database.open()
        let db = try SQLiteConnection(path: database.path, readOnly: false)
        #expect(try Self.statementsBuildingThrowAwayTables(db) == [])
        let tables = try Self.tableSQL(db)
        #expect(tables.count == 2)
        #expect(tables.allSatisfy { !$0.contains("state IN (") && $0.contains("CHECK (state = 'pending' OR ") })

        // The row is there, and the store goes on with it.
        let before = try #require(try await store.payment("p-old"))
        #expect(before.state == .pending && before.registration.amount == 100)
        let attempt = AttemptRecord(attemptId: "a-1", attemptReference: "000001", instanceId: "test",
                                    maskedPAN: try #require(MaskedPAN(masked: "400000******0002")), startedAt: 2, orphanedAt: 12_002)
        #expect(try await store.beginAttempt("p-old", attempt: attempt, now: 2) == .begun)
        #expect(try await store.payment("p-old")?.state == .processing)
        #expect(try await store.payment("p-old")?.attempt?.orphanedAt == 12_002, "the attempt's orphan time, a column the older store lacked")

        // The checks still refuse what they refused.
        Self.expectRefusedByACheck(db, "UPDATE payments SET state = 'settled' WHERE psp_transaction_id = 'p-old'")
        Self.expectRefusedByACheck(db, """
            INSERT INTO reversals (reversal_id, psp_transaction_id, attempt_id, attempt_reference, amount, currency,
                merchant_serial_number, reason, state, tries, next_try_at, created_at, updated_at)
            VALUES ('r-1', 'p-old', 'a-1', '000001', 100, 'NOK', '123456', 'test', 'lost', 0, 1, 1, 1)
            """)
        #expect(try Self.integrityCheck(db) == ["ok"])
        // The columns the older store lacked are there.
        var columns: [String] = []
        for table in ["payments", "reversals"] { try db.run("PRAGMA table_info(\(table))") { columns.append(table + "." + $0.text(1)) } }
        #expect(SQLitePaymentStore.addedColumns.allSatisfy { columns.contains($0.0 + "." + $0.1) }, "\(columns)")

        // Opening it again changes nothing more.
        var version: Int64 = -1, again: Int64 = -2
        try db.run("PRAGMA schema_version") { version = $0.int(0) }
        database.closeAll()
        _ = try database.open()
        try db.run("PRAGMA schema_version") { again = $0.int(0) }
        #expect(version == again)
    }

    /// A rewrite that fails (here: a text SQLite cannot parse) is rolled back whole: the older
    /// checks stay, with the rows, and the store opens as it did.
    @Test func aRewriteThatFailsLeavesTheStoreAsItWas() async throws {
        let database = TemporaryDatabase()
        try Self.olderStore(database)
        let db = try SQLiteConnection(path: database.path, readOnly: false)
        let before = try Self.tableSQL(db)
        let broken = [(SQLitePaymentStore.stateCheckRewrites[0].0, "CHECK (state = )")]
        #expect(throws: SQLiteError.self) { try SQLitePaymentStore.rewriteStateChecks(db, rewrites: broken) }
        #expect(try Self.tableSQL(db) == before)
        #expect(try Self.integrityCheck(db) == ["ok"])
        let store = try database.open()
        #expect(try await store.payment("p-old")?.state == .pending)
        #expect(try Self.tableSQL(db).allSatisfy { !$0.contains("state IN (") })
    }

    /// Opening a store that needs no rewrite takes no write lock: a store opens while another
    /// connection holds one (before, the rewrite's BEGIN IMMEDIATE waited 5 s, then failed).
    @Test func openingAStoreThatNeedsNoRewriteTakesNoWriteLock() async throws {
        let database = TemporaryDatabase()
        _ = try database.open()
        database.closeAll()
        let holder = try SQLiteConnection(path: database.path, readOnly: false)
        try holder.execute("BEGIN IMMEDIATE")
        defer { try? holder.execute("ROLLBACK") }
        let store = try database.open()
        #expect(try await store.payment("p-none") == nil)
    }
}
