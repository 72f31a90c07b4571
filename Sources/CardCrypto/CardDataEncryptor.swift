import CCardCryptoShim

/// What Vipps does with the PSP's public key: RSA-OAEP-SHA-256 of the card data, base64.
/// For tests, keys-example and load generation.
public final class CardDataEncryptor: Sendable {
    public let key: RSAKey
    private let pool: ContextPool

    public init(publicKey key: RSAKey, concurrency: Int = 1) throws(KeyLoadError) {
        self.key = key
        let handle = KeyHandle(key)
        guard let pool = ContextPool(prepare: concurrency, make: { ccs_encryptor_new(handle.pointer) },
                                     release: { ccs_encryptor_free($0) })
        else { throw .notAPublicKey(path: key.source) }
        self.pool = pool
    }

    /// The raw cryptogram, or nil when the plaintext is too long for OAEP under this key.
    public func encrypt(_ plaintext: UnsafeRawBufferPointer) -> [UInt8]? {
        var out = [UInt8](repeating: 0, count: key.modulusBytes)
        var written = 0
        let ok = out.withUnsafeMutableBufferPointer { o in
            pool.withContext { ctx in
                ccs_encryptor_encrypt(ctx, plaintext.baseAddress?.assumingMemoryBound(to: UInt8.self), plaintext.count,
                                      o.baseAddress, o.count, &written)
            }
        }
        guard ok == 1 else { return nil }
        return Array(out[..<written])
    }

    /// The `cardData` value for `plaintext` such as "4925000000000004,2212,3854ba01".
    public func cardData(for plaintext: String) -> String? {
        var text = plaintext
        return text.withUTF8 { bytes in
            encrypt(UnsafeRawBufferPointer(bytes)).map { c in c.withUnsafeBytes { StrictBase64.encode($0) } }
        }
    }
}
