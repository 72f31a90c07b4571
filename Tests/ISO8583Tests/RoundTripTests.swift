import Testing
@testable import ISO8583

@Suite("Round trips")
struct RoundTripTests {
    @Test("each field type survives encode/decode (decoded value is the wire form)", arguments: [
        (2, samplePAN, samplePAN),                                          // IFA_LLNUM
        (2, "", ""),
        (3, "123", "000123"),                                               // IFA_NUMERIC, padded
        (4, "000000010000", "000000010000"),
        (35, sampleTrack2, sampleTrack2),                                   // track 2 with '='
        (35, "4925000000004444D2512101", "4925000000004444D2512101"),       // track 2 with 'D'
        (37, "RRN1", "RRN1        "),                                       // IF_CHAR, padded
        (43, "ACME STORE 42            SPRINGFIELD  US", "ACME STORE 42            SPRINGFIELD  US"),
        (44, "", ""),                                                       // IFA_LLCHAR
        (44, "RESPONSE DATA", "RESPONSE DATA"),
        (48, String(repeating: "Z", count: 999), String(repeating: "Z", count: 999)),  // IFA_LLLCHAR max
        (48, "A\u{1C}B\u{1C}C", "A\u{1C}B\u{1C}C"),                         // FS separators kept
        (63, "café ñ", "café ñ"),                                           // ISO-8859-1
        (52, "0123456789abcdef", "0123456789ABCDEF"),                       // IFA_BINARY, canonical case
        (64, "FFFFFFFFFFFFFFFF", "FFFFFFFFFFFFFFFF"),
        (65, "a5", "A5"),
        (96, "00112233445566778899AABBCCDDEEFF", "00112233445566778899AABBCCDDEEFF"),
        (28, "C100", "C00000100"),                                          // IFA_AMOUNT, padded
        (28, "D00000100", "D00000100"),
        (97, "D1234567890123456", "D1234567890123456"),
        (55, "9F2608A1B2C3D4E5F607189F2701809F10120110A00003220000000000000000000000FF",
         "9F2608A1B2C3D4E5F607189F2701809F10120110A00003220000000000000000000000FF"),
        (70, "301", "301"),
        (90, String(repeating: "9", count: 42), String(repeating: "9", count: 42)),
        (95, "REPL", "REPL" + String(repeating: " ", count: 38)),
        (128, "0102030405060708", "0102030405060708"),
    ])
    func singleField(field: Int, value: String, decoded: String) throws {
        let message = ISOMessage(mti: "0200", fields: [field: value])
        let result = try ISO87APackager.decode(ISO87APackager.encode(message))
        #expect(result.mti == "0200")
        #expect(result.fieldNumbers == [field])
        #expect(result[field] == decoded)
    }

    @Test("every field at its maximum length round trips; one more is rejected",
          arguments: ISO87APackager.fieldSpecs)
    func everyFieldAtMax(spec: ISOFieldSpec) throws {
        let value = maxLengthValue(for: spec)
        let message = ISOMessage(mti: "0200", fields: [spec.number: value])
        let wire = try ISO87APackager.encode(message)
        let bitmapLength = spec.number > 64 ? 32 : 16
        let wireValueLength = (spec.kind == .binary ? 2 * spec.length : spec.length) + spec.kind.prefixDigits
        #expect(wire.count == 4 + bitmapLength + wireValueLength)
        #expect(try ISO87APackager.decode(wire) == message)

        let tooLong = value + (spec.kind == .binary ? "00" : "1")
        #expect(throws: ISO8583Error.fieldTooLong(field: spec.number, length: tooLong.count,
                                                  max: spec.maxValueLength)) {
            try ISO87APackager.encode(ISOMessage(mti: "0200", fields: [spec.number: tooLong]))
        }
    }

    @Test("a message with all 127 fields round trips")
    func allFields() throws {
        var message = ISOMessage(mti: "0200")
        for spec in ISO87APackager.fieldSpecs { message[spec.number] = maxLengthValue(for: spec) }
        let wire = try ISO87APackager.encode(message)
        #expect(text(Array(wire[4..<36])) == "FFFFFFFFFFFFFFFF" + "FFFFFFFFFFFFFFFF")
        #expect(try ISO87APackager.decode(wire) == message)
        // The longest message there is: framing any encoded message cannot overflow the length.
        #expect(wire.count == ISO87APackager.maxEncodedLength)
        #expect(try LengthPrefixedFramer.frame(wire).count == wire.count + 2)
    }

    @Test("encoded, framed, split into chunks, reassembled and decoded")
    func throughTheFramer() throws {
        let messages = [sampleAuthorization(),
                        ISOMessage(mti: "0800", fields: [7: "0605123456", 11: "000001", 70: "301"])]
        var stream: [UInt8] = []
        for message in messages { stream += try LengthPrefixedFramer.frame(ISO87APackager.encode(message)) }

        var framer = LengthPrefixedFramer()
        var received: [ISOMessage] = []
        var offset = 0
        while offset < stream.count {
            let end = min(offset + 7, stream.count)
            framer.append(stream[offset..<end])
            offset = end
            while let body = try framer.nextFrame() { received.append(try ISO87APackager.decode(body)) }
        }
        #expect(received == messages)
        #expect(framer.bufferedByteCount == 0)
    }
}
