import Foundation
@testable import SQLitePaymentStore
import Synchronization
import Testing

/// A WAL database in a temporary file with one table `t (x INTEGER PRIMARY KEY)`, for a writer to
/// write to. `remove()` deletes its files (from a `defer`: the connections must outlive the test's
/// last use of them, which a deinit would not promise).
struct ScratchTable {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("writer-\(UUID().uuidString).sqlite").path
    let connection: SQLiteConnection

    init() throws {
        connection = try SQLiteConnection(path: path, readOnly: false)
        try connection.execute("PRAGMA journal_mode=WAL; CREATE TABLE t (x INTEGER PRIMARY KEY)")
    }

    /// A gate of the table's database: each call opens one of its own, as each holder must.
    func gate() throws -> CheckpointGate { try CheckpointGate(databasePath: path) }

    func remove() {
        for suffix in ["", "-wal", "-shm", "-gate"] { try? FileManager.default.removeItem(atPath: path + suffix) }
    }
}

extension SQLiteWriter {
    /// Inserts `x` into the scratch table, durably.
    func insert(_ x: Int) async throws {
        try await perform { db in _ = try db.run("INSERT INTO t (x) VALUES (?)", [.integer(Int64(x))]) }
    }

    /// Writes close together, so that the writer sees a load worth gathering for.
    func warmUp() async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<40 { group.addTask { try await self.insert(i) } }
            try await group.waitForAll()
        }
    }
}

/// Holds a database's checkpoint gate on a thread of its own until `open()`, as a checkpoint on
/// another connection, or in another process, would.
final class GateHolder: @unchecked Sendable {
    // @unchecked: the semaphores are what is shared.
    private let release = DispatchSemaphore(value: 0)
    private let released = DispatchSemaphore(value: 0)

    init(_ gate: CheckpointGate) {
        let held = DispatchSemaphore(value: 0)
        Thread { [release, released] in
            try? gate.withGate { held.signal(); release.wait() }
            released.signal()
        }.start()
        held.wait()
    }

    func open() {
        release.signal()
        released.wait()
    }
}

@Suite struct CheckpointGateTests {
    /// A group is not begun while a checkpoint holds the gate (SQLite's WAL-reset race needs a
    /// checkpoint running while a commit restarts the WAL), and commits once the gate is free.
    @Test func aGroupWaitsWhileACheckpointHoldsTheGate() async throws {
        let scratch = try ScratchTable()
        defer { scratch.remove() }
        let writer = SQLiteWriter(connection: scratch.connection, gate: try scratch.gate(), name: "test-writer", gatherWindow: .zero)
        defer { writer.close() }
        try await writer.insert(1)
        let holder = GateHolder(try scratch.gate())
        let committed = Mutex(false)
        let write = Task {
            try await writer.insert(2)
            committed.withLock { $0 = true }
        }
        try await Task.sleep(for: .milliseconds(300))
        #expect(committed.withLock { $0 } == false, "committed while a checkpoint held the gate")
        holder.open()
        try await write.value
        #expect(committed.withLock { $0 })
        #expect(writer.counts.commits == 2)
    }

    /// The checkpointer does not checkpoint while a transaction holds the gate, and does once it is free.
    @Test func theCheckpointerWaitsWhileAGroupHoldsTheGate() async throws {
        let scratch = try ScratchTable()
        defer { scratch.remove() }
        try scratch.connection.execute("PRAGMA wal_autocheckpoint=0; INSERT INTO t (x) VALUES (1)")
        let holder = GateHolder(try scratch.gate())
        let checkpoints = Mutex(0)
        let checkpointer = SQLiteCheckpointer(
            connection: try SQLiteConnection(path: scratch.path, readOnly: false), gate: try scratch.gate(),
            interval: .milliseconds(5), restartFrames: 1, walTooLong: { checkpoints.withLock { $0 += 1 } })
        defer { checkpointer.close() }
        try await Task.sleep(for: .milliseconds(300))
        #expect(checkpoints.withLock { $0 } == 0, "checkpointed while the gate was held")
        holder.open()
        let deadline = ContinuousClock.now + .seconds(10)
        while checkpoints.withLock({ $0 }) == 0 && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
        #expect(checkpoints.withLock { $0 } > 0)
    }

