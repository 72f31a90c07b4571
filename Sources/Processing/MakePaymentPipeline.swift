import Acquiring
import CardCrypto
import Logging
import MakePayment
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The makePayment pipeline, each step a named unit, in the API's order:
///
/// front (HTTP task):  validate body (71) → find payment (404) → check token (401) →
///                     merchant must match (71) → idempotency (recorded outcome) → cancelled (85)
///                     → join the one in flight, or queue
/// worker:             cancelled (85, for a job that did not come through the front) → confirmed ≠ YES (72) → decrypt (92) → parse (92/87/86) →
///                     too late to send (85) → record attempt → authorize under a deadline → map →
///                     record outcome → respond
///
/// It does no I/O of its own: the store, the acquirer and the clock are handed in.
public final class MakePaymentPipeline: Sendable {
    public struct Configuration: Sendable {
        /// Vipps gives up after 15 s; the acquirer must answer well inside that.
        public var acquirerTimeout: Duration = .seconds(10)
        /// How long after the front took a makePayment its answer is still of use: Vipps gives up
        /// after 15 s. Time spent waiting for a worker or an authorization slot comes off the
        /// acquirer's deadline, and a payment with too little left is not sent at all (85).
        public var answerWithin: Duration = .seconds(14)
        /// Identifies this process in attempt records, so a restarted worker can tell orphaned
        /// attempts (sent by a process that died) from ones in flight.
        public var instanceId: String
        public init(acquirerTimeout: Duration = .seconds(10), answerWithin: Duration = .seconds(14), instanceId: String) {
            self.acquirerTimeout = acquirerTimeout
            self.answerWithin = answerWithin
            self.instanceId = instanceId
        }
    }

    public let configuration: Configuration
    public let keyRing: KeyRing
    public let store: any PaymentStore
    public let acquirer: any AcquirerAdapter
    public let codes: ResponseCodeTable
    public let metrics: PipelineMetrics
    public let reversals: ReversalSender?
    private let logger: Logger
    /// The per-payment warnings an acquirer's outage sets off for every payment: a few lines and
    /// a count per 10 s each (the payments' records are in the store, their counts in the metrics).
    private let tooLateLog = LogLimiter()
    private let notSentLog = LogLimiter()
    private let unknownOutcomeLog = LogLimiter()
    private let inFlight = InFlightPayments()
    private let now: @Sendable () -> Int64
    private let currentMonth: @Sendable () -> CardExpiry

    public init(configuration: Configuration, keyRing: KeyRing, store: any PaymentStore, acquirer: any AcquirerAdapter,
                codes: ResponseCodeTable = ResponseCodeTable(), metrics: PipelineMetrics = .disabled,
                reversals: ReversalSender? = nil, logger: Logger = Logger(label: "psp-worker.pipeline"),
                now: @escaping @Sendable () -> Int64 = wallClockMilliseconds,
                currentMonth: (@Sendable () -> CardExpiry)? = nil) {
        self.configuration = configuration
        self.keyRing = keyRing
        self.store = store
        self.acquirer = acquirer
        self.codes = codes
        self.metrics = metrics
        self.reversals = reversals
        self.logger = logger
        self.now = now
        self.currentMonth = currentMonth ?? { CardExpiry.month(containing: now() / 1000) }
    }

    // MARK: - Front

    /// The whole makePayment call: the front's checks, then the queue (or the in-process worker
    /// directly when `queue` is nil), and the answer. Never throws: every failure is an answer.
    /// - Parameters:
    ///   - receivedAt: when the request began to arrive (its head): Vipps's 14 s count from there.
    ///   - idForInvalidBody: the pspTransactionId to name in a 71 answer when `body` is nil.
    public func handle(body: MakePaymentRequest?, authorization: String?, queue: (any MakePaymentQueue)?,
                       receivedAt: ContinuousClock.Instant = .now, idForInvalidBody: String = "") async -> MakePaymentResult {
        let result = await front(body: body, authorization: authorization, queue: queue, receivedAt: receivedAt, idForInvalidBody: idForInvalidBody)
        metrics.recordAnswer(result)
        return result
    }

