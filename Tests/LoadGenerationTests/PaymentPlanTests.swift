import CardCrypto
import Foundation
import LoadGeneration
import Testing

@Suite struct PaymentPlanTests {
    /// A wrong-token case presents another registered payment's real token, not one nobody has: a
    /// worker that checked only that a token is someone's would pass a made-up one's test.
    @Test func aWrongTokenIsAnotherPaymentsRealToken() throws {
        let planner = PaymentPlanner(runId: "t", merchantSerialNumber: "123456", makePaymentPath: "/mp", hostHeader: "localhost")
        let encryptor = try CardDataEncryptor(publicKey: RSAKey.generate())
        let kinds: [CaseKind] = [.wrongToken, .approved, .wrongToken, .approved]
        let payments = try kinds.enumerated().map { try planner.payment(index: $0.offset, kind: $0.element, encryptor: encryptor) }
        let registered = try payments.map { payment in
            let object = try #require(try JSONSerialization.jsonObject(with: Data(payment.registrationBody)) as? [String: Any])
            return try #require(object["makePaymentToken"] as? String)
        }
        #expect(Set(registered).count == payments.count, "each payment has a token of its own")
        for (index, payment) in payments.enumerated() {
            let presented = try #require(payment.makePayment.authorization)
            if payment.kind == .wrongToken {
                #expect(presented != registered[index])
                #expect(registered.contains(presented), "payment \(index) presents a token no payment was registered with")
            } else {
                #expect(presented == registered[index])
            }
        }
    }
}
