import Testing
@testable import ISO8583

@Suite("ISOMessage")
struct MessageTests {
    @Test("responses are told from requests by the MTI's function digit")
    func responses() {
        for mti in ["0110", "0410", "0810", "0430"] { #expect(ISOMessage(mti: mti).isResponse, "\(mti)") }
        for mti in ["0100", "0400", "0401", "0800", "0420", "08X0", "081"] { #expect(!ISOMessage(mti: mti).isResponse, "\(mti)") }
    }

    @Test("fields are stored by number and listed in ascending order")
    func fieldAccess() {
        var message = ISOMessage(mti: "0200")
        message[41] = "TERM0001"
        message[3] = "000000"
        message[128] = "0000000000000000"
        message[11] = "000001"
        #expect(message.fieldNumbers == [3, 11, 41, 128])
        #expect(message.fields.map(\.number) == [3, 11, 41, 128])
        #expect(message.fields.first?.value == "000000")
        message[41] = nil
        #expect(message[41] == nil)
        #expect(message.fieldNumbers == [3, 11, 128])
    }

    @Suite("Masking")
    struct Masking {
        func sensitiveMessage() -> ISOMessage {
            var message = sampleAuthorization()
            message[35] = sampleTrack2
            message[52] = "0123456789ABCDEF"
            message[55] = "9F2608A1B2C3D4E5F607"
            message[45] = "B4925000000004444^DOE/JOHN^2512101"
            message[102] = "4925000000004444"  // account identification, where some hosts echo the card
            return message
        }

        @Test("masked description: PAN as first 6 + last 4; 14, 35, 52, 55 as ***")
        func exactFormat() {
            let message = ISOMessage(mti: "0100", fields: [
                2: samplePAN, 3: "000000", 14: "2512", 35: sampleTrack2, 41: "TERM0001",
                52: "0123456789ABCDEF", 55: "9F2608A1B2C3D4E5F607",
            ])
            #expect(message.maskedDescription
                == "0100 {2=492500******4444, 3=000000, 14=***, 35=***, 41=TERM0001, 52=***, 55=***}")
        }

        @Test("no rendering of a message shows the clear PAN or track data")
        func noLeak() {
            let message = sensitiveMessage()
            var dumped = ""
            dump(message, to: &dumped)
            let renderings = [message.maskedDescription, message.description, message.debugDescription,
                              "\(message)", String(describing: message), String(reflecting: message),
                              String(describing: [message]), dumped]
            for rendering in renderings {
                #expect(!rendering.contains(samplePAN))
                #expect(!rendering.contains("000000004444"))   // no longer run of the PAN either
                #expect(!rendering.contains("2512101"))        // track expiry/service code
                #expect(!rendering.contains("0123456789ABCDEF"))
                #expect(!rendering.contains("DOE/JOHN"))       // track 1 name
                #expect(rendering.contains("492500******4444"))
            }
        }

        @Test("PANs of every length keep only first 6 and last 4", arguments: 13...19)
        func panLengths(length: Int) {
            let pan = "411111" + String(repeating: "7", count: length - 10) + "2222"
            let masked = ISOMessage.maskPAN(pan)
            #expect(masked == "411111" + String(repeating: "*", count: length - 10) + "2222")
            #expect(!ISOMessage(mti: "0100", fields: [2: pan]).maskedDescription.contains("7"))
        }

        @Test("short PANs are masked completely", arguments: ["", "1234", "123456789012"])
        func shortPAN(pan: String) {
            #expect(ISOMessage.maskPAN(pan) == String(repeating: "*", count: pan.count))
        }

        @Test("control characters are escaped so a field cannot forge log lines")
        func escaping() {
            let message = ISOMessage(mti: "0200", fields: [48: "a\nb\\c\u{1C}é"])
            #expect(message.maskedDescription == "0200 {48=a\\u{A}b\\\\c\\u{1C}\\u{E9}}")
        }
    }

    @Suite("Errors never carry field contents")
    struct ErrorPrivacy {
        @Test("encode errors on PAN and track 2 mention only numbers and lengths")
        func encodeErrors() {
            let cases: [ISOMessage] = [
                ISOMessage(mti: "0100", fields: [2: samplePAN + "5555"]),
                ISOMessage(mti: "0100", fields: [2: "4925000000004X44"]),
                ISOMessage(mti: "0100", fields: [35: "4925000000004444=2512?"]),
                ISOMessage(mti: "0100", fields: [35: sampleTrack2 + "999"]),
            ]
            for message in cases {
                do {
                    _ = try ISO87APackager.encode(message)
                    Issue.record("expected an error")
                } catch {
                    #expect(!error.description.contains("4925"))
                    #expect(!error.description.contains("4444"))
                    #expect(!"\(error)".contains("4925"))
                    #expect(!String(reflecting: error).contains("4925"))
                }
            }
        }

        @Test("decode errors after the PAN and track 2 do not quote them")
        func decodeErrors() throws {
            var message = sampleAuthorization()
            message[35] = sampleTrack2
            let wire = try ISO87APackager.encode(message)
            for cut in [30, 60, wire.count - 1] {
                do {
                    _ = try ISO87APackager.decode(wire[..<cut])
                    Issue.record("expected an error")
                } catch {
                    #expect(!String(reflecting: error).contains("4925"))
                }
            }
        }

        @Test("descriptions are readable", arguments: [
            (ISO8583Error.shortMessage(field: 0), "message ends inside MTI"),
            (.shortMessage(field: 35), "message ends inside field 35"),
            (.fieldTooLong(field: 2, length: 20, max: 19), "field 2 has length 20, maximum is 19"),
            (.bitmapAnnouncesMissingField(field: 11), "bitmap announces field 11 but the message ends before it"),
            (.trailingBytes(count: 2), "2 unexpected byte(s) after the last field"),
            (.frameTooLong(length: 9000, max: 8192), "frame length 9000 exceeds maximum 8192"),
        ])
        func descriptions(error: ISO8583Error, expected: String) {
            #expect(error.description == expected)
        }
    }

    @Test("response MTI", arguments: [
        ("0100", "0110"), ("0200", "0210"), ("0220", "0230"), ("0400", "0410"),
        ("0401", "0410"), ("0420", "0430"), ("0421", "0430"), ("0800", "0810"),
        ("0102", "0112"), ("0103", "0112"),
    ])
    func responseMTI(request: String, response: String) {
        #expect(ISOMessage.responseMTI(for: request) == response)
    }

    @Test("no response MTI for responses or malformed MTIs", arguments: ["0110", "0810", "0430", "080", "08A0", ""])
    func noResponseMTI(mti: String) {
        #expect(ISOMessage.responseMTI(for: mti) == nil)
    }

    @Test("matchKey pairs a request with its decoded response")
    func matchKey() throws {
        // The request is built with short values; the response comes back padded from the wire.
        let request = ISOMessage(mti: "0100", fields: [11: "123", 41: "TERM1", 2: samplePAN])
        let response = try ISO87APackager.decode(ISO87APackager.encode(
            ISOMessage(mti: ISOMessage.responseMTI(for: request.mti)!,
                       fields: [11: "123", 41: "TERM1", 39: "00"])))
        #expect(response[41] == "TERM1   ")
        #expect(response[11] == "000123")
        #expect(request.matchKey == "01TERM1   000123")
        #expect(response.matchKey == request.matchKey)

        var otherTrace = response
        otherTrace[11] = "000124"
        #expect(otherTrace.matchKey != request.matchKey)

        var otherClass = response
        otherClass.mti = "0810"
        #expect(otherClass.matchKey != request.matchKey)

        let reversal = ISOMessage(mti: "0401", fields: [11: "000123", 41: "TERM1"])
        #expect(reversal.matchKey == ISOMessage(mti: "0410", fields: [11: "123", 41: "TERM1   "]).matchKey)
    }

    @Test("matchKey is nil without field 41, field 11 or a valid MTI")
    func matchKeyMissing() {
        #expect(ISOMessage(mti: "0100", fields: [11: "000001"]).matchKey == nil)
        #expect(ISOMessage(mti: "0100", fields: [41: "TERM0001"]).matchKey == nil)
        #expect(ISOMessage(mti: "01", fields: [11: "000001", 41: "TERM0001"]).matchKey == nil)
    }
}
