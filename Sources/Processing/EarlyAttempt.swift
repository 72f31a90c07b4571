import Synchronization

/// An attempt recorded while its makePayment waits for a worker and is decrypted. The front starts
/// the store's write as soon as the queue has taken the job, so that its commit (a group-commit
/// window and an fsync, 1–6 ms) runs during the wait and the RSA operation instead of after them;
/// the worker awaits it before the authorization is sent. A job the queue refuses (503) begins no
/// attempt: its payment stays `pending`, and Vipps may call again.
///
/// The card is not decrypted yet, so the attempt carries no masked PAN; the outcome records it.
public final class EarlyAttempt: Sendable {
    public let record: AttemptRecord
    /// When the attempt was begun, on this process's monotonic clock. Its authorization must be
    /// over within the acquirer's timeout of this instant: after that (and the outcome's margin)
    /// any process on the store may take the attempt for orphaned and reverse it.
    public let startedAt: ContinuousClock.Instant

    private struct State {
        /// Whether the queue took the job; nil until it has said.
        var accepted: Bool?
        var decisionWaiter: CheckedContinuation<Bool, Never>?
        var result: Result<BeginAttemptResult, any Error>?
        var resultWaiters: [CheckedContinuation<Result<BeginAttemptResult, any Error>, Never>] = []
    }
    private let state = Mutex(State())

    public init(record: AttemptRecord, startedAt: ContinuousClock.Instant) {
        self.record = record
        self.startedAt = startedAt
    }

    /// The queue took the job (true) or refused it (false). Said once; later calls are ignored.
    func decide(_ accepted: Bool) {
        let waiter = state.withLock { s -> CheckedContinuation<Bool, Never>? in
            guard s.accepted == nil else { return nil }
            s.accepted = accepted
            defer { s.decisionWaiter = nil }
            return s.decisionWaiter
        }
        waiter?.resume(returning: accepted)
    }

    /// Runs `begin` (the store's write) once the queue has taken the job; nothing if it refused it.
    /// On an event loop the front has decided before this child task first runs, so it does not wait.
    func begin(_ begin: () async throws -> BeginAttemptResult) async {
        let known = state.withLock { $0.accepted }
        let accepted: Bool
        if let known {
            accepted = known
        } else {
            accepted = await withCheckedContinuation { continuation in
                let decided = state.withLock { s -> Bool? in
                    if s.accepted == nil { s.decisionWaiter = continuation }
                    return s.accepted
                }
                if let decided { continuation.resume(returning: decided) }
            }
        }
        guard accepted else { return }
        let result: Result<BeginAttemptResult, any Error>
        do { result = .success(try await begin()) } catch { result = .failure(error) }
        let waiters = state.withLock { s -> [CheckedContinuation<Result<BeginAttemptResult, any Error>, Never>] in
            s.result = result
            defer { s.resultWaiters = [] }
            return s.resultWaiters
        }
        waiters.forEach { $0.resume(returning: result) }
    }

    /// What the store said, once it has (at once if it already has).
    func result() async -> Result<BeginAttemptResult, any Error> {
        if let done = state.withLock({ $0.result }) { return done }
        return await withCheckedContinuation { continuation in
            let done = state.withLock { s -> Result<BeginAttemptResult, any Error>? in
                if s.result == nil { s.resultWaiters.append(continuation) }
                return s.result
            }
            if let done { continuation.resume(returning: done) }
        }
    }
}
