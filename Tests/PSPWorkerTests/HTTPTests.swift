import Acquiring
import CardCrypto
import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import MakePayment
import PSPWorker
import SQLitePaymentStore
import Testing

enum TestKeys {
    static func path(_ name: String) -> String {
        Bundle.module.url(forResource: name, withExtension: "pem", subdirectory: "Fixtures")!.path
    }
    static let encryptor = try! CardDataEncryptor(publicKey: KeyFiles.loadPublicKey(path: path("psp-public-key")))
    static func cardData(_ plaintext: String) -> String { encryptor.cardData(for: plaintext)! }
    static func cardData(code: String) -> String { cardData(SimulatorAcquirer.testCard(code: code) + ",3012,session") }
}

/// The real application on a real socket (port 0), with a fresh SQLite file.
struct LiveWorker {
    static let adminToken = "test-admin-token"

    static func run(acquirerTimeout: Duration = .seconds(2), _ body: @Sendable (any TestClientProtocol) async throws -> Void) async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("http-\(UUID().uuidString).sqlite").path
        defer { for s in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + s) } }
        var configuration = PSPWorkerConfiguration(keys: KeyRingSource(privateKeyPath: TestKeys.path("psp-private-key")))
        configuration.port = 0
        configuration.store = .sqlite(path: path)
        configuration.adminToken = adminToken
        configuration.acquirerTimeout = acquirerTimeout
        configuration.workers = 2
        var logger = Logger(label: "test")
        logger.logLevel = .warning
        let app = try buildApplication(configuration: configuration, logger: logger)
        try await app.test(.live, body)
    }
}

extension TestClientProtocol {
    func post(_ uri: String, _ json: String, authorization: String? = nil) async throws -> TestResponse {
        var headers: HTTPFields = [.contentType: "application/json"]
        if let authorization { headers[.authorization] = authorization }
        return try await execute(uri: uri, method: .post, headers: headers, body: ByteBuffer(string: json))
    }

    func register(_ id: String, token: String? = nil, amount: String = "1000", currency: String = "\"NOK\"") async throws -> TestResponse {
        try await post("/payments", """
            {"pspTransactionId":"\(id)","merchantSerialNumber":"123456","merchantOrderId":"order-\(id)","amount":\(amount),
             "currency":\(currency),"makePaymentToken":"\(token ?? "token-" + id)","paymentText":"Test payment"}
            """, authorization: "Bearer " + LiveWorker.adminToken)
    }

    func makePayment(_ id: String, cardData: String, confirmed: String = "YES", token: String? = nil, merchant: String = "123456") async throws -> TestResponse {
        try await post("/makePayment", """
            {"pspTransactionId":"\(id)","merchantSerialNumber":"\(merchant)","cardData":"\(cardData)","confirmed":"\(confirmed)"}
            """, authorization: token ?? "token-" + id)
    }

    func show(_ id: String) async throws -> [String: Any] {
        let response = try await execute(uri: "/payments/" + id, method: .get, headers: [.authorization: "Bearer " + LiveWorker.adminToken])
        return (try JSONSerialization.jsonObject(with: Data(buffer: response.body))) as? [String: Any] ?? [:]
    }
}

extension TestResponse {
    var text: String { String(buffer: body) }
}

@Suite struct MakePaymentHTTPTests {
    @Test func approvedPaymentAnswersTheAPIsBody() async throws {
        try await LiveWorker.run { client in
            #expect(try await client.register("p1").status == .created)
            let response = try await client.makePayment("p1", cardData: TestKeys.cardData(code: "00"))
            #expect(response.status == .ok)
            #expect(response.text == #"{"paymentInfo":{"pspTransactionId":"p1","status":"OK"}}"#)
            #expect(response.headers[.contentType] == "application/json")
        }
    }

