import CCardCryptoShim
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Why a key could not be used. The messages are for operators: they name the file and the reason,
/// never key material or OpenSSL's own text.
public enum KeyLoadError: Error, CustomStringConvertible, Equatable {
    case unreadableFile(path: String, reason: String)
    case notAPrivateKey(path: String)
    case notAPublicKey(path: String)
    case needsPassphrase(path: String)
    case wrongPassphrase(path: String)
    case notRSA(path: String)
    case tooShort(path: String)
    case tooLong(path: String)
    case weakExponent(path: String)
    case inconsistent(path: String)
    case emptyPassphrase(source: String)
    case passphraseTooLong(source: String)
    case generationFailed

    public var description: String {
        switch self {
        case .unreadableFile(let path, let reason): "cannot read \(path): \(reason)"
        case .notAPrivateKey(let path): "\(path) is not a PEM private key (PKCS#8, PKCS#1 or encrypted PKCS#8)"
        case .notAPublicKey(let path): "\(path) is not a PEM public key (SubjectPublicKeyInfo or PKCS#1)"
        case .needsPassphrase(let path): "\(path) is encrypted; give its passphrase with --passphrase-file or PSP_KEY_PASSPHRASE"
        case .wrongPassphrase(let path): "the passphrase does not open \(path)"
        case .notRSA(let path): "\(path) is not an RSA encryption key; Vipps encrypts card data with RSA-OAEP"
        case .tooShort(let path): "\(path) is an RSA key shorter than 2048 bits; refused"
        case .tooLong(let path): "\(path) is an RSA key longer than 8192 bits; refused"
        case .weakExponent(let path): "\(path) is an RSA key whose public exponent is even, under 65537 or over 2^256 (FIPS 186-5); refused"
        case .inconsistent(let path): "\(path) is an RSA private key whose parts do not agree (n, e, d, p, q or the CRT values): a damaged or altered key file; refused"
        case .emptyPassphrase(let source): "the passphrase from \(source) is empty"
        case .passphraseTooLong(let source):
            "the passphrase from \(source) is over \(KeyFiles.maxPassphraseBytes) bytes, more than OpenSSL's PEM reader takes (the openssl tool keeps only the first 1,023 bytes of a line)"
        case .generationFailed: "OpenSSL could not generate an RSA key"
        }
    }

    init(reason: Int32, path: String, expectingPrivate: Bool) {
        switch Int(reason) {
        case Int(CCS_KEY_NEEDS_PASSPHRASE): self = .needsPassphrase(path: path)
        case Int(CCS_KEY_BAD_PASSPHRASE): self = .wrongPassphrase(path: path)
        case Int(CCS_KEY_NOT_RSA): self = .notRSA(path: path)
        case Int(CCS_KEY_TOO_SHORT): self = .tooShort(path: path)
        case Int(CCS_KEY_TOO_LONG): self = .tooLong(path: path)
        case Int(CCS_KEY_WEAK_EXPONENT): self = .weakExponent(path: path)
        case Int(CCS_KEY_INCONSISTENT): self = .inconsistent(path: path)
        default: self = expectingPrivate ? .notAPrivateKey(path: path) : .notAPublicKey(path: path)
        }
    }
}

/// An RSA key of at least 2048 bits, parsed once. Owns its OpenSSL handle.
public final class RSAKey: @unchecked Sendable {
    // @unchecked: the EVP_PKEY is never mutated after loading; users take their own copy
    // (EVP_PKEY_dup) before any private-key operation, and dup/encode only read it.
    let handle: OpaquePointer
    public let isPrivate: Bool
    /// Where the key came from, for log lines ("keys/psp.pem"), never its content.
    public let source: String

    init(handle: OpaquePointer, isPrivate: Bool, source: String) {
        self.handle = handle
        self.isPrivate = isPrivate
        self.source = source
    }

    deinit { ccs_key_free(handle) }

    public var bits: Int { Int(ccs_key_bits(handle)) }
    public var modulusBytes: Int { Int(ccs_key_modulus_bytes(handle)) }