    private func front(body: MakePaymentRequest?, authorization: String?, queue: (any MakePaymentQueue)?,
                       receivedAt: ContinuousClock.Instant, idForInvalidBody: String) async -> MakePaymentResult {
        // 1. Validate the body.
        guard let request = body, Self.validate(request) == nil else {
            return Self.invalidRequest(body?.pspTransactionId ?? idForInvalidBody)
        }
        let id = request.pspTransactionId
        // 2. Find the payment.
        let record: PaymentRecord
        do {
            guard let found = try await store.paymentForMakePayment(id) else {
                return .notFound(id)
            }
            record = found
        } catch {
            return internalError(id, step: "find payment", error)
        }
        // 3. Check the token, in constant time.
        guard Self.tokenMatches(authorization, record.registration.tokenHash) else {
            return MakePaymentResult(httpStatus: 401, response: .fail(id, .invalidRequest))
        }
        // 4. The merchant must be the one the payment was registered for.
        guard request.merchantSerialNumber == record.registration.merchantSerialNumber else {
            return MakePaymentResult(httpStatus: 400, response: .fail(id, .invalidRequest))
        }
        // 5. Idempotency: a recorded outcome is answered again; one in flight is joined.
        if let outcome = record.outcome { return .recorded(outcome, id) }
        // 6. Cancelled by the PSP: the answer is known here too, so a full queue cannot turn it into a 91.
        if record.state == .cancelled { return .cancelled(id) }
        return await inFlight.run(id) {
            let job = MakePaymentJob(request: request, payment: record, receivedAt: receivedAt)
            guard let queue else { return await self.work(job) }
            do {
                return try await queue.submit(job)
            } catch {
                self.metrics.queueRejected()
                // The record may be stale (a store answers a registration it has not seen move
                // from memory): a payment whose answer is known by now gets it, full queue or not.
                if let fresh = try? await self.store.payment(id) {
                    if let outcome = fresh.outcome { return .recorded(outcome, id) }
                    if fresh.state == .cancelled { return .cancelled(id) }
                }
                // The API has no 503: a full queue is our problem, 500 with 91. Nothing was done
                // here, so Vipps's next call is processed (or, for an attempt another process has
                // under way, waits for its outcome).
                return .internalError(id)
            }
        }
    }

    /// Nil when the request is valid, else what is wrong (for the log; the answer is always 71).
    /// `cardData` has no cap here: whatever it holds, one the key cannot decrypt is 92 (the body's
    /// limit bounds it, and the key ring refuses a wrong length before any RSA operation).
    public static func validate(_ request: MakePaymentRequest) -> String? {
        if request.pspTransactionId.isEmpty || request.pspTransactionId.utf8.count > maxIdBytes { return "pspTransactionId" }
        if request.merchantSerialNumber.isEmpty || request.merchantSerialNumber.utf8.count > maxMerchantSerialNumberBytes { return "merchantSerialNumber" }
        return nil
    }

    /// 400 with 71, naming the request's pspTransactionId only if it could be one: an invalid body
    /// does not get up to 64 KiB of whatever it sent echoed back.
    public static func invalidRequest(_ id: String) -> MakePaymentResult {
        MakePaymentResult(httpStatus: 400, response: .fail(id.utf8.count <= maxIdBytes ? id : "", .invalidRequest))
    }

    /// The longest pspTransactionId (as registered: `POST /payments`).
    public static let maxIdBytes = 128
    /// The longest merchantSerialNumber (as registered).
    public static let maxMerchantSerialNumberBytes = 64

    /// Compares SHA-256 of the presented token with the stored hash, in constant time. The header
    /// is the makePaymentToken as registered (which may itself begin "Bearer "); failing that, a
    /// "Bearer " the caller put in front of the token is allowed, in any case (RFC 9110 §11.1).
    public static func tokenMatches(_ authorization: String?, _ storedHash: [UInt8]) -> Bool {
        guard let token = authorization, !token.isEmpty else { return false }
        if Secrets.sha256(of: token, equals: storedHash) { return true }
        guard let credentials = Secrets.bearerCredentials(token) else { return false }
        return Secrets.sha256(of: credentials, equals: storedHash)
    }

    // MARK: - Worker

    /// A worker's part: everything after the queue. Never throws: every failure is an answer.
    public func work(_ job: MakePaymentJob) async -> MakePaymentResult {
        switch workStep(job) {
        case .answered(let result): return result
        case .awaiting(let rest): return await rest()
        }
    }

