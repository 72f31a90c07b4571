import Acquiring
import CardCrypto
import MakePayment
import PaymentStoreConformance
import Processing
import SQLitePaymentStore
import Foundation
import Synchronization
import Testing

@Suite struct PipelineTests {
    @Test func approvedCardIsOKAndRecorded() async throws {
        let h = try PipelineHarness()
        try await h.register("p1")
        let result = await h.makePayment(h.request("p1", cardData: h.cardData(code: "00")))
        #expect(result == MakePaymentResult(httpStatus: 200, response: .ok("p1")))
        let record = try #require(try await h.store.payment("p1"))
        #expect(record.state == .completed && record.authorizationsSent == 1)
        #expect(record.outcome?.maskedPAN?.value == "400000******0002")
        #expect(record.outcome?.authorizationCode != nil && record.outcome?.acquirerReference != nil)
        #expect(h.acquirer.authorizationCount(pspTransactionId: "p1") == 1)
    }

    /// The attempt is committed before the acquirer hears of the authorization: a store opened on
    /// the same file (the process that takes over after a crash) already finds the payment
    /// processing under that attempt, so no approval can stand that the store does not know of.
    @Test func theAttemptIsCommittedBeforeTheAcquirerHearsOfIt() async throws {
        let h = try PipelineHarness()
        try await h.register("ac-1")
        let acquirer = LooksAtTheStoreFile(path: h.path)
        // A generous timeout: the acquirer opens a store of its own inside it.
        let pipeline = PipelineHarness.pipeline(store: h.store, acquirer: acquirer, acquirerTimeout: .seconds(10))
        let result = await h.makePayment(h.request("ac-1", cardData: h.cardData(code: "00")), through: pipeline)
        #expect(result == MakePaymentResult(httpStatus: 200, response: .ok("ac-1")))
        let (seen, attemptId) = try #require(acquirer.seen.withLock { $0 })
        #expect(seen?.state == .processing, "the acquirer was asked before the attempt was on disk: \(String(describing: seen?.state))")
        #expect(seen?.attempt?.attemptId == attemptId && seen?.authorizationsSent == 1)
    }

    /// Every test-card code the simulator knows, through the default ISO 8583 table.
    @Test(arguments: [
        ("00", nil), ("08", nil), ("11", nil), ("10", 82),
        ("15", 81), ("31", 81), ("92", 81),
        ("01", 82), ("02", 82), ("05", 82), ("12", 82), ("46", 82), ("57", 82), ("62", 82), ("78", 82), ("93", 82), ("13", 82),
        ("04", 82), ("07", 82), ("41", 82), ("43", 82), ("42", 82),
        ("34", 83), ("59", 83), ("63", 83), ("61", 84), ("65", 84), ("68", 85), ("91", 85),
        ("33", 86), ("54", 86), ("14", 87), ("56", 87), ("58", 88), ("51", 89),
        ("03", 91), ("06", 91), ("20", 91), ("22", 91), ("30", 91), ("94", 91), ("96", 91),
    ] as [(String, Int?)])
    func testCardCodesMapToTheAPIsErrors(code: String, errorId: Int?) async throws {
        let h = try PipelineHarness()
        try await h.register("p-\(code)")
        let result = await h.makePayment(h.request("p-\(code)", cardData: h.cardData(code: code)))
        #expect(result.httpStatus == 200)
        #expect(result.response.errorMessage?.errorId == errorId)
        #expect(result.response.paymentInfo.status == (errorId == nil ? .ok : .fail))
        let record = try #require(try await h.store.payment("p-\(code)"))
        #expect(record.outcome?.acquirerResponseCode == code, "the raw code is kept in our records")
    }

    @Test func partialApprovalIsReversed() async throws {
        let h = try PipelineHarness()
        try await h.register("p10")
        _ = await h.makePayment(h.request("p10", cardData: h.cardData(code: "10")))
        try await waitUntil { try await h.store.reversals(for: "p10").first?.state == .acknowledged }
        #expect(try await h.store.reversals(for: "p10").count == 1)
        #expect(h.acquirer.reversalCount(pspTransactionId: "p10") == 1)
    }

