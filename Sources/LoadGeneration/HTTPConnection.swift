import NIOCore
import NIOHTTP1
import NIOPosix

/// Where the worker listens: `http://HOST:PORT`. Plain HTTP only; TLS would measure the TLS stack.
public struct ServerAddress: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses `http://host:port` (a trailing slash is allowed; the port defaults to 80).
    public init?(url: String) {
        guard url.hasPrefix("http://") else { return nil }
        var rest = url.dropFirst("http://".count)
        if rest.hasSuffix("/") { rest = rest.dropLast() }
        guard !rest.isEmpty, !rest.contains("/") else { return nil }
        if let colon = rest.lastIndex(of: ":") {
            guard let port = Int(rest[rest.index(after: colon)...]), (1...65535).contains(port) else { return nil }
            self.init(host: String(rest[..<colon]), port: port)
        } else {
            self.init(host: String(rest), port: 80)
        }
        guard !host.isEmpty else { return nil }
    }

    public var hostHeader: String { "\(host):\(port)" }
    public var description: String { "http://\(host):\(port)" }
}

/// A request whose head and body were built before the timed run.
public struct PreparedRequest: Sendable {
    public var head: HTTPRequestHead
    public var body: ByteBuffer

    public init(method: HTTPMethod, uri: String, host: String, authorization: String?, body: [UInt8]) {
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: host)
        if let authorization { headers.add(name: "Authorization", value: authorization) }
        if method == .POST {
            headers.add(name: "Content-Type", value: "application/json")
            headers.add(name: "Content-Length", value: String(body.count))
        }
        self.head = HTTPRequestHead(version: .http1_1, method: method, uri: uri, headers: headers)
        self.body = ByteBuffer(bytes: body)
    }
}

/// An HTTP answer: status and the whole body.
public struct HTTPAnswer: Sendable {
    public var status: Int
    public var body: [UInt8]
    /// False when the server asked to close the connection after this answer.
    public var keepAlive: Bool
}

public enum HTTPClientError: Error, CustomStringConvertible {
    case connectionClosed
    case timedOut
    case busy

    public var description: String {
        switch self {
        case .connectionClosed: "connection closed before the answer"
        case .timedOut: "no answer within the request timeout"
        case .busy: "a request was sent on a connection already waiting for an answer"
        }
    }
}

/// One persistent HTTP/1.1 keep-alive connection, one request at a time: the shape of Vipps's
/// calls to a PSP, and the cheapest client there is (SwiftNIO, no pool, no redirects, no TLS).
public final class HTTPConnection: Sendable {
    private let channel: any Channel

    private init(channel: any Channel) { self.channel = channel }

    public static func connect(to address: ServerAddress, on group: any EventLoopGroup) async throws -> HTTPConnection {
        try await connect(to: address, on: group.next()).get()
    }

    /// Connects on `loop`, whose thread then runs everything the connection does.
    public static func connect(to address: ServerAddress, on loop: any EventLoop) -> EventLoopFuture<HTTPConnection> {
        ClientBootstrap(group: loop)
            .channelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(.seconds(10))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(ExchangeHandler())
                }
            }
            .connect(host: address.host, port: address.port)
            .map { HTTPConnection(channel: $0) }
    }

    public var eventLoop: any EventLoop { channel.eventLoop }

    /// False once the connection failed or was closed: the caller connects again.
    public var isUsable: Bool { channel.isActive }

    /// Sends `request` and waits for the whole answer, or fails after `timeout` (and closes the
    /// connection, since a late answer would otherwise be read as the next request's).
    public func send(_ request: PreparedRequest, timeout: TimeAmount) async throws -> HTTPAnswer {
        try await send(request, timeout: timeout).get()
    }

    /// `send` without leaving the event loop: called there, nothing hops threads.
    public func send(_ request: PreparedRequest, timeout: TimeAmount) -> EventLoopFuture<HTTPAnswer> {
        let channel = self.channel
        let promise = channel.eventLoop.makePromise(of: HTTPAnswer.self)
        let timer = channel.eventLoop.scheduleTask(in: timeout) {
            promise.fail(HTTPClientError.timedOut)
            channel.close(promise: nil)
        }
        promise.futureResult.whenComplete { result in
            timer.cancel()
            if case .success(let answer) = result, !answer.keepAlive { channel.close(promise: nil) }
        }
        channel.writeAndFlush(Exchange(request: request, promise: promise)).whenFailure { promise.fail($0) }
        return promise.futureResult
    }

    public func close() async {
        try? await channel.close()
    }

    /// Closes without waiting; an already closed connection is no failure.
    public func closeFuture() -> EventLoopFuture<Void> {
        channel.close().recover { _ in }
    }
}

/// A request and the promise its answer completes.
struct Exchange: Sendable {
    let request: PreparedRequest
    let promise: EventLoopPromise<HTTPAnswer>
}

/// Writes an exchange's request and completes its promise with the answer. Runs only on its
/// channel's event loop, so its state needs no lock.
final class ExchangeHandler: ChannelDuplexHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = Exchange
    typealias OutboundOut = HTTPClientRequestPart

    private var pending: EventLoopPromise<HTTPAnswer>?
    private var status = 0
    private var keepAlive = true
    private var body: ByteBuffer?

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let exchange = unwrapOutboundIn(data)
        guard pending == nil else {
            exchange.promise.fail(HTTPClientError.busy)
            promise?.fail(HTTPClientError.busy)
            return
        }
        pending = exchange.promise
        context.write(wrapOutboundOut(.head(exchange.request.head)), promise: nil)
        if exchange.request.body.readableBytes > 0 {
            context.write(wrapOutboundOut(.body(.byteBuffer(exchange.request.body))), promise: nil)
        }
        context.write(wrapOutboundOut(.end(nil)), promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            status = Int(head.status.code)
            keepAlive = head.isKeepAlive
            body = nil
        case .body(var part):
            if body == nil { body = part } else { body!.writeBuffer(&part) }
        case .end:
            let promise = pending
            pending = nil
            let bytes = body.map { Array($0.readableBytesView) } ?? []
            body = nil
            promise?.succeed(HTTPAnswer(status: status, body: bytes, keepAlive: keepAlive))
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        pending?.fail(HTTPClientError.connectionClosed)
        pending = nil
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        pending?.fail(error)
        pending = nil
        context.close(promise: nil)
    }
}
