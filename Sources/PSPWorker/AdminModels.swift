import Acquiring
import Foundation
import MakePayment
import Processing

/// `POST /payments`: the fields of Vipps's initiate request that the worker needs, checked one by
/// one so each problem gets the API's own code where one fits.
struct RegisterPaymentRequest {
    var pspTransactionId: String
    var merchantSerialNumber: String
    var merchantOrderId: String
    var amount: Int
    var currency: String
    var makePaymentToken: String
    var paymentText: String

    struct Problems: Error { var entries: [AdminProblem] }

    /// A JSON value as it came, so each field's type can be checked on its own.
    enum JSONValue: Decodable {
        case integer(Int), number(Double), string(String), bool(Bool), null, other
        init(from decoder: any Decoder) throws {
            let c = try decoder.singleValueContainer()
            if c.decodeNil() { self = .null }
            else if let v = try? c.decode(Int.self) { self = .integer(v) }
            else if let v = try? c.decode(Double.self) { self = .number(v) }
            else if let v = try? c.decode(String.self) { self = .string(v) }
            else if let v = try? c.decode(Bool.self) { self = .bool(v) }
            else { self = .other }
        }
    }

    /// The most an authorization can carry: ISO 8583 field 4 is 12 digits (about 10 billion NOK in øre).
    static let maxAmount = 999_999_999_999

