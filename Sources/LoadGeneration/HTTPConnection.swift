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

/// A request whose bytes were all written before the timed run: sending it is one write of a
/// buffer, with no header encoding on the hot path.
public struct PreparedRequest: Sendable {
    /// The whole request as it goes on the wire: request line, headers, blank line, body.
    public let wire: ByteBuffer
    /// The Authorization header's value (for `--export-requests`).
    public let authorization: String?
    private let bodyOffset: Int

    public init(method: HTTPMethod, uri: String, host: String, authorization: String?, body: [UInt8]) {
        var wire = ByteBuffer()
        wire.reserveCapacity(256 + body.count)
        wire.writeString("\(method.rawValue) \(uri) HTTP/1.1\r\nHost: \(host)\r\n")
        if let authorization { wire.writeString("Authorization: \(authorization)\r\n") }
        if method == .POST { wire.writeString("Content-Type: application/json\r\nContent-Length: \(body.count)\r\n") }
        wire.writeString("\r\n")
        bodyOffset = wire.readableBytes
        wire.writeBytes(body)
        self.wire = wire
        self.authorization = authorization
    }

    /// The body, as it is in `wire`.
    public var body: ByteBufferView { wire.readableBytesView.dropFirst(bodyOffset) }
}

/// An HTTP answer: status and the whole body.
public struct HTTPAnswer: Sendable {
    public var status: Int
    public var body: [UInt8]
    /// False when the server asked to close the connection after this answer.
    public var keepAlive: Bool
    /// The answer said its body is JSON (`Content-Type: application/json`, any parameters).
    public var isJSON = false
}

public enum HTTPClientError: Error, CustomStringConvertible {
    case connectionClosed
    case timedOut
    case busy
    case malformedAnswer(String)
    case unexpectedAnswer

    public var description: String {
        switch self {
        case .connectionClosed: "connection closed before the answer"
        case .timedOut: "no answer within the request timeout"
        case .busy: "a request was sent on a connection already waiting for an answer"
        case .malformedAnswer(let why): "malformed HTTP answer: \(why)"
        case .unexpectedAnswer: "an answer arrived with no request waiting for it"
        }
    }
}

/// One persistent HTTP/1.1 keep-alive connection, one request at a time: the shape of Vipps's
/// calls to a PSP, and the cheapest client there is (SwiftNIO, no pool, no redirects, no TLS).
public final class HTTPConnection: Sendable {
    private let channel: any Channel

    private init(channel: any Channel) { self.channel = channel }

    /// `unexpectedAnswer` is called when an answer arrives with no request waiting for it (the
    /// connection is then closed): a server that answers twice, say, which no request's own check
    /// would see.
    public static func connect(to address: ServerAddress, on group: any EventLoopGroup,
                               unexpectedAnswer: (@Sendable () -> Void)? = nil) async throws -> HTTPConnection {
        try await connect(to: address, on: group.next(), unexpectedAnswer: unexpectedAnswer).get()
    }

    /// Connects on `loop`, whose thread then runs everything the connection does.
    public static func connect(to address: ServerAddress, on loop: any EventLoop,
                               unexpectedAnswer: (@Sendable () -> Void)? = nil) -> EventLoopFuture<HTTPConnection> {
        ClientBootstrap(group: loop)
            .channelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(.seconds(10))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ExchangeHandler(unexpectedAnswer: unexpectedAnswer))
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
        promise.futureResult.whenSuccess { answer in
            if !answer.keepAlive { channel.close(promise: nil) }
        }
        let exchange = Exchange(request: request, promise: promise, deadline: .now() + timeout)
        channel.writeAndFlush(exchange).whenFailure { promise.fail($0) }
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
    /// When the answer is given up for lost.
    let deadline: NIODeadline
}

