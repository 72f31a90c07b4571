import Acquiring
import CSQLite
import Foundation
import Synchronization

/// A thread that owns the one read-write SQLite connection and commits in groups: everything that
/// arrived while the previous commit was syncing goes into one transaction, and no caller hears
/// "done" before the COMMIT that made its write durable. (Statements, BEGIN and COMMIT included,
/// are prepared once.)
///
/// Under load it also waits up to `gatherWindow` for a group to fill (PostgreSQL's commit_delay):
/// an fsync here costs ~60 µs of kernel CPU and ~250 µs of wall time, and at thousands of writes
/// per second one commit per write or two costs more CPU than everything else but RSA. It only
/// waits when writes arrive more often than once per window (then another is due before the
/// window ends): sparse writes are never delayed. (Waiting only above four writes per window cost
/// ~5 % more worker CPU per payment at 1,100 payments/s in an open loop, and a higher p99.)
/// Nor does it wait when no other write can come: when every payment being worked on (`whenWritesUnderway`)
/// already waits in the group. Each payment writes twice, one write after the other's commit, so
/// the arrival rate alone would hold a lone payment for two windows that gather nothing. (The count
/// is read when a write arrives and when the writer wakes; a payment that finishes does not wake
/// it, so a write that comes just before another payment's answer may still wait out the window.)
final class SQLiteWriter: @unchecked Sendable {
    // @unchecked: `connection` is touched only by the writer's own thread; the rest is behind `condition`.
    /// One caller's write as the group sees it (`Write`): a class, so that a write costs one
    /// allocation here besides the caller's closure, and the group holds it by reference.
    typealias Item = any GroupWrite

    typealias Statistics = SQLitePaymentStore.WriterStatistics

    /// 5, 20 and 100 ms, in nanoseconds.
    static let slowThresholds: [UInt64] = [5_000_000, 20_000_000, 100_000_000]

    private let connection: SQLiteConnection
    /// Held around each group and each checkpoint, so that no checkpoint runs meanwhile (`CheckpointGate`).
    private let gate: CheckpointGate
    private let condition = MonotonicCondition()
    private var pending: [Item] = []
    private var closed = false
    /// The writer sleeps for work (and must be signalled), rather than gathering a group (and must not be).
    private var idle = false
    private var pendingSince: UInt64 = 0
    private var lastArrival: UInt64 = 0
    /// Smoothed nanoseconds between writes: the load that decides whether gathering pays.
    private var arrivalInterval: Double = 1e9
    private var statistics = Statistics()
    private let gatherWindow: UInt64
    /// The window while `busy` says the CPU is saturated: then fewer, larger commits leave more of
    /// it for RSA, and the wait costs no latency that the queue would not cost anyway.
    private let busyWindow: UInt64
    private var busy: (@Sendable () -> Bool)?
    /// How many writes may come soon: the payments being worked on, those waiting here included.
    private var underway: (@Sendable () -> Int)?
    /// The writer waits for a group to fill (and is signalled when no other write can come).
    private var gathering = false
    /// The group being gathered took the busy window, because the CPU was saturated when it began.
    private var gatheringWhileBusy = false
    /// The WAL has grown past its limit: finish the checkpoint between two groups, so that it restarts.
    private var walRestartDue = false
    private let groupLimit = 256
    private let stopped = DispatchSemaphore(value: 0)

    init(connection: SQLiteConnection, gate: CheckpointGate, name: String, gatherWindow: Duration = .milliseconds(2),
         busyWindow: Duration? = nil) {
        self.connection = connection
        self.gate = gate
        self.gatherWindow = gatherWindow.wholeNanoseconds
        self.busyWindow = (busyWindow ?? gatherWindow).wholeNanoseconds
        let thread = Thread { [unowned self] in
            nameCurrentThread(name)
            self.loop()
        }
        thread.start()
    }

    /// Sets what tells the writer that the machine is saturated: read under its lock at each group's
    /// start and, while a group gathers for the busy window, at each write and wake-up, so it must be
    /// cheap (an atomic load) and must not call into the store.
    func whenBusy(_ signal: @escaping @Sendable () -> Bool) {
        condition.lock()
        busy = signal
        condition.unlock()
    }

    /// Sets what tells the writer how many writes may come soon (read under its lock, so it must
    /// be cheap: an atomic load).
    func whenWritesUnderway(_ count: @escaping @Sendable () -> Int) {
        condition.lock()
        underway = count
        condition.unlock()
    }

