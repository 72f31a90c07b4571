import Acquiring
import CardCrypto
import MakePayment

/// The attempt an acquirer saw, as a subject can look it up.
public struct AttemptIdentity: Sendable {
    public var pspTransactionId: String
    public var attemptId: String
    public var attemptReference: String
}

/// Faults a conformance subject may be able to make its acquirer inject.
public struct ConformanceFaults: Sendable, Equatable {
    /// Authorization replies are held until the reversal arrives, then sent.
    public var lateReplies = false
    /// Every reply is sent twice.
    public var duplicateReplies = false
    /// The connection drops, unanswered, at its Nth message (0: never).
    public var resetAfter = 0
    public init(lateReplies: Bool = false, duplicateReplies: Bool = false, resetAfter: Int = 0) {
        self.lateReplies = lateReplies
        self.duplicateReplies = duplicateReplies
        self.resetAfter = resetAfter
    }
}

/// An adapter together with a view of the acquirer behind it, so the kit can count what reached it.
/// Implement this for your own adapter and acquirer test host to run the kit against it.
public protocol AcquirerConformanceSubject: Sendable {
    var adapter: any AcquirerAdapter { get }
    /// How many authorizations of this attempt the acquirer received.
    func authorizations(of attempt: AttemptIdentity) async -> Int
    /// How many reversals of this attempt the acquirer received (repeats of one reversal count once).
    func reversals(of attempt: AttemptIdentity) async -> Int
    /// Makes the acquirer inject `faults`; false when it cannot. A subject that cannot runs
    /// `AcquirerConformance.checksWithoutFaults`; the checks that need faults fail on it.
    func setFaults(_ faults: ConformanceFaults) async -> Bool
}

/// One conformance kit that every acquirer adapter runs: the in-process simulator, ISO 8583 and HTTP
/// JSON against `acquirer-sim`, and a PSP's own. The acquirer must answer by the simulator's test
/// cards (4000000000000RRC answers RR, 99 never answers, any other PAN is approved).
///
///     @Test(arguments: AcquirerConformance.checks)
///     func conforms(_ check: AcquirerConformance.Check) async throws {
///         try await check.run(AcquirerConformance(subject: MySubject()))
///     }
public struct AcquirerConformance: Sendable {
    public let subject: any AcquirerConformanceSubject
    /// The deadline the kit gives an authorization that must time out.
    public var shortDeadline: Duration = .milliseconds(400)
    /// The deadline for one that must be answered.
    public var deadline: Duration = .seconds(5)
    /// Authorizations in flight at once in the concurrency check.
    public var concurrency = 300

    public init(subject: any AcquirerConformanceSubject) {
        self.subject = subject
    }

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    public struct Check: Sendable, CustomStringConvertible {
        public let name: String
        /// The check makes the acquirer inject faults (`AcquirerConformanceSubject.setFaults`).
        public let needsFaults: Bool
        let body: @Sendable (AcquirerConformance) async throws -> Void
        init(name: String, needsFaults: Bool = false, body: @escaping @Sendable (AcquirerConformance) async throws -> Void) {
            self.name = name
            self.needsFaults = needsFaults
            self.body = body
        }
        public func run(_ kit: AcquirerConformance) async throws { try await body(kit) }
        public var description: String { name }
    }

    /// Every check, for a subject whose acquirer can inject faults.
    public static let checks: [Check] = [
        Check(name: "approval", body: { try await $0.approval() }),
        Check(name: "every mapped response code comes back raw", body: { try await $0.everyCode() }),
        Check(name: "timeout ends in exactly one acknowledged reversal", body: { try await $0.timeoutThenOneReversal() }),
        Check(name: "nothing is sent past the send deadline, and it says so", body: { try await $0.nothingSentPastTheSendDeadline() }),
        Check(name: "an approval is reversed, and a repeat of its reversal is the same one", body: { try await $0.approvalReversedAndRepeated() }),
        Check(name: "late reply is never matched to another request", needsFaults: true, body: { try await $0.lateReply() }),
        Check(name: "duplicate replies do not confuse later requests", needsFaults: true, body: { try await $0.duplicateReplies() }),
        Check(name: "dropped connection mid-flight is an unknown outcome, then recovers", needsFaults: true,
              body: { try await $0.droppedConnection() }),
        Check(name: "hundreds in flight are each answered their own", body: { try await $0.concurrency() }),
    ]

    /// The checks for a subject that cannot inject faults (request/response HTTP, an in-process
    /// acquirer): listed, a fault check would fail rather than pass having checked nothing.
    public static let checksWithoutFaults: [Check] = checks.filter { !$0.needsFaults }

    // MARK: helpers

    static func expect(_ condition: Bool, _ message: @autoclosure () -> String) throws {
        if !condition { throw Failure(description: message()) }
    }

    /// A request for a simulator test card; the PAN stays inside the request.
    public func request(code: String?, pan: String? = nil, amount: Int = 1000) throws -> AuthorizationRequest {
        let adapter = subject.adapter
        return try Self.request(code: code, pan: pan, amount: amount, attemptReference: adapter.attemptReference(for:))
    }