    /// A refusal whose authorization may stand is reversed: a code nobody mapped (16 is an ISO
    /// approval we do not honour), the issuer's late answer (68), the issuer or switch
    /// inoperative (91, also a switch's answer when the issuer timed out) and a system
    /// malfunction (96, possibly after forwarding). A plain decline, or a request refused as it
    /// came (30, format error), is not.
    @Test(arguments: [("16", 82, 1), ("68", 85, 1), ("91", 85, 1), ("96", 91, 1), ("51", 89, 0), ("05", 82, 0), ("30", 91, 0)])
    func refusalsThatMayStandAreReversed(code: String, errorId: Int, reversals: Int) async throws {
        let h = try PipelineHarness()
        let id = "may-" + code
        try await h.register(id)
        let result = await h.makePayment(h.request(id, cardData: h.cardData(code: code)))
        #expect(result.response.errorMessage?.errorId == errorId)
        if reversals > 0 {
            try await waitUntil { try await h.store.reversals(for: id).first?.state == .acknowledged }
        } else {
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(try await h.store.reversals(for: id).count == reversals)
        #expect(h.acquirer.reversalCount(pspTransactionId: id) == reversals)
        #expect(try await h.store.payment(id)?.outcome?.authorizationCode == nil, "no authorization code is kept for a refusal")
    }

    @Test func timeoutIsAnswered85AndReversedOnce() async throws {
        // Long enough that the attempt's commit, slow while the other suites run, leaves enough of it.
        let h = try PipelineHarness(acquirerTimeout: .seconds(3))
        try await h.register("p99")
        let result = await h.makePayment(h.request("p99", cardData: h.cardData(code: "99")))
        #expect(result.response.errorMessage?.errorId == 85)
        try await waitUntil { h.acquirer.reversalCount(pspTransactionId: "p99") == 1 }
        #expect(try await h.store.payment("p99")?.authorizationsSent == 1)
        // A repeat gets the same answer and is never authorized again.
        let again = await h.makePayment(h.request("p99", cardData: h.cardData(code: "99")))
        #expect(again == result)
        #expect(h.acquirer.authorizationCount(pspTransactionId: "p99") == 1)
    }

    @Test func wrongOrMissingTokenIsUnauthorized() async throws {
        let h = try PipelineHarness()
        try await h.register("p1")
        let request = h.request("p1", cardData: h.cardData(code: "00"))
        #expect(await h.makePayment(request, token: "token-p2").httpStatus == 401)
        #expect(await h.pipeline.handle(body: request, authorization: nil, queue: nil).httpStatus == 401)
        #expect(await h.makePayment(request, token: "").httpStatus == 401)
        #expect(h.acquirer.authorizationCount(pspTransactionId: "p1") == 0)
        #expect(try await h.store.payment("p1")?.state == .pending)
    }

    /// The header is compared with the token as registered first: a makePaymentToken that itself
    /// begins "Bearer " works as given, and "Bearer " put in front of a plain token is allowed.
    @Test func aTokenIsTheHeaderAsRegisteredOrAfterBearer() async throws {
        let h = try PipelineHarness()
        var registration = PaymentStoreConformance.registration("pb1")
        registration.tokenHash = Secrets.sha256("Bearer abc")
        _ = try await h.store.register(registration, now: 1)
        let request = h.request("pb1", cardData: h.cardData(code: "00"))
        #expect(await h.makePayment(request, token: "abc").httpStatus == 401)
        #expect(await h.makePayment(request, token: "Bearer ").httpStatus == 401)
        #expect(await h.makePayment(request, token: "Bearer abc").response == .ok("pb1"))
        try await h.register("pb2")
        #expect(await h.makePayment(h.request("pb2", cardData: h.cardData(code: "00")), token: "Bearer token-pb2").response == .ok("pb2"))
        // The scheme's name in any case, as the admin endpoints take it.
        try await h.register("pb3")
        #expect(await h.makePayment(h.request("pb3", cardData: h.cardData(code: "00")), token: "bEARER token-pb3").response == .ok("pb3"))
        try await h.register("pb4")
        #expect(await h.makePayment(h.request("pb4", cardData: h.cardData(code: "00")), token: "Bearer\ttoken-pb4").httpStatus == 401)
        // A token that begins with a combining mark keeps it after "Bearer " (one Character with the space).
        var combining = PaymentStoreConformance.registration("pb5")
        combining.tokenHash = Secrets.sha256("\u{301}abcdefgh")
        _ = try await h.store.register(combining, now: 1)
        #expect(await h.makePayment(h.request("pb5", cardData: h.cardData(code: "00")), token: "Bearer \u{301}abcdefgh").response == .ok("pb5"))
    }

    @Test func unknownPaymentIsNotFound() async throws {
        let h = try PipelineHarness()
        #expect(await h.makePayment(h.request("nope", cardData: "x")).httpStatus == 404)
    }

    @Test func otherMerchantIsInvalidRequest() async throws {
        let h = try PipelineHarness()
        try await h.register("p1")
        let result = await h.makePayment(h.request("p1", cardData: h.cardData(code: "00"), merchant: "999999"))
        #expect(result.httpStatus == 400 && result.response.errorMessage?.errorId == 71)
    }

    @Test func missingBodyIsInvalidRequest() async throws {
        let h = try PipelineHarness()
        let result = await h.pipeline.handle(body: nil, authorization: "x", queue: nil, idForInvalidBody: "p7")
        #expect(result == MakePaymentResult(httpStatus: 400, response: .fail("p7", .invalidRequest)))
    }

    /// An invalid body's pspTransactionId is echoed only if it could be one (128 bytes at most).
    @Test func anInvalidBodyEchoesNoIdLongerThanAnId() async throws {
        let h = try PipelineHarness()
        let long = String(repeating: "A", count: 129)
        #expect(await h.pipeline.handle(body: nil, authorization: "x", queue: nil, idForInvalidBody: long).response.paymentInfo.pspTransactionId == "")
        let longest = String(repeating: "A", count: 128)
        #expect(await h.pipeline.handle(body: nil, authorization: "x", queue: nil, idForInvalidBody: longest).response.paymentInfo.pspTransactionId == longest)
    }

    /// A full queue is answered with one of the API's statuses (it has no 503): 500 with 91, and
    /// the payment stays pending, so Vipps's next call is processed.
    @Test func aFullQueueIs500With91AndThePaymentStaysPending() async throws {
        let h = try PipelineHarness()
        try await h.register("qf1")
        let full = InProcessMakePaymentQueue(capacity: 1)
        full.close()  // a closed queue refuses at once, as a full one does
        let result = await h.makePayment(h.request("qf1", cardData: h.cardData(code: "00")), queue: full)
        #expect(result == MakePaymentResult(httpStatus: 500, response: .fail("qf1", .internalError)))
        #expect(try await h.store.payment("qf1")?.state == .pending)
        let retried = await h.makePayment(h.request("qf1", cardData: h.cardData(code: "00")))
        #expect(retried.response.paymentInfo.status == .ok)
    }

    /// A cancelled payment's answer (85) does not depend on the queue: a full one does not make it a 91.
    @Test func aCancelledPaymentIs85EvenWithTheQueueFull() async throws {
        let h = try PipelineHarness()
        try await h.register("qc1")
        #expect(try await h.store.cancel("qc1", now: 5) == .cancelled)
        let full = InProcessMakePaymentQueue(capacity: 1)
        full.close()
        let result = await h.makePayment(h.request("qc1", cardData: h.cardData(code: "00")), queue: full)
        #expect(result == MakePaymentResult(httpStatus: 200, response: .fail("qc1", .responseReceivedTooLate)))
        #expect(h.acquirer.authorizationCount(pspTransactionId: "qc1") == 0)
    }

    /// The front may work from a stale "pending" (a store answers a registration from memory): with
    /// the queue full, a payment whose outcome is recorded by now gets that outcome, not a 91.
    @Test func aStalePendingWithTheQueueFullGetsTheRecordedOutcome() async throws {
        let h = try PipelineHarness()
        try await h.register("qs1")
        let stale = try #require(try await h.store.payment("qs1"))
        _ = await h.makePayment(h.request("qs1", cardData: h.cardData(code: "00")))
        #expect(try await h.store.payment("qs1")?.outcome?.status == .ok)
        let full = InProcessMakePaymentQueue(capacity: 1)
        full.close()
        let front = h.pipeline(over: StalePendingStore(base: h.store, stale: stale), acquirerTimeout: .seconds(2), instanceId: "x")
        let result = await front.handle(body: h.request("qs1", cardData: h.cardData(code: "00")), authorization: "token-qs1", queue: full)
        #expect(result == MakePaymentResult(httpStatus: 200, response: .ok("qs1")))
        #expect(h.acquirer.authorizationCount(pspTransactionId: "qs1") == 1)
    }

    @Test func concurrentDuplicatesAuthorizeOnceAndGetIdenticalBodies() async throws {
        let h = try PipelineHarness(latency: .milliseconds(50))
        try await h.register("p-dup")
        let request = h.request("p-dup", cardData: h.cardData(code: "00"))
        let results = await withTaskGroup(of: MakePaymentResult.self) { group in
            for _ in 0..<25 { group.addTask { await h.makePayment(request) } }
            return await group.reduce(into: [MakePaymentResult]()) { $0.append($1) }
        }
        #expect(Set(results.map { "\($0)" }).count == 1)
        #expect(results[0].response == .ok("p-dup"))
        #expect(h.acquirer.authorizationCount(pspTransactionId: "p-dup") == 1)
        #expect(try await h.store.payment("p-dup")?.authorizationsSent == 1)
    }

    @Test func cancelledPaymentIsAnswered85() async throws {
        let h = try PipelineHarness()
        try await h.register("p-c")
        _ = try await h.store.cancel("p-c", now: 2)
        let result = await h.makePayment(h.request("p-c", cardData: h.cardData(code: "00")))
        #expect(result == MakePaymentResult(httpStatus: 200, response: .fail("p-c", .responseReceivedTooLate)))
        #expect(h.acquirer.authorizationCount(pspTransactionId: "p-c") == 0)
    }

    @Test(arguments: [Confirmed.no, .timeout, .cancel])
    func unconfirmedIsFailed72WithoutDecrypting(confirmed: Confirmed) async throws {
        let h = try PipelineHarness()
        try await h.register("p-u")
        // Not a cryptogram at all: 72 rather than 92 proves it was never decrypted.
        let result = await h.makePayment(h.request("p-u", cardData: "not-a-cryptogram", confirmed: confirmed))
        #expect(result.response == .fail("p-u", ErrorMessage(errorId: 72, errorText: "Different texts")))
        // Called again with a cardData no cryptogram could be (the body's limit bounds it): the same answer.
        let again = await h.makePayment(h.request("p-u", cardData: String(repeating: "A", count: 5_000), confirmed: confirmed))
        #expect(again == result)
        #expect(h.acquirer.authorizationCount(pspTransactionId: "p-u") == 0)
    }

    @Test(arguments: [
        ("garbage", 92), ("", 92),
        ("too long", 92),  // no cryptogram is 5,000 characters: unable to decrypt, not an invalid request
        ("4000000000000003,3012,s", 87),   // fails Luhn
        ("4000000000000002,2610,s", 86),   // expired
        ("4000000000000002,3013,s", 92),   // month 13
        ("4000000000000002;3012;s", 92),
    ])
    func badCardDataIsRefusedBeforeAuthorization(plaintext: String, errorId: Int) async throws {
        let h = try PipelineHarness()
        try await h.register("p-b")
        let cardData = switch plaintext {
        case "garbage": String(repeating: "A", count: 344)
        case "too long": String(repeating: "A", count: 5_000)
        case "": ""
        default: h.cardData(plaintext)
        }
        let result = await h.makePayment(h.request("p-b", cardData: cardData))
        #expect(result.httpStatus == 200 && result.response.errorMessage?.errorId == errorId)
        #expect(h.acquirer.authorizationCount(pspTransactionId: "p-b") == 0)
        #expect(try await h.store.payment("p-b")?.authorizationsSent == 0)
    }

    @Test func orphanedAttemptIsReversedNotReauthorized() async throws {
        let h = try PipelineHarness()
        try await h.register("p-o")
        // A process that died after recording its attempt and sending the authorization.
        let dead = AttemptRecord(attemptId: "dead-attempt", instanceId: "dead-instance",
                                 maskedPAN: MaskedPAN(masked: "400000******0002")!, startedAt: 1)
        #expect(try await h.store.beginAttempt("p-o", attempt: dead, now: 1) == .begun)
        let result = await h.makePayment(h.request("p-o", cardData: h.cardData(code: "00")))
        #expect(result.response == .fail("p-o", .responseReceivedTooLate))
        #expect(h.acquirer.authorizationCount(pspTransactionId: "p-o") == 0)
        try await waitUntil { h.acquirer.reversalCount(pspTransactionId: "p-o") == 1 }
        let reversals = try await h.store.reversals(for: "p-o")
        #expect(reversals.map(\.request.attemptId) == ["dead-attempt"])
        #expect(try await h.store.payment("p-o")?.authorizationsSent == 1)
    }

    /// After a crash Vipps may never call again: the sweep reverses what was left in flight, by
    /// an earlier process or by this one (its outcome could not be recorded), once it is older
    /// than the acquirer's deadline; an attempt younger than that is left alone.
    @Test func sweepReversesOrphansWithoutACall() async throws {
        // Orphaned after 32 s: "young" stays young however slowly a busy test machine runs this.
        let h = try PipelineHarness(acquirerTimeout: .seconds(30))
        let now = wallClockMilliseconds()
        for (id, instance, startedAt) in [("s-dead", "dead-instance", Int64(1)), ("s-ours", "test-instance", now - 60_000),
                                          ("s-young", "other-instance", now)] {
            try await h.register(id)
            try await h.beginAttempt(id, instance: instance, startedAt: startedAt)
        }
        #expect(await h.pipeline.sweepOrphans() == 2)
        for id in ["s-dead", "s-ours"] {
            let record = try #require(try await h.store.payment(id))
            #expect(record.state == .completed && record.outcome?.error?.errorId == 85, "\(id) is answered 85")
            #expect(try await h.store.reversals(for: id).map(\.request.attemptId) == [id + "-attempt"])
            try await waitUntil { h.acquirer.reversalCount(pspTransactionId: id) == 1 }
        }
        #expect(try await h.store.payment("s-young")?.state == .processing, "an attempt that may be in flight is not reversed")
        #expect(await h.pipeline.sweepOrphans() == 0, "nothing is swept twice")
        #expect(h.acquirer.authorizationCount(pspTransactionId: "s-dead") == 0)
    }

    /// Processes on one store may have different acquirer timeouts (a rolling change of
    /// `--acquirer-timeout`): an attempt is orphaned when its own process gives up on it, not when
    /// this one would. A shorter timeout here neither sweeps nor, on a retry, reverses another
    /// process's attempt that may still be in flight there.
    @Test func anAttemptIsOrphanedWhenItsOwnProcessGivesUp() async throws {
        let h = try PipelineHarness(acquirerTimeout: .milliseconds(200))  // orphaned 2.2 s after the start here
        let now = wallClockMilliseconds(), started = now - 5_000
        // An attempt of an older build names no orphan time: its process's timeout is not known
        // here, so it is orphaned once Vipps's patience is over (14 s and the margin).
        let attempts: [(String, Int64, Int64?)] = [("t-long", started, started + 12_000), ("t-short", started, started + 2_200),
                                                   ("t-older-build", started, nil), ("t-older-build-over", now - 20_000, nil)]
        for (id, startedAt, orphanedAt) in attempts {
            try await h.register(id)
            try await h.beginAttempt(id, instance: "other-instance", startedAt: startedAt, orphanedAt: orphanedAt)
        }
        #expect(await h.pipeline.sweepOrphans() == 2, "the attempts due by their own process's timeout, or by Vipps's when they name none")
        #expect(try await h.store.payment("t-long")?.state == .processing)
        #expect(try await h.store.payment("t-older-build")?.state == .processing)
        #expect(try await h.store.payment("t-short")?.outcome?.error?.errorId == 85)
        #expect(try await h.store.payment("t-older-build-over")?.outcome?.error?.errorId == 85)
        // A retry waits for the outcome of the attempt still in flight elsewhere.
        let retry = Task { await h.makePayment(h.request("t-long", cardData: h.cardData(code: "00"))) }
        try await Task.sleep(for: .milliseconds(300))
        let approved = PaymentOutcome(status: .ok, error: nil, maskedPAN: PipelineHarness.masked, acquirerResponseCode: "00",
                                      authorizationCode: "123456", acquirerReference: "REF")
        _ = try await h.store.recordOutcome("t-long", outcome: approved, reversal: nil, attemptId: "t-long-attempt", now: wallClockMilliseconds())
        #expect(await retry.value == MakePaymentResult(httpStatus: 200, response: .ok("t-long")))
        #expect(try await h.store.reversals(for: "t-long").isEmpty)
        // This process's own attempts record when they are orphaned.
        try await h.register("t-own")
        _ = await h.makePayment(h.request("t-own", cardData: h.cardData(code: "00")))
        let own = try #require(try await h.store.payment("t-own")?.attempt)
        #expect(own.orphanedAt == own.startedAt + h.pipeline.orphanedAfterMilliseconds)
    }

    /// A retry waiting for another process's attempt, cancelled (a shutdown that does not wait),
    /// answers 91 and leaves the attempt to its process: it neither polls the store without pause
    /// until the attempt is orphaned nor reverses an attempt still in flight elsewhere.
    @Test func aCancelledWaitForAnAttemptElsewhereAnswers91() async throws {
        let h = try PipelineHarness(acquirerTimeout: .seconds(5))
        try await h.register("wc-1")
        try await h.beginAttempt("wc-1", instance: "other-instance", startedAt: wallClockMilliseconds())
        let retry = Task { await h.makePayment(h.request("wc-1", cardData: h.cardData(code: "00"))) }
        try await Task.sleep(for: .milliseconds(200))
        retry.cancel()
        let result = await retry.value
        #expect(result == MakePaymentResult(httpStatus: 500, response: .fail("wc-1", .internalError)))
        #expect(try await h.store.payment("wc-1")?.state == .processing)
        #expect(try await h.store.reversals(for: "wc-1").isEmpty)
    }

    /// A retry that finds another process's attempt still young waits for its outcome instead of
    /// reversing it (a reversal that overtook the authorization would find nothing to undo).
    @Test func aRetryWaitsForAnAttemptInFlightElsewhere() async throws {
        let h = try PipelineHarness(acquirerTimeout: .milliseconds(500))
        try await h.register("w-1")
        let attempt = try await h.beginAttempt("w-1", instance: "other-instance", startedAt: wallClockMilliseconds())
        let retry = Task { await h.makePayment(h.request("w-1", cardData: h.cardData(code: "00"))) }
        try await Task.sleep(for: .milliseconds(200))
        // The other process records its approval.
        let approved = PaymentOutcome(status: .ok, error: nil, maskedPAN: attempt.maskedPAN, acquirerResponseCode: "00",
                                      authorizationCode: "123456", acquirerReference: "REF")
        _ = try await h.store.recordOutcome("w-1", outcome: approved, reversal: nil, attemptId: attempt.attemptId, now: wallClockMilliseconds())
        #expect(await retry.value == MakePaymentResult(httpStatus: 200, response: .ok("w-1")))
        #expect(try await h.store.reversals(for: "w-1").isEmpty)
        #expect(h.acquirer.authorizationCount(pspTransactionId: "w-1") == 0)
    }

    /// ... and reverses it once it has outlived the acquirer's deadline without an outcome.
    @Test func aRetryReversesAnAttemptThatOutlivesTheDeadline() async throws {
        let h = try PipelineHarness(acquirerTimeout: .milliseconds(200))
        try await h.register("w-2")
        let startedAt = wallClockMilliseconds()
        let attempt = try await h.beginAttempt("w-2", instance: "other-instance", startedAt: startedAt,
                                               orphanedAt: startedAt + h.pipeline.orphanedAfterMilliseconds)
        let result = await h.makePayment(h.request("w-2", cardData: h.cardData(code: "00")))
        #expect(result.response == .fail("w-2", .responseReceivedTooLate))
        #expect(wallClockMilliseconds() >= attempt.startedAt + h.pipeline.orphanedAfterMilliseconds, "not before the deadline and its margin")
        #expect(try await h.store.payment("w-2")?.outcome?.error?.errorId == 85, "the 85 is recorded")
        try await waitUntil { h.acquirer.reversalCount(pspTransactionId: "w-2") == 1 }
        #expect(h.acquirer.authorizationCount(pspTransactionId: "w-2") == 0)
    }

    /// The poller's list of due reversals goes stale while it sends the first: a reversal that
    /// `sendSoon` sent and had acknowledged meanwhile is not sent a second time.
    @Test func aReversalAcknowledgedMeanwhileIsNotSentAgain() async throws {
        let h = try PipelineHarness(latency: .milliseconds(300))
        try await h.reversalDue("r-1")
        let second = try await h.reversalDue("r-2")
        h.reversals.sendSoon(second)  // r-2: sent now, acknowledged after 300 ms
        try await Task.sleep(for: .milliseconds(30))
        await h.reversals.sendDue(limit: 10)  // reads [r-1, r-2]: r-2 is being sent, or is acknowledged by its claim
        try await waitUntil { try await h.store.reversals(for: "r-2").first?.state == .acknowledged }
        #expect(h.acquirer.reversalCount(pspTransactionId: "r-1") == 1)
        #expect(h.acquirer.reversalCount(pspTransactionId: "r-2") == 1, "r-2 must not go out twice")
        #expect(try await h.store.reversals(for: "r-2").first?.tries == 1)
    }

    /// A pass sends its due reversals at once, up to `concurrentSends`: after an outage the
    /// backlog drains a round trip at a time for many, not for each.
    @Test func aPassSendsItsDueReversalsAtOnce() async throws {
        let h = try PipelineHarness()
        let ids = (1...5).map { "rc-\($0)" }
        for id in ids { _ = try await h.reversalDue(id) }
        let acquirer = ReversalAnswers([:])
        let gate = Gate()
        acquirer.before = { await gate.wait() }
        var configuration = ReversalService.Configuration()
        configuration.concurrentSends = 4
        let service = ReversalService(store: h.store, acquirer: acquirer, configuration: configuration)
        let pass = Task { await service.sendDue(limit: 10) }
        // Four out and unanswered together; the fifth waits for a free place.
        try await waitUntil { acquirer.sends.withLock { $0.count } == 4 }
        try await Task.sleep(for: .milliseconds(100))
        #expect(acquirer.sends.withLock { $0.count } == 4)
        gate.open()
        #expect(await pass.value == 5)
        for id in ids { #expect(try await h.store.reversals(for: id).first?.state == .acknowledged, "\(id)") }
        #expect(acquirer.sends.withLock { $0.values.allSatisfy { $0 == 1 } })
    }

    /// A backlog larger than one read of the store (100) is sent in one pass, and a pass that
    /// found all it may send is followed by the next without the poll interval's wait: after an
    /// outage the backlog drains as fast as the acquirer answers.
    @Test func aBacklogIsSentWithoutWaitingForThePollInterval() async throws {
        let h = try PipelineHarness()
        let ids = (1...130).map { "bl-\($0)" }
        for id in ids { _ = try await h.reversalDue(id) }
        let acquirer = ReversalAnswers([:])
        var configuration = ReversalService.Configuration()
        configuration.pollInterval = .seconds(600)
        configuration.sendsPerPass = 40
        let service = ReversalService(store: h.store, acquirer: acquirer, configuration: configuration)
        #expect(await service.sendDue(limit: 110) == 110, "past the first read of 100")
        #expect(acquirer.sends.withLock { $0.count } == 110)
        // 20 left, then a pass of 40 that finds them: each full pass (none here) would be
        // followed at once; after this one the loop waits out the poll interval.
        let more = (131...200).map { "bl-\($0)" }
        for id in more { _ = try await h.reversalDue(id) }
        let loop = Task { await service.run() }
        defer { loop.cancel() }
        // 90 due: passes of 40, 40 and 10, back to back.
        try await waitUntil(timeout: .seconds(20)) { acquirer.sends.withLock { $0.count } == 200 }
        #expect(acquirer.sends.withLock { $0.values.allSatisfy { $0 == 1 } }, "none sent twice")
    }

    /// At shutdown the sends `sendSoon` started are waited for, so the store closes only after it
    /// has recorded their acknowledgements (else the restart sends them again as first 0400s).
    @Test func shutdownWaitsForReversalsUnderWay() async throws {
        let h = try PipelineHarness(latency: .milliseconds(300))
        let reversals = [try await h.reversalDue("sd-1"), try await h.reversalDue("sd-2")]
        reversals.forEach(h.reversals.sendSoon)
        await h.reversals.finishSendingSoon()
        for id in ["sd-1", "sd-2"] {
            #expect(try await h.store.reversals(for: id).first?.state == .acknowledged, "recorded before finishSendingSoon returned")
            #expect(h.acquirer.reversalCount(pspTransactionId: id) == 1)
        }
    }

    /// A claim whose commit took most of its time leaves the send only what is left of it (the
    /// claim lasts for the timeout and 5 s to record the answer): past it another sender may take
    /// the reversal. With too little left, nothing is sent. (The send had the whole timeout.)
    @Test func aSlowClaimLeavesTheSendOnlyWhatIsLeftOfIt() async throws {
        let h = try PipelineHarness()
        let due = try await h.reversalDue("sc-1")
        var configuration = ReversalService.Configuration()
        configuration.timeout = .seconds(1)
        let slow = ReversalService(store: SlowClaims(h.store, claimStall: .milliseconds(700)), acquirer: h.acquirer, configuration: configuration)
        slow.sendSoon(due)
        await slow.finishSendingSoon()
        #expect(h.acquirer.reversalCount(pspTransactionId: "sc-1") == 0, "sent with under half a second of its claim left")
        let prompt = ReversalService(store: SlowClaims(h.store, claimStall: .milliseconds(100)), acquirer: h.acquirer, configuration: configuration)
        try await Task.sleep(for: .seconds(6))  // the first claim runs out (timeout + 5 s)
        prompt.sendSoon(due)
        await prompt.finishSendingSoon()
        #expect(h.acquirer.reversalCount(pspTransactionId: "sc-1") == 1)
        #expect(try await h.store.reversals(for: "sc-1").first?.state == .acknowledged)
    }

    /// A late approval whose reopening the store refuses (a lock held past the timeout, a full
    /// disk) is tried again until it is recorded: nothing else would hear of the approval again,
    /// and it holds the cardholder's money.
    @Test func aLateApprovalTheStoreRefusesIsTriedAgain() async throws {
        let h = try PipelineHarness()
        let settled = try await h.reversalDue("lf-1")
        let acquirer = ReversalAnswers(["lf-1": .noOriginal])
        var configuration = ReversalService.Configuration()
        configuration.noOriginalSettleMilliseconds = 0  // the first 25 is final
        configuration.firstRetryMilliseconds = 10
        await ReversalService(store: h.store, acquirer: acquirer, configuration: configuration).sendDue(limit: 10)
        #expect(try await h.store.reversals(for: "lf-1").first?.state == .acknowledged)
        let store = RefusesLateApprovals(h.store, times: 2)
        let service = ReversalService(store: store, acquirer: acquirer, configuration: configuration)
        acquirer.answers.withLock { $0["lf-1"] = .reversed }
        await service.reopen(pspTransactionId: "lf-1", attemptReference: settled.attemptReference)
        #expect(store.refused.load(ordering: .relaxed) == 2)
        try await waitUntil(timeout: .seconds(10)) { acquirer.sends.withLock { $0["lf-1"] } == 2 }
        await service.finishSendingSoon()
        #expect(try await h.store.reversals(for: "lf-1").first?.state == .acknowledged)
    }

    /// A reversal sent without a record (its outcome's write failed) is waited for at shutdown,
    /// with one more try then instead of its back-off: after a restart, with the store still
    /// refusing writes, the attempt is another process's and nothing would send it.
    @Test func shutdownGivesAnUnrecordedReversalOneMoreTry() async throws {
        let h = try PipelineHarness()
        let acquirer = SlowFailingReverser()
        let service = ReversalService(store: h.store, acquirer: acquirer)
        service.sendUnrecorded(ReversalRequest(reversalId: "ur-1-R", pspTransactionId: "ur-1", attemptId: "a1", attemptReference: "a1",
                                               amount: 1000, currency: "NOK", merchantSerialNumber: "123456"))
        await service.finishSendingSoon()
        let finished = acquirer.finished.load(ordering: .relaxed)
        #expect(finished >= 1, "shutdown did not wait for the reversal sent without a record")
        // Its five tries with back-off (1, 2, 4, 8 s) would take 15 s: at shutdown, one more at most.
        #expect(finished <= 2)
    }

    /// A reversal sent without a record (its outcome's write failed) that the store records
    /// meanwhile (the sweep, once writes work again) is not sent beside it by this process: the
    /// recorded send waits for the unrecorded one (before, a second first 0400 under another STAN
    /// went out while the first was still out).
    @Test func anUnrecordedReversalIsNotSentTwiceAtOnce() async throws {
        let h = try PipelineHarness()
        let reversal = try await h.reversalDue("us-1")
        let acquirer = ReversalAnswers(["us-1": .reversed])
        let gate = Gate()
        acquirer.before = { await gate.wait() }
        let service = ReversalService(store: h.store, acquirer: acquirer)
        service.sendUnrecorded(reversal)
        try await waitUntil { acquirer.sends.withLock { $0["us-1"] } == 1 }  // the unrecorded 0400 is out
        _ = await service.sendDue(limit: 10)  // the recorded reversal, due: waits for the unrecorded send
        #expect(acquirer.sends.withLock { $0["us-1"] } == 1, "the recorded reversal went out beside the unrecorded one")
        gate.open()
        await service.finishSendingSoon()
    }

    /// Reversals held by unrecorded sends still under way (their outcomes' writes failed; the
    /// sweep recorded them since) stay due and come first in every read of the store: a pass
    /// passes over them and sends those due behind them (before, it counted them as sent, so a
    /// dozen held ones stopped every pass while the rest waited).
    @Test func aPassSendsTheReversalsDueBehindOnesHeldByUnrecordedSends() async throws {
        let h = try PipelineHarness()
        let acquirer = ReversalAnswers([:])
        let service = ReversalService(store: h.store, acquirer: acquirer)
        let heldIds = (1...12).map { "hd-\($0)" }
        for id in heldIds {
            acquirer.held.withLock { _ = $0.insert(id) }
            service.sendUnrecorded(try await h.reversalDue(id))
        }
        try await waitUntil { acquirer.sends.withLock { $0.count } == heldIds.count }
        try await Task.sleep(for: .milliseconds(5))  // due after the held ones
        let freeIds = (1...3).map { "fr-\($0)" }
        for id in freeIds { _ = try await h.reversalDue(id) }
        #expect(await service.sendDue(limit: 10) == 3)
        for id in freeIds { #expect(acquirer.sends.withLock { $0[id] } == 1, "\(id)") }
        for id in heldIds { #expect(acquirer.sends.withLock { $0[id] } == 1, "\(id) sent beside its unrecorded send") }
        acquirer.heldGate.open()
        await service.finishSendingSoon()
    }

    /// A reversal sent here without a record (answered 25) and then approved late starts again as
    /// new, as any reversal approved late does: a first send (0400), not a repeat of the send the
    /// host answered 25 (which a host keeping its answers would replay).
    @Test func aReversalApprovedLateAfterAnUnrecordedSendStartsAgainAsNew() async throws {
        let h = try PipelineHarness()
        let reversal = try await h.reversalDue("ul-1")
        let acquirer = ReversalAnswers(["ul-1": .noOriginal])
        var configuration = ReversalService.Configuration()
        configuration.noOriginalSettleMilliseconds = 0  // the first 25 is final
        let service = ReversalService(store: h.store, acquirer: acquirer, configuration: configuration)
        service.sendUnrecorded(reversal)
        try await waitUntil { acquirer.sends.withLock { $0["ul-1"] } == 1 }
        let at = wallClockMilliseconds()
        #expect(try await h.store.lateApproval(ofReversal: reversal.reversalId, now: at, claimsEndBy: at) == .reopened)
        acquirer.answers.withLock { $0["ul-1"] = .reversed }
        try await waitUntil {
            _ = await service.sendDue(limit: 10)
            return acquirer.sends.withLock { $0["ul-1"] } == 2
        }
        await service.finishSendingSoon()
        #expect(acquirer.sendCounts.withLock { $0["ul-1"] } == [1, 1], "the reversal approved late went out as a repeat")
    }

    /// Once this process has sent a reversal without a record, the recorded one's first send is a
    /// repeat (an 0401): the host may hold the unrecorded 0400, and a second 0400 for the same
    /// authorization can be refused as a duplicate (94).
    @Test func aRecordedReversalSentBeforeWithoutARecordGoesOutAsARepeat() async throws {
        let h = try PipelineHarness()
        let reversal = try await h.reversalDue("ux-1")
        let acquirer = ReversalAnswers(["ux-1": .reversed])
        let service = ReversalService(store: h.store, acquirer: acquirer)
        service.sendUnrecorded(reversal)
        // The recorded one, sent once the unrecorded send (acknowledged) no longer holds its id.
        try await waitUntil {
            _ = await service.sendDue(limit: 10)
            return acquirer.sends.withLock { $0["ux-1"] } == 2
        }
        await service.finishSendingSoon()
        #expect(acquirer.sendCounts.withLock { $0["ux-1"] } == [1, 2], "the recorded send after an unrecorded one was not a repeat")
        #expect(try await h.store.reversals(for: "ux-1").first?.state == .acknowledged)
    }

    /// An unrecorded reversal given up on (five failures) and found again by the sweep or a
    /// retry, the store still refusing writes: the new round repeats the first send (0401), not a
    /// second 0400 under a new STAN for the same authorization.
    @Test func anUnrecordedReversalSentAgainGoesOutAsARepeat() async throws {
        let h = try PipelineHarness()
        let reversal = try await h.reversalDue("ua-1")
        let acquirer = ReversalAnswers([:])
        acquirer.failing.withLock { $0.insert("ua-1") }
        var configuration = ReversalService.Configuration()
        configuration.firstRetryMilliseconds = 1
        let service = ReversalService(store: h.store, acquirer: acquirer, configuration: configuration)
        // As the sweep finds the orphan again and again: ignored while a round is under way.
        try await waitUntil(timeout: .seconds(10)) {
            service.sendUnrecorded(reversal)
            return acquirer.sends.withLock { $0["ua-1"] ?? 0 } > 5
        }
        await service.finishSendingSoon()
        let counts = acquirer.sendCounts.withLock { $0["ua-1"] ?? [] }
        #expect(counts.first == 1)
        #expect(counts.dropFirst().allSatisfy { $0 >= 2 }, "a later round sent a first 0400 again: \(counts)")
    }

    /// A refusal decided on a stale `pending` (the front's memory, while another process began an
    /// attempt) must not close that attempt without reversing it: its outcome is the answer.
    @Test func aRefusalOnAStalePendingDoesNotCloseAnAttemptInFlight() async throws {
        let h = try PipelineHarness(acquirerTimeout: .milliseconds(200))
        try await h.register("st-1")
        let stale = try #require(try await h.store.payment("st-1"))
        let theirs = try await h.beginAttempt("st-1", instance: "other-instance", startedAt: wallClockMilliseconds())
        // Refused before any authorization here (confirmed NO), on the stale record.
        let job = MakePaymentJob(request: h.request("st-1", cardData: h.cardData(code: "00"), confirmed: .no), payment: stale)
        let result = await h.pipeline.work(job)
        #expect(result.response == .fail("st-1", .responseReceivedTooLate), "the other attempt's outcome (unknown: 85), not 72")
        let record = try #require(try await h.store.payment("st-1"))
        #expect(record.state == .completed && record.outcome?.error?.errorId == 85)
        #expect(try await h.store.reversals(for: "st-1").map(\.request.attemptId) == [theirs.attemptId], "their attempt is reversed")
    }

    /// The same, when the other process's approval is recorded before the refusal's read-back:
    /// Vipps is answered the approval that stands, not a failure (which would hold the money
    /// of a payment Vipps thinks failed, with nothing to reverse it).
    @Test func aRefusalOnAStalePendingAnswersAnOutcomeRecordedElsewhere() async throws {
        let h = try PipelineHarness()
        try await h.register("st-2")
        let stale = try #require(try await h.store.payment("st-2"))
        let theirs = try await h.beginAttempt("st-2", instance: "other-instance", startedAt: wallClockMilliseconds())
        let approved = PaymentOutcome(status: .ok, error: nil, maskedPAN: PipelineHarness.masked, acquirerResponseCode: "00", authorizationCode: "A1")
        // Their approval commits just after the refusal found the payment still processing.
        let racing = FaultyStore(h.store, afterRefusal: { store in
            _ = try await store.recordOutcome("st-2", outcome: approved, reversal: nil, attemptId: theirs.attemptId, now: wallClockMilliseconds())
        })
        let pipeline = h.pipeline(over: racing, acquirerTimeout: .seconds(2), instanceId: "this-instance")
        let job = MakePaymentJob(request: h.request("st-2", cardData: h.cardData(code: "00"), confirmed: .no), payment: stale)
        #expect(await pipeline.work(job).response == .ok("st-2"))
        #expect(try await h.store.payment("st-2")?.outcome == approved)
        #expect(try await h.store.reversals(for: "st-2").isEmpty)
    }

    /// An orphan of another process whose 85 cannot be recorded is not reversed unrecorded: that
    /// process may be alive with its approval's commit stalled, and would then answer OK for a
    /// payment reversed behind its back. The sweep reverses it once the store takes writes.
    @Test func anotherProcesssOrphanIsNotReversedUnrecorded() async throws {
        let h = try PipelineHarness()
        try await h.register("or-1")
        _ = try await h.beginAttempt("or-1", instance: "other-instance", startedAt: wallClockMilliseconds() - 60_000)
        let failing = h.pipeline(over: FaultyStore(h.store, outcomesFail: true), acquirerTimeout: .seconds(2), instanceId: "this-instance")
        #expect(await failing.sweepOrphans() == 0)
        try await Task.sleep(for: .milliseconds(300))
        #expect(h.acquirer.reversalCount(pspTransactionId: "or-1") == 0)
        #expect(try await h.store.payment("or-1")?.state == .processing)
        // Once the store takes writes, the sweep records the 85 and the reversal goes out once.
        let working = h.pipeline(over: h.store, acquirerTimeout: .seconds(2), instanceId: "this-instance")
        #expect(await working.sweepOrphans() == 1)
        #expect(try await h.store.payment("or-1")?.outcome?.error?.errorId == 85)
        try await waitUntil { h.acquirer.reversalCount(pspTransactionId: "or-1") == 1 }
    }

    /// Time spent queued comes off the acquirer's deadline; with too little of Vipps's patience
    /// left, nothing is sent.
    @Test func timeInTheQueueComesOffTheAcquirersDeadline() async throws {
        let h = try PipelineHarness(acquirerTimeout: .seconds(10), latency: .seconds(5))
        try await h.register("late-1")
        try await h.register("late-2")
        let record = try #require(try await h.store.payment("late-1"))
        // Taken by the front 20 s ago: Vipps has given up. Not sent, answered 85, no attempt.
        let stale = MakePaymentJob(request: h.request("late-1", cardData: h.cardData(code: "00")), payment: record,
                                   receivedAt: .now - .seconds(20))
        #expect(await h.pipeline.work(stale).response == .fail("late-1", .responseReceivedTooLate))
        #expect(h.acquirer.authorizationCount(pspTransactionId: "late-1") == 0)
        #expect(try await h.store.payment("late-1")?.authorizationsSent == 0)
        // Taken 12 s ago: 2 s of the 14 left (a second of it to spare for a slow attempt commit
        // before too little is left to send), so the 5 s acquirer is cut off at 2 s, not 10.
        // (With the queue's time not taken off, the 5 s approval would come back and be recorded.)
        let record2 = try #require(try await h.store.payment("late-2"))
        let late = MakePaymentJob(request: h.request("late-2", cardData: h.cardData(code: "00")), payment: record2,
                                  receivedAt: .now - .seconds(12))
        #expect(await h.pipeline.work(late).response == .fail("late-2", .responseReceivedTooLate))
        #expect(try await h.store.payment("late-2")?.outcome?.acquirerResponseCode == nil, "cut off at 2 s, not approved late")
        #expect(try await h.store.payment("late-2")?.authorizationsSent == 1)
        #expect(try await h.store.reversals(for: "late-2").count == 1, "an authorization cut off by the deadline is reversed")
    }

    /// An approval whose write loses to another process's sweep (it took the attempt for
    /// orphaned, and recorded 85 with a reversal) answers that 85, and marks the reversal as of an
    /// approval: it must not settle on "no original" while the approval stands. (Nothing did.) A
    /// refusal that loses the same way leaves the reversal as it is. So too when this process's
    /// write fails outright and a read finds the sweep's outcome (it answered that and left the
    /// reversal as it was).
    @Test(arguments: [("00", true, false), ("51", false, false), ("00", true, true), ("51", false, true)])
    func anApprovalThatLosesToAnotherProcesssSweepReopensItsReversal(code: String, reopened: Bool, writeFails: Bool) async throws {
        let h = try PipelineHarness()
        let id = "lost-" + code + (writeFails ? "-f" : "")
        try await h.register(id)
        // This process: its outcome's write waits (a stalled disk, a lock held elsewhere) until the sweep is done.
        let sweepDone = Gate()
        let slow = h.pipeline(over: GatedOutcomes(h.store, gate: sweepDone, failing: writeFails), acquirerTimeout: .seconds(2), instanceId: "slow")
        let record = try #require(try await h.store.payment(id))
        let answer = Task { await slow.work(MakePaymentJob(request: h.request(id, cardData: h.cardData(code: code)), payment: record)) }
        try await waitUntil { try await h.store.payment(id)?.state == .processing }
        // Another process, whose clock is past the attempt's orphan time, sweeps it first (and sends nothing).
        let other = PipelineHarness.pipeline(store: h.store, acquirer: h.acquirer, acquirerTimeout: .seconds(2), instanceId: "other",
                                             now: { wallClockMilliseconds() + 600_000 })
        try await waitUntil { await other.sweepOrphans() == 1 }
        sweepDone.open()
        #expect(await answer.value.response == .fail(id, .responseReceivedTooLate))
        if reopened {
            try await waitUntil { try await h.store.reversals(for: id).first?.lateApproved == true }
        } else {
            try await Task.sleep(for: .milliseconds(300))
            #expect(try await h.store.reversals(for: id).first?.lateApproved == false, "a refusal's reversal reopened")
        }
    }

    /// The front's `receivedAt` (the request's head, from the HTTP handler) is what the deadline
    /// counts from, not the moment the job is made: a request whose body took 13.5 s to come is
    /// not sent with Vipps's 14 s nearly spent.
    @Test func theDeadlineCountsFromWhenTheRequestCameIn() async throws {
        let h = try PipelineHarness(acquirerTimeout: .seconds(10))
        try await h.register("head-1")
        try await h.register("head-2")
        let slow = await h.pipeline.handle(body: h.request("head-1", cardData: h.cardData(code: "00")), authorization: "token-head-1",
                                           queue: nil, receivedAt: .now - .milliseconds(13_500))
        #expect(slow.response == .fail("head-1", .responseReceivedTooLate))
        #expect(h.acquirer.authorizationCount(pspTransactionId: "head-1") == 0)
        // The same call, come in just now, is authorized.
        let prompt = await h.pipeline.handle(body: h.request("head-2", cardData: h.cardData(code: "00")), authorization: "token-head-2",
                                             queue: nil, receivedAt: .now)
        #expect(prompt.response == .ok("head-2"))
    }

    /// An attempt whose commit stalled past Vipps's patience is closed unsent (no floor on the
    /// deadline), and one with little left is cut off there and reversed: in neither case does an
    /// approval come back after Vipps has given up and stand unreversed.
    @Test func aStalledAttemptCommitDoesNotStretchTheDeadline() async throws {
        let h = try PipelineHarness(acquirerTimeout: .seconds(10), latency: .seconds(3))
        let stalling = FaultyStore(h.store, stall: .seconds(2))
        let pipeline = h.pipeline(over: stalling, acquirerTimeout: .seconds(10), instanceId: "stall")
        for id in ["stall-1", "stall-2"] { try await h.register(id) }
        // 1.5 s of the 14 left when taken (enough to begin), none after the 2 s commit.
        let job1 = MakePaymentJob(request: h.request("stall-1", cardData: h.cardData(code: "00")),
                                  payment: try #require(try await h.store.payment("stall-1")), receivedAt: .now - .milliseconds(12_500))
        #expect(await pipeline.work(job1).response == .fail("stall-1", .responseReceivedTooLate))
        #expect(h.acquirer.authorizationCount(pspTransactionId: "stall-1") == 0, "not sent once the time was gone")
        #expect(try await h.store.payment("stall-1")?.state == .completed)
        #expect(try await h.store.reversals(for: "stall-1").isEmpty, "never sent, nothing to reverse")
        // 4 s left when taken, 2 s after the commit: the 3 s approval is cut off at 2 s, with no
        // answer recorded (with the old deadline of at least 1 s after the commit, a commit that
        // stalled longer let an approval come back after 14 s). With under 1 s left after the
        // commit it would not be sent at all.
        let job2 = MakePaymentJob(request: h.request("stall-2", cardData: h.cardData(code: "00")),
                                  payment: try #require(try await h.store.payment("stall-2")), receivedAt: .now - .seconds(10))
        #expect(await pipeline.work(job2).response == .fail("stall-2", .responseReceivedTooLate))
        #expect(try await h.store.payment("stall-2")?.outcome?.acquirerResponseCode == nil, "cut off, not a late approval")
        #expect(try await h.store.reversals(for: "stall-2").count == 1)
    }

    /// The acquirer's deadline counts from the attempt's start, not from the send: a commit that
    /// stalls leaves less of it (or too little to send at all), so the authorization is over
    /// before another process could take the attempt for orphaned (the timeout plus 2 s after its
    /// start). Counted from the send, a 2 s stall let it run to 2 s + the whole timeout: the old
    /// code sent as-1 with 2.5 s to go, and let as-2's 3 s approval come back at ~5 s and stand.
    @Test func aStalledAttemptCommitComesOffTheAcquirersTimeout() async throws {
        let h = try PipelineHarness(latency: .seconds(3))
        let stalling = FaultyStore(h.store, stall: .seconds(2))
        for id in ["as-1", "as-2"] { try await h.register(id) }
        // 2.5 s timeout, 2 s stall: 0.5 s left, under the 1 s it takes to send. Closed unsent.
        let short = h.pipeline(over: stalling, acquirerTimeout: .milliseconds(2_500), instanceId: "attempt-stall")
        #expect(await short.handle(body: h.request("as-1", cardData: h.cardData(code: "00")), authorization: "token-as-1", queue: nil)
                    .response == .fail("as-1", .responseReceivedTooLate))
        #expect(h.acquirer.authorizationCount(pspTransactionId: "as-1") == 0)
        #expect(try await h.store.reversals(for: "as-1").isEmpty, "never sent, nothing to reverse")
        // 4 s timeout, 2 s stall: sent with the 2 s left, so the 3 s approval is cut off and reversed.
        let longer = h.pipeline(over: stalling, acquirerTimeout: .seconds(4), instanceId: "attempt-stall")
        #expect(await longer.handle(body: h.request("as-2", cardData: h.cardData(code: "00")), authorization: "token-as-2", queue: nil)
                    .response == .fail("as-2", .responseReceivedTooLate))
        #expect(h.acquirer.authorizationCount(pspTransactionId: "as-2") == 1)
        #expect(try await h.store.payment("as-2")?.outcome?.acquirerResponseCode == nil, "cut off, not a late approval")
        #expect(try await h.store.reversals(for: "as-2").count == 1)
    }

    /// An orphan found on a stale read (the sweep's batch, or a retry's front), whose approval this
    /// process committed meanwhile: when its 85 cannot be recorded, the approval that stands is
    /// the answer and nothing is reversed. (The reversal went out unrecorded: an OK answered to
    /// Vipps, the money given back behind it.) With the store's reads failing too, nothing shows
    /// the approval, but nothing shows the attempt unanswered either: it is answered 91 and left to
    /// the sweep, not reversed unrecorded behind an OK already answered (it was).
    @Test(arguments: [false, true])
    func anOrphanReadStaleIsNotReversedOnceItsApprovalStands(readsFail: Bool) async throws {
        let h = try PipelineHarness()
        try await h.register("sa-1")
        let attempt = try await h.beginAttempt("sa-1", instance: "this-instance", startedAt: wallClockMilliseconds() - 60_000)
        let stale = try #require(try await h.store.payment("sa-1"))
        let approved = PaymentOutcome(status: .ok, error: nil, maskedPAN: PipelineHarness.masked, acquirerResponseCode: "00", authorizationCode: "A1")
        _ = try await h.store.recordOutcome("sa-1", outcome: approved, reversal: nil, attemptId: attempt.attemptId, now: wallClockMilliseconds())
        let failing = h.pipeline(over: FaultyStore(h.store, outcomesFail: true, readsFail: readsFail), acquirerTimeout: .seconds(2), instanceId: "this-instance")
        let result = await failing.work(MakePaymentJob(request: h.request("sa-1", cardData: h.cardData(code: "00")), payment: stale))
        #expect(result == (readsFail ? MakePaymentResult(httpStatus: 500, response: .fail("sa-1", .internalError))
                                     : MakePaymentResult(httpStatus: 200, response: .ok("sa-1"))))
        try await Task.sleep(for: .milliseconds(300))
        #expect(h.acquirer.reversalCount(pspTransactionId: "sa-1") == 0)
        #expect(try await h.store.payment("sa-1")?.outcome == approved)
    }

    /// An approval the store can neither record nor read back is still reversed: this call sent
    /// it, and nothing else can have answered it.
    @Test func anApprovalSentHereIsReversedWhenTheStoreCanNeitherWriteNorRead() async throws {
        let h = try PipelineHarness()
        try await h.register("full-2")
        let pipeline = h.pipeline(over: FaultyStore(h.store, outcomesFail: true, readsFail: true), acquirerTimeout: .seconds(2), instanceId: "full-disk")
        let job = MakePaymentJob(request: h.request("full-2", cardData: h.cardData(code: "00")),
                                 payment: try #require(try await h.store.payment("full-2")))
        #expect(await pipeline.work(job).httpStatus == 500)
        #expect(h.acquirer.authorizationCount(pspTransactionId: "full-2") == 1)
        try await waitUntil { h.acquirer.reversalCount(pspTransactionId: "full-2") == 1 }
    }

    /// An approval whose write is held past Vipps's patience (a commit stalled by a disk or another
    /// process's lock) is recorded 85 and reversed, not recorded OK and answered to no one. (The
    /// lateness was checked only before the write: OK was recorded and answered 15 s late.)
    @Test func anApprovalWrittenTooLateIsRecorded85AndReversed() async throws {
        let h = try PipelineHarness()
        try await h.register("lw-1")
        let pipeline = h.pipeline(over: FaultyStore(h.store, outcomeStall: .seconds(3)), acquirerTimeout: .seconds(10), instanceId: "late-write")
        let job = MakePaymentJob(request: h.request("lw-1", cardData: h.cardData(code: "00")),
                                 payment: try #require(try await h.store.payment("lw-1")), receivedAt: .now - .seconds(12))
        #expect(await pipeline.work(job).response == .fail("lw-1", .responseReceivedTooLate))
        #expect(h.acquirer.authorizationCount(pspTransactionId: "lw-1") == 1)
        try await waitUntil { h.acquirer.reversalCount(pspTransactionId: "lw-1") == 1 }
        let outcome = try #require(try await h.store.payment("lw-1")?.outcome)
        #expect(outcome.status == .fail && outcome.error?.errorId == 85 && outcome.acquirerResponseCode == "00" && outcome.authorizationCode == nil)
        #expect(try await h.store.reversals(for: "lw-1").count == 1)
    }

    /// An approval whose outcome cannot be recorded is answered 91 and reversed at once, straight
    /// to the acquirer: Vipps was told it failed, and the store may take no writes for hours.
    @Test func anApprovalThatCannotBeRecordedIsReversedAtOnce() async throws {
        let h = try PipelineHarness()
        let failing = FaultyStore(h.store, outcomesFail: true)
        let pipeline = h.pipeline(over: failing, acquirerTimeout: .seconds(2), instanceId: "full-disk")
        try await h.register("full-1")
        let job = MakePaymentJob(request: h.request("full-1", cardData: h.cardData(code: "00")),
                                 payment: try #require(try await h.store.payment("full-1")))
        let result = await pipeline.work(job)
        #expect(result.httpStatus == 500 && result.response == .fail("full-1", .internalError))
        #expect(h.acquirer.authorizationCount(pspTransactionId: "full-1") == 1)
        try await waitUntil { h.acquirer.reversalCount(pspTransactionId: "full-1") == 1 }
        #expect(try await h.store.payment("full-1")?.state == .processing, "the sweep records it once the store takes writes")
        // While the store still refuses, the sweep finds the orphan again and again: it is
        // reversed once from here, not every five seconds.
        let orphan = try #require(try await h.store.payment("full-1"))
        let again = h.pipeline(over: failing, acquirerTimeout: .milliseconds(100), instanceId: "full-disk",
                               now: { wallClockMilliseconds() + 60_000 })  // the attempt looks orphaned
        for _ in 0..<3 { _ = await again.work(MakePaymentJob(request: h.request("full-1", cardData: h.cardData(code: "00")), payment: orphan)) }
        try await Task.sleep(for: .milliseconds(200))
        #expect(h.acquirer.reversalCount(pspTransactionId: "full-1") == 1)
    }

    /// An adapter that knows nothing went out (its send deadline passed, say) gets 85 recorded
    /// with no reversal: there is nothing to undo, and a 0400 for nothing would be repeated on
    /// "no such authorization" for 30 s. Any other failure stays an unknown outcome, reversed.
    @Test func anAuthorizationNeverSentIsAnswered85WithoutAReversal() async throws {
        let h = try PipelineHarness()
        for (id, neverSent) in [("ns-1", true), ("ns-2", false)] {
            try await h.register(id)
            let acquirer = FailingAcquirer(AcquirerUnavailable("refused before sending", neverSent: neverSent))
            let pipeline = PipelineHarness.pipeline(store: h.store, acquirer: acquirer)
            #expect(await h.makePayment(h.request(id, cardData: h.cardData(code: "00")), queue: nil, through: pipeline).response == .fail(id, .responseReceivedTooLate))
            let record = try #require(try await h.store.payment(id))
            #expect(record.state == .completed && record.outcome?.error?.errorId == 85)
            #expect(try await h.store.reversals(for: id).count == (neverSent ? 0 : 1), "\(id)")
        }
    }

    /// An approval that names another amount than the payment's (a partial approval sent without
    /// its code 10) is refused and reversed as a 10 is; one naming the payment's amount stands.
    @Test func anApprovalOfAnotherAmountIsReversed() async throws {
        let h = try PipelineHarness()
        // A refusal naming another amount (field 4 zeroed) holds nothing: it stands, unreversed.
        for (id, code, amount, expected, reversals) in [("am-1", "00", 500, APIError?.some(.refusedByIssuer), 1), ("am-2", "00", 1000, nil, 0),
                                                        ("am-3", "51", 0, .notSufficientFunds, 0)] {
            try await h.register(id, amount: 1000)
            let pipeline = PipelineHarness.pipeline(store: h.store, acquirer: ApprovesAmount(amount, code: code))
            let result = await h.makePayment(h.request(id, cardData: h.cardData(code: "00")), queue: nil, through: pipeline)
            #expect(result.response == (expected.map { .fail(id, $0) } ?? .ok(id)), "\(id)")
            #expect(try await h.store.reversals(for: id).count == reversals, "\(id)")
        }
    }

    /// The clear card goes with the send: once the acquirer has answered, the payment no longer
    /// holds it while its outcome is written (it did, until the answer: up to `maxAuthorizing`
    /// clear PANs alive behind a stalled store).
    @Test func theCardIsNotHeldThroughTheOutcomesWrite() async throws {
        let h = try PipelineHarness()
        try await h.register("pl-1")
        let acquirer = RememberingAcquirer()
        let store = FaultyStore(h.store, outcomeStall: .milliseconds(200), onOutcome: { acquirer.requestAlive })
        let pipeline = PipelineHarness.pipeline(store: store, acquirer: acquirer)
        let queue = InProcessMakePaymentQueue(capacity: 8)
        let workers = Task { await queue.runWorkers(1, maxAuthorizing: 4, executors: []) { pipeline.workStep($0) } }
        let result = await h.makePayment(h.request("pl-1", cardData: h.cardData(code: "00")), queue: queue, through: pipeline)
        queue.close()
        await workers.value
        #expect(result.response == .ok("pl-1"))
        #expect(store.aliveAtOutcome.withLock { $0 } == [false])
    }

    /// An authorization given up on and approved late, after its reversal was settled on "no
    /// such authorization" (the host had none on file yet): the reversal is reopened and sent
    /// again as a first send. A late refusal needs nothing, a reversal the host did reverse
    /// stands, and one still pending is no longer settled on 25. The reversals are sent by one
    /// service and the approval heard by another (two processes on one store).
    @Test func aLateApprovalReopensAReversalSettledWithoutItsOriginal() async throws {
        let h = try PipelineHarness()
        let settledWithoutOriginal = try await h.reversalDue("lr-1")
        let reversed = try await h.reversalDue("lr-2")
        let acquirer = ReversalAnswers(["lr-1": .noOriginal, "lr-2": .reversed])
        var configuration = ReversalService.Configuration()
        configuration.noOriginalSettleMilliseconds = 0  // the first 25 is final
        let service = ReversalService(store: h.store, acquirer: acquirer, configuration: configuration)
        await service.sendDue(limit: 10)
        #expect(acquirer.sends.withLock { $0 } == ["lr-1": 1, "lr-2": 1])
        let other = ReversalService(store: h.store, acquirer: acquirer, configuration: configuration)
        let pipeline = PipelineHarness.pipeline(store: h.store, acquirer: acquirer, reversals: other)
        await pipeline.handleLateReply(LateReply(pspTransactionId: "lr-1", attemptReference: settledWithoutOriginal.attemptReference, responseCode: "51"))
        await pipeline.handleLateReply(LateReply(pspTransactionId: "lr-2", attemptReference: reversed.attemptReference, responseCode: "00"))
        acquirer.answers.withLock { $0["lr-1"] = .reversed }  // the host has the original now
        await pipeline.handleLateReply(LateReply(pspTransactionId: "lr-1", attemptReference: settledWithoutOriginal.attemptReference, responseCode: "00"))
        try await waitUntil { acquirer.sends.withLock { $0["lr-1"] } == 2 }
        try await waitUntil { try await h.store.reversals(for: "lr-1").first?.state == .acknowledged }
        try await Task.sleep(for: .milliseconds(200))
        #expect(acquirer.sends.withLock { $0 } == ["lr-1": 2, "lr-2": 1])
        #expect(acquirer.sendCounts.withLock { $0["lr-1"] } == [1, 1], "the reopened reversal's send is a first one (an 0400), not a repeat")
        // Approved late while its reversal is still pending: a 25 after that does not settle it.
        let pending = try await h.reversalDue("lr-3")
        acquirer.answers.withLock { $0["lr-3"] = .noOriginal }
        await pipeline.handleLateReply(LateReply(pspTransactionId: "lr-3", attemptReference: pending.attemptReference, responseCode: "00"))
        await service.sendDue(limit: 10)  // this one or the other service's send, whichever claims it
        await other.finishSendingSoon()  // the other's send, answered and recorded (a try counts from its claim)
        let lr3 = try #require(try await h.store.reversals(for: "lr-3").first)
        #expect(lr3.tries == 1 && lr3.state == .pending && lr3.lateApproved)
    }

    /// A late approval heard while the attempt's 85 and reversal are still being written (the
    /// attempt is `processing`, no reversal on file): the reopen waits for them and marks the
    /// reversal approved late. (It found nothing and gave up: a 25 could then settle the reversal
    /// of an approval the host had.)
    @Test func aLateApprovalBeforeItsReversalIsRecordedMarksItWhenItIs() async throws {
        let h = try PipelineHarness()
        try await h.register("lb-1")
        let attempt = try await h.beginAttempt("lb-1", instance: "test-instance", startedAt: 1)
        var configuration = ReversalService.Configuration()
        configuration.firstRetryMilliseconds = 20
        let acquirer = ReversalAnswers(["lb-1": .noOriginal])
        let reads = CountsPaymentReads(h.store)
        let service = ReversalService(store: reads, acquirer: acquirer, configuration: configuration)
        let pipeline = PipelineHarness.pipeline(store: h.store, acquirer: acquirer, reversals: service)
        // A late reply for an attempt that is not the payment's in flight waits for nothing: one
        // look, not a try again after each back-off.
        await pipeline.handleLateReply(LateReply(pspTransactionId: "lb-1", attemptReference: "another", responseCode: "00"))
        #expect(reads.count == 1, "looked \(reads.count) times for an attempt that is not in flight")
        let reply = Task { await pipeline.handleLateReply(LateReply(pspTransactionId: "lb-1", attemptReference: attempt.attemptReference, responseCode: "00")) }
        try await Task.sleep(for: .milliseconds(100))
        let reversal = ReversalRequest(reversalId: "lb-1-R", pspTransactionId: "lb-1", attemptId: attempt.attemptId,
                                       attemptReference: attempt.attemptReference, amount: 1000, currency: "NOK", merchantSerialNumber: "123456")
        let outcome = PaymentOutcome(status: .fail, error: APIError.responseReceivedTooLate.message, maskedPAN: PipelineHarness.masked)
        _ = try await h.store.recordOutcome("lb-1", outcome: outcome, reversal: reversal, attemptId: attempt.attemptId, now: wallClockMilliseconds())
        await reply.value
        #expect(try await h.store.reversals(for: "lb-1").first?.lateApproved == true)
    }

    /// An adapter that ignores cancellation (none of the worker's own, but one plugged in may)
    /// and approves after the deadline: that answer is a late reply like ISO 8583's. The reversal
    /// recorded at the deadline was answered "no such authorization" meanwhile and settled; the
    /// approval reopens it, and the host, which has the original now, reverses it. (It was
    /// dropped: the approval stood, holding the customer's money.)
    @Test func anApprovalReturnedPastTheDeadlineReopensItsReversal() async throws {
        let h = try PipelineHarness()
        try await h.register("ic-1")
        let gate = Gate()
        let acquirer = IgnoresCancellation(gate: gate, reversal: .noOriginal)
        var configuration = ReversalService.Configuration()
        configuration.noOriginalSettleMilliseconds = 0  // the first 25 is final
        let service = ReversalService(store: h.store, acquirer: acquirer, configuration: configuration)
        let pipeline = PipelineHarness.pipeline(store: h.store, acquirer: acquirer, reversals: service, acquirerTimeout: .seconds(1))
        let result = await h.makePayment(h.request("ic-1", cardData: h.cardData(code: "00")), through: pipeline)
        #expect(result.response.errorMessage?.errorId == 85)
        await service.sendDue(limit: 10)
        // Settled on its 25 (sent by the pipeline at once, or by this pass), its send over.
        try await waitUntil { try await h.store.reversals(for: "ic-1").first?.state == .acknowledged }
        #expect(acquirer.reversals.withLock { $0 } == 1)
        #expect(try await h.store.reversals(for: "ic-1").first?.lateApproved == false)
        acquirer.reversal.withLock { $0 = .reversed }  // the host has the original from now on
        let poller = Task { await service.run() }  // as in the worker: what is due is sent within a poll
        defer { poller.cancel() }
        gate.open()  // the authorization returns "00", past its deadline
        try await waitUntil(timeout: .seconds(10)) { acquirer.reversals.withLock { $0 } == 2 }
        try await waitUntil(timeout: .seconds(10)) { try await h.store.reversals(for: "ic-1").first?.state == .acknowledged }
        #expect(try await h.store.reversals(for: "ic-1").first?.lateApproved == true)
        await service.finishSendingSoon()
    }

    /// Approved late while a 0400 is out (the host answers it 25: it had no original yet): that
    /// answer is not recorded, and the reversal goes out again as a first send, which reverses it,
    /// once the claim of the 0400 out has run out (not beside it: before, a poller of another
    /// process could send its own 0400 while the first was still out). Had the 0400 out been
    /// answered "reversed", that would stand (the conformance suite).
    @Test func aLateApprovalWhileTheReversalIsOutStartsItAgain() async throws {
        let h = try PipelineHarness()
        let reversal = try await h.reversalDue("ra-1")
        let acquirer = ReversalAnswers(["ra-1": .noOriginal])
        let gate = Gate()
        acquirer.before = { await gate.wait() }
        var configuration = ReversalService.Configuration()
        configuration.noOriginalSettleMilliseconds = 0
        configuration.timeout = .seconds(3)  // a claim of 8 s: the 0400 is still out when the poller looks
        let sender = ReversalService(store: h.store, acquirer: acquirer, configuration: configuration)
        let other = ReversalService(store: h.store, acquirer: acquirer, configuration: configuration)
        let pipeline = PipelineHarness.pipeline(store: h.store, acquirer: acquirer, reversals: other)
        let out = Task { await sender.sendDue(limit: 10) }
        try await waitUntil { acquirer.sends.withLock { $0["ra-1"] } == 1 }  // the 0400 is out
        acquirer.answers.withLock { $0["ra-1"] = .reversed }  // the host has the original from now on
        await pipeline.handleLateReply(LateReply(pspTransactionId: "ra-1", attemptReference: reversal.attemptReference, responseCode: "00"))
        let poller = Task { await other.run() }  // another process's poller: nothing goes out beside the 0400 still out
        defer { poller.cancel() }
        try await Task.sleep(for: .milliseconds(1500))
        #expect(acquirer.sends.withLock { $0["ra-1"] } == 1, "a second 0400 went out while the first was still out")
        gate.open()  // the 0400's answer: 25 (it was decided before the approval)
        _ = await out.value
        try await waitUntil { try await h.store.reversals(for: "ra-1").first?.state == .acknowledged }
        #expect(acquirer.sendCounts.withLock { $0["ra-1"] } == [1, 1], "two first sends: the second under a fresh STAN")
        #expect(try await h.store.reversals(for: "ra-1").first?.lateApproved == true)
    }

    /// Approved late while a 0400 is out that the host reverses: that answer stands, and the
    /// reversal is done (not sent for hours against "no such authorization" and failed).
    @Test func aReversedAnswerStandsThoughALateApprovalCameWhileItWasOut() async throws {
        let h = try PipelineHarness()
        let reversal = try await h.reversalDue("rb-1")
        let acquirer = ReversalAnswers(["rb-1": .reversed])
        acquirer.later.withLock { $0["rb-1"] = .noOriginal }  // reversed by the first: nothing left to find
        let gate = Gate()
        acquirer.before = { await gate.wait() }
        let sender = ReversalService(store: h.store, acquirer: acquirer)
        let other = ReversalService(store: h.store, acquirer: acquirer)
        let pipeline = PipelineHarness.pipeline(store: h.store, acquirer: acquirer, reversals: other)
        let out = Task { await sender.sendDue(limit: 10) }
        try await waitUntil { acquirer.sends.withLock { $0["rb-1"] } == 1 }
        await pipeline.handleLateReply(LateReply(pspTransactionId: "rb-1", attemptReference: reversal.attemptReference, responseCode: "00"))
        gate.open()
        _ = await out.value
        try await waitUntil { try await h.store.reversals(for: "rb-1").first?.state == .acknowledged }
        try await Task.sleep(for: .milliseconds(200))
        #expect(try await h.store.reversals(for: "rb-1").first?.state == .acknowledged)
    }

    /// Approved late, and the host still finds no original after every try: failed, for an
    /// operator (counted), not acknowledged and reopened every few hours for ever.
    @Test func aLateApprovedReversalThatNeverFindsItsOriginalFails() async throws {
        let h = try PipelineHarness()
        let reversal = try await h.reversalDue("mt-1")
        let acquirer = ReversalAnswers(["mt-1": .noOriginal])
        let clock = Mutex<Int64>(wallClockMilliseconds())
        var configuration = ReversalService.Configuration()
        configuration.noOriginalSettleMilliseconds = 0
        configuration.maxTries = 2
        let service = ReversalService(store: h.store, acquirer: acquirer, configuration: configuration, now: { clock.withLock { $0 } })
        let pipeline = PipelineHarness.pipeline(store: h.store, acquirer: acquirer, reversals: service)
        await pipeline.handleLateReply(LateReply(pspTransactionId: "mt-1", attemptReference: reversal.attemptReference, responseCode: "00"))
        // Reopened, it is sent at once (`sendSoon`); the passes below then find only its retries. (Its
        // answer recorded: the try counts from its claim, whose next try is 15 s off, not 1 s.)
        try await waitUntil {
            let now = clock.withLock { $0 }
            return try await h.store.reversals(for: "mt-1").first.map { $0.tries == 1 && $0.nextTryAt < now + 15_000 } ?? false
        }
        for _ in 0..<3 {
            await service.sendDue(limit: 10)
            clock.withLock { $0 += 120_000 }
        }
        let record = try #require(try await h.store.reversals(for: "mt-1").first)
        #expect(record.state == .failed && record.tries == 2)
        #expect(acquirer.sends.withLock { $0["mt-1"] } == 2)
    }

    /// Two reversal services on one store (two processes): each due reversal goes out once.
    @Test func twoReversalServicesOnOneStoreSendEachReversalOnce() async throws {
        let h = try PipelineHarness(latency: .milliseconds(200))
        for i in 0..<4 { try await h.reversalDue("two-\(i)") }
        let other = ReversalService(store: h.store, acquirer: h.acquirer)
        async let a = h.reversals.sendDue(limit: 10)
        async let b = other.sendDue(limit: 10)
        _ = await (a, b)
        for i in 0..<4 {
            #expect(h.acquirer.reversalCount(pspTransactionId: "two-\(i)") == 1)
            #expect(try await h.store.reversals(for: "two-\(i)").first?.state == .acknowledged)
        }
    }

    /// A 25 ("no such authorization") soon after a timeout may only mean the authorization is
    /// not on file yet: the reversal is repeated (sendCount 2: an ISO 0401) until the acquirer
    /// reverses it. Once the settle time has passed, a 25 is final.
    @Test(arguments: [(Int64(30_000), 2, ReversalAnswer.reversed), (Int64(0), 1, ReversalAnswer.noOriginal)])
    func aReversalAnsweredNoOriginalSoonIsAskedAgain(settle: Int64, sends: Int, last: ReversalAnswer) async throws {
        let h = try PipelineHarness()
        try await h.reversalDue("n-1")
        let acquirer = NotOnFileYet()
        var configuration = ReversalService.Configuration()
        configuration.firstRetryMilliseconds = 50
        configuration.noOriginalSettleMilliseconds = settle
        let service = ReversalService(store: h.store, acquirer: acquirer, configuration: configuration)
        let loop = Task { await service.run() }
        defer { loop.cancel() }
        try await waitUntil { try await h.store.reversals(for: "n-1").first?.state == .acknowledged }
        #expect(acquirer.sendCounts.withLock { $0 } == Array(1...sends))
        #expect(try await h.store.reversals(for: "n-1").first?.tries == sends)
        #expect(acquirer.answers.withLock { $0.last } == last)
    }

    @Test func jobsThroughTheQueueAreAnswered() async throws {
        let h = try PipelineHarness()
        let queue = InProcessMakePaymentQueue(capacity: 64)
        let pipeline = h.pipeline
        let workers = Task { await queue.runWorkers(2) { pipeline.workStep($0) } }
        for i in 0..<10 { try await h.register("q\(i)") }
        let results = await withTaskGroup(of: MakePaymentResult.self) { group in
            for i in 0..<10 { group.addTask { await h.makePayment(h.request("q\(i)", cardData: h.cardData(code: i % 2 == 0 ? "00" : "51")), queue: queue) } }
            return await group.reduce(into: [MakePaymentResult]()) { $0.append($1) }
        }
        #expect(results.filter { $0.response.paymentInfo.status == .ok }.count == 5)
        #expect(results.filter { $0.response.errorMessage?.errorId == 89 }.count == 5)
        queue.close()
        await workers.value
    }
}

@Suite struct QueueTests {
    @Test func fullQueueRefusesAtOnce() async throws {
        let queue = InProcessMakePaymentQueue(capacity: 1)
        let record = PaymentRecord(registration: PaymentStoreConformance.registration("x"), state: .pending, outcome: nil,
                                   attempt: nil, authorizationsSent: 0, createdAt: 0, updatedAt: 0, completedAt: nil)
        let job = MakePaymentJob(request: MakePaymentRequest(pspTransactionId: "x", merchantSerialNumber: "1", cardData: "", confirmed: .yes), payment: record)
        let waiting = Task { try await queue.submit(job) }
        let queuedBy = ContinuousClock.now + .seconds(30)
        while queue.depth < 1 {
            try #require(ContinuousClock.now < queuedBy, "the first job queued")
            try await Task.sleep(for: .milliseconds(5))
        }
        await #expect(throws: QueueFull.self) { _ = try await queue.submit(job) }
        let workers = Task { await queue.runWorkers(1) { _ in .answered(MakePaymentResult(httpStatus: 200, response: .ok("x"))) } }
        #expect(try await waiting.value == MakePaymentResult(httpStatus: 200, response: .ok("x")))
        queue.close()
        await workers.value
        await #expect(throws: QueueFull.self) { _ = try await queue.submit(job) }
    }

    /// A job counts as in progress from the moment a worker takes it until it is answered, the
    /// authorization it waits on included (the store reads this to know what writes may still come).
    @Test func aTakenJobIsInProgressUntilAnswered() async throws {
        let queue = InProcessMakePaymentQueue(capacity: 4)
        let record = PaymentRecord(registration: PaymentStoreConformance.registration("x"), state: .pending, outcome: nil,
                                   attempt: nil, authorizationsSent: 0, createdAt: 0, updatedAt: 0, completedAt: nil)
        let job = MakePaymentJob(request: MakePaymentRequest(pspTransactionId: "x", merchantSerialNumber: "1", cardData: "", confirmed: .yes), payment: record)
        let authorizing = Gate()
        let workers = Task {
            await queue.runWorkers(1) { _ in
                .awaiting { await authorizing.wait(); return MakePaymentResult(httpStatus: 200, response: .ok("x")) }
            }
        }
        #expect(queue.inProgress == 0)
        let answer = Task { try await queue.submit(job) }
        try await waitUntil { queue.inProgress == 1 }
        authorizing.open()
        #expect(try await answer.value == MakePaymentResult(httpStatus: 200, response: .ok("x")))
        #expect(queue.inProgress == 0)
        queue.close()
        await workers.value
    }
}

@Suite struct DeadlineTests {
    @Test func operationThatIgnoresCancellationDoesNotHoldTheAnswer() async {
        // The operation waits on a gate that cancellation does not open; only the test opens it,
        // after the answer. Were withDeadline to wait for the operation, the gate would still be
        // shut when it answered (the safety valve opens it after 30 s so the test fails, not hangs).
        let gate = Gate()
        let valve = Task { try await Task.sleep(for: .seconds(30)); gate.open() }
        let outcome = await withDeadline(.milliseconds(50)) { () async throws -> Int in
            await gate.wait()
            return 1
        }
        #expect(!gate.isOpen, "the answer came while the operation was still running")
        guard case .timedOut = outcome else { Issue.record("expected a timeout, got \(outcome)"); return }
        gate.open()
        valve.cancel()
    }

    @Test func fastOperationReturnsItsValue() async {
        let outcome = await withDeadline(.seconds(5)) { 42 }
        guard case .value(let v) = outcome else { Issue.record("expected a value"); return }
        #expect(v == 42)
    }
}

func waitUntil(timeout: Duration = .seconds(30), _ condition: () async throws -> Bool) async throws {
    let end = ContinuousClock.now + timeout
    while ContinuousClock.now < end {
        if try await condition() { return }
        try await Task.sleep(for: .milliseconds(10))
    }
    Issue.record("condition not met within \(timeout)")
}

/// A one-shot gate that waiting tasks cannot leave by being cancelled.
final class Gate: Sendable {
    private let state = Mutex<(open: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))
    var isOpen: Bool { state.withLock { $0.open } }
    func wait() async {
        await withCheckedContinuation { continuation in
            let openAlready = state.withLock { s -> Bool in
                if s.open { return true }
                s.waiters.append(continuation)
                return false
            }
            if openAlready { continuation.resume() }
        }
    }
    func open() {
        let waiters = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            s.open = true
            defer { s.waiters = [] }
            return s.waiters
        }
        waiters.forEach { $0.resume() }
    }
}

/// An acquirer that answers each payment's reversals as it is told, counting the sends.
final class ReversalAnswers: AcquirerAdapter {
    let name = "reversal-answers"
    let answers: Mutex<[String: ReversalAnswer]>
    let sends = Mutex<[String: Int]>([:])
    /// Each send's `sendCount` (1: a first send, an 0400; more: a repeat, an 0401), by payment.
    let sendCounts = Mutex<[String: [Int]]>([:])
    init(_ answers: [String: ReversalAnswer]) { self.answers = Mutex(answers) }
    func authorize(_ request: AuthorizationRequest) async throws -> AcquirerAnswer { throw AcquirerUnavailable("not used") }
    /// Run after each send is counted, before it is answered (a test holds the answer there).
    nonisolated(unsafe) var before: (@Sendable () async -> Void)?
    /// Payments whose reversals fail (no answer the adapter could read).
    let failing = Mutex<Set<String>>([])
    /// Payments whose reversals are answered only once `heldGate` opens.
    let held = Mutex<Set<String>>([])
    let heldGate = Gate()
    /// What a payment's sends after its first get (a host that reversed it answers 25 after).
    let later = Mutex<[String: ReversalAnswer]>([:])
    func reverse(_ reversal: ReversalRequest) async throws -> ReversalAnswer {
        let first = sends.withLock { $0[reversal.pspTransactionId] == nil }
        let answer = (first ? nil : later.withLock { $0[reversal.pspTransactionId] })
            ?? answers.withLock { $0[reversal.pspTransactionId] } ?? .reversed  // decided as it arrives
        sends.withLock { $0[reversal.pspTransactionId, default: 0] += 1 }
        sendCounts.withLock { $0[reversal.pspTransactionId, default: []].append(reversal.sendCount) }
        await before?()
        if held.withLock({ $0.contains(reversal.pspTransactionId) }) { await heldGate.wait() }
        if failing.withLock({ $0.contains(reversal.pspTransactionId) }) { throw AcquirerUnavailable("no answer") }
        return answer
    }
}

/// An adapter whose authorization waits for `gate` whatever its task's cancellation, then
/// approves; its reversals get `reversal`.
final class IgnoresCancellation: AcquirerAdapter {
    let name = "ignores-cancellation"
    let gate: Gate
    let reversal: Mutex<ReversalAnswer>
    let reversals = Mutex(0)
    init(gate: Gate, reversal: ReversalAnswer) { self.gate = gate; self.reversal = Mutex(reversal) }
    func authorize(_ request: AuthorizationRequest) async throws -> AcquirerAnswer {
        await gate.wait()
        return AcquirerAnswer(responseCode: "00", authorizationCode: "123456")
    }
    func reverse(_ request: ReversalRequest) async throws -> ReversalAnswer {
        reversals.withLock { $0 += 1 }
        return reversal.withLock { $0 }
    }
}

/// Counts `payment(_:)` reads: how many times a caller looked.
final class CountsPaymentReads: ForwardingPaymentStore {
    let base: any PaymentStore
    private let reads = Mutex(0)
    var count: Int { reads.withLock { $0 } }
    init(_ base: any PaymentStore) { self.base = base }
    func payment(_ pspTransactionId: String) async throws -> PaymentRecord? {
        reads.withLock { $0 += 1 }
        return try await base.payment(pspTransactionId)
    }
}

/// A store whose outcome writes wait for `gate`, and then, with `failing`, fail (the lock
/// held past its timeout by the group that committed the other outcome, say).
final class GatedOutcomes: ForwardingPaymentStore {
    struct Refused: Error {}
    let base: any PaymentStore
    let gate: Gate
    let failing: Bool
    init(_ base: any PaymentStore, gate: Gate, failing: Bool = false) { self.base = base; self.gate = gate; self.failing = failing }
    func recordOutcome(_ pspTransactionId: String, outcome: PaymentOutcome, reversal: ReversalRequest?,
                       attemptId: String?, now: Int64, answerBy: ContinuousClock.Instant?) async throws -> PaymentOutcome? {
        await gate.wait()
        if failing { throw Refused() }
        return try await base.recordOutcome(pspTransactionId, outcome: outcome, reversal: reversal, attemptId: attemptId, now: now,
                                            answerBy: answerBy)
    }
}

/// A store whose reversal claims take `claimStall` to come back (a stalled disk, a lock held elsewhere).
final class SlowClaims: ForwardingPaymentStore {
    let base: any PaymentStore
    let claimStall: Duration
    init(_ base: any PaymentStore, claimStall: Duration) { self.base = base; self.claimStall = claimStall }
    func claimReversal(_ reversalId: String, now: Int64, until: Int64) async throws -> ReversalRecord? {
        let claimed = try await base.claimReversal(reversalId, now: now, until: until)
        try await Task.sleep(for: claimStall)
        return claimed
    }
}

/// A store that refuses the first `times` late approvals.
final class RefusesLateApprovals: ForwardingPaymentStore {
    let base: any PaymentStore
    let times: Int
    let refused = Atomic<Int>(0)
    struct Refused: Error {}
    init(_ base: any PaymentStore, times: Int) { self.base = base; self.times = times }
    func lateApproval(ofReversal reversalId: String, now: Int64, claimsEndBy: Int64) async throws -> LateApprovalResult {
        if refused.load(ordering: .relaxed) < times {
            refused.add(1, ordering: .relaxed)
            throw Refused()
        }
        return try await base.lateApproval(ofReversal: reversalId, now: now, claimsEndBy: claimsEndBy)
    }
}

/// An acquirer whose reversals fail after 200 ms, counting those finished.
final class SlowFailingReverser: AcquirerAdapter {
    let name = "slow-failing-reverser"
    let finished = Atomic<Int>(0)
    func authorize(_ request: AuthorizationRequest) async throws -> AcquirerAnswer { throw AcquirerUnavailable("not used") }
    func reverse(_ reversal: ReversalRequest) async throws -> ReversalAnswer {
        try? await Task.sleep(for: .milliseconds(200))
        finished.add(1, ordering: .relaxed)
        throw AcquirerUnavailable("down")
    }
}

/// An acquirer that answers `code` (approves, by default), naming `amount` as the amount.
final class ApprovesAmount: AcquirerAdapter {
    let name = "approves-amount"
    let amount: Int
    let code: String
    init(_ amount: Int, code: String = "00") { self.amount = amount; self.code = code }
    func authorize(_ request: AuthorizationRequest) async throws -> AcquirerAnswer {
        AcquirerAnswer(responseCode: code, authorizationCode: "A1", acquirerReference: "R1", amount: amount)
    }
    func reverse(_ reversal: ReversalRequest) async throws -> ReversalAnswer { .reversed }
}

/// An acquirer whose every authorization fails with `error`.
final class FailingAcquirer: AcquirerAdapter {
    let name = "failing"
    let error: AcquirerUnavailable
    init(_ error: AcquirerUnavailable) { self.error = error }
    func authorize(_ request: AuthorizationRequest) async throws -> AcquirerAnswer { throw error }
    func reverse(_ reversal: ReversalRequest) async throws -> ReversalAnswer { .reversed }
}

/// An acquirer that approves and keeps a weak reference to the last request: is the card still alive?
final class RememberingAcquirer: AcquirerAdapter, @unchecked Sendable {
    // @unchecked: one authorization at a time in the test that uses it.
    let name = "remembering"
    weak var last: AuthorizationRequest?
    var requestAlive: Bool { last != nil }
    func authorize(_ request: AuthorizationRequest) async throws -> AcquirerAnswer {
        last = request
        return AcquirerAnswer(responseCode: "00", authorizationCode: "A1", acquirerReference: "R1")
    }
    func reverse(_ reversal: ReversalRequest) async throws -> ReversalAnswer { .reversed }
}

/// An acquirer that, when asked to authorize, reads the payment through a store of its own on
/// the same file (as another process would), then approves.
final class LooksAtTheStoreFile: AcquirerAdapter {
    let name = "looks-at-the-store-file"
    let path: String
    /// The payment as the other store read it, and the attempt the request named.
    let seen = Mutex<(PaymentRecord?, String)?>(nil)
    init(path: String) { self.path = path }
    func authorize(_ request: AuthorizationRequest) async throws -> AcquirerAnswer {
        let other = try SQLitePaymentStore(path: path)
        defer { other.close() }
        let record = try await other.payment(request.pspTransactionId)
        seen.withLock { $0 = (record, request.attemptId) }
        return AcquirerAnswer(responseCode: "00", authorizationCode: "A1", acquirerReference: "R1")
    }
    func reverse(_ reversal: ReversalRequest) async throws -> ReversalAnswer { .reversed }
}

/// An acquirer that has the authorization on file only from the second reversal on.
final class NotOnFileYet: AcquirerAdapter {
    let name = "not-on-file-yet"
    let sendCounts = Mutex<[Int]>([])
    let answers = Mutex<[ReversalAnswer]>([])
    func authorize(_ request: AuthorizationRequest) async throws -> AcquirerAnswer { throw AcquirerUnavailable("not used") }
    func reverse(_ reversal: ReversalRequest) async throws -> ReversalAnswer {
        let answer: ReversalAnswer = sendCounts.withLock { $0.append(reversal.sendCount); return $0.count } == 1 ? .noOriginal : .reversed
        answers.withLock { $0.append(answer) }
        return answer
    }
}

/// A store whose attempt commits stall (a slow fsync, a write lock held by another process), or
/// that cannot record outcomes (a full disk).
/// A store whose memory of a registration went stale: the front reads `stale`, every other read the truth.
final class StalePendingStore: ForwardingPaymentStore {
    let base: any PaymentStore
    let stale: PaymentRecord
    init(base: any PaymentStore, stale: PaymentRecord) { self.base = base; self.stale = stale }
    func paymentForMakePayment(_ pspTransactionId: String) async throws -> PaymentRecord? { stale }
}

final class FaultyStore: ForwardingPaymentStore {
    let base: any PaymentStore
    let stall: Duration
    /// How long each outcome's write waits before it reaches the store (a lock held elsewhere).
    let outcomeStall: Duration
    let outcomesFail: Bool
    /// Reads fail (a store going away: both its reads and writes refused).
    let readsFail: Bool
    /// Run after a refusal's outcome (one with no attempt) found nothing to record: what another
    /// process commits in that moment.
    let afterRefusal: (@Sendable (any PaymentStore) async throws -> Void)?
    struct OutcomeNotRecorded: Error {}
    /// Asked after each outcome's stall, its answer kept in `aliveAtOutcome` (is the card still held?).
    let onOutcome: (@Sendable () -> Bool)?
    let aliveAtOutcome = Mutex<[Bool]>([])
    init(_ base: any PaymentStore, stall: Duration = .zero, outcomeStall: Duration = .zero, outcomesFail: Bool = false, readsFail: Bool = false,
         afterRefusal: (@Sendable (any PaymentStore) async throws -> Void)? = nil, onOutcome: (@Sendable () -> Bool)? = nil) {
        self.base = base; self.stall = stall; self.outcomeStall = outcomeStall; self.outcomesFail = outcomesFail; self.readsFail = readsFail
        self.afterRefusal = afterRefusal; self.onOutcome = onOutcome
    }

    func payment(_ pspTransactionId: String) async throws -> PaymentRecord? {
        if readsFail { throw OutcomeNotRecorded() }
        return try await base.payment(pspTransactionId)
    }

    func beginAttempt(_ pspTransactionId: String, attempt: AttemptRecord, now: Int64) async throws -> BeginAttemptResult {
        let result = try await base.beginAttempt(pspTransactionId, attempt: attempt, now: now)
        try await Task.sleep(for: stall)
        return result
    }
    func recordOutcome(_ pspTransactionId: String, outcome: PaymentOutcome, reversal: ReversalRequest?,
                       attemptId: String?, now: Int64, answerBy: ContinuousClock.Instant?) async throws -> PaymentOutcome? {
        if outcomesFail { throw OutcomeNotRecorded() }
        try await Task.sleep(for: outcomeStall)
        if let onOutcome { let alive = onOutcome(); aliveAtOutcome.withLock { $0.append(alive) } }
        let standing = try await base.recordOutcome(pspTransactionId, outcome: outcome, reversal: reversal, attemptId: attemptId, now: now,
                                                    answerBy: answerBy)
        if standing == nil, attemptId == nil, let afterRefusal { try await afterRefusal(base) }
        return standing
    }
}
