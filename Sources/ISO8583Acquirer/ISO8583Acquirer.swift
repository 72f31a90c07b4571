import Acquiring
import CardCrypto
import ISO8583
import Logging
import MakePayment
import NIOCore
import NIOPosix
import Synchronization

/// An acquirer host reached over TCP with ISO 8583:1987 (ASCII, jPOS's ISO87APackager), each message
/// behind a 2-byte length. One persistent connection carries many authorizations at once; replies
/// are matched on MTI class + field 41 + field 11 (as jPOS's QMUX does); every attempt gets its own
/// STAN and RRN; the connection is re-opened with back-off; a reply that comes after its request
/// gave up is never matched to another request: one answering an authorization given up on goes
/// to `onLateReply` (an approval then means money is held), any other is logged and dropped.
///
/// Messages: 0100/0110 authorization (fields 2, 3, 4, 7, 11, 12, 13, 14, 22, 25, 37, 41, 42, 48, 49),
/// 0400/0410 reversal and 0401 repeats (field 90: original MTI, STAN, transmission time, acquirer),
/// 0800/0810 echo as a keep-alive.
public final class ISO8583Acquirer: AcquirerAdapter, LateReplyReporting {
    public struct Configuration: Sendable {
        public var host: String
        public var port: Int
        /// Field 41, card acceptor terminal id (8 characters). Each process on one store needs its
        /// own (`?terminal=` in the URL): STANs are unique per terminal only within one process.
        public var terminalId = Configuration.legacyTerminalId
        /// The terminal of attempts recorded before references named theirs: the only one there was.
        static let legacyTerminalId = "VIPPS001"
        /// Field 32 and in field 90: the acquiring institution id.
        public var acquiringInstitutionId = "12345678901"
        public var connectTimeout: Duration = .seconds(2)
        /// An echo is sent when nothing has come from the host for this long.
        public var echoInterval: Duration = .seconds(30)
        /// An echo not answered within this closes the connection.
        public var echoTimeout: Duration = .seconds(10)
        /// This many requests in a row given up on (their deadline passed) with nothing at all
        /// from the host since each was sent close the connection: a host that went silent, or a
        /// session a firewall dropped without a reset, would otherwise keep every request waiting
        /// until the kernel gave up on the socket (many minutes). Requests that time out while
        /// the host answers others (a reply lost, a slow issuer) do not count.
        public var unansweredBeforeReconnect = 3
        public var minimumBackoff: Duration = .milliseconds(100)
        public var maximumBackoff: Duration = .seconds(5)

        public init(host: String, port: Int) {
            self.host = host
            self.port = port
        }

        /// `iso8583://HOST:PORT` or `iso8583://HOST:PORT?terminal=TERMINAL` (8 characters).
        public init?(url: String) {
            guard url.hasPrefix("iso8583://") else { return nil }
            var rest = url.dropFirst("iso8583://".count)
            var terminal: Substring?
            if let query = rest.firstIndex(of: "?") {
                let parameter = rest[rest.index(after: query)...]
                guard parameter.hasPrefix("terminal=") else { return nil }
                terminal = parameter.dropFirst("terminal=".count)
                rest = rest[..<query]
            }
            guard let colon = rest.lastIndex(of: ":"), let port = Int(rest[rest.index(after: colon)...]), (1...65_535).contains(port) else { return nil }
            var host = rest[..<colon]
            // An IPv6 address is written in brackets in a URL ([::1]:8583), and connected to without them.
            if host.hasPrefix("["), host.hasSuffix("]") { host = host.dropFirst().dropLast() }
            guard !host.isEmpty else { return nil }
            self.init(host: String(host), port: port)
            if let terminal {
                guard Self.isTerminalId(terminal) else { return nil }
                terminalId = String(terminal)
            }
        }

        /// Field 41 is ans 8; "|" is kept out, since the attempt reference uses it as a separator.
        static func isTerminalId(_ text: Substring) -> Bool {
            text.utf8.count == 8 && text.utf8.allSatisfy { $0 >= 0x20 && $0 < 0x7F && $0 != UInt8(ascii: "|") }
        }
    }

    public let name = "iso8583"
    public let configuration: Configuration
    private let group: any EventLoopGroup
    private let logger: Logger
    private let state = Mutex(State())
    /// Both start at a random point in each process, so a restart does not hand out the STANs and
    /// RRNs the previous process used (a reversal after a crash names its original by them).
    private let stanCounter = Atomic<Int>(Int.random(in: 0..<999_999))
    private let rrnCounter = Atomic<UInt64>(UInt64.random(in: 0..<1_000_000_000_000))
    private let clock: @Sendable () -> Int64

