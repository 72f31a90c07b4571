import CCardCryptoShim

/// The one way decryption fails. Deliberately says nothing about which check failed: after the RSA
/// operation every failure must look the same (Manger's attack on OAEP feeds on differences).
public struct UnableToDecrypt: Error, CustomStringConvertible, Equatable {
    public init() {}
    public var description: String { "unable to decrypt" }
}

/// The PSP's private keys: one active key and any number of retiring ones (rotation: Vipps has the
/// new public key while cryptograms for the old one are still in flight). Decryption tries the
/// active key first, then the retiring ones, each through contexts prepared once at start.
public final class KeyRing: Sendable {
    public let active: RSAKey
    public let retiring: [RSAKey]
    private let pools: [(modulusBytes: Int, pool: ContextPool)]
    /// The largest modulus in the ring, in bytes: the size of a plaintext buffer.
    public let maxModulusBytes: Int

    /// - Parameter concurrency: how many decryption contexts to prepare per key up front.
    public init(active: RSAKey, retiring: [RSAKey] = [], concurrency: Int = 2) throws(KeyLoadError) {
        self.active = active
        self.retiring = retiring
        var pools: [(Int, ContextPool)] = []
        for key in [active] + retiring {
            guard key.isPrivate else { throw .notAPrivateKey(path: key.source) }
            let handle = KeyHandle(key)
            guard let pool = ContextPool(
                prepare: concurrency,
                make: { ccs_decryptor_new(handle.pointer) },
                release: { ccs_decryptor_free($0) }
            ) else { throw .notAPrivateKey(path: key.source) }
            pools.append((key.modulusBytes, pool))
        }
        self.pools = pools
        self.maxModulusBytes = pools.map(\.0).max() ?? 256
    }

    /// Decrypts a `cardData` value (base64 of an RSA-OAEP-SHA-256 cryptogram) and lends the plaintext
    /// to `body`; the plaintext is wiped as soon as `body` returns. Allocates nothing on the heap.
    public func withDecryptedCardData<R: ~Copyable>(
        _ cardData: String, _ body: (UnsafeRawBufferPointer) -> R
    ) throws(UnableToDecrypt) -> R {
        // withUTF8 makes the string contiguous; a JSON-decoded string already is, so it does not copy.
        // (withUTF8 cannot return a noncopyable value, hence the Optional carried out of it.)
        var text = cardData
        var outcome: R? = nil
        text.withUTF8 { utf8 in
            outcome = try? withDecryptedCardData(base64: UnsafeRawBufferPointer(utf8), body)
        }
        switch consume outcome {
        case .some(let result): return result
        case .none: throw UnableToDecrypt()
        }
    }

    public func withDecryptedCardData<R: ~Copyable>(
        base64: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer) -> R
    ) throws(UnableToDecrypt) -> R {
        let maxModulus = maxModulusBytes
        // Framing first, before any RSA operation: exactly the base64 of one key's modulus length.
        guard pools.contains(where: { base64.count == ($0.modulusBytes + 2) / 3 * 4 }) else { throw UnableToDecrypt() }
        return try withUnsafeTemporaryAllocation(byteCount: maxModulus * 2, alignment: 16) { scratch throws(UnableToDecrypt) -> R in
            let ciphertext = UnsafeMutableRawBufferPointer(rebasing: scratch[..<maxModulus])
            let plaintext = UnsafeMutableRawBufferPointer(rebasing: scratch[maxModulus...])
            defer { wipe(plaintext) }
            guard let length = StrictBase64.decode(base64, into: ciphertext) else { throw UnableToDecrypt() }
            let input = UnsafeRawBufferPointer(rebasing: ciphertext[..<length])
            for (modulusBytes, pool) in pools where modulusBytes == length {
                var written = 0
                let ok = pool.withContext { context in
                    ccs_decryptor_decrypt(context, input.baseAddress!.assumingMemoryBound(to: UInt8.self), length,
                                          plaintext.baseAddress!.assumingMemoryBound(to: UInt8.self), plaintext.count, &written)
                }
                if ok == 1 {
                    return body(UnsafeRawBufferPointer(rebasing: plaintext[..<written]))
                }
            }
            throw UnableToDecrypt()
        }
    }
}

/// A key handle that may cross into a pool's factory closure: the shim's `ccs_decryptor_new` and
/// `ccs_encryptor_new` only read it, and `owner` keeps the key alive while a context uses it.
struct KeyHandle: @unchecked Sendable {
    let pointer: OpaquePointer
    let owner: RSAKey
    init(_ key: RSAKey) { pointer = key.handle; owner = key }
}
