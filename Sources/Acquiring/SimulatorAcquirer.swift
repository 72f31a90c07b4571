import MakePayment
import Synchronization

/// The in-process acquirer, deterministic by test card, for development, tests and load tests.
///
/// A 16-digit PAN `4000000000000RRC` (13 digits `4000000000000`, the two-digit ISO 8583 response
/// code `RR`, the Luhn check digit `C`) is answered with `RR`; `RR` = `99` never answers (a
/// timeout). Every other valid PAN is approved. It counts authorizations and reversals per payment.
public final class SimulatorAcquirer: AcquirerAdapter, AuthorizationCounting {
    public let name = "simulator"
    /// Added before every answer, to make load tests realistic.
    public let latency: Duration
    /// Per payment, keyed by a 64-bit hash of its id (not a copy of the id), so that a long load run
    /// stays small: the payments authorized at least once (8 bytes each), and for the few authorized
    /// again or reversed, the authorizations after the first (low 32 bits) and the reversals (high
    /// 32 bits). One count per payment in a dictionary took twice the memory: a 5-minute soak at
    /// ~5,900/s outgrew its 1.5 M places and the table doubled (+32 MB of RSS at once).
    private struct Counts {
        var authorized: Set<Int>
        var more: [Int: UInt64] = [:]
    }
    private let counts: Mutex<Counts>

    private static func key(_ pspTransactionId: String) -> Int {
        var hasher = Hasher()
        hasher.combine(pspTransactionId)
        return hasher.finalize()
    }
    private let references: Atomic<Int> = Atomic(0)

    /// - Parameter expectedPayments: payments to make room for up front. A load run then keeps a
    ///   flat memory: a table that grows doubles, and each doubling is a step of RSS (4 MB at
    ///   ~390,000 payments, 8 MB at ~790,000). Room for 3 M payments (5 minutes at 10,000/s) takes
    ///   ~32 MB, resident within the first few ten thousand payments (hashes land on every page),
    ///   then flat.
    public init(latency: Duration = .zero, expectedPayments: Int = 0) {
        self.latency = latency
        counts = Mutex(Counts(authorized: Set(minimumCapacity: max(0, expectedPayments))))
    }

    /// The code a test card asks for, or nil for a PAN that is not a coded test card (approved).
    public static func testCardCode(_ pan: borrowing PrimaryAccountNumber) -> String? {
        pan.withASCIIDigits { testCardCode(asciiDigits: $0) }
    }

    /// The same rule on ASCII digits, for acquirer hosts that receive the PAN on the wire.
    public static func testCardCode(asciiDigits digits: some Collection<UInt8>) -> String? {
        guard digits.count == 16 else { return nil }
        var i = 0
        var code: [UInt8] = []
        for d in digits {
            if i == 0 && d != UInt8(ascii: "4") { return nil }
            if i > 0 && i < 13 && d != UInt8(ascii: "0") { return nil }
            if i == 13 || i == 14 { code.append(d) }
            i += 1
        }
        return String(decoding: code, as: UTF8.self)
    }

    /// What the simulator answers for a PAN: its test-card code, "00" for any other, nil for "never".
    public static func answerCode(asciiDigits digits: some Collection<UInt8>) -> String? {
        let code = testCardCode(asciiDigits: digits) ?? "00"
        return code == "99" ? nil : code
    }

    /// Whether an ISO 8583 code approves (the simulator's authorization code is given only then).
    public static func approves(_ code: String) -> Bool { code == "00" || code == "08" || code == "11" || code == "10" }

    /// The test card for a response code, e.g. "51" → 4000000000000515.
    public static func testCard(code: String) -> String {
        precondition(code.utf8.count == 2 && code.utf8.allSatisfy { $0 >= 48 && $0 <= 57 })
        let body = "4000000000000" + code
        return body + String(Luhn.checkDigit(for: body.utf8))
    }

    public func authorize(_ request: AuthorizationRequest) async throws -> AcquirerAnswer {
        // In process, the call is the send.
        if AuthorizationDeadline.passed { throw AuthorizationDeadline.notSent }
        let key = Self.key(request.pspTransactionId)
        counts.withLock { c in
            if !c.authorized.insert(key).inserted { c.more[key, default: 0] &+= 1 }
        }
        let code = Self.testCardCode(request.card.pan) ?? "00"
        if code == "99" {
            // Never answers: sleeps until the pipeline's deadline cancels it.
            try await Task.sleep(for: .seconds(3600))
            throw CancellationError()
        }
        if latency > .zero { try await Task.sleep(for: latency) }
        let reference = references.add(1, ordering: .relaxed).newValue
        let approved = Self.approves(code)
        return AcquirerAnswer(
            responseCode: code,
            message: approved ? "Approved" : "Declined",
            authorizationCode: approved ? String(100_000 + reference % 900_000) : nil,
            acquirerReference: "SIM" + String(reference),
            scheme: request.scheme
        )
    }

    public func reverse(_ reversal: ReversalRequest) async throws -> ReversalAnswer {
        if latency > .zero { try await Task.sleep(for: latency) }
        let key = Self.key(reversal.pspTransactionId)
        counts.withLock { $0.more[key, default: 0] &+= 1 << 32 }
        return .reversed
    }

    public func authorizationCount(pspTransactionId: String) -> Int {
        let key = Self.key(pspTransactionId)
        return counts.withLock { c in
            c.authorized.contains(key) ? 1 + Int(truncatingIfNeeded: (c.more[key] ?? 0) & 0xFFFF_FFFF) : 0
        }
    }

    public func reversalCount(pspTransactionId: String) -> Int {
        let key = Self.key(pspTransactionId)
        return Int(truncatingIfNeeded: counts.withLock { $0.more[key] ?? 0 } >> 32)
    }
}
