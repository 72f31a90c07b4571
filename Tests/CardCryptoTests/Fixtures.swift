import CardCrypto
import Foundation
import Testing

/// Test fixtures under Fixtures/, copied into the test bundle.
enum Fixtures {
    static func url(_ name: String) -> URL {
        Bundle.module.url(forResource: name, withExtension: nil, subdirectory: "Fixtures")!
    }
    static func path(_ name: String) -> String { url(name).path }
    static func bytes(_ name: String) throws -> [UInt8] { Array(try Data(contentsOf: url(name))) }

    static func privateKey(_ name: String = "psp-private-key.pem", passphrase: String? = nil) throws -> RSAKey {
        let pem = SecureBytes(copying: try bytes(name))
        if let passphrase {
            return try RSAKey.privateKey(pem: pem, passphrase: SecureBytes(copying: Array(passphrase.utf8)), source: name)
        }
        return try RSAKey.privateKey(pem: pem, source: name)
    }

    static func publicKey() throws -> RSAKey { try RSAKey.publicKey(pem: bytes("psp-public-key.pem"), source: "psp-public-key.pem") }

    /// Named in test output by `name` (Swift Testing's protocol): its plaintext, a card, is not printed.
    struct InteropCase: Decodable, CustomTestStringConvertible {
        let name: String
        let cardData: String
        let valid: Bool
        let plaintext: String?
        var testDescription: String { name }
    }
    static func interopCases() throws -> [InteropCase] {
        struct File: Decodable { let cases: [InteropCase] }
        return try JSONDecoder().decode(File.self, from: Data(contentsOf: url("interop-cases.json"))).cases
    }

    struct WycheproofCase: Decodable {
        let tcId: Int
        let comment: String
        let msg: String
        let ct: String
        let label: String
        let result: String
    }
    struct WycheproofGroup: Decodable { let privateKeyPem: String; let tests: [WycheproofCase] }
    static func wycheproof() throws -> WycheproofGroup {
        struct File: Decodable { let testGroups: [WycheproofGroup] }
        let file = try JSONDecoder().decode(File.self, from: Data(contentsOf: url("wycheproof_rsa_oaep_2048_sha256_mgf1sha256_test.json")))
        return file.testGroups[0]
    }
}

extension Array where Element == UInt8 {
    init(hex: String) {
        var out: [UInt8] = []
        var it = hex.utf8.makeIterator()
        func nibble(_ c: UInt8) -> UInt8 { c <= 57 ? c - 48 : (c | 0x20) - 87 }
        while let a = it.next(), let b = it.next() { out.append(nibble(a) << 4 | nibble(b)) }
        self = out
    }
}

extension KeyRing {
    /// The plaintext as text, or nil when decryption fails: for assertions only.
    func decryptToString(_ cardData: String) -> String? {
        try? withDecryptedCardData(cardData) { String(decoding: $0, as: UTF8.self) }
    }

    func decryptToBytes(_ cardData: String) -> [UInt8]? {
        try? withDecryptedCardData(cardData) { Array($0) }
    }
}
