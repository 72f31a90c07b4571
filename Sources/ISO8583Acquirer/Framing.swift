import ISO8583
import MakePayment
import NIOCore

/// Splits a TCP stream into ISO 8583 messages framed by a 2-byte big-endian length. A bad length
/// is an error that closes the connection: the stream cannot be resynchronised.
public struct ISO8583FrameDecoder: ByteToMessageDecoder {
    public typealias InboundOut = ByteBuffer
    public let maxFrameLength: Int

    public init(maxFrameLength: Int = LengthPrefixedFramer.defaultMaxFrameLength) {
        self.maxFrameLength = maxFrameLength
    }

    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt16.self) else { return .needMoreData }
        guard length > 0 else { throw ISO8583Error.emptyFrame }
        guard Int(length) <= maxFrameLength else { throw ISO8583Error.frameTooLong(length: Int(length), max: maxFrameLength) }
        guard buffer.readableBytes >= 2 + Int(length) else { return .needMoreData }
        buffer.moveReaderIndex(forwardBy: 2)
        context.fireChannelRead(wrapInboundOut(buffer.readSlice(length: Int(length))!))
        return .continue
    }

    public mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        try decode(context: context, buffer: &buffer)
    }
}

extension ByteBuffer {
    /// Writes `body` behind its 2-byte big-endian length.
    public mutating func writeISO8583Frame(_ body: [UInt8]) {
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

    var year: Int { date.year }
    var dayOfYear: Int { date.dayOfYear }
    var hour: Int { date.hour }
    /// Field 7, transmission date and time: MMDDhhmmss.
    var transmission: String { monthDay + time }
    /// Field 12, local time: hhmmss (UTC here).
    var time: String { digits(date.hour, width: 2) + digits(date.minute, width: 2) + digits(date.second, width: 2) }
    /// Field 13, local date: MMDD.
    var monthDay: String { digits(date.month, width: 2) + digits(date.day, width: 2) }
}
