import ISO8583
@testable import ISO8583Acquirer
import NIOCore
import NIOEmbedded
import Testing

/// A host's own 0800s are answered while our side of the connection is writable, and go
/// unanswered once it is not (past NIO's high-water mark: a host sending them faster than it reads
/// our 0810s would otherwise grow our pending writes without bound).
@Suite struct HostRequestTests {
    static func echoRequest(stan: String) throws -> ByteBuffer {
        var request = ISOMessage(mti: "0800")
        request[7] = "1127120000"
        request[11] = stan
        request[70] = "301"
        return ByteBuffer(bytes: try ISO87APackager.encode(request))
    }

    @Test func aHostsEchoIsAnsweredOnlyWhileWeCanWrite() throws {
        let iso = ISO8583Acquirer(configuration: .init(host: "127.0.0.1", port: 1))
        let channel = EmbeddedChannel()
        defer { _ = try? channel.finish() }
        iso.received(try Self.echoRequest(stan: "000001"), on: channel)
        let answer = try #require(try channel.readOutbound(as: ByteBuffer.self))
        let bytes = Array(answer.readableBytesView)
        #expect(bytes.count > 2 && Int(bytes[0]) << 8 | Int(bytes[1]) == bytes.count - 2, "one frame")
        let reply = try ISO87APackager.decode(bytes.dropFirst(2))
        #expect(reply.mti == "0810" && reply[11] == "000001" && reply[39] == "00")
        channel.isWritable = false
        iso.received(try Self.echoRequest(stan: "000002"), on: channel)
        #expect(try channel.readOutbound(as: ByteBuffer.self) == nil, "answered while not writable")
        channel.isWritable = true
        iso.received(try Self.echoRequest(stan: "000003"), on: channel)
        #expect(try channel.readOutbound(as: ByteBuffer.self) != nil)
    }
}