    /// Parses a PEM private key: PKCS#8, PKCS#1, or encrypted PKCS#8 with `passphrase`.
    public static func privateKey(
        pem: borrowing SecureBytes, passphrase: borrowing SecureBytes? = nil, source: String = "key"
    ) throws(KeyLoadError) -> RSAKey {
        var reason: Int32 = 0
        let handle: OpaquePointer? = pem.withUnsafeBytes { pemBytes in
            switch passphrase {
            case .some(let phrase):
                phrase.withUnsafeBytes { phraseBytes in
                    ccs_private_key_from_pem(pemBytes.baseAddress, pemBytes.count,
                                             phraseBytes.baseAddress ?? UnsafeRawPointer(bitPattern: 1),
                                             phraseBytes.count, &reason)
                }
            case .none:
                ccs_private_key_from_pem(pemBytes.baseAddress, pemBytes.count, nil, 0, &reason)
            }
        }
        guard let handle else { throw KeyLoadError(reason: reason, path: source, expectingPrivate: true) }
        return RSAKey(handle: handle, isPrivate: true, source: source)
    }

    /// Parses a PEM public key (SubjectPublicKeyInfo or PKCS#1).
    public static func publicKey(pem: [UInt8], source: String = "key") throws(KeyLoadError) -> RSAKey {
        // (Array's withUnsafeBytes rethrows untyped: the typed error is carried out in a Result.)
        try pem.withUnsafeBytes { bytes in Result { () throws(KeyLoadError) -> RSAKey in try publicKey(pemBytes: bytes, source: source) } }.get()
    }

    /// The same from a file's wiped buffer (a private key file given where a public key is asked
    /// for must not leave a plain copy of itself behind).
    public static func publicKey(pem: borrowing SecureBytes, source: String = "key") throws(KeyLoadError) -> RSAKey {
        try pem.withUnsafeBytes { (bytes) throws(KeyLoadError) -> RSAKey in try publicKey(pemBytes: bytes, source: source) }
    }

    private static func publicKey(pemBytes: UnsafeRawBufferPointer, source: String) throws(KeyLoadError) -> RSAKey {
        var reason: Int32 = 0
        guard let handle = ccs_public_key_from_pem(pemBytes.baseAddress, pemBytes.count, &reason) else {
            throw KeyLoadError(reason: reason, path: source, expectingPrivate: false)
        }
        return RSAKey(handle: handle, isPrivate: false, source: source)
    }

    /// A new RSA key pair.
    public static func generate(bits: Int = 2048) throws(KeyLoadError) -> RSAKey {
        precondition(bits >= 2048, "keys under 2048 bits are refused")
        guard let handle = ccs_generate_rsa_key(UInt32(bits)) else { throw .generationFailed }
        return RSAKey(handle: handle, isPrivate: true, source: "generated")
    }

    /// The private key as unencrypted PKCS#8 PEM, in a buffer that wipes itself.
    public func privateKeyPKCS8PEM() -> SecureBytes? {
        guard isPrivate else { return nil }
        var out: UnsafeMutablePointer<UInt8>? = nil
        var length = 0
        guard ccs_key_private_pkcs8_pem(handle, &out, &length) == 1, let out else { return nil }
        defer { ccs_free_secret(out, length) }
        return SecureBytes(copying: UnsafeRawBufferPointer(start: out, count: length))
    }

    /// The public key as SubjectPublicKeyInfo PEM: what is handed to Vipps at onboarding. Nil if
    /// OpenSSL could not encode it (out of memory).
    public func publicKeyPEM() -> String? {
        var out: UnsafeMutablePointer<UInt8>? = nil
        var length = 0
        guard ccs_key_public_spki_pem(handle, &out, &length) == 1, let out else { return nil }
        defer { ccs_free(out) }
        return String(decoding: UnsafeRawBufferPointer(start: out, count: length), as: UTF8.self)
    }

    /// SHA-256 of the public key (DER SubjectPublicKeyInfo), hex: safe to log, tells keys apart.
    public var fingerprint: String {
        var digest = [UInt8](repeating: 0, count: 32)
        guard ccs_key_public_fingerprint(handle, &digest) == 1 else { return "unknown" }
        return hex(digest)
    }
}

func hex(_ bytes: some Sequence<UInt8>) -> String {
    let digits = Array("0123456789abcdef".utf8)
    var out = [UInt8]()
    for b in bytes { out.append(digits[Int(b >> 4)]); out.append(digits[Int(b & 0x0f)]) }
    return String(decoding: out, as: UTF8.self)
}
