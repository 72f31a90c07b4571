import Acquiring
import MakePayment

/// What one load-test payment exercises, and so what its makePayment must be answered.
public enum CaseKind: Hashable, Sendable, CustomStringConvertible {
    /// A valid card the simulator approves.
    case approved
    /// A simulator test card that asks for this two-digit ISO 8583 response code.
    case code(String)
    /// The simulator's never-answering card (code 99): 85 after the worker's acquirer timeout.
    case timeout
    /// A cryptogram with one byte flipped: it cannot decrypt.
    case badCryptogram
    /// The right payment with a makePaymentToken that is not its own.
    case wrongToken
    /// An approved card sent twice in a row: the repeat must get the identical body.
    case duplicate
    /// An approved card sent twice at once, on two connections (a retry while the first call is
    /// still in flight): both must get the identical body, and the card is authorized once.
    case duplicateInFlight
    /// `confirmed` NO, TIMEOUT and CANCEL: never decrypted, answered 72.
    case confirmedNo, confirmedTimeout, confirmedCancel
    /// A PAN whose Luhn check digit is wrong.
    case luhn
    /// A card that expired in January 2020.
    case expired

    /// The kind named on the command line: `approved`, `timeout`, `bad-cryptogram`, `wrong-token`,
    /// `duplicate`, `duplicate-in-flight`, `no`, `timeout-status`, `cancel`, `luhn`, `expired`, or a two-digit code. The
    /// API's own `NO`, `TIMEOUT` and `CANCEL` name the `confirmed` values too (lower-case `timeout`
    /// is the acquirer's timeout card).
    public init?(name: String) {
        switch name {
        case "NO": self = .confirmedNo
        case "TIMEOUT": self = .confirmedTimeout
        case "CANCEL": self = .confirmedCancel
        case "approved": self = .approved
        case "timeout", "99": self = .timeout
        case "bad-cryptogram": self = .badCryptogram
        case "wrong-token": self = .wrongToken
        case "duplicate": self = .duplicate
        case "duplicate-in-flight": self = .duplicateInFlight
        case "no": self = .confirmedNo
        case "timeout-status": self = .confirmedTimeout
        case "cancel": self = .confirmedCancel
        case "luhn": self = .luhn
        case "expired": self = .expired
        default:
            guard name.utf8.count == 2, name.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }) else { return nil }
            self = .code(name)
        }
    }

    /// Whether the case reaches the acquirer. Against an acquirer that drops replies (or resets
    /// connections), such a case may rightly be answered 85 (unknown outcome, reversed).
    public var reachesAcquirer: Bool {
        switch self {
        case .approved, .code, .timeout, .duplicate, .duplicateInFlight: true
        default: false
        }
    }

    /// The answer comes before any acquirer is asked (72, 92, 401, 87, 86): the read-back after
    /// the run checks that none was.
    public var neverAuthorized: Bool { !reachesAcquirer }

    /// An authorization that may stand after the answer the payment gets, so the worker must
    /// reverse it: no answer at all (the timeout card), a partial approval (10), the issuer's
    /// late answer (68), the issuer or switch inoperative (91) and a system malfunction (96).
    /// Against the simulator only (it counts reversals); refusals that hold no money are not read back.
    public var mustBeReversed: Bool {
        switch self {
        case .timeout: true
        case .code(let code): ["10", "68", "91", "96"].contains(code)
        default: false
        }
    }

    /// Sent twice (one after the other, or both at once): two answers, one authorization.
    public var sendsTwice: Bool { self == .duplicate || self == .duplicateInFlight }

    public var name: String {
        switch self {
        case .approved: "approved"
        case .code(let code): code
        case .timeout: "timeout"
        case .badCryptogram: "bad-cryptogram"
        case .wrongToken: "wrong-token"
        case .duplicate: "duplicate"
        case .duplicateInFlight: "duplicate-in-flight"
        case .confirmedNo: "no"
        case .confirmedTimeout: "timeout-status"
        case .confirmedCancel: "cancel"
        case .luhn: "luhn"
        case .expired: "expired"
        }
    }

    public var description: String { name }

    /// What `confirmed` says in the request.
    public var confirmed: Confirmed {
        switch self {
        case .confirmedNo: .no
        case .confirmedTimeout: .timeout
        case .confirmedCancel: .cancel
        default: .yes
        }
    }

    /// Approved by the simulator (it is not one of its coded test cards) and Luhn-valid.
    public static let approvedPAN = "4925000000000004"

    /// The card data plaintext ("PAN,YYMM,SessionId") this kind encrypts.
    public func cardPlaintext(session: String) -> String {
        switch self {
        case .code(let code): SimulatorAcquirer.testCard(code: code) + ",3012," + session
        case .timeout: SimulatorAcquirer.testCard(code: "99") + ",3012," + session
        case .luhn:
            // The approved PAN with its check digit moved by one: fails Luhn, nothing else.
            String(Self.approvedPAN.dropLast()) + String((Int(String(Self.approvedPAN.last!))! + 1) % 10) + ",3012," + session
        case .expired: Self.approvedPAN + ",2001," + session
        default: Self.approvedPAN + ",3012," + session
        }
    }

    /// The answer this case must get. Written from the API's catalogue and the simulator's
    /// contract, not from the worker's own table, so that the check is independent of the code it checks.
    public var expected: ExpectedAnswer {
        switch self {
        case .approved, .duplicate, .duplicateInFlight: .ok
        case .code(let code): Self.codeAnswers[code].map(ExpectedAnswer.fail) ?? .ok
        case .timeout: .fail(.responseReceivedTooLate)
        case .badCryptogram: .fail(.unableToDecrypt)
        case .wrongToken: ExpectedAnswer(httpStatus: 401, status: .fail, errorId: 71, errorText: ExpectedAnswer.catalogue[71])
        case .confirmedNo, .confirmedTimeout, .confirmedCancel: .fail(.differentTexts)
        case .luhn: .fail(.invalidCardNumber)
        case .expired: .fail(.expiredCard)
        }
    }

    /// ISO 8583 response codes and the API error each must become; a code absent here is approved
    /// when it is 00, 08 or 11 and refused (82) otherwise (a code nobody mapped must never approve).
    static let codeAnswers: [String: APIError] = {
        var table: [String: APIError] = [:]
        for code in 0...98 {
            let text = code < 10 ? "0\(code)" : "\(code)"
            table[text] = .refusedByIssuer
        }
        for code in ["00", "08", "11"] { table.removeValue(forKey: code) }
        for code in ["15", "31", "92"] { table[code] = .noSuchIssuer }
        for code in ["34", "59", "63"] { table[code] = .suspectedFraud }
        for code in ["61", "65"] { table[code] = .exceedsWithdrawalAmountLimit }
        for code in ["68", "91", "99"] { table[code] = .responseReceivedTooLate }
        for code in ["33", "54"] { table[code] = .expiredCard }
        for code in ["14", "56"] { table[code] = .invalidCardNumber }
        table["58"] = .merchantDoesNotAllowCreditCards
        table["51"] = .notSufficientFunds
        for code in ["03", "06", "20", "22", "30", "94", "96"] { table[code] = .internalError }
        return table
    }()
}

