import Acquiring
import CardCrypto
import Foundation
import HTTPAcquirer
import Hummingbird
import ISO8583Acquirer
import Logging
import MakePayment
import NIOPosix
import Metrics
import Prometheus
import Processing
import SQLitePaymentStore
import ServiceLifecycle
import Synchronization

/// The parts the worker is built from. `serve` makes them from the configuration; tests may hand in
/// their own (a store in a temporary folder, a scripted acquirer).
public struct PSPWorkerComponents: Sendable {
    public var keyRing: KeyRing
    public var store: any PaymentStore
    public var acquirer: any AcquirerAdapter
    public var codes: ResponseCodeTable
    /// Closed when the application stops (after the workers have drained).
    public var closeStore: @Sendable () -> Void
    /// Set when a stop signal begins the drain (`runUntilStopSignal`): `/health/ready` answers 503.
    public var drain = DrainNotice()

    public init(keyRing: KeyRing, store: any PaymentStore, acquirer: any AcquirerAdapter,
                codes: ResponseCodeTable = ResponseCodeTable(), closeStore: @escaping @Sendable () -> Void = {}) {
        self.keyRing = keyRing
        self.store = store
        self.acquirer = acquirer
        self.codes = codes
        self.closeStore = closeStore
    }

    /// Builds the components the configuration names, or with `acquirer`, that adapter instead of
    /// the configuration's (an adapter of your own). Logs key warnings and the acquirer;
    /// `componentLogger` makes the logger of a component by its label (the ISO 8583 adapter's).
    public static func make(_ configuration: PSPWorkerConfiguration, acquirer custom: (any AcquirerAdapter)? = nil,
                            logger: Logger,
                            componentLogger: @Sendable (String) -> Logger = { Logger(label: $0) }) throws -> PSPWorkerComponents {
        let (ring, warnings) = try configuration.keys.load(concurrency: max(configuration.workers, 1))
        warnings.forEach { logger.warning("\($0)") }
        logger.info("keys loaded", metadata: [
            "active": "\(ring.active.source) sha256:\(ring.active.fingerprint)",
            "retiring": "\(ring.retiring.map { "\($0.source) sha256:\($0.fingerprint)" })",
            // The libcrypto loaded, and what it read at load to pick its RSA code path
            // (benchmarks/rsa-code-path.sh).
            "openssl": "\(Secrets.openSSLVersion)",
            "OPENSSL_ia32cap": "\(getenv("OPENSSL_ia32cap").map { String(cString: $0) } ?? "unset: OpenSSL's default RSA code path")",
        ])
        let store: SQLitePaymentStore
        switch configuration.store {
        case .sqlite(let path):
            let directory = (path as NSString).deletingLastPathComponent
            if !directory.isEmpty { try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true) }
            store = try SQLitePaymentStore(path: path, groupCommitWindow: configuration.groupCommitWindow,
                                           busyGroupCommitWindow: configuration.busyGroupCommitWindow)
        }
        let acquirer: any AcquirerAdapter
        if let custom {
            logger.info("acquirer", metadata: ["acquirer": "\(custom.name) (an adapter of the application's own)"])
            acquirer = custom
        } else {
            if case .simulator = configuration.acquirer {
                // Loud: a worker that Vipps reaches would answer OK with nothing authorized.
                logger.warning("acquirer: the simulator (approves by test card, authorizes nothing; for tests and load runs only)")
            } else {
                logger.info("acquirer", metadata: ["acquirer": "\(configuration.acquirer.logDescription)"])
            }
            acquirer = Self.adapter(for: configuration.acquirer, componentLogger: componentLogger)
        }
        var codes = ResponseCodeTable()
        if let path = configuration.responseCodeOverridesPath {
            guard let json = FileManager.default.contents(atPath: path) else { throw UnreadableFile(option: "--response-codes", path: path) }
            codes = try ResponseCodeTable(overridesJSON: json, acquirer: acquirer.name)
        }
        return PSPWorkerComponents(keyRing: ring, store: store, acquirer: acquirer, codes: codes, closeStore: { store.close() })
    }

    static func adapter(for choice: PSPWorkerConfiguration.AcquirerChoice,
                        componentLogger: (String) -> Logger = { Logger(label: $0) }) -> any AcquirerAdapter {
        switch choice {
        // Room for a long load run (3 M payments: 5 minutes at 10,000/s) so that memory stays flat through it.
        case .simulator(let latency): return SimulatorAcquirer(latency: latency, expectedPayments: 3_000_000)
        case .iso8583(let host, let port, let terminalId):
            var iso = ISO8583Acquirer.Configuration(host: host, port: port)
            iso.terminalId = terminalId
            return ISO8583Acquirer(configuration: iso, logger: componentLogger("psp-worker.iso8583"))
        case .http(let baseURL):
            return HTTPAcquirer(baseURL: baseURL, logger: componentLogger("psp-worker.http-acquirer"))!
        }
    }
}

