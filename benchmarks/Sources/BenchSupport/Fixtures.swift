import CardCrypto
import Foundation
import MakePayment
import _CryptoExtras

/// The project's TEST keys and cryptograms made with them, for every suite.
public enum Fixtures {
    /// keys-example of the project: `$PSP_KEYS_DIR`, else found from this file's place in the tree.
    public static let keysDirectory: String = {
        if let dir = ProcessInfo.processInfo.environment["PSP_KEYS_DIR"] { return dir }
        return URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()  // benchmarks/
            .deletingLastPathComponent().appendingPathComponent("keys-example").path
    }()

    public static var privateKeyPath: String { keysDirectory + "/psp-private-key.pem" }
    public static var publicKeyPath: String { keysDirectory + "/psp-public-key.pem" }

    /// A month before the cards' expiry, so that parsing never refuses them.
    public static let currentMonth = CardExpiry(year: 2026, month: 11)!

    /// The worker's key ring with `concurrency` prepared contexts.
    public static func keyRing(concurrency: Int = ProcessInfo.processInfo.activeProcessorCount) -> KeyRing {
        do {
            return try KeyRing(active: KeyFiles.loadPrivateKey(path: privateKeyPath, passphrase: nil), concurrency: concurrency)
        } catch {
            fatalError("cannot load \(privateKeyPath): \(error)")
        }
    }

    /// `count` distinct cardData values for an approved test card, as Vipps would send them.
    public static func cardData(count: Int) -> [String] {
        do {
            let encryptor = try CardDataEncryptor(publicKey: KeyFiles.loadPublicKey(path: publicKeyPath))
            return (0..<count).map { encryptor.cardData(for: "4925000000000004,3012,bench\($0)")! }
        } catch {
            fatalError("cannot load \(publicKeyPath): \(error)")
        }
    }

    /// swift-crypto's RSA private key, from the same PEM file.
    public static func swiftCryptoKey() -> SwiftCryptoKey {
        do {
            return SwiftCryptoKey(key: try _RSA.Encryption.PrivateKey(
                pemRepresentation: String(contentsOfFile: privateKeyPath, encoding: .utf8)))
        } catch {
            fatalError("swift-crypto cannot load \(privateKeyPath): \(error)")
        }
    }
}

/// swift-crypto's key, to share between threads. `_RSA.Encryption.PrivateKey` is not marked
/// Sendable, but it is an immutable wrapper of a BoringSSL RSA key, whose private operations are
/// safe to run concurrently on one key (BoringSSL locks its lazily built caches).
public struct SwiftCryptoKey: @unchecked Sendable {
    public let key: _RSA.Encryption.PrivateKey
}

/// Each decryption path the suites compare, with the same input: a cardData string.
public enum Decryptions {
    /// Ours, decrypt only: base64, RSA-OAEP-SHA-256 through the shim, plaintext lent and wiped.
    @inline(never)
    public static func ours(_ ring: KeyRing, _ cardData: String) -> Int {
        (try? ring.withDecryptedCardData(cardData) { $0.count }) ?? -1
    }

    /// Ours, makePayment's decrypt and parse steps: the CardData the pipeline uses.
    @inline(never)
    public static func oursParsed(_ ring: KeyRing, _ cardData: String) -> Int {
        guard let card = try? ring.decryptCardData(cardData, currentMonth: Fixtures.currentMonth) else { return -1 }
        return card.expiry.month
    }

    /// swift-crypto: base64 (Foundation) and `_RSA.Encryption.PrivateKey.decrypt`, as its
    /// documentation shows. Same work as `ours`: decode, decrypt, look at the plaintext.
    @inline(never)
    public static func swiftCrypto(_ key: SwiftCryptoKey, _ cardData: String) -> Int {
        guard let ciphertext = Data(base64Encoded: cardData),
              let plaintext = try? key.key.decrypt(ciphertext, padding: .PKCS1_OAEP_SHA256)
        else { return -1 }
        return plaintext.count
    }
}
