import ISO8583
import ISO8583Acquirer
import NIOCore
import NIOEmbedded
import Testing

/// The acquirer's framing: frames come out whole however the stream is cut, and every byte
/// received (hosts echo card data) is zero once the frames in it have been passed on.
@Suite struct FrameHandlerTests {
    /// Three frames, the middle one carrying a card number, as a host's replies would.
    static let frames: [[UInt8]] = [
        Array("0110first".utf8), Array("0110 4000000000000002 2512 echoed".utf8), Array("0810".utf8),
    ]
    static let stream: [UInt8] = frames.flatMap { [UInt8($0.count >> 8), UInt8($0.count & 0xFF)] + $0 }

    /// Feeds `stream` cut at `cuts`, and returns the frames passed on and the reads as the handler left them.
    static func feed(cutAt cuts: [Int], maxFrameLength: Int = 8192) throws -> (frames: [[UInt8]], reads: [ByteBuffer], channel: EmbeddedChannel) {
        let channel = EmbeddedChannel(handler: ISO8583FrameHandler(maxFrameLength: maxFrameLength))
        var reads: [ByteBuffer] = []
        var from = 0
        for to in cuts + [stream.count] where to > from {
            let read = ByteBuffer(bytes: stream[from..<to])
            reads.append(read)
            try channel.writeInbound(read)
            from = to
        }
        var out: [[UInt8]] = []
        while let frame = try channel.readInbound(as: ByteBuffer.self) { out.append(Array(frame.readableBytesView)) }
        return (out, reads, channel)
    }

    @Test func framesComeOutWholeWhereverTheStreamIsCut() throws {
        // Every single cut and every pair of cuts: inside a header, between header and body, inside a body.
        for first in 1..<Self.stream.count {
            for second in [first + 1, first + 7, Self.stream.count] where second <= Self.stream.count {
                let (frames, _, channel) = try Self.feed(cutAt: [first, second])
                // The frames are read after the handler wiped its reads: only their number and sizes remain.
                #expect(frames.map(\.count) == Self.frames.map(\.count), "cut at \(first), \(second)")
                _ = try channel.finish()
            }
        }
    }

    @Test func theFramesAreTheBytesSent() throws {
        // Read inside the handler's turn, before its wipe, as the acquirer's reply handler does.
        final class Collect: ChannelInboundHandler {
            typealias InboundIn = ByteBuffer
            var frames: [[UInt8]] = []
            func channelRead(context: ChannelHandlerContext, data: NIOAny) { frames.append(Array(unwrapInboundIn(data).readableBytesView)) }
        }
        // Two pieces, three pieces, and a byte at a time.
        let cuts = (1..<Self.stream.count).flatMap { [[$0], [$0, min($0 + 5, Self.stream.count)]] } + [Array(1..<Self.stream.count)]
        for pieces in cuts {
            let collect = Collect()
            let channel = EmbeddedChannel()
            try channel.pipeline.syncOperations.addHandlers([ISO8583FrameHandler(), collect])
            var from = 0
            for to in pieces + [Self.stream.count] where to > from {
                try channel.writeInbound(ByteBuffer(bytes: Self.stream[from..<to]))
                from = to
            }
            #expect(collect.frames == Self.frames, "cut at \(pieces)")
            _ = try channel.finish()
        }
    }

    @Test func everyByteReceivedIsWipedOnceFramed() throws {
        for cut in 1..<Self.stream.count {
            let (_, reads, channel) = try Self.feed(cutAt: [cut])
            for read in reads { #expect(read.readableBytesView.allSatisfy { $0 == 0 }, "cut at \(cut)") }
            _ = try channel.finish()
        }
    }

    @Test func aBadLengthIsAnErrorAndNothingMoreIsPassedOn() throws {
        let channel = EmbeddedChannel(handler: ISO8583FrameHandler(maxFrameLength: 16))
        #expect(throws: ISO8583Error.frameTooLong(length: 17, max: 16)) {
            try channel.writeInbound(ByteBuffer(bytes: [0, 17] + [UInt8](repeating: 0x41, count: 17)))
        }
        let later = ByteBuffer(bytes: [0, 1, 0x41])
        try channel.writeInbound(later)
        #expect(try channel.readInbound(as: ByteBuffer.self) == nil)
        #expect(later.readableBytesView.allSatisfy { $0 == 0 })
    }

    /// A zero length is a keep-alive some hosts send: skipped, whole or split across reads, and
    /// the connection goes on (it was an error that closed it, failing the authorizations on it).
    @Test func aZeroLengthFrameIsAKeepAlive() throws {
        // The frames are read after the handler wiped its reads: their sizes are what remains.
        let channel = EmbeddedChannel(handler: ISO8583FrameHandler())
        try channel.writeInbound(ByteBuffer(bytes: [0, 0, 0, 2, 0x4F, 0x4B, 0]))
        #expect(try channel.readInbound(as: ByteBuffer.self)?.readableBytes == 2)
        try channel.writeInbound(ByteBuffer(bytes: [0, 0, 1, 0x41]))
        #expect(try channel.readInbound(as: ByteBuffer.self)?.readableBytes == 1)
        #expect(try channel.readInbound(as: ByteBuffer.self) == nil)
        #expect(throws: Never.self) { try channel.throwIfErrorCaught() }
    }
}
