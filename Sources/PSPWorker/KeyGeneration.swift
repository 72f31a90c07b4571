import CardCrypto
import Foundation
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
/// the start (never written and then chmod-ed) and is never overwritten. Each file is written under
/// a temporary name (`<name>.partial-<random>`), synced, then linked to its own (which fails if that
/// exists) and the folder synced: a crash or a full disk leaves no truncated key under the name, and
/// a pair reported written survives a power cut. A temporary file a killed run left is removed by
/// the next (it was never a key anyone was given).
public enum KeyGeneration {
    public static func writeKeyPair(bits: Int, directory: String) throws {
        try makeDirectories(directory)
        removeLeftovers(in: directory)
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
        try syncDirectory(directory)
    }

    /// `directory` made with mode 0700 and any missing folder above it as `mkdir -p` makes them
    /// (0755 less the umask: a parent such as /etc/psp-worker must stay open to the worker's user);
    /// an error, before any key is made, if it is something other than a folder.
    static func makeDirectories(_ directory: String) throws {
        var path = directory.hasPrefix("/") ? "" : "."
        let components = directory.split(separator: "/", omittingEmptySubsequences: true)
        for (i, component) in components.enumerated() {
            path += "/" + component
            if mkdir(path, i == components.count - 1 ? 0o700 : 0o755) != 0 && errno != EEXIST {
                throw KeyGenerationError(description: "cannot create \(path): \(String(cString: strerror(errno)))")
            }
        }
        var info = stat()
        guard stat(directory, &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR else {
            throw KeyGenerationError(description: "\(directory) is not a folder")
        }
    }

    /// The temporary files of a run that was killed before it linked them.
    static func removeLeftovers(in directory: String) {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return }
        for name in names where name.hasPrefix("private-key.pem.partial-") || name.hasPrefix("public-key.pem.partial-") {
            unlink(directory + "/" + name)
        }
    }

    static func writeFile(_ bytes: UnsafeRawBufferPointer, to path: String, mode: mode_t) throws {
        // Beside the final name, under one no run shares.
        let temporary = path + ".partial-" + Secrets.hexString(Secrets.randomBytes(6))
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode)
        guard fd >= 0 else {
            throw KeyGenerationError(description: "cannot create \(temporary): \(String(cString: strerror(errno)))")
        }
        defer { unlink(temporary) }  // linked to its name, or a truncated file worse than none
        do {
            defer { close(fd) }
            var done = 0
            while done < bytes.count {
                let n = write(fd, bytes.baseAddress! + done, bytes.count - done)
                if n < 0 { if errno == EINTR { continue }; throw KeyGenerationError(description: "cannot write \(temporary): \(String(cString: strerror(errno)))") }
                done += n
            }
            guard fsync(fd) == 0 else { throw KeyGenerationError(description: "cannot sync \(temporary)") }
        }
        // link(2) never replaces: a file that appeared under the name meanwhile stays as it was.
        if link(temporary, path) == 0 { return }
        let linkError = errno
        // A file system without hard links (vfat, some network mounts): a rename, after one more
        // look, since rename(2) would replace.
        if [EPERM, EOPNOTSUPP, ENOSYS].contains(linkError), access(path, F_OK) != 0, rename(temporary, path) == 0 { return }
        let reason = linkError == EEXIST || access(path, F_OK) == 0 ? "it exists (an existing key is never overwritten)" : String(cString: strerror(linkError))
        throw KeyGenerationError(description: "cannot create \(path): \(reason)")
    }

    /// Makes the folder's new names durable (a file's fsync does not sync its folder entry).
    static func syncDirectory(_ directory: String) throws {
        let fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw KeyGenerationError(description: "cannot open \(directory) to sync it") }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw KeyGenerationError(description: "cannot sync \(directory)") }
    }
}
