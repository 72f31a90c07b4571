import Acquiring
import MakePayment

/// A payment the PSP registered (from Vipps's initiate request), as the store keeps it. Only a
/// SHA-256 of the makePaymentToken is stored.
public struct PaymentRegistration: Sendable, Equatable {
    public var pspTransactionId: String
    public var merchantSerialNumber: String
    public var merchantOrderId: String
    public var amount: Int
    public var currency: String
    public var tokenHash: [UInt8]
    public var paymentText: String

    public init(pspTransactionId: String, merchantSerialNumber: String, merchantOrderId: String, amount: Int,
                currency: String, tokenHash: [UInt8], paymentText: String) {
        self.pspTransactionId = pspTransactionId
        self.merchantSerialNumber = merchantSerialNumber
        self.merchantOrderId = merchantOrderId
        self.amount = amount
        self.currency = currency
        self.tokenHash = tokenHash
        self.paymentText = paymentText
    }

    /// The same registration, byte for byte, as the store keeps it (`==` on its strings would take
    /// canonically equivalent texts as equal: "café" written with a combining accent is not the
    /// registration stored, and must not be told it is).
    public func hasSameBytes(as other: PaymentRegistration) -> Bool {
        func same(_ a: String, _ b: String) -> Bool { a.utf8.elementsEqual(b.utf8) }
        return same(pspTransactionId, other.pspTransactionId) && same(merchantSerialNumber, other.merchantSerialNumber)
            && same(merchantOrderId, other.merchantOrderId) && amount == other.amount && same(currency, other.currency)
            && tokenHash == other.tokenHash && same(paymentText, other.paymentText)
    }
}

public enum PaymentState: String, Sendable, Codable {
    /// Registered; no makePayment has been processed.
    case pending
    /// An attempt was recorded and sent to the acquirer; its outcome is not recorded yet.
    case processing
    /// Has an outcome; every later makePayment gets the same body.
    case completed
    /// Cancelled by the PSP before it was processed; makePayment answers 85.
    case cancelled
}

/// The recorded answer to makePayment: what every repeat of the request gets again.
public struct PaymentOutcome: Sendable, Equatable {
    public var status: PaymentStatus
    public var error: ErrorMessage?
    public var maskedPAN: MaskedPAN?
    public var acquirerResponseCode: String?
    public var authorizationCode: String?
    public var acquirerReference: String?

    public init(status: PaymentStatus, error: ErrorMessage?, maskedPAN: MaskedPAN? = nil,
                acquirerResponseCode: String? = nil, authorizationCode: String? = nil, acquirerReference: String? = nil) {
        self.status = status
        self.error = error
        self.maskedPAN = maskedPAN
        self.acquirerResponseCode = acquirerResponseCode
        self.authorizationCode = authorizationCode
        self.acquirerReference = acquirerReference
    }

    public func response(for pspTransactionId: String) -> MakePaymentResponse {
        MakePaymentResponse(errorMessage: error, paymentInfo: PaymentInfo(pspTransactionId: pspTransactionId, status: status))
    }
}

/// One authorization sent (or about to be sent) to the acquirer.
public struct AttemptRecord: Sendable, Equatable {
    public var attemptId: String
    /// The acquirer adapter's identifiers of the attempt (see `AcquirerAdapter.attemptReference(for:)`).
    public var attemptReference: String
    /// The process that sent it: an attempt left `processing` by another instance was orphaned by a crash.
    public var instanceId: String
    public var maskedPAN: MaskedPAN
    public var startedAt: Int64
    /// When the process that sent it will have given up on it for certain (its own acquirer
    /// timeout, and the margin for recording the outcome): before that, no process may take it
    /// for orphaned, whatever its own timeout. nil for an attempt recorded by an older build
    /// (which is taken as orphaned only once Vipps's patience is over: `unrecordedAfter`).
    public var orphanedAt: Int64?

    public init(attemptId: String, attemptReference: String? = nil, instanceId: String, maskedPAN: MaskedPAN, startedAt: Int64,
                orphanedAt: Int64? = nil) {
        self.attemptId = attemptId
        self.attemptReference = attemptReference ?? attemptId
        self.instanceId = instanceId
        self.maskedPAN = maskedPAN
        self.startedAt = startedAt
        self.orphanedAt = orphanedAt
    }
}

/// Everything the store knows of a payment.
public struct PaymentRecord: Sendable, Equatable {
    public var registration: PaymentRegistration
    public var state: PaymentState
    public var outcome: PaymentOutcome?
    /// The attempt in flight or last sent.
    public var attempt: AttemptRecord?
    /// How many authorizations were recorded as sent for this payment. Never more than one.
    public var authorizationsSent: Int
    public var createdAt: Int64
    public var updatedAt: Int64
    public var completedAt: Int64?

