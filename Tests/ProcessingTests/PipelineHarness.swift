import Acquiring
import CardCrypto
import Foundation
import MakePayment
import PaymentStoreConformance
import Processing
import SQLitePaymentStore

/// A pipeline over a real SQLite store in a temporary file, the simulator acquirer and the test key.
final class PipelineHarness: Sendable {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("pipeline-\(UUID().uuidString).sqlite").path
    let store: SQLitePaymentStore
    let acquirer: SimulatorAcquirer
    let pipeline: MakePaymentPipeline
    let encryptor: CardDataEncryptor
    let reversals: ReversalService

    static let keyRing: KeyRing = {
        let pem = try! Data(contentsOf: Bundle.module.url(forResource: "psp-private-key", withExtension: "pem", subdirectory: "Fixtures")!)
        return try! KeyRing(active: RSAKey.privateKey(pem: SecureBytes(copying: Array(pem))))
    }()
    static let publicKey: RSAKey = {
        let pem = try! Data(contentsOf: Bundle.module.url(forResource: "psp-public-key", withExtension: "pem", subdirectory: "Fixtures")!)
        return try! RSAKey.publicKey(pem: Array(pem))
    }()

    init(acquirerTimeout: Duration = .seconds(2), instanceId: String = "test-instance", latency: Duration = .zero) throws {
        store = try SQLitePaymentStore(path: path)
        acquirer = SimulatorAcquirer(latency: latency)
        var reversalConfiguration = ReversalService.Configuration()
        reversalConfiguration.timeout = .seconds(1)
        reversals = ReversalService(store: store, acquirer: acquirer, configuration: reversalConfiguration)
        pipeline = Self.pipeline(store: store, acquirer: acquirer, reversals: reversals, acquirerTimeout: acquirerTimeout, instanceId: instanceId)
        encryptor = try CardDataEncryptor(publicKey: Self.publicKey)
    }

    /// A pipeline with the test key and month, over `store` (the harness's, or a decorator of it).
    static func pipeline(store: any PaymentStore, acquirer: any AcquirerAdapter, reversals: ReversalService? = nil, acquirerTimeout: Duration = .seconds(2),
                         instanceId: String = "x", now: @escaping @Sendable () -> Int64 = wallClockMilliseconds) -> MakePaymentPipeline {
        MakePaymentPipeline(configuration: .init(acquirerTimeout: acquirerTimeout, instanceId: instanceId),
                            keyRing: keyRing, store: store, acquirer: acquirer, reversals: reversals, now: now,
                            currentMonth: { CardExpiry(year: 2026, month: 11)! })
    }

    /// This harness's acquirer and reversals over another store (a decorator that stalls or fails).
    func pipeline(over store: any PaymentStore, acquirerTimeout: Duration, instanceId: String,
                  now: @escaping @Sendable () -> Int64 = wallClockMilliseconds) -> MakePaymentPipeline {
        Self.pipeline(store: store, acquirer: acquirer, reversals: reversals, acquirerTimeout: acquirerTimeout, instanceId: instanceId, now: now)
    }

    deinit {
        store.close()
        for suffix in ["", "-wal", "-shm", "-gate"] { try? FileManager.default.removeItem(atPath: path + suffix) }
    }

    /// Registers a payment with token "token-<id>".
    func register(_ id: String, amount: Int = 1000) async throws {
        var registration = PaymentStoreConformance.registration(id, amount: amount)
        registration.tokenHash = Secrets.sha256("token-" + id)
        _ = try await store.register(registration, now: 1)
    }

    static let masked = MaskedPAN(masked: "400000******0002")!

    /// Begins an attempt for registered payment `id`, as process `instance` would have, started at
    /// `startedAt` (and orphaned at `orphanedAt`; nil: as an older build recorded it).
    @discardableResult
    func beginAttempt(_ id: String, instance: String, startedAt: Int64, orphanedAt: Int64? = nil) async throws -> AttemptRecord {
        let attempt = AttemptRecord(attemptId: id + "-attempt", instanceId: instance, maskedPAN: Self.masked, startedAt: startedAt,
                                    orphanedAt: orphanedAt)
        guard try await store.beginAttempt(id, attempt: attempt, now: startedAt) == .begun else { throw HarnessError("\(id): attempt not begun") }
        return attempt
    }

    /// Registers `id`, begins an attempt and records it answered 85 with its reversal due now, not sent.
    @discardableResult
    func reversalDue(_ id: String) async throws -> ReversalRequest {
        try await register(id)
        let attempt = try await beginAttempt(id, instance: "test-instance", startedAt: 1)
        let reversal = ReversalRequest(reversalId: id + "-R", pspTransactionId: id, attemptId: attempt.attemptId,
                                       attemptReference: attempt.attemptReference, amount: 1000, currency: "NOK", merchantSerialNumber: "123456")
        let outcome = PaymentOutcome(status: .fail, error: APIError.responseReceivedTooLate.message, maskedPAN: Self.masked)
        _ = try await store.recordOutcome(id, outcome: outcome, reversal: reversal, attemptId: attempt.attemptId, now: wallClockMilliseconds())
        return reversal
    }

    struct HarnessError: Error { let description: String; init(_ d: String) { description = d } }

    func cardData(_ plaintext: String) -> String { encryptor.cardData(for: plaintext)! }

    func cardData(code: String) -> String { cardData(SimulatorAcquirer.testCard(code: code) + ",3012,session") }

    func request(_ id: String, cardData: String, confirmed: Confirmed = .yes, merchant: String = "123456") -> MakePaymentRequest {
        MakePaymentRequest(pspTransactionId: id, merchantSerialNumber: merchant, cardData: cardData, confirmed: confirmed)
    }

    func makePayment(_ request: MakePaymentRequest?, token: String? = nil, queue: (any MakePaymentQueue)? = nil,
                     through pipeline: MakePaymentPipeline? = nil) async -> MakePaymentResult {
        await (pipeline ?? self.pipeline).handle(body: request, authorization: token ?? request.map { "token-" + $0.pspTransactionId }, queue: queue)
    }
}
