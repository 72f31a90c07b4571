/// The error catalogue of the Vipps PSP API v2: every errorId and its errorText, exactly as the API
/// lists them. The rest of the code names these cases, never numbers or strings.
public enum APIError: Int, Error, Sendable, CaseIterable, Codable {
    case invalidRequest = 71
    case differentTexts = 72
    case noSuchIssuer = 81
    case refusedByIssuer = 82
    case suspectedFraud = 83
    case exceedsWithdrawalAmountLimit = 84
    case responseReceivedTooLate = 85
    case expiredCard = 86
    case invalidCardNumber = 87
    case merchantDoesNotAllowCreditCards = 88
    case notSufficientFunds = 89
    case internalError = 91
    case unableToDecrypt = 92

    /// The API's errorText, to the letter (including its "to late").
    public var text: String {
        switch self {
        case .invalidRequest: "Invalid request"
        case .differentTexts: "Different texts"
        case .noSuchIssuer: "No such issuer"
        case .refusedByIssuer: "Refused by Issuer"
        case .suspectedFraud: "Suspected fraud"
        case .exceedsWithdrawalAmountLimit: "Exceeds withdrawal amount limit"
        case .responseReceivedTooLate: "Response received to late"
        case .expiredCard: "Expired card"
        case .invalidCardNumber: "Invalid card number (no such number)"
        case .merchantDoesNotAllowCreditCards: "Merchant does not allow credit cards"
        case .notSufficientFunds: "Not sufficient funds"
        case .internalError: "Internal error"
        case .unableToDecrypt: "Unable to decrypt"
        }
    }

    /// The message for the response body, with the catalogue's text.
    public var message: ErrorMessage { ErrorMessage(errorId: rawValue, errorText: text) }

    /// The message with a text of its own: only for 72, and only where an operator's response-code
    /// table asks for one (`ResponseCodeTable`); the worker's own answers carry the catalogue's texts.
    public func message(text: String) -> ErrorMessage { ErrorMessage(errorId: rawValue, errorText: text) }
}