    public init(registration: PaymentRegistration, state: PaymentState, outcome: PaymentOutcome?, attempt: AttemptRecord?,
                authorizationsSent: Int, createdAt: Int64, updatedAt: Int64, completedAt: Int64?) {
        self.registration = registration
        self.state = state
        self.outcome = outcome
        self.attempt = attempt
        self.authorizationsSent = authorizationsSent
        self.createdAt = createdAt
        self.updatedAt = updatedAt
        self.completedAt = completedAt
    }
}

public enum ReversalState: String, Sendable, Codable {
    case pending, acknowledged, failed
}

public struct ReversalRecord: Sendable, Equatable {
    public var request: ReversalRequest
    public var reason: String
    public var state: ReversalState
    public var tries: Int
    public var nextTryAt: Int64
    public var createdAt: Int64
    /// Its authorization was approved late: "no such authorization" does not settle it.
    public var lateApproved: Bool

    public init(request: ReversalRequest, reason: String, state: ReversalState, tries: Int, nextTryAt: Int64, createdAt: Int64,
                lateApproved: Bool = false) {
        self.request = request
        self.reason = reason
        self.state = state
        self.tries = tries
        self.nextTryAt = nextTryAt
        self.createdAt = createdAt
        self.lateApproved = lateApproved
    }
}

public enum RegisterResult: Sendable, Equatable { case created, alreadyExists }

/// What a late approval did to a reversal (`PaymentStore.lateApproval(ofReversal:now:claimsEndBy:)`):
/// started again as new, or left as it was (reversed by the host, or no such reversal).
public enum LateApprovalResult: Sendable, Equatable { case reopened, stands }

extension PaymentOutcome {
    /// What an approval is recorded as when it comes too late to be answered: 85, its authorization
    /// to be reversed, the acquirer's code and reference kept for the record.
    public var tooLateToAnswer: PaymentOutcome {
        PaymentOutcome(status: .fail, error: APIError.responseReceivedTooLate.message, maskedPAN: maskedPAN,
                       acquirerResponseCode: acquirerResponseCode, acquirerReference: acquirerReference)
    }
}

extension ReversalRequest {
    /// The reversal of attempt `attemptId` (identified to the acquirer by `attemptReference`) of a registered payment.
    public static func undoing(attemptId: String, attemptReference: String, of registration: PaymentRegistration) -> ReversalRequest {
        ReversalRequest(reversalId: ReversalRequest.reversalId(of: attemptId), pspTransactionId: registration.pspTransactionId, attemptId: attemptId,
                        attemptReference: attemptReference, amount: registration.amount, currency: registration.currency,
                        merchantSerialNumber: registration.merchantSerialNumber)
    }
}

/// A call the state machine forbids whatever the payment's state, refused before anything is
/// written: a fault in the caller, never a race.
public struct RefusedTransition: Error, Sendable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

public enum CancelResult: Sendable, Equatable {
    case cancelled
    case notFound
    /// Too late: the payment is being processed or has an outcome.
    case notPending(PaymentState)
}

/// What `beginAttempt` found.
public enum BeginAttemptResult: Sendable, Equatable {
    /// The attempt is durably recorded and the payment is `processing`: authorize now.
    case begun
    /// Another attempt got there first, or the payment has an outcome or was cancelled.
    case notPending(PaymentRecord)
    case notFound
}

