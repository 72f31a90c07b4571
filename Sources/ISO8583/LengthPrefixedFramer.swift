/// Framing with a 2-byte big-endian length header that counts the body only.
///
/// Use `append(_:)` with whatever the socket delivered, then call `nextFrame()`
/// until it returns nil. A header of length 0 is a keep-alive (some hosts send them; jPOS's
/// channels skip them when configured to) and is skipped. A header above `maxFrameLength` throws,
/// and keeps throwing: the stream can no longer be re-synchronised, so the caller
/// should close the connection.
public struct LengthPrefixedFramer: Sendable {
    public static let headerLength = 2
    public static let defaultMaxFrameLength = 8192
    /// The largest body a 2-byte header can describe.
    public static let absoluteMaxFrameLength = 0xFFFF

    /// Largest body accepted; checked as soon as the header arrives, so a peer
    /// cannot make us buffer a huge frame before rejecting it.
    public let maxFrameLength: Int
    private var buffer: [UInt8] = []
    private var start = 0  // Consumed prefix of `buffer`; dropped lazily to keep reads O(n).

    /// - Parameter maxFrameLength: clamped to 1...65535, the range the header can express.
    public init(maxFrameLength: Int = defaultMaxFrameLength) {
        self.maxFrameLength = min(max(maxFrameLength, 1), Self.absoluteMaxFrameLength)
    }

    /// Bytes received but not yet returned as frames.
    public var bufferedByteCount: Int { buffer.count - start }

    /// Prefixes `body` with its 2-byte big-endian length.
    public static func frame(
        _ body: [UInt8], maxFrameLength: Int = absoluteMaxFrameLength
    ) throws(ISO8583Error) -> [UInt8] {
        guard !body.isEmpty else { throw .emptyFrame }
        let limit = min(maxFrameLength, absoluteMaxFrameLength)
        guard body.count <= limit else { throw .frameTooLong(length: body.count, max: limit) }
        return [UInt8(body.count >> 8), UInt8(body.count & 0xFF)] + body
    }

    public mutating func append(_ bytes: some Sequence<UInt8>) {
        buffer.append(contentsOf: bytes)
    }

    /// The next complete frame body, nil if more bytes are needed.
    public mutating func nextFrame() throws(ISO8583Error) -> [UInt8]? {
        // Zero-length frames are keep-alives: skipped.
        while buffer.count - start >= Self.headerLength, buffer[start] == 0, buffer[start + 1] == 0 {
            start += Self.headerLength
        }
        compactIfWorthIt()
        let available = buffer.count - start
        guard available >= Self.headerLength else { return nil }
        let length = try Self.bodyLength(buffer[start], buffer[start + 1], max: maxFrameLength)
        guard available >= Self.headerLength + length else { return nil }
        let bodyStart = start + Self.headerLength
        let body = Array(buffer[bodyStart..<(bodyStart + length)])
        start = bodyStart + length
        compactIfWorthIt()
        return body
    }

    /// Result of `scan(_:maxFrameLength:)`.
    public struct ScanResult: Sendable, Equatable {
        /// Complete frame bodies, in order.
        public var frames: [[UInt8]]
        /// Bytes covered by `frames` (headers included); drop these from the buffer.
        public var consumed: Int
        /// Set when the header right after `consumed` is invalid; the connection is unusable.
        /// Reported alongside the good frames before it, so none of them is lost.
        public var error: ISO8583Error?
    }

    /// Stateless variant for callers that own their buffer: finds the complete frames
    /// at the start of `bytes`. Partial data at the end is simply left unconsumed.
    public static func scan(
        _ bytes: some Collection<UInt8>, maxFrameLength: Int = defaultMaxFrameLength
    ) -> ScanResult {
        let limit = min(max(maxFrameLength, 1), absoluteMaxFrameLength)
        var result = ScanResult(frames: [], consumed: 0, error: nil)
        var index = bytes.startIndex
        var remaining = bytes.count
        while remaining >= headerLength {
            let second = bytes.index(after: index)
            let length: Int
            do {
                length = try bodyLength(bytes[index], bytes[second], max: limit)
            } catch {
                result.error = error
                break
            }
            guard remaining >= headerLength + length else { break }
            let bodyStart = bytes.index(after: second)
            if length == 0 {  // a keep-alive: consumed, no frame
                result.consumed += headerLength
                remaining -= headerLength
                index = bodyStart
                continue
            }
            let bodyEnd = bytes.index(bodyStart, offsetBy: length)
            result.frames.append(Array(bytes[bodyStart..<bodyEnd]))
            result.consumed += headerLength + length
            remaining -= headerLength + length
            index = bodyEnd
        }
        return result
    }

    private static func bodyLength(_ high: UInt8, _ low: UInt8, max: Int) throws(ISO8583Error) -> Int {
        let length = Int(high) << 8 | Int(low)
        guard length <= max else { throw .frameTooLong(length: length, max: max) }
        return length
    }

    /// Drops consumed bytes once they dominate the buffer, so memory stays bounded
    /// and each byte is moved O(1) times on average.
    private mutating func compactIfWorthIt() {
        if start == buffer.count {
            buffer.removeAll(keepingCapacity: true)
            start = 0
        } else if start >= 4096 && start * 2 >= buffer.count {
            buffer.removeFirst(start)
            start = 0
        }
    }
}
