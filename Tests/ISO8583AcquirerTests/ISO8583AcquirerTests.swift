import AcquirerConformance
import AcquirerSimulator
import Acquiring
import ISO8583
import ISO8583Acquirer
import MakePayment
import Synchronization
import Testing

/// The ISO 8583 adapter against the simulated acquirer host on a real loopback socket.
final class ISO8583Subject: AcquirerConformanceSubject {
    let host = AcquirerHost()
    let server: ISO8583Host
    let iso: ISO8583Acquirer
    let port: Int
    var adapter: any AcquirerAdapter { iso }

    init() async throws {
        server = ISO8583Host(host: host)
        port = try await server.start(port: 0)
        iso = ISO8583Acquirer(configuration: .init(host: "127.0.0.1", port: port))
    }

    static func rrn(_ attempt: AttemptIdentity) -> String {
        let parts = attempt.attemptReference.split(separator: "|")
        return parts.count > 2 ? String(parts[2]) : ""
    }
    func authorizations(of attempt: AttemptIdentity) async -> Int { host.authorizationCount(rrn: Self.rrn(attempt)) }
    /// Waits (up to 10 s) until the host has seen `request`'s authorization.
    func reachedTheHost(_ request: AuthorizationRequest) async throws {
        let rrn = String(request.attemptReference.split(separator: "|")[2])
        let limit = ContinuousClock.now + .seconds(10)
        while host.authorizationCount(rrn: rrn) == 0 {
            guard ContinuousClock.now < limit else { throw HostNeverSawIt() }
            try await Task.sleep(for: .milliseconds(10))
        }
    }
    func reversals(of attempt: AttemptIdentity) async -> Int { host.reversalCount(rrn: Self.rrn(attempt)) }
    func setFaults(_ faults: ConformanceFaults) async -> Bool {
        var f = AcquirerFaults()
        f.lateReplies = faults.lateReplies
        f.duplicateReplies = faults.duplicateReplies
        f.resetAfter = faults.resetAfter
        host.faults = f
        return true
    }
}

struct HostNeverSawIt: Error {}

@Suite struct ISO8583AcquirerTests {
    @Test(arguments: AcquirerConformance.checks)
    func conformance(_ check: AcquirerConformance.Check) async throws {
        let subject = try await ISO8583Subject()
        do {
            try await check.run(AcquirerConformance(subject: subject))
        } catch {
            await subject.server.stop()  // stopped whether the check passed or not
            throw error
        }
        await subject.server.stop()
    }

