import CardCrypto

/// A clear card number (PAN). Noncopyable: there is one owner, its digits live on the heap so a move
/// leaves no copy behind, and they are wiped with OPENSSL_cleanse when the value goes away.
///
/// It cannot leak by accident: being noncopyable it cannot be string-interpolated, printed, reflected
/// (`Mirror`), encoded or stored in a copyable container; those are compile errors. What may be shown
/// is `masked` (first 6, last 4), a separate copyable value.
public struct PrimaryAccountNumber: ~Copyable, @unchecked Sendable {
    // @unchecked: the digits are owned uniquely (noncopyable) and never mutated after init.
    private let digits: UnsafeMutablePointer<UInt8>
    /// Number of digits, 12 to 19.
    public let count: Int

    /// The longest number ISO/IEC 7812 allows.
    public static let maximumLength = 19

    /// Takes ASCII digits; nil if `ascii` holds anything else or is not 12-19 digits long.
    public init?(ascii: UnsafeRawBufferPointer) {
        guard (12...Self.maximumLength).contains(ascii.count),
              ascii.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") })
        else { return nil }
        digits = .allocate(capacity: Self.maximumLength)
        digits.initialize(repeating: 0, count: Self.maximumLength)
        for i in 0..<ascii.count { digits[i] = ascii[i] }
        count = ascii.count
    }

    /// For tests and tools that start from text they already hold (e.g. the simulator's test cards).
    public init?(_ text: String) {
        var text = text
        var pan: PrimaryAccountNumber? = nil
        text.withUTF8 { pan = PrimaryAccountNumber(ascii: UnsafeRawBufferPointer($0)) }
        switch consume pan {
        case .some(let pan): self = pan
        case .none: return nil
        }
    }

    deinit {
        wipe(UnsafeMutableRawBufferPointer(start: digits, count: Self.maximumLength))
        digits.deallocate()
    }

    /// Lends the ASCII digits, e.g. to write an ISO 8583 field 2. Do not keep or copy them.
    public func withASCIIDigits<R: ~Copyable, E: Error>(_ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
        try body(UnsafeRawBufferPointer(start: digits, count: count))
    }

    /// Luhn (mod 10) check over all digits.
    public var passesLuhn: Bool { Luhn.passes(UnsafeBufferPointer(start: digits, count: count)) }

    /// The number shown as first 6, last 4, e.g. `492500******4444`: safe for logs, records and bodies.
    public var masked: MaskedPAN {
        let count = self.count, digits = self.digits
        // Written straight into the string's storage (no array first).
        let text = String(unsafeUninitializedCapacity: count) { out in
            out.initialize(repeating: UInt8(ascii: "*"))
            // Under 13 digits, first 6 and last 4 would hide 2 or fewer (and the Luhn digit gives
            // one of them away): masked completely, as ISOMessage.maskPAN does.
            if count >= 13 {
                for i in 0..<6 { out[i] = digits[i] }
                for i in (count - 4)..<count { out[i] = digits[i] }
            }
            return count
        }
        return MaskedPAN(unchecked: text)
    }

    /// The first `n` digits (the BIN/IIN), 6 or 8, as a number. At most 8: more would hand out
    /// the card number as a copyable value this type exists to prevent.
    public func prefix(_ n: Int) -> Int {
        precondition(n <= 8, "a PAN's prefix is its first 6 or 8 digits")
        var v = 0
        for i in 0..<min(n, count) { v = v * 10 + Int(digits[i] &- UInt8(ascii: "0")) }
        return v
    }

    /// The card scheme the number belongs to, by its IIN range (it picks scheme-specific response
    /// code mappings, so a card of a scheme not named here is `.other`, never another's).
    public var scheme: CardScheme {
        let p2 = prefix(2), p3 = prefix(3), p4 = prefix(4)
        if digits[0] == UInt8(ascii: "4") { return .visa }
        if (51...55).contains(p2) || (2221...2720).contains(p4) { return .mastercard }
        if p2 == 34 || p2 == 37 { return .amex }
        // Discover (6011, 644–649, 65) and UnionPay (62) sit inside Maestro's old 50, 56–69.
        if p4 == 6011 || (644...649).contains(p3) || p2 == 65 || p2 == 62 { return .other }
        if p2 == 50 || (56...69).contains(p2) { return .maestro }
        return .other
    }
}

/// A card number as it may be shown: first 6 and last 4 digits, the rest as `*`.
public struct MaskedPAN: Sendable, Hashable, Codable, CustomStringConvertible {
    public let value: String
    init(unchecked value: String) { self.value = value }

    /// Accepts only text that is already masked (at most 10 clear digits); for reading records back.
    public init?(masked value: String) {
        guard value.utf8.filter({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }).count <= 10 else { return nil }
        self.value = value
    }

    public var description: String { value }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let masked = MaskedPAN(masked: text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "not a masked PAN"))
        }
        self = masked
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(value)
    }
}

public enum CardScheme: String, Sendable, Codable, CaseIterable {
    case visa, mastercard, amex, maestro, other
}
