import CardCrypto
import Foundation
import Testing

@Suite struct KeyLoadingTests {
    #if os(Linux)
    /// OpenSSL's PEM decoder frees the clear private key it decoded without wiping it: the shim
    /// installs allocation functions that wipe every buffer OpenSSL frees, before `main` (OpenSSL
    /// takes them only before its first allocation). Checked here: that they are installed, and
    /// keys still load through them (what a freed buffer holds cannot be read back soundly).
    @Test func openSSLWipesWhatItFrees() throws {
        #expect(ProcessHardening.openSSLFreesAreWiped)
        let key = try Fixtures.privateKey("psp-private-key-encrypted.pem", passphrase: "test-passphrase-not-secret")
        #expect(key.fingerprint == (try Fixtures.publicKey()).fingerprint)
    }
    #endif

    @Test(arguments: ["psp-private-key.pem", "psp-private-key-pkcs1.pem"])
    func unencryptedKeyEncodingsLoad(file: String) throws {
        let key = try Fixtures.privateKey(file)
        #expect(key.bits == 2048)
        #expect(key.modulusBytes == 256)
        #expect(key.fingerprint == (try Fixtures.publicKey()).fingerprint)
    }

    @Test func encryptedPKCS8LoadsWithItsPassphrase() throws {
        let key = try Fixtures.privateKey("psp-private-key-encrypted.pem", passphrase: "test-passphrase-not-secret")
        #expect(key.fingerprint == (try Fixtures.publicKey()).fingerprint)
    }

    @Test func passphraseFileLoadsEncryptedKey() throws {
        let passphrase = try KeyFiles.passphrase(file: Fixtures.path("passphrase.txt"))
        let key = try KeyFiles.loadPrivateKey(path: Fixtures.path("psp-private-key-encrypted.pem"), passphrase: passphrase)
        #expect(key.bits == 2048)
    }

    /// A passphrase from a pipe (`--passphrase-file <(…)`), which has no size to go by.
    @Test func passphraseFromAPipeLoadsEncryptedKey() throws {
        let fifo = FileManager.default.temporaryDirectory.appendingPathComponent("passphrase-\(UUID().uuidString)").path
        #expect(mkfifo(fifo, 0o600) == 0)
        defer { unlink(fifo) }
        let writer = Thread {
            let handle = FileHandle(forWritingAtPath: fifo)!
            handle.write(Data("test-passphrase-not-secret\n".utf8))
            try? handle.close()
        }
        writer.start()
        let passphrase = try KeyFiles.passphrase(file: fifo)
        let key = try KeyFiles.loadPrivateKey(path: Fixtures.path("psp-private-key-encrypted.pem"), passphrase: passphrase)
        #expect(key.bits == 2048)
    }

