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
    static func errors(_ status: HTTPResponse.Status, _ entries: [(field: String?, code: String, message: String)]) -> Response {
        let items = entries.map { e in
            (e.field.map { #"{"field":\#(JSONText.quoted($0)),"# } ?? "{")
                + #""errorCode":\#(JSONText.quoted(e.code)),"errorMessage":\#(JSONText.quoted(e.message))}"#
        }
        return json(status, "[" + items.joined(separator: ",") + "]")
    }
}