    /// The worker's CPU-bound part (checks, decrypt, parse). The authorization, which waits on the
    /// acquirer, is handed back to run without holding the worker.
    public func workStep(_ job: MakePaymentJob) -> WorkStep {
        let id = job.request.pspTransactionId
        // The record the front read. It may be stale by now, but every transition below is
        // conditional in the store (pending → processing at most once), so a stale read cannot
        // authorize twice; it only decides which answer to look for.
        let payment = job.payment
        switch payment.state {
        case .completed:
            if let outcome = payment.outcome { return .answered(.recorded(outcome, id)) }
            return .answered(internalError(id, step: "completed without outcome", nil))
        case .cancelled:
            // 6. Cancelled by the PSP.
            return .answered(.cancelled(id))
        case .processing:
            return .awaiting { await self.recoverOrphan(payment) }
        case .pending:
            break
        }
        // 7. Only a confirmed payment is decrypted. NO, TIMEOUT and CANCEL are refused with 72, the
        // catalogue's one error that is not the card's, the acquirer's or ours (later revisions of
        // the v2 document, 1.0.3 on, gave them 93 "Status from Vipps:…", which the catalogue this
        // worker answers from does not have).
        guard job.request.confirmed == .yes else {
            return .awaiting { await self.finish(id, PaymentOutcome(status: .fail, error: APIError.differentTexts.message), reversal: nil, attemptId: nil) }
        }
        // 8-9. Decrypt and parse. The clear card data lives in `authorization` until the adapter is done.
        let started = ContinuousClock.now
        let card: CardData
        do {
            card = try keyRing.decryptCardData(job.request.cardData, currentMonth: currentMonth())
        } catch {
            metrics.recordDecrypt(since: started)
            return .awaiting { await self.finish(id, PaymentOutcome(status: .fail, error: error.message), reversal: nil, attemptId: nil) }
        }
        metrics.recordDecrypt(since: started)
        let registration = payment.registration
        let attemptId = Self.newAttemptId()
        let authorization = AuthorizationRequest(
            pspTransactionId: id, attemptId: attemptId, attemptReference: acquirer.attemptReference(for: attemptId),
            merchantSerialNumber: registration.merchantSerialNumber,
            amount: registration.amount, currency: registration.currency, card: card)
        let receivedAt = job.receivedAt
        // The awaiting step is held until the answer is written; it holds the card only through
        // the hand-off, which `authorize` empties.
        let handOff = AuthorizationHandOff(authorization)
        return .awaiting { await self.authorize(handOff, payment: payment, receivedAt: receivedAt) }
    }

    /// Records the attempt, sends it, then records the outcome. The clear card goes with the
    /// send: once `send` returns, only an adapter still at work (past its deadline) holds it, not
    /// this payment through the outcome's write.
    private func authorize(_ handOff: AuthorizationHandOff, payment: PaymentRecord, receivedAt: ContinuousClock.Instant) async -> MakePaymentResult {
        // Every wait that follows is out of `send`'s frame, and so without the card.
        let id = payment.registration.pspTransactionId
        switch await send(handOff, payment: payment, receivedAt: receivedAt) {
        case .answered(let result): return result
        case .notSent(let masked, let attemptId): return await finishNotSent(id, masked: masked, attemptId: attemptId)
        case .recover(let record): return await recoverOrphan(record)
        case .sent(let sent): return await record(sent, payment: payment, receivedAt: receivedAt)
        }
    }

    /// What is left of an authorization once the acquirer has answered (or not): no card data.
    struct Sent {
        let id: String
        let attemptId: String
        let attemptReference: String
        let masked: MaskedPAN
        let scheme: CardScheme
        let outcome: DeadlineOutcome<AcquirerAnswer>
    }

    /// What `send` leaves to do. The card goes with `send`'s frame: what waits on the store after
    /// it (an 85 to record, another attempt's outcome to wait up to 16 s for) is done by the
    /// caller, so the clear card is not held through those waits.
    enum SendStep {
        /// Answered before any authorization went out (the attempt refused, a store error).
        case answered(MakePaymentResult)
        /// Too late to send (its attempt recorded, or not yet): closed with 85, nothing to reverse.
        case notSent(MaskedPAN, attemptId: String?)
        /// Another attempt is under way or orphaned: its outcome is the answer.
        case recover(PaymentRecord)
        case sent(Sent)
    }