    /// A statement that fails in the store itself (a read of a failing disk, a full one) says
    /// writes are failing, as a failed COMMIT does (readiness answers 503 until a group commits);
    /// a piece's own failure (a constraint) says nothing of the store.
    @Test func aStatementFailingInTheStoreMarksWritesFailing() async throws {
        let scratch = try ScratchTable()
        defer { scratch.remove() }
        let writer = SQLiteWriter(connection: scratch.connection, gate: try scratch.gate(), name: "test-writer", gatherWindow: .zero)
        defer { writer.close() }
        try await writer.insert(1)
        await #expect(throws: SQLiteError.self) { try await writer.insert(1) }
        #expect(!writer.lastGroupFailed, "a constraint is the write's own failure")
        await #expect(throws: SQLiteError.self) {
            try await writer.perform { _ -> Void in throw SQLiteError(code: 266, message: "disk I/O error (SQLITE_IOERR_READ)") }
        }
        #expect(writer.lastGroupFailed, "what readiness reports")
        try await writer.insert(2)
        #expect(!writer.lastGroupFailed, "a group committed since")
    }

    /// The same failure in a group of two: the group is rolled back and each write run alone, and
    /// the other write committing alone after it does not clear what the store's failure said.
    @Test func aStoreFailureInAGroupStaysReportedAfterTheRestCommitAlone() async throws {
        let scratch = try ScratchTable()
        defer { scratch.remove() }
        // A long window, and two writes said to be under way: the two below make one group.
        let writer = SQLiteWriter(connection: scratch.connection, gate: try scratch.gate(), name: "test-writer", gatherWindow: .seconds(30))
        writer.whenWritesUnderway { 2 }
        defer { writer.close() }
        let failing = Task { try await writer.perform { _ -> Void in throw SQLiteError(code: 266, message: "disk I/O error (SQLITE_IOERR_READ)") } }
        try await Task.sleep(for: .milliseconds(50))
        try await writer.insert(1)
        await #expect(throws: SQLiteError.self) { try await failing.value }
        #expect(writer.lastGroupFailed, "cleared by the write that committed alone after the group's failure")
    }

    /// A gate held past its timeout by another process (frozen while it holds the gate) fails the
    /// group's writes, as SQLite's own busy timeout would, instead of holding them with no answer
    /// for as long as the holder stays frozen; once the gate is free, writes commit again.
    @Test func aGateHeldPastItsTimeoutFailsTheWrites() async throws {
        let scratch = try ScratchTable()
        defer { scratch.remove() }
        let gate = try CheckpointGate(databasePath: scratch.path, timeout: .milliseconds(200))
        let writer = SQLiteWriter(connection: scratch.connection, gate: gate, name: "test-writer", gatherWindow: .zero)
        defer { writer.close() }
        // Another process's hold: the lock file's flock taken on a descriptor of its own, not
        // through a gate of this process (whose holders wait for each other first).
        let other = open(CheckpointGate.path(forDatabase: scratch.path), O_RDONLY)
        #expect(other >= 0 && flock(other, LOCK_EX) == 0)
        #expect(!writer.lastGroupFailed)
        let error = await #expect(throws: SQLiteError.self) { try await writer.insert(1) }
        #expect(error?.code == 5, "SQLITE_BUSY")
        #expect(writer.lastGroupFailed, "what readiness reports")
        // The checkpointer does not wait at all (it would hold up this process's writer behind it).
        let checkpointers = try scratch.gate()
        let refused = #expect(throws: SQLiteError.self) { try checkpointers.withGate(waiting: false) {} }
        #expect(refused?.code == 5, "SQLITE_BUSY")
        flock(other, LOCK_UN)
        #expect(throws: Never.self) { try checkpointers.withGate(waiting: false) {} }
        close(other)
        try await writer.insert(2)
        #expect(!writer.lastGroupFailed, "a group committed since")
        // A holder in this process (a checkpoint of its own, however slow) is waited for without a limit.
        let holder = GateHolder(try scratch.gate())
        let release = Task {
            try await Task.sleep(for: .milliseconds(500))
            holder.open()
        }
        try await writer.insert(3)
        try await release.value
        let reader = try SQLiteConnection(path: scratch.path, readOnly: true)
        var rows: [Int64] = []
        _ = try reader.run("SELECT x FROM t ORDER BY x") { rows.append($0.int(0)) }
        #expect(rows == [2, 3])
    }

    /// One gate file per database, beside it; two holders in one process exclude each other.
    @Test func twoGatesOfOneDatabaseExcludeEachOther() throws {
        let scratch = try ScratchTable()
        defer { scratch.remove() }
        #expect(CheckpointGate.path(forDatabase: scratch.path) == scratch.path + "-gate")
        let first = try scratch.gate(), second = try scratch.gate()
        let holder = GateHolder(first)
        let entered = Mutex(false)
        let waiter = Thread { try? second.withGate { entered.withLock { $0 = true } } }
        waiter.start()
        Thread.sleep(forTimeInterval: 0.2)
        #expect(entered.withLock { $0 } == false)
        holder.open()
        let deadline = Date().addingTimeInterval(10)
        while !entered.withLock({ $0 }) && Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
        #expect(entered.withLock { $0 })
        #expect(FileManager.default.fileExists(atPath: scratch.path + "-gate"))
    }
}

