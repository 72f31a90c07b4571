import Foundation
import Synchronization

/// A thread that owns one SQLite connection and runs the work handed to it. The writer lane
/// commits in groups: everything that arrived while the previous commit was syncing goes into one
/// transaction, each piece in its own savepoint, and no caller hears "done" before the COMMIT that
/// made its write durable. A reader lane runs reads without a transaction.
final class SQLiteLane: @unchecked Sendable {
    // @unchecked: `connection` is touched only by the lane's own thread; `pending` is behind `condition`.
    typealias Work = (SQLiteConnection) -> Void
    struct Item {
        let run: (SQLiteConnection) throws -> Void
        let finish: (SQLiteError?) -> Void
    }

    private let connection: SQLiteConnection
    private let grouped: Bool
    private let condition = NSCondition()
    private var pending: [Item] = []
    private var closed = false
    private var thread: Thread?
    private let stopped = DispatchSemaphore(value: 0)

    init(connection: SQLiteConnection, grouped: Bool, name: String) {
        self.connection = connection
        self.grouped = grouped
        let thread = Thread { [unowned self] in self.loop() }
        thread.name = name
        self.thread = thread
        thread.start()
    }

    /// Runs `body` on the lane and returns its result once it is durable (writer) or read (reader).
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
            grouped ? runGroup(batch) : batch.forEach(runAlone)
            batch.removeAll(keepingCapacity: true)
        }
        stopped.signal()
    }

    private func runAlone(_ item: Item) {
        do { try item.run(connection); item.finish(nil) } catch { item.finish(nil) }
    }

    private func runGroup(_ batch: [Item]) {
        do {
            try connection.execute("BEGIN IMMEDIATE")
        } catch {
            let e = error as? SQLiteError ?? SQLiteError(code: -1, message: "\(error)")
            batch.forEach { $0.finish(e) }
            return
        }
        for item in batch {
            // A piece that fails is rolled back alone; the rest of the group still commits.
            do {
                try connection.execute("SAVEPOINT piece")
                do { try item.run(connection); try connection.execute("RELEASE piece") }
                catch { try connection.execute("ROLLBACK TO piece"); try connection.execute("RELEASE piece") }
            } catch {}
        }
        do {
            try connection.execute("COMMIT")
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