    struct State {
        var channel: (any Channel)?
        var connecting: EventLoopFuture<any Channel>?
        var pending: [String: Waiting] = [:]
        var nextConnectAllowed: ContinuousClock.Instant = .now
        var backoff: Duration = .zero
        /// When the host last sent anything on the current connection.
        var lastReceived: ContinuousClock.Instant = .now
        /// Requests given up on since the host last sent anything.
        var unansweredInARow = 0
        /// Authorizations given up on (their deadline passed) by RRN, for a reply that still
        /// comes: at most `givenUpLimit`, the oldest dropped first. By RRN (unique), not by match
        /// key: a STAN that comes round again while an old attempt's reply is still due must not
        /// forget that attempt.
        var givenUp = RecentMap<String, GivenUp>(limit: ISO8583Acquirer.givenUpLimit)
        /// The RRN given up on under each match key, for a reply without field 37; a key reused
        /// drops its entry (terminal and STAN then name the newer request).
        var givenUpByKey = RecentMap<String, String>(limit: ISO8583Acquirer.givenUpLimit)
        var lateReplyHandler: (@Sendable (LateReply) -> Void)?

        /// A request whose outcome became unknown (its deadline passed, its write failed, its
        /// connection dropped): an authorization is remembered for a reply that still comes.
        @discardableResult
        mutating func giveUp(_ key: String, _ waiting: Waiting) -> Waiting {
            if let givenUp = waiting.givenUp {
                self.givenUp.set(givenUp, for: givenUp.rrn)
                givenUpByKey.set(givenUp.rrn, for: key)
            }
            return waiting
        }

        /// The authorization given up on that `reply` (an 0110 nobody waits for) answers, taken
        /// out: by its field 37, or, without one, by its match key.
        mutating func takeGivenUp(answeredBy reply: ISOMessage, key: String?) -> GivenUp? {
            guard reply.mti == "0110", let rrn = reply[37] ?? key.flatMap({ givenUpByKey[$0] }),
                  let found = givenUp.removeValue(forKey: rrn) else { return nil }
            if let key, givenUpByKey[key] == rrn { givenUpByKey.removeValue(forKey: key) }
            return found
        }
    }

    /// A request sent (or about to be) and waiting for its reply.
    struct Waiting {
        let continuation: CheckedContinuation<ISOMessage, any Error>
        /// The connection it was sent on: lost, it fails the requests sent on it, even once a new
        /// connection has taken its place (NIO marks a channel inactive before it says so).
        let channel: ObjectIdentifier
        /// An authorization's, remembered if its outcome becomes unknown (`giveUp`).
        let givenUp: GivenUp?
        /// What its reply must be: the message type (nil: any response in the key's class) and
        /// field 37 as sent (nil: none), when the reply names one.
        let replyMTI: String?
        let rrn: String?

        /// Whether `reply`, under this request's match key, answers it. Terminal and STAN come
        /// round again: a reply to an older request under the same key (or a host's mistake) must
        /// not take this request's place, or this request's own reply, coming after, would find
        /// nobody waiting and be dropped (an approval lost, its hold never released).
        func isAnswered(by reply: ISOMessage) -> Bool {
            if let replyMTI, reply.mti != replyMTI { return false }
            if let rrn, let named = reply[37], named != rrn { return false }
            return true
        }
    }

    struct GivenUp {
        let pspTransactionId: String
        let attemptReference: String
        let scheme: CardScheme
        /// Field 37 as sent: after the STANs have gone round, terminal and STAN alone could pair
        /// an old attempt's late reply with a newer one given up on under the same key.
        let rrn: String
    }

    /// How many given-up authorizations are remembered for a late reply: minutes of them at
    /// thousands a second would be a host in trouble, and the oldest are the least likely to answer.
    static let givenUpLimit = 100_000

    public init(configuration: Configuration, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
                logger: Logger = Logger(label: "psp-worker.iso8583"),
                clock: @escaping @Sendable () -> Int64 = wallClockMilliseconds) {
        self.configuration = configuration
        self.group = group
        self.logger = logger
        self.clock = clock
    }

    // MARK: identifiers

    /// A new STAN, 000001-999999, unique among the messages in flight.
    func nextSTAN() -> String {
        let n = stanCounter.add(1, ordering: .relaxed).newValue
        return digits((n - 1) % 999_999 + 1, width: 6)
    }