@Suite struct SQLiteWriterTests {
    /// A group that holds the writer for 25 ms is counted at 5 and 20 ms, and its caller sees it
    /// counted when it hears back. (Other groups may be slow too on a slow disk: the test reads
    /// what this group added.)
    @Test func aSlowGroupIsCountedBeforeItsCallerHearsBack() async throws {
        let scratch = try ScratchTable()
        defer { scratch.remove() }
        let writer = SQLiteWriter(connection: scratch.connection, gate: try scratch.gate(), name: "test-writer", gatherWindow: .zero)
        defer { writer.close() }
        try await writer.insert(1)
        let before = writer.counts.slowGroups
        try await writer.perform { db in
            _ = try db.run("INSERT INTO t (x) VALUES (2)")
            Thread.sleep(forTimeInterval: 0.025)
        }
        let after = writer.counts.slowGroups
        #expect(after[0] == before[0] + 1 && after[1] == before[1] + 1)
        #expect(writer.counts.slowRestarts == [0, 0, 0])
    }

    @Test func aDurationReachesTheThresholdsAtOrBelowIt() {
        #expect(SQLitePaymentStore.slowThresholds == [0.005, 0.02, 0.1])
        #expect(SQLiteWriter.thresholdsReached(by: 4_999_999) == 0)
        #expect(SQLiteWriter.thresholdsReached(by: 5_000_000) == 1)
        #expect(SQLiteWriter.thresholdsReached(by: 25_000_000) == 2)
        #expect(SQLiteWriter.thresholdsReached(by: 100_000_000) == 3)
        #expect(SQLiteWriter.thresholdsReached(by: .max) == 3)
    }

    /// A failing write in a group fails alone: the group is rolled back and each write is run again
    /// on its own, so the others still commit, durably.
    /// A COMMIT that failed with an I/O error (a failed fsync: SQLITE_IOERR_FSYNC, 1034), found
    /// the store corrupt, or ran out of memory (which SQLite can report after the frames were
    /// synced) stops the process: its frames may be in the WAL all the same. Busy, locked, full
    /// and a deferred constraint wrote no commit frame, and only fail the group.
    @Test(arguments: [(Int32(10), true), (1034, true), (266, true), (11, true), (7, true), (8, true), (5, false), (517, false), (6, false), (13, false), (19, false), (787, false)])
    func aCommitFailureIsFatalUnlessNothingWasWritten(code: Int32, fatal: Bool) {
        #expect(SQLiteWriter.commitFailureIsFatal(code) == fatal)
    }

    /// A write that comes after the writer closed is answered at once with an error, never left waiting.
    @Test func aWriteAfterCloseIsRefused() async throws {
        let scratch = try ScratchTable()
        defer { scratch.remove() }
        let writer = SQLiteWriter(connection: try SQLiteConnection(path: scratch.path, readOnly: false), gate: try scratch.gate(), name: "test-writer")
        try await writer.insert(1)
        writer.close()
        await #expect(throws: SQLiteError.self) { try await writer.insert(2) }
    }

    @Test func aFailingWriteFailsAloneInItsGroup() async throws {
        let scratch = try ScratchTable()
        defer { scratch.remove() }
        let connection = scratch.connection
        try connection.run("INSERT INTO t (x) VALUES (?)", [.integer(-1)])
        // A long window, so the writes below land in a few groups.
        let writer = SQLiteWriter(connection: connection, gate: try scratch.gate(), name: "test-writer", gatherWindow: .milliseconds(50))
        let outcomes = await withTaskGroup(of: (Int, Bool).self) { group in
            for i in 0..<100 {
                group.addTask {
                    // Write 50 repeats the row inserted above: a primary-key violation.
                    let value = i == 50 ? -1 : i
                    do {
                        _ = try await writer.perform { db in try db.run("INSERT INTO t (x) VALUES (?)", [.integer(Int64(value))]) }
                        return (i, true)
                    } catch {
                        return (i, false)
                    }
                }
            }
            return await group.reduce(into: [Int: Bool]()) { $0[$1.0] = $1.1 }
        }
        #expect(outcomes.filter { !$0.value }.map(\.key) == [50])
        let counts = writer.counts
        writer.close()
        #expect(counts.writes == 100)
        #expect(counts.commits < counts.writes, "the writes should have been grouped")
        let reader = try SQLiteConnection(path: scratch.path, readOnly: true)
        var rows = 0
        try reader.run("SELECT count(*) FROM t") { rows = Int($0.int(0)) }
        #expect(rows == 100)
    }

