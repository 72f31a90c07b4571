import Hummingbird
import MakePayment
import Processing

/// The makePayment answer (its JSON written by hand, in MakePayment), and small helpers for the
/// admin endpoints.
enum Responses {
    static func json(_ status: HTTPResponse.Status, _ text: String) -> Response {
        Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    /// `{"field":…, "errorCode":…, "errorMessage":…}` entries, as the API reports initiate errors.
    static func errors(_ status: HTTPResponse.Status, _ entries: [AdminProblem]) -> Response {
        let items = entries.map { e in
            (e.field.map { #"{"field":\#(JSONText.quoted($0)),"# } ?? "{")
                + #""errorCode":\#(JSONText.quoted(e.code.rawValue)),"errorMessage":\#(JSONText.quoted(e.message))}"#
        }
        return json(status, "[" + items.joined(separator: ",") + "]")
    }
}

/// One problem in an admin endpoint's error answer: the field it is about (if one), its code, and
/// a message for the operator.
typealias AdminProblem = (field: String?, code: AdminErrorCode, message: String)

/// The admin endpoints' error codes: the numbers of Vipps's own catalogue where one fits (51, 91,
/// 99), the HTTP status where none does, and the two the API names for an amount and a currency.
enum AdminErrorCode: String {
    case invalidRequest = "51"
    case internalError = "91"
    case idExists = "99"
    case unauthorized = "401"
    case notFound = "404"
    case methodNotAllowed = "405"
    case notPending = "409"
    case amountLessThanOne = "amount.less.than.one"
    case currencyInvalid = "transaction.currency.invalid"
}