    /// "STAN|MMDDhhmmss|RRN|TERMINAL": the STAN, transmission time, retrieval reference number and
    /// terminal id the authorization will carry; recorded before it is sent, so that a reversal,
    /// sent after a crash by whichever process finds it, names the original as it went out.
    public func attemptReference(for attemptId: String) -> String {
        let stan = nextSTAN()
        let now = ISOClock(milliseconds: clock())
        // RRN (field 37): 12 digits from a sequence of 10^12. Not the common YDDDhh + STAN: the STAN
        // wraps after 999,999 messages (10 minutes at 1,600/s), and a host that matches reversals
        // by RRN would then undo a newer authorization.
        let rrn = digits(Int(rrnCounter.add(1, ordering: .relaxed).oldValue % 1_000_000_000_000), width: 12)
        return stan + "|" + now.transmission + "|" + rrn + "|" + configuration.terminalId
    }

    struct Reference {
        let stan: String, transmission: String, rrn: String
        /// Nil in references recorded before the terminal was part of them (then always the default).
        let terminal: String?
        init?(_ text: String) {
            let parts = text.split(separator: "|", omittingEmptySubsequences: false).map(String.init)
            guard parts.count == 3 || parts.count == 4, parts[0].count == 6, parts[1].count == 10, parts[2].count == 12 else { return nil }
            stan = parts[0]; transmission = parts[1]; rrn = parts[2]
            if parts.count == 4 {
                guard Configuration.isTerminalId(Substring(parts[3])) else { return nil }
                terminal = parts[3]
            } else {
                terminal = nil
            }
        }
    }

    // MARK: AcquirerAdapter

    public func onLateReply(_ handler: @escaping @Sendable (LateReply) -> Void) {
        state.withLock { $0.lateReplyHandler = handler }
    }

    /// The 0100's fields 3, 4, 7, 11, 12 and 13: all fixed-width, so field 14 starts this far past field 2's digits.
    static let fixedFieldsBetweenPANAndExpiry = [3, 4, 7, 11, 12, 13].reduce(0) { $0 + ISO87APackager.spec(for: $1)!.length }

    public func authorize(_ request: AuthorizationRequest) async throws -> AcquirerAnswer {
        guard let reference = Reference(request.attemptReference) else {
            throw AcquirerUnavailable("attempt reference \(request.attemptReference) is not an ISO 8583 reference", neverSent: true)
        }
        guard let fields = Self.requestFields(amount: request.amount, currency: request.currency,
                                              merchantSerialNumber: request.merchantSerialNumber) else {
            throw AcquirerUnavailable(Self.unsendable, neverSent: true)
        }
        let now = ISOClock(milliseconds: clock())
        var message = ISOMessage(mti: "0100")
        let panLength = request.card.pan.count
        message[2] = String(repeating: "0", count: panLength)  // placeholder: the digits go straight into the frame
        message[3] = "000000"
        message[4] = fields.amount
        message[7] = reference.transmission
        message[11] = reference.stan
        message[12] = now.time
        message[13] = now.monthDay
        message[14] = "0000"       // placeholder, as field 2
        message[22] = "810"        // PAN entered by e-commerce, PIN capability unknown
        message[25] = "59"         // e-commerce
        message[32] = configuration.acquiringInstitutionId
        message[37] = reference.rrn
        let terminal = reference.terminal ?? Configuration.legacyTerminalId
        message[41] = terminal
        message[42] = fields.merchant
        message[48] = "WLT=VIPPS"  // wallet-initiated
        message[49] = fields.currency
        var frame: [UInt8]
        do { frame = try ISO87APackager.encode(message) } catch { throw AcquirerUnavailable("0100 not encoded: \(error)", neverSent: true) }
        // Field 2 follows the MTI, the bitmap(s) and its 2-digit length; field 14 follows field 2
        // and the fixed-width fields between.
        let panOffset = 4 + (message.needsSecondaryBitmap ? 32 : 16) + 2
        let expiryOffset = panOffset + panLength + Self.fixedFieldsBetweenPANAndExpiry
        request.card.pan.withASCIIDigits { pan in
            for i in 0..<panLength { frame[panOffset + i] = pan[i] }
        }
        request.card.expiry.withASCIIDigits { expiry in
            for i in 0..<4 { frame[expiryOffset + i] = expiry[i] }
        }
        defer { frame.withUnsafeMutableBytes { wipe($0) } }
        let reply = try await exchange(&frame, key: ISOMessage.matchKey(mtiClass: "01", terminal: terminal, stan: reference.stan), sendBy: AuthorizationDeadline.sendBy,
                                       givenUp: GivenUp(pspTransactionId: request.pspTransactionId, attemptReference: request.attemptReference,
                                                        scheme: request.scheme, rrn: reference.rrn),
                                       replyMTI: "0110", rrn: reference.rrn)
        // Terminal and STAN pair the reply with this request, and `received` takes only an 0110
        // naming this RRN (or none) for it; checked again here. The amount it names goes to the
        // pipeline, which refuses an approval of another amount (a partial approval without its
        // code 10).
        guard reply.mti == "0110" else { throw AcquirerUnavailable("\(reply.mti) in reply to an 0100") }
        if let named = reply[37], named != reference.rrn { throw AcquirerUnavailable("0110 names another RRN (field 37)") }
        guard let code = reply[39] else { throw AcquirerUnavailable("0110 without field 39") }
        return AcquirerAnswer(responseCode: code, message: nil, authorizationCode: reply[38]?.droppingTrailingSpaces(),
                              acquirerReference: reply[37] ?? reference.rrn, scheme: request.scheme,
                              amount: reply[4].map { Int($0) ?? -1 })
    }