    /// Records the attempt durably and authorizes under the deadline.
    private func send(_ handOff: AuthorizationHandOff, payment: PaymentRecord, receivedAt: ContinuousClock.Instant) async -> SendStep {
        let id = payment.registration.pspTransactionId
        guard let request = handOff.take() else { return .answered(internalError(id, step: "authorize twice", nil)) }
        let masked = request.maskedPAN
        // What is left of Vipps's patience bounds the acquirer's deadline. With too little left (a
        // long wait for a worker or an authorization slot), nothing is sent: an approval Vipps
        // no longer waits for would hold the customer's money for a payment that failed.
        let shortest = min(configuration.acquirerTimeout, .seconds(1))
        guard configuration.answerWithin - (ContinuousClock.now - receivedAt) >= shortest else {
            if let left = tooLateLog.admit() {
                logger.warning("too late to authorize; not sent", metadata: ["pspTransactionId": "\(id)", "pan": "\(masked)", "alikeLeftOut": "\(left)"])
            }
            return .notSent(masked, attemptId: nil)
        }
        // 10. Record the attempt first: a crash after this leaves a trace that forbids a blind retry.
        // The monotonic start first: this process's deadline must end before the stored one.
        let attemptStarted = ContinuousClock.now
        let startedAt = now()
        let attempt = AttemptRecord(attemptId: request.attemptId, attemptReference: request.attemptReference,
                                    instanceId: configuration.instanceId,
                                    maskedPAN: masked, startedAt: startedAt, orphanedAt: startedAt + orphanedAfterMilliseconds)
        do {
            switch try await store.beginAttempt(id, attempt: attempt, now: now()) {
            case .begun: break
            case .notFound: return .answered(.notFound(id))
            case .notPending(let record):
                if let outcome = record.outcome { return .answered(.recorded(outcome, id)) }
                if record.state == .cancelled { return .answered(.cancelled(id)) }
                return .recover(record)
            }
        } catch {
            return .answered(internalError(id, step: "record attempt", error))
        }
        // 11. Authorize; the pipeline, not the adapter, enforces the deadline: what is left, after
        // the attempt's commit (which can stall), of Vipps's patience and of the acquirer's timeout
        // counted from the attempt's start, never raised to a minimum. Past that start plus the
        // timeout (and the outcome's margin) any process on the store may take the attempt for
        // orphaned and reverse it, so the authorization must be over by then (the outcome's 2 s
        // margin covers a late timer and the clocks' reads). With too little left (under a second
        // of Vipps's, or the whole timeout if shorter; under a second of the acquirer's, or half
        // of it when that is under 2 s), the attempt is closed unsent: its outcome is known, so
        // there is nothing to reverse, and an authorization sent with milliseconds to go would
        // only time out and need reversing.
        let checkedAt = ContinuousClock.now
        let vippsLeft = configuration.answerWithin - (checkedAt - receivedAt)
        let attemptLeft = configuration.acquirerTimeout - (checkedAt - attemptStarted)
        guard vippsLeft >= shortest && attemptLeft >= min(configuration.acquirerTimeout / 2, shortest) else {
            if let left = tooLateLog.admit() {
                logger.warning("too late to authorize after recording the attempt; not sent", metadata: [
                    "pspTransactionId": "\(id)", "pan": "\(masked)", "alikeLeftOut": "\(left)"])
            }
            return .notSent(masked, attemptId: request.attemptId)
        }
        let deadline = min(vippsLeft, attemptLeft)
        metrics.authorizationSent()
        let acquirer = self.acquirer
        let started = ContinuousClock.now
        // The frame must be out by the deadline (`AuthorizationDeadline`): the adapter checks it
        // just before sending, for a process frozen in between.
        let sendBy = checkedAt + deadline
        // An adapter that ignores cancellation may still answer after the deadline (an adapter
        // that reports late replies itself, ISO 8583's, throws instead): taken as a late reply,
        // so that an approval reopens the reversal recorded meanwhile, even one settled on 25.
        let late = LateAuthorizationAnswer(pipeline: self, pspTransactionId: id, attemptReference: request.attemptReference,
                                           scheme: request.scheme)
        let outcome = await withDeadline(deadline, late: late) {
            try await AuthorizationDeadline.$sendBy.withValue(sendBy) { try await acquirer.authorize(request) }
        }
        metrics.recordAcquirer(since: started)
        return .sent(Sent(id: id, attemptId: request.attemptId, attemptReference: request.attemptReference, masked: masked,
                          scheme: request.scheme, outcome: outcome))
    }

