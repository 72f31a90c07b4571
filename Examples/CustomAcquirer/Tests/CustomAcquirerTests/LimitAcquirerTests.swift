import AcquirerConformance
import Acquiring
import CustomAcquirer
import Testing

struct LimitSubject: AcquirerConformanceSubject {
    let bank = LimitAcquirer()
    var adapter: any AcquirerAdapter { bank }
    func authorizations(of attempt: AttemptIdentity) async -> Int { bank.authorizationCount(pspTransactionId: attempt.pspTransactionId) }
    func reversals(of attempt: AttemptIdentity) async -> Int { bank.reversalCount(pspTransactionId: attempt.pspTransactionId) }
    func setFaults(_ faults: ConformanceFaults) async -> Bool { faults == ConformanceFaults() }
}

@Suite struct LimitAcquirerTests {
    /// The worker's own conformance kit, run against this package's adapter.
    @Test(arguments: AcquirerConformance.checksWithoutFaults)
    func conformance(_ check: AcquirerConformance.Check) async throws {
        try await check.run(AcquirerConformance(subject: LimitSubject()))
    }

    @Test func amountsOverTheLimitAreRefusedWith61() async throws {
        let subject = LimitSubject()
        let kit = AcquirerConformance(subject: subject)
        let answer = try await subject.bank.authorize(try kit.request(code: "00", amount: 2_000_000))
        #expect(answer.responseCode == "61")
    }
}
