import DequeModule
import MakePayment
import Synchronization

/// A makePayment that has passed the front's checks (body, payment, token, merchant) and waits for
/// a worker.
public struct MakePaymentJob: Sendable {
    public var request: MakePaymentRequest
    public var payment: PaymentRecord
    public var receivedAt: ContinuousClock.Instant
    public init(request: MakePaymentRequest, payment: PaymentRecord, receivedAt: ContinuousClock.Instant = .now) {
        self.request = request
        self.payment = payment
        self.receivedAt = receivedAt
    }
}

/// The answer to a makePayment call: the HTTP status and the body.
public struct MakePaymentResult: Sendable, Equatable {
    public var httpStatus: Int
    public var response: MakePaymentResponse
    public init(httpStatus: Int, response: MakePaymentResponse) {
        self.httpStatus = httpStatus
        self.response = response
    }
}

/// What a worker's CPU-bound part produced: the answer, or the rest, which waits on I/O (the store,
/// the acquirer).
/// A worker hands the waiting to a task of its own and takes the next job at once, so a slow
/// acquirer holds no worker: workers are sized to the cores, authorizations in flight are not.
public enum WorkStep: Sendable {
    case answered(MakePaymentResult)
    case awaiting(@Sendable () async -> MakePaymentResult)
}

public struct QueueFull: Error, Sendable, CustomStringConvertible {
    public init() {}
    public var description: String { "the makePayment queue is full" }
}

/// Where the HTTP front hands makePayment jobs to workers. Bounded: a full queue refuses (503)
/// rather than growing. This in-process implementation is the one now; a durable one (PostgreSQL)
/// can stand behind the same protocol when front and workers run as separate processes.
public protocol MakePaymentQueue: Sendable {
    /// Enqueues `job` and waits for a worker's result. Throws `QueueFull` at once when full or closed.
    func submit(_ job: MakePaymentJob) async throws -> MakePaymentResult
    /// Runs `workers` consumers, each handing jobs to `handler`, until the queue is closed and drained
    /// and every authorization it started has been answered. At most `maxAuthorizing` authorizations
    /// wait on the acquirer at once; past that, workers wait (and the queue fills: back-pressure).
    func runWorkers(_ workers: Int, maxAuthorizing: Int, handler: @escaping @Sendable (MakePaymentJob) -> WorkStep) async
    /// Stops taking new jobs; workers finish what is queued and return.
    func close()
    /// Jobs waiting for a worker.
    var depth: Int { get }
}

/// The queue in process. A job waits here for one of `workers` worker permits (FIFO, at most
/// `capacity` waiting); once admitted, the caller's own task does the worker's CPU-bound part and
/// then the waiting part under an authorization slot. Handing the job to a worker task and the
/// rest to a task of its own, as a literal pool would, costs three trips through the executor
/// (and, on a quiet machine, three thread wake-ups) per payment for nothing: the permits bound
/// the decrypting to the cores all the same.
public final class InProcessMakePaymentQueue: MakePaymentQueue {
    private struct State {
        var handler: (@Sendable (MakePaymentJob) -> WorkStep)?
        var slots: AuthorizationSlots?
        /// Worker permits not in use (none before `runWorkers`).
        var freeWorkers = 0
        /// Jobs waiting for a permit, resumed with true to go or false when there is nobody to run them.
        var waiting: Deque<CheckedContinuation<Bool, Never>> = []
        /// Admitted jobs not yet answered.
        var running = 0
        var closed = false
        var drained: CheckedContinuation<Void, Never>?

        /// The `runWorkers` caller to resume when the queue is closed and nothing is left to answer.
        mutating func takeDrainedIfIdle() -> CheckedContinuation<Void, Never>? {
            guard closed, running == 0, waiting.isEmpty else { return nil }
            defer { drained = nil }
            return drained
        }
    }
    public let capacity: Int
    private let state = Mutex(State())
    private let queued = Atomic<Int>(0)

    public init(capacity: Int) {
        precondition(capacity > 0)
        self.capacity = capacity
    }

    public var depth: Int { queued.load(ordering: .relaxed) }

    public func submit(_ job: MakePaymentJob) async throws -> MakePaymentResult {
        enum Admission { case go, wait, reject }
        // Fast path: a free permit and nobody ahead, without suspending.
        let admission = state.withLock { s -> Admission in
            if s.closed { return .reject }
            if s.freeWorkers > 0 && s.waiting.isEmpty { s.freeWorkers -= 1; s.running += 1; return .go }
            return s.waiting.count >= capacity ? .reject : .wait
        }
        switch admission {
        case .reject: throw QueueFull()
        case .go: break
        case .wait:
            let admitted: Bool = await withCheckedContinuation { continuation in
                let now = state.withLock { s -> Bool? in
                    if s.closed { return false }
                    if s.freeWorkers > 0 && s.waiting.isEmpty { s.freeWorkers -= 1; s.running += 1; return true }
                    if s.waiting.count >= capacity { return false }
                    s.waiting.append(continuation)
                    return nil
                }
                if let now { continuation.resume(returning: now) } else { queued.add(1, ordering: .relaxed) }
            }
            guard admitted else { throw QueueFull() }
        }
        let (handler, slots) = state.withLock { ($0.handler!, $0.slots!) }
        let result: MakePaymentResult
        switch handler(job) {
        case .answered(let answer):
            releaseWorker()
            result = answer
        case .awaiting(let rest):
            // The permit is held until a slot is free: with every slot taken, decrypting stops
            // (no clear card data piles up) and the queue fills instead.
            await slots.acquire()
            releaseWorker()
            result = await rest()
            slots.release()
        }
        let drained = state.withLock { s -> CheckedContinuation<Void, Never>? in
            s.running -= 1
            return s.takeDrainedIfIdle()
        }
        drained?.resume()
        return result
    }

    /// Hands the permit to the next job waiting, or frees it.
    private func releaseWorker() {
        let next = state.withLock { s -> CheckedContinuation<Bool, Never>? in
            if let next = s.waiting.popFirst() { s.running += 1; return next }
            s.freeWorkers += 1
            return nil
        }
        if let next {
            queued.subtract(1, ordering: .relaxed)
            next.resume(returning: true)
        }
    }

    public func runWorkers(_ workers: Int, maxAuthorizing: Int = 4096,
                           handler: @escaping @Sendable (MakePaymentJob) -> WorkStep) async {
        let admitted = state.withLock { s -> [CheckedContinuation<Bool, Never>] in
            s.handler = handler
            s.slots = AuthorizationSlots(max(maxAuthorizing, 1))
            var admitted: [CheckedContinuation<Bool, Never>] = []
            for _ in 0..<max(workers, 1) {
                if let next = s.waiting.popFirst() { s.running += 1; admitted.append(next) } else { s.freeWorkers += 1 }
            }
            return admitted
        }
        queued.subtract(admitted.count, ordering: .relaxed)
        admitted.forEach { $0.resume(returning: true) }
        // Returns once closed and every job admitted or queued has been answered.
        await withCheckedContinuation { continuation in
            let now = state.withLock { s -> Bool in
                s.drained = continuation
                return s.takeDrainedIfIdle() != nil
            }
            if now { continuation.resume() }
        }
        state.withLock { $0.freeWorkers = 0 }
    }

    public func close() {
        let drained = state.withLock { s -> CheckedContinuation<Void, Never>? in
            s.closed = true
            return s.takeDrainedIfIdle()
        }
        drained?.resume()
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