/// Builds the worker: router, pipeline, queue, worker pool and reversal services. `main` only
/// parses arguments and runs what this returns; tests drive the same router. `componentLogger`
/// makes each component's logger by its label (`psp-worker.pipeline`, `psp-worker.reversals`).
public func buildApplication(
    configuration: PSPWorkerConfiguration, components: PSPWorkerComponents? = nil,
    logger: Logger = Logger(label: "psp-worker"),
    componentLogger: @escaping @Sendable (String) -> Logger = { Logger(label: $0) }
) throws -> some ApplicationProtocol {
    let components = try components ?? PSPWorkerComponents.make(configuration, logger: logger, componentLogger: componentLogger)
    let registry = PrometheusCollectorRegistry()
    var factory = PrometheusMetricsFactory(registry: registry)
    // A decryption takes a fraction of a millisecond: under the default buckets (5 ms and up) every
    // one fell in the first, and no quantile could show it change.
    factory.durationHistogramBuckets["psp_decrypt_duration_seconds"] = [50, 100, 150, 200, 300, 500, 750, 1_000, 2_000, 5_000, 10_000, 50_000]
        .map { Duration.microseconds($0) }
    // The default buckets stop at 10 s; an acquirer timeout may be up to 15 s, and the answers
    // that come near it are the ones to see.
    factory.durationHistogramBuckets["psp_acquirer_duration_seconds"] = [5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 12_000, 14_000, 15_000]
        .map { Duration.milliseconds($0) }
    let metrics = PipelineMetrics(factory: factory)
    let reversals = ReversalService(store: components.store, acquirer: components.acquirer, metrics: metrics,
                                    logger: componentLogger("psp-worker.reversals"))
    let pipeline = MakePaymentPipeline(
        configuration: .init(acquirerTimeout: configuration.acquirerTimeout, instanceId: Secrets.hexString(Secrets.randomBytes(8))),
        keyRing: components.keyRing, store: components.store, acquirer: components.acquirer, codes: components.codes,
        metrics: metrics, reversals: reversals, logger: componentLogger("psp-worker.pipeline"))
    // Weak: the acquirer holds the handler, and the pipeline holds the acquirer.
    (components.acquirer as? any LateReplyReporting)?.onLateReply { [weak pipeline] reply in
        pipeline?.handleLateReplySoon(reply)
    }
    let queue = InProcessMakePaymentQueue(capacity: configuration.queueCapacity)
    // Workers on the event loops need one per loop: a loop with none would only feed the other
    // loops' workers, which would carry its decryptions on top of their own sockets (the command
    // line refuses such a count; a configuration built in code is raised to it).
    let loopCount = configuration.eventLoopThreads ?? PSPWorkerConfiguration.defaultEventLoopCount
    let workerCount = configuration.workersOnEventLoops ? max(configuration.workers, loopCount) : max(configuration.workers, 1)
    if workerCount != configuration.workers {
        logger.warning("workers raised to one per event loop", metadata: ["workers": "\(configuration.workers)", "eventLoops": "\(loopCount)"])
    }
    (components.store as? SQLitePaymentStore)?.follow(queue, workers: workerCount)
    if configuration.adminTokenHash == nil {
        logger.warning("no admin token (--admin-token-file or PSP_ADMIN_TOKEN): the /payments endpoints answer 401")
    }
    let routes = Routes(configuration: configuration, pipeline: pipeline, queue: queue, drain: components.drain, store: components.store,
                        acquirer: components.acquirer, registry: registry, factory: factory,
                        adminTokenHash: configuration.adminTokenHash, logger: logger)
    let router = Router(context: BasicRequestContext.self, options: .autoGenerateHeadEndpoints)
    routes.add(to: router)

    let eventLoopGroup: MultiThreadedEventLoopGroup = configuration.eventLoopThreads.map { MultiThreadedEventLoopGroup(numberOfThreads: $0) } ?? .singleton
    // The services that write to the store, which closes after the last of them has returned.
    let writers = StoreWriters()
    let workers = WorkerPoolService(writers: writers, queue: queue, workers: workerCount,
                                    maxAuthorizing: configuration.maxAuthorizationsInFlight, pipeline: pipeline,
                                    executors: configuration.workersOnEventLoops ? EventLoopTaskExecutor.forEachLoop(of: eventLoopGroup) : [])
    // Shut down in reverse: the HTTP server first (finishing requests in flight), then the
    // workers (draining the queue), then reversals, then the store.
    let services: [any Service] = [
        StoreCloser(writers: writers, lastWrites: { await reversals.finishSendingSoon() }, close: components.closeStore),
        ReversalLoopService(writers: writers, reversals: reversals),
        OrphanSweepService(writers: writers, pipeline: pipeline), AcquirerKeepAlive(acquirer: components.acquirer), workers,
    ]
    writers.expect(services.count { $0 is any WritesToStore })
    let makePayment = routes.makePaymentEndpoint()
    let path = configuration.makePaymentPath, maxBodyBytes = configuration.maxBodyBytes
    let staysOnEventLoop = configuration.workersOnEventLoops
    return Application(
        router: router,
        server: .http1(configuration: .init(additionalChannelHandlers: [
            ConnectionLimitHandler(routes.connections),
            MakePaymentChannelHandler(path: path, maxBodyBytes: maxBodyBytes, staysOnEventLoop: staysOnEventLoop,
                                      record: { [metrics = pipeline.metrics] in metrics.recordAnswer($0) }, serve: makePayment),
        ])),
        configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "psp-worker"),
        services: services,
        eventLoopGroupProvider: .shared(eventLoopGroup),
        logger: logger)
}

/// A file an option names that cannot be read (missing, a folder, no permission).
struct UnreadableFile: Error, CustomStringConvertible {
    let option: String
    let path: String
    var description: String { "\(option): cannot read \(path)" }
}
