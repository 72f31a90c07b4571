import ISO8583
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

/// Fixed-width decimal text, zero-padded: "42" → "000042".
func digits(_ value: Int, width: Int) -> String {
    let text = String(value)
    return text.count >= width ? String(text.suffix(width)) : String(repeating: "0", count: width - text.count) + text
}

/// Date and time fields in UTC, from milliseconds since 1970.
struct ISOClock {
    let month, day, hour, minute, second, dayOfYear, year: Int

    init(milliseconds: Int64) {
        let seconds = milliseconds / 1000
        let days = Int(seconds / 86_400)
        let secondsOfDay = Int(seconds % 86_400)
        hour = secondsOfDay / 3600
        minute = secondsOfDay / 60 % 60
        second = secondsOfDay % 60
        // Civil-from-days (Howard Hinnant).
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        day = doy - (153 * mp + 2) / 5 + 1
        month = mp < 10 ? mp + 3 : mp - 9
        year = yoe + era * 400 + (month <= 2 ? 1 : 0)
        let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
        let cumulative = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334]
        dayOfYear = cumulative[month - 1] + day + (leap && month > 2 ? 1 : 0)
    }

    /// Field 7, transmission date and time: MMDDhhmmss.
    var transmission: String { digits(month, width: 2) + digits(day, width: 2) + time }
    /// Field 12, local time: hhmmss (UTC here).
    var time: String { digits(hour, width: 2) + digits(minute, width: 2) + digits(second, width: 2) }
    /// Field 13, local date: MMDD.
    var date: String { digits(month, width: 2) + digits(day, width: 2) }
}
