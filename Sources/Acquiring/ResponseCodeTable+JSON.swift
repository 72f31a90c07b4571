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
    ///
    /// `acquirer`, the adapter's `name`, is the one prefix besides the card schemes a key may have
    /// (`"visa:05"`, `"iso8583:91"`): any other could never match, and would leave the default in
    /// force with nothing said. Nil: any prefix.
    public init(overridesJSON data: Data, acquirer: String? = nil) throws {
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
            guard Self.isOverrideKey(key, acquirer: acquirer) else {
                let prefixes = (CardScheme.allCases.map(\.rawValue) + (acquirer.map { [$0] } ?? [])).joined(separator: ", ")
                throw ResponseCodeTableError(description: "override \(key): a key is a response code of 2 to 4 letters or digits, "
                    + "alone or after \"SCHEME:\" or \"ACQUIRER:\" (\(prefixes)), e.g. \"05\", \"visa:05\"")
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

    /// "05", or "visa:05" / "iso8583:91": a card scheme (as `CardScheme` spells it) or the
    /// acquirer's `name` before a response code of 2 to 4 letters or digits (ISO 8583:1987's field
    /// 39 has 2; an adapter of another version may have 3-digit action codes).
    static func isOverrideKey(_ key: String, acquirer: String?) -> Bool {
        guard let colon = key.lastIndex(of: ":") else { return isCode(key[...]) }
        let prefix = String(key[..<colon])
        guard isCode(key[key.index(after: colon)...]), !prefix.isEmpty else { return false }
        return CardScheme(rawValue: prefix) != nil || acquirer.map { prefix == $0 } ?? true
    }

    private static func isCode(_ code: Substring) -> Bool {
        (2...4).contains(code.utf8.count)
            && code.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x41 && $0 <= 0x5A) || ($0 >= 0x61 && $0 <= 0x7A) }
    }

    /// JSONSerialization gives `true` and `1` alike as NSNumber (and `1 as? Bool` succeeds): a
    /// JSON boolean is the one whose type is a C `char` ("c"), a number never is.
    private static func isJSONBoolean(_ value: Any) -> Bool {
        guard let number = value as? NSNumber else { return false }
        return String(cString: number.objCType) == "c"
    }

    private enum Standing { case refuses, mayStand, approves }

    /// What the decisions an override of `key` replaces leave of the authorization, at most. A
    /// code alone replaces its default (a code nobody mapped may be an approval); a scheme's,
    /// the code's own override or its default; an acquirer's, those and every scheme's for the
    /// code. Another override counts here only as an approval ("approved", "partial"): a refusal's
    /// own reverse flag is its author's say.
    private static func authorizationMayStand(replacedBy key: String, in entries: [String: Any]) -> Standing {
        let colon = key.lastIndex(of: ":")
        let code = colon.map { String(key[key.index(after: $0)...]) } ?? key
        let prefix = colon.map { String(key[..<$0]) }
        var replaced = [iso8583Defaults[code] ?? .refusedAndReversed(.refusedByIssuer)]
        var replacedKeys: [String] = []
        if prefix != nil { replacedKeys.append(code) }
        if let prefix, CardScheme(rawValue: prefix) == nil { replacedKeys += CardScheme.allCases.map { $0.rawValue + ":" + code } }
        for other in replacedKeys {
            if let text = entries[other] as? String { replaced.append(text == "partial" ? .partialApprovalReversed : .approved) }
        }
        if replaced.contains(where: { $0 == .approved || $0 == .partialApprovalReversed }) { return .approves }
        return replaced.contains(where: \.reverses) ? .mayStand : .refuses
    }
}
