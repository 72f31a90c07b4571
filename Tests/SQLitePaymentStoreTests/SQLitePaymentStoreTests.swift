import Acquiring
import Foundation
import MakePayment
import PaymentStoreConformance
import Processing
@testable import SQLitePaymentStore
import Synchronization
import Testing

/// Each check gets its own database file; `reopen` opens that file again as a restart would.
final class TemporaryDatabase: Sendable {
    let path: String
    private let stores = Mutex<[SQLitePaymentStore]>([])

    init() {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("store-\(UUID().uuidString).sqlite").path
    }

    func open(groupCommitWindow: Duration = .milliseconds(2), walRestartFrames: Int = 4096,
              checkpointInterval: Duration = .milliseconds(250)) throws -> SQLitePaymentStore {
        let store = try SQLitePaymentStore(path: path, groupCommitWindow: groupCommitWindow, walRestartFrames: walRestartFrames,
                                           checkpointInterval: checkpointInterval)
        stores.withLock { $0.append(store) }
        return store
    }

    /// Closes every store opened on the file so far (their writes finished), as a process that ends would.
    func closeAll() {
        stores.withLock { $0.forEach { $0.close() }; $0.removeAll() }
    }

    deinit {
        stores.withLock { $0.forEach { $0.close() } }
        for suffix in ["", "-wal", "-shm", "-gate"] { try? FileManager.default.removeItem(atPath: path + suffix) }
    }
}

@Suite struct SQLitePaymentStoreTests {
    @Test(arguments: PaymentStoreConformance.checks)
    func conformance(_ check: PaymentStoreConformance.Check) async throws {
        let database = TemporaryDatabase()
        let suite = PaymentStoreConformance(
            makeStore: { try database.open() },
            reopenStore: {
                // A restart: close what is open, then open the same file.
                database.closeAll()
                return try database.open()
            })
        try await check.run(suite)
    }

    /// A second process on the same file moves a payment this one registered: this one's front still
    /// sees it pending (a stale hint), and the conditional transition is what stops a second attempt.
    @Test func staleMakePaymentReadCannotBeginASecondAttempt() async throws {
        let database = TemporaryDatabase()
        let first = try database.open()
        let second = try database.open()
        _ = try await first.register(PaymentStoreConformance.registration("p-two"), now: 1)
        let attempt = AttemptRecord(attemptId: "a2", instanceId: "second", maskedPAN: MaskedPAN(masked: "400000******0002")!, startedAt: 2)
        #expect(try await second.beginAttempt("p-two", attempt: attempt, now: 2) == .begun)
        #expect(try await first.paymentForMakePayment("p-two")?.state == .pending)
        #expect(try await first.payment("p-two")?.state == .processing)
        let again = AttemptRecord(attemptId: "a1", instanceId: "first", maskedPAN: MaskedPAN(masked: "400000******0002")!, startedAt: 3)
        guard case .notPending(let record) = try await first.beginAttempt("p-two", attempt: again, now: 3) else {
            Issue.record("a second attempt began")
            return
        }
        #expect(record.authorizationsSent == 1 && record.attempt?.attemptId == "a2")
        // Once this store has tried to move the payment, it no longer answers from memory.
        #expect(try await first.paymentForMakePayment("p-two")?.state == .processing)
    }

