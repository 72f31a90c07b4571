import HTTPTypes
import Logging
import Metrics
import MakePayment
import NIOCore
import NIOEmbedded
import NIOHTTPTypes
import Processing
import Synchronization
import Testing
@testable import PSPWorker

/// The makePayment handler on a connected EmbeddedChannel, with a stand-in for Hummingbird's
/// router behind it; `served` counts the makePayments the handler started.
final class HandlerRig {
    /// Stands where Hummingbird's router would: it takes the requests handed on, and answers
    /// one when the test says so (its answer passes back through the handler, as Hummingbird's does).
    final class Router: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = HTTPRequestPart
        typealias OutboundOut = HTTPResponsePart
        var parts: [HTTPRequestPart] = []
        /// Quiesce events that reached it (Hummingbird closes an idle connection at one).
        var quiesces = 0
        /// Half-closes that reached it (Hummingbird closes the connection at one).
        var inputCloses = 0
        var context: ChannelHandlerContext?
        func handlerAdded(context: ChannelHandlerContext) { self.context = context }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) { parts.append(unwrapInboundIn(data)) }
        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if event is ChannelShouldQuiesceEvent { quiesces += 1 }
            if let event = event as? ChannelEvent, event == .inputClosed { inputCloses += 1 }
        }
        func answer() {
            context?.write(wrapOutboundOut(.head(HTTPResponse(status: .created))), promise: nil)
            context?.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        }
    }

    let loop = EmbeddedEventLoop()
    let channel: EmbeddedChannel
    let router = Router()
    private final class Count: Sendable {
        let value = Mutex(0); let authorization = Mutex<String?>(nil); let receivedAt = Mutex<ContinuousClock.Instant?>(nil)
        /// The lowest and highest stack addresses `serve` ran at: how deeply its calls nested.
        let stack = Mutex<(low: Int, high: Int)>((.max, 0))
    }
    private let started = Count()
    var served: Int { started.value.withLock { $0 } }
    /// How far apart on the stack the makePayments served ran, in bytes.
    var stackSpread: Int { started.stack.withLock { $0.high - $0.low } }
    /// The Authorization the last makePayment served was given.
    var lastAuthorization: String? { started.authorization.withLock { $0 } }
    /// When the last makePayment served came in, as the handler told `serve`.
    var lastReceivedAt: ContinuousClock.Instant? { started.receivedAt.withLock { $0 } }

    /// `unsentBytes`: what the channel says it still holds of earlier answers, unwritten (an
    /// EmbeddedChannel writes at once).
    init(unsentBytes: Int = 0) throws {
        let started = self.started
        let handler = MakePaymentChannelHandler(path: "/makePayment", maxBodyBytes: 4096, unsentBytes: { _ in unsentBytes }) { _, authorization, receivedAt in
            started.value.withLock { $0 += 1 }
            started.authorization.withLock { $0 = authorization }
            started.receivedAt.withLock { $0 = receivedAt }
            let address = stackAddress()
            started.stack.withLock { $0 = (min($0.low, address), max($0.high, address)) }
            return MakePaymentResult(httpStatus: 200, response: .fail("p", .internalError))
        }
        channel = EmbeddedChannel(loop: loop)
        try channel.pipeline.syncOperations.addHandler(handler)
        try channel.pipeline.syncOperations.addHandler(router)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 8080)).wait()
    }

    /// Feeds request parts to the handler, as the HTTP codec would.
    func read(_ parts: HTTPRequestPart...) throws {
        for part in parts { try channel.writeInbound(part) }
    }

    static func post(_ path: String) -> HTTPRequestPart {
        .head(HTTPRequest(method: .post, scheme: nil, authority: "x", path: path, headerFields: [.authorization: "t"]))
    }
    static func body(_ text: String) -> HTTPRequestPart { .body(ByteBuffer(string: text)) }
}

/// The address of a local of this (synchronous) call: where on the thread's stack it ran.
@inline(never) func stackAddress() -> Int {
    var local = 0
    return withUnsafeMutablePointer(to: &local) { Int(bitPattern: $0) }
}

struct ParseFailure: Error {}