    /// A passphrase file's first line is the passphrase. (That it wins over the environment's, and
    /// that the environment's secrets are taken out of it, zeroed and unset, is checked on a worker
    /// process, `EnvironmentSecretTests`: setenv here would race the tests that spawn processes,
    /// all of which share this process.)
    @Test func aPassphraseFileGivesItsFirstLine() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("pass-\(UUID().uuidString)").path
        try "from-the-file\n".write(toFile: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: file) }
        let passphrase = try KeyFiles.passphrase(file: file, environmentVariable: "PSP_TEST_UNSET_\(UInt32.random(in: 0...UInt32.max))")
        var taken: [UInt8] = []
        if let passphrase { taken = passphrase.withUnsafeBytes { [UInt8]($0) } }
        #expect(taken == [UInt8]("from-the-file".utf8))
    }

    /// A passphrase longer than OpenSSL's PEM reader takes (1,024 bytes) is refused as that; it
    /// read as the wrong passphrase for the key, pointing the operator at the wrong cause.
    @Test func aPassphraseTooLongForOpenSSLIsSaidToBe() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("pass-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: file) }
        let unset = "PSP_TEST_UNSET_\(UInt32.random(in: 0...UInt32.max))"
        try (String(repeating: "a", count: KeyFiles.maxPassphraseBytes + 1) + "\n").write(toFile: file, atomically: true, encoding: .utf8)
        #expect(throws: KeyLoadError.passphraseTooLong(source: file)) { _ = try KeyFiles.passphrase(file: file, environmentVariable: unset) }
        try (String(repeating: "a", count: KeyFiles.maxPassphraseBytes) + "\n").write(toFile: file, atomically: true, encoding: .utf8)
        var count = 0
        if let longest = try KeyFiles.passphrase(file: file, environmentVariable: unset) { count = longest.count }
        #expect(count == KeyFiles.maxPassphraseBytes)
    }

    @Test func encryptedKeyWithoutPassphraseIsAClearError() throws {
        #expect(throws: KeyLoadError.needsPassphrase(path: "psp-private-key-encrypted.pem")) {
            _ = try Fixtures.privateKey("psp-private-key-encrypted.pem")
        }
    }

    @Test func wrongPassphraseIsAClearError() throws {
        #expect(throws: KeyLoadError.wrongPassphrase(path: "psp-private-key-encrypted.pem")) {
            _ = try Fixtures.privateKey("psp-private-key-encrypted.pem", passphrase: "wrong")
        }
    }

    @Test func publicKeyIsNotAPrivateKey() throws {
        #expect(throws: KeyLoadError.notAPrivateKey(path: "psp-public-key.pem")) {
            _ = try Fixtures.privateKey("psp-public-key.pem")
        }
    }

    @Test func missingFileIsAClearError() throws {
        #expect(throws: KeyLoadError.self) { _ = try KeyFiles.readSecret(path: "/nonexistent/key.pem") }
    }

    @Test func shortAndNonRSAKeysAreRefused() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("keys-\(UUID())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        /// Runs `openssl COMMAND ARGS -out NAME` in `dir`; the path of what it wrote.
        func openssl(_ command: String, _ args: [String], out name: String) throws -> String {
            let path = dir.appendingPathComponent(name).path
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            p.arguments = ["openssl", command] + args + ["-out", path]
            p.standardError = FileHandle.nullDevice
            try p.run(); p.waitUntilExit()
            // A missing or failing openssl must fail here, not pass as a key error further down.
            try #require(p.terminationStatus == 0, "openssl \(command) failed")
            return path
        }
        func make(_ args: [String], _ name: String) throws -> String { try openssl("genpkey", args, out: name) }
        let short = try make(["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"], "short.pem")
        let ec = try make(["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"], "ec.pem")
        #expect(throws: KeyLoadError.tooShort(path: short)) { _ = try KeyFiles.loadPrivateKey(path: short, passphrase: nil) }
        #expect(throws: KeyLoadError.notRSA(path: ec)) { _ = try KeyFiles.loadPrivateKey(path: ec, passphrase: nil) }
        // e = 3 is outside FIPS 186-5's bounds (2^16 < e < 2^256), as a private and as a public key.
        let smallExponent = try make(["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-pkeyopt", "rsa_keygen_pubexp:3"], "e3.pem")
        #expect(throws: KeyLoadError.weakExponent(path: smallExponent)) { _ = try KeyFiles.loadPrivateKey(path: smallExponent, passphrase: nil) }
        let smallExponentPublic = try openssl("pkey", ["-in", smallExponent, "-pubout"], out: "e3-public.pem")
        #expect(throws: KeyLoadError.weakExponent(path: smallExponentPublic)) { _ = try KeyFiles.loadPublicKey(path: smallExponentPublic) }
    }

    /// Over 8192 bits no decryptor can take the key: refused at load by name, not as "not a key".
    @Test func aKeyLongerThan8192BitsIsRefused() throws {
        let path = Fixtures.path("rsa-8200-public.pem")
        #expect(throws: KeyLoadError.tooLong(path: path)) { _ = try KeyFiles.loadPublicKey(path: path) }
    }

    /// An encrypted private key where a public key is wanted is not a public key (no tool that
    /// wants one takes a passphrase), and OpenSSL does not prompt on a terminal or read stdin
    /// (where `psp-worker encrypt` has the card lines) for one.
    @Test func anEncryptedPrivateKeyAsThePublicKeyAsksForNoPassphrase() throws {
        let path = Fixtures.path("psp-private-key-encrypted.pem")
        // Stdin is a pipe holding a line for the load: OpenSSL's prompt, with no terminal, reads it.
        var ends: [Int32] = [0, 0]
        try #require(pipe(&ends) == 0)
        let savedStdin = dup(0)
        defer { dup2(savedStdin, 0); close(savedStdin) }
        _ = "4925000000004444\n".withCString { write(ends[1], $0, 17) }
        close(ends[1])
        dup2(ends[0], 0)
        close(ends[0])
        #expect(throws: KeyLoadError.notAPublicKey(path: path)) { _ = try KeyFiles.loadPublicKey(path: path) }
        var left = [UInt8](repeating: 0, count: 32)
        #expect(read(0, &left, left.count) == 17, "the load read stdin")
    }

    /// The TEST key with one CRT value off by two parses (OpenSSL would then redo every decryption
    /// with d alone, several times slower): a damaged key file, refused at load by name, and also
    /// where only its public half is wanted.
    @Test func aPrivateKeyWhosePartsDisagreeIsRefused() throws {
        let path = Fixtures.path("psp-private-key-inconsistent.pem")
        #expect(throws: KeyLoadError.inconsistent(path: path)) { _ = try KeyFiles.loadPrivateKey(path: path, passphrase: nil) }
        #expect(throws: KeyLoadError.inconsistent(path: path)) { _ = try KeyFiles.loadPublicKey(path: path) }
        // The same key with its parts in agreement loads.
        _ = try KeyFiles.loadPrivateKey(path: Fixtures.path("psp-private-key-pkcs1.pem"), passphrase: nil)
    }

    @Test func groupReadableKeyFileDrawsAWarning() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("perm-\(UUID()).pem").path
        #expect(FileManager.default.createFile(atPath: path, contents: Data("x".utf8), attributes: [.posixPermissions: 0o640]))
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(KeyFiles.permissionWarning(path: path)?.contains("chmod 600") == true)
        #expect(KeyFiles.permissionWarning(path: path, what: "passphrase file")?.hasPrefix("passphrase file ") == true)
        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: path)
        #expect(KeyFiles.permissionWarning(path: path) == nil)
        // Not a regular file (a pipe: `--passphrase-file <(…)`; a device, mode 666): no warning.
        #expect(KeyFiles.permissionWarning(path: "/dev/null", what: "passphrase file") == nil)
    }
}

