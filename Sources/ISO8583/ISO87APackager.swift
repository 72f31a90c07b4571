/// ISO 8583:1987 codec with the all-ASCII layout of jPOS `ISO87APackager`:
/// 4-digit MTI, hex-ASCII bitmaps (16 characters each), and fields per `fieldSpecs`.
///
/// A caseless enum because the packager holds no state; it is a namespace.
public enum ISO87APackager {
    /// The longest message `encode` can produce: every field 2...128 at its longest, behind the
    /// MTI and both bitmaps (36,489 bytes). It fits a frame's 2-byte length (65,535), so a message
    /// this packager encodes can always be framed.
    public static let maxEncodedLength = 4 + 32 + fieldSpecs.reduce(0) { $0 + $1.kind.prefixDigits + $1.maxValueLength }

    /// Encodes a message. Fixed numeric values shorter than the field are left padded
    /// with '0', fixed character values right padded with ' ', short amounts zero padded
    /// after the sign; anything longer than the field is an error.
    public static func encode(_ message: ISOMessage) throws(ISO8583Error) -> [UInt8] {
        guard Ascii.isMTI(message.mti) else { throw .badMTI }
        let numbers = message.fieldNumbers

        // Validate every number before writing so an unknown field fails fast.
        var bitmap = [UInt8](repeating: 0, count: 16)
        for number in numbers {
            guard spec(for: number) != nil else { throw .unknownField(field: number) }
            setBit(number, in: &bitmap)
        }
        let secondary = numbers.last.map { $0 > 64 } ?? false
        if secondary { setBit(1, in: &bitmap) }

        var out: [UInt8] = []
        out.reserveCapacity(256)
        out.append(contentsOf: message.mti.utf8)
        Ascii.appendHex(bitmap[0..<(secondary ? 16 : 8)], to: &out)
        for number in numbers {
            // Both non-nil: checked in the loop above.
            try encodeField(spec(for: number)!, message[number]!, into: &out)
        }
        return out
    }

    /// How much of a message `decode` checks.
    public enum Checks: Sendable {
        /// Every field's content against its kind (digits, hex, a signed amount), and no bytes
        /// after the last field (with a length-prefixed frame they mean the two sides disagree on
        /// layout): for what a peer of ours sends, our own encoder's output.
        case everything
        /// The framing alone (the MTI, the bitmaps, each field's length prefix and limit), as jPOS's
        /// ISO87APackager unpacks, which takes a field's bytes as they are and only warns of bytes
        /// left over: for a host's replies, where a field the reader has no use for (a settlement
        /// date of spaces, a signless amount, a letter in a network code) must not make an
        /// approval unreadable. The reader checks the fields it uses.
        case framing
    }

    /// Decodes exactly one message.
    /// Decoded values are the wire form: fixed fields keep their padding, binary is uppercase hex.
    ///
    /// Fields in `omitting` are framed (their length read and checked) but neither validated nor
    /// kept: a reader with no use for the cardholder data a host echoes (2, 14, 35, 45) makes no
    /// copy of it (decode from the receive buffer itself, which the caller wipes, not a copy).
    public static func decode(_ bytes: some Collection<UInt8>, omitting: Set<Int> = [], checks: Checks = .everything) throws(ISO8583Error) -> ISOMessage {
        // Contiguous (an array, a buffer's view): decoded where it is, no copy to wipe.
        if let decoded = bytes.withContiguousStorageIfAvailable({ buffer in
            Result { () throws(ISO8583Error) -> ISOMessage in try decode(UnsafeRawBufferPointer(buffer), omitting: omitting, checks: checks) }
        }) {
            return try decoded.get()
        }
        var copy = Array(bytes)
        // The copy may hold a host's echo of field 2 or 35: zeroed before it is freed.
        defer { copy.withUnsafeMutableBytes { _ = $0.initializeMemory(as: UInt8.self, repeating: 0) } }
        // (withUnsafeBytes rethrows untyped: the typed error is carried out in a Result.)
        let decoded = copy.withUnsafeBytes { raw in Result { () throws(ISO8583Error) -> ISOMessage in try decode(raw, omitting: omitting, checks: checks) } }
        return try decoded.get()
    }

