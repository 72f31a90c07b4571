import Foundation
import MakePayment

public struct ResponseCodeTableError: Error, CustomStringConvertible {
    public let description: String
}

extension ResponseCodeTable {
    /// The default table with the overrides of a JSON document:
    /// `{"05": 82, "visa:59": 83, "iso8583:91": {"errorId": 72, "text": "Issuer offline"}, "42": "approved",
    /// "16": {"errorId": 82, "reverse": true}}` (refused, and reversed because the authorization may stand).
    /// An errorId outside the catalogue is refused with a clear message.
    public init(overridesJSON data: Data) throws {
        let object: Any
        do { object = try JSONSerialization.jsonObject(with: data) } catch {
            throw ResponseCodeTableError(description: "response code overrides are not valid JSON")
        }
        guard let entries = object as? [String: Any] else {
            throw ResponseCodeTableError(description: "response code overrides must be a JSON object of code to errorId")
        }
        var overrides: [String: ResponseDecision] = [:]
        for (key, value) in entries {
            func decision(_ id: Int, _ text: String?, reverse: Bool = false) throws -> ResponseDecision {
                guard let error = APIError(rawValue: id), (81...92).contains(id) || id == 72 else {
                    throw ResponseCodeTableError(description: "override \(key): \(id) is not an errorId an acquirer answer can map to (72, 81-92)")
                }
                // The API fixes every text but 72's: an 82 that says "Declined" is not the API's 82.
                if text != nil, error != .differentTexts {
                    throw ResponseCodeTableError(description: "override \(key): only errorId 72 carries a text of its own; \(id) answers the API's text")
                }
                return reverse ? .refusedAndReversed(error, text: text) : .refused(error, text: text)
            }
            switch value {
            case let id as Int: overrides[key] = try decision(id, nil)
            case let text as String where text == "approved": overrides[key] = .approved
            case let text as String where text == "partial": overrides[key] = .partialApprovalReversed
            case let object as [String: Any]:
                guard let id = object["errorId"] as? Int else {
                    throw ResponseCodeTableError(description: "override \(key): an object needs an integer errorId")
                }
                overrides[key] = try decision(id, object["text"] as? String, reverse: object["reverse"] as? Bool ?? false)
            default:
                throw ResponseCodeTableError(description: "override \(key): use an errorId, \"approved\", \"partial\" or {\"errorId\":…, \"text\":…}")
            }
        }
        self.init(overrides: overrides)
    }
}