/// Holds the promises of the writes that reach the socket's end: as if the kernel's send buffer
/// were full, nothing written completes until the test says so.
final class HeldWrites: ChannelOutboundHandler, @unchecked Sendable {
    typealias OutboundIn = Any
    var promises: [EventLoopPromise<Void>] = []
    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if let promise { promises.append(promise) }
        context.write(data, promise: nil)
    }
    func completeAll() {
        let held = promises
        promises = []
        held.forEach { $0.succeed() }
    }
}

/// Records the closes that reach the socket's end, and holds a close of the output (which a
/// socket channel completes once its pending writes are out) until the test says so.
final class HeldOutputClose: ChannelOutboundHandler, @unchecked Sendable {
    typealias OutboundIn = Any
    var modes: [CloseMode] = []
    var held: EventLoopPromise<Void>?
    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        modes.append(mode)
        if mode == .output { held = promise } else { context.close(mode: mode, promise: promise) }
    }
}

/// Counts the reads that reach the socket's end of the pipeline.
final class ReadCounter: ChannelOutboundHandler, @unchecked Sendable {
    typealias OutboundIn = Any
    var count = 0
    func read(context: ChannelHandlerContext) {
        count += 1
        context.read()
    }
}

@Suite struct MakePaymentChannelHandlerTests {
    /// Shutdown begins while a request handed on is still being read; a makePayment pipelined
    /// behind it must not start when that request's answer is written, since Hummingbird closes
    /// the connection right after (the payment would be authorized, its answer lost).
    @Test func noMakePaymentStartsAfterTheQuiesce() throws {
        let rig = try HandlerRig()
        try rig.read(HandlerRig.post("/payments"))
        rig.channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        try rig.read(HandlerRig.body("{}"), .end(nil), HandlerRig.post("/makePayment"), HandlerRig.body("{}"), .end(nil))
        rig.router.answer()
        #expect(rig.router.parts.count == 3, "the request handed on was read in full")
        #expect(rig.served == 0, "a makePayment was started after the quiesce")
    }

    /// A client that sends request after request and reads none of the answers: once the channel
    /// is not writable (its outbound buffer past the high mark), nothing more is started and, the
    /// backlog full, the socket is not read; writable again, the rest is served in order. (Answers
    /// that need no wait, a 400 or a 401, were written one after another whatever the client
    /// read: one connection grew the worker's memory by gigabytes.)
    @Test func aClientThatReadsNoAnswersIsNotServedPastTheOutboundBuffer() throws {
        let rig = try HandlerRig()
        let reads = ReadCounter()
        try rig.channel.pipeline.syncOperations.addHandler(reads, position: .first)
        try rig.read(HandlerRig.post("/makePayment"), HandlerRig.body("{}"), .end(nil))
        #expect(rig.served == 1)
        rig.channel.isWritable = false
        rig.channel.pipeline.fireChannelWritabilityChanged()
        for _ in 0..<30 { try rig.read(HandlerRig.post("/makePayment"), HandlerRig.body("{}"), .end(nil)) }
        #expect(rig.served == 1, "started while the client read none of its answers")
        let before = reads.count
        rig.channel.read()
        #expect(reads.count == before, "the socket was read with 90 parts waiting and the channel not writable")
        rig.channel.isWritable = true
        rig.channel.pipeline.fireChannelWritabilityChanged()
        #expect(rig.served == 31, "once writable, what waited is served")
        #expect(reads.count == before + 1, "and the read held is passed on")
    }

    /// Shutdown begins with the handler idle but its last answer still on its way out (a client
    /// slow to read): the quiesce is not passed on (Hummingbird would close at once, and a close
    /// fails the writes still pending: the answer lost, its outcome only in the store); the output
    /// is closed instead, which a socket channel does once those writes are out, then the
    /// connection. With nothing left to write, it is passed on as before.
    @Test func aQuiesceWaitsForAnAnswerStillOnItsWayOut() throws {
        let rig = try HandlerRig(unsentBytes: 300)
        let closes = HeldOutputClose()
        try rig.channel.pipeline.syncOperations.addHandler(closes, position: .first)
        try rig.read(HandlerRig.post("/makePayment"), HandlerRig.body("{}"), .end(nil))
        #expect(rig.served == 1)
        rig.channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        #expect(rig.router.quiesces == 0, "passed on, the quiesce closes the connection under the answer")
        #expect(closes.modes == [.output])
        #expect(rig.channel.isActive)
        closes.held?.succeed()
        #expect(closes.modes == [.output, .all])
        #expect(!rig.channel.isActive, "open after its last answer went out")

        let written = try HandlerRig(unsentBytes: 0)
        try written.read(HandlerRig.post("/makePayment"), HandlerRig.body("{}"), .end(nil))
        written.channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        #expect(written.router.quiesces == 1)
    }

