import Acquiring
import CardCrypto
import Foundation
import HTTPAcquirer
import NIOCore
import ISO8583Acquirer
import SQLitePaymentStore
#if canImport(Glibc)
import Glibc
#endif

/// Everything `psp-worker serve` is configured with: filled from flags and the environment by the
/// command line, or directly by tests.
public struct PSPWorkerConfiguration: Sendable {
    public enum StoreLocation: Sendable, Equatable {
        case sqlite(path: String)
    }
    public enum AcquirerChoice: Sendable, Equatable {
        case simulator(latency: Duration)
        /// ISO 8583 over TCP: `iso8583://HOST:PORT[?terminal=TERMINAL]`.
        case iso8583(host: String, port: Int, terminalId: String)
        /// The HTTP JSON acquirer API: `http://…` or `https://…`.
        case http(baseURL: String)

        /// Whether card data would cross a network in clear: ISO 8583 over plain TCP, or `http://`,
        /// to a host that is not this machine. PCI DSS allows that only over a link the operator
        /// vouches for (a private line, a VPN, a TLS tunnel such as stunnel).
        public var sendsCardDataInClearOffThisMachine: Bool {
            func isLoopback(_ host: String) -> Bool {
                let bare = host.hasPrefix("[") && host.hasSuffix("]") ? String(host.dropFirst().dropLast()) : host
                if bare == "localhost" { return true }
                // An address, not a name: "127.acq.example.net" is somebody else's machine.
                var v4 = in_addr()
                if inet_pton(AF_INET, bare, &v4) == 1 { return UInt32(bigEndian: v4.s_addr) >> 24 == 127 }
                var v6 = in6_addr()
                return inet_pton(AF_INET6, bare, &v6) == 1 && withUnsafeBytes(of: &v6, { $0.elementsEqual([UInt8](repeating: 0, count: 15) + [1]) })
            }
            switch self {
            case .simulator: return false
            case .iso8583(let host, _, _): return !isLoopback(host)
            case .http(let baseURL):
                guard let url = URL(string: baseURL), url.scheme == "http" else { return false }
                return !isLoopback(url.host ?? "")
            }
        }

        /// For the start-up log: protocol, host and port (an HTTP URL's user, password, path and
        /// query are left out: they may carry credentials).
        public var logDescription: String {
            switch self {
            case .simulator: return "simulator"
            case .iso8583(let host, let port, let terminalId): return "iso8583://\(host):\(port) terminal \(terminalId)"
            case .http(let baseURL):
                guard let url = URLComponents(string: baseURL), let scheme = url.scheme, let host = url.host else { return "http" }
                return "\(scheme)://\(host)" + (url.port.map { ":\($0)" } ?? "")
            }
        }

        /// Parses `--acquirer`: `simulator`, `iso8583://HOST:PORT[?…]` or `http(s)://HOST[:PORT][/PATH][?…]`.
        public init?(_ text: String, simulatorLatency: Duration = .zero) {
            if text == "simulator" { self = .simulator(latency: simulatorLatency); return }
            if let iso = ISO8583Acquirer.Configuration(url: text) { self = .iso8583(host: iso.host, port: iso.port, terminalId: iso.terminalId); return }
            if HTTPAcquirer.parse(text) != nil {
                self = .http(baseURL: text)
                return
            }
            return nil
        }
    }

    public var host = "127.0.0.1"
    /// 0 lets the system choose (tests read the port back).
    public var port = 8080
    /// The makePaymentUrl path given to Vipps.
    public var makePaymentPath = "/makePayment"
    public var keys: KeyRingSource
    public var store: StoreLocation = .sqlite(path: "data/psp-worker.sqlite")
    /// How long the store's writer may wait for a group commit to fill when writes come often.
    public var groupCommitWindow: Duration = SQLitePaymentStore.defaultGroupCommitWindow
    /// The window while makePayments queue for a worker (the CPU is saturated).
    public var busyGroupCommitWindow: Duration = SQLitePaymentStore.defaultBusyGroupCommitWindow
    public var acquirer: AcquirerChoice = .simulator(latency: .zero)
    public var workers = PSPWorkerConfiguration.defaultWorkerCount
    /// SwiftNIO event loop threads for HTTP (nil: NIO's shared group, one per core).
    public var eventLoopThreads: Int?
    /// Whether the makePayment workers run on the HTTP event loop threads (fewer busy threads than
    /// cores' worth of each; see EventLoopTaskExecutor) rather than on Swift's cooperative pool.
    public var workersOnEventLoops = true
    public var queueCapacity = 1024
    /// Authorizations waiting on the acquirer at once; past it, workers wait and the queue fills.
    public var maxAuthorizationsInFlight = 4096
    public var acquirerTimeout: Duration = .seconds(10)
    /// After a stop signal, how long `/health/ready` answers 503 while everything is still served,
    /// before the graceful shutdown begins (`runUntilStopSignal`).
    public var drainTime: Duration = .zero
    /// The SHA-256 of the admin endpoints' bearer token (the token itself is never kept); nil
    /// disables them (every call is 401).
    public var adminTokenHash: [UInt8]?
    /// A JSON file of response-code overrides (see ResponseCodeTable).
    public var responseCodeOverridesPath: String?
    /// Largest request body, in bytes; a makePayment larger is answered 400 (71), an admin request 413.
    public var maxBodyBytes = 64 * 1024
    /// HTTP connections open at once. Past it a new connection is closed as soon as it is
    /// accepted, unread (`ConnectionLimit`), so that a flood of idle or stalled ones cannot take
    /// every file descriptor (the acquirer's reconnects and the store's files included) and the
    /// memory their buffers need.
    public var maxConnections = 1024

