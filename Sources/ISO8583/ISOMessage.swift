/// One ISO 8583 message: an MTI and data elements 2...128 as ASCII strings.
///
/// Values are held in their wire form: numeric fields as digit strings, binary
/// fields as hex strings, amounts as "C"/"D" + digits. Field 1 (the bitmap) is never
/// stored; the packager derives it from the fields present.
///
/// `description`, `debugDescription` and the reflection mirror all use the masked
/// form, so interpolating a message into a log line or a test failure cannot leak
/// the PAN, track data or PIN block.
public struct ISOMessage: Sendable, Hashable {
    public var mti: String
    private var values: [Int: String]

    public init(mti: String, fields: [Int: String] = [:]) {
        self.mti = mti
        self.values = fields
    }

    /// Gets, sets or (with nil) removes a field. Numbers are not validated here;
    /// the packager rejects numbers outside 2...128 when encoding.
    public subscript(field: Int) -> String? {
        get { values[field] }
        set { values[field] = newValue }
    }

    /// Present field numbers in ascending order (wire order).
    public var fieldNumbers: [Int] { values.keys.sorted() }

    /// Present fields in ascending order of number.
    public var fields: [(number: Int, value: String)] {
        fieldNumbers.map { ($0, values[$0]!) }
    }

    /// True when a field above 64 is present, i.e. the encoded form carries a secondary bitmap.
    public var needsSecondaryBitmap: Bool { values.keys.contains { $0 > 64 } }
}

// MARK: - Masking

extension ISOMessage: CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    /// Fields replaced by "***" in logs. 35/52/55 (track 2, PIN block, EMV data) as
    /// required; 34, 36 and 45 (extended PAN, track 3, track 1) as well because they
    /// embed the PAN too; 14 (expiry), which beside a masked PAN is card data all the same;
    /// 102 and 103 (account identification), where some hosts put the card's number.
    public static let fullyMaskedFields: Set<Int> = [14, 34, 35, 36, 45, 52, 55, 102, 103]
    /// Every field that carries cardholder data: the PAN and the fully masked ones. A reply's
    /// reader that has no use for them decodes without them (`ISO87APackager.decode(_:omitting:)`).
    public static let cardholderFields: Set<Int> = fullyMaskedFields.union([2])

    /// Log-safe rendering, e.g. `0100 {2=492500******4444, 3=000000, 35=***}`.
    /// Control and non-ASCII characters are escaped so a field cannot forge log lines.
    public var maskedDescription: String {
        let body = fields.map { "\($0.number)=\(Self.maskedValue(field: $0.number, $0.value))" }
        return "\(Self.escaped(mti)) {\(body.joined(separator: ", "))}"
    }

    public var description: String { maskedDescription }
    public var debugDescription: String { "ISOMessage(\(maskedDescription))" }

    public var customMirror: Mirror {
        let masked = fields.map { (label: String?.some(String($0.number)),
                                   value: Self.maskedValue(field: $0.number, $0.value) as Any) }
        return Mirror(self, children: [("mti", mti as Any)] + masked, displayStyle: .struct)
    }

    /// PAN as first 6 + last 4 (PCI DSS display rule). PANs shorter than 13 are masked
    /// completely: with fewer than 3 hidden digits the Luhn check would give them away.
    public static func maskPAN(_ pan: String) -> String {
        let scalars = Array(pan.unicodeScalars)
        guard scalars.count >= 13 else { return String(repeating: "*", count: scalars.count) }
        let head = String(String.UnicodeScalarView(scalars.prefix(6)))
        let tail = String(String.UnicodeScalarView(scalars.suffix(4)))
        return escaped(head) + String(repeating: "*", count: scalars.count - 10) + escaped(tail)
    }

    private static func maskedValue(field: Int, _ value: String) -> String {
        if field == 2 { return maskPAN(value) }
        if fullyMaskedFields.contains(field) { return "***" }
        return escaped(value)
    }

    private static func escaped(_ text: String) -> String {
        var out = ""
        for scalar in text.unicodeScalars {
            if (0x20...0x7E).contains(scalar.value) && scalar != "\\" {
                out.unicodeScalars.append(scalar)
            } else if scalar == "\\" {
                out += "\\\\"
            } else {
                out += "\\u{" + String(scalar.value, radix: 16, uppercase: true) + "}"
            }
        }
        return out
    }
}

// MARK: - Request/response matching

extension ISOMessage {
    /// The response MTI for a request, advice or notification MTI: the function digit
    /// (third) goes from even to odd, and the origin digit (fourth) drops its "repeat"
    /// bit, since a response answers the original whether or not it was repeated.
    /// "0100" -> "0110", "0401" -> "0410", "0800" -> "0810", "0221" -> "0230".
    /// Returns nil when `mti` is not 4 digits or is already a response.
    public static func responseMTI(for mti: String) -> String? {
        guard Ascii.isMTI(mti) else { return nil }
        var digits = Array(mti.utf8)
        guard (digits[2] - Ascii.zero) % 2 == 0 else { return nil }
        digits[2] += 1
        digits[3] -= (digits[3] - Ascii.zero) % 2
        return Ascii.string(digits)
    }

    /// Whether the MTI is a response (its third digit, the function, is odd: 0110, 0410, 0810).
    public var isResponse: Bool {
        guard Ascii.isMTI(mti) else { return false }
        let function = mti.utf8[mti.utf8.index(mti.utf8.startIndex, offsetBy: 2)]
        return (function - UInt8(ascii: "0")) % 2 == 1
    }

    /// Key pairing a request with its response, in the spirit of jPOS QMUX:
    /// MTI class (first two digits, shared by "0100"/"0110") + field 41 + field 11.
    /// Both fields are normalised to their padded wire form so "123" and a decoded
    /// "000123" match. Nil when the MTI is malformed or 41 or 11 is missing.
    public var matchKey: String? {
        guard Ascii.isMTI(mti), let terminal = self[41], let stan = self[11] else { return nil }
        return Self.matchKey(mtiClass: mti.prefix(2), terminal: terminal, stan: stan)
    }

    /// The key of a message of MTI class `mtiClass` ("01" for 0100 and 0110) from terminal
    /// (field 41) `terminal` with STAN (field 11) `stan`: what a request sent is waited for under.
    public static func matchKey(mtiClass: Substring, terminal: String, stan: String) -> String {
        let paddedTerminal = terminal.unicodeScalars.count < 8
            ? terminal + String(repeating: " ", count: 8 - terminal.unicodeScalars.count) : terminal
        let paddedStan = stan.unicodeScalars.count < 6
            ? String(repeating: "0", count: 6 - stan.unicodeScalars.count) + stan : stan
        return String(mtiClass) + paddedTerminal + paddedStan
    }
}
