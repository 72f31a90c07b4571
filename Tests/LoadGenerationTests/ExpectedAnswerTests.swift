import Foundation
@testable import LoadGeneration
import MakePayment
import Testing

@Suite struct ExpectedAnswerTests {
    /// The API's table, code by code, as the brief for the worker states it.
    static let codeTable: [(codes: [String], errorId: Int?)] = [
        (["00", "08", "11"], nil),
        (["10"], 82),
        (["15", "31", "92"], 81),
        (["01", "02", "05", "12", "46", "57", "62", "78", "93", "04", "07", "41", "43", "13"], 82),
        (["34", "59", "63"], 83),
        (["61", "65"], 84),
        (["68", "91"], 85),
        (["33", "54"], 86),
        (["14", "56"], 87),
        (["58"], 88),
        (["51"], 89),
        (["03", "06", "20", "22", "30", "94", "96"], 91),
    ]

    @Test(arguments: codeTable)
    func responseCodesMapToTheCatalogue(codes: [String], errorId: Int?) {
        for code in codes {
            let expected = CaseKind.code(code).expected
            #expect(expected.httpStatus == 200)
            #expect(expected.status == (errorId == nil ? .ok : .fail), "code \(code)")
            #expect(expected.errorId == errorId, "code \(code)")
        }
    }

    /// Every answer vipps-sim expects carries an id of the API's catalogue and its text exactly
    /// (no 93, no texts of our own: the worker's API version has neither).
    @Test func everyExpectedAnswerIsInTheCatalogue() {
        let kinds: [CaseKind] = [.approved, .duplicate, .duplicateInFlight, .timeout, .badCryptogram, .wrongToken, .confirmedNo, .confirmedTimeout,
                                 .confirmedCancel, .luhn, .expired] + (0...99).map { .code($0 < 10 ? "0\($0)" : "\($0)") }
        for kind in kinds {
            let expected = kind.expected
            guard let id = expected.errorId else { continue }
            #expect(ExpectedAnswer.catalogue[id] != nil && expected.errorText == ExpectedAnswer.catalogue[id], "\(kind)")
        }
    }

    @Test func unmappedCodeIsARefusalNeverAnApproval() {
        #expect(CaseKind.code("17").expected == .fail(.refusedByIssuer))
        #expect(CaseKind.code("88").expected == .fail(.refusedByIssuer))
    }

    @Test(arguments: [
        (CaseKind.approved, ExpectedAnswer(httpStatus: 200, status: .ok)),
        (.duplicate, ExpectedAnswer(httpStatus: 200, status: .ok)),
        (.duplicateInFlight, ExpectedAnswer(httpStatus: 200, status: .ok)),
        (.timeout, ExpectedAnswer(httpStatus: 200, status: .fail, errorId: 85, errorText: "Response received to late")),
        (.badCryptogram, ExpectedAnswer(httpStatus: 200, status: .fail, errorId: 92, errorText: "Unable to decrypt")),
        (.wrongToken, ExpectedAnswer(httpStatus: 401, status: .fail, errorId: 71, errorText: "Invalid request")),
        (.confirmedNo, ExpectedAnswer(httpStatus: 200, status: .fail, errorId: 72, errorText: "Different texts")),
        (.confirmedTimeout, ExpectedAnswer(httpStatus: 200, status: .fail, errorId: 72, errorText: "Different texts")),
        (.confirmedCancel, ExpectedAnswer(httpStatus: 200, status: .fail, errorId: 72, errorText: "Different texts")),
        (.luhn, ExpectedAnswer(httpStatus: 200, status: .fail, errorId: 87, errorText: "Invalid card number (no such number)")),
        (.expired, ExpectedAnswer(httpStatus: 200, status: .fail, errorId: 86, errorText: "Expired card")),
    ])
    func namedKindsExpectTheirAnswer(kind: CaseKind, expected: ExpectedAnswer) {
        #expect(kind.expected == expected)
        #expect(CaseKind(name: kind.name) == kind)
    }

