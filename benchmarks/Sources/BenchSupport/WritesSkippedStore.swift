import Acquiring
import Processing

/// The pipeline's store with its writes skipped: reads go to the real store (the registered
/// payments, from memory as the worker reads them), while beginning an attempt and recording an
/// outcome answer at once and write nothing. What the pipeline would make if durability cost
/// nothing: a bound that says how much of the ceiling the store's two commits per makePayment
/// take, never a figure of the worker (which never runs without them).
final class WritesSkippedStore: WritesReplacedStore {
    let base: any PaymentStore
    init(_ base: any PaymentStore) { self.base = base }

    func beginAttempt(_ pspTransactionId: String, attempt: AttemptRecord, now: Int64) async throws -> BeginAttemptResult { .begun }
    func recordOutcome(_ pspTransactionId: String, outcome: PaymentOutcome, reversal: ReversalRequest?,
                       attemptId: String?, now: Int64, answerBy: ContinuousClock.Instant?) async throws -> PaymentOutcome? { outcome }
}

/// A bound's store: everything but the pipeline's two writes (beginning an attempt, recording an
/// outcome) goes to the real store `base`; the conforming type says what becomes of those two.
protocol WritesReplacedStore: PaymentStore {
    var base: any PaymentStore { get }
}

extension WritesReplacedStore {
    func register(_ registration: PaymentRegistration, now: Int64) async throws -> RegisterResult { try await base.register(registration, now: now) }
    func payment(_ pspTransactionId: String) async throws -> PaymentRecord? { try await base.payment(pspTransactionId) }
    func paymentForMakePayment(_ pspTransactionId: String) async throws -> PaymentRecord? { try await base.paymentForMakePayment(pspTransactionId) }
    func cancel(_ pspTransactionId: String, now: Int64) async throws -> CancelResult { try await base.cancel(pspTransactionId, now: now) }
    func attemptsStarted(before startedBefore: Int64, limit: Int) async throws -> [PaymentRecord] {
        try await base.attemptsStarted(before: startedBefore, limit: limit)
    }
    func dueReversals(now: Int64, limit: Int) async throws -> [ReversalRecord] { try await base.dueReversals(now: now, limit: limit) }
    func claimReversal(_ reversalId: String, now: Int64, until: Int64) async throws -> ReversalRecord? {
        try await base.claimReversal(reversalId, now: now, until: until)
    }
    func recordReversalTry(_ reversalId: String, state: ReversalState, nextTryAt: Int64, now: Int64) async throws {
        try await base.recordReversalTry(reversalId, state: state, nextTryAt: nextTryAt, now: now)
    }
    func reversals(for pspTransactionId: String) async throws -> [ReversalRecord] { try await base.reversals(for: pspTransactionId) }
}