    public static func decode(_ bytes: UnsafeRawBufferPointer, omitting: Set<Int> = [], checks: Checks = .everything) throws(ISO8583Error) -> ISOMessage {
        var reader = Reader(bytes)

        guard let mtiBytes = reader.take(4) else { throw .shortMessage(field: 0) }
        guard mtiBytes.allSatisfy(Ascii.isDigit) else { throw .badMTI }
        var message = ISOMessage(mti: Ascii.string(mtiBytes))

        var bitmap = try readBitmap(&reader)
        let secondary = bitmap[0] & 0x80 != 0
        if secondary { bitmap += try readBitmap(&reader) }

        for number in 2...(secondary ? 128 : 64) where isBitSet(number, in: bitmap) {
            if omitting.contains(number) {
                _ = try takeField(spec(for: number)!, from: &reader)
            } else {
                message[number] = try decodeField(spec(for: number)!, from: &reader, checks: checks)
            }
        }
        guard reader.remaining == 0 || checks == .framing else { throw .trailingBytes(count: reader.remaining) }
        return message
    }

    // MARK: - Bitmap

    /// Bit 1 is the most significant bit of the first byte (ISO 8583 numbering).
    private static func setBit(_ number: Int, in bitmap: inout [UInt8]) {
        bitmap[(number - 1) / 8] |= 0x80 >> UInt8((number - 1) % 8)
    }

    private static func isBitSet(_ number: Int, in bitmap: [UInt8]) -> Bool {
        bitmap[(number - 1) / 8] & (0x80 >> UInt8((number - 1) % 8)) != 0
    }

    private static func readBitmap(_ reader: inout Reader) throws(ISO8583Error) -> [UInt8] {
        guard let hex = reader.take(16) else { throw .shortMessage(field: 1) }
        guard let bytes = Ascii.parseHex(hex) else { throw .badBitmap }
        return bytes
    }

    // MARK: - Fields

    private static func encodeField(
        _ spec: ISOFieldSpec, _ value: String, into out: inout [UInt8]
    ) throws(ISO8583Error) {
        let field = spec.number
        // Every kind carries one byte per character; jPOS uses ISO-8859-1, so do we.
        var bytes: [UInt8] = []
        bytes.reserveCapacity(value.utf8.count)
        for scalar in value.unicodeScalars {
            guard scalar.value <= 0xFF else {
                // Numeric/hex/amount kinds report their own, more specific error.
                throw spec.kind == .char || spec.kind == .llchar || spec.kind == .lllchar
                    ? .badCharacter(field: field) : contentError(spec)
            }
            bytes.append(UInt8(scalar.value))
        }

        switch spec.kind {
        case .numeric:
            try checkNumeric(bytes, spec)
            try checkMax(bytes.count, spec)
            out.append(contentsOf: repeatElement(Ascii.zero, count: spec.length - bytes.count))
            out.append(contentsOf: bytes)
        case .char:
            try checkMax(bytes.count, spec)
            out.append(contentsOf: bytes)
            out.append(contentsOf: repeatElement(Ascii.space, count: spec.length - bytes.count))
        case .binary:
            guard bytes.allSatisfy(Ascii.isHex) else { throw .nonHex(field: field) }
            try checkMax(bytes.count, spec)
            guard bytes.count == spec.maxValueLength else {
                throw .badLength(field: field, length: bytes.count, expected: spec.maxValueLength)
            }
            out.append(contentsOf: bytes.map(Ascii.uppercased))
        case .amount:
            guard let sign = bytes.first, Ascii.isAmountSign(sign),
                  bytes.dropFirst().allSatisfy(Ascii.isDigit)
            else { throw .badAmount(field: field) }
            try checkMax(bytes.count, spec)
            out.append(sign)
            out.append(contentsOf: repeatElement(Ascii.zero, count: spec.length - bytes.count))
            out.append(contentsOf: bytes.dropFirst())
        case .llnum, .llchar, .lllchar:
            if spec.kind == .llnum { try checkNumeric(bytes, spec) }
            try checkMax(bytes.count, spec)
            Ascii.appendDecimal(bytes.count, digits: spec.kind.prefixDigits, to: &out)
            out.append(contentsOf: bytes)
        }
    }

