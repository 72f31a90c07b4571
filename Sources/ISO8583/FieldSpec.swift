/// The jPOS field packager classes that ISO87APackager uses for fields 2...128.
public enum ISOFieldKind: String, Sendable, Hashable, CaseIterable {
    /// Fixed-length ASCII digits, left padded with '0'.
    case numeric = "IFA_NUMERIC"
    /// Fixed-length characters, right padded with ' '.
    case char = "IF_CHAR"
    /// Fixed-length binary sent as uppercase ASCII hex (2 characters per byte).
    case binary = "IFA_BINARY"
    /// 'C' (credit) or 'D' (debit) followed by zero-padded digits; length includes the sign.
    case amount = "IFA_AMOUNT"
    /// 2-digit ASCII length prefix, then ASCII digits.
    case llnum = "IFA_LLNUM"
    /// 2-digit ASCII length prefix, then characters.
    case llchar = "IFA_LLCHAR"
    /// 3-digit ASCII length prefix, then characters.
    case lllchar = "IFA_LLLCHAR"

    /// Number of ASCII digits in the length prefix; 0 for fixed-length kinds.
    public var prefixDigits: Int {
        switch self {
        case .llnum, .llchar: 2
        case .lllchar: 3
        case .numeric, .char, .binary, .amount: 0
        }
    }
}

/// How one data element is laid out on the wire.
public struct ISOFieldSpec: Sendable, Hashable {
    public let number: Int
    public let kind: ISOFieldKind
    /// The jPOS length: the fixed length, or the maximum for LL/LLL kinds.
    /// For `.binary` it counts bytes, so the value and the wire carry twice as many hex characters.
    public let length: Int
    /// jPOS's description of the field.
    public let name: String

    init(_ number: Int, _ kind: ISOFieldKind, _ length: Int, _ name: String) {
        self.number = number
        self.kind = kind
        self.length = length
        self.name = name
    }

    /// Longest accepted value, in characters of the `String` value (hex characters for binary).
    public var maxValueLength: Int { kind == .binary ? length * 2 : length }
}

