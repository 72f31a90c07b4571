import Acquiring
import MakePayment
import Processing

/// One conformance suite that every `PaymentStore` must pass (as fluent-kit's FluentBenchmark is
/// for drivers). A store's tests run each check against fresh stores; a PSP can run it against a
/// store of its own.
///
///     @Test(arguments: PaymentStoreConformance.checks)
///     func conforms(_ check: PaymentStoreConformance.Check) async throws {
///         try await check.run(PaymentStoreConformance(makeStore: { try MyStore(…) }))
///     }
public struct PaymentStoreConformance: Sendable {
    /// Makes a new, empty store.
    public let makeStore: @Sendable () async throws -> any PaymentStore
    /// Opens the store most recently made by `makeStore` again (as after a restart); nil if the
    /// store cannot be reopened (in memory).
    public let reopenStore: (@Sendable () async throws -> any PaymentStore)?

    public init(makeStore: @escaping @Sendable () async throws -> any PaymentStore,
                reopenStore: (@Sendable () async throws -> any PaymentStore)? = nil) {
        self.makeStore = makeStore
        self.reopenStore = reopenStore
    }

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    public struct Check: Sendable, CustomStringConvertible {
        public let name: String
        /// Needs `reopenStore`: a store that keeps nothing across a reopen runs `checksWithoutReopen`.
        public let needsReopen: Bool
        let body: @Sendable (PaymentStoreConformance) async throws -> Void
        init(name: String, needsReopen: Bool = false, body: @escaping @Sendable (PaymentStoreConformance) async throws -> Void) {
            self.name = name
            self.needsReopen = needsReopen
            self.body = body
        }
        public func run(_ suite: PaymentStoreConformance) async throws { try await body(suite) }
        public var description: String { name }
    }

    public static let checks: [Check] = [
        Check(name: "registered payment reads back pending", body: { try await $0.registeredPaymentReadsBack() }),
        Check(name: "second registration of an id is refused", body: { try await $0.duplicateRegistrationIsRefused() }),
        Check(name: "only one of many concurrent attempts begins", body: { try await $0.onlyOneAttemptBegins() }),
        Check(name: "outcome completes the payment and stands", body: { try await $0.outcomeCompletesAndStands() }),
        Check(name: "an approval written too late is recorded as its late outcome", body: { try await $0.lateApprovalIsRecordedAsItsLateOutcome() }),
        Check(name: "outcome without attempt completes a pending payment, as a refusal only", body: { try await $0.outcomeWithoutAttempt() }),
        Check(name: "only a pending payment can be cancelled", body: { try await $0.onlyPendingCancels() }),
        Check(name: "a cancelled payment takes no attempt and no outcome", body: { try await $0.cancelledTakesNothing() }),
        Check(name: "reversal is stored with its outcome and retried until acknowledged", body: { try await $0.reversalLifecycle() }),
        Check(name: "outcomes and orphaned attempts survive a reopen", needsReopen: true, body: { try await $0.survivesReopen() }),
        Check(name: "the makePayment read follows every transition", body: { try await $0.makePaymentReadFollowsTransitions() }),
        Check(name: "orphaned attempts are listed by age, and only those", body: { try await $0.attemptsOrphanedListedByAge() }),
        Check(name: "an attempt in flight is closed only by its own outcome", body: { try await $0.attemptClosedOnlyByItsOwnOutcome() }),
        Check(name: "a due reversal is claimed by one sender at a time", body: { try await $0.reversalClaimedOnce() }),
        Check(name: "a try is recorded under its claim only; a late approval starts a reversal not reversed by the host again as new",
              body: { try await $0.lateApprovalReopensOrMarks() }),
    ]

    /// The checks for a store that cannot be reopened (one in memory): listed, the reopen check
    /// would fail rather than pass having checked nothing.
    public static let checksWithoutReopen: [Check] = checks.filter { !$0.needsReopen }

    // MARK: helpers

    static func expect(_ condition: Bool, _ message: @autoclosure () -> String) throws {
        if !condition { throw Failure(description: message()) }
    }

    public static func registration(_ id: String, amount: Int = 1000) -> PaymentRegistration {
        PaymentRegistration(pspTransactionId: id, merchantSerialNumber: "123456", merchantOrderId: "order-" + id,
                            amount: amount, currency: "NOK", tokenHash: Array(repeating: 7, count: 32), paymentText: "Test payment")
    }

