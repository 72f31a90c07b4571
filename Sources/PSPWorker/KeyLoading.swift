import CardCrypto

/// Loads the key ring the operator named: one active key, any retiring keys, one optional passphrase
/// (from a file, or PSP_KEY_PASSPHRASE). Returns warnings for the caller to log.
public struct KeyRingSource: Sendable {
    public var privateKeyPath: String
    public var retiringKeyPaths: [String]
    public var passphraseFile: String?

    public init(privateKeyPath: String, retiringKeyPaths: [String] = [], passphraseFile: String? = nil) {
        self.privateKeyPath = privateKeyPath
        self.retiringKeyPaths = retiringKeyPaths
        self.passphraseFile = passphraseFile
    }

    /// SHA-256 of the public keys (SubjectPublicKeyInfo) whose private halves are public: the
    /// repository's TEST key (keys-example, the tests' fixtures).
    static let publishedTestKeys: Set<String> = ["28e8355eff54b884bd7271c52f3f55255e07fb0d736140491a7e1ad4a7a15e75"]

    public func load(concurrency: Int) throws(KeyLoadError) -> (ring: KeyRing, warnings: [String]) {
        let passphrase = try KeyFiles.passphrase(file: passphraseFile)
        var warnings: [String] = []
        if let passphraseFile, let warning = KeyFiles.permissionWarning(path: passphraseFile, what: "passphrase file") {
            warnings.append(warning)
        }
        let paths = [privateKeyPath] + retiringKeyPaths
        var keys: [RSAKey] = []
        for path in paths {
            if let warning = KeyFiles.permissionWarning(path: path) { warnings.append(warning) }
            let key = try KeyFiles.loadPrivateKey(path: path, passphrase: passphrase)
            if Self.publishedTestKeys.contains(key.fingerprint) {
                warnings.append("\(path) is the TEST key published in this repository (keys-example): anyone can decrypt card data encrypted for it; for tests and load tests only, never with real cards")
            }
            keys.append(key)
        }
        let ring = try KeyRing(active: keys[0], retiring: Array(keys.dropFirst()), concurrency: concurrency)
        return (ring, warnings)
    }
}
