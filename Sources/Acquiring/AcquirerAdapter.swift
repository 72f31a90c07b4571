import MakePayment

/// What the pipeline asks an acquirer to authorize. A class so that an adapter's task can hold it
/// while the pipeline enforces the deadline; the card data inside is noncopyable and is wiped when
/// the last reference goes (the pipeline drops its own as soon as the adapter has answered).
public final class AuthorizationRequest: Sendable {
    public let pspTransactionId: String
    /// Unique per attempt: the pipeline's and the store's name for it (what the acquirer sees is
    /// `attemptReference`).
    public let attemptId: String
    /// The adapter's own identifiers for this attempt (STAN, RRN, …), from `attemptReference(for:)`,
    /// recorded with the attempt before it is sent so that a reversal after a crash can name it.
    public let attemptReference: String
    public let merchantSerialNumber: String
    /// Amount in minor units (øre).
    public let amount: Int
    /// ISO 4217 alphabetic code, "NOK".
    public let currency: String
    public let card: CardData

    public init(pspTransactionId: String, attemptId: String, attemptReference: String? = nil, merchantSerialNumber: String,
                amount: Int, currency: String, card: consuming CardData) {
        self.pspTransactionId = pspTransactionId
        self.attemptId = attemptId
        self.attemptReference = attemptReference ?? attemptId
        self.merchantSerialNumber = merchantSerialNumber
        self.amount = amount
        self.currency = currency
        self.card = card
    }

    public var maskedPAN: MaskedPAN { card.pan.masked }
    public var scheme: CardScheme { card.pan.scheme }
}

/// The acquirer's answer, as it gave it. The pipeline maps `responseCode` to the API's errors.
public struct AcquirerAnswer: Sendable, Equatable {
    /// The acquirer's raw response code, ISO 8583 field 39 style ("00", "51", ...).
    public var responseCode: String
    public var message: String?
    /// The issuer's authorization code (field 38), when approved.
    public var authorizationCode: String?
    /// The acquirer's reference for this transaction (RRN, field 37, or its own id).
    public var acquirerReference: String?
    /// The card scheme, when the acquirer says; used to pick scheme-specific code mappings.
    public var scheme: CardScheme?
    /// The amount (minor units) the answer names, when it names one (ISO 8583 field 4; -1 when
    /// that is not a number). An approval of another amount than the request's is refused and
    /// reversed, as a partial approval (10) is.
    public var amount: Int?

    public init(responseCode: String, message: String? = nil, authorizationCode: String? = nil,
                acquirerReference: String? = nil, scheme: CardScheme? = nil, amount: Int? = nil) {
        self.responseCode = responseCode
        self.message = message
        self.authorizationCode = authorizationCode
        self.acquirerReference = acquirerReference
        self.scheme = scheme
        self.amount = amount
    }
}

/// A reversal of an attempt whose outcome is unknown or must be undone (a timeout, a partial
/// approval, a crash between sending and recording).
public struct ReversalRequest: Sendable, Equatable {
    public var reversalId: String
    public var pspTransactionId: String
    /// The attempt being reversed.
    public var attemptId: String
    /// The adapter's identifiers of that attempt, as `attemptReference(for:)` made them.
    public var attemptReference: String
    public var amount: Int
    public var currency: String
    public var merchantSerialNumber: String
    /// 1 for a first send; more for repeats (ISO 8583 sends repeats as 0401). A reversal started
    /// again after a late approval comes back with the same `reversalId` and 1: send it as a new
    /// reversal (an acquirer that keeps answers by id would replay the 25 it gave before the
    /// approval came). A repeat (more than 1) may also come for a reversal the acquirer never got
    /// (a first send lost with its process): it must be taken as a first send then.
    public var sendCount: Int

    /// The id of attempt `attemptId`'s reversal: one per attempt, the same in every process.
    public static func reversalId(of attemptId: String) -> String { attemptId + "-R" }

    public init(reversalId: String, pspTransactionId: String, attemptId: String, attemptReference: String? = nil, amount: Int,
                currency: String, merchantSerialNumber: String, sendCount: Int = 1) {
        self.reversalId = reversalId
        self.pspTransactionId = pspTransactionId
        self.attemptId = attemptId
        self.attemptReference = attemptReference ?? attemptId
        self.amount = amount
        self.currency = currency
        self.merchantSerialNumber = merchantSerialNumber
        self.sendCount = sendCount
    }
}

/// The last instant an authorization may leave for the acquirer, set by the pipeline around each
/// `authorize` call (nil elsewhere). Past it, another process on the store may already have taken
/// the attempt for orphaned and reversed it, and an authorization sent after its reversal was
/// given up on would stand with nothing to undo it. A process frozen in mid-send (a VM paused, a
/// SIGSTOP) resumes past it: so an adapter checks it as late as it can, just before the bytes go
/// out, and throws `notSent` instead (the attempt is answered 85, with nothing to reverse).
public enum AuthorizationDeadline {
    @TaskLocal public static var sendBy: ContinuousClock.Instant?

    /// Whether `sendBy` has passed (never, when none is set).
    public static var passed: Bool { sendBy.map { ContinuousClock.now >= $0 } ?? false }

    public static let notSent = AcquirerUnavailable("not sent: its send deadline passed before it could go out", neverSent: true)
}