    /// Without a quiesce the same pipelined makePayment starts once the router has answered.
    @Test func aPipelinedMakePaymentStartsOnceTheRouterHasAnswered() throws {
        let rig = try HandlerRig()
        try rig.read(HandlerRig.post("/payments"), .end(nil), HandlerRig.post("/makePayment"), HandlerRig.body("{}"), .end(nil))
        #expect(rig.served == 0)
        rig.router.answer()
        #expect(rig.served == 1)
    }

    /// Pipelined makePayments whose answers need no wait (here every one; a 404 or a 401 in the
    /// worker) are answered one after the other, not each from within the previous answer: the
    /// calls used to nest a level per request, and a few thousand in one write overflowed the
    /// event loop's stack, with every answer in flight lost.
    @Test func pipelinedAnswersThatNeedNoWaitDoNotNest() throws {
        let rig = try HandlerRig()
        let count = 500
        try rig.read(HandlerRig.post("/payments"), .end(nil))
        for _ in 0..<count { try rig.read(HandlerRig.post("/makePayment"), HandlerRig.body("{}"), .end(nil)) }
        rig.router.answer()
        #expect(rig.served == count)
        // One level of calls is a few hundred bytes at the least: nested, 500 of them are far apart.
        #expect(rig.stackSpread < 16_384, "the answers nested \(rig.stackSpread) bytes deep")
    }

    /// Vipps's 14 s run from when it sent the request: the time `serve` is given is the head's,
    /// not the body's end (a body that trickles in, or waits for 100 Continue, used its share).
    @Test func theRequestIsTimedFromItsHead() throws {
        let rig = try HandlerRig()
        let beforeHead = ContinuousClock.now
        try rig.read(HandlerRig.post("/makePayment"))
        let headRead = ContinuousClock.now
        try rig.read(HandlerRig.body("{}"), .end(nil))
        #expect(rig.served == 1)
        let receivedAt = try #require(rig.lastReceivedAt)
        #expect(receivedAt <= headRead, "timed from the body's end")
        #expect(receivedAt >= beforeHead, "timed from before its head came")
    }

    /// A makePayment pipelined behind a request still being answered is timed from when its head
    /// came, not from when it is started: the answer before it may have taken seconds.
    @Test func aPipelinedRequestIsTimedFromItsHead() throws {
        let rig = try HandlerRig()
        try rig.read(HandlerRig.post("/payments"), .end(nil))
        let beforeHead = ContinuousClock.now
        try rig.read(HandlerRig.post("/makePayment"))
        let headRead = ContinuousClock.now
        try rig.read(HandlerRig.body("{}"), .end(nil))
        #expect(rig.served == 0)
        rig.router.answer()
        #expect(rig.served == 1)
        let receivedAt = try #require(rig.lastReceivedAt)
        #expect(receivedAt <= headRead, "timed from when it was taken from the backlog")
        #expect(receivedAt >= beforeHead, "timed from before its head came")
    }

    /// A request the codec could not parse, behind a request handed on: Hummingbird answers it
    /// 400 right after its earlier answer, so a makePayment pipelined between them must not start
    /// when that answer is written (the 400 would be taken for its answer, the payment authorized).
    /// A request handed on that asks to close, answered before its body is all in (a refusal
    /// Hummingbird gives early): the answer says close, and the connection closes once it is out.
    @Test func anEarlyAnswerToARequestThatClosesClosesTheConnection() throws {
        let rig = try HandlerRig()
        let head = HTTPRequest(method: .post, scheme: nil, authority: "x", path: "/payments",
                               headerFields: [.authorization: "t", .connection: "close"])
        try rig.read(.head(head), HandlerRig.body("{"))
        rig.router.answer()
        guard case .head(let answer)? = try rig.channel.readOutbound(as: HTTPResponsePart.self) else { Issue.record("no answer"); return }
        #expect(answer.headerFields[.connection] == "close")
        rig.loop.run()
        #expect(!rig.channel.isActive)
    }

