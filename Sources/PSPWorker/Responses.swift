import Hummingbird
import MakePayment
import Processing

/// Hand-written JSON for the hot path's answers (no encoder, one buffer), and small helpers for
/// the admin endpoints.
enum Responses {
    static func makePayment(_ result: MakePaymentResult) -> Response {
        var body = ByteBuffer()
        body.reserveCapacity(192)
        let r = result.response
        if let error = r.errorMessage {
            body.writeString(#"{"errorMessage":{"errorId":"#)
            body.writeString(String(error.errorId))
            body.writeString(#","errorText":"#)
            body.writeString(JSONText.quoted(error.errorText))
            body.writeString("},")
        } else {
            body.writeString("{")
        }
        body.writeString(#""paymentInfo":{"pspTransactionId":"#)
        body.writeString(JSONText.quoted(r.paymentInfo.pspTransactionId))
        body.writeString(#","status":""#)
        body.writeString(r.paymentInfo.status.rawValue)
        body.writeString("\"}}")
        var headers: HTTPFields = [.contentType: "application/json"]
        if result.httpStatus == 503 { headers[.retryAfter] = "1" }
        return Response(status: .init(code: result.httpStatus), headers: headers, body: .init(byteBuffer: body))
    }

    static func json(_ status: HTTPResponse.Status, _ text: String) -> Response {
        Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    /// `{"field":…, "errorCode":…, "errorMessage":…}` entries, as the API reports initiate errors.
    static func errors(_ status: HTTPResponse.Status, _ entries: [(field: String?, code: String, message: String)]) -> Response {
        let items = entries.map { e in
            (e.field.map { #"{"field":\#(JSONText.quoted($0)),"# } ?? "{")
                + #""errorCode":\#(JSONText.quoted(e.code)),"errorMessage":\#(JSONText.quoted(e.message))}"#
        }
        return json(status, "[" + items.joined(separator: ",") + "]")
    }
}
