/// `confirmed` in a makePayment request: whether the user approved the payment in the app.
public enum Confirmed: String, Sendable, Codable, CaseIterable {
    case yes = "YES"
    case no = "NO"
    case timeout = "TIMEOUT"
    case cancel = "CANCEL"
}

/// The body Vipps POSTs to the PSP's makePaymentUrl.
public struct MakePaymentRequest: Sendable, Codable, Equatable {
    public var pspTransactionId: String
    public var merchantSerialNumber: String
    /// Base64 of the RSA-OAEP cryptogram. Not secret without the private key, but never logged.
    public var cardData: String
    public var confirmed: Confirmed

    public init(pspTransactionId: String, merchantSerialNumber: String, cardData: String, confirmed: Confirmed) {
        self.pspTransactionId = pspTransactionId
        self.merchantSerialNumber = merchantSerialNumber
        self.cardData = cardData
        self.confirmed = confirmed
    }

    private enum CodingKeys: String, CodingKey { case pspTransactionId, merchantSerialNumber, cardData, confirmed }

    /// As the hand-written parser reads it: `cardData` may be missing or null (read as empty)
    /// unless `confirmed` is YES.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        pspTransactionId = try container.decode(String.self, forKey: .pspTransactionId)
        merchantSerialNumber = try container.decode(String.self, forKey: .merchantSerialNumber)
        confirmed = try container.decode(Confirmed.self, forKey: .confirmed)
        if confirmed == .yes {
            cardData = try container.decode(String.self, forKey: .cardData)
        } else {
            cardData = try container.decodeIfPresent(String.self, forKey: .cardData) ?? ""
        }
    }
}

public struct ErrorMessage: Sendable, Codable, Equatable {
    public var errorId: Int
    public var errorText: String
    public init(errorId: Int, errorText: String) {
        self.errorId = errorId
        self.errorText = errorText
    }
}

public enum PaymentStatus: String, Sendable, Codable {
    case ok = "OK"
    case fail = "FAIL"
}

public struct PaymentInfo: Sendable, Codable, Equatable {
    public var pspTransactionId: String
    public var status: PaymentStatus
    public init(pspTransactionId: String, status: PaymentStatus) {
        self.pspTransactionId = pspTransactionId
        self.status = status
    }
}

/// The PSP's answer to makePayment.
public struct MakePaymentResponse: Sendable, Codable, Equatable {
    public var errorMessage: ErrorMessage?
    public var paymentInfo: PaymentInfo

    public init(errorMessage: ErrorMessage?, paymentInfo: PaymentInfo) {
        self.errorMessage = errorMessage
        self.paymentInfo = paymentInfo
    }

    public static func ok(_ pspTransactionId: String) -> MakePaymentResponse {
        MakePaymentResponse(errorMessage: nil, paymentInfo: PaymentInfo(pspTransactionId: pspTransactionId, status: .ok))
    }

    public static func fail(_ pspTransactionId: String, _ error: ErrorMessage) -> MakePaymentResponse {
        MakePaymentResponse(errorMessage: error, paymentInfo: PaymentInfo(pspTransactionId: pspTransactionId, status: .fail))
    }

    public static func fail(_ pspTransactionId: String, _ error: APIError) -> MakePaymentResponse {
        fail(pspTransactionId, error.message)
    }
}