    public func reverse(_ reversal: ReversalRequest) async throws -> ReversalAnswer {
        guard let original = Reference(reversal.attemptReference) else {
            throw AcquirerUnavailable("attempt reference \(reversal.attemptReference) is not an ISO 8583 reference")
        }
        guard let fields = Self.requestFields(amount: reversal.amount, currency: reversal.currency,
                                              merchantSerialNumber: reversal.merchantSerialNumber) else {
            throw AcquirerUnavailable(Self.unsendable)
        }
        let (stan, now) = reversalSend(reversal)
        var message = ISOMessage(mti: reversal.sendCount > 1 ? "0401" : "0400")
        message[3] = "000000"
        message[4] = fields.amount
        message[7] = now.transmission
        message[11] = stan
        message[12] = now.time
        message[13] = now.monthDay
        message[32] = configuration.acquiringInstitutionId
        message[37] = original.rrn
        // The original's terminal: a host that matches reversals by terminal and STAN finds it.
        let terminal = original.terminal ?? Configuration.legacyTerminalId
        message[41] = terminal
        message[42] = fields.merchant
        message[49] = fields.currency
        // Original data elements: MTI, STAN, transmission time, acquiring and forwarding institutions.
        message[90] = "0100" + original.stan + original.transmission
            + digits(Int(configuration.acquiringInstitutionId) ?? 0, width: 11) + String(repeating: "0", count: 11)
        var frame = try ISO87APackager.encode(message)
        let reply = try await exchange(&frame, key: ISOMessage.matchKey(mtiClass: "04", terminal: terminal, stan: stan), rrn: original.rrn)
        // Terminal and STAN pair a reply with its request, and a STAN comes round again after
        // 999,999 messages: an 0410 that names another original (a late reply to an older reversal
        // that had this STAN) is no answer to this one, and taking it would leave this original
        // unreversed. `received` does not take one for it; checked again here (a failed try, and
        // the reversal is sent again).
        if let named = reply[37], named != original.rrn {
            throw AcquirerUnavailable("0410 names another original (field 37)")
        }
        // 25: the host cannot find the original (yet). Not 94 (duplicate): a host that keeps
        // its answers by STAN says it to a repeat of an 0400 it answered 25, undone nothing.
        switch reply[39] {
        case "00": return .reversed
        case "25": return .noOriginal
        case "94":
            // The host already has a message under this terminal and STAN (another process's on
            // that terminal, say): a repeat under the same STAN would be told 94 again, every try.
            forgetFirstSend(of: reversal)
            throw AcquirerUnavailable("reversal refused with 94 (duplicate transmission)")
        default: throw AcquirerUnavailable("reversal refused with \(reply[39] ?? "no code")")
        }
    }

    /// The STAN and transmission time of a reversal's send: a repeat (0401) is the 0400 again with
    /// only the MTI changed, as ISO 8583 has it, so it reuses the first send's when this process
    /// made it (after a restart a repeat gets its own; field 90 still names the original). Not
    /// once the STANs have gone half-way round since: a new message could then be given the same
    /// STAN on the same terminal, and the two replies be taken for each other's.
    private func reversalSend(_ reversal: ReversalRequest) -> (stan: String, clock: ISOClock) {
        firstReversalSends.withLock { sends in
            let issued = stanCounter.load(ordering: .relaxed)
            if reversal.sendCount > 1, let first = sends[reversal.reversalId], issued - first.issued < Self.stanReuseLimit {
                return (first.stan, first.clock)
            }
            let first = (stan: nextSTAN(), clock: ISOClock(milliseconds: clock()), issued: issued)
            // Bounded: repeats follow within hours; the oldest are forgotten first.
            sends.set(first, for: reversal.reversalId)
            return (first.stan, first.clock)
        }
    }
    /// The next repeat gets a STAN of its own (an 0401 still; field 90 names the original), as
    /// after a restart: the host took this one for another message's (94).
    private func forgetFirstSend(of reversal: ReversalRequest) {
        _ = firstReversalSends.withLock { $0.removeValue(forKey: reversal.reversalId) }
    }
    private let firstReversalSends = Mutex(RecentMap<String, (stan: String, clock: ISOClock, issued: Int)>(limit: rememberedReversals))
    static let rememberedReversals = 10_000
    /// How many STANs may be issued after a reversal's first send for a repeat still to reuse its
    /// STAN: half the 999,999 there are.
    public static let stanReuseLimit = 500_000