    /// 12-13. Maps the acquirer's answer and records the outcome (with its reversal, if any).
    private func record(_ request: Sent, payment: PaymentRecord, receivedAt: ContinuousClock.Instant) async -> MakePaymentResult {
        let id = request.id, masked = request.masked
        switch request.outcome {
        case .value(let answer):
            var decision = codes.decision(for: answer.responseCode, scheme: answer.scheme ?? request.scheme, acquirer: acquirer.name)
            // An approval of another amount than asked (a partial approval without its code 10,
            // or a garbled field 4) is no approval of this payment: it is undone as a 10 is.
            if decision == .approved, let amount = answer.amount, amount != payment.registration.amount {
                logger.warning("approval names another amount; reversing", metadata: [
                    "pspTransactionId": "\(id)", "attemptId": "\(request.attemptId)", "pan": "\(masked)",
                ])
                decision = .partialApprovalReversed
            }
            // An approval that comes back after Vipps's patience (the deadline's timer fired late)
            // would be answered to no one: it is reversed and recorded 85, like a timeout.
            if decision == .approved, ContinuousClock.now - receivedAt > configuration.answerWithin {
                logger.warning("approval came too late; reversing", metadata: [
                    "pspTransactionId": "\(id)", "attemptId": "\(request.attemptId)", "pan": "\(masked)",
                ])
                decision = .refusedAndReversed(.responseReceivedTooLate)
            }
            var recorded = PaymentOutcome(status: decision == .approved ? .ok : .fail, error: decision.errorMessage, maskedPAN: masked,
                                          acquirerResponseCode: answer.responseCode, authorizationCode: answer.authorizationCode,
                                          acquirerReference: answer.acquirerReference)
            if decision != .approved { recorded.authorizationCode = nil }
            logger.debug("authorization answered", metadata: [
                "pspTransactionId": "\(id)", "attemptId": "\(request.attemptId)", "pan": "\(masked)",
                "responseCode": "\(answer.responseCode)", "status": "\(recorded.status.rawValue)",
            ])
            let reversal = decision.reverses
                ? ReversalRequest.undoing(attemptId: request.attemptId, attemptReference: request.attemptReference, of: payment.registration) : nil
            // A refusal that stands needs no undoing if its outcome cannot be recorded.
            let undo = decision == .approved || decision.reverses ? Undo(attemptReference: request.attemptReference, registration: payment.registration) : nil
            // An approval whose write begins past Vipps's patience (held by another process's lock,
            // or queued behind slow groups) is recorded 85 and reversed instead, by the store when
            // the write begins: recorded OK, it would be answered to a Vipps that has given up. (A
            // stall in its own COMMIT's sync, after that check, is not covered.)
            return await finish(id, recorded, reversal: reversal, attemptId: request.attemptId, undo: undo,
                                answerBy: receivedAt + configuration.answerWithin)
        case .failed(let error as AcquirerUnavailable) where error.neverSent:
            // The adapter knows nothing went out: the outcome is known, and there is nothing to reverse.
            if let left = notSentLog.admit() {
                logger.warning("authorization not sent", metadata: [
                    "pspTransactionId": "\(id)", "attemptId": "\(request.attemptId)", "pan": "\(masked)", "reason": "\(error)",
                    "alikeLeftOut": "\(left)",
                ])
            }
            return await finishNotSent(id, masked: masked, attemptId: request.attemptId)
        case .timedOut, .failed:
            // Unknown outcome: answer 85 and reverse. The authorization is never sent again.
            let reason: String
            if case .failed(let error) = request.outcome { reason = "acquirer error: \(error)" } else { reason = "acquirer timeout" }
            if let left = unknownOutcomeLog.admit() {
                logger.warning("authorization outcome unknown; reversing", metadata: [
                    "pspTransactionId": "\(id)", "attemptId": "\(request.attemptId)", "pan": "\(masked)", "reason": "\(reason)",
                    "alikeLeftOut": "\(left)",
                ])
            }
            let recorded = PaymentOutcome(status: .fail, error: APIError.responseReceivedTooLate.message, maskedPAN: masked)
            return await finish(id, recorded, reversal: ReversalRequest.undoing(attemptId: request.attemptId, attemptReference: request.attemptReference, of: payment.registration),
                                attemptId: request.attemptId, undo: Undo(attemptReference: request.attemptReference, registration: payment.registration))
        }
    }

    /// 85 for an authorization that was never sent: nothing to reverse. Counted when that is the
    /// answer (another outcome may stand already).
    private func finishNotSent(_ id: String, masked: MaskedPAN, attemptId: String?) async -> MakePaymentResult {
        let result = await finish(id, PaymentOutcome(status: .fail, error: APIError.responseReceivedTooLate.message, maskedPAN: masked),
                                  reversal: nil, attemptId: attemptId)
        if result.response.errorMessage?.errorId == APIError.responseReceivedTooLate.rawValue { metrics.authorizationNotSent() }
        return result
    }

    /// How long after its start this process's attempt counts as orphaned: the acquirer's deadline
    /// (never past Vipps's) and a margin for recording the outcome. Until then the attempt may be
    /// in flight, and a reversal that reached the host before the authorization would find
    /// nothing to undo. Recorded with each attempt (`AttemptRecord.orphanedAt`), since another
    /// process on the same store may have a longer acquirer timeout than this one (`orphanedAt(_:)`).
    public var orphanedAfterMilliseconds: Int64 {
        min(configuration.acquirerTimeout, configuration.answerWithin).wholeMilliseconds + Self.outcomeMarginMilliseconds
    }
    static let outcomeMarginMilliseconds: Int64 = 2_000

    /// When an attempt counts as orphaned: as its process recorded it, never later than Vipps's
    /// patience allows any attempt (`unrecordedOrphanAfterMilliseconds` after its start, so that a
    /// wrong value cannot hold an orphan for longer); recorded by an older build, which did not
    /// say, that bound itself: its process's timeout is not known here, and no build's attempt
    /// outlives Vipps's patience.
    func orphanedAt(_ attempt: AttemptRecord) -> Int64 {
        let latest = attempt.startedAt + unrecordedOrphanAfterMilliseconds
        return min(attempt.orphanedAt ?? latest, latest)
    }

    /// How long after its start any attempt is over for certain: Vipps's patience and the margin.
    var unrecordedOrphanAfterMilliseconds: Int64 { configuration.answerWithin.wholeMilliseconds + Self.outcomeMarginMilliseconds }

