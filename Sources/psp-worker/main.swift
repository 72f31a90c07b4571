import ArgumentParser
import Foundation
import Hummingbird
import Logging
import CardCrypto
import MakePayment
import PSPWorker
import SQLitePaymentStore
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
        subcommands: [Serve.self, Decrypt.self, Encrypt.self, Keygen.self]
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

/// Commands that hold the private key and clear card data refuse to run where a crash could dump them.
func requireCoreDumpsOff() throws {
    guard ProcessHardening.disableCoreDumps() else {
        printError("error: could not turn core dumps off; a dump would hold the private key and the card data")
        throw ExitCode(2)
    }
    #if os(Linux)
    if !ProcessHardening.openSSLFreesAreWiped {
        printError("warning: OpenSSL's freed buffers are not wiped; copies of the private key may stay in freed memory")
    }
    #endif
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
        try requireCoreDumpsOff()
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
        try requireCoreDumpsOff()  // it reads clear card data (and a private key file, if given one)
        let encryptor: CardDataEncryptor
        do {
            encryptor = try CardDataEncryptor(publicKey: KeyFiles.loadPublicKey(path: publicKey))
        } catch {
            printError("error: \(error)")
            throw ExitCode(2)
        }
        var failures = 0
        while let line = readLine(strippingNewline: true) {
            if let cardData = encryptor.cardData(for: line) {
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

    @Option(name: .long, help: "Modulus size in bits (2048 to 8192).")
    var bits: Int = 2048

    func validate() throws {
        // 8192: the longest key the decryptor takes.
        guard bits >= 2048 && bits <= 8192 else { throw ValidationError("--bits must be between 2048 and 8192") }
    }

    func run() throws {
        try requireCoreDumpsOff()  // it holds a new production private key
        do {
            try KeyGeneration.writeKeyPair(bits: bits, directory: out)
            print("wrote \(out)/private-key.pem (keep it secret) and \(out)/public-key.pem (give it to Vipps)")
        } catch {
            printError("error: \(error)")
            throw ExitCode(1)
        }
    }
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Runs the makePayment worker: HTTP endpoint, queue, worker pool, acquirer adapter, durable store."
    )
    @Option(help: "Address to listen on.") var host = "127.0.0.1"
    @Option(help: "Port to listen on (0: any free port).") var port = 8080
    @Option(help: "Path of the makePaymentUrl given to Vipps.") var makePaymentPath = "/makePayment"
    /// Required: the worker never picks a key itself.
    @OptionGroup var keys: KeyOptions
    @Option(help: "Where payments are recorded: sqlite:PATH.") var store = "sqlite:data/psp-worker.sqlite"
    @Option(help: "Milliseconds the store may wait for more writes to commit with, when writes come often (0: never).")
    var groupCommitWindowMs = SQLitePaymentStore.defaultGroupCommitWindow / .milliseconds(1)
    @Option(help: "The window while makePayments queue for a worker (the CPU is saturated), in milliseconds.")
    var busyGroupCommitWindowMs = SQLitePaymentStore.defaultBusyGroupCommitWindow / .milliseconds(1)
    @Option(help: """
        Acquirer adapter: iso8583://HOST:PORT[?terminal=TERMINAL], http(s)://HOST:PORT[/path][?connections=N&idle=S], or simulator (approves by \
        test card, with nothing authorized: for tests and load runs only). Required: the worker never picks an acquirer itself.
        """) var acquirer: String
    @Flag(help: "Allow an acquirer reached in clear (iso8583:// or http://) off this machine: only over a private link you vouch for.")
    var allowCleartextAcquirer = false
    @Option(help: "Latency the simulator adds to every answer, in milliseconds.") var simulatorLatencyMs = 0
    @Option(help: "Worker tasks taking makePayment jobs off the queue. Default: the number of cores.")
    var workers = PSPWorkerConfiguration.defaultWorkerCount
    @Option(help: "SwiftNIO event loop threads for HTTP. Default: NIO's shared group, one per core.")
    var eventLoopThreads: Int?
    @Option(help: "Where the workers run: event-loops (the HTTP threads; fewer task switches) or pool (Swift's cooperative pool).")
    var workerThreads: WorkerThreads = .eventLoops
    @Option(help: "makePayment jobs that may wait for a worker; more are answered 500 (91).") var queueCapacity = 1024
    @Option(help: "Seconds the acquirer has to answer before the outcome counts as unknown (85, reversed).")
    var acquirerTimeout: Double = 10
    @Option(help: "HTTP connections open at once; past it, new ones are closed unread (the open-file limit is raised to fit).")
    var maxConnections = 1024
    @Option(help: """
        After SIGTERM or SIGINT, seconds during which /health/ready answers 503 while every request is \
        still served (a load balancer takes the worker out first); then the graceful shutdown. A second signal ends it.
        """) var drainSeconds: Double = 0
    @Option(help: "File holding the admin bearer token for /payments (else PSP_ADMIN_TOKEN).") var adminTokenFile: String?
    @Option(help: "JSON file of response-code overrides, e.g. {\"05\": 82, \"visa:59\": 83}.") var responseCodes: String?
    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.") var logLevel = "info"

    func validate() throws {
        guard acquirerTimeout >= 0.1 && acquirerTimeout < 15 else {
            throw ValidationError("--acquirer-timeout must be at least 0.1 and below Vipps's 15 seconds")
        }
        guard (0...65535).contains(port) else { throw ValidationError("--port must be between 0 and 65535") }
        guard drainSeconds >= 0 && drainSeconds <= 300 else { throw ValidationError("--drain-seconds must be between 0 and 300") }
        // makePayment is served ahead of the router: on an admin path it would take that path over.
        let path = makePaymentPath.hasPrefix("/") ? makePaymentPath : "/" + makePaymentPath
        guard path.count > 1, !["/payments", "/health", "/metrics"].contains(where: { path == $0 || path.hasPrefix($0 + "/") }) else {
            throw ValidationError("--make-payment-path must not be /, /payments, /health or /metrics (or below them)")
        }
        // Requests are matched on their path without the query, and as sent (not percent-decoded).
        guard !path.contains(where: { "?#%".contains($0) || $0 == " " }) else {
            throw ValidationError("--make-payment-path is a path: no ?, #, % or spaces")
        }
        guard groupCommitWindowMs >= 0 && groupCommitWindowMs <= 100, busyGroupCommitWindowMs >= 0 && busyGroupCommitWindowMs <= 100 else {
            throw ValidationError("--group-commit-window-ms and --busy-group-commit-window-ms must be between 0 and 100")
        }
        // One thread each: past a few per core they only contend, and too many for the process
        // limit would stop the worker with a trap in NIO rather than this message.
        if let eventLoopThreads, !(1...256).contains(eventLoopThreads) {
            throw ValidationError("--event-loop-threads must be between 1 and 256")
        }
        guard (1...1_000_000).contains(maxConnections) else { throw ValidationError("--max-connections must be between 1 and 1,000,000") }
        guard workers >= 1, queueCapacity >= 1 else { throw ValidationError("--workers and --queue-capacity must be at least 1") }
        // Each event loop needs a worker of its own: a loop with none would only feed the others'
        // workers, which would carry its decryptions on top of their own sockets.
        let loops = eventLoopThreads ?? PSPWorkerConfiguration.defaultEventLoopCount
        if workerThreads == .eventLoops && workers < loops {
            throw ValidationError("--workers (\(workers)) must be at least the event loops (\(loops)) with --worker-threads event-loops; "
                + "or run the workers on Swift's pool: --worker-threads pool")
        }
        // Each worker is a task started at once: a number past any machine's cores only stalls the start.
        guard workers <= 4096 else { throw ValidationError("--workers must be at most 4,096") }
        guard store.hasPrefix("sqlite:"), store.count > 7 else { throw ValidationError("--store must be sqlite:PATH") }
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("--log-level must be trace, debug, info, notice, warning, error or critical")
        }
        // A simulated latency is a test's setting: negative or huge is a slip (past the acquirer
        // timeout every payment is 85), and with another acquirer it would do nothing.
        guard (0...60_000).contains(simulatorLatencyMs) else { throw ValidationError("--simulator-latency-ms must be between 0 and 60,000") }
        guard simulatorLatencyMs == 0 || acquirer == "simulator" else {
            throw ValidationError("--simulator-latency-ms is for --acquirer simulator only")
        }
        guard let choice = PSPWorkerConfiguration.AcquirerChoice(acquirer) else {
            throw ValidationError("--acquirer must be simulator, iso8583://HOST:PORT[?terminal=TERMINAL] (a terminal id of 8 characters) or http(s)://HOST:PORT[/path][?connections=N&idle=S] (either parameter or both; N from 1 to 4,096; S seconds a connection stays open idle, 1 to 3,600)")
        }
        guard !choice.sendsCardDataInClearOffThisMachine || allowCleartextAcquirer else {
            throw ValidationError("--acquirer \(choice.logDescription) would send card numbers in clear over the network; use https, "
                + "or a TLS tunnel on this machine, or say --allow-cleartext-acquirer for a private link you vouch for")
        }
    }

    func run() async throws {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardOutput(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "psp-worker")
        try requireCoreDumpsOff()
        // The store (its database, WAL and folder) is the worker's alone: it holds the hashes of
        // makePaymentTokens, which a short token would not keep from a brute force.
        umask(0o077)
        var configuration = PSPWorkerConfiguration(keys: keys.source)
        configuration.host = host
        configuration.port = port
        configuration.makePaymentPath = makePaymentPath.hasPrefix("/") ? makePaymentPath : "/" + makePaymentPath
        configuration.store = .sqlite(path: String(store.dropFirst("sqlite:".count)))
        configuration.acquirer = PSPWorkerConfiguration.AcquirerChoice(acquirer, simulatorLatency: .milliseconds(simulatorLatencyMs))!
        configuration.workers = workers
        configuration.eventLoopThreads = eventLoopThreads
        configuration.workersOnEventLoops = workerThreads == .eventLoops
        configuration.groupCommitWindow = .milliseconds(groupCommitWindowMs)
        configuration.busyGroupCommitWindow = .milliseconds(busyGroupCommitWindowMs)
        configuration.queueCapacity = queueCapacity
        configuration.maxConnections = maxConnections
        // A common soft default, 1,024, is below the default --max-connections and what the
        // process needs besides: raised as far as the hard limit allows.
        let needed = OpenFileLimit.needed(by: configuration)
        if let files = ProcessLimits.raiseOpenFiles(toAtLeast: needed), files < needed {
            logger.warning("the open-file limit is below what --max-connections and the acquirer's connections need: accepts may fail before the limit (raise ulimit -n)",
                           metadata: ["openFiles": "\(files)", "needed": "\(needed)"])
        }
        configuration.acquirerTimeout = .seconds(acquirerTimeout)
        configuration.drainTime = .seconds(drainSeconds)
        configuration.responseCodeOverridesPath = responseCodes
        do {
            if let adminTokenFile, let warning = KeyFiles.permissionWarning(path: adminTokenFile, what: "admin token file") {
                logger.warning("\(warning)")
            }
            let token = try AdminToken.read(file: adminTokenFile)
            configuration.adminTokenHash = token?.hash
            if let token, token.length < AdminToken.shortLength {
                logger.warning("the admin token is short enough to guess: use a random one of \(AdminToken.shortLength) bytes or more (openssl rand -hex 24)",
                               metadata: ["bytes": "\(token.length)"])
            }
        } catch {
            printError("error: \(error)")
            throw ExitCode(2)
        }
        let app: any ApplicationProtocol
        let components: PSPWorkerComponents
        do {
            components = try PSPWorkerComponents.make(configuration, logger: logger)
            app = try buildApplication(configuration: configuration, components: components, logger: logger)
        } catch {
            printError("error: \(error)")
            throw ExitCode(2)
        }
        try await runUntilStopSignal(app, drain: components.drain, drainTime: configuration.drainTime, logger: logger)
    }
}

enum WorkerThreads: String, ExpressibleByArgument, CaseIterable {
    case eventLoops = "event-loops"
    case pool
}
