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
    ///
    /// A refusal keeps the reversal of the decision it replaces unless it says `"reverse": false`:
    /// `{"68": 85}` changes what Vipps is told, not that 68 (the issuer may have approved) is
    /// undone, nor that a code nobody mapped is. An approval code refused without a reversal is
    /// refused with a message: its authorization would stand, holding the customer's money.
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
            // A key that can never match (`"Visa:05"`, `"5"`) would leave the default in force unseen.
            guard Self.isOverrideKey(key) else {
                throw ResponseCodeTableError(description: "override \(key): a key is a two-character code, after \"scheme:\" or \"acquirer:\" in lower case if any (\"05\", \"visa:05\", \"iso8583:91\")")
            }
            func decision(_ id: Int, _ text: String?, reverse: Bool? = nil) throws -> ResponseDecision {
                guard let error = APIError(rawValue: id), (81...92).contains(id) || id == 72 else {
                    throw ResponseCodeTableError(description: "override \(key): \(id) is not an errorId an acquirer answer can map to (72, 81-92)")
                }
                // The API fixes every text but 72's: an 82 that says "Declined" is not the API's 82.
                if text != nil, error != .differentTexts {
                    throw ResponseCodeTableError(description: "override \(key): only errorId 72 carries a text of its own; \(id) answers the API's text")
                }
                let mayStand = Self.authorizationMayStand(replacedBy: key, in: entries)
                if reverse == false, mayStand == .approves {
                    throw ResponseCodeTableError(description: "override \(key): a refusal of an approval code must reverse it (its authorization would stand); leave out \"reverse\": false")
                }
                return (reverse ?? (mayStand != .refuses)) ? .refusedAndReversed(error, text: text) : .refused(error, text: text)
            }
            switch value {
            case let id as Int: overrides[key] = try decision(id, nil)
            case let text as String where text == "approved": overrides[key] = .approved
            case let text as String where text == "partial": overrides[key] = .partialApprovalReversed
            case let object as [String: Any]:
                guard let id = object["errorId"] as? Int else {
                    throw ResponseCodeTableError(description: "override \(key): an object needs an integer errorId")
                }
                // A misspelt or mistyped field ("reverse": "true") is refused, not left out unseen.
                if let unknown = object.keys.first(where: { !["errorId", "text", "reverse"].contains($0) }) {
                    throw ResponseCodeTableError(description: "override \(key): unknown field \(unknown) (errorId, text, reverse)")
                }
                if object["text"] != nil, !(object["text"] is String) {
                    throw ResponseCodeTableError(description: "override \(key): text must be a string")
                }
                if let flag = object["reverse"], !Self.isJSONBoolean(flag) {
                    throw ResponseCodeTableError(description: "override \(key): reverse must be true or false")
                }
                overrides[key] = try decision(id, object["text"] as? String, reverse: object["reverse"] as? Bool)
            default:
                throw ResponseCodeTableError(description: "override \(key): use an errorId, \"approved\", \"partial\" or {\"errorId\":…, \"text\":…}")
            }
        }
        self.init(overrides: overrides)
    }

    /// "05", or "visa:05" / "iso8583:91": a scheme's or an acquirer's name (as `CardScheme` and
    /// `AcquirerAdapter.name` spell them, in lower case) before a two-character code.
    static func isOverrideKey(_ key: String) -> Bool {
        let parts = key.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
        let code = parts.last!
        let alphanumeric = { (c: UInt8) in (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) }
        guard code.utf8.count == 2, code.utf8.allSatisfy(alphanumeric) else { return false }
        guard parts.count == 2 else { return true }
        let name = parts[0]
        return !name.isEmpty && name.utf8.allSatisfy { ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2D || $0 == 0x5F }
    }

    /// JSONSerialization gives `true` and `1` alike as NSNumber (and `1 as? Bool` succeeds): a
    /// JSON boolean is the one whose type is a C `char` ("c"), a number never is.
    private static func isJSONBoolean(_ value: Any) -> Bool {
        guard let number = value as? NSNumber else { return false }
        return String(cString: number.objCType) == "c"
    }

    private enum Standing { case refuses, mayStand, approves }

    /// What the decisions an override of `key` replaces leave of the authorization: the code's
    /// default (a code nobody mapped may be an approval), and any other override of the same code
    /// (a scheme's or an acquirer's, or the code's own): the most the authorization may stand.
    private static func authorizationMayStand(replacedBy key: String, in entries: [String: Any]) -> Standing {
        let code = key.split(separator: ":", maxSplits: 1).last.map(String.init) ?? key
        var replaced = [iso8583Defaults[code] ?? .refusedAndReversed(.refusedByIssuer)]
        for (other, value) in entries where other != key && (other == code || other.hasSuffix(":" + code)) {
            // Only the plain forms: an object's own reverse flag is its author's say.
            if let text = value as? String { replaced.append(text == "partial" ? .partialApprovalReversed : .approved) }
        }
        if replaced.contains(where: { $0 == .approved || $0 == .partialApprovalReversed }) { return .approves }
        return replaced.contains(where: \.reverses) ? .mayStand : .refuses
    }
}