    /// A payment found `processing`: its attempt is in flight (wait for the outcome), or was left
    /// by a crash between sending and recording, or by an outcome that could not be recorded. Once
    /// past its `orphanedAt(_:)` its outcome is unknown for good: it is reversed, never authorized
    /// again, and answered 85.
    private func recoverOrphan(_ payment: PaymentRecord) async -> MakePaymentResult {
        let id = payment.registration.pspTransactionId
        let due = payment.attempt.map { self.orphanedAt($0) } ?? payment.updatedAt + orphanedAfterMilliseconds
        let young = min(due - now(), unrecordedOrphanAfterMilliseconds)
        if young > 0, let answered = await waitForOutcome(id, for: .milliseconds(young)) { return answered }
        guard let attempt = payment.attempt else { return internalError(id, step: "processing without an attempt", nil) }
        return await reverseOrphan(payment, attempt)
    }

    private func reverseOrphan(_ payment: PaymentRecord, _ attempt: AttemptRecord) async -> MakePaymentResult {
        let id = payment.registration.pspTransactionId
        logger.warning("orphaned attempt found; reversing", metadata: [
            "pspTransactionId": "\(id)", "attemptId": "\(attempt.attemptId)", "pan": "\(attempt.maskedPAN)",
            "sameProcess": "\(attempt.instanceId == configuration.instanceId)",
        ])
        let reversal = ReversalRequest.undoing(attemptId: attempt.attemptId, attemptReference: attempt.attemptReference, of: payment.registration)
        let outcome = PaymentOutcome(status: .fail, error: APIError.responseReceivedTooLate.message, maskedPAN: attempt.maskedPAN)
        // Reversed without a record only if the attempt was this process's: another process's may
        // still be alive with its approval's commit stalled, and a reversal sent unrecorded here
        // would undo a payment it then records and answers OK. Unrecorded, the orphan is found
        // again by the sweep once the store takes writes, and reversed with its 85 then.
        let ours = attempt.instanceId == configuration.instanceId
        return await finish(id, outcome, reversal: reversal, attemptId: attempt.attemptId,
                            undo: ours ? Undo(attemptReference: attempt.attemptReference, registration: payment.registration, sentHere: false) : nil)
    }

    /// Polls the store for an outcome being recorded elsewhere; nil if none came within `patience`.
    private func waitForOutcome(_ id: String, for patience: Duration) async -> MakePaymentResult? {
        let deadline = ContinuousClock.now + patience
        while ContinuousClock.now < deadline {
            if let record = try? await store.payment(id), record.state != .processing {
                if let outcome = record.outcome { return .recorded(outcome, id) }
                return .cancelled(id)
            }
            // Cancelled (a shutdown that does not wait): the sleep would return at once, and the
            // loop read the store without pause until `patience` ran out. Nothing was done here:
            // 91, and Vipps's next call finds the outcome.
            do { try await Task.sleep(for: .milliseconds(50)) } catch {
                return internalError(id, step: "waiting for an outcome recorded elsewhere", error)
            }
        }
        return nil
    }

    // MARK: - Late replies

    /// A reply to an authorization given up on (answered 85, its reversal recorded). One that
    /// approves, or that needs reversing anyway, gets its reversal sent again, even if that was
    /// settled as "no such authorization"; a refusal holds no money and needs nothing.
    public func handleLateReply(_ reply: LateReply) async {
        guard needsReversal(reply) else { return }
        await reversals?.reopen(pspTransactionId: reply.pspTransactionId, attemptReference: reply.attemptReference)
    }

    /// `handleLateReply` without waiting: the reopen is tracked by the reversal service from this
    /// call on, so a shutdown that begins next waits for it (a task of the caller's own could
    /// reach the service after the store has closed, and the approval would stand).
    public func handleLateReplySoon(_ reply: LateReply) {
        guard needsReversal(reply) else { return }
        reversals?.reopenSoon(pspTransactionId: reply.pspTransactionId, attemptReference: reply.attemptReference)
    }

    private func needsReversal(_ reply: LateReply) -> Bool {
        metrics.lateReply()
        let decision = codes.decision(for: reply.responseCode, scheme: reply.scheme, acquirer: acquirer.name)
        return decision == .approved || decision.reverses
    }

    // MARK: - Orphan sweep

