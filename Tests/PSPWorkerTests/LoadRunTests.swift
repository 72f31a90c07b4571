import Acquiring
import LoadGeneration
import Testing

/// vipps-sim's driver against the real worker on a real socket: every kind of case, closed and open
/// loop, every answer checked (duplicates read back as authorized once, wrong tokens as never,
/// the authorizations that may stand as reversed once).
@Suite struct LoadRunTests {
    static let mix = "approved=40,51=5,05=5,10=3,68=3,timeout=2,bad-cryptogram=5,wrong-token=5,duplicate=5,duplicate-in-flight=5,no=5,timeout-status=5,cancel=5,luhn=5,expired=5"

    func run(_ drive: LoadConfiguration.Drive, count: Int? = nil, duration: Duration? = nil, mix: String = Self.mix,
             reversalWait: Duration = .seconds(10), requestTimeout: Duration = .seconds(10), port: Int) async throws -> Report {
        var configuration = LoadConfiguration(address: ServerAddress(host: "127.0.0.1", port: port),
                                              adminToken: LiveWorker.adminToken, drive: drive, mix: try Mix(parsing: mix))
        configuration.reversalWait = reversalWait
        configuration.publicKeyPath = TestKeys.path("psp-public-key")
        configuration.count = count
        configuration.duration = duration
        configuration.requestTimeout = requestTimeout
        return try await LoadRun(configuration, log: { _ in }).run()
    }

    // The acquirer's timeout leaves room for a slow attempt commit on a loaded machine: with under
    // half of it left after the commit, an authorization is not sent (85), a mismatch here.
    @Test func closedLoopAnswersEveryCaseAsItMust() async throws {
        try await LiveWorker.run(acquirerTimeout: .seconds(4)) { client in
            let report = try await run(.closed(concurrency: 16), count: 400, port: client.port!)
            #expect(report.mismatches == 0, "\(report.firstMismatches)")
            #expect(report.transportErrors == 0)
            // Every case answered, and both copies of each duplicate (after, or at once).
            #expect(report.answered == 400 + (report.kinds["duplicate"] ?? 0) + (report.kinds["duplicate-in-flight"] ?? 0))
            #expect(report.kinds["duplicate-in-flight"] ?? 0 > 0)
            #expect(report.outcomes["200 OK"] ?? 0 > 0)
            #expect(report.outcomes["200 FAIL 72"] ?? 0 > 0)
            #expect(report.outcomes["401 FAIL 71"] ?? 0 > 0)
        }
    }

    /// A worker that answers right but never gets its reversals through (here: an acquirer that
    /// refuses every reversal) is caught by the read-back: each 68 and 10 is a mismatch.
    @Test func anAuthorizationLeftUnreversedIsAMismatch() async throws {
        let acquirer = RefusesReversals()
        try await LiveWorker.run(acquirerTimeout: .seconds(4), acquirer: acquirer) { client in
            let report = try await run(.closed(concurrency: 4), count: 20, mix: "approved=1,68=1,10=1", reversalWait: .milliseconds(500),
                                       port: client.port!)
            let mustBeReversed = (report.kinds["68"] ?? 0) + (report.kinds["10"] ?? 0)
            #expect(mustBeReversed > 0)
            #expect(report.mismatches == mustBeReversed, "\(report.firstMismatches)")
            #expect(report.firstMismatches.allSatisfy { $0.contains("reversed 0 times") }, "\(report.firstMismatches)")
        }
    }

    /// The cases answered before any acquirer is asked (NO, a cryptogram that does not decrypt, a
    /// bad check digit) are read back too: one the acquirer saw authorized is a mismatch, right as
    /// its answer was (here an acquirer that counts one authorization more than it was sent).
    @Test func anAuthorizationOfACaseAnsweredBeforeTheAcquirerIsAMismatch() async throws {
        let acquirer = CountsOneTooMany()
        try await LiveWorker.run(acquirerTimeout: .seconds(4), acquirer: acquirer) { client in
            let report = try await run(.closed(concurrency: 4), count: 12, mix: "no=1,bad-cryptogram=1,luhn=1", port: client.port!)
            #expect(report.transportErrors == 0)
            #expect(report.mismatches == 12, "\(report.firstMismatches)")
            #expect(report.firstMismatches.allSatisfy { $0.contains("expected never") }, "\(report.firstMismatches)")
        }
    }