    static func attempt(_ id: String, instance: String = "instance-a") -> AttemptRecord {
        AttemptRecord(attemptId: "att-" + id + "-" + instance, attemptReference: "ref-" + id + "-" + instance, instanceId: instance,
                      maskedPAN: MaskedPAN(masked: "400000******0002")!, startedAt: 1_000, orphanedAt: 13_000)
    }

    static let approved = PaymentOutcome(status: .ok, error: nil, maskedPAN: MaskedPAN(masked: "400000******0002"),
                                         acquirerResponseCode: "00", authorizationCode: "123456", acquirerReference: "REF1")

    /// Registers `id`, begins its attempt and records it answered 85 with reversal `reversalId` (at 100).
    static func reversalRecorded(_ store: any PaymentStore, _ id: String, reversalId: String, attemptReference: String) async throws -> ReversalRequest {
        _ = try await store.register(registration(id), now: 1)
        _ = try await store.beginAttempt(id, attempt: attempt(id), now: 2)
        let reversal = ReversalRequest(reversalId: reversalId, pspTransactionId: id, attemptId: attempt(id).attemptId,
                                       attemptReference: attemptReference, amount: 1000, currency: "NOK", merchantSerialNumber: "123456")
        _ = try await store.recordOutcome(id, outcome: PaymentOutcome(status: .fail, error: APIError.responseReceivedTooLate.message),
                                          reversal: reversal, attemptId: attempt(id).attemptId, now: 100)
        return reversal
    }

    // MARK: checks

    func reversalClaimedOnce() async throws {
        let store = try await makeStore()
        _ = try await Self.reversalRecorded(store, "p-claim", reversalId: "rev-claim", attemptReference: "ref")
        let claims = try await withThrowingTaskGroup(of: ReversalRecord?.self) { group in
            for _ in 0..<8 { group.addTask { try await store.claimReversal("rev-claim", now: 200, until: 10_000) } }
            return try await group.reduce(into: [ReversalRecord]()) { if let r = $1 { $0.append(r) } }
        }
        try Self.expect(claims.count == 1 && claims[0].request.reversalId == "rev-claim", "one of eight concurrent claims wins, got \(claims.count)")
        try Self.expect(try await store.claimReversal("rev-claim", now: 9_999, until: 20_000) == nil, "a claimed reversal is not due until its claim ends")
        try Self.expect(try await store.claimReversal("rev-claim", now: 10_000, until: 20_000) != nil, "a claim that ran out (its sender died) can be taken again")
        try await store.recordReversalTry("rev-claim", state: .acknowledged, nextTryAt: 0, now: 10_001)
        try Self.expect(try await store.claimReversal("rev-claim", now: 30_000, until: 40_000) == nil, "an acknowledged reversal is never claimed")
    }

    func attemptClosedOnlyByItsOwnOutcome() async throws {
        let store = try await makeStore()
        _ = try await store.register(Self.registration("p-own"), now: 1)
        _ = try await store.beginAttempt("p-own", attempt: Self.attempt("p-own"), now: 2)
        // A refusal decided on a stale "pending" (no attempt), or the outcome of some other attempt.
        let tooLate = PaymentOutcome(status: .fail, error: APIError.responseReceivedTooLate.message)
        let unattempted = try await store.recordOutcome("p-own", outcome: tooLate, reversal: nil, attemptId: nil, now: 3)
        let other = try await store.recordOutcome("p-own", outcome: tooLate, reversal: nil, attemptId: "att-someone-else", now: 3)
        try Self.expect(unattempted == nil && other == nil, "neither closes the attempt in flight")
        try Self.expect(try await store.payment("p-own")?.state == .processing, "the payment stays processing")
        let own = try await store.recordOutcome("p-own", outcome: Self.approved, reversal: nil, attemptId: Self.attempt("p-own").attemptId, now: 4)
        try Self.expect(own == Self.approved, "its own outcome closes it")
    }