    /// What a URL path segment carries as it is (RFC 3986 pchar, without percent-encoding):
    /// letters, digits, `- . _ ~`, `! $ & ' ( ) * + , ; =`, `:` and `@`.
    static func isIdByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"): true
        default: "-._~!$&'()*+,;=:@".utf8.contains(byte)
        }
    }

    /// The top level of a JSON object as sent: each key in order (a key given twice is listed
    /// twice) with its value's bytes, whitespace trimmed (`data` is an object already: JSONDecoder
    /// read it). The bytes show what JSONDecoder hides: `1e3` and `1000.00000000000001` both
    /// decode as the integer 1000.
    static func topLevelEntries(_ data: Data) -> [(key: String, value: ArraySlice<UInt8>)] {
        let bytes = [UInt8](data)
        var entries: [(key: String, value: ArraySlice<UInt8>)] = []
        var depth = 0, expectingKey = false, key: String?, valueStart: Int?, i = 0
        func endValue(at end: Int) {
            if let key, var start = valueStart {
                var end = end
                let blank: Set<UInt8> = [0x20, 0x09, 0x0A, 0x0D]
                while start < end, blank.contains(bytes[start]) { start += 1 }
                while end > start, blank.contains(bytes[end - 1]) { end -= 1 }
                entries.append((key, bytes[start..<end]))
            }
            (key, valueStart) = (nil, nil)
        }
        while i < bytes.count {
            switch bytes[i] {
            case UInt8(ascii: "\""):
                var end = i + 1
                while end < bytes.count, bytes[end] != UInt8(ascii: "\"") { end += bytes[end] == UInt8(ascii: "\\") ? 2 : 1 }
                if depth == 1, expectingKey, end < bytes.count, let name = try? JSONDecoder().decode(String.self, from: Data(bytes[i...end])) {
                    key = name
                    expectingKey = false
                }
                i = end
            case UInt8(ascii: ":"): if depth == 1, key != nil, valueStart == nil { valueStart = i + 1 }
            case UInt8(ascii: "{"):
                depth += 1
                if depth == 1 { expectingKey = true }
            case UInt8(ascii: "["): depth += 1
            case UInt8(ascii: "}"), UInt8(ascii: "]"):
                if depth == 1 { endValue(at: i) }
                depth -= 1
            case UInt8(ascii: ","):
                if depth == 1 {
                    endValue(at: i)
                    expectingKey = true
                }
            default: break
            }
            i += 1
        }
        return entries
    }

    /// A whole number as written (an amount in øre): digits only, no fraction, no exponent. Money is never read
    /// through a Double: `1000.00000000000001` is not 1000 øre, and neither is `1e3` to every reader.
    enum IntegerText: Equatable {
        /// `underOne`: negative, or a fraction under 1 (`0.5`, `1e-3`), however written.
        case whole(Int), tooLarge, underOne, notWhole
        init?(_ text: ArraySlice<UInt8>) {
            var digits = text
            let negative = digits.first == UInt8(ascii: "-")
            if negative { digits = digits.dropFirst() }
            guard let first = digits.first, first >= UInt8(ascii: "0"), first <= UInt8(ascii: "9") else { return nil }
            guard digits.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }) else {
                // Read as a Double only to say which refusal: never to take its value.
                self = negative || (Double(String(decoding: text, as: UTF8.self)) ?? 1) < 1 ? .underOne : .notWhole
                return
            }
            if negative { self = .underOne; return }
            self = Int(String(decoding: digits, as: UTF8.self)).map(IntegerText.whole) ?? .tooLarge
        }
    }

    /// Whether every number in the JSON text is written as RFC 8259 §6 has it
    /// (`-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`). JSONDecoder only finds where a
    /// number ends, and takes `0010` for 10 or `1-2-3` for a value of no type; another reader
    /// refuses them, or reads `010` as octal 8: an amount two systems read differently.
    static func numbersAreWellFormed(_ data: Data) -> Bool {
        let bytes = [UInt8](data)
        var i = 0
        func isDigit(_ j: Int) -> Bool { j < bytes.count && bytes[j] >= UInt8(ascii: "0") && bytes[j] <= UInt8(ascii: "9") }
        func digits(from j: Int) -> Int { var k = j; while isDigit(k) { k += 1 }; return k }
        while i < bytes.count {
            let byte = bytes[i]
            if byte == UInt8(ascii: "\"") {  // a string: skipped, escapes and all
                i += 1
                while i < bytes.count, bytes[i] != UInt8(ascii: "\"") { i += bytes[i] == UInt8(ascii: "\\") ? 2 : 1 }
                i += 1
                continue
            }
            guard byte == UInt8(ascii: "-") || isDigit(i) else { i += 1; continue }
            // A number: its grammar, then the token must end (a structural byte or whitespace).
            var j = byte == UInt8(ascii: "-") ? i + 1 : i
            guard isDigit(j) else { return false }
            j = bytes[j] == UInt8(ascii: "0") ? j + 1 : digits(from: j)
            if j < bytes.count, bytes[j] == UInt8(ascii: ".") {
                guard isDigit(j + 1) else { return false }
                j = digits(from: j + 1)
            }
            if j < bytes.count, bytes[j] | 0x20 == UInt8(ascii: "e") {
                j += 1
                if j < bytes.count, bytes[j] == UInt8(ascii: "+") || bytes[j] == UInt8(ascii: "-") { j += 1 }
                guard isDigit(j) else { return false }
                j = digits(from: j)
            }
            if j < bytes.count, !",]} \t\r\n".utf8.contains(bytes[j]) { return false }
            i = j
        }
        return true
    }

    static func isUsableToken(_ token: String) -> Bool {
        let bytes = Array(token.utf8)
        guard bytes.count >= 8, let first = bytes.first, let last = bytes.last, first != 0x20, last != 0x20 else { return false }
        return bytes.allSatisfy { $0 >= 0x20 && $0 != 0x7F }
    }

    static func parse(_ data: Data) -> Result<RegisterPaymentRequest, Problems> {
        // UTF-8 only (RFC 8259 §8.1): JSONDecoder would also read UTF-16 and UTF-32, which the key
        // check below, on the bytes as sent, cannot (a NUL is in every one of those with ASCII keys).
        guard !data.contains(0), String(data: data, encoding: .utf8) != nil, numbersAreWellFormed(data),
              let object = try? JSONDecoder().decode([String: JSONValue].self, from: data) else {
            return .failure(Problems(entries: [(nil, .invalidRequest, "Invalid request")]))
        }
        var problems: [AdminProblem] = []
        // JSONDecoder keeps one value of a key given twice, and another reader may keep the other:
        // an amount or token that two systems read differently is refused.
        let entries = topLevelEntries(data)
        /// A top-level value's bytes as sent.
        func written(_ key: String) -> ArraySlice<UInt8>? { entries.first { $0.key == key }?.value }
        var seen = Set<String>()
        for key in entries.map(\.key) where !seen.insert(key).inserted {
            let named = ["pspTransactionId", "merchantSerialNumber", "merchantOrderId", "amount", "currency", "makePaymentToken",
                         "paymentText"].contains(key)
            problems.append((named ? key : nil, .invalidRequest, "Invalid request: " + (named ? key : "a field") + " is given more than once"))
        }
        func string(_ field: String, max: Int, optional: Bool = false) -> String {
            switch object[field] {
            case .string(let value) where (optional || !value.isEmpty) && value.utf8.count <= max: return value
            // Some integrations send merchantSerialNumber as a number: accept it when written as digits.
            case .integer where field == "merchantSerialNumber":
                if case .whole(let number)? = written(field).flatMap(IntegerText.init), number > 0 {
                    return String(number)
                }
                problems.append((field, .invalidRequest, "Invalid request"))
                return ""
            case nil where optional, .null where optional: return ""
            case .string(let value) where value.utf8.count > max:
                problems.append((field, .invalidRequest, "Invalid request: \(field) is at most \(max) bytes"))
                return ""
            default:
                problems.append((field, .invalidRequest, "Invalid request"))
                return ""
            }
        }
        let id = string("pspTransactionId", max: MakePaymentPipeline.maxIdBytes)
        let msn = string("merchantSerialNumber", max: MakePaymentPipeline.maxMerchantSerialNumberBytes)
        let orderId = string("merchantOrderId", max: 128)
        let token = string("makePaymentToken", max: 1024)
        let text = string("paymentText", max: 1024, optional: true)
        // Ids travel in URL paths (`/payments/{id}`, percent-decoded there) and in log lines; `.`
        // and `..` are path steps that clients and proxies rewrite before they reach us.
        if !id.isEmpty, !id.utf8.allSatisfy(Self.isIdByte) || id == "." || id == ".." {
            problems.append(("pspTransactionId", .invalidRequest, "Invalid request: pspTransactionId is letters, digits and - . _ ~ ! $ & ' ( ) * + , ; = : @ (not . or .. alone)"))
        }
        // ISO 8583 field 42 carries it: up to 15 characters; Vipps's are digits. No leading zero
        // (nor 0 itself), as when given as a number: "0123" would never match the 123 Vipps sends.
        if !msn.isEmpty, !(msn.utf8.count <= 15 && msn.utf8.first != UInt8(ascii: "0")
                           && msn.utf8.allSatisfy { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }) {
            problems.append(("merchantSerialNumber", .invalidRequest, "Invalid request: merchantSerialNumber is 1 to 15 digits, the first not 0"))
        }
        // A header value cannot carry control characters or keep spaces at its ends: such a token
        // could never match. Under 8 characters it is too easy to guess.
        if !token.isEmpty, !Self.isUsableToken(token) {
            problems.append(("makePaymentToken", .invalidRequest, "Invalid request: makePaymentToken is 8 to 1024 bytes, no control characters, no spaces at either end"))
        }
        var amount = 0
        let lessThanOne: AdminProblem = ("amount", .amountLessThanOne, "Amount must be at least 1 øre")
        switch written("amount").flatMap(IntegerText.init) {
        case .whole(let value) where value < 1: problems.append(lessThanOne)
        case .whole(let value) where value <= Self.maxAmount: amount = value
        case .whole, .tooLarge: problems.append(("amount", .invalidRequest, "Invalid request: amount is at most \(Self.maxAmount) øre"))
        case .underOne: problems.append(lessThanOne)
        case .notWhole: problems.append(("amount", .invalidRequest, "Invalid request: amount is a whole number of øre, written without a fraction or exponent"))
        case nil: problems.append(("amount", .invalidRequest, "Invalid request"))
        }
        if case .string("NOK") = object["currency"] {} else {
            problems.append(("currency", .currencyInvalid, "Currency must be NOK"))
        }
        guard problems.isEmpty else { return .failure(Problems(entries: problems)) }
        return .success(RegisterPaymentRequest(pspTransactionId: id, merchantSerialNumber: msn, merchantOrderId: orderId,
                                               amount: amount, currency: "NOK", makePaymentToken: token, paymentText: text))
    }
}

