import HTTPTypes
import MakePayment
import NIOCore
import NIOEmbedded
import NIOHTTPTypes
import Processing
import Synchronization
import Testing
@testable import PSPWorker

/// The makePayment handler on an EmbeddedChannel, with a stand-in for Hummingbird behind it.
@Suite struct MakePaymentChannelHandlerTests {
    /// Stands where Hummingbird's router would: it takes the requests handed on, and answers
    /// one when the test says so (its answer passes back through the handler, as Hummingbird's does).
    final class Router: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = HTTPRequestPart
        typealias OutboundOut = HTTPResponsePart
        var parts: [HTTPRequestPart] = []
        var context: ChannelHandlerContext?
        func handlerAdded(context: ChannelHandlerContext) { self.context = context }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) { parts.append(unwrapInboundIn(data)) }
        func answer() {
            context?.write(wrapOutboundOut(.head(HTTPResponse(status: .created))), promise: nil)
            context?.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        }
    }

    static func post(_ path: String) -> HTTPRequestPart {
        .head(HTTPRequest(method: .post, scheme: nil, authority: "x", path: path, headerFields: [.authorization: "t"]))
    }

    /// Shutdown begins while a request handed on is still being read; a makePayment pipelined
    /// behind it must not start when that request's answer is written, since Hummingbird closes
    /// the connection right after (the payment would be authorized, its answer lost).
    @Test func noMakePaymentStartsAfterTheQuiesce() throws {
        let served = Mutex(0)
        let handler = MakePaymentChannelHandler(path: "/makePayment", maxBodyBytes: 4096) { _, _ in
            served.withLock { $0 += 1 }
            return MakePaymentResult(httpStatus: 200, response: .fail("p", .internalError))
        }
        let router = Router()
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(handler)
        try channel.pipeline.syncOperations.addHandler(router)
        try channel.writeInbound(Self.post("/payments"))
        channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        try channel.writeInbound(HTTPRequestPart.body(ByteBuffer(string: "{}")))
        try channel.writeInbound(HTTPRequestPart.end(nil))
        try channel.writeInbound(Self.post("/makePayment"))
        try channel.writeInbound(HTTPRequestPart.body(ByteBuffer(string: "{}")))
        try channel.writeInbound(HTTPRequestPart.end(nil))
        router.answer()
        #expect(router.parts.count == 3, "the request handed on was read in full")
        #expect(served.withLock { $0 } == 0, "a makePayment was started after the quiesce")
        _ = try? channel.finish()
    }

    /// Without a quiesce the same pipelined makePayment starts once the router has answered.
    @Test func aPipelinedMakePaymentStartsOnceTheRouterHasAnswered() throws {
        let served = Mutex(0)
        let handler = MakePaymentChannelHandler(path: "/makePayment", maxBodyBytes: 4096) { _, _ in
            served.withLock { $0 += 1 }
            return MakePaymentResult(httpStatus: 200, response: .fail("p", .internalError))
        }
        let router = Router()
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(handler)
        try channel.pipeline.syncOperations.addHandler(router)
        try channel.writeInbound(Self.post("/payments"))
        try channel.writeInbound(HTTPRequestPart.end(nil))
        try channel.writeInbound(Self.post("/makePayment"))
        try channel.writeInbound(HTTPRequestPart.body(ByteBuffer(string: "{}")))
        try channel.writeInbound(HTTPRequestPart.end(nil))
        #expect(served.withLock { $0 } == 0)
        router.answer()
        #expect(served.withLock { $0 } == 1)
        _ = try? channel.finish()
    }
}

@Suite struct MakePaymentBodyTimeoutTests {
    /// A makePayment whose head came and whose body stalls is not waited for for ever: the
    /// connection is closed after `bodyTimeout`, and nothing was started.
    @Test func aStalledBodyClosesTheConnection() throws {
        let served = Mutex(0)
        let handler = MakePaymentChannelHandler(path: "/makePayment", maxBodyBytes: 4096) { _, _ in
            served.withLock { $0 += 1 }
            return MakePaymentResult(httpStatus: 200, response: .fail("p", .internalError))
        }
        let loop = EmbeddedEventLoop()
        let channel = EmbeddedChannel(loop: loop)
        try channel.pipeline.syncOperations.addHandler(handler)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 8080)).wait()
        try channel.writeInbound(MakePaymentChannelHandlerTests.post("/makePayment"))
        try channel.writeInbound(HTTPRequestPart.body(ByteBuffer(string: "{\"pspTrans")))
        loop.advanceTime(by: MakePaymentChannelHandler.bodyTimeout - .seconds(1))
        #expect(channel.isActive, "closed before the timeout")
        loop.advanceTime(by: .seconds(2))
        #expect(!channel.isActive, "still open after the timeout")
        #expect(served.withLock { $0 } == 0)
    }

    /// A body that completes in time is answered, and its timer then does nothing.
    @Test func aBodyInTimeIsServedAndTheTimerDoesNothing() throws {
        let served = Mutex(0)
        let handler = MakePaymentChannelHandler(path: "/makePayment", maxBodyBytes: 4096) { _, _ in
            served.withLock { $0 += 1 }
            return MakePaymentResult(httpStatus: 200, response: .fail("p", .internalError))
        }
        let loop = EmbeddedEventLoop()
        let channel = EmbeddedChannel(loop: loop)
        try channel.pipeline.syncOperations.addHandler(handler)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 8080)).wait()
        try channel.writeInbound(MakePaymentChannelHandlerTests.post("/makePayment"))
        try channel.writeInbound(HTTPRequestPart.body(ByteBuffer(string: "{}")))
        loop.advanceTime(by: .seconds(1))
        try channel.writeInbound(HTTPRequestPart.end(nil))
        loop.run()
        #expect(served.withLock { $0 } == 1)
        loop.advanceTime(by: MakePaymentChannelHandler.bodyTimeout + .seconds(1))
        #expect(channel.isActive)
    }
}