    func attemptsOrphanedListedByAge() async throws {
        let store = try await makeStore()
        for id in ["f-old", "f-older", "f-young", "f-long", "f-unrecorded", "f-unrecorded-young", "f-done", "f-pending"] {
            _ = try await store.register(Self.registration(id), now: 1)
        }
        // (start, orphaned at): at 5000, with 3000 after the start for an attempt that names none.
        let attempts: [(String, Int64, Int64?)] = [
            ("f-old", 2_000, 4_000), ("f-older", 1_000, 3_000), ("f-young", 9_000, 11_000),
            ("f-long", 2_200, 20_000),  // its process gives up on it later: not yet
            ("f-unrecorded", 1_500, nil), ("f-unrecorded-young", 2_500, nil), ("f-done", 400, 600),
        ]
        for (id, startedAt, orphanedAt) in attempts {
            var attempt = Self.attempt(id)
            attempt.startedAt = startedAt
            attempt.orphanedAt = orphanedAt
            _ = try await store.beginAttempt(id, attempt: attempt, now: startedAt)
        }
        _ = try await store.recordOutcome("f-done", outcome: Self.approved, reversal: nil, attemptId: Self.attempt("f-done").attemptId, now: 600)
        let listed = try await store.attemptsOrphaned(at: 5_000, unrecordedAfter: 3_000, limit: 10)
        try Self.expect(listed.map(\.registration.pspTransactionId) == ["f-older", "f-unrecorded", "f-old"],
                        "processing payments whose attempt is orphaned at 5000, oldest first; got \(listed.map(\.registration.pspTransactionId))")
        try Self.expect(listed.first?.attempt?.attemptId == Self.attempt("f-older").attemptId, "each with its attempt")
        let one = try await store.attemptsOrphaned(at: 5_000, unrecordedAfter: 3_000, limit: 1)
        try Self.expect(one.map(\.registration.pspTransactionId) == ["f-older"], "at most `limit`")
        let capped = try await store.attemptsOrphaned(at: 5_000, unrecordedAfter: 1_000, limit: 10)
        try Self.expect(capped.map(\.registration.pspTransactionId) == ["f-older", "f-unrecorded", "f-old", "f-long", "f-unrecorded-young"],
                        "never later than `unrecordedAfter` after the start; got \(capped.map(\.registration.pspTransactionId))")
    }

    func registeredPaymentReadsBack() async throws {
        let store = try await makeStore()
        let r = Self.registration("p-read", amount: 4250)
        try Self.expect(try await store.register(r, now: 10) == .created, "register must create")
        let record = try await store.payment("p-read")
        try Self.expect(record?.registration == r, "the registration must read back unchanged, got \(String(describing: record?.registration))")
        try Self.expect(record?.state == .pending && record?.outcome == nil && record?.authorizationsSent == 0, "a new payment is pending")
        try Self.expect(record?.createdAt == 10, "createdAt must be kept")
        try Self.expect(try await store.payment("p-missing") == nil, "an unknown id reads as nil")
    }

    /// `paymentForMakePayment` may answer from memory, but within one store it must always agree
    /// with `payment` once a transition has returned.
    func makePaymentReadFollowsTransitions() async throws {
        let store = try await makeStore()
        func agree(_ id: String, _ state: PaymentState?, _ step: String) async throws {
            let front = try await store.paymentForMakePayment(id)
            let plain = try await store.payment(id)
            try Self.expect(front == plain, "after \(step), the makePayment read \(String(describing: front)) differs from the plain read \(String(describing: plain))")
            try Self.expect(front?.state == state, "after \(step), the payment must be \(String(describing: state)), got \(String(describing: front?.state))")
        }
        try await agree("p-f-missing", nil, "nothing")
        _ = try await store.register(Self.registration("p-f"), now: 5)
        try await agree("p-f", .pending, "register")
        _ = try await store.register(Self.registration("p-f", amount: 99), now: 6)
        try await agree("p-f", .pending, "a refused second registration")
        try Self.expect(try await store.paymentForMakePayment("p-f")?.registration.amount == 1000, "the first registration stands")
        _ = try await store.beginAttempt("p-f", attempt: Self.attempt("p-f"), now: 7)
        try await agree("p-f", .processing, "beginAttempt")
        _ = try await store.recordOutcome("p-f", outcome: Self.approved, reversal: nil, attemptId: Self.attempt("p-f").attemptId, now: 8)
        try await agree("p-f", .completed, "recordOutcome")
        _ = try await store.register(Self.registration("p-f-92"), now: 5)
        _ = try await store.recordOutcome("p-f-92", outcome: PaymentOutcome(status: .fail, error: APIError.unableToDecrypt.message), reversal: nil, attemptId: nil, now: 6)
        try await agree("p-f-92", .completed, "recordOutcome without an attempt")
        _ = try await store.register(Self.registration("p-f-cx"), now: 5)
        _ = try await store.cancel("p-f-cx", now: 6)
        try await agree("p-f-cx", .cancelled, "cancel")
    }

