import CCardCryptoShim

/// Small OpenSSL-backed helpers for tokens and fingerprints.
public enum Secrets {
    public static func sha256(_ bytes: UnsafeRawBufferPointer) -> [UInt8] {
        var digest = [UInt8](repeating: 0, count: 32)
        let ok = ccs_sha256(bytes.baseAddress, bytes.count, &digest)
        precondition(ok == 1, "SHA-256 failed in OpenSSL")
        return digest
    }

    public static func sha256(_ text: String) -> [UInt8] {
        var text = text
        return text.withUTF8 { sha256(UnsafeRawBufferPointer($0)) }
    }

    /// Whether SHA-256 of `text` is `expected`, compared in constant time (the digest made on the
    /// stack, not in an array: only OpenSSL's digest context is allocated per check).
    public static func sha256(of text: String, equals expected: [UInt8]) -> Bool {
        guard expected.count == 32 else { return false }
        var text = text
        return text.withUTF8 { bytes in
            withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 32) { digest in
                precondition(ccs_sha256(bytes.baseAddress, bytes.count, digest.baseAddress) == 1, "SHA-256 failed in OpenSSL")
                return expected.withUnsafeBytes { ccs_constant_time_equal(digest.baseAddress, $0.baseAddress, 32) == 1 }
            }
        }
    }

    /// Compares two equal-length byte strings in time that does not depend on where they differ.
    public static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        return a.withUnsafeBytes { pa in b.withUnsafeBytes { pb in ccs_constant_time_equal(pa.baseAddress, pb.baseAddress, a.count) == 1 } }
    }

    public static func randomBytes(_ count: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        let ok = ccs_random_bytes(&out, count)
        precondition(ok == 1, "OpenSSL's random generator failed")
        return out
    }

    public static func hexString(_ bytes: some Sequence<UInt8>) -> String { hex(bytes) }

    /// `bytes` without ASCII whitespace (space, tab, line feed, vertical tab, form feed, return)
    /// at either end: how a token read from a file or the environment is taken (a file's final
    /// newline is not part of it). The worker and vipps-sim both read the admin token this way.
    public static func trimmingASCIISpace(_ bytes: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer {
        func isSpace(_ byte: UInt8) -> Bool { byte == 0x20 || (0x09...0x0D).contains(byte) }
        var start = 0, end = bytes.count
        while start < end, isSpace(bytes[start]) { start += 1 }
        while end > start, isSpace(bytes[end - 1]) { end -= 1 }
        return UnsafeRawBufferPointer(rebasing: bytes[start..<end])
    }

    /// The credentials of an Authorization header of the Bearer scheme (`Bearer <token>`, the
    /// scheme's name in any case and one or more spaces after it: RFC 9110 §11.1 and §11.4), else
    /// nil. Read by bytes: "Bearer", spaces, then at least one byte, all of them the token's (taken
    /// by Characters, a combining mark after the space would go with it). A token never begins
    /// with a space (`POST /payments` refuses one), so none is lost with them.
    public static func bearerCredentials(_ header: String) -> String? {
        let bytes = header.utf8
        // (`| 0x20` lowers an ASCII letter, and makes a letter only of that letter's two cases.)
        guard bytes.count > 7, bytes.prefix(6).lazy.map({ $0 | 0x20 }).elementsEqual("bearer".utf8),
              bytes.dropFirst(6).first == UInt8(ascii: " ") else { return nil }
        let credentials = bytes.dropFirst(7).drop { $0 == UInt8(ascii: " ") }
        return credentials.isEmpty ? nil : String(decoding: credentials, as: UTF8.self)
    }

    /// The version of the libcrypto loaded (not the headers built against), for the start-up log.
    public static var openSSLVersion: String { String(cString: ccs_openssl_version()) }
}
