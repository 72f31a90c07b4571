import Testing
@testable import ISO8583

@Suite("Length-prefixed framing")
struct FramerTests {
    @Test("frame prefixes the body with its big-endian length")
    func frameHeader() throws {
        #expect(try LengthPrefixedFramer.frame([0x41]) == [0x00, 0x01, 0x41])
        let body = [UInt8](repeating: 0x30, count: 300)
        #expect(try LengthPrefixedFramer.frame(body) == [0x01, 0x2C] + body)
        let largest = [UInt8](repeating: 0x30, count: 65535)
        #expect(try LengthPrefixedFramer.frame(largest).prefix(2) == [0xFF, 0xFF])
    }

    @Test("frame refuses bodies it cannot or may not describe")
    func frameLimits() {
        #expect(throws: ISO8583Error.emptyFrame) { try LengthPrefixedFramer.frame([]) }
        #expect(throws: ISO8583Error.frameTooLong(length: 65536, max: 65535)) {
            try LengthPrefixedFramer.frame([UInt8](repeating: 0, count: 65536))
        }
        #expect(throws: ISO8583Error.frameTooLong(length: 8193, max: 8192)) {
            try LengthPrefixedFramer.frame([UInt8](repeating: 0, count: 8193), maxFrameLength: 8192)
        }
    }

    @Test("a frame arriving one byte at a time is returned only when complete")
    func byteByByte() throws {
        let body = bytes("0800" + "0020000000000000" + "000001")
        let stream = try LengthPrefixedFramer.frame(body)
        var framer = LengthPrefixedFramer()
        for (i, byte) in stream.enumerated() {
            framer.append([byte])
            let frame = try framer.nextFrame()
            if i < stream.count - 1 {
                #expect(frame == nil, "complete after only \(i + 1) bytes")
            } else {
                #expect(frame == body)
            }
        }
        #expect(try framer.nextFrame() == nil)
        #expect(framer.bufferedByteCount == 0)
    }

    @Test("partial frames accumulate across appends, including a split header", arguments: [1, 2, 3, 10, 21])
    func splitAt(cut: Int) throws {
        let body = bytes("0800" + "0020000000000000" + "000001")
        let stream = try LengthPrefixedFramer.frame(body)
        var framer = LengthPrefixedFramer()
        framer.append(stream[..<cut])
        #expect(try framer.nextFrame() == nil)
        #expect(framer.bufferedByteCount == cut)
        framer.append(stream[cut...])
        #expect(try framer.nextFrame() == body)
        #expect(try framer.nextFrame() == nil)
    }

    @Test("two frames and the start of a third in one chunk")
    func twoFramesInOneChunk() throws {
        let first = bytes("FIRST"), second = bytes("SECOND-BODY"), third = bytes("THIRD")
        let thirdFramed = try LengthPrefixedFramer.frame(third)
        var framer = LengthPrefixedFramer()
        framer.append(try LengthPrefixedFramer.frame(first) + LengthPrefixedFramer.frame(second)
                      + thirdFramed.prefix(3))
        #expect(try framer.nextFrame() == first)
        #expect(try framer.nextFrame() == second)
        #expect(try framer.nextFrame() == nil)
        framer.append(thirdFramed.dropFirst(3))
        #expect(try framer.nextFrame() == third)
    }

    @Test("a zero length header is a keep-alive: skipped, the frames around it delivered")
    func zeroLength() throws {
        var framer = LengthPrefixedFramer()
        framer.append([0x00, 0x00, 0x00])
        #expect(try framer.nextFrame() == nil)
        framer.append([0x00] + (try LengthPrefixedFramer.frame(bytes("OK"))) + [0x00, 0x00])
        #expect(try framer.nextFrame() == bytes("OK"))
        #expect(try framer.nextFrame() == nil)
        #expect(framer.bufferedByteCount == 0)
    }

    @Test("an over-long header is rejected before its body arrives", arguments: [
        (8192, [UInt8]([0x20, 0x01]), 8193),
        (8192, [0xFF, 0xFF], 65535),
        (100, [0x00, 0x65], 101),
    ])
    func tooLong(max: Int, header: [UInt8], declared: Int) {
        var framer = LengthPrefixedFramer(maxFrameLength: max)
        framer.append(header)
        #expect(throws: ISO8583Error.frameTooLong(length: declared, max: max)) { try framer.nextFrame() }
    }

    @Test("a frame of exactly the maximum is accepted")
    func exactlyMax() throws {
        var framer = LengthPrefixedFramer(maxFrameLength: 100)
        let body = [UInt8](repeating: 0x31, count: 100)
        framer.append(try LengthPrefixedFramer.frame(body))
        #expect(try framer.nextFrame() == body)
    }

    @Test("good frames before a bad header are delivered, then the error")
    func goodThenBad() throws {
        var framer = LengthPrefixedFramer()
        framer.append(try LengthPrefixedFramer.frame(bytes("OK")) + [0xFF, 0xFF])
        #expect(try framer.nextFrame() == bytes("OK"))
        #expect(throws: ISO8583Error.frameTooLong(length: 65535, max: 8192)) { try framer.nextFrame() }
        #expect(throws: ISO8583Error.frameTooLong(length: 65535, max: 8192)) { try framer.nextFrame() }
    }

    @Test("scan reports frames, bytes consumed and leaves a partial tail")
    func scanPartial() throws {
        let a = try LengthPrefixedFramer.frame(bytes("AAA"))
        let b = try LengthPrefixedFramer.frame(bytes("BB"))
        let c = try LengthPrefixedFramer.frame(bytes("CCCC"))
        let result = LengthPrefixedFramer.scan(a + b + c.prefix(4))
        #expect(result.frames == [bytes("AAA"), bytes("BB")])
        #expect(result.consumed == a.count + b.count)
        #expect(result.error == nil)

        #expect(LengthPrefixedFramer.scan([UInt8]()) == .init(frames: [], consumed: 0, error: nil))
        #expect(LengthPrefixedFramer.scan([0x00]) == .init(frames: [], consumed: 0, error: nil))
    }

    @Test("scan works on a slice whose indices do not start at zero")
    func scanSlice() throws {
        let stream = [0xEE, 0xEE] + (try LengthPrefixedFramer.frame(bytes("XY")))
        let result = LengthPrefixedFramer.scan(stream[2...])
        #expect(result.frames == [bytes("XY")])
        #expect(result.consumed == 4)
    }

    @Test("scan consumes keep-alives (zero length) without a frame")
    func scanKeepAlive() throws {
        let good = try LengthPrefixedFramer.frame(bytes("GOOD"))
        let result = LengthPrefixedFramer.scan([0x00, 0x00] + good + [0x00, 0x00, 0x00])
        #expect(result.frames == [bytes("GOOD")])
        #expect(result.consumed == 2 + good.count + 2)
        #expect(result.error == nil)
    }

    @Test("scan stops at a bad header but keeps the frames before it", arguments: [
        ([UInt8]([0x20, 0x01]), ISO8583Error.frameTooLong(length: 8193, max: 8192)),
        ([0xFF, 0xFF], .frameTooLong(length: 65535, max: 8192)),
    ])
    func scanBadHeader(header: [UInt8], error: ISO8583Error) throws {
        let good = try LengthPrefixedFramer.frame(bytes("GOOD"))
        let result = LengthPrefixedFramer.scan(good + header + [0x41, 0x42])
        #expect(result.frames == [bytes("GOOD")])
        #expect(result.consumed == good.count)
        #expect(result.error == error)

        let first = LengthPrefixedFramer.scan(header)
        #expect(first.frames.isEmpty && first.consumed == 0 && first.error == error)
    }

    @Test("many frames in random chunk sizes come out intact (buffer compaction)")
    func manyFrames() throws {
        var rng = SplitMix64(state: 42)
        var bodies: [[UInt8]] = []
        var stream: [UInt8] = []
        for i in 0..<5000 {
            let body = (0..<Int.random(in: 1...300, using: &rng)).map { UInt8(truncatingIfNeeded: $0 &+ i) }
            bodies.append(body)
            stream += try LengthPrefixedFramer.frame(body)
        }
        var framer = LengthPrefixedFramer()
        var received: [[UInt8]] = []
        var offset = 0
        while offset < stream.count {
            let end = min(stream.count, offset + Int.random(in: 1...2000, using: &rng))
            framer.append(stream[offset..<end])
            offset = end
            while let body = try framer.nextFrame() { received.append(body) }
            #expect(framer.bufferedByteCount < 2 + 300)
        }
        #expect(received == bodies)
        #expect(framer.bufferedByteCount == 0)
    }

    @Test("maximum frame length is clamped to what the header can express")
    func clamp() {
        #expect(LengthPrefixedFramer().maxFrameLength == 8192)
        #expect(LengthPrefixedFramer(maxFrameLength: 1_000_000).maxFrameLength == 65535)
        #expect(LengthPrefixedFramer(maxFrameLength: 0).maxFrameLength == 1)
    }
}