    /// Sends an 0800 echo and waits for its 0810.
    public func echo() async throws {
        let stan = nextSTAN()
        var message = ISOMessage(mti: "0800")
        message[7] = ISOClock(milliseconds: clock()).transmission
        message[11] = stan
        message[41] = configuration.terminalId
        message[70] = "301"
        var frame = try ISO87APackager.encode(message)
        _ = try await exchange(&frame, key: ISOMessage.matchKey(mtiClass: "08", terminal: configuration.terminalId, stan: stan))
    }

    /// Keeps the connection alive with echoes when the host has been quiet, until cancelled. An
    /// echo that fails or is not answered in `echoTimeout` closes the connection (the next
    /// request opens a new one), so a dead session is found even with no payments coming.
    public func runKeepAlive() async {
        while !Task.isCancelled {
            // Wakes when the host will have been quiet for an interval, not an interval after the
            // last look (traffic just after a look would put the echo off to nearly two intervals
            // of silence, past a host's idle timer); at most ten looks an interval.
            let due = state.withLock { $0.lastReceived } + configuration.echoInterval
            try? await Task.sleep(until: max(due, .now + configuration.echoInterval / 10), clock: .continuous)
            let quiet = state.withLock { ContinuousClock.now - $0.lastReceived >= configuration.echoInterval }
            guard quiet, let channel = state.withLock({ $0.channel }) else { continue }
            let answered = await withTaskGroup(of: Bool.self) { group in
                group.addTask { (try? await self.echo()) != nil }
                group.addTask { try? await Task.sleep(for: self.configuration.echoTimeout); return false }
                let first = await group.next() ?? false
                group.cancelAll()
                return first
            }
            if !answered && !Task.isCancelled {
                logger.warning("echo not answered; closing the acquirer connection", metadata: ["timeout": "\(configuration.echoTimeout)"])
                channel.close(promise: nil)
            }
        }
    }

    /// Fields 4, 49 and 42 from a request's own values, or nil when a field cannot hold them: a
    /// cut or a default would send another amount, currency or merchant than the payment's.
    static func requestFields(amount: Int, currency: String, merchantSerialNumber: String) -> (amount: String, currency: String, merchant: String)? {
        guard (0...999_999_999_999).contains(amount), let currency = numericCurrency(currency),
              (1...15).contains(merchantSerialNumber.utf8.count) else { return nil }
        return (digits(amount, width: 12), currency, merchantSerialNumber)
    }

    static let unsendable = "amount over 12 digits (field 4), a currency without its ISO 4217 number here (field 49) or a merchant over 15 characters (field 42)"

    static func numericCurrency(_ alphabetic: String) -> String? {
        switch alphabetic {
        case "NOK": "578"
        case "SEK": "752"
        case "DKK": "208"
        case "EUR": "978"
        default: nil
        }
    }

    // MARK: the connection

