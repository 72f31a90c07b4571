/// The makePayment body and answer as JSON, by hand: they are on the hot path, where a Codable
/// round trip through Foundation costs more than everything else but RSA and the store.
///
/// The parser is strict JSON (RFC 8259): one object; the four fields as strings (`confirmed` one of
/// YES, NO, TIMEOUT, CANCEL); any other member skipped whatever its value; a field given twice, a
/// bad escape, a lone surrogate, invalid UTF-8, a control character in a string, trailing bytes or
/// nesting deeper than 64 make the body invalid (errorId 71). `cardData` may be missing or null
/// when `confirmed` is not YES: a user who declined or never answered has no card data to send,
/// and the payment must still be closed (it is never decrypted then).
extension MakePaymentRequest {
    public enum Parsed: Sendable, Equatable {
        case request(MakePaymentRequest)
        /// Not a valid makePayment body. `pspTransactionId` is the id it named, if it was valid JSON
        /// with a string there, so the 71 answer can name the payment.
        case invalid(pspTransactionId: String?)
    }

    public static func parse(json bytes: UnsafeRawBufferPointer) -> Parsed {
        var reader = JSONReader(bytes)
        var id: String?, merchant: String?, cardData: String?, confirmed: String?
        var duplicate = false, mistyped = false, cardDataGiven = false
        let ok = reader.object { reader, key in
            switch key {
            case .pspTransactionId: return reader.field(&id, &duplicate, &mistyped)
            case .merchantSerialNumber: return reader.field(&merchant, &duplicate, &mistyped)
            case .cardData: return reader.nullableField(&cardData, given: &cardDataGiven, &duplicate, &mistyped)
            case .confirmed: return reader.field(&confirmed, &duplicate, &mistyped)
            case .other: return reader.skipValue(depth: 1)
            }
        } && reader.atEnd()
        guard ok else { return .invalid(pspTransactionId: nil) }
        guard !duplicate, !mistyped, let id, let merchant,
              let confirmed = confirmed.flatMap(Confirmed.init(rawValue:)),
              let cardData = cardData ?? (confirmed == .yes ? nil : "")
        else { return .invalid(pspTransactionId: duplicate ? nil : id) }
        return .request(MakePaymentRequest(pspTransactionId: id, merchantSerialNumber: merchant, cardData: cardData,
                                           confirmed: confirmed))
    }

    public static func parse(json bytes: some Sequence<UInt8>) -> Parsed {
        let array = Array(bytes)
        return array.withUnsafeBytes { parse(json: $0) }
    }
}