    @Test func cardsAreWhatTheirKindSays() {
        #expect(CaseKind.code("51").cardPlaintext(session: "s1") == "4000000000000515,3012,s1")
        #expect(CaseKind.timeout.cardPlaintext(session: "s1").hasPrefix("400000000000099"))
        #expect(CaseKind.expired.cardPlaintext(session: "s1") == CaseKind.approvedPAN + ",2001,s1")
        #expect(Self.luhnValid(CaseKind.approvedPAN))
        let luhnPAN = String(CaseKind.luhn.cardPlaintext(session: "s1").prefix(16))
        #expect(!Self.luhnValid(luhnPAN))
        #expect(luhnPAN.dropLast() == CaseKind.approvedPAN.dropLast())
    }

    static func luhnValid(_ pan: String) -> Bool {
        var sum = 0
        for (i, c) in pan.utf8.reversed().enumerated() {
            var d = Int(c) - 48
            if i % 2 == 1 { d *= 2; if d > 9 { d -= 9 } }
            sum += d
        }
        return sum % 10 == 0
    }

    // MARK: checking an answer

    static func body(_ response: MakePaymentResponse) -> [UInt8] { Array(try! JSONEncoder().encode(response)) }

    @Test func matchingAnswerPasses() {
        let ok = AnswerCheck.check(httpStatus: 200, isJSON: true, body: Self.body(.ok("p1")), expected: .ok, pspTransactionId: "p1")
        #expect(ok == CheckedAnswer(outcome: "200 OK", problem: nil))
        let refused = AnswerCheck.check(httpStatus: 200, isJSON: true, body: Self.body(.fail("p1", .notSufficientFunds)),
                                        expected: .fail(.notSufficientFunds), pspTransactionId: "p1")
        #expect(refused == CheckedAnswer(outcome: "200 FAIL 89", problem: nil))
    }

    @Test func wrongErrorIdIsAMismatch() {
        let checked = AnswerCheck.check(httpStatus: 200, isJSON: true, body: Self.body(.fail("p1", .refusedByIssuer)),
                                        expected: .fail(.notSufficientFunds), pspTransactionId: "p1")
        #expect(checked.outcome == "200 FAIL 82")
        #expect(checked.problem == "expected 200 FAIL 89, got errorId 82")
    }

    @Test func wrongStatusIdAndHTTPStatusAreEachNamed() {
        let checked = AnswerCheck.check(httpStatus: 500, isJSON: true, body: Self.body(.fail("p2", .internalError)),
                                        expected: .ok, pspTransactionId: "p1")
        #expect(checked.problem == "expected 200 OK, got HTTP 500, pspTransactionId p2, status FAIL, errorId 91")
    }

    /// 72's text is checked too: one of our own (as later versions of the API allowed) is a mismatch.
    @Test func aTextOfItsOwnFor72IsAMismatch() {
        let expected = CaseKind.confirmedCancel.expected
        let right = MakePaymentResponse.fail("p1", APIError.differentTexts.message)
        let wrong = MakePaymentResponse.fail("p1", APIError.differentTexts.message(text: "Status from Vipps:CANCEL"))
        #expect(AnswerCheck.check(httpStatus: 200, isJSON: true, body: Self.body(right), expected: expected, pspTransactionId: "p1").problem == nil)
        #expect(AnswerCheck.check(httpStatus: 200, isJSON: true, body: Self.body(wrong), expected: expected, pspTransactionId: "p1").problem
            == #"expected 200 FAIL 72, got errorText "Status from Vipps:CANCEL""#)
    }