@Suite struct DecryptionTests {
    @Test func roundTripThroughOurEncryptor() throws {
        let ring = try KeyRing(active: Fixtures.privateKey())
        let encryptor = try CardDataEncryptor(publicKey: Fixtures.publicKey())
        let text = "4925000000004444,3012,3854ba014e184e0d8ba259253f4advfa"
        let cardData = try #require(encryptor.cardData(for: text))
        #expect(cardData.utf8.count == 344)
        #expect(ring.decryptToString(cardData) == text)
    }

    @Test(arguments: try Fixtures.interopCases())
    func pythonCryptographyInterop(_ testCase: Fixtures.InteropCase) throws {
        for file in ["psp-private-key.pem", "psp-private-key-pkcs1.pem"] {
            let ring = try KeyRing(active: Fixtures.privateKey(file))
            if testCase.valid {
                #expect(ring.decryptToString(testCase.cardData) == testCase.plaintext, "\(testCase.name) with \(file)")
            } else {
                #expect(throws: UnableToDecrypt()) {
                    try ring.withDecryptedCardData(testCase.cardData) { _ in () }
                }
            }
        }
    }

    @Test func wycheproofVectors() throws {
        let group = try Fixtures.wycheproof()
        let key = try RSAKey.privateKey(pem: SecureBytes(copying: Array(group.privateKeyPem.utf8)), source: "wycheproof")
        let ring = try KeyRing(active: key)
        var decrypted = 0, refused = 0
        for test in group.tests {
            let cardData = [UInt8](hex: test.ct).withUnsafeBytes { StrictBase64.encode($0) }
            let result = ring.decryptToBytes(cardData)
            if test.result == "valid" && test.label.isEmpty {
                #expect(result == [UInt8](hex: test.msg), "tcId \(test.tcId) \(test.comment)")
                decrypted += 1
            } else {
                // Our decryptor is fixed to Vipps's empty label: labelled and invalid cases must fail.
                #expect(result == nil, "tcId \(test.tcId) \(test.comment) must be refused")
                refused += 1
            }
        }
        #expect(decrypted > 0 && refused > 0)
        #expect(decrypted + refused == group.tests.count)
    }

    @Test func rotationTriesActiveThenRetiringKeys() throws {
        let old = try Fixtures.privateKey()
        let new = try RSAKey.generate()
        let ring = try KeyRing(active: new, retiring: [old])
        let fromOld = try #require(try CardDataEncryptor(publicKey: old).cardData(for: "4925000000004444,3012,old"))
        let fromNew = try #require(try CardDataEncryptor(publicKey: new).cardData(for: "4925000000004444,3012,new"))
        #expect(ring.decryptToString(fromOld) == "4925000000004444,3012,old")
        #expect(ring.decryptToString(fromNew) == "4925000000004444,3012,new")
        let withoutOld = try KeyRing(active: new)
        #expect(withoutOld.decryptToString(fromOld) == nil)
    }

    @Test func largerKeysWork() throws {
        let key = try RSAKey.generate(bits: 3072)
        let ring = try KeyRing(active: key)
        let cardData = try #require(try CardDataEncryptor(publicKey: key).cardData(for: "4925000000004444,3012,x"))
        #expect(cardData.utf8.count == 512)
        #expect(ring.decryptToString(cardData) == "4925000000004444,3012,x")
    }

    @Test func manyConcurrentDecryptionsAreAllCorrect() async throws {
        let ring = try KeyRing(active: Fixtures.privateKey(), concurrency: 2)
        let encryptor = try CardDataEncryptor(publicKey: Fixtures.publicKey())
        let inputs = (0..<200).map { i in ("4925000000004444,3012,session\(i)", encryptor.cardData(for: "4925000000004444,3012,session\(i)")!) }
        let mismatches = await withTaskGroup(of: Int.self) { group in
            for (text, cardData) in inputs {
                group.addTask { ring.decryptToString(cardData) == text ? 0 : 1 }
            }
            return await group.reduce(0, +)
        }
        #expect(mismatches == 0)
    }
}

