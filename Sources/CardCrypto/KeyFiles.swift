#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Reading keys and passphrases from files the operator names. Contents go straight into
/// `SecureBytes`, so no copy of a private key or passphrase outlives its use.
public enum KeyFiles {
    /// Reads a whole file into a wiped buffer. Key files are small; anything over 1 MiB is refused.
    public static func readSecret(path: String) throws(KeyLoadError) -> SecureBytes {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .unreadableFile(path: path, reason: String(cString: strerror(errno))) }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw .unreadableFile(path: path, reason: String(cString: strerror(errno))) }
        // A pipe (`--passphrase-file <(…)`, /dev/stdin) has no size: it is read to its end, up to the limit.
        let regular = (info.st_mode & S_IFMT) == S_IFREG
        let limit = 1 << 20
        let size = regular ? Int(info.st_size) : limit
        guard size <= limit else { throw .unreadableFile(path: path, reason: "larger than 1 MiB, not a key file") }
        var buffer = SecureBytes(capacity: size)
        var failure: Int32 = 0
        var full = false
        buffer.withUnsafeMutableCapacity { raw in
            var filled = 0
            while filled < size {
                let n = read(fd, raw.baseAddress! + filled, size - filled)
                if n < 0 { if errno == EINTR { continue }; failure = errno; break }
                if n == 0 { break }
                filled += n
            }
            full = !regular && filled == size
            return filled
        }
        if failure != 0 { throw .unreadableFile(path: path, reason: String(cString: strerror(failure))) }
        if full { throw .unreadableFile(path: path, reason: "larger than 1 MiB, not a key file") }
        return buffer
    }

    /// A warning when a secret's file (a private key, a passphrase) can be read by its group or by
    /// others, else nil. A pipe or a process substitution (`<(…)`) is not a file anyone else reads.
    public static func permissionWarning(path: String, what: String = "private key file") -> String? {
        var info = stat()
        guard stat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else { return nil }
        let mode = info.st_mode & 0o777
        guard mode & 0o077 != 0 else { return nil }
        return "\(what) \(path) has mode \(String(mode, radix: 8)): readable by group or others; use chmod 600"
    }

    /// The longest passphrase: OpenSSL's PEM reader hands its callback a buffer of 1,024 bytes, and
    /// a longer one, not fitting, read as the wrong passphrase. Longer is refused as too long.
    public static let maxPassphraseBytes = 1024

    /// A passphrase from a file (its first line, without the line break) or from an environment
    /// variable. Never from a command-line argument, which any user can read in the process list.
    /// The variable is taken out of the environment even when the file wins, so that no child
    /// process inherits it.
    public static func passphrase(file: String?, environmentVariable: String = "PSP_KEY_PASSPHRASE")
        throws(KeyLoadError) -> SecureBytes?
    {
        if let file {
            discardEnvironmentSecret(environmentVariable)
            let raw = try readSecret(path: file)
            let length = raw.withUnsafeBytes { bytes in
                bytes.firstIndex(where: { $0 == 0x0A || $0 == 0x0D }) ?? bytes.count
            }
            guard length > 0 else { throw .emptyPassphrase(source: file) }
            guard length <= maxPassphraseBytes else { throw .passphraseTooLong(source: file) }
            return raw.withUnsafeBytes { SecureBytes(copying: UnsafeRawBufferPointer(rebasing: $0[..<length])) }
        }
        if let value = getenv(environmentVariable), strlen(value) > maxPassphraseBytes {
            discardEnvironmentSecret(environmentVariable)
            throw .passphraseTooLong(source: environmentVariable)
        }
        // Set but empty (a secret store's lookup that found nothing): said so, not taken for unset.
        if let value = getenv(environmentVariable), value.pointee == 0 {
            discardEnvironmentSecret(environmentVariable)
            throw .emptyPassphrase(source: environmentVariable)
        }
        return takeEnvironmentSecret(environmentVariable)
    }

    /// A secret from the environment, taken out of it: copied, then zeroed where it was (which is
    /// what /proc/PID/environ and a core dump show) and unset. Nil when unset or empty.
    public static func takeEnvironmentSecret(_ name: String) -> SecureBytes? {
        guard let value = getenv(name) else { return nil }
        let length = strlen(value)
        defer {
            wipe(UnsafeMutableRawBufferPointer(start: value, count: length))  // a plain memset may be dropped
            unsetenv(name)
        }
        guard length > 0 else { return nil }
        return SecureBytes(copying: UnsafeRawBufferPointer(start: value, count: length))
    }

    /// Takes a secret out of the environment (zeroed and unset) without keeping it: for one that
    /// another source overrides.
    public static func discardEnvironmentSecret(_ name: String) {
        _ = takeEnvironmentSecret(name)  // its copy is wiped as it goes
    }

    /// Loads a private key from a PEM file, with an optional passphrase.
    public static func loadPrivateKey(path: String, passphrase: borrowing SecureBytes?) throws(KeyLoadError) -> RSAKey {
        let pem = try readSecret(path: path)
        return try RSAKey.privateKey(pem: pem, passphrase: passphrase, source: path)
    }

    /// Loads a public key from a PEM file (SubjectPublicKeyInfo or PKCS#1); a private key file is
    /// accepted too, and only its public half is used.
    public static func loadPublicKey(path: String) throws(KeyLoadError) -> RSAKey {
        let pem = try readSecret(path: path)
        do {
            return try RSAKey.publicKey(pem: pem, source: path)
        } catch {
            do {
                return try RSAKey.privateKey(pem: pem, source: path)
            } catch let privateKeyError {
                // A private key that parsed but was refused (short, a weak exponent, parts that
                // disagree) says why; anything else was no key at all. An encrypted one is not
                // asked for its passphrase here (no tool that wants a public key takes one).
                throw privateKeyError == .notAPrivateKey(path: path) || privateKeyError == .needsPassphrase(path: path) ? error : privateKeyError
            }
        }
    }
}
