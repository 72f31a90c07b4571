import MakePayment

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

    /// 404: no payment is registered under the id.
    public static func notFound(_ id: String) -> MakePaymentResult { MakePaymentResult(httpStatus: 404, response: .fail(id, .invalidRequest)) }
    /// 200 with the outcome on record: every call for a payment gets the first one's answer.
    public static func recorded(_ outcome: PaymentOutcome, _ id: String) -> MakePaymentResult {
        MakePaymentResult(httpStatus: 200, response: outcome.response(for: id))
    }
    /// 200 with 85: the payment was cancelled before it had an outcome.
    public static func cancelled(_ id: String) -> MakePaymentResult { MakePaymentResult(httpStatus: 200, response: .fail(id, .responseReceivedTooLate)) }
    /// 500 with 91.
    public static func internalError(_ id: String) -> MakePaymentResult { MakePaymentResult(httpStatus: 500, response: .fail(id, .internalError)) }
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

/// Where the HTTP front hands makePayment jobs to workers. Bounded: a full queue refuses (500 with 91)
/// rather than growing. `InProcessMakePaymentQueue` is the one implementation now; a durable one (PostgreSQL)
/// can stand behind the same protocol when front and workers run as separate processes.
public protocol MakePaymentQueue: Sendable {
    /// Enqueues `job` and waits for a worker's result. Throws `QueueFull` at once when full or closed.
    func submit(_ job: MakePaymentJob) async throws -> MakePaymentResult
    /// Runs `workers` consumers, each handing jobs to `handler`, until the queue is closed and drained
    /// and every authorization it started has been answered. At most `maxAuthorizing` authorizations
    /// wait on the acquirer at once; past that, workers wait (and the queue fills: back-pressure).
    /// With `executors`, worker i and the authorizations it starts run on `executors[i % count]`
    /// (the HTTP event loops, say); without, on the cooperative pool.
    func runWorkers(_ workers: Int, maxAuthorizing: Int, executors: [any TaskExecutor],
                    handler: @escaping @Sendable (MakePaymentJob) -> WorkStep) async
    /// Stops taking new jobs; workers finish what is queued and return.
    func close()
    /// Jobs waiting for a worker.
    var depth: Int { get }
    /// Jobs a worker has taken and not yet answered (decrypting, authorizing, or waiting on the store).
    var inProgress: Int { get }
}

/// A task executor bound to one thread (an event loop's), that can tell whether it is the caller's.
/// The queue uses it to hand a job to an idle worker on the submitting thread first: the job then
/// runs there next, without waking another core (on a VM, an interrupt to another vCPU).
public protocol ThreadBoundTaskExecutor: TaskExecutor {
    var isCurrentThread: Bool { get }
    /// Suspends the calling task (which runs on this executor) until the thread has served its
    /// other work: for an event loop, until it has read its sockets. A worker that takes job after
    /// job calls it every `InProcessMakePaymentQueue.ioTurnEvery`.
    func yieldToIO() async
}

extension ThreadBoundTaskExecutor {
    public func yieldToIO() async { await Task.yield() }
}