    public init(keys: KeyRingSource) {
        self.keys = keys
    }

    /// The event loops serving HTTP when `eventLoopThreads` is nil: NIO's shared group (its count
    /// follows a CPU quota or NIO_SINGLETON_GROUP_LOOP_COUNT, and may differ from the cores online).
    public static var defaultEventLoopCount: Int { NIOSingletons.groupLoopCountSuggestion }

    /// One worker per core, and at least one per default event loop (workers on the loops need one each).
    public static var defaultWorkerCount: Int { max(processorCount, defaultEventLoopCount) }

    public static var processorCount: Int {
        #if canImport(Glibc)
        return max(Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))), 1)
        #else
        return 2
        #endif
    }
}

/// The process's limit on open file descriptors, which every connection takes one of.
public enum OpenFileLimit {
    /// Descriptors kept beyond the connections and the acquirer's: the store's files, the event
    /// loops' own, the key files read at start, the ISO 8583 connection.
    public static let reserve = 256

    /// The descriptors `configuration` may hold at once: its connections, the HTTP acquirer's
    /// pool, and the reserve.
    public static func needed(by configuration: PSPWorkerConfiguration) -> Int {
        var acquirerConnections = 0
        if case .http(let url) = configuration.acquirer { acquirerConnections = HTTPAcquirer.parse(url)?.connections ?? 0 }
        return configuration.maxConnections + acquirerConnections + reserve
    }
}

/// The admin token, read once at start and kept only as its hash.
public enum AdminToken {
    public struct Empty: Error, CustomStringConvertible {
        public let source: String
        public var description: String { "the admin token (\(source)) is empty" }
    }

    /// A token no Authorization header can carry (a control byte, a line break inside it, raw
    /// bytes past ASCII): every admin call would be refused 401 with nothing said why.
    public struct Unusable: Error, CustomStringConvertible {
        public let source: String
        public var description: String {
            "the admin token (\(source)) must be printable ASCII on one line (`openssl rand -hex 24` makes one)"
        }
    }

    /// The SHA-256 of the token in `file`, or else in `PSP_ADMIN_TOKEN` (zeroed and unset once
    /// read); nil when neither is given. Hashed straight from the wiped buffer it was read into,
    /// so the token never becomes a String the process keeps (and a heap dump would show).
    /// Whitespace around it (a file's final newline) is not part of it.
    public static func hash(file: String?) throws -> [UInt8]? {
        try read(file: file)?.hash
    }

    /// Below this many bytes a token is easy to guess: `serve` warns (README: `openssl rand -hex 24`).
    public static let shortLength = 16

    /// As `hash(file:)`, with the token's length in bytes (for the warning about a short one).
    public static func read(file: String?) throws -> (hash: [UInt8], length: Int)? {
        let secret: SecureBytes
        if let file {
            KeyFiles.discardEnvironmentSecret("PSP_ADMIN_TOKEN")  // never left for a child to inherit
            secret = try KeyFiles.readSecret(path: file)
        } else {
            let isSet = getenv("PSP_ADMIN_TOKEN") != nil
            guard let fromEnvironment = KeyFiles.takeEnvironmentSecret("PSP_ADMIN_TOKEN") else {
                if isSet { throw Empty(source: "PSP_ADMIN_TOKEN") }  // set but empty: a mistake, not "no admin"
                return nil
            }
            secret = fromEnvironment
        }
        let read: (hash: [UInt8], length: Int, printable: Bool)? = secret.withUnsafeBytes { bytes in
            let token = Secrets.trimmingASCIISpace(bytes)
            return token.isEmpty ? nil : (Secrets.sha256(token), token.count, token.allSatisfy { (0x20...0x7E).contains($0) })
        }
        guard let read else { throw Empty(source: file ?? "PSP_ADMIN_TOKEN") }
        guard read.printable else { throw Unusable(source: file ?? "PSP_ADMIN_TOKEN") }
        return (read.hash, read.length)
    }
}
