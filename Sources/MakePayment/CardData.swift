import CardCrypto

/// A card's expiry, as the card data carries it (YYMM).
public struct CardExpiry: Sendable, Hashable, Comparable, CustomStringConvertible {
    /// Four-digit year, 2000-2099.
    public let year: Int
    /// 1-12.
    public let month: Int

    public init?(year: Int, month: Int) {
        guard (2000...2099).contains(year), (1...12).contains(month) else { return nil }
        self.year = year
        self.month = month
    }

    /// YYMM, as in the card data.
    public var description: String { withASCIIDigits { String(decoding: $0, as: UTF8.self) } }

    /// YYMM as ASCII digits in a buffer on the stack, for a request that is wiped after (the
    /// expiry is card data: `description` makes a String that is freed unwiped).
    public func withASCIIDigits<R, E: Error>(_ body: (UnsafeBufferPointer<UInt8>) throws(E) -> R) throws(E) -> R {
        let yy = year % 100
        var digits: (UInt8, UInt8, UInt8, UInt8) = (UInt8(48 + yy / 10), UInt8(48 + yy % 10), UInt8(48 + month / 10), UInt8(48 + month % 10))
        // Wiped with OPENSSL_cleanse: a plain store of zeros to a dead local is optimised away.
        return try withUnsafeMutableBytes(of: &digits) { raw throws(E) -> R in
            defer { wipe(raw) }
            return try body(UnsafeRawBufferPointer(raw).bindMemory(to: UInt8.self))
        }
    }

    public static func < (a: CardExpiry, b: CardExpiry) -> Bool { (a.year, a.month) < (b.year, b.month) }

    /// The month `secondsSince1970` falls in, in UTC.
    public static func month(containing secondsSince1970: Int64) -> CardExpiry {
        let date = UTCDate(secondsSince1970: secondsSince1970)
        return CardExpiry(year: min(max(date.year, 2000), 2099), month: date.month)!
    }
}

/// Why decrypted card data was refused, and the API error each reason becomes.
public enum CardDataError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Not `{CardNumber},{ExpiryDate},{SessionId}` with fields of the right shape.
    case malformed
    /// The expiry month is not 01-12.
    case invalidExpiryMonth
    /// The card number fails the Luhn check.
    case failsLuhn
    /// The card expired before the current month.
    case expired

    public var apiError: APIError {
        switch self {
        case .malformed, .invalidExpiryMonth: .unableToDecrypt
        case .failsLuhn: .invalidCardNumber
        case .expired: .expiredCard
        }
    }

    public var description: String {
        switch self {
        case .malformed: "card data is not CardNumber,ExpiryDate,SessionId"
        case .invalidExpiryMonth: "card data has an expiry month outside 01-12"
        case .failsLuhn: "card number fails the Luhn check"
        case .expired: "card has expired"
        }
    }
}

/// Decrypted card data: `{CardNumber:16-19},{ExpiryDate:4, YYMM},{SessionId:1-32}`.
/// Noncopyable because it owns the clear PAN.
public struct CardData: ~Copyable, Sendable {
    public let pan: PrimaryAccountNumber
    public let expiry: CardExpiry
    /// Kept only when asked for (`psp-worker decrypt` shows it): an authorization has no use for
    /// it, and a 16-32 character id would be one more allocation per makePayment.
    public let sessionId: String?

    public init(pan: consuming PrimaryAccountNumber, expiry: CardExpiry, sessionId: String? = nil) {
        self.pan = pan
        self.expiry = expiry
        self.sessionId = sessionId
    }

    /// Parses the plaintext of a `cardData` cryptogram. ASCII spaces around each field are accepted
    /// (the API's own FAQ example has one before the session id).
    ///
    /// - Parameter currentMonth: the month "now" is in; a card that expired before it is refused.
    /// - Parameter keepingSessionId: whether the result carries the session id (it is checked either way).
    public static func parse(_ plaintext: UnsafeRawBufferPointer, currentMonth: CardExpiry,
                             keepingSessionId: Bool = false) throws(CardDataError) -> CardData {
        // Split into exactly three comma-separated fields, each trimmed of spaces.
        var fields: (Range<Int>, Range<Int>, Range<Int>) = (0..<0, 0..<0, 0..<0)
        var start = 0
        var index = 0
        for i in 0...plaintext.count {
            guard i == plaintext.count || plaintext[i] == UInt8(ascii: ",") else { continue }
            var lo = start, hi = i
            while lo < hi && plaintext[lo] == 0x20 { lo += 1 }
            while hi > lo && plaintext[hi - 1] == 0x20 { hi -= 1 }
            switch index {
            case 0: fields.0 = lo..<hi
            case 1: fields.1 = lo..<hi
            case 2: fields.2 = lo..<hi
            default: throw .malformed
            }
            index += 1
            start = i + 1
        }
        guard index == 3 else { throw .malformed }

        // Card number: 16-19 digits.
        guard (16...19).contains(fields.0.count),
              let pan = PrimaryAccountNumber(ascii: UnsafeRawBufferPointer(rebasing: plaintext[fields.0]))
        else { throw .malformed }

        // Expiry: four digits, YYMM.
        guard fields.1.count == 4 else { throw .malformed }
        var yymm = 0
        for i in fields.1 {
            let c = plaintext[i]
            guard c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9") else { throw .malformed }
            yymm = yymm * 10 + Int(c - UInt8(ascii: "0"))
        }
        guard let expiry = CardExpiry(year: 2000 + yymm / 100, month: yymm % 100) else { throw .invalidExpiryMonth }

        // Session id: 1-32 printable ASCII characters (no spaces, no commas).
        guard (1...32).contains(fields.2.count),
              plaintext[fields.2].allSatisfy({ $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: ",") })
        else { throw .malformed }
        let sessionId = keepingSessionId ? String(decoding: UnsafeRawBufferPointer(rebasing: plaintext[fields.2]), as: UTF8.self) : nil

        guard pan.passesLuhn else { throw .failsLuhn }
        guard expiry >= currentMonth else { throw .expired }
        return CardData(pan: pan, expiry: expiry, sessionId: sessionId)
    }
}