    func duplicateRegistrationIsRefused() async throws {
        let store = try await makeStore()
        _ = try await store.register(Self.registration("p-dup"), now: 1)
        let second = try await store.register(Self.registration("p-dup", amount: 5), now: 2)
        try Self.expect(second == .alreadyExists, "a second registration must be refused")
        try Self.expect(try await store.payment("p-dup")?.registration.amount == 1000, "the first registration stands")
    }

    func onlyOneAttemptBegins() async throws {
        let store = try await makeStore()
        _ = try await store.register(Self.registration("p-race"), now: 1)
        let begun = try await withThrowingTaskGroup(of: Bool.self) { group in
            for i in 0..<20 {
                group.addTask {
                    if case .begun = try await store.beginAttempt("p-race", attempt: Self.attempt("p-race", instance: "i\(i)"), now: 2) { return true }
                    return false
                }
            }
            return try await group.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        try Self.expect(begun == 1, "exactly one attempt may begin, \(begun) did")
        let record = try await store.payment("p-race")
        try Self.expect(record?.state == .processing && record?.authorizationsSent == 1, "the payment is processing with one authorization")
        try Self.expect(record?.attempt?.maskedPAN.value == "400000******0002", "the attempt's masked PAN is kept")
        try Self.expect(record?.attempt?.attemptReference.hasPrefix("ref-p-race-") == true, "the attempt's acquirer reference is kept")
    }

    func outcomeCompletesAndStands() async throws {
        let store = try await makeStore()
        _ = try await store.register(Self.registration("p-out"), now: 1)
        _ = try await store.beginAttempt("p-out", attempt: Self.attempt("p-out"), now: 2)
        let first = try await store.recordOutcome("p-out", outcome: Self.approved, reversal: nil, attemptId: Self.attempt("p-out").attemptId, now: 3)
        try Self.expect(first == Self.approved, "the recorded outcome is returned")
        let refused = PaymentOutcome(status: .fail, error: APIError.refusedByIssuer.message)
        let second = try await store.recordOutcome("p-out", outcome: refused, reversal: nil, attemptId: Self.attempt("p-out").attemptId, now: 4)
        try Self.expect(second == Self.approved, "a second outcome must not replace the first")
        let record = try await store.payment("p-out")
        try Self.expect(record?.state == .completed && record?.outcome == Self.approved && record?.completedAt == 3,
                        "the payment is completed with its first outcome, got \(String(describing: record))")
    }

    /// An approval whose write begins after its `answerBy` instant is recorded as too late to
    /// answer, with the reversal of its attempt; one written in time, as given.
    func lateApprovalIsRecordedAsItsLateOutcome() async throws {
        let store = try await makeStore()
        for (id, answerBy, late) in [("p-late", ContinuousClock.now - .seconds(1), true), ("p-time", ContinuousClock.now + .seconds(60), false)] {
            _ = try await store.register(Self.registration(id), now: 1)
            let attempt = Self.attempt(id)
            _ = try await store.beginAttempt(id, attempt: attempt, now: 2)
            let standing = try await store.recordOutcome(id, outcome: Self.approved, reversal: nil, attemptId: attempt.attemptId, now: 3,
                                                         answerBy: answerBy)
            let expected = late ? Self.approved.tooLateToAnswer : Self.approved
            try Self.expect(standing == expected, "\(id): \(String(describing: standing)) stands")
            try Self.expect(try await store.payment(id)?.outcome == expected, "\(id): recorded as it stands")
            let reversals = try await store.reversals(for: id)
            try Self.expect(reversals.map(\.request) == (late ? [.undoing(attemptId: attempt.attemptId, attemptReference: attempt.attemptReference,
                                                                             of: Self.registration(id))] : []),
                            "\(id): reversed only if late, and then its attempt: \(reversals)")
        }
    }

    func outcomeWithoutAttempt() async throws {
        let store = try await makeStore()
        _ = try await store.register(Self.registration("p-92"), now: 1)
        let outcome = PaymentOutcome(status: .fail, error: APIError.unableToDecrypt.message)
        _ = try await store.recordOutcome("p-92", outcome: outcome, reversal: nil, attemptId: nil, now: 2)
        let record = try await store.payment("p-92")
        try Self.expect(record?.outcome == outcome && record?.authorizationsSent == 0, "a refusal before authorization completes without an attempt")
        if case .begun = try await store.beginAttempt("p-92", attempt: Self.attempt("p-92"), now: 3) {
            throw Failure(description: "a completed payment must not begin an attempt")
        }
        // Without an attempt nothing was authorized: neither an approval nor a reversal can be recorded.
        _ = try await store.register(Self.registration("p-ok"), now: 1)
        let approval = PaymentOutcome(status: .ok, error: nil)
        let reversal = ReversalRequest(reversalId: "p-ok-R", pspTransactionId: "p-ok", attemptId: "none", attemptReference: "none",
                                       amount: 1000, currency: "NOK", merchantSerialNumber: "123456")
        for (recorded, reversed) in [(approval, nil), (outcome, reversal)] as [(PaymentOutcome, ReversalRequest?)] {
            let refused: Bool
            do { _ = try await store.recordOutcome("p-ok", outcome: recorded, reversal: reversed, attemptId: nil, now: 2); refused = false }
            catch is RefusedTransition { refused = true }
            try Self.expect(refused, "an outcome without an attempt is a refusal without a reversal (\(recorded.status), reversal: \(reversed != nil))")
        }
        try Self.expect(try await store.payment("p-ok")?.state == .pending, "a refused call leaves the payment pending")
    }

    func onlyPendingCancels() async throws {
        let store = try await makeStore()
        _ = try await store.register(Self.registration("p-c1"), now: 1)
        try Self.expect(try await store.cancel("p-c1", now: 2) == .cancelled, "a pending payment cancels")
        try Self.expect(try await store.cancel("p-c1", now: 3) == .notPending(.cancelled), "cancelling twice says it is cancelled")
        try Self.expect(try await store.cancel("p-none", now: 3) == .notFound, "an unknown payment is not found")
        _ = try await store.register(Self.registration("p-c2"), now: 1)
        _ = try await store.beginAttempt("p-c2", attempt: Self.attempt("p-c2"), now: 2)
        try Self.expect(try await store.cancel("p-c2", now: 3) == .notPending(.processing), "a processing payment cannot be cancelled")
    }

    func cancelledTakesNothing() async throws {
        let store = try await makeStore()
        _ = try await store.register(Self.registration("p-cx"), now: 1)
        _ = try await store.cancel("p-cx", now: 2)
        guard case .notPending(let record) = try await store.beginAttempt("p-cx", attempt: Self.attempt("p-cx"), now: 3) else {
            throw Failure(description: "a cancelled payment must not begin an attempt")
        }
        try Self.expect(record.state == .cancelled, "beginAttempt reports the cancelled state")
        let refusal = PaymentOutcome(status: .fail, error: APIError.unableToDecrypt.message)
        let standing = try await store.recordOutcome("p-cx", outcome: refusal, reversal: nil, attemptId: nil, now: 4)
        try Self.expect(standing == nil, "a cancelled payment takes no outcome")
        try Self.expect(try await store.payment("p-cx")?.state == .cancelled, "it stays cancelled")
    }

    func reversalLifecycle() async throws {
        let store = try await makeStore()
        let reversal = try await Self.reversalRecorded(store, "p-rev", reversalId: "rev-1", attemptReference: "ref-p-rev-instance-a")
        var due = try await store.dueReversals(now: 100, limit: 10)
        try Self.expect(due.map(\.request) == [reversal], "the reversal is due at once, got \(due)")
        // A claim counts its try: the send it is for is the first.
        try Self.expect(try await store.claimReversal("rev-1", now: 100, until: 1_100).map { $0.tries == 1 && $0.request.sendCount == 1 } == true,
                        "the claimed try is the first, and the claimed send's own number")
        try await store.recordReversalTry("rev-1", state: .pending, nextTryAt: 5_000, now: 101, claimedUntil: 1_100)
        due = try await store.dueReversals(now: 200, limit: 10)
        try Self.expect(due.isEmpty, "a reversal waiting for its next try is not due")
        due = try await store.dueReversals(now: 5_000, limit: 10)
        try Self.expect(due.count == 1 && due[0].tries == 1 && due[0].request.sendCount == 2, "its next try is a repeat")
        // A try whose answer is never recorded (a crash mid-send) counts all the same: the next is a repeat of it.
        try Self.expect(try await store.claimReversal("rev-1", now: 5_000, until: 6_000)?.tries == 2, "the second try")
        due = try await store.dueReversals(now: 6_000, limit: 10)
        try Self.expect(due.count == 1 && due[0].tries == 2 && due[0].request.sendCount == 3, "after a claim that ran out, a repeat again")
        try Self.expect(try await store.claimReversal("rev-1", now: 6_000, until: 7_000)?.tries == 3, "the third try")
        try await store.recordReversalTry("rev-1", state: .acknowledged, nextTryAt: 0, now: 6_001, claimedUntil: 7_000)
        try Self.expect(try await store.dueReversals(now: 10_000, limit: 10).isEmpty, "an acknowledged reversal is never due again")
        let all = try await store.reversals(for: "p-rev")
        try Self.expect(all.count == 1 && all[0].state == .acknowledged && all[0].tries == 3, "the reversal is acknowledged after three tries")
        // Acknowledged as reversed, a late approval leaves it; unknown, nothing happens.
        try Self.expect(try await store.lateApproval(ofReversal: "rev-1", now: 20_000, claimsEndBy: 30_000) == .stands, "a reversed reversal stands")
        try Self.expect(try await store.lateApproval(ofReversal: "rev-none", now: 20_000, claimsEndBy: 30_000) == .stands, "no such reversal")
    }

    /// A try's answer is recorded only under the claim it was sent under. A reversal answered "no
    /// such authorization" is settled, unless its authorization was approved late: then, settled,
    /// failed or pending (a try in flight included), it starts again as new.
    func lateApprovalReopensOrMarks() async throws {
        let store = try await makeStore()
        _ = try await Self.reversalRecorded(store, "p-late", reversalId: "rev-late", attemptReference: "ref-late")
        // Under another claim (one that ran out and was taken again) nothing is recorded.
        try Self.expect(try await store.claimReversal("rev-late", now: 100, until: 1_100) != nil, "claimed")
        try Self.expect(!(try await store.settleReversalWithoutOriginal("rev-late", now: 200, claimedUntil: 999)), "not under its claim")
        try Self.expect(!(try await store.recordReversalTry("rev-late", state: .acknowledged, nextTryAt: 0, now: 200, claimedUntil: 999)),
                        "not under its claim")
        try Self.expect(try await store.settleReversalWithoutOriginal("rev-late", now: 200, claimedUntil: 1_100), "settled on 25")
        var record = try await store.reversals(for: "p-late").first
        try Self.expect(record?.state == .acknowledged && record?.tries == 1 && record?.lateApproved == false, "acknowledged, got \(String(describing: record))")
        try Self.expect(try await store.lateApproval(ofReversal: "rev-late", now: 20_000, claimsEndBy: 30_000) == .reopened,
                        "settled on 25, then approved late: reopened")
        record = try await store.reversals(for: "p-late").first
        try Self.expect(record?.state == .pending && record?.tries == 0 && record?.lateApproved == true
                        && record?.request.sendCount == 1 && record?.createdAt == 100,
                        "reopened as new, a first send, created when the attempt was given up, got \(String(describing: record))")
        try Self.expect(try await store.dueReversals(now: 20_000, limit: 10).map(\.request.reversalId) == ["rev-late"], "and due")
        // Approved late again while a try is out: that try's answer is not recorded, and it is due as
        // new once its claim has run out (before, another sender could send beside it).
        try Self.expect(try await store.claimReversal("rev-late", now: 20_000, until: 21_000) != nil, "claimed again")
        try Self.expect(try await store.lateApproval(ofReversal: "rev-late", now: 20_002, claimsEndBy: 30_002) == .reopened, "pending: started again")
        try Self.expect(!(try await store.recordReversalTry("rev-late", state: .acknowledged, nextTryAt: 0, now: 20_003, claimedUntil: 21_000)),
                        "the try in flight is not recorded")
        record = try await store.reversals(for: "p-late").first
        try Self.expect(record?.state == .pending && record?.tries == 0 && record?.nextTryAt == 21_001,
                        "due as new after the claim, got \(String(describing: record))")
        try Self.expect(try await store.claimReversal("rev-late", now: 21_000, until: 22_000) == nil, "not while the claim in flight holds")
        // An answer "reversed" is recorded whatever became of the claim: the reversal is done.
        try Self.expect(try await store.claimReversal("rev-late", now: 21_001, until: 21_900)?.tries == 1, "claimed: a first send")
        try Self.expect(try await store.lateApproval(ofReversal: "rev-late", now: 21_002, claimsEndBy: 31_002) == .reopened, "started again")
        try Self.expect(try await store.recordReversalTry("rev-late", state: .acknowledged, nextTryAt: 0, now: 21_004, claimedUntil: nil),
                        "reversed: recorded")
        try Self.expect(try await store.lateApproval(ofReversal: "rev-late", now: 21_005, claimsEndBy: 31_005) == .stands, "and it stands")
        // Approved late, then 25 does not settle it; failed for good, a late approval starts it again.
        _ = try await Self.reversalRecorded(store, "p-late2", reversalId: "rev-late-2", attemptReference: "ref-late-2")
        try Self.expect(try await store.lateApproval(ofReversal: "rev-late-2", now: 20_000, claimsEndBy: 30_000) == .reopened, "pending: started again")
        try Self.expect(try await store.claimReversal("rev-late-2", now: 20_000, until: 22_000) != nil, "claimed as new")
        try Self.expect(!(try await store.settleReversalWithoutOriginal("rev-late-2", now: 20_004, claimedUntil: 22_000)), "approved late: 25 does not settle it")
        try Self.expect(try await store.recordReversalTry("rev-late-2", state: .failed, nextTryAt: 0, now: 30_000, claimedUntil: 22_000), "failed under its claim")
        try Self.expect(try await store.lateApproval(ofReversal: "rev-late-2", now: 40_000, claimsEndBy: 50_000) == .reopened, "failed, then approved late: reopened")
        // Waiting out a back-off longer than any claim (no try in flight): due again by the end of a claim at most.
        _ = try await Self.reversalRecorded(store, "p-late3", reversalId: "rev-late-3", attemptReference: "ref-late-3")
        try Self.expect(try await store.claimReversal("rev-late-3", now: 100, until: 1_100) != nil, "claimed")
        try Self.expect(try await store.recordReversalTry("rev-late-3", state: .pending, nextTryAt: 60_000, now: 200, claimedUntil: 1_100), "a minute's back-off")
        try Self.expect(try await store.lateApproval(ofReversal: "rev-late-3", now: 20_000, claimsEndBy: 30_000) == .reopened, "reopened")
        try Self.expect(try await store.reversals(for: "p-late3").first?.nextTryAt == 30_001, "due after a claim's length, not the back-off")
    }

    func survivesReopen() async throws {
        guard let reopenStore else {
            throw Failure(description: "this suite has no reopenStore: a store that keeps nothing across a reopen runs PaymentStoreConformance.checksWithoutReopen")
        }
        do {
            let store = try await makeStore()
            _ = try await store.register(Self.registration("p-done"), now: 1)
            _ = try await store.beginAttempt("p-done", attempt: Self.attempt("p-done"), now: 2)
            _ = try await store.recordOutcome("p-done", outcome: Self.approved, reversal: nil, attemptId: Self.attempt("p-done").attemptId, now: 3)
            _ = try await store.register(Self.registration("p-orphan"), now: 1)
            _ = try await store.beginAttempt("p-orphan", attempt: Self.attempt("p-orphan", instance: "dead"), now: 2)
        }
        let store = try await reopenStore()
        try Self.expect(try await store.payment("p-done")?.outcome == Self.approved, "a recorded outcome survives")
        let orphan = try await store.payment("p-orphan")
        try Self.expect(orphan?.state == .processing && orphan?.attempt == Self.attempt("p-orphan", instance: "dead"),
                        "an attempt in flight survives as recorded (naming the instance that sent it, and when it is orphaned)")
    }
}