/// What a makePayment answer must be: HTTP status, payment status, errorId and errorText.
public struct ExpectedAnswer: Sendable, Equatable, Codable, CustomStringConvertible {
    public var httpStatus: Int
    public var status: PaymentStatus
    public var errorId: Int?
    public var errorText: String?

    public init(httpStatus: Int, status: PaymentStatus, errorId: Int? = nil, errorText: String? = nil) {
        self.httpStatus = httpStatus
        self.status = status
        self.errorId = errorId
        self.errorText = errorText
    }

    public static let ok = ExpectedAnswer(httpStatus: 200, status: .ok)
    public static func fail(_ error: APIError) -> ExpectedAnswer {
        ExpectedAnswer(httpStatus: 200, status: .fail, errorId: error.rawValue, errorText: catalogue[error.rawValue])
    }

    /// The API's error texts, copied here from its catalogue rather than taken from the worker's
    /// `APIError`: a wrong text in the worker is then a mismatch, not a change on both sides.
    public static let catalogue: [Int: String] = [
        71: "Invalid request", 72: "Different texts", 81: "No such issuer", 82: "Refused by Issuer",
        83: "Suspected fraud", 84: "Exceeds withdrawal amount limit", 85: "Response received to late",
        86: "Expired card", 87: "Invalid card number (no such number)", 88: "Merchant does not allow credit cards",
        89: "Not sufficient funds", 91: "Internal error", 92: "Unable to decrypt",
    ]

    /// The text is shown only where it is not the catalogue's.
    public var description: String {
        let shownText = errorText.flatMap { text in errorId.flatMap { Self.catalogue[$0] } == text ? nil : text }
        return "\(httpStatus) \(status.rawValue)" + (errorId.map { " \($0)" } ?? "") + (shownText.map { " \"\($0)\"" } ?? "")
    }
}
