import CardCrypto
import ISO8583
import MakePayment
import NIOCore

/// Splits a TCP stream into ISO 8583 messages framed by a 2-byte big-endian length, and wipes every
/// byte it was given once the frames in it are passed on: hosts echo card data (fields 2, 14, 35)
/// in their replies. A frame split across reads is gathered in one buffer allocated at its size
/// (at the largest frame's while its header is split), so it is never grown or moved (NIO's
/// `ByteToMessageHandler` copies into a cumulation buffer that it grows and compacts, freeing the
/// old storage unwiped). The frames passed on are slices of the read (or of that buffer) and are
/// read synchronously by the next handler; that handler wipes them too, the read's and the
/// buffer's bytes are wiped here after.
/// A zero length is a keep-alive: no frame, a `KeepAlive` event. A length past the limit is an
/// error that closes the connection: the stream cannot be resynchronised.
public final class ISO8583FrameHandler: ChannelInboundHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer
    public let maxFrameLength: Int
    /// The start of a frame split across reads, header included.
    private var partial: ByteBuffer?
    private var failed = false

    /// Fired down the pipeline for each zero-length frame: the host is there, though it sent no message.
    public struct KeepAlive: Sendable {}

    public init(maxFrameLength: Int = LengthPrefixedFramer.defaultMaxFrameLength) {
        self.maxFrameLength = min(max(maxFrameLength, 1), LengthPrefixedFramer.absoluteMaxFrameLength)
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var read = unwrapInboundIn(data)
        let received = read
        // Through the read-only view: a mutating one would copy the storage NIO still holds.
        defer { received.withUnsafeReadableBytes(wipeInPlace) }
        do {
            while !failed, read.readableBytes > 0 {
                if partial != nil {
                    try gather(from: &read, context: context)
                    continue
                }
                let length = try frameLength(in: read)
                if let length, read.readableBytes >= 2 + length {
                    read.moveReaderIndex(forwardBy: 2)
                    let frame = read.readSlice(length: length)!
                    if length > 0 {
                        context.fireChannelRead(wrapInboundOut(frame))
                    } else {
                        context.fireUserInboundEventTriggered(KeepAlive())
                    }
                } else {
                    // The frame's size once its header is in, the largest while it is split.
                    var buffer = context.channel.allocator.buffer(capacity: 2 + (length ?? maxFrameLength))
                    buffer.writeBuffer(&read)
                    partial = buffer
                }
            }
        } catch {
            failed = true
            wipePartial()
            context.fireErrorCaught(error)
        }
    }

    /// Adds to the frame split across reads what it still needs (no more: the buffer never grows),
    /// and passes it on once whole.
    private func gather(from read: inout ByteBuffer, context: ChannelHandlerContext) throws {
        let have = partial!.readableBytes
        let needed = have < 2 ? 2 - have : 2 + (try frameLength(in: partial!) ?? 0) - have
        var piece = read.readSlice(length: min(needed, read.readableBytes))!
        partial!.writeBuffer(&piece)
        guard let length = try frameLength(in: partial!), partial!.readableBytes == 2 + length else { return }
        // Taken out before it is passed on: whatever the next handler does, this frame is done.
        let whole = partial.take()!
        defer { whole.withUnsafeReadableBytes(wipeInPlace) }
        guard length > 0 else {
            context.fireUserInboundEventTriggered(KeepAlive())
            return
        }
        let frame = whole.getSlice(at: whole.readerIndex + 2, length: length)!
        context.fireChannelRead(wrapInboundOut(frame))
    }

    /// The body's length from the header at the reader index, nil while the header is incomplete.
    /// 0 is a keep-alive some hosts send (jPOS's channels skip them when configured to,
    /// `expect-keep-alive`): taken, and only `KeepAlive` passed on.
    private func frameLength(in buffer: ByteBuffer) throws -> Int? {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt16.self) else { return nil }
        guard Int(length) <= maxFrameLength else { throw ISO8583Error.frameTooLong(length: Int(length), max: maxFrameLength) }
        return Int(length)
    }

    private func wipePartial() {
        partial?.withUnsafeReadableBytes(wipeInPlace)
        partial = nil
    }

    public func channelInactive(context: ChannelHandlerContext) {
        wipePartial()
        context.fireChannelInactive()
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        wipePartial()
    }
}

extension ByteBuffer {
    /// Writes `body` behind its 2-byte big-endian length. `body` is a message `ISO87APackager`
    /// encoded, which is never longer than a frame can carry (`maxEncodedLength`).
    public mutating func writeISO8583Frame(_ body: [UInt8]) {
        precondition(body.count <= Int(UInt16.max), "an ISO 8583 message longer than a frame can carry")
        writeInteger(UInt16(body.count))
        writeBytes(body)
    }
}

/// Fixed-width decimal text, zero-padded: "42" → "000042". Callers bound the value (a wider one
/// keeps its last `width` digits: an amount is checked before it gets here).
func digits(_ value: Int, width: Int) -> String {
    let text = String(value)
    return text.count >= width ? String(text.suffix(width)) : String(repeating: "0", count: width - text.count) + text
}

/// ISO 8583 date and time fields (UTC), from milliseconds since 1970.
struct ISOClock {
    let date: UTCDate

    init(milliseconds: Int64) { date = UTCDate(secondsSince1970: milliseconds / 1000) }

    /// Field 7, transmission date and time: MMDDhhmmss.
    var transmission: String { monthDay + time }
    /// Field 12, local time: hhmmss (UTC here).
    var time: String { digits(date.hour, width: 2) + digits(date.minute, width: 2) + digits(date.second, width: 2) }
    /// Field 13, local date: MMDD.
    var monthDay: String { digits(date.month, width: 2) + digits(date.day, width: 2) }
}