    /// Every write that may come soon is already pending: gathering longer would gather nothing.
    /// Called with `condition` locked.
    private var nothingMoreComing: Bool {
        guard let underway else { return false }
        return underway() <= pending.count
    }

    /// A group gathered for the busy window, and the CPU is no longer saturated: the work queued
    /// behind the workers has drained (what is left waits here), so waiting on would idle the
    /// cores. The group is then committed at once: the payments waiting in it are what refills
    /// the queue (each goes on to its next write or its answer), and the commit's fsync can still
    /// overlap the last jobs the workers hold. Keeping the ordinary window instead left the cores
    /// idle for that window's rest, then for the fsync (pipeline in process, Zen 5: 0.3–0.5 ms an
    /// idle spell, 1.7 % more of the cores busy without them). Called with `condition` locked.
    private var busyEnded: Bool { gatheringWhileBusy && busy?() != true }

    /// Asks the writer to complete a checkpoint between two groups, so that the next group's write
    /// starts the WAL from its beginning.
    ///
    /// SQLite restarts a WAL only when every frame is in the database file. While checkpoints ran
    /// beside the commits (before `CheckpointGate`), the checkpointer's never caught up under a
    /// steady stream of them: by the time one had copied the frames it saw, the writer had appended
    /// more, and the WAL grew for as long as the load lasted (137 MB in 18 s at 1,200 payments/s; a
    /// crash then leaves all of it to replay, and the WAL index to search grows with it). Now they
    /// run between groups and usually complete, but one that meets a reader on an older snapshot
    /// copies only up to it. So the writer, the one connection that can stop the appending, still
    /// completes one when the WAL has grown too long: a pause of about one fsync of the database
    /// file, once per restart.
    func requestWALRestart() {
        condition.lock()
        walRestartDue = true
        condition.unlock()
    }

    /// Whether the writer is gathering a group now (for tests).
    var isGathering: Bool {
        condition.lock()
        defer { condition.unlock() }
        return gathering
    }

    /// Whether the last group's transaction failed (BEGIN, the checkpoint gate or COMMIT: busy past
    /// the timeout, a full disk), with none committed since: what readiness reports.
    var lastGroupFailed: Bool { groupFailed.load(ordering: .relaxed) }
    private let groupFailed = Atomic<Bool>(false)

    var counts: Statistics {
        condition.lock()
        defer { condition.unlock() }
        return statistics
    }

    /// Runs `body` on the writer's thread and returns its result once the COMMIT made it durable.
    func perform<T: Sendable>(_ body: @escaping (SQLiteConnection) throws -> T) async throws -> T {
        let write = Write(body)
        // Unsafe rather than checked (which allocates a guard object per call): `runGroup` answers
        // each write it took exactly once, and a write it never takes is answered here.
        return try await withUnsafeThrowingContinuation { continuation in
            write.continuation = continuation
            let now = monotonicNanoseconds()
            condition.lock()
            guard !closed else {
                condition.unlock()
                continuation.resume(throwing: SQLiteError(code: -1, message: "the store is closed"))
                return
            }
            if pending.isEmpty { pendingSince = now }
            pending.append(write)
            arrivalInterval = arrivalInterval * 0.875 + Double(min(now &- lastArrival, 100_000_000)) * 0.125
            lastArrival = now
            // A gathering writer wakes at its deadline; waking it on every write would cost a switch each.
            if idle || pending.count >= groupLimit || (gathering && (nothingMoreComing || busyEnded)) { condition.signal() }
            condition.unlock()
        }
    }

    private func loop() {
        var batch: [Item] = []
        while true {
            condition.lock()
            while pending.isEmpty && !closed { idle = true; condition.wait(); idle = false }
            if pending.isEmpty && closed { condition.unlock(); break }
            let saturated = busyWindow != gatherWindow && busy?() == true
            let window = saturated ? busyWindow : gatherWindow
            if window > 0 && arrivalInterval < Double(window) && !nothingMoreComing {
                gathering = true
                gatheringWhileBusy = saturated
                while pending.count < groupLimit && !closed && !nothingMoreComing && !busyEnded {
                    let deadline = pendingSince &+ window
                    guard monotonicNanoseconds() < deadline else { break }
                    condition.wait(untilMonotonicNanoseconds: deadline)
                }
                gathering = false
                gatheringWhileBusy = false
            }
            swap(&batch, &pending)
            statistics.commits += 1
            statistics.writes += batch.count
            let restartWAL = walRestartDue
            condition.unlock()
            runGroup(batch)
            batch.removeAll(keepingCapacity: true)
            // After the group's callers have their answers, not before: they do not wait for it.
            if restartWAL { completeCheckpoint() }
        }
        stopped.signal()
    }