    /// Reverses every attempt left `processing` past its `orphanedAt(_:)` (records 85 and
    /// the reversal, which the reversal service sends), without waiting for Vipps to call again:
    /// after a crash Vipps may never retry, and an approval would stay on the card. Returns how
    /// many it recorded.
    @discardableResult
    public func sweepOrphans(batch: Int = 100) async -> Int {
        var swept = 0
        while !Task.isCancelled {
            let found: [PaymentRecord]
            do {
                found = try await store.attemptsOrphaned(at: now(), unrecordedAfter: unrecordedOrphanAfterMilliseconds, limit: batch)
            } catch {
                logger.error("cannot read attempts in flight", metadata: ["error": "\(error)"])
                return swept
            }
            var recorded = 0
            let sweptAt = now()
            for payment in found {
                // The store selected by the same rule; checked again here, where it is defined.
                guard let attempt = payment.attempt, orphanedAt(attempt) <= sweptAt else { continue }
                // Joined with a makePayment for the same payment in flight here, if any.
                let result = await inFlight.run(payment.registration.pspTransactionId) { await self.reverseOrphan(payment, attempt) }
                if result.httpStatus == 200 { recorded += 1 }
            }
            swept += recorded
            // A batch that recorded nothing (the store refuses writes, say) is tried at the next sweep.
            if found.count < batch || recorded == 0 { return swept }
        }
        return swept
    }

    /// Sweeps at start and then every `interval`, until cancelled.
    public func runOrphanSweeps(every interval: Duration) async {
        while !Task.isCancelled {
            await sweepOrphans()
            try? await Task.sleep(for: interval)
        }
    }

    /// 13. Records the outcome (and any reversal, in the same transaction), then answers what
    /// stands. `undo` reverses the attempt that was sent if the outcome cannot be recorded: Vipps
    /// is then answered 91 (a failure), and an authorization that may stand must not hold the
    /// customer's money until the store takes writes again.
    private func finish(_ id: String, _ outcome: PaymentOutcome, reversal: ReversalRequest?, attemptId: String?,
                        undo: Undo? = nil, answerBy: ContinuousClock.Instant? = nil) async -> MakePaymentResult {
        do {
            guard let standing = try await store.recordOutcome(id, outcome: outcome, reversal: reversal, attemptId: attemptId, now: now(),
                                                               answerBy: answerBy) else {
                guard let record = try await store.payment(id) else {
                    return .notFound(id)
                }
                // Another outcome stands (another process's attempt, or its orphan's 85): it is the answer.
                if let standing = record.outcome {
                    reopenIfApprovedUnderAnother(standing, id, outcome, reversal: reversal, undo: undo)
                    return .recorded(standing, id)
                }
                // A refusal decided on a stale `pending` (another process began an attempt
                // meanwhile): that attempt's outcome is the answer, and it is never closed unreversed.
                if record.state == .processing && attemptId == nil { return await recoverOrphan(record) }
                // Cancelled meanwhile.
                return .cancelled(id)
            }
            if let reversal, standing == outcome { reversals?.sendSoon(reversal) }
            if answerBy != nil, standing != outcome, outcome.status == .ok, standing == outcome.tooLateToAnswer, let undo, let attemptId {
                logger.warning("approval recorded too late to be answered; reversing", metadata: [
                    "pspTransactionId": "\(id)", "pan": "\(outcome.maskedPAN?.description ?? "")",
                ])
                reversals?.sendSoon(.undoing(attemptId: attemptId, attemptReference: undo.attemptReference, of: undo.registration))
            }
            reopenIfApprovedUnderAnother(standing, id, outcome, reversal: reversal, undo: undo)
            return .recorded(standing, id)
        } catch {
            return await notRecorded(id, outcome, reversal: reversal, attemptId: attemptId, undo: undo, error)
        }
    }

    /// The acquirer approved this attempt (or answered what must be reversed), but another outcome
    /// stands: another process took the attempt for orphaned first and recorded 85 with its
    /// reversal. That reversal must not settle on "no original" while this approval stands, as
    /// for a late reply (`handleLateReply`).
    private func reopenIfApprovedUnderAnother(_ standing: PaymentOutcome, _ id: String, _ outcome: PaymentOutcome,
                                              reversal: ReversalRequest?, undo: Undo?) {
        guard let undo, outcome.acquirerResponseCode != nil, outcome.status == .ok || reversal != nil,
              standing != outcome, standing != outcome.tooLateToAnswer, let reversals else { return }
        reversals.reopenSoon(pspTransactionId: id, attemptReference: undo.attemptReference)
    }