/// Registrations, attempts, outcomes and reversals, durably. Implementations: SQLite (the embedded
/// default). Every implementation passes `PaymentStoreConformance`.
///
/// The state machine it guards: pending → processing (beginAttempt, at most once) → completed
/// (recordOutcome); pending → completed (recordOutcome without an attempt: refused before any
/// authorization, e.g. 92); pending → cancelled. A transition from any other state is refused.
public protocol PaymentStore: Sendable {
    func register(_ registration: PaymentRegistration, now: Int64) async throws -> RegisterResult
    func payment(_ pspTransactionId: String) async throws -> PaymentRecord?
    /// The payment as the makePayment front needs it, which a store may answer from memory for a
    /// payment it registered and has not moved since. Such a `pending` may be stale (another
    /// process may have moved the payment); that is safe because every transition is conditional
    /// here: a stale `pending` costs a wasted decryption, never a second authorization. Everything
    /// else (an outcome, cancelled, processing) is read from the store itself.
    func paymentForMakePayment(_ pspTransactionId: String) async throws -> PaymentRecord?
    func cancel(_ pspTransactionId: String, now: Int64) async throws -> CancelResult
    /// Atomically moves a pending payment to processing with the attempt recorded.
    func beginAttempt(_ pspTransactionId: String, attempt: AttemptRecord, now: Int64) async throws -> BeginAttemptResult
    /// Records an outcome, and with it any reversal it needs (in the same transaction, so a
    /// reversal is never lost): the outcome of attempt `attemptId` of a `processing` payment, or,
    /// with `attemptId` nil, a refusal before any authorization of a payment still `pending`
    /// (never one that is `processing`: that attempt may have been sent, and its outcome is its
    /// own). Returns the outcome that stands: the given one, or the one recorded earlier if the
    /// payment already had an outcome; nil if it has none (cancelled, or processing another way).
    /// Without an attempt nothing was authorized: an approval or a reversal then throws `RefusedTransition`.
    ///
    /// With `answerBy`, an approval whose write begins after that instant (after any wait for a
    /// lock, a group or a queue: only the store knows when) is recorded instead as
    /// `outcome.tooLateToAnswer`, with the reversal `undoing` its attempt: answered late, it would
    /// reach a Vipps that has given up, and the authorization would stand unanswered.
    func recordOutcome(_ pspTransactionId: String, outcome: PaymentOutcome, reversal: ReversalRequest?,
                       attemptId: String?, now: Int64, answerBy: ContinuousClock.Instant?) async throws -> PaymentOutcome?
    /// Payments still `processing` whose attempt is orphaned at `now` (milliseconds), oldest
    /// attempt first: the orphan sweep's candidates (a crash between sending and recording, or an
    /// outcome that could not be recorded). An attempt is orphaned at its `orphanedAt`, or at
    /// `unrecordedAfter` after its start, whichever is sooner (an attempt without `orphanedAt`:
    /// the latter).
    func attemptsOrphaned(at now: Int64, unrecordedAfter: Int64, limit: Int) async throws -> [PaymentRecord]
    /// Reversals not yet acknowledged whose next try is due.
    func dueReversals(now: Int64, limit: Int) async throws -> [ReversalRecord]
    /// Claims a reversal for one send: if it is pending and due at `now`, counts the try (`tries`
    /// is then that send's number: 1 a first send, more a repeat), moves its next try to `until` (so
    /// that no other process sends it meanwhile) and returns it; else nil. Counted here, not when
    /// its answer is recorded: a try whose answer never is (a crash mid-send, a failed write) may
    /// have reached the host, and the next must be a repeat of it.
    func claimReversal(_ reversalId: String, now: Int64, until: Int64) async throws -> ReversalRecord?
    /// Records a try's answer: acknowledged, or not (with when to try next, or failed for good).
    /// With `claimedUntil` (the `until` of the claim the try was sent under), only while that
    /// claim still holds: false, recording nothing, if the reversal changed meanwhile (a late
    /// approval reset it, or the claim ran out and another sender took it).
    @discardableResult
    func recordReversalTry(_ reversalId: String, state: ReversalState, nextTryAt: Int64, now: Int64, claimedUntil: Int64?) async throws -> Bool
    /// Records a try answered "no such authorization" as final: acknowledged, settled without its
    /// original, under the claim it was sent under (as `recordReversalTry`). False, recording
    /// nothing, if the claim no longer holds or the reversal's authorization was approved late.
    func settleReversalWithoutOriginal(_ reversalId: String, now: Int64, claimedUntil: Int64) async throws -> Bool
    /// The reversal's authorization was approved after all, late. Unless the host reversed it
    /// (acknowledged, not settled without its original), it starts again as new: pending, due at
    /// `now`, no tries (its next send is a first one, not a repeat of a message the host answered
    /// "no such authorization"), and "no such authorization" no longer settles it. It keeps its
    /// `createdAt`, when the payment's attempt was first given up; `now` is its last update. A try
    /// in flight under a claim is then not recorded (its claim no longer holds), and the reversal
    /// is due only once that claim has run out: a pending one due after `now` is due again just
    /// after its next try, or after `claimsEndBy` (the latest a claim taken by `now` can end),
    /// whichever is sooner; no other sender sends beside the try in flight.
    func lateApproval(ofReversal reversalId: String, now: Int64, claimsEndBy: Int64) async throws -> LateApprovalResult
    func reversals(for pspTransactionId: String) async throws -> [ReversalRecord]
    /// Whether the store's last write failed as a store (not a refused transition) with none
    /// succeeding since: a full disk, a lock held by another process past the busy timeout. Reads
    /// may work all the while; readiness reports it.
    var writesFailing: Bool { get }
    /// A durable write that changes nothing a payment needs, for readiness to learn whether
    /// writes work again without waiting for traffic (which a failing readiness keeps away).
    func probeWrite(now: Int64) async throws
}

extension PaymentStore {
    /// A try recorded whatever claim it was sent under (tests, tools).
    public func recordReversalTry(_ reversalId: String, state: ReversalState, nextTryAt: Int64, now: Int64) async throws {
        try await recordReversalTry(reversalId, state: state, nextTryAt: nextTryAt, now: now, claimedUntil: nil)
    }

    /// The outcome as given, however late it is written.
    public func recordOutcome(_ pspTransactionId: String, outcome: PaymentOutcome, reversal: ReversalRequest?,
                              attemptId: String?, now: Int64) async throws -> PaymentOutcome? {
        try await recordOutcome(pspTransactionId, outcome: outcome, reversal: reversal, attemptId: attemptId, now: now, answerBy: nil)
    }

    /// By default, a plain read.
    public func paymentForMakePayment(_ pspTransactionId: String) async throws -> PaymentRecord? {
        try await payment(pspTransactionId)
    }
}
