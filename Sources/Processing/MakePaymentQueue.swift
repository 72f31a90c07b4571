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
    /// Runs `workers` consumers, each handing jobs to `handler`, until the queue is closed and drained.
    func runWorkers(_ workers: Int, handler: @escaping @Sendable (MakePaymentJob) async -> MakePaymentResult) async
    /// Stops taking new jobs; workers finish what is queued and return.
    func close()
    /// Jobs waiting for a worker.
    var depth: Int { get }
}

public final class InProcessMakePaymentQueue: MakePaymentQueue {
    struct Entry: Sendable {
        let job: MakePaymentJob
        let continuation: CheckedContinuation<MakePaymentResult?, Never>
    }
    private struct State {
        var jobs: Deque<Entry> = []
        var idleWorkers: [CheckedContinuation<Entry?, Never>] = []
        var closed = false
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
        let result: MakePaymentResult? = await withCheckedContinuation { continuation in
            let entry = Entry(job: job, continuation: continuation)
            enum Action { case reject, handTo(CheckedContinuation<Entry?, Never>), queued }
            let action = state.withLock { s -> Action in
                if s.closed || s.jobs.count >= capacity { return .reject }
                if !s.idleWorkers.isEmpty { return .handTo(s.idleWorkers.removeLast()) }
                s.jobs.append(entry)
                return .queued
            }
            switch action {
            case .reject: continuation.resume(returning: nil)
            case .handTo(let worker): worker.resume(returning: entry)
            case .queued: queued.add(1, ordering: .relaxed)
            }
        }
        guard let result else { throw QueueFull() }
        return result
    }

    private func next() async -> Entry? {
        await withCheckedContinuation { (worker: CheckedContinuation<Entry?, Never>) in
            enum Action { case run(Entry), finish, wait }
            let action = state.withLock { s -> Action in
                if let entry = s.jobs.popFirst() { return .run(entry) }
                if s.closed { return .finish }
                s.idleWorkers.append(worker)
                return .wait
            }
            switch action {
            case .run(let entry):
                queued.subtract(1, ordering: .relaxed)
                worker.resume(returning: entry)
            case .finish: worker.resume(returning: nil)
            case .wait: break
            }
        }
    }

    public func runWorkers(_ workers: Int, handler: @escaping @Sendable (MakePaymentJob) async -> MakePaymentResult) async {
        await withDiscardingTaskGroup { group in
            for _ in 0..<max(workers, 1) {
                group.addTask {
                    while let entry = await self.next() {
                        entry.continuation.resume(returning: await handler(entry.job))
                    }
                }
            }
        }
    }

    public func close() {
        let idle = state.withLock { s -> [CheckedContinuation<Entry?, Never>] in
            s.closed = true
            defer { s.idleWorkers.removeAll() }
            return s.idleWorkers
        }
        idle.forEach { $0.resume(returning: nil) }
    }
}