extension MakePaymentResponse {
    /// The answer's body, `{"errorMessage":{…},"paymentInfo":{…}}` (errorMessage only on failure),
    /// appended to any byte collection (an array, or a NIO buffer's view: no copy in between).
    @inlinable
    public func appendJSON<Out: RangeReplaceableCollection<UInt8>>(to out: inout Out) {
        if let error = errorMessage {
            out.append(contentsOf: #"{"errorMessage":{"errorId":"#.utf8)
            out.append(contentsOf: String(error.errorId).utf8)
            out.append(contentsOf: #","errorText":"#.utf8)
            JSONText.appendQuoted(error.errorText, to: &out)
            out.append(contentsOf: "},".utf8)
        } else {
            out.append(UInt8(ascii: "{"))
        }
        out.append(contentsOf: #""paymentInfo":{"pspTransactionId":"#.utf8)
        JSONText.appendQuoted(paymentInfo.pspTransactionId, to: &out)
        out.append(contentsOf: #","status":""#.utf8)
        out.append(contentsOf: paymentInfo.status.rawValue.utf8)
        out.append(contentsOf: "\"}}".utf8)
    }

    public var json: [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(160)
        appendJSON(to: &out)
        return out
    }
}

/// A cursor over JSON bytes that validates as it goes and allocates only for the strings it keeps.
struct JSONReader {
    enum Key { case pspTransactionId, merchantSerialNumber, cardData, confirmed, other }

    private let bytes: UnsafeRawBufferPointer
    private var at = 0
    static let maxDepth = 64

    init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    private var current: UInt8? { at < bytes.count ? bytes[at] : nil }

    private mutating func skipWhitespace() {
        while at < bytes.count {
            switch bytes[at] {
            case 0x20, 0x09, 0x0A, 0x0D: at += 1
            default: return
            }
        }
    }

    private mutating func consume(_ byte: UInt8) -> Bool {
        skipWhitespace()
        guard current == byte else { return false }
        at += 1
        return true
    }

    mutating func atEnd() -> Bool {
        skipWhitespace()
        return at == bytes.count
    }

    /// An object at the top level, each member handed to `member` right after its colon.
    mutating func object(_ member: (inout JSONReader, Key) -> Bool) -> Bool {
        guard consume(UInt8(ascii: "{")) else { return false }
        if consume(UInt8(ascii: "}")) { return true }
        repeat {
            skipWhitespace()
            guard let key = readKey(), consume(UInt8(ascii: ":")), member(&self, key) else { return false }
        } while consume(UInt8(ascii: ","))
        return consume(UInt8(ascii: "}"))
    }

    /// One of the four fields: a string, once. A value of another type is skipped and marked.
    mutating func field(_ slot: inout String?, _ duplicate: inout Bool, _ mistyped: inout Bool) -> Bool {
        skipWhitespace()
        if slot != nil { duplicate = true }
        guard current == UInt8(ascii: "\"") else {
            mistyped = true
            return skipValue(depth: 1)
        }
        guard let text = readString() else { return false }
        slot = text
        return true
    }

    /// A string field that may also be null (left nil). `given` catches a second occurrence of
    /// a null, which leaves no value behind for `field`'s duplicate check.
    mutating func nullableField(_ slot: inout String?, given: inout Bool, _ duplicate: inout Bool, _ mistyped: inout Bool) -> Bool {
        skipWhitespace()
        if given { duplicate = true }
        given = true
        if current == UInt8(ascii: "n") { return literal("null") }
        return field(&slot, &duplicate, &mistyped)
    }

    private mutating func readKey() -> Key? {
        // The known keys have no escapes; a key with escapes is decoded and compared.
        guard current == UInt8(ascii: "\"") else { return nil }
        let start = at + 1
        var end = start
        while end < bytes.count, bytes[end] != UInt8(ascii: "\""), bytes[end] != UInt8(ascii: "\\"), bytes[end] >= 0x20 { end += 1 }
        if end < bytes.count, bytes[end] == UInt8(ascii: "\"") {
            at = end + 1
            let raw = UnsafeRawBufferPointer(rebasing: bytes[start..<end])
            let key = Self.key(raw)
            // The four names are ASCII, so only another key needs its UTF-8 checked.
            guard key != .other || String(validating: raw, as: UTF8.self) != nil else { return nil }
            return key
        }
        guard let text = readString() else { return nil }
        var copy = text
        return copy.withUTF8 { Self.key(UnsafeRawBufferPointer($0)) }
    }

    private static func key(_ raw: UnsafeRawBufferPointer) -> Key {
        func equals(_ name: StaticString) -> Bool {
            name.utf8CodeUnitCount == raw.count && UnsafeRawBufferPointer(start: name.utf8Start, count: raw.count).elementsEqual(raw)
        }
        if raw.isEmpty { return .other }
        if equals("pspTransactionId") { return .pspTransactionId }
        if equals("merchantSerialNumber") { return .merchantSerialNumber }
        if equals("cardData") { return .cardData }
        if equals("confirmed") { return .confirmed }
        return .other
    }

    /// A string value; nil if it is not valid JSON or not valid UTF-8.
    private mutating func readString() -> String? {
        guard current == UInt8(ascii: "\"") else { return nil }
        at += 1
        let start = at
        // Fast path: no escapes.
        while at < bytes.count {
            let b = bytes[at]
            if b == UInt8(ascii: "\"") {
                let text = String(validating: UnsafeRawBufferPointer(rebasing: bytes[start..<at]), as: UTF8.self)
                at += 1
                return text
            }
            if b == UInt8(ascii: "\\") { break }
            if b < 0x20 { return nil }
            at += 1
        }
        guard at < bytes.count else { return nil }
        // Escapes only shrink the text (a \u escape's UTF-8 is shorter than the escape): what is
        // left of the body is room enough, and the buffer never grows (some clients escape every
        // "/" of a base64 cardData).
        var decoded: [UInt8] = []
        decoded.reserveCapacity(bytes.count - start)
        decoded.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[start..<at]))
        while at < bytes.count {
            let b = bytes[at]
            switch b {
            case UInt8(ascii: "\""):
                at += 1
                return String(validating: decoded, as: UTF8.self)
            case UInt8(ascii: "\\"):
                at += 1
                guard let e = current else { return nil }
                at += 1
                switch e {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): decoded.append(e)
                case UInt8(ascii: "b"): decoded.append(0x08)
                case UInt8(ascii: "f"): decoded.append(0x0C)
                case UInt8(ascii: "n"): decoded.append(0x0A)
                case UInt8(ascii: "r"): decoded.append(0x0D)
                case UInt8(ascii: "t"): decoded.append(0x09)
                case UInt8(ascii: "u"):
                    guard var scalar = readHex4() else { return nil }
                    if (0xD800...0xDBFF).contains(scalar) {
                        guard current == UInt8(ascii: "\\"), at + 1 < bytes.count, bytes[at + 1] == UInt8(ascii: "u") else { return nil }
                        at += 2
                        guard let low = readHex4(), (0xDC00...0xDFFF).contains(low) else { return nil }
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                    } else if (0xDC00...0xDFFF).contains(scalar) {
                        return nil
                    }
                    guard let unicode = Unicode.Scalar(scalar) else { return nil }
                    decoded.append(contentsOf: UTF8.encode(unicode)!)
                default: return nil
                }
            default:
                if b < 0x20 { return nil }
                decoded.append(b)
                at += 1
            }
        }
        return nil
    }

    private mutating func readHex4() -> UInt32? {
        guard at + 4 <= bytes.count else { return nil }
        var value: UInt32 = 0
        for _ in 0..<4 {
            let b = bytes[at]
            let digit: UInt8
            switch b {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = b - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = b - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = b - UInt8(ascii: "A") + 10
            default: return nil
            }
            value = value << 4 | UInt32(digit)
            at += 1
        }
        return value
    }

    /// Validates and skips any value.
    mutating func skipValue(depth: Int) -> Bool {
        guard depth <= Self.maxDepth else { return false }
        skipWhitespace()
        guard let b = current else { return false }
        switch b {
        case UInt8(ascii: "\""):
            return readString() != nil
        case UInt8(ascii: "{"):
            at += 1
            if consume(UInt8(ascii: "}")) { return true }
            repeat {
                skipWhitespace()
                guard readString() != nil, consume(UInt8(ascii: ":")), skipValue(depth: depth + 1) else { return false }
            } while consume(UInt8(ascii: ","))
            return consume(UInt8(ascii: "}"))
        case UInt8(ascii: "["):
            at += 1
            if consume(UInt8(ascii: "]")) { return true }
            repeat {
                guard skipValue(depth: depth + 1) else { return false }
            } while consume(UInt8(ascii: ","))
            return consume(UInt8(ascii: "]"))
        case UInt8(ascii: "t"): return literal("true")
        case UInt8(ascii: "f"): return literal("false")
        case UInt8(ascii: "n"): return literal("null")
        default: return number()
        }
    }

    private mutating func literal(_ word: StaticString) -> Bool {
        let n = word.utf8CodeUnitCount
        guard at + n <= bytes.count,
              UnsafeRawBufferPointer(start: word.utf8Start, count: n).elementsEqual(bytes[at..<(at + n)]) else { return false }
        at += n
        return true
    }

    /// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
    private mutating func number() -> Bool {
        func isDigit(_ b: UInt8?) -> Bool { b.map { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") } ?? false }
        if current == UInt8(ascii: "-") { at += 1 }
        guard isDigit(current) else { return false }
        if current == UInt8(ascii: "0") { at += 1 } else { while isDigit(current) { at += 1 } }
        if current == UInt8(ascii: ".") {
            at += 1
            guard isDigit(current) else { return false }
            while isDigit(current) { at += 1 }
        }
        if current == UInt8(ascii: "e") || current == UInt8(ascii: "E") {
            at += 1
            if current == UInt8(ascii: "+") || current == UInt8(ascii: "-") { at += 1 }
            guard isDigit(current) else { return false }
            while isDigit(current) { at += 1 }
        }
        return true
    }
}
