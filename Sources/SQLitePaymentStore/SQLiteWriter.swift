import Foundation
import Synchronization

/// A thread that owns the one read-write SQLite connection and commits in groups: everything that
/// arrived while the previous commit was syncing goes into one transaction, each piece in its own
/// savepoint, and no caller hears "done" before the COMMIT that
/// made its write durable. (Statements, BEGIN and SAVEPOINT included, are prepared once.)
final class SQLiteWriter: @unchecked Sendable {
    // @unchecked: `connection` is touched only by the writer's own thread; `pending` is behind `condition`.
    struct Item {
        let run: (SQLiteConnection) throws -> Void
        let finish: (SQLiteError?) -> Void
    }

    private let connection: SQLiteConnection
    private let condition = NSCondition()
    private var pending: [Item] = []
    private var closed = false
    private var thread: Thread?
    private let stopped = DispatchSemaphore(value: 0)

    init(connection: SQLiteConnection, name: String) {
        self.connection = connection
        let thread = Thread { [unowned self] in self.loop() }
        thread.name = name
        self.thread = thread
        thread.start()
    }

    /// Runs `body` on the writer's thread and returns its result once the COMMIT made it durable.
    func perform<T: Sendable>(_ body: @escaping (SQLiteConnection) throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
            var result: T?
            var failure: (any Error)?
            let item = Item(
                run: { connection in
                    do { result = try body(connection) } catch { failure = error; throw error }
                },
                finish: { batchError in
                    if let failure { continuation.resume(throwing: failure) }
                    else if let batchError { continuation.resume(throwing: batchError) }
                    else { continuation.resume(returning: result!) }
                })
            condition.lock()
            guard !closed else {
                condition.unlock()
                continuation.resume(throwing: SQLiteError(code: -1, message: "the store is closed"))
                return
            }
            pending.append(item)
            condition.signal()
            condition.unlock()
        }
    }

    private func loop() {
        var batch: [Item] = []
        while true {
            condition.lock()
            while pending.isEmpty && !closed { condition.wait() }
            if pending.isEmpty && closed { condition.unlock(); break }
            swap(&batch, &pending)
            condition.unlock()
            runGroup(batch)
            batch.removeAll(keepingCapacity: true)
        }
        stopped.signal()
    }

    private func runGroup(_ batch: [Item]) {
        do {
            try connection.run("BEGIN IMMEDIATE")
        } catch {
            let e = error as? SQLiteError ?? SQLiteError(code: -1, message: "\(error)")
            batch.forEach { $0.finish(e) }
            return
        }
        for item in batch {
            // A piece that fails is rolled back alone; the rest of the group still commits.
            do {
                try connection.run("SAVEPOINT piece")
                do { try item.run(connection); try connection.run("RELEASE piece") }
                catch { try connection.run("ROLLBACK TO piece"); try connection.run("RELEASE piece") }
            } catch {}
        }
        do {
            try connection.run("COMMIT")
            batch.forEach { $0.finish(nil) }
        } catch {
            try? connection.execute("ROLLBACK")
            let e = error as? SQLiteError ?? SQLiteError(code: -1, message: "\(error)")
            batch.forEach { $0.finish(e) }
        }
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

/// Copies the WAL back into the database file every `interval`, PASSIVE (never waiting for, or
/// blocking, the writer), so the WAL stays small without a checkpoint ever running inside a commit.
final class SQLiteCheckpointer: @unchecked Sendable {
    // @unchecked: `connection` is used only by this thread; `stop` is a semaphore.
    private let connection: SQLiteConnection
    private let stop = DispatchSemaphore(value: 0)
    private let stopped = DispatchSemaphore(value: 0)
    private let closed = Mutex(false)

    init(connection: SQLiteConnection, interval: DispatchTimeInterval = .milliseconds(250)) {
        self.connection = connection
        let thread = Thread { [unowned self] in
            while self.stop.wait(timeout: .now() + interval) == .timedOut {
                try? self.connection.execute("PRAGMA wal_checkpoint(PASSIVE)")
            }
            self.stopped.signal()
        }
        thread.name = "sqlite-checkpointer"
        thread.start()
    }

    func close() {
        guard closed.withLock({ c -> Bool in defer { c = true }; return !c }) else { return }
        stop.signal()
        stopped.wait()
    }
}
