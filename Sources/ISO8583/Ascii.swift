/// Byte-level helpers, kept here so the library needs nothing beyond the standard library.
enum Ascii {
    static let zero = UInt8(ascii: "0")
    static let space = UInt8(ascii: " ")
    private static let hexDigits = Array("0123456789ABCDEF".utf8)

    static func isDigit(_ byte: UInt8) -> Bool { (0x30...0x39).contains(byte) }

    static func isHex(_ byte: UInt8) -> Bool { hexValue(byte) != nil }

    static func isAmountSign(_ byte: UInt8) -> Bool {
        byte == UInt8(ascii: "C") || byte == UInt8(ascii: "D")
    }

    static func isTrack2Separator(_ byte: UInt8) -> Bool {
        byte == UInt8(ascii: "=") || byte == UInt8(ascii: "D")
    }

    static func isMTI(_ mti: String) -> Bool {
        mti.utf8.count == 4 && mti.utf8.allSatisfy(isDigit)
    }

    static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case 0x30...0x39: byte - 0x30
        case 0x41...0x46: byte - 0x41 + 10
        case 0x61...0x66: byte - 0x61 + 10
        default: nil
        }
    }

    /// Uppercases a-f so binary values have one canonical form, as jPOS's hexString does.
    static func uppercased(_ byte: UInt8) -> UInt8 {
        (0x61...0x66).contains(byte) ? byte - 0x20 : byte
    }

    static func appendHex(_ bytes: some Sequence<UInt8>, to out: inout [UInt8]) {
        for byte in bytes {
            out.append(hexDigits[Int(byte >> 4)])
            out.append(hexDigits[Int(byte & 0x0F)])
        }
    }

    /// Parses an even number of hex characters; nil if any is not hex.
    static func parseHex(_ chars: some Collection<UInt8>) -> [UInt8]? {
        guard chars.count % 2 == 0 else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(chars.count / 2)
        var high: UInt8?
        for char in chars {
            guard let nibble = hexValue(char) else { return nil }
            if let h = high {
                out.append(h << 4 | nibble)
                high = nil
            } else {
                high = nibble
            }
        }
        return out
    }

    /// Parses a short run of ASCII digits (a length prefix); nil if any is not a digit.
    static func parseDecimal(_ chars: some Collection<UInt8>) -> Int? {
        var value = 0
        for char in chars {
            guard isDigit(char) else { return nil }
            value = value * 10 + Int(char - zero)
        }
        return value
    }

    /// Writes `value` as exactly `digits` ASCII digits; callers ensure it fits.
    static func appendDecimal(_ value: Int, digits: Int, to out: inout [UInt8]) {
        var divisor = 1
        for _ in 1..<digits { divisor *= 10 }
        var rest = value
        while divisor > 0 {
            out.append(zero + UInt8(rest / divisor))
            rest %= divisor
            divisor /= 10
        }
    }

    /// Bytes to String mapping each byte to the same code point (ISO-8859-1), so any
    /// byte sequence decodes and re-encodes unchanged, unlike UTF-8 decoding.
    static func string(_ bytes: some Sequence<UInt8>) -> String {
        var scalars = String.UnicodeScalarView()
        scalars.append(contentsOf: bytes.lazy.map(Unicode.Scalar.init))
        return String(scalars)
    }
}
