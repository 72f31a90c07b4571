import CardCrypto
import Foundation
import PSPWorker
import Testing

@Suite struct KeyRingSourceTests {
    /// The repository's TEST key is public: a worker started on it says so (README's own commands
    /// use it, and an operator who copied one of them must not go live on it unwarned).
    @Test func thePublishedTestKeyIsNamedAtLoad() throws {
        let (_, warnings) = try KeyRingSource(privateKeyPath: TestKeys.path("psp-private-key")).load(concurrency: 1)
        #expect(warnings.contains { $0.contains("TEST key published in this repository") })
    }

    @Test func anotherKeyLoadsWithoutThatWarning() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("key-\(UUID().uuidString).pem").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        guard let pem = try RSAKey.generate().privateKeyPKCS8PEM() else { Issue.record("no PEM"); return }
        let written = pem.withUnsafeBytes { (bytes: UnsafeRawBufferPointer) -> Bool in
            FileManager.default.createFile(atPath: path, contents: Data(bytes: bytes.baseAddress!, count: bytes.count),
                                           attributes: [.posixPermissions: 0o600])
        }
        #expect(written)
        let (ring, warnings) = try KeyRingSource(privateKeyPath: path).load(concurrency: 1)
        #expect(!ring.active.fingerprint.isEmpty)
        #expect(!warnings.contains { $0.contains("TEST key") }, "\(warnings)")
    }
}
