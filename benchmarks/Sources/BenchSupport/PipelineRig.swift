import Acquiring
import CardCrypto
import Foundation
import MakePayment
import Processing
import SQLitePaymentStore
import Synchronization

/// The whole makePayment pipeline in one process, as the worker runs it minus HTTP: JSON decode of
/// the body, the pipeline (token, idempotency, decrypt, parse, simulator acquirer, map, record in
/// SQLite with group commit and fsync), JSON encode of the answer. Each payment is used once, so
/// the rig registers all it will need up front. Payments go through the worker's queue to as many
/// workers as cores, and the store hears from the queue what the worker's store hears.
public final class PipelineRig: Sendable {
    public let path: String
    public let store: SQLitePaymentStore
    public let pipeline: MakePaymentPipeline
    private let journal: JournalBoundStore?
    private let queue: InProcessMakePaymentQueue
    private let workers: Task<Void, Never>
    private let bodies: [Data]
    private let tokens: [String]
    private let cursor = Atomic<Int>(0)

    public var capacity: Int { bodies.count }
    /// CPU seconds the store's writer thread has used so far.
    public var writerCPUSeconds: Double { threadCPUSeconds(named: SQLitePaymentStore.writerThreadName) }
    public var used: Int { min(cursor.load(ordering: .relaxed), bodies.count) }
    /// The file system the store is on when it keeps nothing across a power cut ("tmpfs"), else nil:
    /// there an fsync reaches no disk, and the store's figures are not those of a durable store.
    /// (Linux: the longest mount point of /proc/mounts above the store's folder.)
    public var temporaryStorage: String? {
        guard let mounts = try? String(contentsOfFile: "/proc/mounts", encoding: .utf8) else { return nil }
        let folder = URL(fileURLWithPath: path).deletingLastPathComponent().resolvingSymlinksInPath().path
        var best: (point: String, type: String)?
        for line in mounts.split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count >= 3 else { continue }
            let point = String(fields[1]), type = String(fields[2])
            guard point == "/" || folder == point || folder.hasPrefix(point + "/") else { continue }
            if point.count >= (best?.point.count ?? -1) { best = (point, type) }
        }
        guard let type = best?.type, type == "tmpfs" || type == "ramfs" else { return nil }
        return type
    }

    /// Where the pipeline's attempts and outcomes go. Only `.sqlite` is the worker; the other two
    /// are bounds, to see what the store's writes cost.
    public enum Writes: String, Sendable, CaseIterable {
        /// The worker's store: SQLite, group commit, fsync.
        case sqlite
        /// Not written at all (`WritesSkippedStore`).
        case skipped
        /// Appended to a file, one pwrite and fdatasync per group (`JournalBoundStore`).
        case journal
    }

    /// A store in a new temporary file with `payments` registered payments, each with a cryptogram
    /// of its own; the pipeline's own writes go where `writes` says.
    public init(payments: Int, workers workerCount: Int = ProcessInfo.processInfo.activeProcessorCount,
                directory: String = NSTemporaryDirectory(), writes: Writes = .sqlite) async throws {
        path = directory + "/pipeline-bench-\(UUID().uuidString).sqlite"
        // The worker's windows; every registered payment remembered in memory, as the worker's
        // default limit does at its scale (past it, the front would read the file instead).
        let store = try SQLitePaymentStore(path: path, busyGroupCommitWindow: SQLitePaymentStore.defaultBusyGroupCommitWindow,
                                           pendingLimit: max(100_000, payments))
        self.store = store
        let pipelineStore: any PaymentStore
        switch writes {
        case .sqlite: pipelineStore = store; journal = nil
        case .skipped: pipelineStore = WritesSkippedStore(store); journal = nil
        case .journal:
            let bound = try JournalBoundStore(store, path: path + "-journal-bound")
            pipelineStore = bound; journal = bound
        }
        let pipeline = MakePaymentPipeline(
            configuration: .init(acquirerTimeout: .seconds(10), instanceId: "bench"),
            keyRing: Fixtures.keyRing(), store: pipelineStore, acquirer: SimulatorAcquirer(),
            currentMonth: { Fixtures.currentMonth })
        self.pipeline = pipeline
        let cards = Fixtures.cardData(count: payments)
        var bodies: [Data] = [], tokens: [String] = []
        for (i, cardData) in cards.enumerated() {
            let request = MakePaymentRequest(pspTransactionId: "bench-\(i)", merchantSerialNumber: "123456",
                                             cardData: cardData, confirmed: .yes)
            bodies.append(try JSONEncoder().encode(request))
            tokens.append("token-\(i)")
        }
        self.bodies = bodies
        self.tokens = tokens
        // Registered concurrently, so the store's group commit takes many per fsync.
        do {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for lane in 0..<64 {
                    group.addTask {
                        for i in stride(from: lane, to: payments, by: 64) {
                            let registration = PaymentRegistration(
                                pspTransactionId: "bench-\(i)", merchantSerialNumber: "123456", merchantOrderId: "order-\(i)",
                                amount: 10_000, currency: "NOK", tokenHash: Secrets.sha256("token-\(i)"), paymentText: "bench")
                            _ = try await store.register(registration, now: 1)
                        }
                    }
                }
                try await group.waitForAll()
            }
        } catch {
            store.close()
            throw error
        }
        // Then the worker's queue, workers and store signals, as buildApplication wires them (the
        // queue's capacity and authorizations in flight: the worker's defaults).
        let queue = InProcessMakePaymentQueue(capacity: 1024)
        self.queue = queue
        store.follow(queue, workers: workerCount)
        workers = Task { await queue.runWorkers(workerCount, maxAuthorizing: 4096, executors: []) { pipeline.workStep($0) } }
    }

    /// The next payment, start to finish as the worker does it: parse the body, pipeline, write the
    /// answer. Nil when the rig is used up; otherwise the answer and whether it was OK (as every
    /// payment here should be).
    public func makePayment() async -> (body: [UInt8], ok: Bool)? {
        let i = cursor.add(1, ordering: .relaxed).oldValue
        guard i < bodies.count else { return nil }
        let request: MakePaymentRequest?
        if case .request(let parsed) = bodies[i].withUnsafeBytes({ MakePaymentRequest.parse(json: $0) }) { request = parsed } else { request = nil }
        let result = await pipeline.handle(body: request, authorization: tokens[i], queue: queue)
        return (result.response.json, result.response.paymentInfo.status == .ok)
    }

    /// Runs payments on `concurrency` tasks until `seconds` have passed (tasks take no new payment
    /// after that) or the rig is used up; makePayments per second and how many were made.
    public func run(concurrency: Int, seconds: Double = .infinity) async -> (perSecond: Double, made: Int, failures: Int) {
        let start = ContinuousClock.now
        let deadline = seconds.isFinite ? start + .milliseconds(Int64(seconds * 1000)) : nil
        let usedBefore = used
        let failures = await withTaskGroup(of: Int.self) { group in
            for _ in 0..<concurrency {
                group.addTask {
                    var failures = 0
                    while deadline.map({ ContinuousClock.now < $0 }) ?? true, let answer = await self.makePayment() {
                        if !answer.ok { failures += 1 }
                    }
                    return failures
                }
            }
            return await group.reduce(0, +)
        }
        let elapsed = ContinuousClock.now - start
        let (s, atto) = elapsed.components
        let made = used - usedBefore
        return (Double(made) / (Double(s) + Double(atto) / 1e18), made, failures)
    }

    /// Lets the workers finish, stops the store and removes its files. Call once every payment
    /// started has its answer.
    public func close() async {
        queue.close()
        await workers.value
        store.close()
        journal?.close()
        for suffix in ["", "-wal", "-shm", "-gate", "-journal-bound"] { try? FileManager.default.removeItem(atPath: path + suffix) }
    }
}