    /// With requests waiting between, the error is not passed on (Hummingbird's 400 would be taken
    /// for the first of them, a makePayment told 400 without being started): the connection
    /// closes once the answer owed is out, and nothing waiting is started. With none waiting,
    /// Hummingbird answers it.
    @Test func nothingStartsBehindAnUnparsableRequest() throws {
        let rig = try HandlerRig()
        try rig.read(HandlerRig.post("/payments"), .end(nil), HandlerRig.post("/makePayment"), HandlerRig.body("{}"), .end(nil))
        rig.channel.pipeline.fireErrorCaught(ParseFailure())
        rig.channel.pipeline.fireErrorCaught(ParseFailure())  // the decoder reports each read after its first error
        #expect(rig.channel.isActive)
        rig.router.answer()
        #expect(rig.served == 0, "a makePayment started behind a request Hummingbird answers 400")
        #expect(throws: Never.self) { try rig.channel.throwIfErrorCaught() }
        guard case .head(let head)? = try rig.channel.readOutbound(as: HTTPResponsePart.self) else { Issue.record("no answer"); return }
        #expect(head.status == .created && head.headerFields[.connection] == "close")
        rig.loop.run()
        #expect(!rig.channel.isActive, "the connection stays open after the answer owed")

        let alone = try HandlerRig()
        try alone.read(HandlerRig.post("/payments"), .end(nil))
        alone.channel.pipeline.fireErrorCaught(ParseFailure())
        #expect(throws: ParseFailure.self) { try alone.channel.throwIfErrorCaught() }
    }

    /// A makePayment with a malformed body, answered 400 (71) with `Connection: close`, the answer
    /// not yet written out (the writes held).
    static func closingAnswerBeingWritten() throws -> (HandlerRig, HeldWrites) {
        let rig = try HandlerRig()
        let writes = HeldWrites()
        try rig.channel.pipeline.syncOperations.addHandler(writes, position: .first)
        try rig.read(HandlerRig.post("/makePayment"), HandlerRig.body("{"))
        rig.channel.pipeline.fireErrorCaught(ParseFailure())
        return (rig, writes)
    }

    /// A makePayment whose body is malformed is answered 400 (71) and the connection closes once
    /// that answer is out. Until then, the decoder's later errors and a quiesce stop here: passed
    /// on, Hummingbird would close the channel at once, the 400 still being written.
    @Test func nothingClosesTheConnectionUnderItsLastAnswer() throws {
        let (rig, writes) = try Self.closingAnswerBeingWritten()
        guard case .head(let head)? = try rig.channel.readOutbound(as: HTTPResponsePart.self) else { Issue.record("no answer"); return }
        #expect(head.status.code == 400 && head.headerFields[.connection] == "close")
        rig.channel.pipeline.fireErrorCaught(ParseFailure())  // the decoder reports each read after its first error
        #expect(throws: Never.self) { try rig.channel.throwIfErrorCaught() }
        rig.channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        #expect(rig.router.quiesces == 0, "a quiesce passed on would close the connection under the 400")
        rig.channel.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        #expect(rig.router.inputCloses == 0, "a half-close passed on would close the connection under the 400")
        #expect(rig.channel.isActive)
        writes.completeAll()
        #expect(!rig.channel.isActive, "the connection stays open after its closing answer")
    }

    /// A closing answer the client never reads (its socket's buffer full) does not hold the
    /// connection, nor a graceful shutdown, for ever: it is closed `closingGrace` after.
    @Test func aClosingAnswerNobodyReadsIsClosedAfterTheGrace() throws {
        let (rig, _) = try Self.closingAnswerBeingWritten()
        rig.channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        rig.loop.advanceTime(by: MakePaymentChannelHandler.closingGrace - .seconds(1))
        #expect(rig.channel.isActive, "closed before the grace, the answer still being written")
        rig.loop.advanceTime(by: .seconds(1))
        #expect(!rig.channel.isActive, "a closing answer nobody reads holds the connection past the grace")
    }
}