/// `GET /payments/{id}`: what an operator may see. Never the clear PAN or the token.
struct PaymentView: Encodable {
    struct Reversal: Encodable {
        var reversalId: String
        var attemptId: String
        var state: String
        var tries: Int
        var reason: String
        var createdAt: String
    }
    var pspTransactionId: String
    var merchantSerialNumber: String
    var merchantOrderId: String
    var amount: Int
    var currency: String
    var paymentText: String
    var state: String
    var status: String?
    var errorId: Int?
    var errorText: String?
    var maskedPan: String?
    var acquirerResponseCode: String?
    var authorizationCode: String?
    var acquirerReference: String?
    var attemptId: String?
    var authorizationsSent: Int
    /// What the acquirer itself counted, when the adapter counts (the simulator does).
    var acquirerAuthorizations: Int?
    var acquirerReversals: Int?
    var reversals: [Reversal]
    var createdAt: String
    var updatedAt: String
    var completedAt: String?

    init(_ r: PaymentRecord, reversals: [ReversalRecord], counts: (any AuthorizationCounting)?) {
        let id = r.registration.pspTransactionId
        pspTransactionId = id
        merchantSerialNumber = r.registration.merchantSerialNumber
        merchantOrderId = r.registration.merchantOrderId
        amount = r.registration.amount
        currency = r.registration.currency
        paymentText = r.registration.paymentText
        state = r.state.rawValue
        status = r.outcome?.status.rawValue
        errorId = r.outcome?.error?.errorId
        errorText = r.outcome?.error?.errorText
        maskedPan = (r.outcome?.maskedPAN ?? r.attempt?.maskedPAN)?.value
        acquirerResponseCode = r.outcome?.acquirerResponseCode
        authorizationCode = r.outcome?.authorizationCode
        acquirerReference = r.outcome?.acquirerReference
        attemptId = r.attempt?.attemptId
        authorizationsSent = r.authorizationsSent
        acquirerAuthorizations = counts?.authorizationCount(pspTransactionId: id)
        acquirerReversals = counts?.reversalCount(pspTransactionId: id)
        self.reversals = reversals.map {
            Reversal(reversalId: $0.request.reversalId, attemptId: $0.request.attemptId, state: $0.state.rawValue,
                     tries: $0.tries, reason: $0.reason, createdAt: Self.iso8601($0.createdAt))
        }
        createdAt = Self.iso8601(r.createdAt)
        updatedAt = Self.iso8601(r.updatedAt)
        completedAt = r.completedAt.map(Self.iso8601)
    }

    static func iso8601(_ milliseconds: Int64) -> String {
        Date(timeIntervalSince1970: Double(milliseconds) / 1000).ISO8601Format(.iso8601.time(includingFractionalSeconds: true).year().month().day().dateSeparator(.dash).timeSeparator(.colon).timeZone(separator: .omitted))
    }
}
