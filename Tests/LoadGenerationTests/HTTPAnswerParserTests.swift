import LoadGeneration
import NIOCore
import NIOPosix
import Synchronization
import Testing

@Suite struct HTTPAnswerParserTests {
    static let answer = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nContent-Length: 13\r\n\r\n{\"status\":1}\n"

    /// Every split of the stream into two reads gives the same answer, once.
    @Test func anAnswerSplitAnywhereIsReadOnce() throws {
        let bytes = Array(Self.answer.utf8)
        for cut in 0...bytes.count {
            var parser = HTTPAnswerParser()
            var first = ByteBuffer(bytes: bytes[..<cut])
            var answers: [HTTPAnswer] = []
            while let answer = try parser.parse(&first) { answers.append(answer) }
            var second = ByteBuffer(bytes: bytes[cut...])
            while let answer = try parser.parse(&second) { answers.append(answer) }
            #expect(answers.count == 1, "cut at \(cut)")
            #expect(answers.first?.status == 200)
            #expect(answers.first.map { String(decoding: $0.body, as: UTF8.self) } == "{\"status\":1}\n")
            #expect(answers.first?.keepAlive == true)
            #expect(answers.first?.isJSON == true)
        }
    }

    /// The media type is JSON's, in any case and with any parameters; nothing else is.
    @Test(arguments: [("Content-Type: application/json", true), ("CONTENT-TYPE:Application/JSON ; charset=utf-8", true),
                      ("Content-Type: text/html", false), ("Content-Type: application/jsonp", false), ("X-Other: 1", false)])
    func theContentTypeIsRead(header: String, isJSON: Bool) throws {
        var parser = HTTPAnswerParser()
        var bytes = ByteBuffer(string: "HTTP/1.1 200 OK\r\n\(header)\r\nContent-Length: 2\r\n\r\n{}")
        #expect(try #require(try parser.parse(&bytes)).isJSON == isJSON)
    }

    @Test func answersBackToBackInOneReadAreReadInOrder() throws {
        var parser = HTTPAnswerParser()
        var bytes = ByteBuffer(string: "HTTP/1.1 401 Unauthorized\r\nContent-Length: 2\r\n\r\nab"
            + "HTTP/1.1 204 No Content\r\n\r\n" + "HTTP/1.0 404 Not Found\r\ncontent-length:0\r\n\r\n")
        var answers: [HTTPAnswer] = []
        while let answer = try parser.parse(&bytes) { answers.append(answer) }
        #expect(answers.map(\.status) == [401, 204, 404])
        #expect(answers.map(\.body) == [Array("ab".utf8), [], []])
        // HTTP/1.0 closes unless told otherwise.
        #expect(answers.map(\.keepAlive) == [true, true, false])
    }

    @Test func connectionCloseIsSeen() throws {
        var parser = HTTPAnswerParser()
        var bytes = ByteBuffer(string: "HTTP/1.1 500 Internal Server Error\r\nCONNECTION: Close\r\ncontent-length: 0\r\n\r\n")
        let answer = try #require(try parser.parse(&bytes))
        #expect(answer.status == 500)
        #expect(answer.keepAlive == false)
    }

    @Test(arguments: [
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n",
        "HTTP/2 200 OK\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        "SSH-2.0-OpenSSH_9.2\r\n\r\n",
    ])
    func anAnswerItCannotFrameIsAnError(text: String) {
        var parser = HTTPAnswerParser()
        var bytes = ByteBuffer(string: text)
        #expect(throws: HTTPClientError.self) { _ = try parser.parse(&bytes) }
    }

    @Test func aHeadThatNeverEndsIsAnError() {
        var parser = HTTPAnswerParser()
        var bytes = ByteBuffer(string: "HTTP/1.1 200 OK\r\n" + String(repeating: "X-Padding: 0123456789\r\n", count: 1000))
        #expect(throws: HTTPClientError.self) { _ = try parser.parse(&bytes) }
    }

    /// The prepared bytes are the request line, the headers and the body, as an HTTP/1.1 server reads them.
    @Test func aPreparedRequestIsItsWireBytes() {
        let request = PreparedRequest(method: .POST, uri: "/makePayment", host: "127.0.0.1:8080", authorization: "tok", body: Array("{}".utf8))
        #expect(String(buffer: request.wire) == "POST /makePayment HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAuthorization: tok\r\n"
            + "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
    }
}

@Suite struct HTTPConnectionTests {
    /// A server that takes requests and never answers.
    final class Silent: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {}
    }

