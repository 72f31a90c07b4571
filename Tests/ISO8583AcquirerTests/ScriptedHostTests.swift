import Acquiring
import Foundation
import ISO8583
import ISO8583Acquirer
import MakePayment
import NIOCore
import NIOPosix
import Synchronization
import Testing

/// A host whose every answer the test writes: it keeps what it received, and answers each message
/// with what `answer` makes of it (nil: no answer), or with what `script` makes of it (several
/// messages; nil: the connection is closed unanswered).
final class ScriptedHost: Sendable {
    /// What the host received, in order.
    var received: [ISOMessage] { log.messages.withLock { $0 } }
    private final class Log: Sendable { let messages = Mutex<[ISOMessage]>([]) }
    private let log = Log()
    private let server: any Channel
    var port: Int { server.localAddress?.port ?? 0 }

    convenience init(answer: @escaping @Sendable (ISOMessage) -> ISOMessage?) async throws {
        try await self.init(script: { answer($0).map { [$0] } ?? [] })
    }

    /// `keepAliveEvery`: the host also sends a zero-length frame that often on each connection.
    convenience init(keepAliveEvery: TimeAmount? = nil, script answer: @escaping @Sendable (ISOMessage) -> [ISOMessage]?) async throws {
        try await self.init(keepAliveEvery: keepAliveEvery, frames: { request in
            answer(request).map { replies in replies.compactMap { try? ISO87APackager.encode($0) } }
        })
    }

    /// `frames`: each answer as the bodies of its frames, which may be what our encoder would refuse to write.
    init(keepAliveEvery: TimeAmount? = nil, frames answer: @escaping @Sendable (ISOMessage) -> [[UInt8]]?) async throws {
        let log = self.log
        server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                if let keepAliveEvery {
                    channel.eventLoop.scheduleRepeatedTask(initialDelay: keepAliveEvery, delay: keepAliveEvery) { task in
                        guard channel.isActive else { task.cancel(); return }
                        channel.writeAndFlush(ByteBuffer(bytes: [0, 0]), promise: nil)
                    }
                }
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ISO8583FrameHandler())
                    try channel.pipeline.syncOperations.addHandler(Responder(log: log, answer: answer))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
    }

    func stop() async { try? await server.close() }

    /// The host's copy of a reply: the request's fields named, with an MTI and field 39.
    static func reply(to request: ISOMessage, mti: String, fields: [Int], code: String = "00") -> ISOMessage {
        var reply = ISOMessage(mti: mti)
        for field in fields { reply[field] = request[field] }
        reply[39] = code
        return reply
    }

    private final class Responder: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let log: Log
        let answer: @Sendable (ISOMessage) -> [[UInt8]]?
        init(log: Log, answer: @escaping @Sendable (ISOMessage) -> [[UInt8]]?) {
            self.log = log
            self.answer = answer
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard let message = try? ISO87APackager.decode(unwrapInboundIn(data).readableBytesView) else { return }
            log.messages.withLock { $0.append(message) }
            guard let replies = answer(message) else {
                context.close(promise: nil)
                return
            }
            for body in replies {
                var buffer = context.channel.allocator.buffer(capacity: body.count + 2)
                buffer.writeISO8583Frame(body)
                context.writeAndFlush(NIOAny(buffer), promise: nil)
            }
        }
    }
}

