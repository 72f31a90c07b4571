import ArgumentParser
import CardCrypto
import MakePayment
import PSPWorker
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

@main
struct PSPWorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "psp-worker",
        abstract: "The card-processing tier of a PSP that offers Vipps: decrypts cardData and authorizes payments.",
        subcommands: [Decrypt.self, Encrypt.self, Keygen.self]
    )
}

/// Where the private keys come from. A passphrase is never an argument: any user can read those.
struct KeyOptions: ParsableArguments {
    @Option(name: .long, help: "PEM private key (PKCS#8, PKCS#1 or encrypted PKCS#8): the active key.")
    var privateKey: String

    @Option(name: .long, help: "A retiring private key, tried after the active one. Repeatable.")
    var retiringKey: [String] = []

    @Option(name: .long, help: "File whose first line is the passphrase of encrypted keys (else PSP_KEY_PASSPHRASE).")
    var passphraseFile: String?

    var source: KeyRingSource {
        KeyRingSource(privateKeyPath: privateKey, retiringKeyPaths: retiringKey, passphraseFile: passphraseFile)
    }
}

func printError(_ text: String) {
    var line = text + "\n"
    line.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}

struct Decrypt: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Decrypts one cardData per line of standard input; writes one JSON object per line (PAN masked)."
    )
    @OptionGroup var keys: KeyOptions

    func run() throws {
        let ring: KeyRing
        do {
            let loaded = try keys.source.load(concurrency: 1)
            loaded.warnings.forEach { printError("warning: \($0)") }
            ring = loaded.ring
        } catch {
            printError("error: \(error)")
            throw ExitCode(2)
        }
        let month = CardDataTools.currentMonth()
        while let line = readLine(strippingNewline: true) {
            print(CardDataTools.decryptLine(line, keyRing: ring, currentMonth: month))
        }
    }
}

struct Encrypt: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Encrypts one card-data line (CardNumber,YYMM,SessionId) per line of standard input, as Vipps does."
    )
    @Option(name: .long, help: "PEM public key (SubjectPublicKeyInfo or PKCS#1) of the PSP.")
    var publicKey: String

    func run() throws {
        let encryptor: CardDataEncryptor
        do {
            encryptor = try CardDataEncryptor(publicKey: KeyFiles.loadPublicKey(path: publicKey))
        } catch {
            printError("error: \(error)")
            throw ExitCode(2)
        }
        var failures = 0
        while let line = readLine(strippingNewline: true) {
            if let cardData = CardDataTools.encryptLine(line, encryptor: encryptor) {
                print(cardData)
            } else {
                failures += 1
                print("")
                printError("error: line too long to encrypt under this key")
            }
        }
        if failures > 0 { throw ExitCode(1) }
    }
}

struct Keygen: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Makes a new RSA key pair: private-key.pem (PKCS#8, mode 0600) and public-key.pem (SubjectPublicKeyInfo, for Vipps)."
    )
    @Option(name: .long, help: "Directory to write the two files into (created if missing).")
    var out: String

    @Option(name: .long, help: "Modulus size in bits (2048 or more).")
    var bits: Int = 2048

    func validate() throws {
        guard bits >= 2048 else { throw ValidationError("--bits must be at least 2048") }
    }

    func run() throws {
        do {
            try KeyGeneration.writeKeyPair(bits: bits, directory: out)
            print("wrote \(out)/private-key.pem (keep it secret) and \(out)/public-key.pem (give it to Vipps)")
        } catch {
            printError("error: \(error)")
            throw ExitCode(1)
        }
    }
}
