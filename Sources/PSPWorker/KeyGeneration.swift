import CardCrypto
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

public struct KeyGenerationError: Error, CustomStringConvertible {
    public let description: String
}

/// `psp-worker keygen`: a new key pair on disk. The private key file is created with mode 0600 from
/// the start (never written and then chmod-ed) and is never overwritten.
public enum KeyGeneration {
    public static func writeKeyPair(bits: Int, directory: String) throws {
        if mkdir(directory, 0o700) != 0 && errno != EEXIST {
            throw KeyGenerationError(description: "cannot create \(directory): \(String(cString: strerror(errno)))")
        }
        let privatePath = directory + "/private-key.pem", publicPath = directory + "/public-key.pem"
        // Neither file may exist: a new private key beside an old public key would be a pair that
        // does not match (and the next run would refuse, the private key being there).
        for path in [privatePath, publicPath] where access(path, F_OK) == 0 {
            throw KeyGenerationError(description: "\(path) exists (an existing key is never overwritten)")
        }
        let key = try RSAKey.generate(bits: bits)
        guard let pem = key.privateKeyPKCS8PEM() else { throw KeyGenerationError(description: "cannot encode the private key") }
        try pem.withUnsafeBytes { try writeFile($0, to: privatePath, mode: 0o600) }
        do {
            guard var publicPEM = key.publicKeyPEM() else { throw KeyGenerationError(description: "cannot encode the public key") }
            try publicPEM.withUTF8 { try writeFile(UnsafeRawBufferPointer($0), to: publicPath, mode: 0o644) }
        } catch {
            unlink(privatePath)  // no half pair left behind
            throw error
        }
    }

    static func writeFile(_ bytes: UnsafeRawBufferPointer, to path: String, mode: mode_t) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        guard fd >= 0 else {
            throw KeyGenerationError(description: "cannot create \(path): \(String(cString: strerror(errno))) (an existing key is never overwritten)")
        }
        defer { close(fd) }
        do {
            var done = 0
            while done < bytes.count {
                let n = write(fd, bytes.baseAddress! + done, bytes.count - done)
                if n < 0 { if errno == EINTR { continue }; throw KeyGenerationError(description: "cannot write \(path): \(String(cString: strerror(errno)))") }
                done += n
            }
            guard fsync(fd) == 0 else { throw KeyGenerationError(description: "cannot sync \(path)") }
        } catch {
            unlink(path)  // a truncated key file is worse than none
            throw error
        }
    }
}