/// Writes an exchange's prepared bytes and completes its promise with the answer, parsed from the
/// socket's bytes directly: no HTTP encoder, decoder or header validation per request (NIOHTTP1's
/// client handlers cost the generator ~30 % of its CPU, on the cores the worker needs). Runs only
/// on its channel's event loop, so its state needs no lock.
final class ExchangeHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = Exchange
    typealias OutboundOut = ByteBuffer

    private var pending: EventLoopPromise<HTTPAnswer>?
    private var deadline = NIODeadline.distantFuture
    private var parser = HTTPAnswerParser()
    /// Fails an answer overdue past its deadline (and closes, since a late answer would be read as
    /// the next request's). One check per connection every 100 ms rather than a timer per request:
    /// scheduling and cancelling a timer for every request cost the generator ~10 % of its CPU.
    private var watchdog: RepeatedTask?
    static let watchdogInterval = TimeAmount.milliseconds(100)
    private let unexpectedAnswer: (@Sendable () -> Void)?

    init(unexpectedAnswer: (@Sendable () -> Void)? = nil) { self.unexpectedAnswer = unexpectedAnswer }

    func handlerAdded(context: ChannelHandlerContext) {
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        watchdog = context.eventLoop.scheduleRepeatedTask(initialDelay: Self.watchdogInterval, delay: Self.watchdogInterval) { _ in
            let (handler, context) = loopBound.value
            guard let promise = handler.pending, NIODeadline.now() >= handler.deadline else { return }
            handler.pending = nil
            promise.fail(HTTPClientError.timedOut)
            context.close(promise: nil)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        watchdog?.cancel()
        watchdog = nil
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let exchange = unwrapOutboundIn(data)
        guard pending == nil else {
            exchange.promise.fail(HTTPClientError.busy)
            promise?.fail(HTTPClientError.busy)
            return
        }
        pending = exchange.promise
        deadline = exchange.deadline
        context.write(wrapOutboundOut(exchange.request.wire), promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        do {
            while let answer = try parser.parse(&bytes) {
                guard let promise = pending else {
                    unexpectedAnswer?()
                    throw HTTPClientError.unexpectedAnswer
                }
                pending = nil
                // Bytes after the answer came before the next request could be sent: no request
                // asked for them. Checked before the answer is handed over, since handing it over
                // may send the next request at once, which would take them for its answer.
                guard !parser.hasBufferedBytes else {
                    promise.fail(HTTPClientError.unexpectedAnswer)
                    context.close(promise: nil)
                    return
                }
                promise.succeed(answer)
            }
        } catch {
            pending?.fail(error)
            pending = nil
            context.close(promise: nil)
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

/// Reads HTTP/1.1 answers from a byte stream as it arrives, in any pieces: the status line, the
/// headers it needs (Content-Length, Connection), and the body. Answers with a length only, which
/// is what the worker sends; a chunked or unframed answer is an error, never a guess.
public struct HTTPAnswerParser: Sendable {
    /// A head longer than this is not an answer from the worker.
    public static let maximumHeadLength = 16 * 1024
    private var buffered = ByteBuffer()
    /// The parsed head of an answer whose body is still arriving.
    private var head: (status: Int, keepAlive: Bool, length: Int, isJSON: Bool)?

    public init() {}

    /// Bytes are held that are not yet part of an answer returned.
    public var hasBufferedBytes: Bool { head != nil || buffered.readableBytes > 0 }

    /// Takes all of `bytes`; returns the next complete answer, if there is one (call again for more).
    public mutating func parse(_ bytes: inout ByteBuffer) throws -> HTTPAnswer? {
        if bytes.readableBytes > 0 {
            if buffered.readableBytes == 0 { swap(&buffered, &bytes) } else { buffered.writeBuffer(&bytes) }
            bytes.clear()
        }
        if head == nil {
            guard let end = Self.endOfHead(buffered) else {
                guard buffered.readableBytes <= Self.maximumHeadLength else { throw HTTPClientError.malformedAnswer("head too long") }
                return nil
            }
            head = try Self.parseHead(buffered.readableBytesView.prefix(end))
            buffered.moveReaderIndex(forwardBy: end + 4)
        }
        guard let (status, keepAlive, length, isJSON) = head, buffered.readableBytes >= length else { return nil }
        let body = buffered.readBytes(length: length) ?? []
        head = nil
        if buffered.readableBytes == 0 { buffered.clear() }
        return HTTPAnswer(status: status, body: body, keepAlive: keepAlive, isJSON: isJSON)
    }

    /// Offset of the blank line ending the head (its CR LF CR LF), from the reader index.
    static func endOfHead(_ buffer: ByteBuffer) -> Int? {
        let view = buffer.readableBytesView
        guard view.count >= 4 else { return nil }
        var i = view.startIndex
        let last = view.endIndex - 4
        while i <= last {
            if view[i + 3] != 10 { i += view[i + 3] == 13 ? 1 : 4; continue }
            if view[i] == 13 && view[i + 1] == 10 && view[i + 2] == 13 { return i - view.startIndex }
            i += 1
        }
        return nil
    }

    static func parseHead(_ head: ByteBufferView) throws -> (status: Int, keepAlive: Bool, length: Int, isJSON: Bool) {
        var lines = head.split(separator: 10, omittingEmptySubsequences: false).makeIterator()
        guard let statusLine = lines.next() else { throw HTTPClientError.malformedAnswer("no status line") }
        // "HTTP/1.x SSS reason"
        let prefix = Array("HTTP/1.".utf8)
        guard statusLine.count >= 12, statusLine.starts(with: prefix) else { throw HTTPClientError.malformedAnswer("not an HTTP/1.x status line") }
        let minor = statusLine[statusLine.startIndex + 7]
        let digits = statusLine[(statusLine.startIndex + 9)..<(statusLine.startIndex + 12)]
        guard minor == UInt8(ascii: "0") || minor == UInt8(ascii: "1"), statusLine[statusLine.startIndex + 8] == 32,
              digits.allSatisfy({ (48...57).contains($0) })
        else { throw HTTPClientError.malformedAnswer("bad status line") }
        let status = digits.reduce(0) { $0 * 10 + Int($1 - 48) }
        var keepAlive = minor == UInt8(ascii: "1")
        var length: Int?
        var isJSON = false
        while let rawLine = lines.next() {
            let line = rawLine.last == 13 ? rawLine.dropLast() : rawLine
            guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else { throw HTTPClientError.malformedAnswer("header without a colon") }
            let name = line[..<colon]
            let value = Self.trimmed(line[(colon + 1)...])
            if Self.equalsIgnoringCase(name, "content-length") {
                guard !value.isEmpty, value.count <= 9, value.allSatisfy({ (48...57).contains($0) }) else {
                    throw HTTPClientError.malformedAnswer("bad Content-Length")
                }
                let parsed = value.reduce(0) { $0 * 10 + Int($1 - 48) }
                guard length == nil || length == parsed else { throw HTTPClientError.malformedAnswer("two different Content-Lengths") }
                length = parsed
            } else if Self.equalsIgnoringCase(name, "transfer-encoding") {
                throw HTTPClientError.malformedAnswer("Transfer-Encoding is not supported (the worker sends Content-Length)")
            } else if Self.equalsIgnoringCase(name, "content-type") {
                isJSON = Self.equalsIgnoringCase(Self.trimmed(value.prefix { $0 != UInt8(ascii: ";") }), "application/json")
            } else if Self.equalsIgnoringCase(name, "connection") {
                if Self.equalsIgnoringCase(value, "close") { keepAlive = false }
                if Self.equalsIgnoringCase(value, "keep-alive") { keepAlive = true }
            }
        }
        // No body by definition: 1xx, 204, 304. Anything else must say how long it is.
        if length == nil, status < 200 || status == 204 || status == 304 { length = 0 }
        guard let length else { throw HTTPClientError.malformedAnswer("no Content-Length") }
        return (status, keepAlive, length, isJSON)
    }

    private static func trimmed(_ bytes: ByteBufferView) -> ByteBufferView {
        var slice = bytes
        while let first = slice.first, first == 32 || first == 9 { slice = slice.dropFirst() }
        while let last = slice.last, last == 32 || last == 9 { slice = slice.dropLast() }
        return slice
    }

    private static func equalsIgnoringCase(_ bytes: some Collection<UInt8>, _ lowercase: StaticString) -> Bool {
        guard bytes.count == lowercase.utf8CodeUnitCount else { return false }
        let expected = UnsafeBufferPointer(start: lowercase.utf8Start, count: lowercase.utf8CodeUnitCount)
        return zip(bytes, expected).allSatisfy { a, b in ((65...90).contains(a) ? a | 0x20 : a) == b }
    }
}