    /// The outcome could not be recorded. Worked from a stale read (the sweep's batch, a retry's
    /// front), the attempt may have its outcome already: then that stands, and nothing is reversed
    /// behind it (reads work while writes fail). The attempt that may have gone out is reversed
    /// when it is known to be unanswered: a read shows it still `processing`, or, with the read
    /// failing too, this very call sent it. An orphan's attempt with no read to go by is left to
    /// the sweep: its approval may have been recorded and answered OK since the stale read.
    /// An outcome that stands in place of this approval (another process's 85) has its reversal
    /// reopened, as when the write succeeds (`reopenIfApprovedUnderAnother`).
    private func notRecorded(_ id: String, _ outcome: PaymentOutcome, reversal: ReversalRequest?, attemptId: String?, undo: Undo?,
                             _ error: any Error) async -> MakePaymentResult {
        let unanswered: Bool
        do {
            let record = try await store.payment(id)
            if let standing = record?.outcome {
                reopenIfApprovedUnderAnother(standing, id, outcome, reversal: reversal, undo: undo)
                return .recorded(standing, id)
            }
            unanswered = record?.state == .processing && record?.attempt?.attemptId == attemptId
        } catch {
            unanswered = undo?.sentHere == true
        }
        if unanswered, let undo, let attemptId {
            reversals?.sendUnrecorded(ReversalRequest.undoing(attemptId: attemptId, attemptReference: undo.attemptReference, of: undo.registration))
        }
        return internalError(id, step: "record outcome", error)
    }

    /// What reverses an attempt whose outcome cannot be recorded; the reversal itself is built only then.
    struct Undo {
        let attemptReference: String
        let registration: PaymentRegistration
        /// The attempt was sent by the call that holds this (not found orphaned from a read).
        var sentHere = true
    }

    private func internalError(_ id: String, step: String, _ error: (any Error)?) -> MakePaymentResult {
        // The id may be one no payment has (a failed look-up): printable characters only, so that
        // a crafted id cannot forge log lines.
        let printable = String(id.unicodeScalars.map { $0.value < 0x20 || $0.value == 0x7F ? "?" : Character($0) })
        logger.error("internal error", metadata: ["pspTransactionId": "\(printable)", "step": "\(step)", "error": "\(error.map { "\($0)" } ?? "-")"])
        return .internalError(id)
    }

    static func newAttemptId() -> String { AttemptIds.shared.next() }
}

/// Attempt ids: 16 hex digits, unique without a random draw per payment (OpenSSL's RAND_bytes
/// looks its generator up by name on every call): a random 64-bit start drawn once per process,
/// then one more per attempt. Two processes collide only if their ranges overlap, one chance in
/// about 2^64 / attempts.
final class AttemptIds: Sendable {
    static let shared = AttemptIds()
    private let next64: Atomic<UInt64>

    init() {
        let start = Secrets.randomBytes(8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        next64 = Atomic(start)
    }

    func next() -> String {
        let value = next64.add(1, ordering: .relaxed).oldValue
        return String(unsafeUninitializedCapacity: 16) { buffer in
            let digits: StaticString = "0123456789abcdef"
            for i in 0..<16 {
                buffer[i] = digits.utf8Start[Int((value >> UInt64(60 - 4 * i)) & 0xF)]
            }
            return 16
        }
    }
}

/// Coalesces concurrent makePayment calls for one payment in this process: the first runs, the
/// rest wait for its result and get the same body.
final class InFlightPayments: Sendable {
    private let waiting = Mutex<[String: [CheckedContinuation<MakePaymentResult?, Never>]]>([:])

    func run(_ id: String, _ body: @Sendable () async -> MakePaymentResult) async -> MakePaymentResult {
        // The common case, no other call for this payment, takes the lead without suspending.
        let leads = waiting.withLock { w -> Bool in
            if w[id] == nil { w[id] = []; return true }
            return false
        }
        if !leads {
            // nil: the leader finished between the two looks; its outcome is in the store.
            let joined: MakePaymentResult? = await withCheckedContinuation { continuation in
                let queued = waiting.withLock { w -> Bool in
                    guard w[id] != nil else { return false }
                    w[id]!.append(continuation)
                    return true
                }
                if !queued { continuation.resume(returning: nil) }
            }
            if let joined { return joined }
            return await run(id, body)
        }
        let result = await body()
        let followers = waiting.withLock { $0.removeValue(forKey: id) } ?? []
        followers.forEach { $0.resume(returning: result) }
        return result
    }
}

/// An authorization's answer that came after its deadline: handed to `handleLateReplySoon`.
struct LateAuthorizationAnswer: LateValueHandler {
    let pipeline: MakePaymentPipeline
    let pspTransactionId: String
    let attemptReference: String
    let scheme: CardScheme?

    func late(_ answer: AcquirerAnswer) {
        let reply = LateReply(pspTransactionId: pspTransactionId, attemptReference: attemptReference,
                              responseCode: answer.responseCode, scheme: answer.scheme ?? scheme)
        pipeline.handleLateReplySoon(reply)
    }
}

/// The authorization request, clear card inside, from the worker's step to `authorize`, which
/// takes it out: the step itself stays alive until the answer is written.
final class AuthorizationHandOff: Sendable {
    private let request: Mutex<AuthorizationRequest?>
    init(_ request: AuthorizationRequest) { self.request = Mutex(request) }
    func take() -> AuthorizationRequest? { request.withLock { $0.take() } }
}