    @Test func refusalCarriesErrorIdAndText() async throws {
        try await LiveWorker.run { client in
            _ = try await client.register("p51")
            let response = try await client.makePayment("p51", cardData: TestKeys.cardData(code: "51"))
            #expect(response.status == .ok)
            #expect(response.text == #"{"errorMessage":{"errorId":89,"errorText":"Not sufficient funds"},"paymentInfo":{"pspTransactionId":"p51","status":"FAIL"}}"#)
        }
    }

    @Test(arguments: [
        "not json",
        #"{"pspTransactionId":"p1"}"#,
        #"{"pspTransactionId":"p1","merchantSerialNumber":"123456","cardData":"x","confirmed":"MAYBE"}"#,
        #"{"pspTransactionId":"p1","merchantSerialNumber":123456,"cardData":"x","confirmed":"YES"}"#,
        #"{"pspTransactionId":7,"merchantSerialNumber":"123456","cardData":"x","confirmed":"YES"}"#,
        "",
    ])
    func malformedBodyIs400With71(body: String) async throws {
        try await LiveWorker.run { client in
            _ = try await client.register("p1")
            let response = try await client.post("/makePayment", body, authorization: "token-p1")
            #expect(response.status == .badRequest)
            let json = try JSONSerialization.jsonObject(with: Data(buffer: response.body)) as? [String: Any]
            #expect((json?["errorMessage"] as? [String: Any])?["errorId"] as? Int == 71)
            #expect((json?["paymentInfo"] as? [String: Any])?["status"] as? String == "FAIL")
        }
    }

    @Test func oversizedBodyIs413() async throws {
        try await LiveWorker.run { client in
            let big = #"{"pspTransactionId":"p1","cardData":""# + String(repeating: "A", count: 70_000) + "\"}"
            let response = try await client.post("/makePayment", big, authorization: "x")
            #expect(response.status == .contentTooLarge)
        }
    }

    @Test func tokensAndIdsAreChecked() async throws {
        try await LiveWorker.run { client in
            _ = try await client.register("p1")
            let cardData = TestKeys.cardData(code: "00")
            #expect(try await client.makePayment("p1", cardData: cardData, token: "wrong").status == .unauthorized)
            #expect(try await client.post("/makePayment", #"{"pspTransactionId":"p1","merchantSerialNumber":"123456","cardData":"\#(cardData)","confirmed":"YES"}"#).status == .unauthorized)
            #expect(try await client.makePayment("nope", cardData: cardData).status == .notFound)
            #expect(try await client.makePayment("p1", cardData: cardData, merchant: "654321").status == .badRequest)
            #expect(try await client.show("p1")["authorizationsSent"] as? Int == 0)
        }
    }

    @Test func concurrentDuplicatesGetOneAuthorizationAndIdenticalBodies() async throws {
        try await LiveWorker.run { client in
            _ = try await client.register("p-dup")
            let cardData = TestKeys.cardData(code: "00")
            let bodies = try await withThrowingTaskGroup(of: String.self) { group in
                for _ in 0..<20 { group.addTask { try await client.makePayment("p-dup", cardData: cardData).text } }
                return try await group.reduce(into: [String]()) { $0.append($1) }
            }
            #expect(Set(bodies).count == 1)
            let shown = try await client.show("p-dup")
            #expect(shown["authorizationsSent"] as? Int == 1)
            #expect(shown["acquirerAuthorizations"] as? Int == 1)
        }
    }

    @Test func cancelledPaymentIsAnswered85() async throws {
        try await LiveWorker.run { client in
            _ = try await client.register("p-c")
            let cancel = try await client.execute(uri: "/payments/p-c/cancel", method: .post, headers: [.authorization: "Bearer " + LiveWorker.adminToken])
            #expect(cancel.status == .ok)
            let response = try await client.makePayment("p-c", cardData: TestKeys.cardData(code: "00"))
            #expect(response.text == #"{"errorMessage":{"errorId":85,"errorText":"Response received to late"},"paymentInfo":{"pspTransactionId":"p-c","status":"FAIL"}}"#)
        }
    }

