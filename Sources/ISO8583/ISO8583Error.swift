/// Errors raised while encoding, decoding or framing ISO 8583 messages.
///
/// Cases carry only field numbers and lengths, never field contents, so an error
/// can be logged or shown without leaking the PAN (field 2) or track 2 (field 35).
/// Field number 0 stands for the MTI and 1 for the bitmap(s).
public enum ISO8583Error: Error, Equatable, Hashable, Sendable, CustomStringConvertible {
    /// The input ended in the middle of this field (or of the MTI/bitmap).
    case shortMessage(field: Int)
    /// The MTI is not exactly 4 ASCII digits.
    case badMTI
    /// A bitmap contains characters that are not hexadecimal.
    case badBitmap
    /// The bitmap announces this field, but the input ended right before it.
    case bitmapAnnouncesMissingField(field: Int)
    /// The value (or a declared LL/LLL length) exceeds the field's maximum.
    case fieldTooLong(field: Int, length: Int, max: Int)
    /// A fixed binary field must have exactly `expected` hex characters (jPOS rejects other lengths too).
    case badLength(field: Int, length: Int, expected: Int)
    /// An LL/LLL length prefix is not made of ASCII digits.
    case badLengthPrefix(field: Int)
    /// A numeric field contains something other than digits (track 2 also allows '=' and 'D').
    case nonNumeric(field: Int)
    /// A binary field contains something other than hexadecimal digits.
    case nonHex(field: Int)
    /// An amount field is not 'C' or 'D' followed by digits.
    case badAmount(field: Int)
    /// A character field holds a character that cannot be sent as one ISO-8859-1 byte.
    case badCharacter(field: Int)
    /// The field number is outside 2...128 (field 1 is the bitmap and is managed by the codec).
    case unknownField(field: Int)
    /// Bytes remained after the last field announced by the bitmap.
    case trailingBytes(count: Int)
    /// A frame's declared (or requested) body length exceeds the allowed maximum.
    case frameTooLong(length: Int, max: Int)
    /// An empty body was to be framed (a frame of length 0 is a keep-alive, never a message).
    case emptyFrame

    public var description: String {
        switch self {
        case .shortMessage(let field):
            "message ends inside \(Self.label(field))"
        case .badMTI:
            "MTI must be 4 ASCII digits"
        case .badBitmap:
            "bitmap is not 16 hexadecimal characters"
        case .bitmapAnnouncesMissingField(let field):
            "bitmap announces \(Self.label(field)) but the message ends before it"
        case .fieldTooLong(let field, let length, let max):
            "\(Self.label(field)) has length \(length), maximum is \(max)"
        case .badLength(let field, let length, let expected):
            "\(Self.label(field)) has length \(length), expected exactly \(expected)"
        case .badLengthPrefix(let field):
            "\(Self.label(field)) has a non-numeric length prefix"
        case .nonNumeric(let field):
            "\(Self.label(field)) must be numeric"
        case .nonHex(let field):
            "\(Self.label(field)) must be hexadecimal"
        case .badAmount(let field):
            "\(Self.label(field)) must be 'C' or 'D' followed by digits"
        case .badCharacter(let field):
            "\(Self.label(field)) contains a character outside ISO-8859-1"
        case .unknownField(let field):
            "\(Self.label(field)) is not defined by ISO87APackager"
        case .trailingBytes(let count):
            "\(count) unexpected byte(s) after the last field"
        case .frameTooLong(let length, let max):
            "frame length \(length) exceeds maximum \(max)"
        case .emptyFrame:
            "an empty message cannot be framed"
        }
    }

    private static func label(_ field: Int) -> String {
        switch field {
        case 0: "MTI"
        case 1: "bitmap"
        default: "field \(field)"
        }
    }
}
