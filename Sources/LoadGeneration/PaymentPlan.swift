import CardCrypto
import Foundation
import MakePayment

/// One load-test payment, ready to register and to send: everything, the cryptogram included, is
/// built before the timed run so that the generator's own cost in it is one write and one read.
public struct PlannedPayment: Sendable {
    public var id: String
    public var kind: CaseKind
    /// The registration body for `POST /payments` (it carries the payment's real token).
    public var registrationBody: [UInt8]
    /// The makePayment request, with the token this case presents (a wrong one for `wrongToken`).
    public var makePayment: PreparedRequest
}

/// Builds the payments of a run.
public struct PaymentPlanner: Sendable {
    public var runId: String
    public var merchantSerialNumber: String
    public var makePaymentPath: String
    public var hostHeader: String
    public var amount = 10_000
    /// Makes each payment's makePaymentToken its own and unguessable, yet known for every index:
    /// a wrong-token case presents another payment's real token.
    private let tokenSeed = Self.randomHex(16)

    public init(runId: String, merchantSerialNumber: String, makePaymentPath: String, hostHeader: String) {
        self.runId = runId
        self.merchantSerialNumber = merchantSerialNumber
        self.makePaymentPath = makePaymentPath
        self.hostHeader = hostHeader
    }

    public enum PlanError: Error, CustomStringConvertible {
        case encryptionFailed
        public var description: String { "the public key could not encrypt the card data" }
    }

    private struct Registration: Encodable {
        var pspTransactionId: String
        var merchantSerialNumber: String
        var merchantOrderId: String
        var amount: Int
        var currency = "NOK"
        var makePaymentToken: String
        var paymentText: String
    }

    public func pspTransactionId(_ index: Int) -> String { "sim-\(runId)-\(index)" }

    /// The makePaymentToken payment `index` is registered with.
    func makePaymentToken(_ index: Int) -> String { "tok-\(tokenSeed)-\(index)" }

    /// Payment `index` of kind `kind`, its card data encrypted with `encryptor`.
    public func payment(index: Int, kind: CaseKind, encryptor: CardDataEncryptor) throws(PlanError) -> PlannedPayment {
        let id = pspTransactionId(index)
        let token = makePaymentToken(index)
        let plaintext = kind.cardPlaintext(session: "s\(runId)\(index)")
        let cardData: String
        if kind == .badCryptogram {
            // A real cryptogram with one byte flipped: well-formed base64 of the right length, so
            // the worker gets as far as the RSA operation before it must refuse (92).
            var text = plaintext
            guard var raw = text.withUTF8({ encryptor.encrypt(UnsafeRawBufferPointer($0)) }) else { throw .encryptionFailed }
            raw[raw.count / 2] ^= 0x5A
            cardData = Data(raw).base64EncodedString()
        } else {
            guard let data = encryptor.cardData(for: plaintext) else { throw .encryptionFailed }
            cardData = data
        }
        let request = MakePaymentRequest(pspTransactionId: id, merchantSerialNumber: merchantSerialNumber,
                                         cardData: cardData, confirmed: kind.confirmed)
        let encoder = JSONEncoder()
        let body = Array((try? encoder.encode(request)) ?? Data())
        let registration = Registration(pspTransactionId: id, merchantSerialNumber: merchantSerialNumber,
                                        merchantOrderId: "order-\(runId)-\(index)", amount: amount,
                                        makePaymentToken: token, paymentText: "vipps-sim load test")
        // Another registered payment's token (a neighbour's): a worker that checked only that the
        // token is someone's would let it through.
        let presented = kind == .wrongToken ? makePaymentToken(index == 0 ? 1 : index - 1) : token
        return PlannedPayment(
            id: id, kind: kind, registrationBody: Array((try? encoder.encode(registration)) ?? Data()),
            makePayment: PreparedRequest(method: .POST, uri: makePaymentPath, host: hostHeader, authorization: presented, body: body))
    }

    /// All payments for `kinds`, encrypted on every core.
    public func payments(kinds: [CaseKind], publicKey: RSAKey) async throws -> [PlannedPayment] {
        let cores = max(1, ProcessInfo.processInfo.activeProcessorCount)
        let encryptor = try CardDataEncryptor(publicKey: publicKey, concurrency: cores)
        let chunk = max(1, (kinds.count + cores - 1) / cores)
        return try await withThrowingTaskGroup(of: (Int, [PlannedPayment]).self) { group in
            for start in stride(from: 0, to: kinds.count, by: chunk) {
                group.addTask {
                    var part: [PlannedPayment] = []
                    part.reserveCapacity(chunk)
                    for i in start..<min(start + chunk, kinds.count) {
                        part.append(try self.payment(index: i, kind: kinds[i], encryptor: encryptor))
                    }
                    return (start, part)
                }
            }
            var parts: [(Int, [PlannedPayment])] = []
            for try await part in group { parts.append(part) }
            return parts.sorted { $0.0 < $1.0 }.flatMap(\.1)
        }
    }

    static func randomHex(_ bytes: Int) -> String { Secrets.hexString(Secrets.randomBytes(bytes)) }
}