@Suite struct Base64Tests {
    @Test(arguments: [0, 1, 2, 3, 4, 5, 255, 256, 257])
    func roundTrip(length: Int) {
        let bytes = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }
        let encoded = bytes.withUnsafeBytes { StrictBase64.encode($0) }
        #expect(encoded == Data(bytes).base64EncodedString())
        var out = [UInt8](repeating: 0, count: length + 3)
        let n = Array(encoded.utf8).withUnsafeBytes { input in out.withUnsafeMutableBytes { StrictBase64.decode(input, into: $0) } }
        if length == 0 { #expect(n == nil) } else { #expect(n == length && Array(out[..<length]) == bytes) }
    }

    @Test(arguments: ["QQ", "QQ=", "QR==", "QUI=x", "QU I=", "Q===", "QUJD\n", "QU-_", "QQ==QQ=="])
    func nonCanonicalIsRefused(text: String) {
        var out = [UInt8](repeating: 0, count: 16)
        let n = Array(text.utf8).withUnsafeBytes { input in out.withUnsafeMutableBytes { StrictBase64.decode(input, into: $0) } }
        #expect(n == nil)
    }

    /// At the length of a real cardData (344 characters, 256 bytes): one character outside the
    /// standard alphabet, anywhere, is refused by the decoder itself (before any RSA operation).
    @Test(arguments: ["-", "_", " ", "\n", "."])
    func aFullLengthCryptogramWithAForeignCharacterIsRefused(foreign: String) {
        let bytes = (0..<256).map { UInt8(truncatingIfNeeded: $0 &* 91 &+ 7) }
        let encoded = Array(bytes.withUnsafeBytes { StrictBase64.encode($0) }.utf8)
        #expect(encoded.count == 344)
        var out = [UInt8](repeating: 0, count: 258)
        for position in [0, 100, 341] {
            var text = encoded
            text[position] = Array(foreign.utf8)[0]
            let n = text.withUnsafeBytes { input in out.withUnsafeMutableBytes { StrictBase64.decode(input, into: $0) } }
            #expect(n == nil, "\(foreign) at \(position)")
        }
        let clean = encoded.withUnsafeBytes { input in out.withUnsafeMutableBytes { StrictBase64.decode(input, into: $0) } }
        #expect(clean == 256)
    }
}

