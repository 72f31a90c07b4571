import MakePayment

/// What the pipeline does with an acquirer's response code.
public enum ResponseDecision: Sendable, Equatable {
    case approved
    /// Approved for part of the amount (ISO 8583 "10"): reverse it and refuse the payment.
    case partialApprovalReversed
    /// Refused: the API error to answer, with a text of its own where an operator's table gives 72 one.
    case refused(APIError, text: String? = nil)
    /// Refused, and reversed all the same, because the authorization may stand: a code nobody
    /// mapped (it may be an approval we do not honour, such as 16), or the issuer's late answer (68).
    /// Reversing a declined authorization costs one message (the host answers 25); leaving an
    /// approval open holds the customer's money for days.
    case refusedAndReversed(APIError, text: String? = nil)

    public var errorMessage: ErrorMessage? {
        switch self {
        case .approved: nil
        case .partialApprovalReversed: APIError.refusedByIssuer.message
        case .refused(let error, let text), .refusedAndReversed(let error, let text): text.map { error.message(text: $0) } ?? error.message
        }
    }

    /// Whether the attempt is reversed once the refusal is recorded.
    public var reverses: Bool {
        switch self {
        case .partialApprovalReversed, .refusedAndReversed: true
        case .approved, .refused: false
        }
    }
}

/// Maps acquirers' raw response codes onto the API's errors. ISO 8583 field 39 by default; a card
/// scheme or an acquirer can override single codes (`visa:05`, `iso8583:91`), in code or from a
/// JSON file of the form `{"05": 82, "visa:59": 83, "iso8583:03": {"errorId": 72, "text": "…"}}`.
public struct ResponseCodeTable: Sendable {
    private var entries: [String: ResponseDecision]

    public init(overrides: [String: ResponseDecision] = [:]) {
        entries = Self.iso8583Defaults
        for (key, decision) in overrides { entries[key] = decision }
    }

    /// The decision for `code`, most specific first: acquirer, then scheme, then the code alone.
    /// A code nobody mapped is a refusal (82), and reversed: a new code must never approve a
    /// payment, nor leave an approval it may stand for open.
    public func decision(for code: String, scheme: CardScheme? = nil, acquirer: String? = nil) -> ResponseDecision {
        if let acquirer, let d = entries[acquirer + ":" + code] { return d }
        if let scheme, let d = entries[scheme.rawValue + ":" + code] { return d }
        return entries[code] ?? .refusedAndReversed(.refusedByIssuer)
    }

    public mutating func override(_ key: String, with decision: ResponseDecision) { entries[key] = decision }

    /// ISO 8583:1987 field 39, as the worker maps it by default.
    public static let iso8583Defaults: [String: ResponseDecision] = {
        var t: [String: ResponseDecision] = [:]
        for c in ["00", "08", "11"] { t[c] = .approved }
        t["10"] = .partialApprovalReversed
        for c in ["15", "31", "92"] { t[c] = .refused(.noSuchIssuer) }
        // Pick-up, lost and stolen (04, 07, 41, 43) are refused like any refusal, so the user is not
        // told why; the raw code stays in our records.
        for c in ["01", "02", "05", "12", "46", "57", "62", "78", "93", "04", "07", "41", "43"] { t[c] = .refused(.refusedByIssuer) }
        for c in ["34", "59", "63"] { t[c] = .refused(.suspectedFraud) }
        for c in ["61", "65"] { t[c] = .refused(.exceedsWithdrawalAmountLimit) }
        // 68: the issuer answered the switch too late, and may have approved. 91: the issuer or
        // the switch inoperative, which a switch also answers when the issuer timed out: it may
        // have approved too. Both are reversed (a host that has no such original answers 25).
        t["68"] = .refusedAndReversed(.responseReceivedTooLate)
        t["91"] = .refusedAndReversed(.responseReceivedTooLate)
        for c in ["33", "54"] { t[c] = .refused(.expiredCard) }
        for c in ["14", "56"] { t[c] = .refused(.invalidCardNumber) }
        t["58"] = .refused(.merchantDoesNotAllowCreditCards)
        t["51"] = .refused(.notSufficientFunds)
        // 13, invalid amount: the issuer's refusal like any. 03, invalid merchant: our merchant
        // setup at the acquirer is wrong, which is ours to fix, not the card's (91, as for the
        // format and system errors below). 96, a system malfunction, may come after the request
        // was forwarded to the issuer: reversed; the others refuse the request as it came.
        t["13"] = .refused(.refusedByIssuer)
        for c in ["03", "06", "20", "22", "30", "94"] { t[c] = .refused(.internalError) }
        t["96"] = .refusedAndReversed(.internalError)
        return t
    }()
}