extension ISO87APackager {
    /// Specs for fields 2...128 in order (index = field number - 2), transcribed from
    /// jPOS `org.jpos.iso.packager.ISO87APackager`. Where jPOS deviates from the
    /// ISO 8583:1987 text, jPOS wins because peers built on it send jPOS's layout:
    /// 35 is IFA_LLNUM 37 (track 2 with '=' separator), 55 is IFA_LLLCHAR 999,
    /// 93 is IF_CHAR 6 (ISO says 5), 96 is IFA_BINARY 16 (ISO says b64 = 8 bytes),
    /// 65 is IFA_BINARY 1 (jPOS treats it as a plain field, not a tertiary bitmap).
    public static let fieldSpecs: [ISOFieldSpec] = [
        .init(2, .llnum, 19, "PAN - PRIMARY ACCOUNT NUMBER"),
        .init(3, .numeric, 6, "PROCESSING CODE"),
        .init(4, .numeric, 12, "AMOUNT, TRANSACTION"),
        .init(5, .numeric, 12, "AMOUNT, SETTLEMENT"),
        .init(6, .numeric, 12, "AMOUNT, CARDHOLDER BILLING"),
        .init(7, .numeric, 10, "TRANSMISSION DATE AND TIME"),
        .init(8, .numeric, 8, "AMOUNT, CARDHOLDER BILLING FEE"),
        .init(9, .numeric, 8, "CONVERSION RATE, SETTLEMENT"),
        .init(10, .numeric, 8, "CONVERSION RATE, CARDHOLDER BILLING"),
        .init(11, .numeric, 6, "SYSTEM TRACE AUDIT NUMBER"),
        .init(12, .numeric, 6, "TIME, LOCAL TRANSACTION"),
        .init(13, .numeric, 4, "DATE, LOCAL TRANSACTION"),
        .init(14, .numeric, 4, "DATE, EXPIRATION"),
        .init(15, .numeric, 4, "DATE, SETTLEMENT"),
        .init(16, .numeric, 4, "DATE, CONVERSION"),
        .init(17, .numeric, 4, "DATE, CAPTURE"),
        .init(18, .numeric, 4, "MERCHANTS TYPE"),
        .init(19, .numeric, 3, "ACQUIRING INSTITUTION COUNTRY CODE"),
        .init(20, .numeric, 3, "PAN EXTENDED COUNTRY CODE"),
        .init(21, .numeric, 3, "FORWARDING INSTITUTION COUNTRY CODE"),
        .init(22, .numeric, 3, "POINT OF SERVICE ENTRY MODE"),
        .init(23, .numeric, 3, "CARD SEQUENCE NUMBER"),
        .init(24, .numeric, 3, "NETWORK INTERNATIONAL IDENTIFIER"),
        .init(25, .numeric, 2, "POINT OF SERVICE CONDITION CODE"),
        .init(26, .numeric, 2, "POINT OF SERVICE PIN CAPTURE CODE"),
        .init(27, .numeric, 1, "AUTHORIZATION IDENTIFICATION RESP LEN"),
        .init(28, .amount, 9, "AMOUNT, TRANSACTION FEE"),
        .init(29, .amount, 9, "AMOUNT, SETTLEMENT FEE"),
        .init(30, .amount, 9, "AMOUNT, TRANSACTION PROCESSING FEE"),
        .init(31, .amount, 9, "AMOUNT, SETTLEMENT PROCESSING FEE"),
        .init(32, .llnum, 11, "ACQUIRING INSTITUTION IDENT CODE"),
        .init(33, .llnum, 11, "FORWARDING INSTITUTION IDENT CODE"),
        .init(34, .llchar, 28, "PAN EXTENDED"),
        .init(35, .llnum, 37, "TRACK 2 DATA"),
        .init(36, .lllchar, 104, "TRACK 3 DATA"),
        .init(37, .char, 12, "RETRIEVAL REFERENCE NUMBER"),
        .init(38, .char, 6, "AUTHORIZATION IDENTIFICATION RESPONSE"),
        .init(39, .char, 2, "RESPONSE CODE"),
        .init(40, .char, 3, "SERVICE RESTRICTION CODE"),
        .init(41, .char, 8, "CARD ACCEPTOR TERMINAL IDENTIFICATION"),
        .init(42, .char, 15, "CARD ACCEPTOR IDENTIFICATION CODE"),
        .init(43, .char, 40, "CARD ACCEPTOR NAME/LOCATION"),
        .init(44, .llchar, 25, "ADDITIONAL RESPONSE DATA"),
        .init(45, .llchar, 76, "TRACK 1 DATA"),
        .init(46, .lllchar, 999, "ADDITIONAL DATA - ISO"),
        .init(47, .lllchar, 999, "ADDITIONAL DATA - NATIONAL"),
        .init(48, .lllchar, 999, "ADDITIONAL DATA - PRIVATE"),
        .init(49, .char, 3, "CURRENCY CODE, TRANSACTION"),
        .init(50, .char, 3, "CURRENCY CODE, SETTLEMENT"),
        .init(51, .char, 3, "CURRENCY CODE, CARDHOLDER BILLING"),
        .init(52, .binary, 8, "PIN DATA"),
        .init(53, .numeric, 16, "SECURITY RELATED CONTROL INFORMATION"),
        .init(54, .lllchar, 120, "ADDITIONAL AMOUNTS"),
        .init(55, .lllchar, 999, "RESERVED ISO"),
        .init(56, .lllchar, 999, "RESERVED ISO"),
        .init(57, .lllchar, 999, "RESERVED NATIONAL"),
        .init(58, .lllchar, 999, "RESERVED NATIONAL"),
        .init(59, .lllchar, 999, "RESERVED NATIONAL"),
        .init(60, .lllchar, 999, "RESERVED PRIVATE"),
        .init(61, .lllchar, 999, "RESERVED PRIVATE"),
        .init(62, .lllchar, 999, "RESERVED PRIVATE"),
        .init(63, .lllchar, 999, "RESERVED PRIVATE"),
        .init(64, .binary, 8, "MESSAGE AUTHENTICATION CODE FIELD"),
        .init(65, .binary, 1, "BITMAP, EXTENDED"),
        .init(66, .numeric, 1, "SETTLEMENT CODE"),
        .init(67, .numeric, 2, "EXTENDED PAYMENT CODE"),
        .init(68, .numeric, 3, "RECEIVING INSTITUTION COUNTRY CODE"),
        .init(69, .numeric, 3, "SETTLEMENT INSTITUTION COUNTRY CODE"),
        .init(70, .numeric, 3, "NETWORK MANAGEMENT INFORMATION CODE"),
        .init(71, .numeric, 4, "MESSAGE NUMBER"),
        .init(72, .numeric, 4, "MESSAGE NUMBER LAST"),
        .init(73, .numeric, 6, "DATE ACTION"),
        .init(74, .numeric, 10, "CREDITS NUMBER"),
        .init(75, .numeric, 10, "CREDITS REVERSAL NUMBER"),
        .init(76, .numeric, 10, "DEBITS NUMBER"),
        .init(77, .numeric, 10, "DEBITS REVERSAL NUMBER"),
        .init(78, .numeric, 10, "TRANSFER NUMBER"),
        .init(79, .numeric, 10, "TRANSFER REVERSAL NUMBER"),
        .init(80, .numeric, 10, "INQUIRIES NUMBER"),
        .init(81, .numeric, 10, "AUTHORIZATION NUMBER"),
        .init(82, .numeric, 12, "CREDITS, PROCESSING FEE AMOUNT"),
        .init(83, .numeric, 12, "CREDITS, TRANSACTION FEE AMOUNT"),
        .init(84, .numeric, 12, "DEBITS, PROCESSING FEE AMOUNT"),
        .init(85, .numeric, 12, "DEBITS, TRANSACTION FEE AMOUNT"),
        .init(86, .numeric, 16, "CREDITS, AMOUNT"),
        .init(87, .numeric, 16, "CREDITS, REVERSAL AMOUNT"),
        .init(88, .numeric, 16, "DEBITS, AMOUNT"),
        .init(89, .numeric, 16, "DEBITS, REVERSAL AMOUNT"),
        .init(90, .numeric, 42, "ORIGINAL DATA ELEMENTS"),
        .init(91, .char, 1, "FILE UPDATE CODE"),
        .init(92, .char, 2, "FILE SECURITY CODE"),
        .init(93, .char, 6, "RESPONSE INDICATOR"),
        .init(94, .char, 7, "SERVICE INDICATOR"),
        .init(95, .char, 42, "REPLACEMENT AMOUNTS"),
        .init(96, .binary, 16, "MESSAGE SECURITY CODE"),
        .init(97, .amount, 17, "AMOUNT, NET SETTLEMENT"),
        .init(98, .char, 25, "PAYEE"),
        .init(99, .llnum, 11, "SETTLEMENT INSTITUTION IDENT CODE"),
        .init(100, .llnum, 11, "RECEIVING INSTITUTION IDENT CODE"),
        .init(101, .llchar, 17, "FILE NAME"),
        .init(102, .llchar, 28, "ACCOUNT IDENTIFICATION 1"),
        .init(103, .llchar, 28, "ACCOUNT IDENTIFICATION 2"),
        .init(104, .lllchar, 100, "TRANSACTION DESCRIPTION"),
        .init(105, .lllchar, 999, "RESERVED ISO USE"),
        .init(106, .lllchar, 999, "RESERVED ISO USE"),
        .init(107, .lllchar, 999, "RESERVED ISO USE"),
        .init(108, .lllchar, 999, "RESERVED ISO USE"),
        .init(109, .lllchar, 999, "RESERVED ISO USE"),
        .init(110, .lllchar, 999, "RESERVED ISO USE"),
        .init(111, .lllchar, 999, "RESERVED ISO USE"),
        .init(112, .lllchar, 999, "RESERVED NATIONAL USE"),
        .init(113, .lllchar, 999, "RESERVED NATIONAL USE"),
        .init(114, .lllchar, 999, "RESERVED NATIONAL USE"),
        .init(115, .lllchar, 999, "RESERVED NATIONAL USE"),
        .init(116, .lllchar, 999, "RESERVED NATIONAL USE"),
        .init(117, .lllchar, 999, "RESERVED NATIONAL USE"),
        .init(118, .lllchar, 999, "RESERVED NATIONAL USE"),
        .init(119, .lllchar, 999, "RESERVED NATIONAL USE"),
        .init(120, .lllchar, 999, "RESERVED PRIVATE USE"),
        .init(121, .lllchar, 999, "RESERVED PRIVATE USE"),
        .init(122, .lllchar, 999, "RESERVED PRIVATE USE"),
        .init(123, .lllchar, 999, "RESERVED PRIVATE USE"),
        .init(124, .lllchar, 999, "RESERVED PRIVATE USE"),
        .init(125, .lllchar, 999, "RESERVED PRIVATE USE"),
        .init(126, .lllchar, 999, "RESERVED PRIVATE USE"),
        .init(127, .lllchar, 999, "RESERVED PRIVATE USE"),
        .init(128, .binary, 8, "MAC 2"),
    ]

    /// The spec of a data element, or nil outside 2...128.
    public static func spec(for field: Int) -> ISOFieldSpec? {
        (2...128).contains(field) ? fieldSpecs[field - 2] : nil
    }
}
