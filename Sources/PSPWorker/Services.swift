import Acquiring
import Foundation
import Hummingbird
import ISO8583Acquirer
import Logging
import Processing
import SQLitePaymentStore
import ServiceLifecycle
import Synchronization
import UnixSignals

// The worker's long-running parts as services of its ServiceGroup, and the order of their shutdown.

/// The worker is about to stop: set at a stop signal, a drain time before the server stops
/// taking requests.
public final class DrainNotice: Sendable {
    private let draining = Atomic<Bool>(false)
    public init() {}
    public var isDraining: Bool { draining.load(ordering: .relaxed) }
    func begin() { draining.store(true, ordering: .relaxed) }
}

/// Runs the worker until SIGTERM or SIGINT, then shuts it down gracefully: the server finishes
/// the requests in flight, the workers drain the queue, the store closes. With a `drainTime`,
/// `/health/ready` answers 503 for that long first while everything is still served, so that a load
/// balancer takes the worker out of rotation before it stops taking connections (without it the
/// balancer learns only from refused connections). A second signal ends the wait.
public func runUntilStopSignal(_ app: some ApplicationProtocol, drain: DrainNotice, drainTime: Duration, logger: Logger) async throws {
    // Trapped for the group's whole life (the service keeps the sequence): a signal during the
    // shutdown itself is then taken, not the default action that would kill the process mid-way.
    let signals = await UnixSignalsSequence(trapping: .sigterm, .sigint)
    let stop = StopSignalDrain(signals: signals, notice: drain, drainTime: drainTime, logger: logger)
    let group = ServiceGroup(configuration: .init(
        services: [.init(service: app), .init(service: stop, successTerminationBehavior: .gracefullyShutdownGroup)],
        logger: logger))
    try await group.run()
}

/// Waits for a stop signal, marks the drain, waits out `drainTime` (or a second signal), then
/// returns, which shuts the group down gracefully. Also returns when the group shuts down for
/// another reason.
struct StopSignalDrain: Service {
    let signals: UnixSignalsSequence
    let notice: DrainNotice
    let drainTime: Duration
    let logger: Logger

    func run() async throws {
        let (firstSignal, first) = AsyncStream<Void>.makeStream()
        await cancelWhenGracefulShutdown {
            await withTaskGroup(of: Void.self) { group in
                group.addTask {
                    var seen = 0
                    for await signal in signals {
                        seen += 1
                        if seen == 1 {
                            notice.begin()
                            logger.notice("stop signal: draining, then shutting down", metadata: [
                                "signal": "\(signal)", "drain": "\(drainTime)"])
                            first.finish()
                            if drainTime <= .zero { return }
                        } else {
                            logger.notice("second stop signal: shutting down now", metadata: ["signal": "\(signal)"])
                            return
                        }
                    }
                }
                group.addTask {
                    for await _ in firstSignal {}
                    guard !Task.isCancelled, drainTime > .zero else { return }
                    try? await Task.sleep(for: drainTime)
                }
                // The signal task ends at once without a drain time, or at a second signal; the
                // drain task when its time is out. Either way the drain is over.
                _ = await group.next()
                group.cancelAll()
            }
        }
    }
}

/// The worker pool as a Service: on graceful shutdown it closes the queue and lets workers drain it.
/// On cancellation too (another service failed, say: the port was taken): idle workers wait on the
/// queue without heeding cancellation, and the process would otherwise never exit.
struct WorkerPoolService: WritesToStore {
    let writers: StoreWriters
    let queue: InProcessMakePaymentQueue
    let workers: Int
    let maxAuthorizing: Int
    let pipeline: MakePaymentPipeline
    let executors: [any TaskExecutor]

    func run() async throws {
        defer { writers.finished() }
        let pipeline = self.pipeline
        await withTaskCancellationOrGracefulShutdownHandler {
            await queue.runWorkers(workers, maxAuthorizing: maxAuthorizing, executors: executors) { job in pipeline.workStep(job) }
        } onCancelOrGracefulShutdown: {
            queue.close()
        }
    }
}

/// Store and forward of reversals, until shutdown; what is left is sent after the next start.
/// Sends already under way are finished (and recorded) before the store closes after it.
struct ReversalLoopService: WritesToStore {
    let writers: StoreWriters
    let reversals: ReversalService
    func run() async throws {
        defer { writers.finished() }
        await cancelWhenGracefulShutdown { await reversals.run() }
        await reversals.finishSendingSoon()
    }
}

/// Reverses attempts a crash (of this process or an earlier one) left without an outcome: at
/// start, then every 5 s, until shutdown.
struct OrphanSweepService: WritesToStore {
    let writers: StoreWriters
    let pipeline: MakePaymentPipeline
    func run() async throws {
        defer { writers.finished() }
        await cancelWhenGracefulShutdown { await pipeline.runOrphanSweeps(every: .seconds(5)) }
    }
}

/// Echoes on an idle ISO 8583 connection; nothing for adapters that need no keep-alive.
struct AcquirerKeepAlive: Service {
    let acquirer: any AcquirerAdapter
    func run() async throws {
        guard let iso = acquirer as? ISO8583Acquirer else {
            try? await gracefulShutdown()
            return
        }
        await cancelWhenGracefulShutdown { await iso.runKeepAlive() }
    }
}

/// Closes the store once everything that writes to it has stopped. A graceful shutdown stops the
/// services in reverse order, this one last; a cancellation (another service failed: the port was
/// taken, say) stops them all at once, and the workers may still be draining the queue and the
/// reversals finishing their sends, each of which must be recorded: so it waits for them either way.
/// `lastWrites` runs after them, before the store closes: a late approval the acquirer reported
/// after the reversal service stopped (its connection is still open) reopens its reversal then
/// (`ReversalService.finishSendingSoon` waits for the reopen), instead of failing on a closed store.
struct StoreCloser: Service {
    let writers: StoreWriters
    var lastWrites: @Sendable () async -> Void = {}
    let close: @Sendable () -> Void
    func run() async throws {
        try? await gracefulShutdown()
        await writers.allFinished()
        await lastWrites()
        // Closing waits for the writer's last group and any checkpoint: on a thread of its own,
        // not one of the cooperative pool's.
        let close = self.close
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            Thread { close(); done.resume() }.start()
        }
    }
}

/// A service that writes to the store: it calls `writers.finished()` when it returns.
protocol WritesToStore: Service {
    var writers: StoreWriters { get }
}

/// The services that write to the store, counted down as each returns (`StoreCloser`).
final class StoreWriters: Sendable {
    private let state = Mutex<(running: Int?, waiting: [CheckedContinuation<Void, Never>])>((nil, []))

    /// How many there are: set once, before the services run.
    func expect(_ count: Int) { state.withLock { $0.running = count } }

    func finished() {
        let resumed = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            guard let running = s.running else { preconditionFailure("StoreWriters.expect was not called") }
            s.running = running - 1
            guard running == 1 else { return [] }
            defer { s.waiting.removeAll() }
            return s.waiting
        }
        resumed.forEach { $0.resume() }
    }

    /// Returns once every one has finished (not cancellable: the store must outlive them).
    func allFinished() async {
        await withCheckedContinuation { continuation in
            let done = state.withLock { s -> Bool in
                guard let running = s.running else { preconditionFailure("StoreWriters.expect was not called") }
                guard running > 0 else { return true }
                s.waiting.append(continuation)
                return false
            }
            if done { continuation.resume() }
        }
    }
}