    /// Sends one frame and waits for the reply with the same match key. Throws when the connection
    /// cannot be had or is lost before the reply; cancellation (the pipeline's deadline) stops the
    /// wait, and a reply that comes later is dropped (or, for an authorization, reported: `onLateReply`).
    /// `sendBy`: an authorization's send deadline (`AuthorizationDeadline`); past it the frame is not written.
    /// `givenUp`: an authorization's, remembered if it is given up on, so that a late reply reaches `onLateReply`.
    /// `body` is wiped once it is in the channel's buffer (an authorization's holds the card), so
    /// that the card is in one buffer, not two, while the reply is awaited.
    /// `replyMTI`, `rrn`: what the reply must be (`Waiting.isAnswered(by:)`).
    private func exchange(_ body: inout [UInt8], key: String, sendBy: ContinuousClock.Instant? = nil, givenUp: GivenUp? = nil,
                          replyMTI: String? = nil, rrn: String? = nil) async throws -> ISOMessage {
        let channel = try await connectedChannel()
        var buffer = channel.allocator.buffer(capacity: body.count + 2)
        buffer.writeISO8583Frame(body)
        body.withUnsafeMutableBytes { wipe($0) }
        let sentAt = ContinuousClock.now
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<ISOMessage, any Error>) in
                let duplicate = state.withLock { s -> Bool in
                    if s.pending[key] != nil { return true }
                    s.pending[key] = Waiting(continuation: continuation, channel: ObjectIdentifier(channel), givenUp: givenUp,
                                             replyMTI: replyMTI, rrn: rrn)
                    // The key comes round again (STANs wrap): a reply to it without field 37 is
                    // this request's now (one naming an older attempt's RRN still finds it).
                    s.givenUpByKey.removeValue(forKey: key)
                    return false
                }
                if duplicate {
                    buffer.withVeryUnsafeBytes(wipeInPlace)
                    continuation.resume(throwing: AcquirerUnavailable("match key \(key) is already in flight", neverSent: true))
                    return
                }
                if Task.isCancelled {
                    buffer.withVeryUnsafeBytes(wipeInPlace)
                    if let w = state.withLock({ $0.pending.removeValue(forKey: key) }) { w.continuation.resume(throwing: CancellationError()) }
                    return
                }
                // Written from the channel's event loop (where writeAndFlush would go anyway), so
                // that the send deadline is read at the last moment before the bytes go out.
                let send: @Sendable () -> Void = { [weak self, buffer] in
                    // Given up on (cancelled) while the write waited for the loop: never sent.
                    guard self?.state.withLock({ $0.pending[key] != nil }) == true else {
                        buffer.withVeryUnsafeBytes(wipeInPlace)
                        return
                    }
                    if let sendBy, ContinuousClock.now >= sendBy {
                        buffer.withVeryUnsafeBytes(wipeInPlace)
                        if let w = self?.state.withLock({ $0.pending.removeValue(forKey: key) }) { w.continuation.resume(throwing: AuthorizationDeadline.notSent) }
                        return
                    }
                    channel.writeAndFlush(buffer).whenComplete { [weak self] result in
                        // The frame may hold a clear PAN: zeroed once the socket has it (or the write failed).
                        buffer.withVeryUnsafeBytes(wipeInPlace)
                        guard case .failure(let error) = result, let self else { return }
                        // Some of the frame may have gone out: an unknown outcome, whose reply may yet come.
                        if let w = self.state.withLock({ s in s.pending.removeValue(forKey: key).map { s.giveUp(key, $0) } }) {
                            w.continuation.resume(throwing: AcquirerUnavailable("send failed: \(error)"))
                        }
                    }
                }
                if channel.eventLoop.inEventLoop { send() } else { channel.eventLoop.execute(send) }
            }
        } onCancel: {
            // Given up on with no reply: past `unansweredBeforeReconnect` of these in a row, each
            // with nothing at all from the host since it was sent, the connection is taken for
            // dead and closed (the requests still on it fail at once, as unknown outcomes,
            // instead of waiting). A host still answering others is not silent.
            let (waiting, silent) = state.withLock { s -> (Waiting?, (any Channel)?) in
                guard let w = s.pending.removeValue(forKey: key) else { return (nil, nil) }
                s.giveUp(key, w)
                guard s.channel === channel, s.lastReceived < sentAt else { return (w, nil) }
                s.unansweredInARow += 1
                guard s.unansweredInARow >= configuration.unansweredBeforeReconnect else { return (w, nil) }
                s.unansweredInARow = 0
                return (w, channel)
            }
            waiting?.continuation.resume(throwing: CancellationError())
            if let silent {
                logger.warning("no reply from the acquirer to several requests in a row; closing the connection",
                               metadata: ["unanswered": "\(configuration.unansweredBeforeReconnect)"])
                silent.close(promise: nil)
            }
        }
    }

    /// The open connection, or a new one. Connection attempts are shared by concurrent callers and
    /// spaced by an exponential back-off after failures.
    private func connectedChannel() async throws -> any Channel {
        enum Step { case ready(any Channel), wait(EventLoopFuture<any Channel>), backingOff, connect(EventLoopPromise<any Channel>) }
        let step = state.withLock { s -> Step in
            if let channel = s.channel, channel.isActive { return .ready(channel) }
            if let connecting = s.connecting { return .wait(connecting) }
            if ContinuousClock.now < s.nextConnectAllowed { return .backingOff }
            let promise = group.next().makePromise(of: (any Channel).self)
            s.connecting = promise.futureResult
            return .connect(promise)
        }
        switch step {
        case .ready(let channel): return channel
        case .wait(let future): return try await future.get()
        case .backingOff: throw AcquirerUnavailable("acquirer \(configuration.host):\(configuration.port) unreachable; backing off", neverSent: true)
        case .connect(let promise):
            let bootstrap = ClientBootstrap(group: group)
                .connectTimeout(TimeAmount(configuration.connectTimeout))
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelInitializer { [weak self] channel in
                    guard let self else { return channel.eventLoop.makeSucceededVoidFuture() }
                    return channel.eventLoop.makeCompletedFuture {
                        // Any reply the header can describe (jPOS's channels take up to 100,000 bytes):
                        // a host's long private fields (48, 55, 62, 63) must not close the connection.
                        try channel.pipeline.syncOperations.addHandler(ISO8583FrameHandler(maxFrameLength: LengthPrefixedFramer.absoluteMaxFrameLength))
                        try channel.pipeline.syncOperations.addHandler(ReplyHandler(acquirer: self))
                    }
                }
            do {
                let channel = try await bootstrap.connect(host: configuration.host, port: configuration.port).get()
                state.withLock { s in
                    s.channel = channel
                    s.connecting = nil
                    s.backoff = .zero
                    s.lastReceived = .now
                    s.unansweredInARow = 0
                }
                logger.info("connected to acquirer", metadata: ["host": "\(configuration.host)", "port": "\(configuration.port)"])
                promise.succeed(channel)
                return channel
            } catch {
                let backoff = state.withLock { s -> Duration in
                    s.connecting = nil
                    s.backoff = s.backoff == .zero ? configuration.minimumBackoff : min(s.backoff * 2, configuration.maximumBackoff)
                    s.nextConnectAllowed = .now + s.backoff
                    return s.backoff
                }
                logger.warning("cannot connect to acquirer", metadata: ["error": "\(error)", "retryAfter": "\(backoff)"])
                // Nothing was written: every request waiting for this connection was never sent.
                let failure = AcquirerUnavailable("cannot connect to acquirer: \(error)", neverSent: true)
                promise.fail(failure)
                throw failure
            }
        }
    }

    /// The host's own network management request (0800: echo, sign-on) answered 0810 approved,
    /// with its identifying fields echoed; hosts drop clients that leave their echoes unanswered.
    /// Any other request from the host is not ours to serve, and is logged.
    private func answerHostRequest(_ request: ISOMessage, on channel: any Channel) {
        guard request.mti == "0800" else {
            logger.warning("request from acquirer not served", metadata: ["message": "\(request.maskedDescription)"])
            return
        }
        // A host that sends requests faster than it reads our answers would grow the channel's
        // pending writes without bound: past NIO's high-water mark, its requests go unanswered.
        guard channel.isWritable else { return }
        var reply = ISOMessage(mti: "0810")
        for field in [7, 11, 32, 41, 70] { reply[field] = request[field] }
        reply[39] = "00"
        guard let body = try? ISO87APackager.encode(reply) else {
            // A field we echo that our encoder cannot write (a letter in field 11, say): read as it came, not answered.
            logger.warning("request from acquirer not answered: a field to echo is malformed", metadata: ["message": "\(request.maskedDescription)"])
            return
        }
        var buffer = channel.allocator.buffer(capacity: body.count + 2)
        buffer.writeISO8583Frame(body)
        channel.writeAndFlush(buffer, promise: nil)
    }

    /// A keep-alive from the host: it counts as something received for the echo's timing (not as
    /// an answer: requests given up on in a row still close a connection the host does not answer on).
    func keptAlive() {
        state.withLock { $0.lastReceived = .now }
    }

    /// A message from the host: resumes the request it answers, is logged as late or unknown, or
    /// (a request of the host's own) is answered.
    /// (Internal, not private: a test hands it frames on a channel whose writability it sets.)
    func received(_ frame: ByteBuffer, on channel: any Channel) {
        let message: ISOMessage
        // Many hosts echo fields 2 and 14 in their replies: decoded in place without them (no copy
        // of the card data is made), and the frame's bytes are wiped once decoded (the framing
        // handler wipes whatever else it received).
        defer { frame.withUnsafeReadableBytes(wipeInPlace) }
        do {
            // Framing only, as jPOS reads a reply: a field we do not use that a host fills its own
            // way (spaces for a settlement date not yet known) does not make an approval unreadable,
            // an unknown outcome. What we use is checked where it is used (the match key, 37, 39, 4).
            message = try frame.withUnsafeReadableBytes {
                try ISO87APackager.decode($0, omitting: ISOMessage.cardholderFields, checks: .framing)
            }
        } catch {
            logger.error("undecodable message from acquirer", metadata: ["error": "\(error)"])
            return
        }
        // A request from the host (third MTI digit even: its own 0800 echo or sign-on) is answered,
        // never taken for the reply to one of ours.
        let isResponse = message.isResponse
        let key = isResponse ? message.matchKey ?? echoReplyKeyWithoutTerminal(message) : nil
        let (continuation, late) = state.withLock { s -> (CheckedContinuation<ISOMessage, any Error>?, (GivenUp, (@Sendable (LateReply) -> Void)?)?) in
            s.lastReceived = .now
            s.unansweredInARow = 0
            if let key, let waiting = s.pending[key], waiting.isAnswered(by: message) {
                s.pending.removeValue(forKey: key)
                return (waiting.continuation, nil)
            }
            guard let givenUp = s.takeGivenUp(answeredBy: message, key: key) else { return (nil, nil) }
            return (nil, (givenUp, s.lateReplyHandler))
        }
        guard isResponse else {
            answerHostRequest(message, on: channel)
            return
        }
        if let continuation {
            continuation.resume(returning: message)
        } else if let (givenUp, handler) = late {
            // An authorization given up on is answered after all: answered 85, it has a reversal,
            // which a host that had no original yet (25, taken as final after a while) has let go.
            let code = message[39] ?? ""
            logger.warning("late reply to an authorization given up on", metadata: [
                "pspTransactionId": "\(givenUp.pspTransactionId)", "responseCode": "\(code)", "message": "\(message.maskedDescription)",
            ])
            handler?(LateReply(pspTransactionId: givenUp.pspTransactionId, attemptReference: givenUp.attemptReference, responseCode: code,
                               scheme: givenUp.scheme))
        } else if key == nil {
            logger.warning("message from acquirer without match key", metadata: ["message": "\(message.maskedDescription)"])
        } else {
            // Its request gave up (deadline) or it is a duplicate: the reversal path owns that attempt.
            logger.warning("late or unmatched reply from acquirer dropped", metadata: ["message": "\(message.maskedDescription)"])
        }
    }

    /// Many hosts answer network management with fields 7, 11, 39 and 70 only: an 0810 without
    /// field 41 answers our echo, which went out under our terminal. (Without this, every echo to
    /// such a host looked unanswered, and each quiet spell closed the connection.)
    private func echoReplyKeyWithoutTerminal(_ message: ISOMessage) -> String? {
        guard message.mti.hasPrefix("08"), message[41] == nil else { return nil }
        var withOurTerminal = message
        withOurTerminal[41] = configuration.terminalId
        return withOurTerminal.matchKey
    }

    /// The connection is gone: every request still waiting has an unknown outcome. An
    /// authorization's reply may still come, on the next connection (a host that resends what it
    /// could not deliver), and then reaches `onLateReply` like any other given up on.
    fileprivate func connectionLost(_ channel: any Channel) {
        let lost = ObjectIdentifier(channel)
        let waiting = state.withLock { s -> [Waiting] in
            if s.channel === channel { s.channel = nil }
            let keys = s.pending.compactMap { $0.value.channel == lost ? $0.key : nil }
            return keys.compactMap { key in s.pending.removeValue(forKey: key).map { s.giveUp(key, $0) } }
        }
        if !waiting.isEmpty { logger.warning("acquirer connection lost", metadata: ["requestsInFlight": "\(waiting.count)"]) }
        waiting.forEach { $0.continuation.resume(throwing: AcquirerUnavailable("connection lost after sending")) }
    }
}

private final class ReplyHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    let acquirer: ISO8583Acquirer
    init(acquirer: ISO8583Acquirer) { self.acquirer = acquirer }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        acquirer.received(unwrapInboundIn(data), on: context.channel)
    }

    func channelInactive(context: ChannelHandlerContext) {
        acquirer.connectionLost(context.channel)
        context.fireChannelInactive()
    }

    /// A host's zero-length keep-alive: it is there, so no echo is owed yet (a host that sends
    /// those may not answer 0800s, and the connection would be closed every echo interval).
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ISO8583FrameHandler.KeepAlive { acquirer.keptAlive() }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A framing error leaves the stream unusable: close, and let requests in flight fail.
        context.close(promise: nil)
    }
}

extension String {
    /// An IF_CHAR field's value without the spaces it is padded with on the right.
    func droppingTrailingSpaces() -> String {
        var s = Substring(self)
        while s.last == " " { s.removeLast() }
        return String(s)
    }
}
