import Testing
@testable import ISO8583

@Suite("Decoding malformed input")
struct DecodeTests {
    static let echoWire = w("0800", "0220000000000000", "0605123456", "000001")

    /// Joins wire pieces; long `+` chains inside a literal are too slow to type-check.
    static func w(_ parts: String...) -> String { parts.joined() }

    static let malformedCases: [(String, ISO8583Error)] = [
        ("", .shortMessage(field: 0)),
        ("080", .shortMessage(field: 0)),
        (w("08A0", "0220000000000000"), .badMTI),
        (w("080 ", "0220000000000000"), .badMTI),
        ("0800", .shortMessage(field: 1)),
        (w("0800", "022000000000000"), .shortMessage(field: 1)),              // 15 hex chars
        (w("0800", "0G20000000000000", "0605123456000001"), .badBitmap),
        (w("0800", "02200000 0000000", "0605123456000001"), .badBitmap),
        (w("0800", "8220000000000000"), .shortMessage(field: 1)),             // secondary missing
        (w("0800", "8220000000000000", "04000000000000Z0"), .badBitmap),      // bad secondary
        (w("0800", "0220000000000000", "0605123456"), .bitmapAnnouncesMissingField(field: 11)),
        (w("0800", "0220000000000000"), .bitmapAnnouncesMissingField(field: 7)),
        (w("0800", "8220000000000000", "0400000000000000", "0605123456000001"),
         .bitmapAnnouncesMissingField(field: 70)),
        (w("0800", "0220000000000000", "0605123456", "000"), .shortMessage(field: 11)),   // truncated fixed
        (w("0100", "4000000000000000", "1"), .shortMessage(field: 2)),                    // truncated prefix
        (w("0100", "4000000000000000", "16", "492500"), .shortMessage(field: 2)),         // truncated data
        (w("0100", "4000000000000000", "20", "49250000000044441234"),
         .fieldTooLong(field: 2, length: 20, max: 19)),                                   // over-long LLVAR
        (w("0100", "4000000000000000", "99", "4925"), .fieldTooLong(field: 2, length: 99, max: 19)),
        (w("0200", "0000000000000400", "121", String(repeating: "A", count: 121)),
         .fieldTooLong(field: 54, length: 121, max: 120)),                                // over-long LLLVAR
        (w("0100", "4000000000000000", "1A", "4925000000004444"), .badLengthPrefix(field: 2)),
        (w("0100", "4000000000000000", "-1", "4"), .badLengthPrefix(field: 2)),
        (w(echoWire, "XY"), .trailingBytes(count: 2)),
        (w(echoWire, "0"), .trailingBytes(count: 1)),
        (w("0800", "0220000000000000", "0605123456", "00A001"), .nonNumeric(field: 11)),
        (w("0100", "4000000000000000", "16", "4925000000004D44"), .nonNumeric(field: 2)),
        (w("0200", "0000000000001000", "0123456789ABCDEG"), .nonHex(field: 52)),
        (w("0200", "0000001000000000", "X00000100"), .badAmount(field: 28)),
        (w("0200", "0000001000000000", "C0000010 "), .badAmount(field: 28)),
    ]

    @Test("malformed input is rejected with the right error", arguments: malformedCases)
    func malformed(wire: String, error: ISO8583Error) {
        #expect(throws: error) { try ISO87APackager.decode(bytes(wire)) }
    }

    /// Framing checks alone, as jPOS unpacks (a host's replies): a field's content and bytes after
    /// the last field pass, with the bytes as they came; a broken frame is still an error.
    @Test("with framing checks alone only the framing is refused", arguments: malformedCases)
    func framingOnly(wire: String, error: ISO8583Error) throws {
        switch error {
        case .nonNumeric, .nonHex, .badAmount, .trailingBytes:
            let message = try ISO87APackager.decode(bytes(wire), checks: .framing)
            #expect(!message.fieldNumbers.isEmpty)
        default:
            #expect(throws: error) { try ISO87APackager.decode(bytes(wire), checks: .framing) }
        }
    }

    @Test("with framing checks alone, each field holds its bytes as they came")
    func framingOnlyKeepsTheBytes() throws {
        let wire = Self.w("0200", "0000001000001000", "X00000100", "0123456789abcdeg")
        let message = try ISO87APackager.decode(bytes(wire + "\r\n"), checks: .framing)
        #expect(message[28] == "X00000100" && message[52] == "0123456789ABCDEg")
        #expect(message.fieldNumbers == [28, 52])
    }