@Suite struct MakePaymentHeaderTests {
    /// RFC 9110 §5.6.7's own example of an IMF-fixdate.
    @Test func theDateHeaderIsAnIMFFixdate() {
        #expect(HTTPDate.format(784_111_777) == "Sun, 06 Nov 1994 08:49:37 GMT")
        #expect(HTTPDate.format(0) == "Thu, 01 Jan 1970 00:00:00 GMT")
        var date = HTTPDate()
        #expect(date.now().hasSuffix(" GMT") && date.now().count == 29)
    }

    @Test(arguments: [("close", true), ("Close", true), ("keep-alive, CLOSE", true), ("keep-alive", false),
                      ("upgrade", false), ("clos", false), ("cLoSe", true)])
    func aConnectionHeaderAsksToClose(value: String, closes: Bool) {
        let head = HTTPRequest(method: .post, scheme: nil, authority: "x", path: "/makePayment", headerFields: [.connection: value])
        #expect(MakePaymentChannelHandler.asksToClose(head) == closes)
    }
}

@Suite struct ConnectionLimitTests {
    /// Places up to the limit; past it refused (and counted) until one is given back; a handler
    /// gives its place back once, however its connection ends.
    @Test func placesAreTakenAndGivenBack() throws {
        let limit = ConnectionLimit(2, factory: NOOPMetricsHandler.instance, logger: Logger(label: "test"))
        #expect(limit.admit() && limit.admit())
        #expect(!limit.admit(), "a third place past a limit of 2")
        #expect(limit.open == 2)
        limit.release()
        #expect(limit.admit())
        limit.release(); limit.release()
        #expect(limit.open == 0)
        // On connections: the third is closed as it becomes active; closing the others gives back their places once.
        let channels = try (0..<3).map { _ in
            let channel = EmbeddedChannel()
            try channel.pipeline.syncOperations.addHandler(ConnectionLimitHandler(limit))
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 8080)).wait()
            return channel
        }
        #expect(channels.map(\.isActive) == [true, true, false])
        #expect(limit.open == 2)
        // Admitted, the handler leaves the pipeline: the connection's requests do not pass through it.
        #expect((try? channels[0].pipeline.syncOperations.context(handlerType: ConnectionLimitHandler.self)) == nil)
        _ = try channels[0].finish()
        #expect(limit.open == 1)
        _ = try channels[1].finish()
        _ = try? channels[2].finish()
        #expect(limit.open == 0, "a place given back twice, or not at all")
    }
}

@Suite struct MakePaymentClientWaitTests {
    /// A connection left idle (or whose next request head never completes) is closed after
    /// `clientWaitTimeout`; nothing else would close it.
    @Test func anIdleConnectionIsClosedAfterTheTimeout() throws {
        let rig = try HandlerRig()
        rig.loop.advanceTime(by: MakePaymentChannelHandler.clientWaitTimeout - .seconds(1))
        #expect(rig.channel.isActive, "closed before the timeout")
        rig.loop.advanceTime(by: .seconds(2))
        #expect(!rig.channel.isActive, "an idle connection stays open for ever")
    }

    /// The wait is counted from the last answer, not from the connection's start.
    @Test func theWaitIsCountedFromTheLastAnswer() throws {
        let rig = try HandlerRig()
        let timeout = MakePaymentChannelHandler.clientWaitTimeout
        rig.loop.advanceTime(by: timeout - .seconds(10))
        try rig.read(HandlerRig.post("/makePayment"), HandlerRig.body("{}"), .end(nil))
        #expect(rig.served == 1)
        rig.loop.advanceTime(by: timeout - .seconds(10))
        #expect(rig.channel.isActive, "closed before the timeout had passed since the answer")
        rig.loop.advanceTime(by: .seconds(11))
        #expect(!rig.channel.isActive)
    }

    /// While an answer is owed (Hummingbird's, here), the wait is ours: the connection stays open.
    @Test func anAnswerOwedKeepsTheConnection() throws {
        let rig = try HandlerRig()
        try rig.read(HandlerRig.post("/payments"), .end(nil))
        rig.loop.advanceTime(by: MakePaymentChannelHandler.clientWaitTimeout * 2)
        #expect(rig.channel.isActive, "closed while its answer was owed")
        rig.router.answer()
        rig.loop.advanceTime(by: MakePaymentChannelHandler.clientWaitTimeout + .seconds(1))
        #expect(!rig.channel.isActive)
    }

