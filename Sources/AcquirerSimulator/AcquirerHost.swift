import Acquiring
import Foundation
import Synchronization

/// Faults the simulated acquirer host injects, settable while it runs.
public struct AcquirerFaults: Sendable, Equatable {
    /// Added before every reply.
    public var delay: Duration = .zero
    /// A random extra delay up to this, on top of `delay`.
    public var jitter: Duration = .zero
    /// Share of authorization replies never sent (0...1).
    public var dropRate: Double = 0
    /// Every Nth authorization reply is never sent (0: none).
    public var dropEvery = 0
    /// Authorization replies are held until the reversal of that authorization arrives, then sent
    /// after its 0410: a reply that comes after its requester gave up.
    public var lateReplies = false
    /// Every reply is sent twice.
    public var duplicateReplies = false
    /// A connection is closed, without a reply, when it has carried this many messages (0: never).
    public var resetAfter = 0

    public init() {}
}

/// What the host saw: every authorization and reversal, by retrieval reference number (RRN), so
/// tests can prove nothing was authorized twice and every unknown outcome was reversed once.
public struct AcquirerJournal: Sendable, Equatable {
    public var authorizations: [String: Int] = [:]
    public var reversals: [String: Int] = [:]
    public var repeats = 0
    /// ISO 8583 only: 0401 repeats whose STAN was not their 0400's (a repeat is the same message
    /// with only the MTI changed). Zero unless a process restarted between the two sends (or the
    /// host answered 94, which this one never does).
    public var repeatsWithAnotherSTAN = 0
    /// The STAN of each RRN's first reversal, to check its repeats against.
    var reversalSTANs: [String: String] = [:]
    public var dropped = 0
    public var lateSent = 0

    public var totalAuthorizations: Int { authorizations.values.reduce(0, +) }
    public var totalReversals: Int { reversals.values.reduce(0, +) }
    /// RRNs authorized more than once: must be empty.
    public var authorizedTwice: [String] { authorizations.filter { $0.value > 1 }.map(\.key).sorted() }
    /// RRNs reversed more than once (first sends, not 0401 repeats): must be empty.
    public var reversedTwice: [String] { reversals.filter { $0.value > 1 }.map(\.key).sorted() }

    /// The journal as JSON (sorted keys): what `--journal FILE` and `GET /journal` give.
    public func json() throws -> Data {
        let object: [String: Any] = [
            "authorizations": authorizations, "reversals": reversals,
            "totalAuthorizations": totalAuthorizations, "totalReversals": totalReversals,
            "reversalRepeats": repeats, "repeatsWithAnotherSTAN": repeatsWithAnotherSTAN, "droppedReplies": dropped, "lateReplies": lateSent,
            "authorizedTwice": authorizedTwice, "reversedTwice": reversedTwice,
        ]
        return try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
    }
}

/// The acquirer host behind both protocols of `acquirer-sim`: it answers by the simulator's test-card
/// rules (4000000000000RRC answers RR, 99 never answers, any other PAN is approved), applies the
/// faults, and keeps the journal.
public final class AcquirerHost: Sendable {
    private let faultState: Mutex<AcquirerFaults>
    private let journalState = Mutex(AcquirerJournal())
    private let authorizationsSeen = Atomic<Int>(0)
    private let approvals = Atomic<Int>(0)

    public init(faults: AcquirerFaults = AcquirerFaults()) {
        faultState = Mutex(faults)
    }

    public var faults: AcquirerFaults {
        get { faultState.withLock { $0 } }
        set { faultState.withLock { $0 = newValue } }
    }

    public var journal: AcquirerJournal { journalState.withLock { $0 } }

    public func authorizationCount(rrn: String) -> Int { journalState.withLock { $0.authorizations[rrn] ?? 0 } }
    public func reversalCount(rrn: String) -> Int { journalState.withLock { $0.reversals[rrn] ?? 0 } }

    /// The decision for one authorization: the response code, or nil when no reply is to be sent.
    public struct Decision: Sendable {
        public var responseCode: String?
        public var authorizationCode: String?
        public var delay: Duration
        public var late: Bool
        public var duplicate: Bool
    }

    /// Records an authorization and decides its reply.
    public func authorize(rrn: String, panDigits: some Collection<UInt8>) -> Decision {
        let n = authorizationsSeen.add(1, ordering: .relaxed).newValue
        let f = faults
        journalState.withLock { $0.authorizations[rrn, default: 0] += 1 }
        guard let code = SimulatorAcquirer.answerCode(asciiDigits: panDigits) else {
            return Decision(responseCode: nil, authorizationCode: nil, delay: .zero, late: false, duplicate: false)
        }
        let dropped = (f.dropEvery > 0 && n % f.dropEvery == 0) || (f.dropRate > 0 && Double.random(in: 0..<1) < f.dropRate)
        if dropped {
            journalState.withLock { $0.dropped += 1 }
            return Decision(responseCode: nil, authorizationCode: nil, delay: .zero, late: false, duplicate: false)
        }
        var authorizationCode: String?
        if SimulatorAcquirer.approves(code) {
            authorizationCode = String(100_000 + approvals.add(1, ordering: .relaxed).newValue % 900_000)
        }
        return Decision(responseCode: code, authorizationCode: authorizationCode, delay: replyDelay(f),
                        late: f.lateReplies, duplicate: f.duplicateReplies)
    }

    /// Records a reversal; true if the original authorization is known (answer 00, else 25).
    public func reverse(rrn: String, repeat isRepeat: Bool, stan: String? = nil) -> Bool {
        journalState.withLock { j in
            if isRepeat && (j.reversals[rrn] ?? 0) > 0 {
                j.repeats += 1
                if let stan, let first = j.reversalSTANs[rrn], first != stan { j.repeatsWithAnotherSTAN += 1 }
            } else {
                j.reversals[rrn, default: 0] += 1
                if let stan { j.reversalSTANs[rrn] = stan }
            }
            return j.authorizations[rrn] != nil
        }
    }

    func noteLateReply() { journalState.withLock { $0.lateSent += 1 } }

    public var replyDelay: Duration { replyDelay(faults) }

    private func replyDelay(_ f: AcquirerFaults) -> Duration {
        guard f.jitter > .zero else { return f.delay }
        return f.delay + f.jitter * Double.random(in: 0...1)
    }
}