    /// In an open loop Vipps's patience runs from a request's intended send: one that waited for a
    /// free connection has that much less of it. One connection, answers 250 ms apart, 20 a second
    /// intended, a 1 s timeout: each answer comes 250 ms after its send, but the later ones well
    /// past a second after their intended time, and those are lost (they counted as answered).
    @Test func anOpenLoopCountsTheTimeoutFromTheIntendedSend() async throws {
        try await LiveWorker.run(acquirerTimeout: .seconds(4), configure: { $0.acquirer = .simulator(latency: .milliseconds(250)) }) { client in
            let report = try await run(.open(rate: 20, connections: 1), duration: .seconds(1), mix: "approved=1",
                                       requestTimeout: .seconds(1), port: client.port!)
            #expect(report.transportErrors > 0, "answers past the timeout from their intended send counted as answered")
            #expect(report.answered > 0)
        }
    }

    /// An answer that comes after the request timeout is lost, however it came: the connection
    /// looks at its timeout only every 100 ms, and an answer in between counted as answered.
    @Test func anAnswerPastTheRequestTimeoutIsLost() async throws {
        try await LiveWorker.run(acquirerTimeout: .seconds(4), configure: { $0.acquirer = .simulator(latency: .milliseconds(60)) }) { client in
            let report = try await run(.closed(concurrency: 1), count: 8, mix: "approved=1", requestTimeout: .milliseconds(30), port: client.port!)
            #expect(report.transportErrors == 8 && report.answered == 0, "\(report.answered) answers past the timeout counted as answered")
            #expect(report.latencyMs.p50 >= 30)
        }
    }

    @Test func openLoopKeepsToTheScheduleAndChecksEveryAnswer() async throws {
        try await LiveWorker.run(acquirerTimeout: .seconds(4)) { client in
            let report = try await run(.open(rate: 200, connections: 32), duration: .seconds(1), port: client.port!)
            #expect(report.mismatches == 0, "\(report.firstMismatches)")
            #expect(report.transportErrors == 0)
            #expect(report.setup.payments == 200)
            #expect(report.answered >= 200)
        }
    }
}

/// The simulator, except that every reversal fails (as an acquirer that is down for them would).
final class RefusesReversals: AcquirerAdapter, AuthorizationCounting {
    struct Down: Error {}
    let simulator = SimulatorAcquirer()
    var name: String { simulator.name }
    func attemptReference(for attemptId: String) -> String { simulator.attemptReference(for: attemptId) }
    func authorize(_ request: AuthorizationRequest) async throws -> AcquirerAnswer { try await simulator.authorize(request) }
    func reverse(_ reversal: ReversalRequest) async throws -> ReversalAnswer { throw Down() }
    func authorizationCount(pspTransactionId: String) -> Int { simulator.authorizationCount(pspTransactionId: pspTransactionId) }
    func reversalCount(pspTransactionId: String) -> Int { simulator.reversalCount(pspTransactionId: pspTransactionId) }
}

/// The simulator, except that it counts one authorization more for every payment than it was sent.
final class CountsOneTooMany: AcquirerAdapter, AuthorizationCounting {
    let simulator = SimulatorAcquirer()
    var name: String { simulator.name }
    func attemptReference(for attemptId: String) -> String { simulator.attemptReference(for: attemptId) }
    func authorize(_ request: AuthorizationRequest) async throws -> AcquirerAnswer { try await simulator.authorize(request) }
    func reverse(_ reversal: ReversalRequest) async throws -> ReversalAnswer { try await simulator.reverse(reversal) }
    func authorizationCount(pspTransactionId: String) -> Int { simulator.authorizationCount(pspTransactionId: pspTransactionId) + 1 }
    func reversalCount(pspTransactionId: String) -> Int { simulator.reversalCount(pspTransactionId: pspTransactionId) }
}
