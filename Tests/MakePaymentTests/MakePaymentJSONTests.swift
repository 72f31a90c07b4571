import Foundation
import LoadGeneration  // SplitMix64, its seedable generator
import MakePayment
import Testing

private func parse(_ text: String) -> MakePaymentRequest.Parsed { MakePaymentRequest.parse(json: Array(text.utf8)) }

private let valid = #"{"pspTransactionId":"t-1","merchantSerialNumber":"123456","cardData":"abc+/=","confirmed":"YES"}"#

@Suite struct MakePaymentJSONTests {
    @Test func parsesTheFourFields() {
        #expect(parse(valid) == .request(MakePaymentRequest(pspTransactionId: "t-1", merchantSerialNumber: "123456",
                                                            cardData: "abc+/=", confirmed: .yes)))
    }

    @Test(arguments: ["YES", "NO", "TIMEOUT", "CANCEL"])
    func everyConfirmedValue(_ value: String) {
        let body = #"{"pspTransactionId":"t","merchantSerialNumber":"1","cardData":"c","confirmed":"\#(value)"}"#
        guard case .request(let request) = parse(body) else { Issue.record("not parsed"); return }
        #expect(request.confirmed.rawValue == value)
    }

    @Test func whitespaceOrderAndUnknownMembers() {
        let body = """
             { "extra" : {"a":[1,-2.5e+3,true,false,null,{"b":"\\u00e9"}]} ,
            \t"confirmed":"NO","cardData":"c",\r\n"merchantSerialNumber":"m","pspTransactionId":"id","n":0 }\n
            """
        #expect(parse(body) == .request(MakePaymentRequest(pspTransactionId: "id", merchantSerialNumber: "m", cardData: "c",
                                                           confirmed: .no)))
    }

    @Test func escapesAreDecoded() {
        let body = #"{"pspTransactionId":"a\"b\\c\/d\u00e9\ud83d\ude00\n","merchantSerialNumber":"1","cardData":"c","confirmed":"YES"}"#
        guard case .request(let request) = parse(body) else { Issue.record("not parsed"); return }
        #expect(request.pspTransactionId == "a\"b\\c/dé😀\n")
    }

    @Test func anEscapedKeyIsStillTheKey() {
        let body = #"{"psp\u0054ransactionId":"x","merchantSerialNumber":"1","cardData":"c","confirmed":"YES"}"#
        guard case .request(let request) = parse(body) else { Issue.record("not parsed"); return }
        #expect(request.pspTransactionId == "x")
    }

    /// Valid JSON that is not a valid request still names the payment, for the 71 answer.
    @Test(arguments: [
        #"{"pspTransactionId":"t-9","merchantSerialNumber":"1","cardData":"c","confirmed":"MAYBE"}"#,
        #"{"pspTransactionId":"t-9","merchantSerialNumber":1,"cardData":"c","confirmed":"YES"}"#,
        #"{"pspTransactionId":"t-9","cardData":"c","confirmed":"YES"}"#,
        #"{"pspTransactionId":"t-9","merchantSerialNumber":null,"cardData":"c","confirmed":"YES"}"#,
        #"{"pspTransactionId":"t-9","merchantSerialNumber":"1","cardData":["c"],"confirmed":"YES"}"#,
        #"{"pspTransactionId":"t-9","merchantSerialNumber":"1","cardData":"c","confirmed":"yes"}"#,
    ])
    func invalidRequestsNameTheirPayment(_ body: String) {
        #expect(parse(body) == .invalid(pspTransactionId: "t-9"))
    }

    @Test(arguments: [
        "", " ", "null", "[]", "\"x\"", "{", "}", "{}x", valid + "x", valid + "{}", "{\"pspTransactionId\"}",
        #"{"pspTransactionId":"t",}"#, #"{,"pspTransactionId":"t"}"#, #"{"pspTransactionId":"t" "cardData":"c"}"#,
        #"{"pspTransactionId":'t'}"#, #"{pspTransactionId:"t"}"#, #"{"a":01}"#, #"{"a":1.}"#, #"{"a":-}"#, #"{"a":.5}"#,
        #"{"a":1e}"#, #"{"a":tru}"#, #"{"a":nul}"#, #"{"a":[1,]}"#, #"{"a":[1 2]}"#, #"{"a":"\x"}"#, #"{"a":"\u12"}"#,
        #"{"a":"\ud800"}"#, #"{"a":"\udc00x"}"#, #"{"a":"\ud800\u0041"}"#, "{\"a\":\"tab\there\"}", "{\"a\":\"nl\nhere\"}",
        #"{"a":"unterminated}"#,
    ])
    func malformedJSONNamesNothing(_ body: String) {
        #expect(parse(body) == .invalid(pspTransactionId: nil))
    }

    /// A user who declined or never answered may come without card data; a YES may not.
    @Test func cardDataMayBeMissingOrNullUnlessConfirmed() {
        for confirmed in ["NO", "TIMEOUT", "CANCEL"] {
            let expected = MakePaymentRequest.Parsed.request(MakePaymentRequest(pspTransactionId: "t", merchantSerialNumber: "1", cardData: "",
                                                             confirmed: Confirmed(rawValue: confirmed)!))
            #expect(parse(#"{"pspTransactionId":"t","merchantSerialNumber":"1","confirmed":"\#(confirmed)"}"#) == expected)
            #expect(parse(#"{"pspTransactionId":"t","merchantSerialNumber":"1","cardData": null ,"confirmed":"\#(confirmed)"}"#) == expected)
        }
        #expect(parse(#"{"pspTransactionId":"t","merchantSerialNumber":"1","confirmed":"YES"}"#) == .invalid(pspTransactionId: "t"))
        #expect(parse(#"{"pspTransactionId":"t","merchantSerialNumber":"1","cardData":null,"confirmed":"YES"}"#) == .invalid(pspTransactionId: "t"))
        #expect(parse(#"{"pspTransactionId":"t","merchantSerialNumber":"1","cardData":null,"cardData":null,"confirmed":"NO"}"#) == .invalid(pspTransactionId: nil))
        #expect(parse(#"{"pspTransactionId":"t","merchantSerialNumber":"1","cardData":nul,"confirmed":"NO"}"#) == .invalid(pspTransactionId: nil))
        #expect(parse(#"{"pspTransactionId":"t","merchantSerialNumber":"1","cardData":7,"confirmed":"NO"}"#) == .invalid(pspTransactionId: "t"))
    }

    @Test func aFieldGivenTwiceIsInvalid() {
        let body = #"{"pspTransactionId":"a","merchantSerialNumber":"1","cardData":"c","confirmed":"YES","pspTransactionId":"b"}"#
        #expect(parse(body) == .invalid(pspTransactionId: nil))
        let twiceCard = #"{"pspTransactionId":"a","merchantSerialNumber":"1","cardData":"c","confirmed":"YES","cardData":"d"}"#
        #expect(parse(twiceCard) == .invalid(pspTransactionId: nil))
    }

    @Test func invalidUTF8IsInvalid() {
        var bytes = Array(#"{"pspTransactionId":"t","merchantSerialNumber":"1","cardData":"c","confirmed":"YES","x":""#.utf8)
        bytes += [0xC3, 0x28] + Array("\"}".utf8)
        #expect(MakePaymentRequest.parse(json: bytes) == .invalid(pspTransactionId: nil))
        var inField = Array(#"{"pspTransactionId":""#.utf8) + [0xFF] + Array(#"","merchantSerialNumber":"1","cardData":"c","confirmed":"YES"}"#.utf8)
        #expect(MakePaymentRequest.parse(json: inField) == .invalid(pspTransactionId: nil))
        inField.removeAll()
    }

    @Test func nestingIsBounded() {
        let deep = "{\"a\":" + String(repeating: "[", count: 100) + String(repeating: "]", count: 100) + "}"
        #expect(parse(deep) == .invalid(pspTransactionId: nil))
        let fine = "{\"a\":" + String(repeating: "[", count: 30) + String(repeating: "]", count: 30) + "}"
        #expect(parse(fine) == .invalid(pspTransactionId: nil)) // valid JSON, but no fields
        #expect(parse(String(fine.dropLast()) + #","pspTransactionId":"d"}"#) == .invalid(pspTransactionId: "d"))
    }

    /// Never more lenient than Foundation's JSONDecoder: whatever the parser accepts, JSONDecoder
    /// accepts with the same values. (The converse does not hold: JSONDecoder lets through some
    /// invalid JSON in members it skips, such as `[1,]` or `[-]`; RFC 8259 does not.)
    /// The same mutations on every run by default, so that CI on a clean clone is repeatable;
    /// `JSON_FUZZ_SEED=random` draws a seed (a failure names it) and `JSON_FUZZ_SEED=<seed>` runs
    /// those mutations again.
    @Test func neverMoreLenientThanJSONDecoder() {
        let asked = ProcessInfo.processInfo.environment["JSON_FUZZ_SEED"]
        let seed = asked == "random" ? UInt64.random(in: 0...UInt64.max) : asked.flatMap { UInt64($0) } ?? 0x5EED_0F_8259
        var generator = SplitMix64(seed: seed)
        let base = Array(#"{"pspTransactionId":"t-1","merchantSerialNumber":"123","cardData":"q+/=","confirmed":"CANCEL","z":[1,{"k":null}]}"#.utf8)
        let alphabet = Array(#"{}[]:,"\ 0-1.eEtrufalsnYESNO"#.utf8)
        var disagreements: [String] = [], accepted = 0
        for _ in 0..<3000 {
            var bytes = base
            for _ in 0..<Int.random(in: 1...3, using: &generator) {
                let i = Int.random(in: 0..<bytes.count, using: &generator)
                switch Int.random(in: 0..<3, using: &generator) {
                case 0: bytes[i] = alphabet.randomElement(using: &generator)!
                case 1: bytes.remove(at: i)
                default: bytes.insert(alphabet.randomElement(using: &generator)!, at: i)
                }
            }
            let foundation = try? JSONDecoder().decode(MakePaymentRequest.self, from: Data(bytes))
            let ours = MakePaymentRequest.parse(json: bytes)
            let oursRequest: MakePaymentRequest? = if case .request(let r) = ours { r } else { nil }
            if let oursRequest {
                accepted += 1
                if foundation != oursRequest { disagreements.append(String(decoding: bytes, as: UTF8.self)) }
            }
        }
        #expect(disagreements.isEmpty, "JSON_FUZZ_SEED=\(seed): \(disagreements.prefix(5))")
        #expect(accepted > 100, "JSON_FUZZ_SEED=\(seed): the mutations should leave some bodies valid")
    }

    @Test func answersAreWrittenAsTheAPISays() {
        let ok = MakePaymentResponse.ok("t-1")
        #expect(String(decoding: ok.json, as: UTF8.self) == #"{"paymentInfo":{"pspTransactionId":"t-1","status":"OK"}}"#)
        let fail = MakePaymentResponse.fail("a\"b", .notSufficientFunds)
        #expect(String(decoding: fail.json, as: UTF8.self)
                == #"{"errorMessage":{"errorId":89,"errorText":"Not sufficient funds"},"paymentInfo":{"pspTransactionId":"a\"b","status":"FAIL"}}"#)
        let decoded = try? JSONDecoder().decode(MakePaymentResponse.self, from: Data(fail.json))
        #expect(decoded == fail)
    }

    /// Every character a JSON string must escape is escaped, and the text reads back unchanged.
    @Test func quotedTextRoundTrips() throws {
        let text = "q\"b\\n\nr\rt\tc\u{01}\u{1F}é😀/"
        let quoted = JSONText.quoted(text)
        #expect(quoted == #""q\"b\\n\nr\rt\tc\u0001\u001fé😀/""#)
        #expect(try JSONDecoder().decode(String.self, from: Data(quoted.utf8)) == text)
    }
}