    /// A request handed on whose body never ends is not waited for for ever either.
    @Test func aHandedOnRequestThatNeverEndsIsClosed() throws {
        let rig = try HandlerRig()
        let timeout = MakePaymentChannelHandler.clientWaitTimeout
        rig.loop.advanceTime(by: .nanoseconds(timeout.nanoseconds / 2))
        try rig.read(HandlerRig.post("/payments"), HandlerRig.body("{"))
        rig.loop.advanceTime(by: timeout - .seconds(15))
        #expect(rig.channel.isActive, "the wait was counted from before the request")
        rig.loop.advanceTime(by: .seconds(16))
        #expect(!rig.channel.isActive, "a request body that never ends holds the connection")
    }
}

@Suite struct MakePaymentAuthorizationFieldTests {
    /// One Authorization field is the credential; two are none (joined, "a, b" could spell a
    /// registered token that contains ", ").
    @Test(arguments: [(["tok, en"], "tok, en"), (["tok", "en"], nil), ([], nil)] as [([String], String?)])
    func twoAuthorizationFieldsAreNoCredential(values: [String], served: String?) throws {
        var fields = HTTPFields()
        for value in values { fields.append(HTTPField(name: .authorization, value: value)) }
        let rig = try HandlerRig()
        try rig.read(.head(HTTPRequest(method: .post, scheme: nil, authority: "x", path: "/makePayment", headerFields: fields)),
                     HandlerRig.body("{}"), .end(nil))
        #expect(rig.served == 1)  // `serve` runs at once: Task.immediate, and nothing to wait for
        #expect(rig.lastAuthorization == served)
        // What the joined read would have handed on.
        #expect(values.count < 2 || fields[.authorization] == "tok, en")
    }
}

@Suite struct MakePaymentBodyTimeoutTests {
    /// A makePayment whose head came and whose body stalls is not waited for for ever: the
    /// connection is closed after `bodyTimeout`, and nothing was started. So too one started from
    /// the backlog (read while an earlier answer was owed), though no read-complete follows if its
    /// client stalls (the timer used to be armed only at a read-complete: the connection and its
    /// buffer were held for ever).
    @Test(arguments: [false, true])
    func aStalledBodyClosesTheConnection(fromTheBacklog: Bool) throws {
        let rig = try HandlerRig()
        if fromTheBacklog {
            try rig.read(HandlerRig.post("/payments"), .end(nil), HandlerRig.post("/makePayment"), HandlerRig.body("{\"psp"))
            rig.router.answer()
        } else {
            try rig.read(HandlerRig.post("/makePayment"), HandlerRig.body("{\"pspTrans"))
        }
        rig.loop.advanceTime(by: MakePaymentChannelHandler.bodyTimeout - .seconds(1))
        #expect(rig.channel.isActive, "closed before the timeout")
        rig.loop.advanceTime(by: .seconds(2))
        #expect(!rig.channel.isActive, "still open after the timeout")
        #expect(rig.served == 0)
    }

    /// The timeout bounds the whole body, not each gap in it: one that trickles in a few bytes
    /// every 2 s is closed at 10 s all the same (a slow client cannot hold a connection's buffer).
    @Test func aTricklingBodyIsClosedAtTheTimeout() throws {
        let rig = try HandlerRig()
        try rig.read(HandlerRig.post("/makePayment"), HandlerRig.body("{"))
        for _ in 0..<4 {
            rig.loop.advanceTime(by: .seconds(2))
            try rig.read(HandlerRig.body(" "))
        }
        #expect(rig.channel.isActive, "closed before the timeout")
        rig.loop.advanceTime(by: .seconds(3))
        #expect(!rig.channel.isActive, "a body still incomplete 11 s in keeps its connection")
        #expect(rig.served == 0)
    }

    /// A body that completes in time is answered, and its timer then does nothing.
    @Test func aBodyInTimeIsServedAndTheTimerDoesNothing() throws {
        let rig = try HandlerRig()
        try rig.read(HandlerRig.post("/makePayment"), HandlerRig.body("{}"))
        rig.loop.advanceTime(by: .seconds(1))
        try rig.read(.end(nil))
        rig.loop.run()
        #expect(rig.served == 1)
        rig.loop.advanceTime(by: MakePaymentChannelHandler.bodyTimeout + .seconds(1))
        #expect(rig.channel.isActive)
    }
}
