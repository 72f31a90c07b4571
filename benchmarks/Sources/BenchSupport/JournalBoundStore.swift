import Acquiring
import Foundation
import PaymentStoreConformance
import Processing
#if canImport(Glibc)
import Glibc
#endif

/// The pipeline's store with its two writes per makePayment made durable the cheapest way we know:
/// each attempt and outcome a short record appended to a preallocated file, by one thread, in
/// groups (up to `window` after a group's first record, or `groupLimit` records), one pwrite and
/// one fdatasync per group; callers resume once their group is synced. Reads go to the real store.
///
/// A bound, not a store: nothing reads the records back, so there is no recovery, no conditional
/// transition and no second process. It answers one question: how much of the ceiling durable
/// writes cost when they are appends rather than SQLite UPDATEs, that is, what a store built
/// as a journal could reach on this machine.
final class JournalBoundStore: ForwardingPaymentStore, @unchecked Sendable {
    // @unchecked: the buffer, the waiters and `closed` are behind `condition`; `fd` and `offset`
    // belong to the journal's thread.
    let base: any PaymentStore
    static let threadName = "journal-bound"
    private let fd: Int32
    private let size: Int64 = 128 << 20
    private let window: Double
    private let groupLimit: Int
    private let condition = NSCondition()
    private var buffer: [UInt8] = []
    private var waiters: [CheckedContinuation<Void, Never>] = []
    private var offset: Int64 = 0
    private var closed = false
    private let stopped = DispatchSemaphore(value: 0)

    init(_ base: any PaymentStore, path: String, window: Duration = .milliseconds(1), groupLimit: Int = 48) throws {
        self.base = base
        self.window = Double(window.components.attoseconds) / 1e18 + Double(window.components.seconds)
        self.groupLimit = groupLimit
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        guard fd >= 0, posix_fallocate(fd, 0, off_t(size)) == 0 else { throw CocoaError(.fileWriteUnknown) }
        // Written once and synced, so that the run's writes overwrite initialised blocks (as a
        // reused WAL does) instead of changing the file's metadata at every fdatasync.
        let zeros = [UInt8](repeating: 0, count: 1 << 20)
        for i in 0..<Int(size >> 20) { _ = zeros.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(i << 20)) } }
        fsync(fd)
        let thread = Thread { [unowned self] in
            Thread.current.name = Self.threadName
            self.loop()
        }
        thread.start()
    }

    private func loop() {
        var group: [UInt8] = [], resumes: [CheckedContinuation<Void, Never>] = []
        while true {
            condition.lock()
            while waiters.isEmpty && !closed { condition.wait() }
            if waiters.isEmpty && closed { condition.unlock(); break }
            let until = Date(timeIntervalSinceNow: window)
            while waiters.count < groupLimit && !closed && condition.wait(until: until) {}
            swap(&group, &buffer)
            swap(&resumes, &waiters)
            condition.unlock()
            if offset + Int64(group.count) > size { offset = 0 }
            let written = group.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(offset)) }
            precondition(written == group.count && fdatasync(fd) == 0, "the journal bound's write failed")
            offset += Int64(written)
            resumes.forEach { $0.resume() }
            group.removeAll(keepingCapacity: true)
            resumes.removeAll(keepingCapacity: true)
        }
        Glibc.close(fd)
        stopped.signal()
    }

    /// Appends one record (fields separated by 0x1F, ended by a newline) and returns once it is synced.
    private func append(_ fields: String...) async {
        await withCheckedContinuation { continuation in
            condition.lock()
            for field in fields { buffer.append(contentsOf: field.utf8); buffer.append(0x1F) }
            buffer.append(0x0A)
            waiters.append(continuation)
            if waiters.count == 1 || waiters.count == groupLimit { condition.signal() }
            condition.unlock()
        }
    }

    /// Syncs what is pending and stops the thread.
    func close() {
        condition.lock()
        closed = true
        condition.signal()
        condition.unlock()
        stopped.wait()
    }

    func beginAttempt(_ pspTransactionId: String, attempt: AttemptRecord, now: Int64) async throws -> BeginAttemptResult {
        await append("A", pspTransactionId, attempt.attemptId, attempt.attemptReference, attempt.instanceId,
                     attempt.maskedPAN.value, String(attempt.startedAt))
        return .begun
    }
    func recordOutcome(_ pspTransactionId: String, outcome: PaymentOutcome, reversal: ReversalRequest?,
                       attemptId: String?, now: Int64, answerBy: ContinuousClock.Instant?) async throws -> PaymentOutcome? {
        await append("O", pspTransactionId, attemptId ?? "", outcome.status.rawValue, outcome.acquirerResponseCode ?? "",
                     outcome.authorizationCode ?? "", outcome.acquirerReference ?? "", String(now))
        return outcome
    }
}