@Suite struct SecretsTests {
    @Test func constantTimeEqualCompares() {
        #expect(Secrets.constantTimeEqual([1, 2, 3], [1, 2, 3]))
        #expect(!Secrets.constantTimeEqual([1, 2, 3], [1, 2, 4]))
        #expect(!Secrets.constantTimeEqual([1, 2, 3], [1, 2]))
    }

    @Test func sha256MatchesKnownDigest() {
        #expect(Secrets.hexString(Secrets.sha256("abc")) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        let abc = Secrets.sha256("abc")
        #expect(Secrets.sha256(of: "abc", equals: abc))
        #expect(!Secrets.sha256(of: "abd", equals: abc))
        #expect(!Secrets.sha256(of: "abc", equals: Array(abc.dropLast())), "a stored hash of another length never matches")
    }

    @Test func secureBytesHoldsWhatItWasGiven() {
        let bytes = SecureBytes(copying: [1, 2, 3])
        #expect(bytes.withUnsafeBytes { Array($0) } == [1, 2, 3])
    }
}

@Suite struct BearerCredentialsTests {
    /// "Bearer " in any case, then the token's bytes exactly: what makePayment and the admin
    /// endpoints both take.
    @Test func theSchemeInAnyCaseThenTheTokensBytes() {
        #expect(Secrets.bearerCredentials("Bearer abc") == "abc")
        #expect(Secrets.bearerCredentials("bEARER abc") == "abc")
        // A token that begins with a combining mark keeps it (by Characters, " \u{301}" is one).
        #expect(Secrets.bearerCredentials("Bearer \u{301}abc") == "\u{301}abc")
        #expect(Secrets.bearerCredentials("Bearer\tabc") == nil)
        #expect(Secrets.bearerCredentials("Bearer ") == nil)
        // One or more spaces after the scheme (RFC 9110 §11.4: `1*SP`); two were refused.
        #expect(Secrets.bearerCredentials("Bearer   abc") == "abc")
        #expect(Secrets.bearerCredentials("Bearer    ") == nil)
        #expect(Secrets.bearerCredentials("Basic abcdef") == nil)
        #expect(Secrets.bearerCredentials("Bearerabc") == nil)
        // Bytes that `| 0x20` would turn into a letter or the space are not taken for them.
        #expect(Secrets.bearerCredentials("\u{02}earer abc") == nil)
        #expect(Secrets.bearerCredentials("Bearer\u{0}abc") == nil)
    }
}
