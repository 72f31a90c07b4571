import Acquiring
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

    init(script answer: @escaping @Sendable (ISOMessage) -> [ISOMessage]?) async throws {
        let log = self.log
        server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
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
        let answer: @Sendable (ISOMessage) -> [ISOMessage]?
        init(log: Log, answer: @escaping @Sendable (ISOMessage) -> [ISOMessage]?) {
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
            for reply in replies {
                guard let body = try? ISO87APackager.encode(reply) else { continue }
                var buffer = context.channel.allocator.buffer(capacity: body.count + 2)
                buffer.writeISO8583Frame(body)
                context.writeAndFlush(NIOAny(buffer), promise: nil)
            }
        }
    }
}

@Suite struct ScriptedHostTests {
    static func reversal(_ adapter: ISO8583Acquirer, _ attemptId: String) -> ReversalRequest {
        ReversalRequest(reversalId: attemptId + "-R", pspTransactionId: "p-" + attemptId, attemptId: attemptId,
                        attemptReference: adapter.attemptReference(for: attemptId), amount: 1000, currency: "NOK",
                        merchantSerialNumber: "123456")
    }

    /// Terminal and STAN pair replies with requests, and STANs come round again: an 0410 that names
    /// another original in field 37 (a late reply to an older reversal that had the same STAN) does
    /// not acknowledge this reversal; the try fails, and the reversal is sent again.
    @Test func anAnswerNamingAnotherOriginalDoesNotAcknowledgeAReversal() async throws {
        let host = try await ScriptedHost { request in
            var reply = ScriptedHost.reply(to: request, mti: "0410", fields: [3, 4, 7, 11, 41])
            reply[37] = "999999999999"
            return reply
        }
        defer { Task { await host.stop() } }
        let iso = ISO8583Acquirer(configuration: .init(host: "127.0.0.1", port: host.port))
        await #expect(throws: AcquirerUnavailable.self) { try await iso.reverse(Self.reversal(iso, "a1")) }
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
    /// or another RRN is an unknown outcome (answered 85 and reversed), not an approval. The
    /// amount it names goes to the pipeline (which refuses an approval of another amount).
    @Test(arguments: ["mti", "rrn"])
    func aReplyThatAnswersAnotherRequestIsNotAnApproval(_ differs: String) async throws {
        let host = try await ScriptedHost { request in
            if request.mti == "0800" { return ScriptedHost.reply(to: request, mti: "0810", fields: [7, 11, 41, 70]) }
            var reply = ScriptedHost.reply(to: request, mti: differs == "mti" ? "0130" : "0110", fields: [3, 4, 7, 11, 37, 41])
            if differs == "rrn" { reply[37] = "999999999999" }
            return reply
        }
        defer { Task { await host.stop() } }
        let iso = ISO8583Acquirer(configuration: .init(host: "127.0.0.1", port: host.port))
        let request = try Self.authorization(iso, "other-\(differs)")
        let error = await #expect(throws: AcquirerUnavailable.self) { try await iso.authorize(request) }
        #expect(error?.neverSent == false, "it was sent: its outcome is unknown")
        // The same host answering the request itself approves.
        let fair = try await ScriptedHost { ScriptedHost.reply(to: $0, mti: "0110", fields: [3, 4, 7, 11, 37, 41]) }
        defer { Task { await fair.stop() } }
        let fairIso = ISO8583Acquirer(configuration: .init(host: "127.0.0.1", port: fair.port))
        let answer = try await fairIso.authorize(try Self.authorization(fairIso, "fair-\(differs)"))
        #expect(answer.responseCode == "00" && answer.amount == 1000)
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
