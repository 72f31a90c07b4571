import CardCrypto
import MakePayment
import Testing

private func parse(_ text: String, now: CardExpiry = CardExpiry(year: 2026, month: 11)!,
                   keepingSessionId: Bool = true) throws(CardDataError) -> CardData {
    let bytes = UnsafeMutableRawBufferPointer.allocate(byteCount: text.utf8.count, alignment: 1)
    defer { bytes.deallocate() }
    _ = bytes.initializeMemory(as: UInt8.self, from: text.utf8)
    return try CardData.parse(UnsafeRawBufferPointer(bytes), currentMonth: now, keepingSessionId: keepingSessionId)
}

struct NotAPAN: Error {}

private func pan(_ text: String) throws -> PrimaryAccountNumber {
    let parsed = PrimaryAccountNumber(text)
    switch consume parsed {
    case .some(let pan): return pan
    case .none: throw NotAPAN()
    }
}

private func outcome(_ text: String) -> String {
    do {
        let card = try parse(text)
        return "\(card.pan.masked)|\(card.expiry)|\(card.sessionId ?? "")"
    } catch {
        return "\(error.apiError.rawValue)"
    }
}

@Suite struct CardDataParsingTests {
    /// YYMM, zero-padded, from the one place that writes it (the acquirers' requests and `description`).
    @Test func anExpiryIsWrittenAsYYMM() {
        for (year, month, text) in [(2006, 3, "0603"), (2030, 12, "3012"), (2000, 1, "0001"), (2099, 10, "9910")] {
            let expiry = CardExpiry(year: year, month: month)!
            #expect(expiry.description == text)
            #expect(expiry.withASCIIDigits { Array($0) } == Array(text.utf8))
        }
    }

    @Test func faqExampleWithSpacesParses() throws {
        let card = try parse("4925000000004444,2912, 3854ba014e184e0d8ba259253f4advfa")
        #expect(card.pan.masked.value == "492500******4444")
        #expect(card.expiry == CardExpiry(year: 2029, month: 12))
        #expect(card.sessionId == "3854ba014e184e0d8ba259253f4advfa")
    }

    /// makePayment does not keep the session id (nothing uses it), but checks it all the same.
    @Test func theSessionIdIsCheckedButNotKeptUnlessAsked() throws {
        let card = try parse("4925000000004444,2912,3854ba014e184e0d8ba259253f4advfa", keepingSessionId: false)
        #expect(card.sessionId == nil)
        #expect(throws: CardDataError.malformed) { _ = try parse("4925000000004444,2912,has space", keepingSessionId: false) }
    }

    @Test(arguments: [
        ("4925000000004444,3012,s", "492500******4444|3012|s"),
        ("  4925000000004444  ,  3012  ,  s  ", "492500******4444|3012|s"),
        ("4000000000000000006,3012,abc", "400000*********0006|3012|abc"),
        ("5555555555554444,2611,x", "555555******4444|2611|x"),            // expires this month: still valid
        ("4925000000004444,3012,abcdefghijklmnopqrstuvwxyz012345", "492500******4444|3012|abcdefghijklmnopqrstuvwxyz012345"),
    ])
    func wellFormedCardDataParses(text: String, expected: String) {
        #expect(outcome(text) == expected)
    }

    @Test(arguments: [
        ("4925000000004444,3012", "92"),                          // two fields
        ("4925000000004444,3012,s,t", "92"),                      // four fields
        ("4925000000004444,3012,", "92"),                         // empty session id
        ("4925000000004444,3012,abcdefghijklmnopqrstuvwxyz0123456", "92"), // 33-character session id
        ("492500000000444,3012,s", "92"),                         // 15 digits
        ("49250000000044445555,3012,s", "92"),                    // 20 digits
        ("4925 0000 0000 4444,3012,s", "92"),                     // spaces inside the number
        ("4925********4444,3012,s", "92"),                         // a masked number is not a number
        ("4925000000004444,301,s", "92"),                         // three-digit expiry
        ("4925000000004444,30a2,s", "92"),
        ("4925000000004444,3013,s", "92"),                        // month 13
        ("4925000000004444,3000,s", "92"),                        // month 00
        ("4925000000004444,3012,se ssion", "92"),
        ("", "92"),
        ("4925000000004445,3012,s", "87"),                        // fails Luhn
        ("4925000000004444,2610,s", "86"),                        // expired last month
        ("4925000000004444,2212,s", "86"),
    ])
    func malformedCardDataIsRefusedWithTheRightError(text: String, expected: String) {
        #expect(outcome(text) == expected)
    }
}