    /// Copies the frames the checkpointer has not yet copied; no transaction is open here, so none
    /// are appended meanwhile. Busy (the checkpointer is at it): tried again after the next group.
    /// Otherwise done, complete or not (a reader on an old snapshot, an I/O error); the checkpointer
    /// asks again while the WAL is still too long.
    private func completeCheckpoint() {
        let began = monotonicNanoseconds()
        let result = try? gate.withGate { try connection.checkpointPassive() }
        countIfSlow(\.slowRestarts, since: began)
        if result?.busy == true { return }
        condition.lock()
        walRestartDue = false
        if result?.isComplete == true { statistics.walRestarts += 1 }
        condition.unlock()
    }

    /// Counts a group or a checkpoint that took one of `slowThresholds` or longer.
    private func countIfSlow(_ counts: WritableKeyPath<Statistics, [Int]>, since began: UInt64) {
        let reached = Self.thresholdsReached(by: monotonicNanoseconds() &- began)
        guard reached > 0 else { return }
        condition.lock()
        for i in 0..<reached { statistics[keyPath: counts][i] += 1 }
        condition.unlock()
    }

    /// How many of `slowThresholds` (ascending) a duration reaches.
    static func thresholdsReached(by nanoseconds: UInt64) -> Int {
        slowThresholds.prefix { nanoseconds >= $0 }.count
    }

    /// `pieceFailed(ofTheStore:)`: a piece threw, rolling the group back; `ofTheStore` when its
    /// error was the store's (`failureIsTheStores`), not the piece's own.
    private enum GroupCommit { case committed, pieceFailed(ofTheStore: Bool), failed(SQLiteError) }

    /// One transaction for the whole group. No savepoint per piece (two more statements per
    /// write): a piece that fails, which is rare (a constraint, a full disk), rolls the group back
    /// and each piece then runs in a transaction of its own, so only the failing one fails.
    private func runGroup(_ batch: [Item]) {
        let began = monotonicNanoseconds()
        let result = commit(batch)
        // Counted before any caller hears back, so that a caller sees its own group counted.
        countIfSlow(\.slowGroups, since: began)
        switch result {
        case .committed:
            batch.forEach { $0.finish(nil) }
        case .pieceFailed(let ofTheStore) where batch.count > 1:
            var storeFailed = ofTheStore
            for item in batch {
                switch commit([item]) {
                // A failed piece reports its own error from `finish`.
                case .committed, .pieceFailed(ofTheStore: false): item.finish(nil)
                case .pieceFailed(ofTheStore: true):
                    storeFailed = true
                    item.finish(nil)
                case .failed(let error):
                    storeFailed = true
                    item.finish(error)
                }
            }
            // The pieces that committed alone after it do not clear what the store's failure said.
            if storeFailed { groupFailed.store(true, ordering: .relaxed) }
        case .pieceFailed:
            batch[0].finish(nil)
        case .failed(let error):
            batch.forEach { $0.finish(error) }
        }
    }

    /// One group's transaction, with the checkpoint gate held from BEGIN (whose snapshot decides
    /// whether the COMMIT restarts the WAL) to the end of COMMIT.
    private func commit(_ items: some Collection<Item>) -> GroupCommit {
        let result: GroupCommit
        do {
            result = try gate.withGate { commitGated(items) }
        } catch {
            result = .failed(SQLiteError.wrapping(error))
        }
        // A piece's own failure (a refused transition, a constraint) says nothing of the store;
        // one the store made (a read of a failing disk, a full one) says writes are failing.
        switch result {
        case .committed: groupFailed.store(false, ordering: .relaxed)
        case .failed, .pieceFailed(ofTheStore: true): groupFailed.store(true, ordering: .relaxed)
        case .pieceFailed(ofTheStore: false): break
        }
        return result
    }

    private func commitGated(_ items: some Collection<Item>) -> GroupCommit {
        do {
            try connection.run("BEGIN IMMEDIATE")
        } catch {
            return .failed(SQLiteError.wrapping(error))
        }
        for item in items {
            do { try item.run(connection) } catch {
                rollBack()
                return .pieceFailed(ofTheStore: Self.failureIsTheStores(error))
            }
        }
        do {
            try connection.run("COMMIT")
            return .committed
        } catch {
            let failure = SQLiteError.wrapping(error)
            // After an I/O error in COMMIT (a failed fsync, above all), or no memory for the WAL
            // index once the frames are synced, the group's frames may be in the WAL all the
            // same, and a restart would replay them: an outcome answered 91 would
            // then stand as OK, with nothing to reverse it. Like PostgreSQL after a failed fsync,
            // the process stops rather than go on with a store whose state it cannot know; a
            // restart recovers the store, and the orphan sweep settles what was in flight.
            if Self.commitFailureIsFatal(failure.code) {
                fatalError("store commit failed (\(failure)) after its frames may have reached the WAL; stopping so that a restart recovers the store")
            }
            rollBack()
            return .failed(failure)
        }
    }