    /// A field's bytes on the wire, after its length prefix if it has one.
    private static func takeField(
        _ spec: ISOFieldSpec, from reader: inout Reader
    ) throws(ISO8583Error) -> Slice<UnsafeRawBufferPointer> {
        let field = spec.number
        // Ending exactly at a field boundary means the bitmap promised more than was sent;
        // ending inside a field means it was cut short. Both are rejected, but differently.
        guard reader.remaining > 0 else { throw .bitmapAnnouncesMissingField(field: field) }

        if spec.kind.prefixDigits > 0 {
            guard let prefix = reader.take(spec.kind.prefixDigits) else {
                throw .shortMessage(field: field)
            }
            guard let length = Ascii.parseDecimal(prefix) else { throw .badLengthPrefix(field: field) }
            // Checked before reading so a hostile prefix cannot make us look past the field's limit.
            guard length <= spec.length else {
                throw .fieldTooLong(field: field, length: length, max: spec.length)
            }
            guard let data = reader.take(length) else { throw .shortMessage(field: field) }
            return data
        } else {
            let wireLength = spec.kind == .binary ? spec.length * 2 : spec.length
            guard let data = reader.take(wireLength) else { throw .shortMessage(field: field) }
            return data
        }
    }

    private static func decodeField(
        _ spec: ISOFieldSpec, from reader: inout Reader, checks: Checks
    ) throws(ISO8583Error) -> String {
        let field = spec.number
        let raw = try takeField(spec, from: &reader)
        guard checks == .everything else {
            return spec.kind == .binary ? Ascii.string(raw.lazy.map(Ascii.uppercased)) : Ascii.string(raw)
        }

        switch spec.kind {
        case .numeric, .llnum:
            try checkNumeric(raw, spec)
        case .binary:
            guard raw.allSatisfy(Ascii.isHex) else { throw .nonHex(field: field) }
            return Ascii.string(raw.map(Ascii.uppercased))
        case .amount:
            guard let sign = raw.first, Ascii.isAmountSign(sign),
                  raw.dropFirst().allSatisfy(Ascii.isDigit)
            else { throw .badAmount(field: field) }
        case .char, .llchar, .lllchar:
            break  // Any byte is a valid ISO-8859-1 character.
        }
        return Ascii.string(raw)
    }

    /// Track 2 (field 35) is IFA_LLNUM in jPOS but carries a field separator,
    /// '=' in ASCII or 'D' as in the BCD convention, so those are let through there.
    private static func checkNumeric(
        _ bytes: some Collection<UInt8>, _ spec: ISOFieldSpec
    ) throws(ISO8583Error) {
        let isTrack2 = spec.number == 35
        let valid = bytes.allSatisfy { Ascii.isDigit($0) || (isTrack2 && Ascii.isTrack2Separator($0)) }
        guard valid else { throw .nonNumeric(field: spec.number) }
    }

    private static func checkMax(_ count: Int, _ spec: ISOFieldSpec) throws(ISO8583Error) {
        guard count <= spec.maxValueLength else {
            throw .fieldTooLong(field: spec.number, length: count, max: spec.maxValueLength)
        }
    }

    private static func contentError(_ spec: ISOFieldSpec) -> ISO8583Error {
        switch spec.kind {
        case .binary: .nonHex(field: spec.number)
        case .amount: .badAmount(field: spec.number)
        case .numeric, .llnum: .nonNumeric(field: spec.number)
        case .char, .llchar, .lllchar: .badCharacter(field: spec.number)
        }
    }
}

/// Bounds-checked cursor over bytes it does not own (valid for the decode that made it): `take`
/// returns nil instead of trapping, which is what lets truncated or hostile input end in an
/// error rather than a crash.
struct Reader {
    private let bytes: UnsafeRawBufferPointer
    private var position = 0

    init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    var remaining: Int { bytes.count - position }

    mutating func take(_ count: Int) -> Slice<UnsafeRawBufferPointer>? {
        guard count >= 0, count <= remaining else { return nil }
        defer { position += count }
        return bytes[position..<(position + count)]
    }
}