    /// The same without a subject (a test of an adapter alone): `attemptReference` is the
    /// adapter's `attemptReference(for:)`.
    public static func request(code: String?, pan: String? = nil, amount: Int = 1000,
                               attemptReference: (String) -> String) throws -> AuthorizationRequest {
        let number = pan ?? SimulatorAcquirer.testCard(code: code ?? "00")
        let text = number + ",3012,conformance"
        let plaintext = UnsafeMutableRawBufferPointer.allocate(byteCount: text.utf8.count, alignment: 1)
        defer { wipe(plaintext); plaintext.deallocate() }
        _ = plaintext.initializeMemory(as: UInt8.self, from: text.utf8)
        let card = try CardData.parse(UnsafeRawBufferPointer(plaintext), currentMonth: CardExpiry(year: 2026, month: 1)!)
        let attemptId = Secrets.hexString(Secrets.randomBytes(8))
        return AuthorizationRequest(
            pspTransactionId: "conf-" + attemptId, attemptId: attemptId,
            attemptReference: attemptReference(attemptId),
            merchantSerialNumber: "123456", amount: amount, currency: "NOK", card: card)
    }

    func identity(_ r: AuthorizationRequest) -> AttemptIdentity {
        AttemptIdentity(pspTransactionId: r.pspTransactionId, attemptId: r.attemptId, attemptReference: r.attemptReference)
    }

    public func reversal(of r: AuthorizationRequest, sendCount: Int = 1) -> ReversalRequest {
        ReversalRequest(reversalId: ReversalRequest.reversalId(of: r.attemptId), pspTransactionId: r.pspTransactionId, attemptId: r.attemptId,
                        attemptReference: r.attemptReference, amount: r.amount, currency: r.currency,
                        merchantSerialNumber: r.merchantSerialNumber, sendCount: sendCount)
    }

    func authorize(_ r: AuthorizationRequest, within: Duration? = nil) async -> DeadlineResult {
        let adapter = subject.adapter
        return await DeadlineResult(withDeadline(within ?? deadline) { try await adapter.authorize(r) })
    }

    /// `withDeadline`'s outcome without the generic payload, for messages.
    enum DeadlineResult: CustomStringConvertible {
        case answer(AcquirerAnswer), failed(String), timedOut
        init(_ outcome: DeadlineOutcome<AcquirerAnswer>) {
            switch outcome {
            case .value(let answer): self = .answer(answer)
            case .failed(let error): self = .failed("\(error)")
            case .timedOut: self = .timedOut
            }
        }
        var description: String {
            switch self {
            case .answer(let a): "answer \(a.responseCode)"
            case .failed(let e): "error \(e)"
            case .timedOut: "timed out"
            }
        }
        var code: String? { if case .answer(let a) = self { a.responseCode } else { nil } }
    }

    func settle() async { try? await Task.sleep(for: .milliseconds(150)) }

    // MARK: checks

    func approval() async throws {
        let r = try request(code: "00")
        let result = await authorize(r)
        guard case .answer(let answer) = result else { throw Failure(description: "approval: \(result)") }
        try Self.expect(answer.responseCode == "00", "approval answered \(answer.responseCode)")
        try Self.expect(answer.authorizationCode?.isEmpty == false, "an approval carries an authorization code")
        try Self.expect(await subject.authorizations(of: identity(r)) == 1, "the acquirer saw the authorization once")
    }

    func everyCode() async throws {
        let codes = ResponseCodeTable.iso8583Defaults.keys.sorted() + ["42", "77"]
        for code in codes {
            let result = await authorize(try request(code: code))
            try Self.expect(result.code == code, "test card for \(code): \(result)")
        }
    }

    func timeoutThenOneReversal() async throws {
        // Connected first: on a busy machine a first connection can outlast the short deadline,
        // and an authorization never sent proves nothing here.
        _ = await authorize(try request(code: "00"))
        let r = try request(code: "99")
        let result = await authorize(r, within: shortDeadline)
        try Self.expect(result.code == nil, "a card that never answers must not be answered: \(result)")
        let answer = try await subject.adapter.reverse(reversal(of: r))
        try Self.expect(answer == .reversed, "the acquirer holds the timed-out authorization, so it is reversed: \(answer)")
        await settle()
        try Self.expect(await subject.reversals(of: identity(r)) == 1, "exactly one reversal reached the acquirer")
        try Self.expect(await subject.authorizations(of: identity(r)) == 1, "the timed-out authorization was sent once, never again")
    }

    /// Past `AuthorizationDeadline.sendBy` (a process frozen between recording the attempt and
    /// sending it) nothing may go out, and the adapter must say so (`neverSent`): the pipeline
    /// then answers 85 without a reversal. An adapter that sent anyway, or that failed without
    /// saying nothing left, would leave an authorization standing or reverse for nothing.
    func nothingSentPastTheSendDeadline() async throws {
        _ = await authorize(try request(code: "00"))  // connected first, as a worker would be
        let r = try request(code: "00")
        let adapter = subject.adapter
        let outcome = await withDeadline(deadline) {
            try await AuthorizationDeadline.$sendBy.withValue(.now - .seconds(1)) { try await adapter.authorize(r) }
        }
        guard case .failed(let error) = outcome, (error as? AcquirerUnavailable)?.neverSent == true else {
            throw Failure(description: "past its send deadline an authorization must fail as never sent: \(DeadlineResult(outcome))")
        }
        await settle()
        try Self.expect(await subject.authorizations(of: identity(r)) == 0, "past its send deadline the authorization reached the acquirer")
    }

