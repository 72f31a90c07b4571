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
    @Test(arguments: AcquirerConformance.checks)
    func conformance(_ check: AcquirerConformance.Check) async throws {
        try await check.run(AcquirerConformance(subject: SimulatorSubject()))
    }

    @Test(arguments: [("00", "4000000000000002"), ("51", "4000000000000515"), ("99", "4000000000000994"), ("05", "4000000000000051")])
    func testCardsCarryTheirCodeAndALuhnDigit(code: String, pan: String) {
        #expect(SimulatorAcquirer.testCard(code: code) == pan)
        #expect(SimulatorAcquirer.testCardCode(asciiDigits: Array(pan.utf8)) == code)
    }

    @Test func otherNumbersAreNotTestCards() {
        #expect(SimulatorAcquirer.testCardCode(asciiDigits: Array("4925000000004444".utf8)) == nil)
        #expect(SimulatorAcquirer.answerCode(asciiDigits: Array("4925000000004444".utf8)) == "00")
        #expect(SimulatorAcquirer.answerCode(asciiDigits: Array("4000000000000994".utf8)) == nil)
    }
}
