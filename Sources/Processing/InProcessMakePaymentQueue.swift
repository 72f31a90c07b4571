import DequeModule
import MakePayment
import Synchronization

/// The queue within one process: a bounded deque of jobs, its workers tasks on the event loops
/// (or on Swift's pool), each handing what waits on I/O to a task of its own.
public final class InProcessMakePaymentQueue: MakePaymentQueue {
    // Unsafe continuations rather than checked ones (which allocate a guard object each: two per
    // makePayment here), resumed exactly once: a submitter's by `submit` (refused) or by the worker
    // that ran its job; workers leave `runWorkers` only once the queue is closed and empty, so no
    // entry is left behind. An idle worker's by `submit` (handed a job), `next` or `close`, each
    // after taking it out of `idleWorkers` under the lock.
    struct Entry: Sendable {
        let job: MakePaymentJob
        let continuation: UnsafeContinuation<MakePaymentResult?, Never>
    }
    private struct State {
        var jobs: Deque<Entry> = []
        /// Each with the thread its worker runs on, when it is bound to one.
        var idleWorkers: [(thread: (any ThreadBoundTaskExecutor)?, continuation: UnsafeContinuation<Entry?, Never>)] = []
        var closed = false
    }
    public let capacity: Int
    private let state = Mutex(State())
    private let queued = Atomic<Int>(0)
    private let taken = Atomic<Int>(0)

    public init(capacity: Int) {
        precondition(capacity > 0)
        self.capacity = capacity
    }

    public var depth: Int { queued.load(ordering: .relaxed) }

    public var inProgress: Int { taken.load(ordering: .relaxed) }

    /// Closed for a shutdown: it takes no new job, and its workers finish the ones it holds.
    public var isClosed: Bool { state.withLock { $0.closed } }

    /// Workers waiting for a job.
    public var idleWorkers: Int { state.withLock { $0.idleWorkers.count } }

    public func submit(_ job: MakePaymentJob) async throws -> MakePaymentResult {
        let result: MakePaymentResult? = await withUnsafeContinuation { continuation in
            let entry = Entry(job: job, continuation: continuation)
            enum Action { case reject, handTo(UnsafeContinuation<Entry?, Never>), queued }
            let action = state.withLock { s -> Action in
                if s.closed || s.jobs.count >= capacity { return .reject }
                if !s.idleWorkers.isEmpty {
                    let local = s.idleWorkers.lastIndex { $0.thread?.isCurrentThread == true }
                    return .handTo(s.idleWorkers.remove(at: local ?? s.idleWorkers.count - 1).continuation)
                }
                s.jobs.append(entry)
                // Counted under the lock, so that a worker taking the job at once cannot count it out first.
                queued.add(1, ordering: .relaxed)
                return .queued
            }
            switch action {
            case .reject: continuation.resume(returning: nil)
            case .handTo(let worker): worker.resume(returning: entry)
            case .queued: break
            }
        }
        guard let result else { throw QueueFull() }
        return result
    }

    /// The next job, and whether the worker waited for it (its thread was free meanwhile).
    private func next(on thread: (any ThreadBoundTaskExecutor)?) async -> (entry: Entry, waited: Bool)? {
        // A job already waiting is taken without suspending (a suspension is a trip through the executor).
        if let entry = state.withLock({ $0.jobs.popFirst() }) {
            queued.subtract(1, ordering: .relaxed)
            return (entry, false)
        }
        let entry = await withUnsafeContinuation { (continuation: UnsafeContinuation<Entry?, Never>) in
            enum Action { case run(Entry), finish, wait }
            let action = state.withLock { s -> Action in
                if let entry = s.jobs.popFirst() { return .run(entry) }
                if s.closed { return .finish }
                s.idleWorkers.append((thread: thread, continuation: continuation))
                return .wait
            }
            switch action {
            case .run(let entry):
                queued.subtract(1, ordering: .relaxed)
                continuation.resume(returning: entry)
            case .finish: continuation.resume(returning: nil)
            case .wait: break
            }
        }
        return entry.map { ($0, true) }
    }

    /// How long a worker on a thread of its own (an event loop) takes job after job before it lets
    /// the thread serve its other work (`ThreadBoundTaskExecutor.yieldToIO`): its `Task.yield()`
    /// before each job lets queued tasks run, but an event loop runs every task queued during a
    /// tick in that same tick, so without this the loop read none of its sockets (requests,
    /// acquirer replies) for as long as jobs waited.
    public static let ioTurnEvery: Duration = .milliseconds(2)

    public func runWorkers(_ workers: Int, maxAuthorizing: Int = 4096, executors: [any TaskExecutor] = [],
                           handler: @escaping @Sendable (MakePaymentJob) -> WorkStep) async {
        let slots = AuthorizationSlots(max(maxAuthorizing, 1))
        await withDiscardingTaskGroup { group in
            for worker in 0..<max(workers, 1) {
                let executor = executors.isEmpty ? nil : executors[worker % executors.count]
                let thread = executor as? any ThreadBoundTaskExecutor
                // Child tasks inherit the preference: the authorizations run where their worker does.
                group.addTask(executorPreference: executor) {
                    await withDiscardingTaskGroup { authorizations in
                        var busySince = ContinuousClock.now
                        while let (entry, waited) = await self.next(on: thread) {
                            self.taken.add(1, ordering: .relaxed)
                            if waited { busySince = .now }
                            // Let the continuations of payments already past their decryption
                            // (store writes done, answers to send) run before this worker takes
                            // its thread for another ~1 ms of RSA: finishing started
                            // payments first keeps the latency tail short under bursts. Every
                            // `ioTurnEvery` of jobs back to back, the thread's sockets too.
                            if let thread, ContinuousClock.now - busySince >= Self.ioTurnEvery {
                                await thread.yieldToIO()
                                busySince = .now
                            } else {
                                await Task.yield()
                            }
                            switch handler(entry.job) {
                            case .answered(let result):
                                self.taken.subtract(1, ordering: .relaxed)
                                entry.continuation.resume(returning: result)
                            case .awaiting(let rest):
                                await slots.acquire()
                                authorizations.addTask {
                                    let result = await rest()
                                    self.taken.subtract(1, ordering: .relaxed)
                                    entry.continuation.resume(returning: result)
                                    slots.release()
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    public func close() {
        let idle = state.withLock { s -> [UnsafeContinuation<Entry?, Never>] in
            s.closed = true
            defer { s.idleWorkers.removeAll() }
            return s.idleWorkers.map(\.continuation)
        }
        idle.forEach { $0.resume(returning: nil) }
    }
}

/// A counting semaphore for authorizations waiting on the acquirer.
final class AuthorizationSlots: Sendable {
    private let state: Mutex<(free: Int, waiters: Deque<CheckedContinuation<Void, Never>>)>

    init(_ count: Int) { state = Mutex((count, [])) }

    func acquire() async {
        let granted = state.withLock { s -> Bool in
            guard s.free > 0 else { return false }
            s.free -= 1
            return true
        }
        if granted { return }
        await withCheckedContinuation { continuation in
            let granted = state.withLock { s -> Bool in
                if s.free > 0 { s.free -= 1; return true }
                s.waiters.append(continuation)
                return false
            }
            if granted { continuation.resume() }
        }
    }

    func release() {
        let next = state.withLock { s -> CheckedContinuation<Void, Never>? in
            if let waiter = s.waiters.popFirst() { return waiter }
            s.free += 1
            return nil
        }
        next?.resume()
    }
}
