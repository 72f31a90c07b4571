import Acquiring
import Processing

/// A store that wraps another and changes some of its calls (a fault injected in a test, a bound in
/// a benchmark): every call the conforming type does not implement itself goes to `base`.
public protocol ForwardingPaymentStore: PaymentStore {
    var base: any PaymentStore { get }
}

extension ForwardingPaymentStore {
    public func register(_ registration: PaymentRegistration, now: Int64) async throws -> RegisterResult {
        try await base.register(registration, now: now)
    }
    public func payment(_ pspTransactionId: String) async throws -> PaymentRecord? { try await base.payment(pspTransactionId) }
    public func paymentForMakePayment(_ pspTransactionId: String) async throws -> PaymentRecord? {
        try await base.paymentForMakePayment(pspTransactionId)
    }
    public func cancel(_ pspTransactionId: String, now: Int64) async throws -> CancelResult { try await base.cancel(pspTransactionId, now: now) }
    public func beginAttempt(_ pspTransactionId: String, attempt: AttemptRecord, now: Int64) async throws -> BeginAttemptResult {
        try await base.beginAttempt(pspTransactionId, attempt: attempt, now: now)
    }
    public func recordOutcome(_ pspTransactionId: String, outcome: PaymentOutcome, reversal: ReversalRequest?,
                              attemptId: String?, now: Int64, answerBy: ContinuousClock.Instant?) async throws -> PaymentOutcome? {
        try await base.recordOutcome(pspTransactionId, outcome: outcome, reversal: reversal, attemptId: attemptId, now: now, answerBy: answerBy)
    }
    public func attemptsOrphaned(at now: Int64, unrecordedAfter: Int64, limit: Int) async throws -> [PaymentRecord] {
        try await base.attemptsOrphaned(at: now, unrecordedAfter: unrecordedAfter, limit: limit)
    }
    public func dueReversals(now: Int64, limit: Int) async throws -> [ReversalRecord] { try await base.dueReversals(now: now, limit: limit) }
    public func claimReversal(_ reversalId: String, now: Int64, until: Int64) async throws -> ReversalRecord? {
        try await base.claimReversal(reversalId, now: now, until: until)
    }
    public func recordReversalTry(_ reversalId: String, state: ReversalState, nextTryAt: Int64, now: Int64, claimedUntil: Int64?) async throws -> Bool {
        try await base.recordReversalTry(reversalId, state: state, nextTryAt: nextTryAt, now: now, claimedUntil: claimedUntil)
    }
    public func reversals(for pspTransactionId: String) async throws -> [ReversalRecord] { try await base.reversals(for: pspTransactionId) }
    public func settleReversalWithoutOriginal(_ reversalId: String, now: Int64, claimedUntil: Int64) async throws -> Bool {
        try await base.settleReversalWithoutOriginal(reversalId, now: now, claimedUntil: claimedUntil)
    }
    public func lateApproval(ofReversal reversalId: String, now: Int64, claimsEndBy: Int64) async throws -> LateApprovalResult {
        try await base.lateApproval(ofReversal: reversalId, now: now, claimsEndBy: claimsEndBy)
    }
    public var writesFailing: Bool { base.writesFailing }
    public func probeWrite(now: Int64) async throws { try await base.probeWrite(now: now) }
}