    @Test("bitmap hex is accepted in lower case")
    func lowercaseBitmap() throws {
        let upper = try ISO87APackager.encode(sampleAuthorization())
        var lower = upper
        for i in 4..<20 where (0x41...0x46).contains(lower[i]) { lower[i] += 0x20 }
        #expect(text(Array(lower[4..<20])) == "723c040008c08000")
        #expect(try ISO87APackager.decode(lower) == sampleAuthorization())
    }

    @Test("a secondary bitmap with no bits set is tolerated; re-encoding drops it")
    func emptySecondaryBitmap() throws {
        let wire = Self.w("0800", "8020000000000000", "0000000000000000", "000001")
        let message = try ISO87APackager.decode(bytes(wire))
        #expect(message == ISOMessage(mti: "0800", fields: [11: "000001"]))
        #expect(text(try ISO87APackager.encode(message)) == "0800" + "0020000000000000" + "000001")
    }

    @Test("decode accepts slices and other collections, not only arrays")
    func collections() throws {
        let wire = try ISO87APackager.encode(sampleAuthorization())
        let padded = [0xFF, 0xFF] + wire + [0xFF]
        #expect(try ISO87APackager.decode(padded[2..<(padded.count - 1)]) == sampleAuthorization())
        #expect(try ISO87APackager.decode(AnyCollection(wire)) == sampleAuthorization())
    }

    @Test("cardholder fields can be framed and left out; a broken one is still an error")
    func omittingCardholderFields() throws {
        var message = sampleAuthorization()
        message[35] = sampleTrack2
        let wire = try ISO87APackager.encode(message)
        let decoded = try wire.withUnsafeBytes { try ISO87APackager.decode($0, omitting: ISOMessage.cardholderFields) }
        var expected = message
        for number in ISOMessage.cardholderFields { expected[number] = nil }
        #expect(decoded == expected)
        #expect(decoded[2] == nil && decoded[14] == nil && decoded[35] == nil && decoded[37] == "123456789012")
        // Left out or not, a field's framing is checked.
        #expect(throws: ISO8583Error.fieldTooLong(field: 2, length: 20, max: 19)) {
            try ISO87APackager.decode(bytes(Self.w("0100", "4000000000000000", "20", "49250000000044441234")), omitting: [2])
        }
        #expect(throws: ISO8583Error.shortMessage(field: 2)) {
            try ISO87APackager.decode(bytes(Self.w("0100", "4000000000000000", "16", "492500")), omitting: [2])
        }
    }

    @Test("every truncation of a valid message is rejected without crashing")
    func everyTruncation() throws {
        var message = sampleAuthorization()
        message[35] = sampleTrack2
        message[48] = "ADDITIONAL"
        message[52] = "0123456789ABCDEF"
        message[90] = String(repeating: "1", count: 42)
        let wire = try ISO87APackager.encode(message)
        for length in 0..<wire.count {
            do {
                _ = try ISO87APackager.decode(wire[0..<length])
                Issue.record("truncated to \(length) bytes but decoded")
            } catch {
                switch error {
                case .shortMessage, .bitmapAnnouncesMissingField: break
                default: Issue.record("unexpected \(error) at length \(length)")
                }
            }
        }
        #expect(try ISO87APackager.decode(wire) == message)
    }

    @Test("random corruption never crashes; whatever decodes re-encodes canonically")
    func randomCorruption() throws {
        var message = sampleAuthorization()
        message[28] = "C00000100"
        message[35] = sampleTrack2
        message[55] = "9F2608A1B2C3D4E5F60718"
        message[70] = "301"
        let wire = try ISO87APackager.encode(message)
        let interesting = bytes("0123456789ABCDEFCD= ") + [0x00, 0x7F, 0x80, 0xFF]
        var rng = SplitMix64(state: 0x1508_3587)
        var decodedCount = 0
        for _ in 0..<3000 {
            var corrupt = wire
            for _ in 0..<Int.random(in: 1...3, using: &rng) {
                let index = Int.random(in: 0..<corrupt.count, using: &rng)
                corrupt[index] = Bool.random(using: &rng)
                    ? interesting.randomElement(using: &rng)! : UInt8.random(in: 0...255, using: &rng)
            }
            if Bool.random(using: &rng) {
                corrupt.removeLast(Int.random(in: 0..<corrupt.count, using: &rng))
            }
            guard let decoded = try? ISO87APackager.decode(corrupt) else { continue }
            decodedCount += 1
            let reencoded = try ISO87APackager.encode(decoded)
            #expect(try ISO87APackager.decode(reencoded) == decoded)
        }
        #expect(decodedCount > 0)  // Some digit-for-digit swaps must still decode.
    }
}
