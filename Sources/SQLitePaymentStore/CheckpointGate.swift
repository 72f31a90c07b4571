import Acquiring
import CSQLite
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Keeps checkpoints and commits of one database from overlapping, in this process and in any
/// other process on the same database: an exclusive `flock` on a file beside it
/// (`<database>-gate`), taken after a lock of this process's own for that database (by its path).
/// The writer holds it around each group (BEGIN to the end of COMMIT) and each checkpoint it
/// completes; the checkpointer around each of its checkpoints. Each holder opens the file itself
/// (a `flock` belongs to the open file, and must be taken and released by one holder).
///
/// Why: SQLite from 3.7.0 to 3.51.2 has a race that loses committed writes or corrupts the file
/// (fixed in 3.51.3, with backports in 3.50.7 and 3.44.6; https://sqlite.org/wal.html#walresetbug).
/// A checkpoint completes, a second one starts just after, and while it starts a commit restarts
/// the WAL. The second checkpoint can then leave a wrong backfill count, and a later one skips
/// committed frames. This store makes that sequence routine: its checkpointer checkpoints every
/// 250 ms on a connection of its own, while the writer completes checkpoints and restarts the WAL
/// under load. With no checkpoint running while a transaction is open, the race cannot begin.
/// The project now builds SQLite 3.54.1 itself (Sources/CSQLite), which has the fix; the gate
/// stays as a second line, for older psp-worker builds on the same store (they linked Debian 12's
/// 3.40.1, and take the gate too), and because it costs nothing measurable
/// (benchmarks/HISTORY.md, fifteenth session). A group waits while a checkpoint runs (it copies
/// pages and syncs the database file, typically 1–3 ms).
/// Connections that do not go through a gate (the `sqlite3` shell, say) are not covered: with
/// the store in use, only read from it.
///
/// The writer waits at most `timeout` for another process's hold, as SQLite waits for its own
/// locks (`sqlite3_busy_timeout`, the same 5 s): another process frozen while it holds the gate
/// (stopped, paused in its container, under a debugger) then fails this one's writes, which go
/// the way of any refused write (91, and an approval reversed), instead of holding them with no
/// answer for as long as it stays frozen. Holders in this process wait for each other first,
/// without a limit (a checkpoint of this process's own is never frozen, however long it takes);
/// so the checkpointer does not wait for another process at all (`withGate(waiting: false)`): it
/// would hold this process's lock, and the writer behind it, for its own 5 s first.
final class CheckpointGate: @unchecked Sendable {
    // @unchecked: the descriptor is set once; this process's lock (taken first, released last)
    // keeps two threads from holding gates of one database at once.
    private let descriptor: Int32
    let timeout: Duration
    /// This process's holders of the same database, in turn.
    private let local: NSLock
    private static let localLocks = Mutex<[String: NSLock]>([:])

    /// The gate's file beside a database.
    static func path(forDatabase path: String) -> String { path + "-gate" }

    /// Opens (creating it if need be) the gate of the database at `databasePath`.
    init(databasePath: String, timeout: Duration = .seconds(5)) throws {
        self.timeout = timeout
        local = Self.localLocks.withLock { locks in
            if let lock = locks[databasePath] { return lock }
            let lock = NSLock()
            locks[databasePath] = lock
            return lock
        }
        let path = Self.path(forDatabase: databasePath)
        // Read-only suffices for flock; the file is never written, and never removed (a process
        // that removed it could leave another holding a gate no one else can see).
        descriptor = open(path, O_RDONLY | O_CREAT | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else {
            throw SQLiteError(code: SQLITE_CANTOPEN, message: "\(path): \(String(cString: strerror(errno)))")
        }
    }

    deinit { close(descriptor) }

    /// Runs `body` with the gate held, waiting for it while another holder has it. Throws without
    /// running `body` if the gate cannot be taken (SQLITE_BUSY past `timeout`): nothing may then
    /// checkpoint or commit.
    /// `waiting: false`: throws SQLITE_BUSY at once if another process holds it.
    func withGate<T>(waiting: Bool = true, _ body: () throws -> T) throws -> T {
        local.lock()
        defer { local.unlock() }
        try take(waiting: waiting)
        defer { flock(descriptor, LOCK_UN) }
        return try body()
    }

    /// A blocking flock cannot time out, so a gate held by another process is polled, at growing
    /// intervals up to half a millisecond (about ten polls for a checkpoint's 1–3 ms).
    private func take(waiting: Bool) throws {
        let deadline = monotonicNanoseconds() &+ (waiting ? timeout.wholeNanoseconds : 0)
        var pause: UInt32 = 20
        while flock(descriptor, LOCK_EX | LOCK_NB) != 0 {
            switch errno {
            case EINTR: continue
            case EWOULDBLOCK:
                guard monotonicNanoseconds() < deadline else {
                    throw SQLiteError(code: SQLITE_BUSY, message: "the checkpoint gate was held by another connection for over \(timeout)")
                }
                usleep(pause)
                pause = min(pause * 2, 500)
            default:
                throw SQLiteError(code: SQLITE_IOERR, message: "cannot take the checkpoint gate: \(String(cString: strerror(errno)))")
            }
        }
    }
}
