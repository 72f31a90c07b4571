import AcquirerConformance
import AcquirerSimulator
import Acquiring
import HTTPAcquirer
import Testing

/// The HTTP JSON adapter against the simulated acquirer's HTTP side on a real loopback socket.
/// Request/response HTTP has no late, duplicate or half-closed replies to inject: those checks are
/// the ISO 8583 adapter's; here they are skipped (setFaults answers false).
final class HTTPSubject: AcquirerConformanceSubject {
    let host = AcquirerHost()
    let running: HTTPHost.Running
    let http: HTTPAcquirer
    var adapter: any AcquirerAdapter { http }

    init() async throws {
        running = try await HTTPHost.start(host: host, port: 0)
        http = HTTPAcquirer(baseURL: "http://127.0.0.1:\(running.port)")!
    }

    func authorizations(of attempt: AttemptIdentity) async -> Int { host.authorizationCount(rrn: attempt.attemptReference) }
    func reversals(of attempt: AttemptIdentity) async -> Int { host.reversalCount(rrn: attempt.attemptReference) }
    func setFaults(_ faults: ConformanceFaults) async -> Bool { faults == ConformanceFaults() }
}

@Suite struct HTTPAcquirerTests {
    @Test(arguments: AcquirerConformance.checks)
    func conformance(_ check: AcquirerConformance.Check) async throws {
        let subject = try await HTTPSubject()
        try await check.run(AcquirerConformance(subject: subject))
        subject.running.task.cancel()
    }

    @Test func urlsAreChecked() {
        #expect(HTTPAcquirer(baseURL: "http://127.0.0.1:8090") != nil)
        #expect(HTTPAcquirer(baseURL: "https://acquirer.example/api/") != nil)
        #expect(HTTPAcquirer(baseURL: "iso8583://x:1") == nil)
    }

    @Test func refusedConnectionIsAnUnknownOutcome() async throws {
        let adapter = HTTPAcquirer(baseURL: "http://127.0.0.1:1")!
        let kit = AcquirerConformance(subject: try await HTTPSubject())
        let request = try kit.request(code: "00")
        await #expect(throws: AcquirerUnavailable.self) { _ = try await adapter.authorize(request) }
    }
}
