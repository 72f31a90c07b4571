import CardCrypto
import MakePayment
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The line-at-a-time tools behind `psp-worker decrypt` and `psp-worker encrypt`.
public enum CardDataTools {
    /// One `decrypt` answer: the card data with the PAN masked, or the API's error. Never the clear PAN.
    public static func decryptLine(_ cardData: String, keyRing: KeyRing, currentMonth: CardExpiry) -> String {
        do {
            let card = try keyRing.decryptCardData(cardData, currentMonth: currentMonth, keepingSessionId: true)
            return #"{"pan":\#(JSONText.quoted(card.pan.masked.value)),"expiry":"\#(card.expiry)","sessionId":\#(JSONText.quoted(card.sessionId ?? ""))}"#
        } catch {
            return errorLine(error)
        }
    }

    public static func errorLine(_ error: APIError) -> String {
        #"{"errorId":\#(error.rawValue),"errorText":\#(JSONText.quoted(error.text))}"#
    }

    /// The month now falls in (UTC), for the expiry check.
    public static func currentMonth() -> CardExpiry {
        CardExpiry.month(containing: Int64(time(nil)))
    }
}
