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
            keys.append(try KeyFiles.loadPrivateKey(path: path, passphrase: passphrase))
        }
        let ring = try KeyRing(active: keys[0], retiring: Array(keys.dropFirst()), concurrency: concurrency)
        return (ring, warnings)
    }
}