    /// A request the server never answers fails as timed out, and the connection is closed (a late
    /// answer would otherwise be read as the next request's).
    @Test func anUnansweredRequestTimesOutAndClosesTheConnection() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let server = try await ServerBootstrap(group: group)
            .childChannelInitializer { $0.pipeline.addHandler(Silent()) }
            .bind(host: "127.0.0.1", port: 0).get()
        let port = try #require(server.localAddress?.port)
        let connection = try await HTTPConnection.connect(to: ServerAddress(host: "127.0.0.1", port: port), on: group)
        let request = PreparedRequest(method: .GET, uri: "/", host: "127.0.0.1", authorization: nil, body: [])
        await #expect(throws: HTTPClientError.self) { _ = try await connection.send(request, timeout: .milliseconds(200)) }
        try await waitUntilClosed(connection)
        #expect(connection.isUsable == false)
        try await server.close()
        try await group.shutdownGracefully()
    }

    /// A server that answers every request twice: the second answer either follows the first
    /// in the same bytes (then the request fails: no request asked for the rest) or comes on its own
    /// later (then the connection reports it). Either way it is seen, never taken for the next
    /// request's answer.
    final class AnswersTwice: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        let apart: Bool
        init(apart: Bool) { self.apart = apart }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let answer = ByteBuffer(string: HTTPAnswerParserTests.answer)
            if apart {
                context.writeAndFlush(wrapOutboundOut(answer), promise: nil)
                let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
                context.eventLoop.scheduleTask(in: .milliseconds(100)) {
                    let (handler, context) = bound.value
                    context.writeAndFlush(handler.wrapOutboundOut(answer), promise: nil)
                }
            } else {
                var both = answer
                both.writeString(HTTPAnswerParserTests.answer)
                context.writeAndFlush(wrapOutboundOut(both), promise: nil)
            }
        }
    }

    @Test(arguments: [false, true])
    func anAnswerNoRequestWaitedForIsReported(apart: Bool) async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let server = try await ServerBootstrap(group: group)
            .childChannelInitializer { channel in channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(AnswersTwice(apart: apart)) } }
            .bind(host: "127.0.0.1", port: 0).get()
        let port = try #require(server.localAddress?.port)
        final class Count: Sendable { let value = Mutex(0) }
        let count = Count()
        let connection = try await HTTPConnection.connect(to: ServerAddress(host: "127.0.0.1", port: port), on: group,
                                                          unexpectedAnswer: { count.value.withLock { $0 += 1 } })
        let request = PreparedRequest(method: .GET, uri: "/", host: "127.0.0.1", authorization: nil, body: [])
        if apart {
            #expect(try await connection.send(request, timeout: .seconds(5)).status == 200)
            for _ in 0..<200 where count.value.withLock({ $0 }) == 0 { try await Task.sleep(for: .milliseconds(10)) }
            #expect(count.value.withLock { $0 } == 1, "the second answer, with no request waiting, is reported")
        } else {
            await #expect(throws: HTTPClientError.self, "an answer with another behind it is no answer") {
                _ = try await connection.send(request, timeout: .seconds(5))
            }
        }
        try await waitUntilClosed(connection)
        #expect(connection.isUsable == false)
        try await server.close()
        try await group.shutdownGracefully()
    }

    private func waitUntilClosed(_ connection: HTTPConnection) async throws {
        for _ in 0..<200 where connection.isUsable { try await Task.sleep(for: .milliseconds(10)) }
    }
}
