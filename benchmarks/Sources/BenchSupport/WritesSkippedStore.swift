import Acquiring
import PaymentStoreConformance
import Processing

/// The pipeline's store with its writes skipped: reads go to the real store (the registered
/// payments, from memory as the worker reads them), while beginning an attempt and recording an
/// outcome answer at once and write nothing. What the pipeline would make if durability cost
/// nothing: a bound that says how much of the ceiling the store's two commits per makePayment
/// take, never a figure of the worker (which never runs without them).
/// Everything but the pipeline's two writes (beginning an attempt, recording an outcome) goes to
/// the real store `base`.
final class WritesSkippedStore: ForwardingPaymentStore {
    let base: any PaymentStore
    init(_ base: any PaymentStore) { self.base = base }

    func beginAttempt(_ pspTransactionId: String, attempt: AttemptRecord, now: Int64) async throws -> BeginAttemptResult { .begun }
    func recordOutcome(_ pspTransactionId: String, outcome: PaymentOutcome, reversal: ReversalRequest?,
                       attemptId: String?, now: Int64, answerBy: ContinuousClock.Instant?) async throws -> PaymentOutcome? { outcome }
}