    @Test func unconfirmedIsAnswered93() async throws {
        try await LiveWorker.run { client in
            _ = try await client.register("p-n")
            let response = try await client.makePayment("p-n", cardData: "x", confirmed: "CANCEL")
            #expect(response.text == #"{"errorMessage":{"errorId":93,"errorText":"Status from Vipps:CANCEL"},"paymentInfo":{"pspTransactionId":"p-n","status":"FAIL"}}"#)
        }
    }

    @Test func cryptogramForAnotherKeyIs92() async throws {
        try await LiveWorker.run { client in
            _ = try await client.register("p-k")
            let other = try CardDataEncryptor(publicKey: RSAKey.generate())
            let response = try await client.makePayment("p-k", cardData: other.cardData(for: "4000000000000002,3012,s")!)
            #expect(response.status == .ok)
            #expect(response.text.contains(#""errorId":92,"errorText":"Unable to decrypt""#))
        }
    }
}

@Suite struct AdminHTTPTests {
    @Test func registrationIsValidatedWithTheAPIsCodes() async throws {
        try await LiveWorker.run { client in
            #expect(try await client.register("p1").status == .created)
            let duplicate = try await client.register("p1")
            #expect(duplicate.status == .conflict)
            #expect(duplicate.text.contains(#""errorCode":"99","errorMessage":"PSP Transaction id already exists""#))
            let zero = try await client.register("p2", amount: "0")
            #expect(zero.status == .badRequest && zero.text.contains("amount.less.than.one"))
            let euro = try await client.register("p3", currency: "\"EUR\"")
            #expect(euro.status == .badRequest && euro.text.contains("transaction.currency.invalid"))
            let text = try await client.register("p4", amount: "\"ten\"")
            #expect(text.status == .badRequest && text.text.contains(#""errorCode":"51""#))
            #expect(try await client.post("/payments", "[]", authorization: "Bearer " + LiveWorker.adminToken).status == .badRequest)
        }
    }

    @Test func adminEndpointsNeedTheAdminToken() async throws {
        try await LiveWorker.run { client in
            let missing = try await client.post("/payments", "{}")
            let wrong = try await client.post("/payments", "{}", authorization: "Bearer wrong")
            let show = try await client.execute(uri: "/payments/p1", method: .get)
            #expect([missing.status, wrong.status, show.status] == [.unauthorized, .unauthorized, .unauthorized])
        }
    }

    @Test func paymentViewNeverShowsTheClearPANOrToken() async throws {
        try await LiveWorker.run { client in
            _ = try await client.register("p1", token: "secret-token-value")
            _ = try await client.makePayment("p1", cardData: TestKeys.cardData("4925000000004444,3012,s"), token: "secret-token-value")
            let response = try await client.execute(uri: "/payments/p1", method: .get, headers: [.authorization: "Bearer " + LiveWorker.adminToken])
            #expect(response.status == .ok)
            #expect(!response.text.contains("4925000000004444"))
            #expect(!response.text.contains("secret-token-value"))
            let shown = try await client.show("p1")
            #expect(shown["maskedPan"] as? String == "492500******4444")
            #expect(shown["state"] as? String == "completed" && shown["status"] as? String == "OK")
        }
    }

    @Test func healthAndMetricsAnswer() async throws {
        try await LiveWorker.run { client in
            #expect(try await client.execute(uri: "/health", method: .get).status == .ok)
            _ = try await client.register("p1")
            _ = try await client.makePayment("p1", cardData: TestKeys.cardData(code: "51"))
            let metrics = try await client.execute(uri: "/metrics", method: .get).text
            #expect(metrics.contains(#"psp_makepayment_requests_total{status="200",errorId="89"} 1"#))
            #expect(metrics.contains("psp_decrypt_duration_seconds_count 1"))
            #expect(metrics.contains("psp_queue_depth"))
        }
    }
}
