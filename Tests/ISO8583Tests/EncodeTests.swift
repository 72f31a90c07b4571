import Testing
@testable import ISO8583

@Suite("Encoding")
struct EncodeTests {
    // Expected wire forms are written out by hand, field by field, not produced by the codec.

    @Test("0800 echo with fields 7, 11, 70: exact wire form")
    func networkEcho() throws {
        let echo = ISOMessage(mti: "0800", fields: [7: "0605123456", 11: "000001", 70: "301"])
        let expected = "0800"
            + "8220000000000000"  // bits 1 (secondary follows), 7, 11
            + "0400000000000000"  // bit 70
            + "0605123456"        // 7  IFA_NUMERIC 10
            + "000001"            // 11 IFA_NUMERIC 6
            + "301"               // 70 IFA_NUMERIC 3
        let wire = try ISO87APackager.encode(echo)
        #expect(text(wire) == expected)
        #expect(wire.count == 55)
        #expect(try LengthPrefixedFramer.frame(wire).prefix(2) == [0x00, 0x37])
        #expect(try ISO87APackager.decode(bytes(expected)) == echo)
    }

    @Test("0100 authorization: exact wire form")
    func authorizationRequest() throws {
        let expected = "0100"
            + "723C040008C08000"      // bits 2,3,4,7 | 11,12,13,14 | 22 | - | 37 | 41,42 | 49
            + "16" + "4925000000004444"  // 2  IFA_LLNUM
            + "000000"                // 3
            + "000000010000"          // 4
            + "0605123456"            // 7
            + "000123"                // 11
            + "123456"                // 12
            + "0605"                  // 13
            + "2512"                  // 14
            + "051"                   // 22
            + "123456789012"          // 37 IF_CHAR 12
            + "TERM0001"              // 41 IF_CHAR 8
            + "MERCHANT0000001"       // 42 IF_CHAR 15
            + "840"                   // 49 IF_CHAR 3
        #expect(text(try ISO87APackager.encode(sampleAuthorization())) == expected)
        #expect(try ISO87APackager.decode(bytes(expected)) == sampleAuthorization())
    }

    @Test("short values are padded: numeric with leading zeros, char with trailing spaces, amount after the sign")
    func padding() throws {
        let message = ISOMessage(mti: "0200", fields: [4: "10000", 28: "D5", 41: "T1"])
        let expected = "0200"
            + "1000001000800000"   // bits 4 | - | - | 28 | - | 41
            + "000000010000"       // 4
            + "D00000005"          // 28 IFA_AMOUNT 9
            + "T1      "           // 41
        #expect(text(try ISO87APackager.encode(message)) == expected)
    }

    @Test("LLVAR and LLLVAR prefixes are zero padded ASCII lengths")
    func variablePrefixes() throws {
        let message = ISOMessage(mti: "0200", fields: [32: "12345", 44: "", 48: "ABC"])
        let expected = "0200"
            + "0000000100110000"   // bit 32 (byte 4), bits 44 and 48 (byte 6)
            + "05" + "12345"       // 32 IFA_LLNUM
            + "00"                 // 44 IFA_LLCHAR, empty
            + "003" + "ABC"        // 48 IFA_LLLCHAR
        #expect(text(try ISO87APackager.encode(message)) == expected)
    }

    @Test("field 90 forces the secondary bitmap; removing it drops it again")
    func secondaryBitmapOnOff() throws {
        var message = ISOMessage(mti: "0400", fields: [11: "000123"])
        #expect(text(try ISO87APackager.encode(message)) == "0400" + "0020000000000000" + "000123")
        #expect(!message.needsSecondaryBitmap)

        let original = "010000012306051234560000000000000000000000"
        message[90] = original
        #expect(message.needsSecondaryBitmap)
        let withSecondary = "0400"
            + "8020000000000000"   // bits 1, 11
            + "0000004000000000"   // bit 90
            + "000123" + original
        #expect(text(try ISO87APackager.encode(message)) == withSecondary)
        #expect(try ISO87APackager.decode(bytes(withSecondary)) == message)

        message[90] = nil
        #expect(text(try ISO87APackager.encode(message)) == "0400" + "0020000000000000" + "000123")
    }

    @Test("field 128 alone sets bit 1 and the last secondary bit; bitmap hex is uppercase")
    func lastField() throws {
        let message = ISOMessage(mti: "0200", fields: [128: "a1b2c3d4e5f60718"])
        let wire = text(try ISO87APackager.encode(message))
        #expect(wire == "0200" + "8000000000000000" + "0000000000000001" + "A1B2C3D4E5F60718")
    }

    @Test("an MTI that is not 4 digits is rejected", arguments: ["", "080", "08000", "08A0", "0８00", " 800"])
    func badMTI(mti: String) {
        #expect(throws: ISO8583Error.badMTI) {
            try ISO87APackager.encode(ISOMessage(mti: mti, fields: [11: "000001"]))
        }
    }

    @Test("invalid values are rejected with the right error", arguments: [
        (2, "49250000000044A4", ISO8583Error.nonNumeric(field: 2)),
        (2, "49250000000044441234", .fieldTooLong(field: 2, length: 20, max: 19)),
        (3, "1234567", .fieldTooLong(field: 3, length: 7, max: 6)),
        (3, "12 456", .nonNumeric(field: 3)),
        (4, "-100", .nonNumeric(field: 4)),
        (4, "１００", .nonNumeric(field: 4)),   // full-width digits are not ASCII digits
        (41, "TERMINAL1", .fieldTooLong(field: 41, length: 9, max: 8)),
        (41, "T€RM", .badCharacter(field: 41)),
        (44, "€", .badCharacter(field: 44)),
        (52, "0123456789ABCDE", .badLength(field: 52, length: 15, expected: 16)),
        (52, "0123456789ABCDEF00", .fieldTooLong(field: 52, length: 18, max: 16)),
        (52, "0123456789ABCDEG", .nonHex(field: 52)),
        (64, "", .badLength(field: 64, length: 0, expected: 16)),
        (28, "X100", .badAmount(field: 28)),
        (28, "C12A", .badAmount(field: 28)),
        (28, "", .badAmount(field: 28)),
        (28, "C1234567890", .fieldTooLong(field: 28, length: 11, max: 9)),
        (35, "4925000000004444=2512X01", .nonNumeric(field: 35)),
        (35, String(repeating: "1", count: 38), .fieldTooLong(field: 35, length: 38, max: 37)),
        (48, String(repeating: "x", count: 1000), .fieldTooLong(field: 48, length: 1000, max: 999)),
        (54, String(repeating: "x", count: 121), .fieldTooLong(field: 54, length: 121, max: 120)),
        (1, "8000000000000000", .unknownField(field: 1)),
        (0, "0100", .unknownField(field: 0)),
        (129, "1", .unknownField(field: 129)),
    ])
    func invalidValue(field: Int, value: String, error: ISO8583Error) {
        var message = ISOMessage(mti: "0200", fields: [11: "000001"])
        message[field] = value
        #expect(throws: error) { try ISO87APackager.encode(message) }
    }

    @Test("a message with no fields encodes to MTI and an empty primary bitmap")
    func emptyMessage() throws {
        let wire = try ISO87APackager.encode(ISOMessage(mti: "0800"))
        #expect(text(wire) == "0800" + "0000000000000000")
        #expect(try ISO87APackager.decode(wire) == ISOMessage(mti: "0800"))
    }
}