    /// A reply that comes after its authorization was given up on (the pipeline's deadline) is
    /// reported, with the payment and attempt it answers: an approval then holds money, and the
    /// pipeline sends the attempt's reversal again. Only once, and only for one given up on.
    @Test func aLateReplyToAnAuthorizationGivenUpOnIsReported() async throws {
        let subject = try await ISO8583Subject()
        defer { Task { await subject.server.stop() } }
        var faults = AcquirerFaults()
        faults.lateReplies = true  // the 0110 is held until the reversal, then sent after its 0410
        subject.host.faults = faults
        let reported = Mutex<[LateReply]>([])
        subject.iso.onLateReply { reply in reported.withLock { $0.append(reply) } }
        let kit = AcquirerConformance(subject: subject)
        let request = try kit.request(code: "00")
        let attempt = Task { try await subject.iso.authorize(request) }
        try await subject.reachedTheHost(request)
        attempt.cancel()  // what the pipeline's deadline does
        _ = try? await attempt.value
        #expect(try await subject.iso.reverse(kit.reversal(of: request)) == .reversed)
        let limit = ContinuousClock.now + .seconds(10)
        while reported.withLock({ $0.isEmpty }), ContinuousClock.now < limit { try await Task.sleep(for: .milliseconds(10)) }
        try await Task.sleep(for: .milliseconds(100))
        #expect(reported.withLock { $0 } == [LateReply(pspTransactionId: request.pspTransactionId, attemptReference: request.attemptReference,
                                                       responseCode: "00", scheme: .visa)])
    }

    @Test func attemptReferencesAreUniqueAndWellFormed() throws {
        let adapter = ISO8583Acquirer(configuration: .init(host: "127.0.0.1", port: 1))
        let references = (0..<1000).map { adapter.attemptReference(for: "a\($0)") }
        #expect(Set(references).count == 1000)
        let parts = references[0].split(separator: "|")
        #expect(parts.count == 4 && parts[0].count == 6 && parts[1].count == 10 && parts[2].count == 12 && parts[3] == "VIPPS001")
        #expect(parts.prefix(3).allSatisfy { $0.allSatisfy(\.isNumber) })
        // A restarted process (a new adapter) does not hand out the RRNs or STANs of the last one.
        let restarted = ISO8583Acquirer(configuration: .init(host: "127.0.0.1", port: 1))
        let again = (0..<1000).map { restarted.attemptReference(for: "a\($0)") }
        let rrns = Set(references.map { $0.split(separator: "|")[2] })
        #expect(rrns.count == 1000 && rrns.isDisjoint(with: again.map { $0.split(separator: "|")[2] }))
        #expect(references[0].split(separator: "|")[0] != again[0].split(separator: "|")[0])
    }

    @Test func urlsParse() {
        #expect(ISO8583Acquirer.Configuration(url: "iso8583://127.0.0.1:8583")?.port == 8583)
        #expect(ISO8583Acquirer.Configuration(url: "iso8583://acq.example:9000")?.host == "acq.example")
        #expect(ISO8583Acquirer.Configuration(url: "http://x:1") == nil)
        #expect(ISO8583Acquirer.Configuration(url: "iso8583://[::1]:8583")?.host == "::1")
        #expect(ISO8583Acquirer.Configuration(url: "iso8583://127.0.0.1:70000") == nil)
        #expect(ISO8583Acquirer.Configuration(url: "iso8583://:8583") == nil)
        #expect(ISO8583Acquirer.Configuration(url: "iso8583://127.0.0.1:8583")?.terminalId == "VIPPS001")
        #expect(ISO8583Acquirer.Configuration(url: "iso8583://127.0.0.1:8583?terminal=VIPPS002")?.terminalId == "VIPPS002")
        #expect(ISO8583Acquirer.Configuration(url: "iso8583://127.0.0.1:8583?terminal=SHORT") == nil)
        #expect(ISO8583Acquirer.Configuration(url: "iso8583://127.0.0.1:8583?term=VIPPS002") == nil)
        #expect(ISO8583Acquirer.Configuration(url: "iso8583://nohost") == nil)
    }

    /// Two processes on one store, each with its own terminal: the one that finds another's
    /// attempt (after a crash) reverses it under the original's terminal, which the reference
    /// carries; a host that matches reversals by terminal finds it.
    @Test func anotherProcessReversesUnderTheOriginalsTerminal() async throws {
        let subject = try await ISO8583Subject()  // this process: VIPPS001
        defer { Task { await subject.server.stop() } }
        var theirs = ISO8583Acquirer.Configuration(host: "127.0.0.1", port: subject.port)
        theirs.terminalId = "VIPPS002"
        let other = ISO8583Acquirer(configuration: theirs)
        let text = SimulatorAcquirer.testCard(code: "00") + ",3012,other"
        let plaintext = UnsafeMutableRawBufferPointer.allocate(byteCount: text.utf8.count, alignment: 1)
        defer { plaintext.deallocate() }
        _ = plaintext.initializeMemory(as: UInt8.self, from: text.utf8)
        let card = try CardData.parse(UnsafeRawBufferPointer(plaintext), currentMonth: CardExpiry(year: 2026, month: 1)!)
        let request = AuthorizationRequest(pspTransactionId: "terminal-1", attemptId: "terminal-1-a",
                                           attemptReference: other.attemptReference(for: "terminal-1-a"),
                                           merchantSerialNumber: "123456", amount: 1000, currency: "NOK", card: card)
        #expect(try await other.authorize(request).responseCode == "00")
        let reversal = ReversalRequest(reversalId: request.attemptId + "-R", pspTransactionId: request.pspTransactionId,
                                       attemptId: request.attemptId, attemptReference: request.attemptReference,
                                       amount: request.amount, currency: request.currency, merchantSerialNumber: request.merchantSerialNumber)
        #expect(try await subject.iso.reverse(reversal) == .reversed)
        #expect(subject.host.reversalCount(rrn: String(request.attemptReference.split(separator: "|")[2])) == 1)
    }

    /// A host gone silent (its process hung, or a firewall dropped the session without a reset):
    /// after three requests in a row given up on with nothing from the host, the connection is
    /// closed, so a request still waiting on it fails at once (an unknown outcome, reversed) instead
    /// of waiting until the kernel gives up on the socket; the next request connects again.
    @Test func aSilentHostsConnectionIsClosed() async throws {
        let subject = try await ISO8583Subject()
        defer { Task { await subject.server.stop() } }
        let kit = AcquirerConformance(subject: subject)
        var silent = AcquirerFaults()
        silent.dropRate = 1
        subject.host.faults = silent
        let iso = subject.iso
        let first = try kit.request(code: "00")
        let waiting = Task { try await iso.authorize(first) }  // no deadline of its own
        try await subject.reachedTheHost(first)
        for _ in 0..<3 {
            let request = try kit.request(code: "00")
            let attempt = Task { try await iso.authorize(request) }
            try await subject.reachedTheHost(request)
            attempt.cancel()  // what the pipeline's deadline does
            _ = try? await attempt.value
        }
        let failedFast = await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                do { _ = try await waiting.value; return false } catch { return error is AcquirerUnavailable }
            }
            group.addTask { try? await Task.sleep(for: .seconds(5)); return false }
            let result = await group.next() ?? false
            waiting.cancel()
            group.cancelAll()
            return result
        }
        #expect(failedFast, "the request left on the silent connection failed when it was closed")
        subject.host.faults = AcquirerFaults()
        #expect(try await iso.authorize(try kit.request(code: "00")).responseCode == "00", "a new connection")
    }

    /// Requests that time out together while the host answers others (cards it never answers,
    /// replies it loses) are not a silent host: the connection stays, and what waits on it too.
    @Test func timeoutsWhileTheHostAnswersOthersKeepTheConnection() async throws {
        let subject = try await ISO8583Subject()
        defer { Task { await subject.server.stop() } }
        let kit = AcquirerConformance(subject: subject)
        let iso = subject.iso
        let finished = Mutex(false)
        let first = try kit.request(code: "99")  // never answered; no deadline of its own
        let waiting = Task {
            _ = try? await iso.authorize(first)
            finished.withLock { $0 = true }
        }
        try await subject.reachedTheHost(first)
        var unanswered: [Task<AcquirerAnswer, any Error>] = []
        for _ in 0..<3 {
            let request = try kit.request(code: "99")
            unanswered.append(Task { try await iso.authorize(request) })
            try await subject.reachedTheHost(request)
        }
        // The host answers another request after those went out, then all three give up at once.
        #expect(try await iso.authorize(try kit.request(code: "00")).responseCode == "00")
        unanswered.forEach { $0.cancel() }
        for task in unanswered { _ = try? await task.value }
        try await Task.sleep(for: .milliseconds(300))
        #expect(!finished.withLock { $0 }, "the connection was kept: the request waiting on it still waits")
        waiting.cancel()
        _ = await waiting.value
    }

    /// A repeat (0401) is its 0400 again with only the MTI changed: same STAN, same time.
    @Test func aRepeatIsTheSameReversalWithAnotherMTI() async throws {
        let subject = try await ISO8583Subject()
        defer { Task { await subject.server.stop() } }
        let kit = AcquirerConformance(subject: subject)
        let request = try kit.request(code: "00")
        #expect(try await subject.iso.authorize(request).responseCode == "00")
        var reversal = ReversalRequest(reversalId: request.attemptId + "-R", pspTransactionId: request.pspTransactionId,
                                       attemptId: request.attemptId, attemptReference: request.attemptReference,
                                       amount: request.amount, currency: request.currency, merchantSerialNumber: request.merchantSerialNumber)
        #expect(try await subject.iso.reverse(reversal) == .reversed)
        _ = subject.iso.attemptReference(for: "another")  // other messages take STANs in between
        try await Task.sleep(for: .milliseconds(1_100))    // and the clock moves on
        reversal.sendCount = 2
        #expect(try await subject.iso.reverse(reversal) == .reversed)
        let journal = subject.host.journal
        #expect(journal.repeats == 1 && journal.totalReversals == 1)
        #expect(journal.repeatsWithAnotherSTAN == 0)
    }

    /// A connection that cannot be made carried nothing: 85 with nothing to reverse, the first
    /// time as during the back-off that follows.
    @Test func unreachableHostIsNotSentNotACrash() async throws {
        let adapter = ISO8583Acquirer(configuration: .init(host: "127.0.0.1", port: 1))
        for _ in 0..<2 {
            let request = try AcquirerConformance.request(code: "00", attemptReference: adapter.attemptReference(for:))
            let error = await #expect(throws: AcquirerUnavailable.self) { _ = try await adapter.authorize(request) }
            #expect(error?.neverSent == true)
        }
    }
}
