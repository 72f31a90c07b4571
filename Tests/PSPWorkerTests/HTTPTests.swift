import Acquiring
import CardCrypto
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import MakePayment
import PSPWorker
import PaymentStoreConformance
import Processing
import SQLitePaymentStore
import Synchronization
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

    /// The acquirer's timeout is generous: with under half of it left after the attempt's commit
    /// (slow on a loaded machine), an authorization is not sent and the answer is 85. `configure`
    /// changes the configuration, and `store` the store the worker gets (to inject faults).
    static func run(acquirerTimeout: Duration = .seconds(5), logger: Logger = quietLogger,
                    componentLogger: @escaping @Sendable (String) -> Logger = { Logger(label: $0) }, acquirer: (any AcquirerAdapter)? = nil,
                    configure: (inout PSPWorkerConfiguration) throws -> Void = { _ in },
                    store: (any PaymentStore) -> any PaymentStore = { $0 },
                    _ body: @Sendable (any TestClientProtocol) async throws -> Void) async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("http-\(UUID().uuidString).sqlite").path
        defer { for s in ["", "-wal", "-shm", "-gate"] { try? FileManager.default.removeItem(atPath: path + s) } }
        var configuration = PSPWorkerConfiguration(keys: KeyRingSource(privateKeyPath: TestKeys.path("psp-private-key")))
        configuration.port = 0
        configuration.store = .sqlite(path: path)
        configuration.adminTokenHash = Secrets.sha256(adminToken)
        configuration.acquirerTimeout = acquirerTimeout
        configuration.workers = 2
        try configure(&configuration)
        var components = try PSPWorkerComponents.make(configuration, acquirer: acquirer, logger: logger, componentLogger: componentLogger)
        components.store = store(components.store)
        let app = try buildApplication(configuration: configuration, components: components, logger: logger, componentLogger: componentLogger)
        try await app.test(.live, body)
    }

    static var quietLogger: Logger {
        var logger = Logger(label: "test")
        logger.logLevel = .warning
        return logger
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

    /// At the most verbose log level, no clear card number reaches a log line or its metadata,
    /// whatever the outcome: approved, refused, unanswered (85, then reversed), expired, failing
    /// the Luhn check. The masked form (first 6, last 4) is what the logs show.
    @Test func noClearCardNumberReachesTheLogs() async throws {
        let logs = CapturedLogs(level: .trace)
        let approved = SimulatorAcquirer.testCard(code: "00")
        let badLuhn = String(approved.dropLast()) + String((Int(String(approved.last!))! + 1) % 10)
        let cases: [(pan: String, expiry: String, errorId: Int?)] = [
            (approved, "3012", nil), (SimulatorAcquirer.testCard(code: "51"), "3012", 89),
            (SimulatorAcquirer.testCard(code: "99"), "3012", 85), (approved, "2001", 86), (badLuhn, "3012", 87),
        ]
        try await LiveWorker.run(acquirerTimeout: .seconds(5), logger: logs.logger, componentLogger: { logs.logger(label: $0) }) { client in
            for (i, c) in cases.enumerated() {
                _ = try await client.register("pl-\(i)")
                let response = try await client.makePayment("pl-\(i)", cardData: TestKeys.cardData("\(c.pan),\(c.expiry),session"))
                let expected = c.errorId.map { #""errorId":\#($0),"# } ?? #""status":"OK""#
                #expect(response.status == .ok && response.text.contains(expected), "\(i): \(response.text)")
            }
        }
        let lines = logs.records.withLock { $0 }.map { "\($0.message) \($0.metadata)" }
        #expect(lines.contains { $0.contains("400000******") }, "the logs name the cards masked")
        for pan in Set(cases.map(\.pan)) {
            #expect(!lines.contains { $0.contains(pan) }, "a clear card number in the logs")
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

    /// The API has no 413: a body over the limit is an invalid request.
    @Test func oversizedBodyIs400() async throws {
        try await LiveWorker.run { client in
            let big = #"{"pspTransactionId":"p1","cardData":""# + String(repeating: "A", count: 70_000) + "\"}"
            let response = try await client.post("/makePayment", big, authorization: "x")
            #expect(response.status == .badRequest)
            #expect(response.text == #"{"errorMessage":{"errorId":71,"errorText":"Invalid request"},"paymentInfo":{"pspTransactionId":"","status":"FAIL"}}"#)
            // Counted like every other answer, though the pipeline never saw it.
            let metrics = try await client.execute(uri: "/metrics", method: .get).text
            #expect(metrics.contains(#"psp_makepayment_requests_total{status="400",errorId="71"} 1"#), "\(metrics)")
        }
    }

    /// Our own registration API answers HTTP's 413 for a body over the limit, with the 51 of its
    /// other refusals, and registers nothing.
    @Test func anOversizedRegistrationIs413() async throws {
        try await LiveWorker.run { client in
            let big = #"{"pspTransactionId":"big-1","paymentText":""# + String(repeating: "A", count: 70_000) + "\"}"
            let response = try await client.post("/payments", big, authorization: "Bearer " + LiveWorker.adminToken)
            #expect(response.status == .contentTooLarge)
            #expect(response.text.contains(#""errorCode":"51""#), "\(response.text)")
            #expect(try await client.post("/makePayment", #"{"pspTransactionId":"big-1","merchantSerialNumber":"123456","cardData":"x","confirmed":"YES"}"#,
                                          authorization: "x").status == .notFound)
        }
    }

    @Test func tokensAndIdsAreChecked() async throws {
        try await LiveWorker.run { client in
            _ = try await client.register("p1")
            let cardData = TestKeys.cardData(code: "00")
            let wrongToken = try await client.makePayment("p1", cardData: cardData, token: "wrong")
            #expect(wrongToken.status == .unauthorized)
            // A 401 says which scheme it wants (RFC 9110 §11.6.1); it said none.
            #expect(wrongToken.headers[.wwwAuthenticate] == #"makePaymentToken realm="makePayment""#)
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
            // Cancelling again (a retry after a lost answer) is answered as the first was.
            let again = try await client.execute(uri: "/payments/p-c/cancel", method: .post, headers: [.authorization: "Bearer " + LiveWorker.adminToken])
            #expect(again.status == .ok && again.text.contains(#""state":"cancelled""#))
        }
    }

    @Test func unconfirmedIsAnswered72() async throws {
        try await LiveWorker.run { client in
            _ = try await client.register("p-n")
            let response = try await client.makePayment("p-n", cardData: "x", confirmed: "CANCEL")
            #expect(response.text == #"{"errorMessage":{"errorId":72,"errorText":"Different texts"},"paymentInfo":{"pspTransactionId":"p-n","status":"FAIL"}}"#)
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

/// Log records kept for a test to read.
final class CapturedLogs: Sendable {
    struct Record: Sendable { var level: Logger.Level; var message: String; var metadata: Logger.Metadata }
    let records = Mutex<[Record]>([])
    let level: Logger.Level
    init(level: Logger.Level = .info) { self.level = level }
    var logger: Logger { logger(label: "captured") }
    func logger(label: String) -> Logger {
        var logger = Logger(label: label) { _ in Handler(logs: self) }
        logger.logLevel = level
        return logger
    }
    struct Handler: LogHandler {
        let logs: CapturedLogs
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .info
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(level: Logger.Level, message: Logger.Message, metadata: Logger.Metadata?, source: String, file: String, function: String, line: UInt) {
            logs.records.withLock { $0.append(Record(level: level, message: "\(message)", metadata: self.metadata.merging(metadata ?? [:]) { $1 })) }
        }
    }
}

/// The worker's store, with the admin endpoints' writes made to fail.
final class AdminWriteFaultStore: ForwardingPaymentStore {
    struct WriteFailed: Error {}
    let base: any PaymentStore
    init(_ base: any PaymentStore) { self.base = base }
    func register(_ registration: PaymentRegistration, now: Int64) async throws -> RegisterResult { throw WriteFailed() }
    func cancel(_ pspTransactionId: String, now: Int64) async throws -> CancelResult { throw WriteFailed() }
}

@Suite struct AdminHTTPTests {
    /// A store failure behind an admin call is answered 500 (91) and logged for an operator, with
    /// the step and the error (it was answered and forgotten).
    @Test func aStoreFailureOnTheAdminSurfaceIsLogged() async throws {
        let logs = CapturedLogs()
        try await LiveWorker.run(logger: logs.logger, store: { AdminWriteFaultStore($0) }) { client in
            let registered = try await client.register("af-1")
            #expect(registered.status == .internalServerError && registered.text.contains(#""errorCode":"91""#))
            let cancelled = try await client.post("/payments/af-1/cancel", "", authorization: "Bearer " + LiveWorker.adminToken)
            #expect(cancelled.status == .internalServerError)
        }
        let failures = logs.records.withLock { $0 }.filter { $0.level == .error && $0.message == "admin call failed in the store" }
        #expect(failures.map { $0.metadata["step"]?.description } == ["register", "cancel"])
        #expect(failures.first?.metadata["pspTransactionId"]?.description == "af-1")
        #expect(failures.allSatisfy { $0.metadata["error"]?.description.contains("WriteFailed") == true })
    }

    /// `psp_makepayment_in_flight` is read when scraped: 1 while a makePayment waits on a slow
    /// acquirer, 0 once it is answered.
    @Test func makePaymentsInFlightAreCountedWhenScraped() async throws {
        try await LiveWorker.run(configure: {
            $0.acquirer = try #require(PSPWorkerConfiguration.AcquirerChoice("simulator", simulatorLatency: .milliseconds(1500)))
        }) { client in
            let port = try #require(client.port)
            // Scraped on connections of their own: the test client's one would wait behind the makePayment.
            func inFlight() async throws -> Double? {
                let metrics = try await RawHTTP.exchange(port: port, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", answers: 1)
                return metrics.first?.body.split(separator: "\n").first { $0.hasPrefix("psp_makepayment_in_flight ") }
                    .flatMap { Double($0.dropFirst("psp_makepayment_in_flight ".count)) }
            }
            #expect(try await inFlight() == 0, "exported before any makePayment")
            _ = try await client.register("if-1")
            let call = Task { try await client.makePayment("if-1", cardData: TestKeys.cardData(code: "00")) }
            try await waitUntil(within: .seconds(5)) { try await inFlight() == 1 }
            #expect(try await call.value.status == .ok)
            #expect(try await inFlight() == 0)
        }
    }

    /// "The same registration again" is the same bytes: a text canonically equivalent to the one
    /// stored (é precomposed, then as e and a combining accent) is other contents, a conflict.
    @Test func aCanonicallyEquivalentTextIsAnotherRegistration() async throws {
        try await LiveWorker.run { client in
            func register(_ orderId: String) async throws -> TestResponse {
                try await client.post("/payments", #"{"pspTransactionId":"ce-1","merchantSerialNumber":"123456","merchantOrderId":"\#(orderId)","amount":100,"currency":"NOK","makePaymentToken":"token-ce-1"}"#,
                                      authorization: "Bearer " + LiveWorker.adminToken)
            }
            #expect(try await register(#"caf\u00e9"#).status == .created)
            #expect(try await register(#"caf\u00e9"#).status == .ok)
            let equivalent = try await register(#"cafe\u0301"#)
            #expect(equivalent.status == .conflict && equivalent.text.contains(#""errorCode":"99""#), "\(equivalent.text)")
        }
    }

    @Test func registrationIsValidatedWithTheAPIsCodes() async throws {
        try await LiveWorker.run { client in
            #expect(try await client.register("p1").status == .created)
            // The same registration again (a retry after a lost answer) is told the payment's state;
            // different contents under the same id, or another token, are a conflict.
            let retry = try await client.register("p1")
            #expect(retry.status == .ok && retry.text == #"{"pspTransactionId":"p1","state":"pending"}"#)
            for conflicting in [try await client.register("p1", amount: "1001"), try await client.register("p1", token: "token-other")] {
                #expect(conflicting.status == .conflict)
                #expect(conflicting.text.contains(#""errorCode":"99","errorMessage":"PSP Transaction id already exists""#))
            }
            // A key given twice is refused: another reader could take the other value.
            let twice = try await client.post("/payments", #"{"pspTransactionId":"d1","merchantSerialNumber":"123456","merchantOrderId":"o","amount":100,"amount":999999,"currency":"NOK","makePaymentToken":"token-d1x"}"#,
                                               authorization: "Bearer " + LiveWorker.adminToken)
            #expect(twice.status == .badRequest && twice.text.contains("amount is given more than once"), "\(twice.text)")
            let escaped = try await client.post("/payments", #"{"pspTransactionId":"d2","merchantSerialNumber":"123456","merchantOrderId":"o","amount":100,"amo\u0075nt":7,"currency":"NOK","makePaymentToken":"token-d2x","x":{"amount":1}}"#,
                                                authorization: "Bearer " + LiveWorker.adminToken)
            #expect(escaped.status == .badRequest && escaped.text.contains("amount is given more than once"), "\(escaped.text)")
            // Only UTF-8: JSONDecoder would read the same body in UTF-16, where the key check cannot.
            let utf16 = #"{"pspTransactionId":"d3","merchantSerialNumber":"123456","merchantOrderId":"o","amount":100,"amount":7,"currency":"NOK","makePaymentToken":"token-d3x"}"#
            let wide = try await client.execute(uri: "/payments", method: .post, headers: [.authorization: "Bearer " + LiveWorker.adminToken],
                                                body: ByteBuffer(bytes: Array(utf16.data(using: .utf16LittleEndian)!)))
            #expect(wide.status == .badRequest)
            let zero = try await client.register("p2", amount: "0")
            #expect(zero.status == .badRequest && zero.text.contains("amount.less.than.one"))
            // An amount an ISO 8583 field 4 (n12) cannot carry is refused, not cut to its last 12 digits.
            let huge = try await client.register("p5", amount: "1000000000050")
            #expect(huge.status == .badRequest && huge.text.contains("at most 999999999999"))
            #expect(try await client.register("p6", amount: "999999999999").status == .created)
            // Money is read as written, never through a Double: each of these decodes as 1000 in
            // JSONDecoder, and none is 1000 øre to every reader.
            for written in ["1000.00000000000001", "1e3", "1000.0", "1E3", "10000e-1"] {
                let inexact = try await client.register("p7", amount: written)
                #expect(inexact.status == .badRequest && inexact.text.contains("whole number of øre"), "\(written): \(inexact.text)")
            }
            for written in ["-5", "-0.5", "0", "0.5", "0.0", "1e-3"] {
                #expect(try await client.register("p7", amount: written).text.contains("amount.less.than.one"), "\(written)")
            }
            // Beyond Int: still the field's own limit, not a generic refusal.
            #expect(try await client.register("p7", amount: "123456789012345678901234567890").text.contains("at most 999999999999"))
            let spaced = try await client.register("p7", amount: " \n 1000 \t")
            #expect(spaced.status == .created)
            // Numbers as RFC 8259 writes them, here and in any other member: JSONDecoder took
            // `0010` for 10 øre (another reader refuses it, or reads octal 8) and let `1-2-3` by.
            for written in ["0010", "01", "-01", "1-2-3", "1.", ".5", "+1", "1e", "1e+", "--1", "0x10", "1.e3"] {
                let refused = try await client.register("p8", amount: written)
                #expect(refused.status == .badRequest && refused.text.contains(#""errorCode":"51""#), "\(written): \(refused.text)")
            }
            let otherMember = try await client.post("/payments", #"{"pspTransactionId":"m5","merchantSerialNumber":"123456","merchantOrderId":"o","amount":100,"currency":"NOK","makePaymentToken":"token-m5x","x":[1,{"y":1-2-3}]}"#,
                                                    authorization: "Bearer " + LiveWorker.adminToken)
            #expect(otherMember.status == .badRequest, "\(otherMember.text)")
            let wellFormed = try await client.post("/payments", #"{"pspTransactionId":"m6","merchantSerialNumber":"123456","merchantOrderId":"o","amount":100,"currency":"NOK","makePaymentToken":"token-m6x","x":[0,-0.5,1E+2,2e-3,"01 1-2"],"y":{"z":-12.5e7}}"#,
                                                   authorization: "Bearer " + LiveWorker.adminToken)
            #expect(wellFormed.status == .created, "\(wellFormed.text)")
            let numericMerchant = try await client.post("/payments", #"{"pspTransactionId":"m3","merchantSerialNumber":123456,"merchantOrderId":"o","amount":100,"currency":"NOK","makePaymentToken":"token-m3x"}"#,
                                                        authorization: "Bearer " + LiveWorker.adminToken)
            #expect(numericMerchant.status == .created)
            let merchantExponent = try await client.post("/payments", #"{"pspTransactionId":"m4","merchantSerialNumber":1.23456e5,"merchantOrderId":"o","amount":100,"currency":"NOK","makePaymentToken":"token-m4x"}"#,
                                                         authorization: "Bearer " + LiveWorker.adminToken)
            #expect(merchantExponent.status == .badRequest && merchantExponent.text.contains("merchantSerialNumber"))
            let euro = try await client.register("p3", currency: "\"EUR\"")
            #expect(euro.status == .badRequest && euro.text.contains("transaction.currency.invalid"))
            let text = try await client.register("p4", amount: "\"ten\"")
            #expect(text.status == .badRequest && text.text.contains(#""errorCode":"51""#))
            #expect(try await client.post("/payments", "[]", authorization: "Bearer " + LiveWorker.adminToken).status == .badRequest)
            // Ids that a URL path or a log line would mangle, merchants that are not digits (field 42
            // is 15 characters), and tokens that no header could carry or that are too short.
            for id in ["a/b", "a b", "a%2Fb", "a?b", "a#b", #"a\u0000b"#, #"a\nb"#, "é1", "a<b", "a|b", "a{b", "a^b", "a`b", #"a\"b"#, ".", ".."] {
                let refused = try await client.register(id)
                #expect(refused.status == .badRequest && refused.text.contains("pspTransactionId"), "\(id)")
            }
            let merchant = try await client.post("/payments", #"{"pspTransactionId":"m1","merchantSerialNumber":"12a456","merchantOrderId":"o","amount":100,"currency":"NOK","makePaymentToken":"token-m1x","paymentText":"t"}"#,
                                                  authorization: "Bearer " + LiveWorker.adminToken)
            #expect(merchant.status == .badRequest && merchant.text.contains("merchantSerialNumber"))
            for token in ["short", " token-with-space", "token-with-space ", #"token\twith-tab"#] {
                let refused = try await client.register("t1", token: token)
                #expect(refused.status == .badRequest && refused.text.contains("makePaymentToken"), "\(token)")
            }
            #expect(try await client.register("t1", token: "a token with inner spaces").status == .created)
            let noText = try await client.post("/payments", #"{"pspTransactionId":"n1","merchantSerialNumber":"123456","merchantOrderId":"o","amount":100,"currency":"NOK","makePaymentToken":"token-n1x","paymentText":null}"#,
                                               authorization: "Bearer " + LiveWorker.adminToken)
            #expect(noText.status == .created)
            // A merchant with a leading zero would never match the number Vipps sends.
            for msn in [#""0123""#, #""0""#, "0"] {
                let zero = try await client.post("/payments", #"{"pspTransactionId":"z1","merchantSerialNumber":\#(msn),"merchantOrderId":"o","amount":100,"currency":"NOK","makePaymentToken":"token-z1x"}"#,
                                                 authorization: "Bearer " + LiveWorker.adminToken)
                #expect(zero.status == .badRequest && zero.text.contains("merchantSerialNumber"), "\(msn): \(zero.text)")
            }
        }
    }

    @Test func adminEndpointsNeedTheAdminToken() async throws {
        try await LiveWorker.run { client in
            let missing = try await client.post("/payments", "{}")
            let wrong = try await client.post("/payments", "{}", authorization: "Bearer wrong")
            let show = try await client.execute(uri: "/payments/p1", method: .get)
            #expect([missing.status, wrong.status, show.status] == [.unauthorized, .unauthorized, .unauthorized])
            // A 401 says which scheme it wants, and each is counted (a brute force shows in /metrics).
            #expect(wrong.headers[.wwwAuthenticate]?.hasPrefix("Bearer") == true)
            let metrics = try await client.execute(uri: "/metrics", method: .get).text
            #expect(Self.value(of: "psp_admin_unauthorized_total", in: metrics) == 3)
            // The scheme's name is case-insensitive.
            let lower = try await client.execute(uri: "/payments/p1", method: .get, headers: [.authorization: "bearer " + LiveWorker.adminToken])
            #expect(lower.status == .notFound)
        }
    }

    /// Two Authorization fields are no credential, as for makePayment: joined with ", " they
    /// would spell an admin token that contains one.
    @Test func twoAuthorizationFieldsAreNoAdminCredential() async throws {
        let token = "first-half, second-half"
        try await LiveWorker.run(configure: { $0.adminTokenHash = Secrets.sha256(token) }) { client in
            var split = HTTPFields()
            split.append(HTTPField(name: .authorization, value: "Bearer first-half"))
            split.append(HTTPField(name: .authorization, value: "second-half"))
            #expect(try await client.execute(uri: "/payments/p1", method: .get, headers: split).status == .unauthorized)
            let whole = try await client.execute(uri: "/payments/p1", method: .get, headers: [.authorization: "Bearer " + token])
            #expect(whole.status == .notFound)
        }
    }

    /// A client's URL encoder escapes `@ : ; = & +` in the path: the id it means is the decoded one.
    @Test func aPercentEncodedIdIsThePaymentItNames() async throws {
        try await LiveWorker.run { client in
            #expect(try await client.register("a@b:c;d=e&f+g").status == .created)
            let admin: HTTPFields = [.authorization: "Bearer " + LiveWorker.adminToken]
            let shown = try await client.execute(uri: "/payments/a%40b%3Ac%3Bd%3De%26f%2Bg", method: .get, headers: admin)
            #expect(shown.status == .ok && shown.text.contains(#""state":"pending""#), "\(shown.text)")
            let cancelled = try await client.execute(uri: "/payments/a%40b%3Ac%3Bd%3De%26f%2Bg/cancel", method: .post, headers: admin)
            #expect(cancelled.status == .ok && cancelled.text.contains(#""state":"cancelled""#), "\(cancelled.text)")
            #expect(try await client.show("a@b:c;d=e&f+g")["state"] as? String == "cancelled")
            // Not an escape at all: no id holds a %, so it names none.
            #expect(try await client.execute(uri: "/payments/a%zz", method: .get, headers: admin).status == .notFound)
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
            // Buckets fine enough for a decryption's fraction of a millisecond.
            #expect(metrics.contains(#"psp_decrypt_duration_seconds_bucket{le="0.0005"}"#))
            #expect(metrics.contains("psp_queue_depth"))
            // Buckets up to the longest acquirer timeout (the default ones stop at 10 s).
            #expect(metrics.contains(#"psp_acquirer_duration_seconds_bucket{le="14"#))
            // A refusal leaves nothing to reverse.
            for gauge in ["psp_reversals_pending", "psp_reversals_overdue_seconds"] {
                let line = metrics.split(separator: "\n").first { $0.hasPrefix(gauge + " ") }
                #expect(line.flatMap { Double($0.dropFirst(gauge.count + 1)) } == 0, "\(String(describing: line))")
            }
            // Read when scraped: nothing is in flight once the answer is in.
            let inFlight = metrics.split(separator: "\n").first { $0.hasPrefix("psp_makepayment_in_flight ") }
            #expect(inFlight.flatMap { Double($0.dropFirst("psp_makepayment_in_flight ".count)) } == 0, "\(String(describing: inFlight))")
            // Registration, the attempt and the outcome: three writes, each committed.
            #expect(Self.value(of: "psp_store_writes_total", in: metrics) == 3)
            #expect((1...3).contains(Self.value(of: "psp_store_commits_total", in: metrics) ?? 0))
            #expect((Self.value(of: "psp_store_wal_restarts_total", in: metrics) ?? 0) == 0)
            // The writer's stalls, by threshold (none expected here, but each threshold is exported).
            for threshold in ["0.005", "0.02", "0.1"] {
                #expect(metrics.contains(#"psp_store_slow_commits_total{at_least_seconds="\#(threshold)"}"#))
                #expect(metrics.contains(#"psp_store_slow_wal_restarts_total{at_least_seconds="\#(threshold)"}"#))
            }
        }
    }

    /// Readiness asks the store: a store that fails its reads, or does not answer, takes the
    /// worker out of a load balancer's rotation while `/health` (liveness) still answers.
    @Test func readinessFollowsTheStore() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("ready-\(UUID().uuidString).sqlite").path
        defer { for s in ["", "-wal", "-shm", "-gate"] { try? FileManager.default.removeItem(atPath: path + s) } }
        var configuration = PSPWorkerConfiguration(keys: KeyRingSource(privateKeyPath: TestKeys.path("psp-private-key")))
        configuration.port = 0
        configuration.store = .sqlite(path: path)
        configuration.workers = 2
        var logger = Logger(label: "test")
        logger.logLevel = .warning
        var components = try PSPWorkerComponents.make(configuration, logger: logger)
        let store = ReadFaultStore(components.store)
        components.store = store
        let app = try buildApplication(configuration: configuration, components: components, logger: logger)
        try await app.test(.live) { client in
            let ready = try await client.execute(uri: "/health/ready", method: .get)
            #expect(ready.status == .ok && ready.text == #"{"status":"UP","store":"UP"}"#)
            store.fault.withLock { $0 = .fail }
            let failing = try await client.execute(uri: "/health/ready", method: .get)
            #expect(failing.status == .serviceUnavailable && failing.text.contains(#""store":"failing""#))
            #expect(try await client.execute(uri: "/health", method: .get).status == .ok)
            store.fault.withLock { $0 = .stall }
            let stalled = try await client.execute(uri: "/health/ready", method: .get)
            #expect(stalled.status == .serviceUnavailable && stalled.text.contains(#""store":"not answering""#))
            store.fault.withLock { $0 = nil }
            #expect(try await client.execute(uri: "/health/ready", method: .get).status == .ok)
            #expect(store.probes.withLock { $0 } == 0, "no probe write while writes work")
            // Writes failing while reads work (a full disk, a lock held elsewhere): not ready until
            // a probe write succeeds.
            store.fault.withLock { $0 = .writesFail }
            let writesFailing = try await client.execute(uri: "/health/ready", method: .get)
            #expect(writesFailing.status == .serviceUnavailable && writesFailing.text.contains(#""store":"writes failing""#))
            #expect(store.probes.withLock { $0 } == 1)
            store.fault.withLock { $0 = nil }
            #expect(try await client.execute(uri: "/health/ready", method: .get).status == .ok)
        }
    }

    /// A route no endpoint has is refused like everything else, in JSON; a method a route does not
    /// take is 405 with the methods it does (it was 404, as if the route did not exist).
    @Test func unknownRoutesAnswerAJSONNotFound() async throws {
        try await LiveWorker.run { client in
            for (uri, method) in [("/nope", HTTPRequest.Method.get), ("/payments/p1/refund", .post), ("/health/ready/x", .get)] {
                let answer = try await client.execute(uri: uri, method: method)
                #expect(answer.status == .notFound, "\(method) \(uri)")
                #expect(answer.headers[.contentType] == "application/json")
                #expect(answer.text == #"[{"errorCode":"404","errorMessage":"No such endpoint"}]"#, "\(method) \(uri)")
            }
            for (uri, method, allow) in [("/health", HTTPRequest.Method.post, "GET, HEAD"), ("/makePayment", .get, "POST"),
                                         ("/makePayment", .head, "POST"), ("/payments", .get, "POST"),
                                         ("/payments/p1", .delete, "GET, HEAD"), ("/payments/p1/cancel/", .get, "POST")] {
                let answer = try await client.execute(uri: uri, method: method)
                #expect(answer.status == .methodNotAllowed, "\(method) \(uri)")
                #expect(answer.headers[.allow] == allow, "\(method) \(uri)")
                // A HEAD's answer has no body (the client would read it as the next answer).
                #expect(answer.text == (method == .head ? "" : #"[{"errorCode":"405","errorMessage":"Method not allowed"}]"#), "\(method) \(uri)")
            }
            #expect(try await client.execute(uri: "/nope", method: .head).text == "")
            // makePayment is matched as sent, ahead of the router: not with a slash more.
            #expect(try await client.execute(uri: "/makePayment/", method: .get).status == .notFound)
            // The path is not echoed: it could carry anything, a card number included.
            #expect(!(try await client.execute(uri: "/4925000000004444", method: .get).text.contains("4925")))
        }
    }

    /// HEAD is answered wherever GET is (RFC 9110 §9.1: every general-purpose server supports
    /// both), with GET's headers and no body; it was 404 (a load balancer's HEAD probe failed).
    @Test func headIsAnsweredLikeGetWithoutABody() async throws {
        try await LiveWorker.run { client in
            let get = try await client.execute(uri: "/health", method: .get)
            let head = try await client.execute(uri: "/health", method: .head)
            #expect(head.status == .ok)
            #expect(head.headers[.contentLength] == get.headers[.contentLength] && get.headers[.contentLength] != nil)
            #expect(head.text.isEmpty && !get.text.isEmpty)
        }
    }

    /// RFC 9112 §3.2: an HTTP/1.1 request without Host, or any with two, is refused 400 and the
    /// connection closed (both were served). HTTP/1.0 needs none.
    @Test func aRequestWithoutOneHostIsRefused() async throws {
        try await LiveWorker.run { client in
            #expect(try await client.register("nh1").status == .created)
            let port = try #require(client.port)
            let noHost = RawHTTP.makePayment("nh1").replacingOccurrences(of: "Host: x\r\n", with: "")
            let twoHosts = RawHTTP.makePayment("nh1").replacingOccurrences(of: "Host: x\r\n", with: "Host: x\r\nHost: y\r\n")
            let badHost = RawHTTP.makePayment("nh1").replacingOccurrences(of: "Host: x\r\n", with: "Host: x, y\r\n")
            for request in [noHost, twoHosts, badHost, "GET /health HTTP/1.1\r\n\r\n", "GET /health HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n"] {
                let answers = try await RawHTTP.exchange(port: port, request, answers: 1, readToEnd: true)
                #expect(answers.map(\.status) == [400], "\(request.prefix(40))")
                #expect(answers.first?.headers["connection"] == "close")
            }
            #expect(try await client.show("nh1")["state"] as? String == "pending", "the makePayments without one Host were not served")
            let health = try await RawHTTP.exchange(port: port, "GET /health HTTP/1.0\r\n\r\n", answers: 1, readToEnd: true)
            #expect(health.map(\.status) == [200])
            let hosts = try await RawHTTP.exchange(port: port, "GET /health HTTP/1.1\r\nHost: [::1]:8080\r\n\r\nGET /health HTTP/1.1\r\nhOsT: a\r\n\r\n"
                                                   + "GET /health HTTP/1.1\r\nHost:\r\nConnection: close\r\n\r\n", answers: 3, readToEnd: true)
            #expect(hosts.map(\.status) == [200, 200, 200], "an IP literal, a name in any case and an empty Host are hosts")
        }
    }

    /// A sample's value in Prometheus text (a counter never written is emitted as 0 or not at all).
    static func value(of name: String, in metrics: String) -> Int? {
        for line in metrics.split(separator: "\n") where line.hasPrefix(name + " ") {
            return Int(line.dropFirst(name.count + 1))
        }
        return nil
    }
}

@Suite struct AdminTokenTests {
    /// The token is kept only as its hash, read from a file without the whitespace around it;
    /// an empty one is refused rather than protecting the admin endpoints with "".
    @Test func theTokenIsHashedAndAnEmptyOneRefused() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("admin-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try Data("  s3cret-token\n".utf8).write(to: URL(fileURLWithPath: path))
        #expect(try AdminToken.hash(file: path) == Secrets.sha256("s3cret-token"))
        // Its length, without the whitespace, is what the warning about a short token looks at.
        #expect(try AdminToken.read(file: path)?.length == 12)
        try Data(" \n\t".utf8).write(to: URL(fileURLWithPath: path))
        #expect(throws: AdminToken.Empty.self) { _ = try AdminToken.hash(file: path) }
        // One no header can carry (two lines, raw random bytes) is refused, not left to answer 401 for ever.
        for unusable in [Data("first-line\nsecond-line\n".utf8), Data([0x41, 0x42, 0x00, 0x43, 0x44]), Data([0xC3, 0xA9, 0x61, 0xFF, 0x10])] {
            try unusable.write(to: URL(fileURLWithPath: path))
            #expect(throws: AdminToken.Unusable.self) { _ = try AdminToken.hash(file: path) }
        }
    }
}

/// makePayment is answered ahead of the router (MakePaymentChannelHandler); on one keep-alive
/// connection it must still take turns with the routes it hands on, in the order sent.
@Suite struct MakePaymentConnectionTests {
    @Test func pipelinedRequestsOnOneConnectionAreAnsweredInOrder() async throws {
        try await LiveWorker.run { client in
            for id in ["c1", "c2"] { #expect(try await client.register(id).status == .created) }
            let port = try #require(client.port)
            let getHealth = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
            let getPayment = "GET /payments/c1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(LiveWorker.adminToken)\r\n\r\n"
            // All five at once: two makePayments, each followed by a request the router answers.
            let answers = try await RawHTTP.exchange(port: port, RawHTTP.makePayment("c1") + getHealth + RawHTTP.makePayment("c2") + getPayment + getHealth, answers: 5)
            #expect(answers.map(\.status) == [200, 200, 200, 200, 200])
            #expect(answers[0].body == #"{"paymentInfo":{"pspTransactionId":"c1","status":"OK"}}"#)
            #expect(answers[1].body == #"{"status":"UP"}"#)
            #expect(answers[2].body == #"{"paymentInfo":{"pspTransactionId":"c2","status":"OK"}}"#)
            #expect(answers[3].body.contains(#""state":"completed""#))
            #expect(answers[4].body == #"{"status":"UP"}"#)
            // The headers Hummingbird would have sent.
            #expect(answers[0].headers["content-type"] == "application/json")
            #expect(answers[0].headers["server"] == "psp-worker")
            #expect(answers[0].headers["date"]?.hasSuffix(" GMT") == true)
        }
    }

    /// A client that sends `Expect: 100-continue` waits for the interim answer before it sends
    /// the body; without one it would wait out its own timeout, out of Vipps's 15 seconds.
    @Test func expectContinueIsAnsweredBeforeTheBody() async throws {
        try await LiveWorker.run { client in
            #expect(try await client.register("e1").status == .created)
            let port = try #require(client.port)
            let body = #"{"pspTransactionId":"e1","merchantSerialNumber":"123456","cardData":"\#(TestKeys.cardData(code: "00"))","confirmed":"YES"}"#
            let (interim, answers) = try await RawHTTP.offThePool {
                let connection = try RawHTTP.Connection(port: port)
                try connection.send("POST /makePayment HTTP/1.1\r\nHost: x\r\nAuthorization: token-e1\r\nExpect: 100-continue\r\n"
                                    + "Content-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n")
                let interim = try connection.read(answers: 1)
                try connection.send(body)
                return (interim, try connection.read(answers: 1))
            }
            #expect(interim.map(\.status) == [100])
            #expect(answers.map(\.status) == [200])
            // A body announced over the limit is refused at once, before it is sent, and the
            // connection closed (what the client might still send is not read).
            let refused = try await RawHTTP.exchange(port: port, "POST /makePayment HTTP/1.1\r\nHost: x\r\nAuthorization: token-e1\r\n"
                                                     + "Expect: 100-continue\r\nContent-Length: 100000\r\n\r\n", answers: 1, readToEnd: true)
            #expect(refused.map(\.status) == [400])
            #expect(refused.first?.headers["connection"] == "close")
            #expect(answers.first?.body == #"{"paymentInfo":{"pspTransactionId":"e1","status":"OK"}}"#)
        }
    }

    /// Many requests pipelined behind a makePayment: the connection stops being read while they
    /// wait, and every one of them is answered, the makePayment first (it used to be cut off).
    @Test func aLongPipelineWaitsAndIsAnsweredInFull() async throws {
        try await LiveWorker.run { client in
            #expect(try await client.register("bp1").status == .created)
            let port = try #require(client.port)
            let makePayment = RawHTTP.makePayment("bp1")
            // Over 256 KiB: more than NIO takes in one read cycle, so reading must stop and start again.
            let health = String(repeating: "GET /health HTTP/1.1\r\nHost: x\r\n\r\n", count: 8_000)
            let answers = try await RawHTTP.exchange(port: port, makePayment + health + makePayment, answers: 8_002)
            #expect(answers.count == 8_002)
            #expect(answers.first?.body == #"{"paymentInfo":{"pspTransactionId":"bp1","status":"OK"}}"#)
            #expect(answers.dropFirst().prefix(8_000).allSatisfy { $0.status == 200 && $0.body == #"{"status":"UP"}"# })
            #expect(answers.last?.body == #"{"paymentInfo":{"pspTransactionId":"bp1","status":"OK"}}"#)
        }
    }

    /// A client that closes its sending side after its requests (a half-close) still gets every
    /// answer owed, the makePayment's first; then the server closes. (Hummingbird closed the
    /// connection at once: the payment was authorized and its answer lost.)
    @Test func aHalfCloseStillGetsTheAnswersOwed() async throws {
        try await LiveWorker.run { client in
            #expect(try await client.register("hc1").status == .created)
            let port = try #require(client.port)
            let requests = RawHTTP.makePayment("hc1") + "GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
            let answers = try await RawHTTP.exchange(port: port, requests, answers: 2, readToEnd: true, halfClose: true)
            #expect(answers.map(\.status) == [200, 200])
            #expect(answers.first?.body == #"{"paymentInfo":{"pspTransactionId":"hc1","status":"OK"}}"#)
        }
    }

    /// A request the parser refuses, pipelined behind a makePayment, does not answer in its place:
    /// the makePayment's answer comes first, and the connection then closes. (Hummingbird's 400
    /// went out at once, and the client took it for the makePayment's answer.)
    @Test func aMalformedRequestBehindAMakePaymentDoesNotTakeItsAnswer() async throws {
        try await LiveWorker.run { client in
            #expect(try await client.register("mf1").status == .created)
            let port = try #require(client.port)
            let requests = RawHTTP.makePayment("mf1") + "GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n"
            let answers = try await RawHTTP.exchange(port: port, requests, answers: 1, readToEnd: true)
            #expect(answers.map(\.status) == [200])
            #expect(answers.first?.body == #"{"paymentInfo":{"pspTransactionId":"mf1","status":"OK"}}"#)
            #expect(answers.first?.headers["connection"] == "close")
        }
    }

    /// The same behind a request handed on to the router, with a makePayment waiting between: no
    /// 400 is answered in the makePayment's place (Hummingbird's 400 was, after the health answer,
    /// and the client took it for the makePayment's). It is either answered itself (when it
    /// started before the bad request was read) or left unstarted, the connection closed.
    @Test func aMalformedRequestBehindAHandedOnOneDoesNotAnswerTheOneBetween() async throws {
        try await LiveWorker.run { client in
            let port = try #require(client.port)
            for round in 0..<5 {
                let id = "mh\(round)"
                #expect(try await client.register(id).status == .created)
                let requests = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n" + RawHTTP.makePayment(id)
                    + "GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n"
                let answers = try await RawHTTP.exchange(port: port, requests, answers: 3, readToEnd: true)
                #expect(answers.first?.status == 200)
                #expect(!answers.contains { $0.status == 400 }, "\(answers.map(\.status))")
                let state = try await client.show(id)["state"] as? String
                if answers.count == 2 {
                    #expect(answers[1].body == #"{"paymentInfo":{"pspTransactionId":"\#(id)","status":"OK"}}"#)
                    #expect(state == "completed")
                } else {
                    #expect(answers.count == 1 && state == "pending", "\(answers.map(\.status)) \(state ?? "-")")
                }
            }
        }
    }

    /// An HTTP/1.0 request without keep-alive ends its connection (HTTP/1.1's persistence is not
    /// HTTP/1.0's default): answered, then closed, for our endpoint and Hummingbird's routes alike.
    /// (The conversion to HTTPTypes drops the version, and both kept the connection open.)
    @Test func anHTTP10RequestWithoutKeepAliveIsAnsweredAndClosed() async throws {
        try await LiveWorker.run { client in
            #expect(try await client.register("h10").status == .created)
            let port = try #require(client.port)
            let makePayment = RawHTTP.makePayment("h10").replacingOccurrences(of: " HTTP/1.1\r\n", with: " HTTP/1.0\r\n")
            let answers = try await RawHTTP.exchange(port: port, makePayment, answers: 1, readToEnd: true)
            #expect(answers.map(\.status) == [200])
            #expect(answers.first?.body == #"{"paymentInfo":{"pspTransactionId":"h10","status":"OK"}}"#)
            #expect(answers.first?.headers["connection"] == "close")
            let health = try await RawHTTP.exchange(port: port, "GET /health HTTP/1.0\r\n\r\n", answers: 1, readToEnd: true)
            #expect(health.map(\.status) == [200])
            #expect(health.first?.headers["connection"] == "close")
            // With keep-alive asked for, the connection stays open for the next request.
            let kept = try await RawHTTP.exchange(port: port, String(repeating: "GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", count: 2), answers: 2)
            #expect(kept.map(\.status) == [200, 200])
            // An HTTP/1.0 client is never sent 100 Continue (it would take it for the answer).
            #expect(try await client.register("h11").status == .created)
            let expecting = RawHTTP.makePayment("h11").replacingOccurrences(of: " HTTP/1.1\r\n", with: " HTTP/1.0\r\nExpect: 100-continue\r\n")
            let answered = try await RawHTTP.exchange(port: port, expecting, answers: 1, readToEnd: true)
            #expect(answered.map(\.status) == [200])
        }
    }

    /// A request pipelined behind one that asked to close the connection is never started: its
    /// answer could not be written (a makePayment authorized, its answer lost).
    @Test func nothingBehindARequestThatClosesIsStarted() async throws {
        try await LiveWorker.run { client in
            #expect(try await client.register("pc1").status == .created)
            let port = try #require(client.port)
            let requests = "GET /health HTTP/1.1\r\nHost: x\r\nConnection: Close\r\n\r\n" + RawHTTP.makePayment("pc1")
            let answers = try await RawHTTP.exchange(port: port, requests, answers: 1, readToEnd: true)
            #expect(answers.map(\.status) == [200])
            #expect(answers.first?.headers["connection"] == "close")
            try await Task.sleep(for: .milliseconds(200))
            #expect(try await client.show("pc1")["state"] as? String == "pending")
        }
    }

    /// Past `--max-connections` a connection is closed at once, its request never read (its
    /// client sees the failure at once, rather than waiting unseen in the accept queue); once a
    /// connection closes, a new one is served. (On the worker's process: what the connection limit
    /// needs is the server's real accept path.)
    @Test func aConnectionPastTheLimitIsClosedUnread() async throws {
        let scratch = try ScratchStore("maxconn")
        defer { scratch.remove() }
        let worker = try await WorkerProcess.start(store: scratch.path, latencyMs: 0, arguments: ["--max-connections", "1"])
        defer { worker.kill(SIGKILL) }
        #expect(try await worker.register("mc1") == 201)
        let port = worker.port
        let makePayment = RawHTTP.makePayment("mc1")
        let health = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
        let (servedFirst, servedPastTheLimit, servedOnceClosed) = try await RawHTTP.offThePool {
            // The registration's connection may not have given its place back yet (the worker
            // sees its close a moment later): until it has, a new one is closed unread.
            var first = try RawHTTP.Connection(port: port, timeoutSeconds: 5)
            var servedFirst: [RawHTTP.Answer] = []
            for _ in 0..<50 {
                try? first.send(health)
                servedFirst = (try? first.read(answers: 1)) ?? []
                if !servedFirst.isEmpty { break }
                Thread.sleep(forTimeInterval: 0.1)
                first = try RawHTTP.Connection(port: port, timeoutSeconds: 5)
            }
            let past = try RawHTTP.Connection(port: port, timeoutSeconds: 5)
            try? past.send(makePayment)
            let servedPastTheLimit = (try? past.read(answers: 1, readToEnd: true)) ?? []
            first.close()
            var servedOnceClosed: [RawHTTP.Answer] = []
            for _ in 0..<50 where servedOnceClosed.isEmpty {
                Thread.sleep(forTimeInterval: 0.1)
                let next = try RawHTTP.Connection(port: port, timeoutSeconds: 5)
                try? next.send(health)
                servedOnceClosed = (try? next.read(answers: 1)) ?? []
            }
            return (servedFirst.map(\.status), servedPastTheLimit.map(\.status), servedOnceClosed.map(\.status))
        }
        #expect(servedFirst == [200])
        #expect(servedPastTheLimit == [], "a connection past the limit was served")
        #expect(servedOnceClosed == [200])
        // The makePayment sent on the connection past the limit was never started. (Each call
        // below is a connection of its own: one may come before the last one's place is free.)
        var state: String?
        try await waitUntil(within: .seconds(10)) { state = (try? await worker.show("mc1"))?["state"] as? String; return state != nil }
        #expect(state == "pending")
        var metrics = ""
        try await waitUntil(within: .seconds(10)) { metrics = (try? await worker.request("GET", "/metrics").1) ?? ""; return !metrics.isEmpty }
        let refused = metrics.split(separator: "\n").first { $0.hasPrefix("psp_http_connections_refused_total ") }
            .flatMap { Int($0.split(separator: " ").last ?? "") }
        #expect((refused ?? 0) >= 1, "\(metrics)")
    }

    @Test func connectionCloseIsHonoured() async throws {
        try await LiveWorker.run { client in
            let port = try #require(client.port)
            let body = #"{"pspTransactionId":"none","merchantSerialNumber":"123456","cardData":"AA==","confirmed":"YES"}"#
            let request = "POST /makePayment?x=1 HTTP/1.1\r\nHost: x\r\nAuthorization: t\r\nConnection: close\r\nContent-Length: \(body.utf8.count)\r\n\r\n" + body
            // Answered (404: no such payment), then closed by the server: reading to the end returns.
            let answers = try await RawHTTP.exchange(port: port, request, answers: 1, readToEnd: true)
            #expect(answers.map(\.status) == [404])
            #expect(answers[0].headers["connection"] == "close")
        }
    }
}

/// A bare HTTP/1.1 client on a socket, for what a test client hides (pipelining, connection close).
enum RawHTTP {
    struct Answer: Sendable { var status: Int; var headers: [String: String]; var body: String }

    /// A whole makePayment request for registered payment `id` (its token "token-<id>"), with an approved card.
    static func makePayment(_ id: String) -> String {
        let body = #"{"pspTransactionId":"\#(id)","merchantSerialNumber":"123456","cardData":"\#(TestKeys.cardData(code: "00"))","confirmed":"YES"}"#
        return "POST /makePayment HTTP/1.1\r\nHost: x\r\nAuthorization: token-\(id)\r\nContent-Type: application/json\r\n"
            + "Content-Length: \(body.utf8.count)\r\n\r\n" + body
    }

    /// Sends `requests` on a new connection (then, with `halfClose`, closes its sending side) and
    /// reads `count` answers, or, with `readToEnd`, until the server closes.
    static func exchange(port: Int, _ requests: String, answers count: Int, readToEnd: Bool = false,
                         halfClose: Bool = false) async throws -> [Answer] {
        try await offThePool {
            let connection = try Connection(port: port)
            try connection.send(requests)
            if halfClose { connection.shutdownWrite() }
            return try connection.read(answers: count, readToEnd: readToEnd)
        }
    }

    /// Runs blocking socket calls on a thread of their own: blocked on a pool thread, they could
    /// starve the worker under test (two cores, two pool threads) until their 10 s timeout.
    static func offThePool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            let thread = Thread { continuation.resume(with: Result { try body() }) }
            thread.start()
        }
    }

    /// One connection, for exchanges in steps (a head, its interim answer, then the body).
    final class Connection {
        private let fd: Int32
        private var received: [UInt8] = []

        /// `timeoutSeconds`: how long a read may wait for the next bytes before it fails.
        init(port: Int, timeoutSeconds: Int = 10) throws {
            fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = in_port_t(UInt16(port).bigEndian)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard connected == 0 else { Glibc.close(fd); throw RawHTTPError.connect }
        }

        private var isOpen = true

        /// Closes the connection now (else at deinit).
        func close() {
            guard isOpen else { return }
            isOpen = false
            Glibc.close(fd)
        }

        deinit { close() }

        func send(_ text: String) throws {
            let bytes = Array(text.utf8)
            var sent = 0
            while sent < bytes.count {
                let n = bytes[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, 0) }
                guard n > 0 else { throw RawHTTPError.send }
                sent += n
            }
        }

        /// Closes the client's sending side (a half-close): the server reads the end of its input.
        func shutdownWrite() { shutdown(fd, Int32(SHUT_WR)) }

        /// Reads until `count` answers have come (or, with `readToEnd`, until the server closes).
        func read(answers count: Int, readToEnd: Bool = false) throws -> [Answer] {
            var answers: [Answer] = []
            var buffer = [UInt8](repeating: 0, count: 65536)
            while true {
                var consumed = 0
                defer { received.removeFirst(consumed) }
                while let (answer, used) = parse(received[consumed...]) {
                    answers.append(answer)
                    consumed += used
                    if answers.count >= count && !readToEnd { return answers }
                }
                if answers.count >= count && !readToEnd { return answers }
                let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                if n == 0 { return answers }  // closed by the server
                guard n > 0 else { throw RawHTTPError.timeout(answers.count) }
                received.append(contentsOf: buffer[..<n])
            }
        }
    }

    /// One whole answer (with Content-Length) from the front of `bytes`, and how many bytes it used.
    static func parse(_ all: ArraySlice<UInt8>) -> (Answer, Int)? {
        let head = Array(all.prefix(4096))  // an answer's head is short; its body is read from `all`
        let separator: [UInt8] = [13, 10, 13, 10]
        guard head.count >= 4, let end = (0...(head.count - 4)).first(where: { head[$0] == 13 && Array(head[$0..<$0 + 4]) == separator }) else { return nil }
        let lines = String(decoding: head[..<end], as: UTF8.self).components(separatedBy: "\r\n")
        let status = Int(lines[0].split(separator: " ")[1]) ?? 0
        var headers: [String: String] = [:]
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        let length = Int(headers["content-length"] ?? "0") ?? 0
        guard all.count >= end + 4 + length else { return nil }
        let bodyStart = all.startIndex + end + 4
        return (Answer(status: status, headers: headers, body: String(decoding: all[bodyStart..<(bodyStart + length)], as: UTF8.self)), end + 4 + length)
    }

    enum RawHTTPError: Error { case connect, send, timeout(Int) }
}

/// The worker's store, with reads that can be made to fail or to hang, or writes to fail
/// (`/health/ready`'s probe).
final class ReadFaultStore: ForwardingPaymentStore {
    enum Fault { case fail, stall, writesFail }
    struct ReadFailed: Error {}
    let base: any PaymentStore
    let fault = Mutex<Fault?>(nil)
    /// Probe writes made.
    let probes = Mutex(0)
    init(_ base: any PaymentStore) { self.base = base }

    var writesFailing: Bool { fault.withLock { $0 == .writesFail } || base.writesFailing }
    func probeWrite(now: Int64) async throws {
        probes.withLock { $0 += 1 }
        if fault.withLock({ $0 == .writesFail }) { throw ReadFailed() }
        try await base.probeWrite(now: now)
    }

    func payment(_ id: String) async throws -> PaymentRecord? {
        switch fault.withLock({ $0 }) {
        case .fail?: throw ReadFailed()
        case .stall?: try await Task.sleep(for: .seconds(3)); return nil
        case nil, .writesFail?: return try await base.payment(id)
        }
    }
}