    /// vipps-sim's texts are its own copy of the API's catalogue: a worker whose text drifts from
    /// the API's is a mismatch, on the fast path (byte for byte) and on the slow one.
    @Test func aWrongTextForACatalogueIdIsAMismatch() {
        let drifted = MakePaymentResponse.fail("p1", ErrorMessage(errorId: 85, errorText: "Response received too late"))
        for body in [drifted.json, Self.body(drifted)] {
            #expect(AnswerCheck.check(httpStatus: 200, isJSON: true, body: body, expected: CaseKind.timeout.expected, pspTransactionId: "p1").problem
                == #"expected 200 FAIL 85, got errorText "Response received too late""#)
        }
    }

    /// The hand-written expected body is the worker's own, byte for byte (so the fast path is taken).
    @Test(arguments: [CaseKind.approved, .timeout, .code("51"), .code("03"), .wrongToken, .confirmedNo, .luhn])
    func theExpectedBodyIsWhatTheWorkerWrites(kind: CaseKind) throws {
        let expected = kind.expected
        let error = try expected.errorId.map { ErrorMessage(errorId: $0, errorText: try #require(expected.errorText)) }
        let written = MakePaymentResponse(errorMessage: error, paymentInfo: PaymentInfo(pspTransactionId: "run-7", status: expected.status)).json
        #expect(AnswerCheck.canonicalBody(expected, pspTransactionId: "run-7") == written)
    }

    /// JSONDecoder skips keys it does not know: an answer with a field of its own (a card number,
    /// say) must still be a mismatch, and the report must not show the number in clear.
    @Test func anAnswerWithFieldsTheAPIDoesNotHaveIsAMismatch() {
        let leaking = #"{"paymentInfo":{"pspTransactionId":"p1","status":"OK","cardNumber":"4925000000000004"},"debug":"x"}"#
        let checked = AnswerCheck.check(httpStatus: 200, isJSON: true, body: Array(leaking.utf8), expected: .ok, pspTransactionId: "p1")
        #expect(checked.outcome == "200 OK")
        #expect(checked.problem == "expected 200 OK, got 2 field(s) the API does not have")
        let echoed = MakePaymentResponse.fail("p1", ErrorMessage(errorId: 82, errorText: "card 4925000000000004 refused"))
        let problem = AnswerCheck.check(httpStatus: 200, isJSON: true, body: Self.body(echoed), expected: .fail(.refusedByIssuer),
                                        pspTransactionId: "p1").problem
        #expect(problem == #"expected 200 FAIL 82, got errorText "card 492500******0004 refused""#)
        // The project's rule for PANs: under 13 digits nothing is shown (a Luhn digit would give the rest away).
        #expect(AnswerCheck.maskingDigitRuns("a 123456789012 b 12345678901 c 1234567890123") == "a ************ b 12345678901 c 123456***0123")
    }

    /// `"errorMessage":null` is not the API's (an error is an object, or absent): JSONDecoder reads
    /// it as no error, and such an OK passed.
    @Test func anErrorMessageOfNullIsAMismatch() {
        let body = #"{"errorMessage":null,"paymentInfo":{"pspTransactionId":"p1","status":"OK"}}"#
        let checked = AnswerCheck.check(httpStatus: 200, isJSON: true, body: Array(body.utf8), expected: .ok, pspTransactionId: "p1")
        #expect(checked.problem == "expected 200 OK, got errorMessage or paymentInfo not an object")
    }

    /// The right body under another media type is a mismatch, on the fast path too.
    @Test func anAnswerThatIsNotSaidToBeJSONIsAMismatch() {
        let checked = AnswerCheck.check(httpStatus: 200, isJSON: false, body: MakePaymentResponse.ok("p1").json, expected: .ok,
                                        pspTransactionId: "p1")
        #expect(checked.problem == "expected 200 OK, got Content-Type not application/json")
    }

    @Test func bodyThatIsNotAnAnswerIsAMismatch() {
        let checked = AnswerCheck.check(httpStatus: 503, isJSON: true, body: Array("busy".utf8), expected: .ok, pspTransactionId: "p1")
        #expect(checked.outcome == "503 (no makePayment body)")
        #expect(checked.problem != nil)
    }
}