    /// A reversal whose id is already taken by another payment's reversal fails the outcome's whole
    /// write: the approval is not recorded as answered with no reversal behind it (the INSERT's
    /// ON CONFLICT used to drop the reversal without a word).
    @Test func aReversalIdClashFailsTheOutcomeWrite() async throws {
        let database = TemporaryDatabase()
        let store = try database.open()
        let masked = MaskedPAN(masked: "400000******0002")!
        for id in ["p-first", "p-second"] { _ = try await store.register(PaymentStoreConformance.registration(id), now: 1) }
        _ = try await store.beginAttempt("p-first", attempt: AttemptRecord(attemptId: "a-same", instanceId: "i", maskedPAN: masked, startedAt: 2), now: 2)
        _ = try await store.beginAttempt("p-second", attempt: AttemptRecord(attemptId: "a-same", instanceId: "i", maskedPAN: masked, startedAt: 2), now: 2)
        let unknown = PaymentOutcome(status: .fail, error: APIError.responseReceivedTooLate.message, maskedPAN: masked)
        func reversal(of id: String) async throws -> ReversalRequest {
            let record = try #require(try await store.payment(id))
            return .undoing(attemptId: "a-same", attemptReference: record.attempt!.attemptReference, of: record.registration)
        }
        let first = try await reversal(of: "p-first")
        #expect(try await store.recordOutcome("p-first", outcome: unknown, reversal: first, attemptId: "a-same", now: 3, answerBy: nil) == unknown)
        let second = try await reversal(of: "p-second")
        #expect(second.reversalId == first.reversalId)
        await #expect(throws: SQLiteError.self) {
            try await store.recordOutcome("p-second", outcome: unknown, reversal: second, attemptId: "a-same", now: 3, answerBy: nil)
        }
        #expect(try await store.payment("p-second")?.state == .processing)
        #expect(try await store.payment("p-first")?.state == .completed)
        // The metrics' backlog: the one reversal recorded, due since it was.
        #expect(try store.reversalBacklog() == (1, 3))
        #expect(try await store.recordReversalTry(first.reversalId, state: .acknowledged, nextTryAt: 0, now: 4, claimedUntil: nil))
        #expect(try store.reversalBacklog() == (0, nil))
    }

    /// Readiness's probe write lands in its own row (one, rewritten), synced like any write.
    @Test func theProbeWriteRewritesItsOneRow() async throws {
        let database = TemporaryDatabase()
        let store = try database.open()
        #expect(!store.writesFailing)
        try await store.probeWrite(now: 7)
        try await store.probeWrite(now: 9)
        let db = try SQLiteConnection(path: database.path, readOnly: true)
        var rows: [Int64] = []
        try db.run("SELECT at FROM write_probe") { rows.append($0.int(0)) }
        #expect(rows == [9])
    }

    /// The front's read from memory matches ids byte for byte, as the file does: an id that Swift
    /// finds equal to a registered one (KELVIN SIGN for K: canonically equivalent) is another id,
    /// and looking it up neither finds nor forgets the registered payment.
    @Test func theFrontsMemoryMatchesIdsByteForByte() async throws {
        let database = TemporaryDatabase()
        let store = try database.open()
        _ = try await store.register(PaymentStoreConformance.registration("PK1"), now: 1)
        let lookalike = "P\u{212A}1"
        #expect(lookalike == "PK1")  // to Swift
        #expect(try await store.payment(lookalike) == nil)
        #expect(try await store.paymentForMakePayment(lookalike) == nil)
        let attempt = AttemptRecord(attemptId: "a1", instanceId: "test", maskedPAN: MaskedPAN(masked: "400000******0002")!, startedAt: 2)
        #expect(try await store.beginAttempt(lookalike, attempt: attempt, now: 2) == .notFound)
        #expect(try await store.paymentForMakePayment("PK1")?.state == .pending)
    }

    /// Text is bound and read by its byte count: an id with a NUL in it is an id of its own, never
    /// a prefix of it that another payment was registered under.
    @Test func idsWithANulAreNotCutShort() async throws {
        let database = TemporaryDatabase()
        let writer = try database.open()
        _ = try await writer.register(PaymentStoreConformance.registration("P1"), now: 1)
        _ = try await writer.register(PaymentStoreConformance.registration("a\u{0}b"), now: 1)
        let reader = try database.open()  // reads the file, not what the first one keeps in memory
        #expect(try await reader.payment("P1\u{0}x") == nil)
        #expect(try await reader.paymentForMakePayment("P1\u{0}x") == nil)
        #expect(try await reader.payment("a") == nil)
        #expect(try await reader.payment("a\u{0}b")?.registration.pspTransactionId == "a\u{0}b")
        #expect(try await reader.payment("P1")?.registration.pspTransactionId == "P1")
    }

    @Test func pendingLimitFallsBackToTheFile() async throws {
        let database = TemporaryDatabase()
        let store = try SQLitePaymentStore(path: database.path, pendingLimit: 1)
        defer { store.close() }
        for i in 0..<3 { _ = try await store.register(PaymentStoreConformance.registration("p-limit-\(i)"), now: Int64(i)) }
        for i in 0..<3 {
            let front = try await store.paymentForMakePayment("p-limit-\(i)")
            let plain = try await store.payment("p-limit-\(i)")
            #expect(front != nil && front == plain)
        }
        // Memory keeps the latest registration (the one about to be paid), not the first ones.
        #expect(store.pending.record("p-limit-2") != nil)
        #expect(store.pending.record("p-limit-0") == nil)
    }

    @Test func usesWriteAheadLogging() async throws {
        let database = TemporaryDatabase()
        let store = try database.open()
        _ = try await store.register(PaymentStoreConformance.registration("p1"), now: 1)
        #expect(FileManager.default.fileExists(atPath: database.path + "-wal"))
        // What makes a commit durable, as the writer's connection has it: the WAL, and a sync of it
        // at every commit (FULL, 2). NORMAL would pass every other test here: only a power cut,
        // not a killed process, loses its last commits.
        let (mode, synchronous) = try await store.writer.perform { db -> (String, Int64) in
            var mode = "", synchronous: Int64 = -1
            _ = try db.run("PRAGMA journal_mode") { mode = $0.text(0) }
            _ = try db.run("PRAGMA synchronous") { synchronous = $0.int(0) }
            return (mode, synchronous)
        }
        #expect(mode == "wal")
        #expect(synchronous == 2, "synchronous=FULL")
    }

    @Test func manyConcurrentWritesAllCommit() async throws {
        let database = TemporaryDatabase()
        let store = try database.open()
        let created = try await withThrowingTaskGroup(of: RegisterResult.self) { group in
            for i in 0..<500 { group.addTask { try await store.register(PaymentStoreConformance.registration("p\(i)"), now: 1) } }
            return try await group.reduce(0) { $0 + ($1 == .created ? 1 : 0) }
        }
        #expect(created == 500)
        store.close()
        let reopened = try database.open()
        for i in [0, 250, 499] { #expect(try await reopened.payment("p\(i)") != nil) }
    }

    /// Under writes that never pause, the checkpointer alone never catches up and the WAL would grow
    /// for as long as they last; the writer completes a checkpoint between groups once it is too
    /// long, so it starts again. Nothing written before a restart is lost.
    @Test func walStartsAgainUnderWritesThatNeverPause() async throws {
        let database = TemporaryDatabase()
        // No gathering window either: one commit follows another at once.
        let store = try database.open(groupCommitWindow: .zero, walRestartFrames: 32, checkpointInterval: .milliseconds(5))
        let deadline = ContinuousClock.now + .seconds(60)
        // Eight writers, each writing again as soon as its write is committed, until two restarts (a
        // minute at most: a loaded machine may starve the checkpointer's thread a while, never that long).
        let written = try await withThrowingTaskGroup(of: (writer: Int, count: Int).self) { group in
            for writer in 0..<8 {
                group.addTask {
                    var count = 0
                    while store.writerStatistics.walRestarts < 2 && ContinuousClock.now < deadline {
                        _ = try await store.register(PaymentStoreConformance.registration("w\(writer)-\(count)"), now: 1)
                        count += 1
                    }
                    return (writer, count)
                }
            }
            return try await group.reduce(into: [:]) { $0[$1.writer] = $1.count }
        }
        #expect(store.writerStatistics.walRestarts >= 2)
        // Each restart also cuts the file back to journal_size_limit (4 × 32 frames, ~0.5 MB).
        let walBytes = try FileManager.default.attributesOfItem(atPath: database.path + "-wal")[.size] as? Int ?? 0
        #expect(walBytes < 8 << 20)
        for (writer, count) in written {
            for i in 0..<count { #expect(try await store.payment("w\(writer)-\(i)") != nil) }
        }
    }

    /// SQLite opens a file it may not write read-only, without an error; the store refuses it at
    /// start instead of answering every payment 91. As root every file is writable, so the open
    /// then runs on a thread of its own whose file-system uid is `nobody` (Linux's setfsuid is per
    /// thread, and leaving uid 0 drops that thread's override of file permissions).
    @Test(.enabled(if: Self.canOpenAsAnotherUser)) func aReadOnlyFileIsRefusedAtOpen() async throws {
        let database = TemporaryDatabase()
        let store = try database.open()
        _ = try await store.register(PaymentStoreConformance.registration("ro-1"), now: 1)
        store.close()
        chmod(database.path, 0o444)
        defer { chmod(database.path, 0o644) }
        let refusal = try #require(Self.openFails(database.path), "a store on a read-only file must not open")
        #expect(refusal.code == 8, "SQLITE_READONLY, not another failure to open: \(refusal)")
        #expect(refusal.message.hasSuffix("the file is not writable"), "\(refusal)")
    }

    /// Whether the test can open a file as a user who may not write it: not root, or (Linux) root
    /// whose threads can take nobody's file-system uid (not in a user namespace without it, say)
    /// and, as nobody, reach the temporary folder.
    static let canOpenAsAnotherUser: Bool = {
        guard geteuid() == 0 else { return true }
        #if os(Linux)
        return asNobody { access(FileManager.default.temporaryDirectory.path, X_OK) == 0 } ?? false
        #else
        return false
        #endif
    }()

    /// Opens a store on `path` as a user who may not write it; the error it throws, nil if it opened.
    static func openFails(_ path: String) -> SQLiteError? {
        let open: @Sendable () -> SQLiteError? = {
            do { try SQLitePaymentStore(path: path).close(); return nil } catch { return error as? SQLiteError }
        }
        guard geteuid() == 0 else { return open() }
        #if os(Linux)
        return asNobody(open) ?? nil
        #else
        return nil  // (not reached: the test is not enabled)
        #endif
    }

    #if os(Linux)
    /// Runs `body` on a thread of its own whose file-system uid is nobody's (65534); nil if the
    /// thread could not take it.
    static func asNobody<T: Sendable>(_ body: @escaping @Sendable () -> T) -> T? {
        typealias SetFSUID = @convention(c) (UInt32) -> Int32
        guard let symbol = dlsym(nil, "setfsuid") else { return nil }
        let setfsuid = unsafeBitCast(symbol, to: SetFSUID.self)
        let result = Mutex<T?>(nil)
        let done = DispatchSemaphore(value: 0)
        let thread = Thread {
            defer { done.signal() }
            _ = setfsuid(65534)
            defer { _ = setfsuid(0) }
            // setfsuid answers the uid it had; asked for an invalid one, it changes nothing.
            guard setfsuid(UInt32.max) == 65534 else { return }
            let value = body()
            result.withLock { $0 = value }
        }
        thread.start()
        done.wait()
        return result.withLock { $0 }
    }
    #endif

    @Test func unwritablePathIsAClearError() {
        #expect(throws: SQLiteError.self) { _ = try SQLitePaymentStore(path: "/nonexistent-dir/x/store.sqlite") }
    }
}