    /// The worker reverses approvals too (a partial approval, 68, an approval of another amount
    /// or one that came too late), and may send one reversal more than once (a repeat after no
    /// answer, two processes' sweeps): each must be acknowledged, not refused as an error.
    func approvalReversedAndRepeated() async throws {
        let r = try request(code: "00")
        let result = await authorize(r)
        try Self.expect(result.code == "00", "approval: \(result)")
        let first = try await subject.adapter.reverse(reversal(of: r))
        try Self.expect(first == .reversed, "the acquirer holds the approval, so it is reversed: \(first)")
        let repeated = try await subject.adapter.reverse(reversal(of: r, sendCount: 2))
        try Self.expect(repeated == .reversed || repeated == .noOriginal, "a repeat of a reversal is acknowledged: \(repeated)")
        try Self.expect(await subject.authorizations(of: identity(r)) == 1, "the approval was sent once")
    }

    /// Makes the acquirer inject `faults`, or fails: a fault check that could not inject its fault has checked nothing.
    func injectFaults(_ faults: ConformanceFaults) async throws {
        try Self.expect(await subject.setFaults(faults), "this subject cannot inject faults: run AcquirerConformance.checksWithoutFaults")
    }

    func lateReply() async throws {
        try await injectFaults(ConformanceFaults(lateReplies: true))
        let r = try request(code: "00")
        let result = await authorize(r, within: shortDeadline)
        try Self.expect(result.code == nil, "with late replies the authorization must time out: \(result)")
        _ = await subject.setFaults(ConformanceFaults())
        _ = try await subject.adapter.reverse(reversal(of: r))
        await settle()  // the late 0110 arrives now, and must be dropped
        let next = await authorize(try request(code: "51"))
        try Self.expect(next.code == "51", "the next request must get its own answer, not the late one: \(next)")
        try Self.expect(await subject.reversals(of: identity(r)) == 1, "the late-answered attempt was reversed once")
    }

    func duplicateReplies() async throws {
        try await injectFaults(ConformanceFaults(duplicateReplies: true))
        defer { Task { _ = await subject.setFaults(ConformanceFaults()) } }
        for code in ["00", "51", "05", "00"] {
            let result = await authorize(try request(code: code))
            try Self.expect(result.code == code, "with duplicate replies, card \(code) got \(result)")
        }
        _ = await subject.setFaults(ConformanceFaults())
    }

    /// A connection that drops once the authorization was written: an unknown outcome, never
    /// `neverSent` (the bytes may have reached the acquirer, which must then see a reversal), and
    /// never sent again on the next connection (the pipeline decides on retries).
    func droppedConnection() async throws {
        try await injectFaults(ConformanceFaults(resetAfter: 1))
        let r = try request(code: "00")
        let adapter = subject.adapter
        let outcome = await withDeadline(deadline) { try await adapter.authorize(r) }
        _ = await subject.setFaults(ConformanceFaults())
        let result = DeadlineResult(outcome)
        try Self.expect(result.code == nil, "a request whose connection dropped has an unknown outcome: \(result)")
        if case .failed(let error) = outcome {
            try Self.expect((error as? AcquirerUnavailable)?.neverSent != true,
                            "an authorization whose connection dropped after it was written may have been received: not neverSent (\(error))")
        }
        _ = try await subject.adapter.reverse(reversal(of: r))
        var after = await authorize(try request(code: "00"))
        if after.code == nil {  // a connection may be in back-off for a moment
            try? await Task.sleep(for: .seconds(1))
            after = await authorize(try request(code: "00"))
        }
        try Self.expect(after.code == "00", "the adapter must reconnect after a dropped connection: \(after)")
        try Self.expect(await subject.authorizations(of: identity(r)) <= 1, "the authorization whose connection dropped was sent again")
    }

    func concurrency() async throws {
        let codes = ["00", "51", "05", "14", "91", "00", "54", "61"]
        let requests = try (0..<concurrency).map { try request(code: codes[$0 % codes.count]) }
        let kit = self
        let wrong = await withTaskGroup(of: String?.self) { group in
            for (i, r) in requests.enumerated() {
                let expected = codes[i % codes.count]
                group.addTask {
                    let result = await kit.authorize(r)
                    return result.code == expected ? nil : "card \(expected) got \(result)"
                }
            }
            return await group.reduce(into: [String]()) { if let w = $1 { $0.append(w) } }
        }
        try Self.expect(wrong.isEmpty, "\(wrong.count) of \(concurrency) concurrent requests answered wrongly, e.g. \(wrong.prefix(3))")
        for r in requests.prefix(20) {
            try Self.expect(await subject.authorizations(of: identity(r)) == 1, "each concurrent authorization reached the acquirer once")
        }
    }
}