// A misbehaving host must fail a test, not hang it: the adapter has no deadline of its own (the pipeline gives it one).
@Suite(.timeLimit(.minutes(1))) struct ScriptedHostTests {
    static func reversal(_ adapter: ISO8583Acquirer, _ attemptId: String) -> ReversalRequest {
        ReversalRequest(reversalId: attemptId + "-R", pspTransactionId: "p-" + attemptId, attemptId: attemptId,
                        attemptReference: adapter.attemptReference(for: attemptId), amount: 1000, currency: "NOK",
                        merchantSerialNumber: "123456")
    }

    /// Terminal and STAN pair replies with requests, and STANs come round again: an 0410 that names
    /// another original in field 37 (a late reply to an older reversal that had the same STAN) does
    /// not acknowledge this reversal, nor take its place: the reversal's own 0410, after it, does.
    /// (It used to be taken as the answer: the try failed, and the real answer was dropped.)
    @Test func anAnswerNamingAnotherOriginalDoesNotAcknowledgeAReversal() async throws {
        let host = try await ScriptedHost(script: { request in
            var other = ScriptedHost.reply(to: request, mti: "0410", fields: [3, 4, 7, 11, 41], code: "00")
            other[37] = "999999999999"
            return [other, ScriptedHost.reply(to: request, mti: "0410", fields: [3, 4, 7, 11, 37, 41], code: "25")]
        })
        defer { Task { await host.stop() } }
        let iso = ISO8583Acquirer(configuration: .init(host: "127.0.0.1", port: host.port))
        #expect(try await iso.reverse(Self.reversal(iso, "a1")) == .noOriginal, "the other original's 00 was taken")
    }

    /// An 0400 names what it reverses: field 37 and 41 the original's, field 90 its MTI, STAN and
    /// transmission time (and the acquiring institution), under a STAN of its own.
    @Test func aReversalNamesItsOriginal() async throws {
        let host = try await ScriptedHost { request in
            ScriptedHost.reply(to: request, mti: request.mti == "0100" ? "0110" : "0410", fields: [3, 4, 7, 11, 37, 41])
        }
        defer { Task { await host.stop() } }
        let iso = ISO8583Acquirer(configuration: .init(host: "127.0.0.1", port: host.port))
        let authorization = try Self.authorization(iso, "orig-1")
        _ = try await iso.authorize(authorization)
        let reversal = ReversalRequest(reversalId: "orig-1-R", pspTransactionId: authorization.pspTransactionId, attemptId: "orig-1",
                                       attemptReference: authorization.attemptReference, amount: 1000, currency: "NOK", merchantSerialNumber: "123456")
        #expect(try await iso.reverse(reversal) == .reversed)
        let sent = host.received
        #expect(sent.map(\.mti) == ["0100", "0400"])
        let (original, reversed) = (sent[0], sent[1])
        let institution = try #require(reversed[32])
        #expect(reversed[90] == "0100" + original[11]! + original[7]! + String(repeating: "0", count: 11 - institution.count) + institution
                + String(repeating: "0", count: 11))
        #expect(reversed[11] != original[11], "a reversal has a STAN of its own")
        for field in [4, 37, 41, 42, 49] { #expect(reversed[field] == original[field], "field \(field)") }
    }

    @Test func anAnswerNamingThisOriginalAcknowledgesIt() async throws {
        let host = try await ScriptedHost { ScriptedHost.reply(to: $0, mti: "0410", fields: [3, 4, 7, 11, 37, 41]) }
        defer { Task { await host.stop() } }
        let iso = ISO8583Acquirer(configuration: .init(host: "127.0.0.1", port: host.port))
        #expect(try await iso.reverse(Self.reversal(iso, "a1")) == .reversed)
    }

    /// A repeat reuses its first send's STAN, but not once half the STANs have been issued since:
    /// by then a new message may have the same STAN on the same terminal.
    @Test func aRepeatLongAfterItsFirstSendGetsAFreshSTAN() async throws {
        let host = try await ScriptedHost { ScriptedHost.reply(to: $0, mti: "0410", fields: [3, 4, 7, 11, 37, 41]) }
        defer { Task { await host.stop() } }
        let iso = ISO8583Acquirer(configuration: .init(host: "127.0.0.1", port: host.port))
        var reversal = Self.reversal(iso, "a1")
        #expect(try await iso.reverse(reversal) == .reversed)
        reversal.sendCount = 2
        #expect(try await iso.reverse(reversal) == .reversed)  // soon after: the same STAN
        for i in 0..<ISO8583Acquirer.stanReuseLimit { _ = iso.attemptReference(for: "other-\(i)") }
        reversal.sendCount = 3
        #expect(try await iso.reverse(reversal) == .reversed)
        let sent = host.received
        #expect(sent.map(\.mti) == ["0400", "0401", "0401"])
        #expect(sent[1][11] == sent[0][11])
        #expect(sent[2][11] != sent[0][11])
        #expect(Set(sent.map { $0[37] }) == [sent[0][37]], "every send names the same original")
    }

    /// A 94 (duplicate transmission: the host has another message under this terminal and STAN)
    /// fails the try, and the repeat goes out under a STAN of its own: under the same one it was
    /// told 94 again at every try until the reversal was given up on. (A 25 is not: its repeat is
    /// the same message, asked again while the original may still be filed.)
    @Test(arguments: ["94", "25"]) func aRepeatAfterA94GetsAFreshSTAN(code: String) async throws {
        let answered = Mutex(0)
        let host = try await ScriptedHost { request in
            let first = answered.withLock { count in
                defer { count += 1 }
                return count == 0
            }
            return ScriptedHost.reply(to: request, mti: "0410", fields: [3, 4, 7, 11, 37, 41], code: first ? code : "00")
        }
        defer { Task { await host.stop() } }
        let iso = ISO8583Acquirer(configuration: .init(host: "127.0.0.1", port: host.port))
        var reversal = Self.reversal(iso, "a1")
        if code == "25" {
            #expect(try await iso.reverse(reversal) == .noOriginal)
        } else {
            await #expect(throws: AcquirerUnavailable.self) { try await iso.reverse(reversal) }
        }
        reversal.sendCount = 2
        #expect(try await iso.reverse(reversal) == .reversed)
        let sent = host.received
        #expect(sent.map(\.mti) == ["0400", "0401"])
        if code == "94" {
            #expect(sent[1][11] != sent[0][11], "the repeat reused the STAN the host took for another message's")
        } else {
            #expect(sent[1][11] == sent[0][11], "a repeat after a 25 is the same message")
        }
        #expect(sent[1][90] == sent[0][90], "both name the same original")
    }

    /// Many hosts answer network management with fields 7, 11, 39 and 70 only: such an 0810
    /// answers our echo (which otherwise looked unanswered, and the connection was closed).
    @Test func anEchoAnswerWithoutTerminalAnswersTheEcho() async throws {
        let host = try await ScriptedHost { ScriptedHost.reply(to: $0, mti: "0810", fields: [7, 11, 70]) }
        defer { Task { await host.stop() } }
        let iso = ISO8583Acquirer(configuration: .init(host: "127.0.0.1", port: host.port))
        let answered = await withTaskGroup(of: Bool.self) { group in
            group.addTask { (try? await iso.echo()) != nil }
            group.addTask { try? await Task.sleep(for: .seconds(5)); return false }
            let first = await group.next() ?? false
            group.cancelAll()
            return first
        }
        #expect(answered)
        #expect(host.received.first?[41] != nil, "our echo names our terminal")
    }

    /// A host that sends zero-length keep-alives is heard: no echo is sent while they come (they
    /// were dropped unheard, and a host that does not answer 0800s had its connection closed every
    /// echo interval), and the connection stays up.
    @Test func aHostsKeepAlivesPutOffTheEcho() async throws {
        let host = try await ScriptedHost(keepAliveEvery: .milliseconds(50)) { [ScriptedHost.reply(to: $0, mti: "0810", fields: [7, 11, 41, 70])] }
        defer { Task { await host.stop() } }
        var configuration = ISO8583Acquirer.Configuration(host: "127.0.0.1", port: host.port)
        // Keep-alives every 50 ms against an echo interval of 1 s: a margin a stalled machine keeps.
        configuration.echoInterval = .seconds(1)
        configuration.echoTimeout = .milliseconds(500)
        let iso = ISO8583Acquirer(configuration: configuration)
        try await iso.echo()  // connected
        let keepAlive = Task { await iso.runKeepAlive() }
        try await Task.sleep(for: .milliseconds(3_500))
        keepAlive.cancel()
        await keepAlive.value
        #expect(host.received.map(\.mti) == ["0800"], "echoes sent while the host's keep-alives came")
    }

    /// An authorization whose send deadline has passed by the time its frame would be written (a
    /// process frozen in mid-send resumes past it) is not sent: the host receives nothing, and the
    /// adapter throws (an unknown outcome, which the pipeline answers 85 and reverses). One still
    /// in time goes out.
    @Test func anAuthorizationPastItsSendDeadlineIsNotSent() async throws {
        let host = try await ScriptedHost { request in
            request.mti == "0800" ? ScriptedHost.reply(to: request, mti: "0810", fields: [7, 11, 41, 70])
                : ScriptedHost.reply(to: request, mti: "0110", fields: [3, 4, 7, 11, 37, 41])
        }
        defer { Task { await host.stop() } }
        let iso = ISO8583Acquirer(configuration: .init(host: "127.0.0.1", port: host.port))
        _ = try await iso.echo()  // connected, so that only the write is left to the authorization
        let late = try Self.authorization(iso, "late-1")
        await #expect(throws: AcquirerUnavailable.self) {
            try await AuthorizationDeadline.$sendBy.withValue(.now - .milliseconds(1)) { try await iso.authorize(late) }
        }
        let inTime = try Self.authorization(iso, "in-time-1")
        let answer = try await AuthorizationDeadline.$sendBy.withValue(.now + .seconds(10)) { try await iso.authorize(inTime) }
        #expect(answer.responseCode == "00")
        #expect(host.received.map(\.mti) == ["0800", "0100"])
        #expect(host.received.last?[37] == String(inTime.attemptReference.split(separator: "|")[2]))
        // The card's digits are written into the frame over placeholders: each lands in its field.
        #expect(host.received.last?[2] == SimulatorAcquirer.testCard(code: "00"))
        #expect(host.received.last?[14] == "3012")
        #expect(host.received.last?[13]?.count == 4 && host.received.last?[22] == "810")
    }

    /// An authorization whose connection dropped before its reply has an unknown outcome, and its
    /// reply may still come on the next connection (a host that resends what it could not
    /// deliver): it is reported as late, as for one whose deadline passed, so that a reversal
    /// already settled on "no original" is sent again.
    @Test func aReplyResentOnTheNextConnectionIsReportedLate() async throws {
        let held = Mutex<ISOMessage?>(nil)
        let host = try await ScriptedHost(script: { request in
            switch request.mti {
            case "0100":
                held.withLock { $0 = request }
                return nil  // the connection drops before the reply
            case "0800":
                let echo = ScriptedHost.reply(to: request, mti: "0810", fields: [7, 11, 41, 70])
                guard let original = held.withLock({ $0 }) else { return [echo] }
                return [echo, ScriptedHost.reply(to: original, mti: "0110", fields: [3, 4, 7, 11, 37, 41])]
            default: return []
            }
        })
        defer { Task { await host.stop() } }
        let iso = ISO8583Acquirer(configuration: .init(host: "127.0.0.1", port: host.port))
        let reported = Mutex<[LateReply]>([])
        iso.onLateReply { reply in reported.withLock { $0.append(reply) } }
        let request = try Self.authorization(iso, "dropped-1")
        let error = await #expect(throws: AcquirerUnavailable.self) { try await iso.authorize(request) }
        #expect(error?.neverSent == false, "it was sent: its outcome is unknown")
        try await iso.echo()  // a new connection, on which the host resends its reply
        let limit = ContinuousClock.now + .seconds(10)
        while reported.withLock({ $0.isEmpty }), ContinuousClock.now < limit { try await Task.sleep(for: .milliseconds(10)) }
        #expect(reported.withLock { $0 } == [LateReply(pspTransactionId: request.pspTransactionId, attemptReference: request.attemptReference,
                                                       responseCode: "00", scheme: request.scheme)])
    }

    /// An 0110 is matched by terminal and STAN, but must answer this 0100: another message class
    /// or another RRN is no answer to it and does not take its place; its own reply, after it, is
    /// its answer. (Taken for the answer, it made an unknown outcome, and the real reply, an
    /// approval, found nobody waiting and was dropped.) The amount a reply names goes to the
    /// pipeline (which refuses an approval of another amount).
    @Test(arguments: ["mti", "rrn"])
    func aReplyThatAnswersAnotherRequestIsNotAnApproval(_ differs: String) async throws {
        let host = try await ScriptedHost(script: { request in
            if request.mti == "0800" { return [ScriptedHost.reply(to: request, mti: "0810", fields: [7, 11, 41, 70])] }
            var other = ScriptedHost.reply(to: request, mti: differs == "mti" ? "0130" : "0110", fields: [3, 4, 7, 11, 37, 41])
            if differs == "rrn" { other[37] = "999999999999" }
            return [other, ScriptedHost.reply(to: request, mti: "0110", fields: [3, 4, 7, 11, 37, 41], code: "51")]
        })
        defer { Task { await host.stop() } }
        let iso = ISO8583Acquirer(configuration: .init(host: "127.0.0.1", port: host.port))
        let request = try Self.authorization(iso, "other-\(differs)")
        #expect(try await iso.authorize(request).responseCode == "51", "another request's 00 was taken for its answer")
        // The same host answering the request itself approves.
        let fair = try await ScriptedHost { ScriptedHost.reply(to: $0, mti: "0110", fields: [3, 4, 7, 11, 37, 41]) }
        defer { Task { await fair.stop() } }
        let fairIso = ISO8583Acquirer(configuration: .init(host: "127.0.0.1", port: fair.port))
        let answer = try await fairIso.authorize(try Self.authorization(fairIso, "fair-\(differs)"))
        #expect(answer.responseCode == "00" && answer.amount == 1000)
    }

    /// An authorization given up on is remembered by its RRN: when the STANs have come round and a
    /// new authorization has its terminal and STAN, the old one's late approval is still reported
    /// (to reverse it again if need be), and the new one still gets its own reply. (By match key,
    /// the new request took the old reply and failed, and the old attempt was forgotten.)
    @Test func aLateReplyUnderAReusedSTANReachesItsOwnAttempt() async throws {
        let held = Mutex<ISOMessage?>(nil)
        let host = try await ScriptedHost(script: { request in
            guard request.mti == "0100" else { return [] }
            guard let first = held.withLock({ $0 }) else {
                held.withLock { $0 = request }
                return []  // no reply for now
            }
            return [ScriptedHost.reply(to: first, mti: "0110", fields: [3, 4, 7, 11, 37, 41]),
                    ScriptedHost.reply(to: request, mti: "0110", fields: [3, 4, 7, 11, 37, 41], code: "51")]
        })
        defer { Task { await host.stop() } }
        let iso = ISO8583Acquirer(configuration: .init(host: "127.0.0.1", port: host.port))
        let reported = Mutex<[LateReply]>([])
        iso.onLateReply { reply in reported.withLock { $0.append(reply) } }
        let old = try Self.authorization(iso, "wrap-old")
        let given = Task { try await iso.authorize(old) }
        let limit = ContinuousClock.now + .seconds(10)
        while host.received.isEmpty, ContinuousClock.now < limit { try await Task.sleep(for: .milliseconds(10)) }
        given.cancel()  // its deadline (the pipeline's) passed: given up on
        _ = await given.result
        // Round the STANs until the next one is the old attempt's again.
        let oldSTAN = Int(old.attemptReference.prefix(6))!
        let before = String(format: "%06d", oldSTAN == 1 ? 999_999 : oldSTAN - 1)
        var turned = 0
        while !iso.attemptReference(for: "filler").hasPrefix(before), turned < 1_000_000 { turned += 1 }
        let new = try Self.authorization(iso, "wrap-new")
        #expect(new.attemptReference.prefix(6) == old.attemptReference.prefix(6), "the STANs did not come round")
        #expect(try await iso.authorize(new).responseCode == "51", "the old attempt's reply was taken for the new one's")
        let deadline = ContinuousClock.now + .seconds(10)
        while reported.withLock({ $0.isEmpty }), ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
        #expect(reported.withLock { $0 } == [LateReply(pspTransactionId: old.pspTransactionId, attemptReference: old.attemptReference,
                                                       responseCode: "00", scheme: old.scheme)])
    }

    /// A reply is read as jPOS reads it (lengths and prefixes; the bytes of each field as they are;
    /// bytes after the last field ignored; frames up to what the header can say): a field we do not
    /// use filled the host's way, a CR LF after the message, or long private fields do not make an
    /// approval unreadable. (Each made it an unknown outcome: 85, and a reversal of an approval.)
    @Test(arguments: ["content", "trailing", "long"])
    func aReplyIsReadAsJPOSReadsIt(_ how: String) async throws {
        let host = try await ScriptedHost(frames: { request in
            guard request.mti == "0100" else { return [] }
            var fields: [Int: String] = [3: "000000", 4: request[4]!, 7: request[7]!, 11: request[11]!, 37: request[37]!, 39: "00", 41: request[41]!]
            switch how {
            case "content":  // a settlement date not yet known, a signless fee, letters in an institution's code
                fields[15] = "    "
                fields[28] = "000000100"
                fields[32] = "05AB345"
            case "long":  // past 8 KiB
                for field in [48, 62, 63] + Array(120...127) { fields[field] = "999" + String(repeating: "X", count: 999) }
            default: break
            }
            return [Self.wire("0110", fields, trailing: how == "trailing" ? "\r\n" : "")]
        })
        defer { Task { await host.stop() } }
        let iso = ISO8583Acquirer(configuration: .init(host: "127.0.0.1", port: host.port))
        let request = try Self.authorization(iso, "jpos-\(how)")
        let answering = Task { try await iso.authorize(request) }
        let deadline = Task { try await Task.sleep(for: .seconds(5)); answering.cancel() }
        defer { deadline.cancel() }
        let answer = try await answering.value
        #expect(answer.responseCode == "00" && answer.amount == 1000)
    }

    /// A message in wire form from its fields' wire forms (length prefixes included), the bitmaps
    /// worked out: what a host may send that our encoder would refuse to write.
    static func wire(_ mti: String, _ fields: [Int: String], trailing: String = "") -> [UInt8] {
        let numbers = fields.keys.sorted()
        let secondary = numbers.last! > 64
        var bitmap = [UInt8](repeating: 0, count: 16)
        if secondary { bitmap[0] |= 0x80 }
        for number in numbers { bitmap[(number - 1) / 8] |= 0x80 >> UInt8((number - 1) % 8) }
        var out = Array(mti.utf8)
        out += bitmap[0..<(secondary ? 16 : 8)].flatMap { Array(String(format: "%02X", $0).utf8) }
        for number in numbers { out += Array(fields[number]!.utf8) }
        return out + Array(trailing.utf8)
    }

    /// A value a field cannot hold is not cut or defaulted (an amount's last 12 digits, currency
    /// "000"): nothing is sent, and the pipeline knows it (85, nothing to reverse).
    @Test func valuesAFieldCannotHoldAreNotSent() async throws {
        let host = try await ScriptedHost { ScriptedHost.reply(to: $0, mti: "0110", fields: [3, 4, 7, 11, 37, 41]) }
        defer { Task { await host.stop() } }
        let iso = ISO8583Acquirer(configuration: .init(host: "127.0.0.1", port: host.port))
        for (amount, currency, merchant) in [(1_000_000_000_005, "NOK", "123456"), (1000, "GBP", "123456"), (1000, "NOK", "1234567890123456")] {
            let request = try Self.authorization(iso, "unsendable-\(amount)-\(currency)", amount: amount, currency: currency, merchant: merchant)
            let error = await #expect(throws: AcquirerUnavailable.self) { try await iso.authorize(request) }
            #expect(error?.neverSent == true)
        }
        #expect(host.received.isEmpty)
        var reversal = Self.reversal(iso, "unsendable-r")
        reversal.amount = 1_000_000_000_005
        await #expect(throws: AcquirerUnavailable.self) { try await iso.reverse(reversal) }
        #expect(host.received.isEmpty)
    }

    static func authorization(_ adapter: ISO8583Acquirer, _ attemptId: String, amount: Int = 1000, currency: String = "NOK",
                              merchant: String = "123456") throws -> AuthorizationRequest {
        let text = SimulatorAcquirer.testCard(code: "00") + ",3012,session"
        let plaintext = UnsafeMutableRawBufferPointer.allocate(byteCount: text.utf8.count, alignment: 1)
        defer { plaintext.deallocate() }
        _ = plaintext.initializeMemory(as: UInt8.self, from: text.utf8)
        let card = try CardData.parse(UnsafeRawBufferPointer(plaintext), currentMonth: CardExpiry(year: 2026, month: 1)!)
        return AuthorizationRequest(pspTransactionId: "p-" + attemptId, attemptId: attemptId, attemptReference: adapter.attemptReference(for: attemptId),
                                    merchantSerialNumber: merchant, amount: amount, currency: currency, card: card)
    }
}