@Suite struct PrimaryAccountNumberTests {
    @Test(arguments: ["4925000000004444", "5555555555554444", "4000000000000002", "4000000000000000006", "4111111111111111"])
    func luhnValidNumbersPass(number: String) throws {
        let passes = try pan(number).passesLuhn
        #expect(passes)
        // The check digit made for the rest of the number is the one it has.
        #expect(Luhn.checkDigit(for: number.utf8.dropLast()) == Int(String(number.last!)))
    }

    @Test(arguments: ["4925000000004445", "4111111111111112", "5555555555554440"])
    func luhnInvalidNumbersFail(number: String) throws {
        let passes = try pan(number).passesLuhn
        #expect(!passes)
    }

    @Test(arguments: [
        ("4925000000004444", "492500******4444"),
        ("4000000000000000006", "400000*********0006"),
        ("400000000000", "************"),          // 12 digits: first 6 and last 4 would hide only 2
        ("4000000000002", "400000***0002"),
    ])
    func maskingShowsFirstSixAndLastFour(number: String, masked: String) throws {
        // Everything that can be shown of a PAN is its masked form: interpolation, reflection, encoding.
        // (The PAN itself is noncopyable: interpolating or reflecting it does not compile.)
        let shown = try pan(number).masked
        #expect("\(shown)" == masked)
        #expect(String(reflecting: shown).contains(number) == false)
        #expect(String(describing: Mirror(reflecting: shown).children.map { "\($0.value)" }).contains(number) == false)
    }

    @Test func maskedPANRefusesClearNumbers() {
        #expect(MaskedPAN(masked: "4925000000004444") == nil)
        #expect(MaskedPAN(masked: "492500******4444")?.value == "492500******4444")
    }

    @Test func schemesAreRecognised() throws {
        let schemes = try ["4925000000004444", "5555555555554444", "2221000000000009"].map { try pan($0).scheme }
        #expect(schemes == [.visa, .mastercard, .mastercard])
        // Maestro's old range (50, 56–69) holds other schemes' IINs: those must not get Maestro's
        // response code mappings.
        let maestro = try ["6759649826438453", "5018000000000009", "6304000000000000"].map { try pan($0).scheme }
        #expect(maestro == [.maestro, .maestro, .maestro])
        let discoverAndUnionPay = try ["6011111111111117", "6500000000000002", "6440000000000005", "6200000000000005"].map { try pan($0).scheme }
        #expect(discoverAndUnionPay == [.other, .other, .other, .other])
    }

    @Test func nonDigitsAreRefused() {
        #expect(throws: NotAPAN.self) { _ = try pan("4925-0000-0000-4444") }
        #expect(throws: NotAPAN.self) { _ = try pan("49250000") }
    }
}

@Suite struct ExpiryTests {
    @Test(arguments: [
        (Int64(1_795_651_200), "2611"), // 2026-11-25T00:00:00Z
        (Int64(1_798_761_599), "2612"), // 2026-12-31T23:59:59Z
        (Int64(1_798_761_600), "2701"), // 2027-01-01T00:00:00Z
        (Int64(951_782_400), "0002"),   // 2000-02-29
    ])
    func monthOfATimestamp(seconds: Int64, yymm: String) {
        #expect(CardExpiry.month(containing: seconds).description == yymm)
    }
}

@Suite struct ErrorCatalogueTests {
    @Test(arguments: [
        (71, "Invalid request"), (72, "Different texts"), (81, "No such issuer"), (82, "Refused by Issuer"),
        (83, "Suspected fraud"), (84, "Exceeds withdrawal amount limit"), (85, "Response received to late"),
        (86, "Expired card"), (87, "Invalid card number (no such number)"),
        (88, "Merchant does not allow credit cards"), (89, "Not sufficient funds"), (91, "Internal error"),
        (92, "Unable to decrypt"),
    ])
    func idsAndTextsAreTheAPIs(id: Int, text: String) throws {
        let error = try #require(APIError(rawValue: id))
        #expect(error.text == text)
        #expect(error.message == ErrorMessage(errorId: id, errorText: text))
    }
}

@Suite struct UTCDateTests {
    @Test(arguments: [
        (Int64(0), 1970, 1, 1, 0, 1),
        (Int64(951_827_696), 2000, 2, 29, 12, 60),       // 2000-02-29T12:34:56Z, a leap day
        (Int64(1_798_761_599), 2026, 12, 31, 23, 365),   // 2026-12-31T23:59:59Z
        (Int64(1_830_297_600), 2028, 1, 1, 0, 1),        // 2028-01-01T00:00:00Z
    ])
    func fieldsOfAMoment(seconds: Int64, year: Int, month: Int, day: Int, hour: Int, dayOfYear: Int) {
        let date = UTCDate(secondsSince1970: seconds)
        #expect([date.year, date.month, date.day, date.hour, date.dayOfYear] == [year, month, day, hour, dayOfYear])
    }
}
