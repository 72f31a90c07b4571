import Acquiring
import Foundation
import Synchronization

/// Copies the WAL back into the database file every `interval`, so that no checkpoint runs inside a
/// commit: PASSIVE, between two of the writer's groups (a group waits while one runs, and a
/// checkpoint while a group commits: `CheckpointGate`). When the WAL has grown to
/// `restartFrames` or more, it calls `walTooLong`: the writer then completes the checkpoint between
/// two groups, and the WAL starts again from its beginning (`SQLiteWriter.requestWALRestart`).
final class SQLiteCheckpointer: @unchecked Sendable {
    // @unchecked: `connection` is used only by this thread; `stop` is a semaphore.
    private let connection: SQLiteConnection
    private let stop = DispatchSemaphore(value: 0)
    private let stopped = DispatchSemaphore(value: 0)
    private let closed = Mutex(false)

    private let gate: CheckpointGate

    init(connection: SQLiteConnection, gate: CheckpointGate, interval: Duration, restartFrames: Int,
         walTooLong: @escaping @Sendable () -> Void) {
        self.connection = connection
        self.gate = gate
        let interval = DispatchTimeInterval.nanoseconds(Int(max(interval.wholeNanoseconds, 1)))
        let thread = Thread { [unowned self] in
            nameCurrentThread("sqlite-ckpt")
            while self.stop.wait(timeout: .now() + interval) == .timedOut {
                // Skipped while another process holds the gate: tried again at the next interval.
                if let result = try? self.gate.withGate(waiting: false, { try self.connection.checkpointPassive() }), result.walFrames >= restartFrames {
                    walTooLong()
                }
            }
            self.stopped.signal()
        }
        thread.start()
    }

    func close() {
        guard closed.withLock({ c -> Bool in defer { c = true }; return !c }) else { return }
        stop.signal()
        stopped.wait()
    }
}
