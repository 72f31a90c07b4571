import AcquirerConformance
import Acquiring
import MakePayment
import Testing

/// The in-process simulator as a conformance subject: it counts by payment and injects no faults.
struct SimulatorSubject: AcquirerConformanceSubject {
    let simulator = SimulatorAcquirer()
    var adapter: any AcquirerAdapter { simulator }
    func authorizations(of attempt: AttemptIdentity) async -> Int { simulator.authorizationCount(pspTransactionId: attempt.pspTransactionId) }
    func reversals(of attempt: AttemptIdentity) async -> Int { simulator.reversalCount(pspTransactionId: attempt.pspTransactionId) }
    func setFaults(_ faults: ConformanceFaults) async -> Bool { faults == ConformanceFaults() }
}

@Suite struct SimulatorAcquirerTests {
    @Test(arguments: AcquirerConformance.checksWithoutFaults)
    func conformance(_ check: AcquirerConformance.Check) async throws {
        try await check.run(AcquirerConformance(subject: SimulatorSubject()))
    }

    @Test(arguments: [("00", "4000000000000002"), ("51", "4000000000000515"), ("99", "4000000000000994"), ("05", "4000000000000051")])
    func testCardsCarryTheirCodeAndALuhnDigit(code: String, pan: String) {
        #expect(SimulatorAcquirer.testCard(code: code) == pan)
        #expect(SimulatorAcquirer.testCardCode(asciiDigits: Array(pan.utf8)) == code)
    }

    /// The counts behind the admin view's `acquirerAuthorizations` (vipps-sim's duplicate check):
    /// every authorization and reversal of a payment, whichever of its two tables holds it.
    @Test func countsEveryAuthorizationAndReversalOfAPayment() async throws {
        let subject = SimulatorSubject()
        let conformance = AcquirerConformance(subject: subject)
        let once = try conformance.request(code: nil)
        let thrice = try conformance.request(code: "51")
        _ = try await subject.simulator.authorize(once)
        for _ in 0..<3 { _ = try await subject.simulator.authorize(thrice) }
        let reversal = ReversalRequest(reversalId: thrice.attemptId + "-R", pspTransactionId: thrice.pspTransactionId,
                                       attemptId: thrice.attemptId, attemptReference: thrice.attemptReference,
                                       amount: thrice.amount, currency: thrice.currency, merchantSerialNumber: thrice.merchantSerialNumber)
        for _ in 0..<2 { _ = try await subject.simulator.reverse(reversal) }
        #expect(subject.simulator.authorizationCount(pspTransactionId: once.pspTransactionId) == 1)
        #expect(subject.simulator.reversalCount(pspTransactionId: once.pspTransactionId) == 0)
        #expect(subject.simulator.authorizationCount(pspTransactionId: thrice.pspTransactionId) == 3)
        #expect(subject.simulator.reversalCount(pspTransactionId: thrice.pspTransactionId) == 2)
        #expect(subject.simulator.authorizationCount(pspTransactionId: "never") == 0)
        #expect(subject.simulator.reversalCount(pspTransactionId: "never") == 0)
    }

    /// An authorization whose send deadline has passed is not made (in process, the call is the send).
    @Test func anAuthorizationPastItsSendDeadlineIsNotMade() async throws {
        let subject = SimulatorSubject()
        let request = try AcquirerConformance(subject: subject).request(code: nil)
        await #expect(throws: AcquirerUnavailable.self) {
            try await AuthorizationDeadline.$sendBy.withValue(.now - .milliseconds(1)) { try await subject.simulator.authorize(request) }
        }
        #expect(subject.simulator.authorizationCount(pspTransactionId: request.pspTransactionId) == 0)
        _ = try await AuthorizationDeadline.$sendBy.withValue(.now + .seconds(10)) { try await subject.simulator.authorize(request) }
        #expect(subject.simulator.authorizationCount(pspTransactionId: request.pspTransactionId) == 1)
    }

    @Test func otherNumbersAreNotTestCards() {
        #expect(SimulatorAcquirer.testCardCode(asciiDigits: Array("4925000000004444".utf8)) == nil)
        #expect(SimulatorAcquirer.answerCode(asciiDigits: Array("4925000000004444".utf8)) == "00")
        #expect(SimulatorAcquirer.answerCode(asciiDigits: Array("4000000000000994".utf8)) == nil)
    }
}