    /// Ends the group's transaction. One left open (a ROLLBACK that failed) would keep the
    /// database's write lock: every later group, here and in any other process on the store,
    /// would fail while this one still looked ready. Stops the process instead, as after a failed
    /// COMMIT; a restart rolls the transaction back.
    private func rollBack() {
        try? connection.execute("ROLLBACK")
        if connection.inTransaction {
            fatalError("store: a group's transaction could not be rolled back; stopping so that a restart recovers the store")
        }
    }

    /// An error a statement got from the store itself, not from what it asked: I/O, corruption, a
    /// full disk, no memory, a read-only or unopenable file. Every write could meet it, so
    /// readiness reports writes failing until a group commits again.
    static func failureIsTheStores(_ error: any Error) -> Bool {
        guard let code = (error as? SQLiteError)?.code else { return false }
        return [SQLITE_IOERR, SQLITE_CORRUPT, SQLITE_FULL, SQLITE_NOMEM, SQLITE_READONLY, SQLITE_CANTOPEN, SQLITE_NOTADB].contains(code & 0xFF)
    }

    /// Every failure but the four that come before the commit frame reaches the WAL: busy and
    /// locked (the write lock not had), a constraint (a deferred foreign key, checked first) and
    /// full (the frame's own write failed: with powersafe overwrite, SQLite's default, nothing is
    /// written after it before the sync). Any other, in any extended form, may come after the
    /// frame was synced (SQLITE_NOMEM from growing the WAL index, an I/O error in the sync
    /// itself), so the group may stand after a restart though its writers were told it failed.
    static func commitFailureIsFatal(_ code: Int32) -> Bool {
        ![SQLITE_BUSY, SQLITE_LOCKED, SQLITE_CONSTRAINT, SQLITE_FULL].contains(code & 0xFF)
    }

    /// Finishes what is queued, then stops the thread.
    func close() {
        condition.lock()
        let wasOpen = !closed
        closed = true
        condition.signal()
        condition.unlock()
        if wasOpen { stopped.wait() }
    }
}

/// A write in a group: run it inside the group's transaction, then answer its caller once.
protocol GroupWrite: AnyObject {
    func run(_ connection: SQLiteConnection) throws
    /// Answers the caller: the group's failure if the group failed (then nothing the write did
    /// stands, and a failure of its own may be from an earlier run), else the write's own result.
    func finish(_ groupError: SQLiteError?)
}

/// `SQLiteWriter.perform`'s write: its body, then its result and its caller's continuation.
private final class Write<T: Sendable>: GroupWrite, @unchecked Sendable {
    // @unchecked: the caller sets `continuation`, then hands the write over under the writer's lock
    // (whose unlock and the writer's lock order the two); from then on only the writer's thread
    // touches the write, `body` included (not @Sendable: the store's bodies capture values only).
    private let body: (SQLiteConnection) throws -> T
    var continuation: UnsafeContinuation<T, any Error>?
    private var result: Result<T, any Error>?

    init(_ body: @escaping (SQLiteConnection) throws -> T) { self.body = body }

    func run(_ connection: SQLiteConnection) throws {
        // Run again alone after its group was rolled back, it starts afresh.
        result = nil
        do { result = .success(try body(connection)) } catch { result = .failure(error); throw error }
    }

    func finish(_ groupError: SQLiteError?) {
        guard let continuation else { preconditionFailure("a write finished before its caller waited") }
        self.continuation = nil
        switch (groupError, result) {
        case (let groupError?, _): continuation.resume(throwing: groupError)
        case (nil, .failure(let failure)?): continuation.resume(throwing: failure)
        case (nil, .success(let value)?): continuation.resume(returning: value)
        case (nil, nil): continuation.resume(throwing: SQLiteError(code: -1, message: "the write was not run"))
        }
    }
}

/// Names the calling thread for the OS too (`top -H`, `perf`, /proc/PID/task/*/comm): Foundation
/// passes a name on only when it is set from the thread itself. Linux keeps the first 15 bytes.
func nameCurrentThread(_ name: String) {
    Thread.current.name = name
}