    /// While the busy signal says so, the writer gathers for the busy window: a write that comes
    /// 50 ms after another joins its group (the window is 3 s: a loaded machine's late wake-up
    /// must not split the group). Otherwise (window zero) a write is committed at once,
    /// never held for the busy window (30 s in that case, so that holding it cannot go unseen).
    @Test(arguments: [false, true]) func theBusyWindowAppliesOnlyWhileBusy(busy: Bool) async throws {
        let scratch = try ScratchTable()
        defer { scratch.remove() }
        let connection = scratch.connection
        let writer = SQLiteWriter(connection: connection, gate: try scratch.gate(), name: "test-writer", gatherWindow: .zero,
                                  busyWindow: busy ? .seconds(3) : .seconds(30))
        writer.whenBusy { busy }
        try await writer.warmUp()
        let before = writer.counts.commits
        let started = ContinuousClock.now
        if busy {
            async let first: Void = writer.insert(100)
            try await Task.sleep(for: .milliseconds(50))
            try await writer.insert(101)
            try await first
        } else {
            try await writer.insert(100)
        }
        let elapsed = ContinuousClock.now - started
        let commits = writer.counts.commits - before
        writer.close()
        #expect(commits == 1)
        if !busy { #expect(elapsed < .seconds(15), "held for the busy window") }
    }

    /// A group begun while the CPU was saturated gathers for the busy window (40 s here) only while
    /// it stays saturated: once the queue behind the workers has drained, the next write that
    /// arrives ends the wait, and both writes go in one group, committed at once: not after the
    /// ordinary window (20 s here) either. Waiting on would leave the cores idle.
    @Test func theBusyWindowEndsWhenTheSaturationDoes() async throws {
        let scratch = try ScratchTable()
        defer { scratch.remove() }
        let connection = scratch.connection
        let writer = SQLiteWriter(connection: connection, gate: try scratch.gate(), name: "test-writer", gatherWindow: .seconds(20), busyWindow: .seconds(40))
        let busy = Atomic<Bool>(false)
        writer.whenBusy { busy.load(ordering: .relaxed) }
        // Nothing else underway during the warm-up, so that it is committed at once; then more
        // writes may come, so that the writer gathers.
        let underway = Atomic<Int>(0)
        writer.whenWritesUnderway { underway.load(ordering: .relaxed) }
        try await writer.warmUp()
        underway.store(10, ordering: .relaxed)
        busy.store(true, ordering: .relaxed)
        let before = writer.counts.commits
        let started = ContinuousClock.now
        async let first: Void = writer.insert(100)
        // The writer has begun the group with the CPU saturated (busy window) before it ends.
        for _ in 0..<1_000 where !writer.isGathering { try await Task.sleep(for: .milliseconds(5)) }
        #expect(writer.isGathering)
        busy.store(false, ordering: .relaxed)
        try await writer.insert(101)
        try await first
        let elapsed = ContinuousClock.now - started
        let commits = writer.counts.commits - before
        writer.close()
        #expect(elapsed < .seconds(15), "held for the busy window after the saturation ended")
        #expect(commits == 1)
    }

    /// The window is 30 s, and gathering never lasts it out: a lone write (nothing else underway) is
    /// committed at once, and a write that waits for one more underway is committed as soon as that
    /// one arrives, in the same group. (Without the rule each would take the whole 30 s.)
    @Test(arguments: [1, 2]) func aGroupIsNotHeldForWritesThatCannotCome(underway: Int) async throws {
        let scratch = try ScratchTable()
        defer { scratch.remove() }
        let connection = scratch.connection
        let writer = SQLiteWriter(connection: connection, gate: try scratch.gate(), name: "test-writer", gatherWindow: .seconds(30))
        writer.whenWritesUnderway { underway }
        let started = ContinuousClock.now
        if underway == 1 {
            try await writer.insert(1)
        } else {
            async let first: Void = writer.insert(1)
            try await Task.sleep(for: .milliseconds(50))
            try await writer.insert(2)
            try await first
        }
        let elapsed = ContinuousClock.now - started
        let commits = writer.counts.commits
        writer.close()
        #expect(elapsed < .seconds(15), "held for the window")
        #expect(commits == 1)
    }
}