/// Why an adapter could not say how an authorization went. The pipeline treats every one as an
/// unknown outcome, answers 85 and reverses, except one the adapter marks `neverSent`.
public struct AcquirerUnavailable: Error, Sendable, CustomStringConvertible {
    public var description: String
    /// The adapter knows for certain that nothing of the authorization left (its frame was never
    /// written): the pipeline answers 85 and sends no reversal, which would undo nothing. Only
    /// for that certainty; a failure during or after the send is an unknown outcome.
    public var neverSent: Bool
    public init(_ description: String, neverSent: Bool = false) {
        self.description = description
        self.neverSent = neverSent
    }
}

/// An acquirer, as the worker sees it. Implementations: `SimulatorAcquirer` (in process), and one
/// per real protocol. The pipeline enforces the deadline and cancels the task past it; an adapter
/// needs no timer of its own, but should stop work when its task is cancelled (an answer it
/// returns after the deadline all the same is taken as a late reply: see `LateReplyReporting`).
///
/// What the pipeline counts on, so that no payment is charged twice or left held:
/// - One send per `authorize` call, never a retry of its own: the pipeline decides on retries.
/// - `AuthorizationDeadline.passed` checked just before the send: past it, throw
///   `AuthorizationDeadline.notSent` and send nothing. It reads a task-local: on another thread
///   (an event loop that writes the bytes) copy `AuthorizationDeadline.sendBy` inside the task
///   and compare the clock with it there (`passed` is always false off the task).
/// - `neverSent` only when no byte of the authorization can have left; anything else is an
///   unknown outcome, answered 85 and reversed.
/// - `attemptReference(for:)` is all a reversal needs: another process, after a restart, reverses
///   the attempt from it alone, with no state of this instance's.
/// - `reverse` may be called more than once for one `reversalId` (a repeat, or two processes'
///   sweeps): the acquirer must take a repeat as the same reversal. It returns `.reversed` or
///   `.noOriginal` only on the acquirer's word, and throws otherwise (the reversal is sent again).
/// - `AcquirerAnswer.amount` given whenever the acquirer names an amount.
/// `AcquirerConformance` checks these against an adapter and its acquirer.
///
/// Room is left for capture, cancel and refund as further requirements with default answers.
public protocol AcquirerAdapter: Sendable {
    /// Names the adapter in logs, metrics and code-mapping overrides ("simulator", "iso8583").
    var name: String { get }
    /// Allocates the adapter's identifiers for a new attempt (an ISO 8583 STAN, RRN and transmission
    /// time). Called before the attempt is recorded; what it returns is stored with the attempt and
    /// handed back in `AuthorizationRequest.attemptReference` and `ReversalRequest.attemptReference`.
    func attemptReference(for attemptId: String) -> String
    /// Sends one authorization. Throws `AcquirerUnavailable` (or any error) when the outcome is unknown.
    func authorize(_ request: AuthorizationRequest) async throws -> AcquirerAnswer
    /// Sends one reversal; returns how the acquirer acknowledged it, throws when it has not.
    func reverse(_ reversal: ReversalRequest) async throws -> ReversalAnswer
}

/// How an acquirer acknowledged a reversal.
public enum ReversalAnswer: Sendable, Equatable {
    /// The authorization is undone (ISO 8583 00).
    case reversed
    /// The acquirer has no such authorization on file (ISO 8583 25): it never arrived, or, soon
    /// after a timeout, it has not been recorded yet (the reversal service then asks again).
    case noOriginal
}

extension AcquirerAdapter {
    /// By default an attempt is known to the acquirer by our attempt id.
    public func attemptReference(for attemptId: String) -> String { attemptId }
}

/// Adapters that can say how many authorizations and reversals they have seen per payment, so that
/// tests and operators can prove nothing was authorized twice.
public protocol AuthorizationCounting: Sendable {
    func authorizationCount(pspTransactionId: String) -> Int
    func reversalCount(pspTransactionId: String) -> Int
}

/// An adapter that hears an acquirer's answer to an authorization it had given up on (the
/// pipeline's deadline passed first). Such an authorization was answered 85 and has a reversal;
/// an approval arriving now means money is held, and the reversal must reach the host even if
/// the host, with no original on file yet, already answered it "no such authorization".
public protocol LateReplyReporting: AcquirerAdapter {
    /// Sets what is called with each late reply (one handler; a later call replaces it).
    func onLateReply(_ handler: @escaping @Sendable (LateReply) -> Void)
}

/// A reply that came after its authorization was given up on.
public struct LateReply: Sendable, Equatable {
    public var pspTransactionId: String
    /// Exactly the string `attemptReference(for:)` gave the attempt: the reversal to start again is
    /// found by it, and a reply under any other (an RRN alone, say) starts none (counted only in
    /// `psp_acquirer_late_replies_total`).
    public var attemptReference: String
    /// Field 39 as the acquirer sent it.
    public var responseCode: String
    /// The card's scheme, for scheme-specific code mappings.
    public var scheme: CardScheme?
    public init(pspTransactionId: String, attemptReference: String, responseCode: String, scheme: CardScheme? = nil) {
        self.pspTransactionId = pspTransactionId
        self.attemptReference = attemptReference
        self.responseCode = responseCode
        self.scheme = scheme
    }
}
