import Foundation
import MakePayment

/// One makePayment answer, read back: its outcome label for the report and, when it is not what
/// the case must get, what is wrong with it.
public struct CheckedAnswer: Sendable, Equatable {
    /// "200 OK", "200 FAIL 89", "401 FAIL 71", "502 (no makePayment body)": the outcome mix is counted by this.
    public var outcome: String
    /// Nil when the answer is the expected one.
    public var problem: String?

    public init(outcome: String, problem: String?) {
        self.outcome = outcome
        self.problem = problem
    }
}

public enum AnswerCheck {
    /// Checks HTTP status, that the body is JSON with the API's fields and no others, and
    /// pspTransactionId, status, errorId and (when expected) errorText. A problem names no value
    /// longer than a PAN's shortest without masking it: an answer that echoes card data must not
    /// put it in the report.
    public static func check(httpStatus: Int, isJSON: Bool, body: [UInt8], expected: ExpectedAnswer, pspTransactionId: String,
                             decoder: JSONDecoder = JSONDecoder()) -> CheckedAnswer {
        // Fast path: byte for byte the body the API prescribes for this case (the worker writes
        // exactly that). Anything else is decoded and compared field by field below.
        if httpStatus == expected.httpStatus, isJSON, body == canonicalBody(expected, pspTransactionId: pspTransactionId) {
            return CheckedAnswer(outcome: "\(httpStatus) \(expected.status.rawValue)" + (expected.errorId.map { " \($0)" } ?? ""), problem: nil)
        }
        guard let response = try? decoder.decode(MakePaymentResponse.self, from: Data(body)) else {
            let outcome = "\(httpStatus) (no makePayment body)"
            return CheckedAnswer(outcome: outcome, problem: "expected \(expected), got \(outcome)")
        }
        let error = response.errorMessage
        let outcome = "\(httpStatus) \(response.paymentInfo.status.rawValue)" + (error.map { " \($0.errorId)" } ?? "")
        var problems: [String] = []
        if httpStatus != expected.httpStatus { problems.append("HTTP \(httpStatus)") }
        if !isJSON { problems.append("Content-Type not application/json") }
        let shape = unexpectedMembers(body)
        if shape.extra > 0 { problems.append("\(shape.extra) field(s) the API does not have") }
        if shape.notObjects > 0 { problems.append("errorMessage or paymentInfo not an object") }
        if response.paymentInfo.pspTransactionId != pspTransactionId {
            problems.append("pspTransactionId \(response.paymentInfo.pspTransactionId)")
        }
        if response.paymentInfo.status != expected.status { problems.append("status \(response.paymentInfo.status.rawValue)") }
        if error?.errorId != expected.errorId { problems.append("errorId \(error.map { String($0.errorId) } ?? "none")") }
        // The text of a wrong id goes without saying; with the right id, a wrong text is a mismatch.
        if error?.errorId == expected.errorId, let text = expected.errorText, error?.errorText != text {
            problems.append("errorText \"\(error?.errorText ?? "")\"")
        }
        guard !problems.isEmpty else { return CheckedAnswer(outcome: outcome, problem: nil) }
        return CheckedAnswer(outcome: outcome, problem: maskingDigitRuns("expected \(expected), got " + problems.joined(separator: ", ")))
    }

    /// How many members of the answer are not the API's (`extra`): at the top `errorMessage` and
    /// `paymentInfo` only, in them `errorId`/`errorText` and `pspTransactionId`/`status`
    /// (JSONDecoder skips unknown keys; an answer with a card number added must not pass); and how
    /// many of `errorMessage` and `paymentInfo` are there but not objects (`notObjects`:
    /// `"errorMessage":null` decodes as no error, and must not pass for an answer the API has).
    static func unexpectedMembers(_ body: [UInt8]) -> (extra: Int, notObjects: Int) {
        guard let top = (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any] else { return (0, 0) }
        let allowed: [String: Set<String>] = ["errorMessage": ["errorId", "errorText"], "paymentInfo": ["pspTransactionId", "status"]]
        var extra = 0, notObjects = 0
        for (key, value) in top {
            guard let fields = allowed[key] else { extra += 1; continue }
            guard let member = value as? [String: Any] else { notObjects += 1; continue }
            extra += member.keys.filter { !fields.contains($0) }.count
        }
        return (extra, notObjects)
    }

    /// `text` with every run of 12 or more digits masked by the project's rule for PANs
    /// (`ISOMessage.maskPAN`): from 13 digits first 6 and last 4 shown, the rest `*`; shorter, all `*`.
    static func maskingDigitRuns(_ text: String) -> String {
        var out: [UInt8] = [], run: [UInt8] = []
        func flush() {
            if run.count >= 13 {
                out += run.prefix(6) + Array(repeating: UInt8(ascii: "*"), count: run.count - 10) + run.suffix(4)
            } else if run.count == 12 {
                out += Array(repeating: UInt8(ascii: "*"), count: 12)
            } else {
                out += run
            }
            run.removeAll()
        }
        for byte in text.utf8 {
            if byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") { run.append(byte) } else { flush(); out.append(byte) }
        }
        flush()
        return String(decoding: out, as: UTF8.self)
    }

    /// The answer's body as the API prescribes it, written here by hand (not by the worker's own
    /// serializer), in the compact form the worker writes; nil when the case does not pin it down
    /// or the strings would need escaping (the slow path then compares field by field).
    static func canonicalBody(_ expected: ExpectedAnswer, pspTransactionId: String) -> [UInt8]? {
        func plain(_ text: String) -> Bool { text.utf8.allSatisfy { $0 >= 0x20 && $0 < 0x7F && $0 != UInt8(ascii: "\"") && $0 != UInt8(ascii: "\\") } }
        guard plain(pspTransactionId) else { return nil }
        var json = "{"
        if let id = expected.errorId {
            guard let text = expected.errorText, plain(text) else { return nil }
            json += #""errorMessage":{"errorId":\#(id),"errorText":"\#(text)"},"#
        }
        json += #""paymentInfo":{"pspTransactionId":"\#(pspTransactionId)","status":"\#(expected.status.rawValue)"}}"#
        return Array(json.utf8)
    }
}
