import Acquiring
import CardCrypto
import Foundation
import Hummingbird
import Logging
import MakePayment
import Metrics
import NIOCore
import Prometheus
import Processing
import SQLitePaymentStore
import Synchronization

/// The HTTP endpoints: makePayment for Vipps, /payments for the PSP (admin token), health, metrics.
struct Routes: Sendable {
    let configuration: PSPWorkerConfiguration
    let pipeline: MakePaymentPipeline
    let queue: InProcessMakePaymentQueue
    let drain: DrainNotice
    let store: any PaymentStore
    let acquirer: any AcquirerAdapter
    let registry: PrometheusCollectorRegistry
    let factory: PrometheusMetricsFactory
    let adminTokenHash: [UInt8]?
    /// Admin calls refused 401: a brute force on the admin token shows here.
    let adminRefusals: Metrics.Counter
    let storeProbe: StoreProbe
    let logger: Logger
    /// makePayments being served, read when /metrics is scraped (`psp_makepayment_in_flight`):
    /// recorded per request instead, two fronts on two loops could leave the gauge at their
    /// older value, with nothing in flight.
    let makePaymentsInFlight = InFlightCounter()
    /// The open HTTP connections and their limit (`ConnectionLimitHandler` on every connection).
    let connections: ConnectionLimit

    init(configuration: PSPWorkerConfiguration, pipeline: MakePaymentPipeline, queue: InProcessMakePaymentQueue,
         drain: DrainNotice, store: any PaymentStore, acquirer: any AcquirerAdapter, registry: PrometheusCollectorRegistry,
         factory: PrometheusMetricsFactory, adminTokenHash: [UInt8]?, logger: Logger) {
        self.logger = logger
        self.configuration = configuration
        self.pipeline = pipeline
        self.queue = queue
        self.drain = drain
        self.store = store
        self.acquirer = acquirer
        self.registry = registry
        self.factory = factory
        self.adminTokenHash = adminTokenHash
        adminRefusals = Metrics.Counter(label: "psp_admin_unauthorized_total", factory: factory)
        storeProbe = StoreProbe(store: store)
        connections = ConnectionLimit(configuration.maxConnections, factory: factory, logger: logger)
    }

    func add(to router: Router<BasicRequestContext>) {
        let depth = Gauge(label: "psp_queue_depth", factory: factory)
        let inFlight = Gauge(label: "psp_makepayment_in_flight", factory: factory)
        let openConnections = Gauge(label: "psp_http_connections", factory: factory)
        let makePaymentsInFlight = self.makePaymentsInFlight, connections = self.connections
        let storeMetrics = (store as? SQLitePaymentStore).map { StoreMetrics(store: $0, factory: factory) }
        // POST makePaymentPath is answered ahead of the router, by MakePaymentChannelHandler.
        router.post("/payments") { request, _ in await adminOnly(request) { await register(request) } }
        router.post("/payments/:id/cancel") { request, context in
            await adminOnly(request) { await cancel(Self.paymentId(context.parameters.get("id"))) }
        }
        router.get("/payments/:id") { request, context in
            await adminOnly(request) { await show(Self.paymentId(context.parameters.get("id"))) }
        }
        // Every route and its methods, for the 405s (HEAD comes with each GET: the router's
        // `autoGenerateHeadEndpoints`). Kept beside the registrations, which must match it.
        router.add(middleware: UnknownRouteMiddleware(routes: [
            (configuration.makePaymentPath, [.post]),
            ("/payments", [.post]), ("/payments/:id", [.get, .head]), ("/payments/:id/cancel", [.post]),
            ("/health", [.get, .head]), ("/health/ready", [.get, .head]), ("/metrics", [.get, .head]),
        ]))
        router.get("/health") { _, _ in Responses.json(.ok, #"{"status":"UP"}"#) }
        router.get("/health/ready") { _, _ in await readiness() }
        router.get("/metrics") { _, _ in
            depth.record(queue.depth)
            inFlight.record(makePaymentsInFlight.value)
            openConnections.record(connections.open)
            storeMetrics?.update()
            var buffer: [UInt8] = []
            registry.emit(into: &buffer)
            return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
                            body: .init(byteBuffer: ByteBuffer(bytes: buffer)))
        }
    }

    /// Readiness, for a load balancer: not draining for a shutdown (a stop signal came, or the
    /// queue no longer takes jobs), the store answers a read within 2 s, and its writes work
    /// (after a failed write, a probe write must succeed first). `/health` stays liveness: the
    /// process answers at all.
    func readiness() async -> Response {
        guard !drain.isDraining, !queue.isClosed else { return Responses.json(.serviceUnavailable, #"{"status":"DOWN","queue":"draining"}"#) }
        let check = storeProbe.check()
        let health = await Self.firstOf(seconds: 2) { await check.value }
        switch health {
        case .up?: return Responses.json(.ok, #"{"status":"UP","store":"UP"}"#)
        case .readsFailing?: return Responses.json(.serviceUnavailable, #"{"status":"DOWN","store":"failing"}"#)
        case .writesFailing?: return Responses.json(.serviceUnavailable, #"{"status":"DOWN","store":"writes failing"}"#)
        case nil: return Responses.json(.serviceUnavailable, #"{"status":"DOWN","store":"not answering"}"#)
        }
    }

    /// `work`'s answer, or nil when it takes longer than `seconds`. A stuck `work` is left running:
    /// a task group would wait for it, and the probe would hang with the store. (Not
    /// `withDeadline`: it starts its work on the caller's thread, where a read that blocks in
    /// SQLite would hold the caller past any deadline.)
    static func firstOf<T: Sendable>(seconds: Int, _ work: @escaping @Sendable () async -> T) async -> T? {
        let once = Once()
        return await withCheckedContinuation { (continuation: CheckedContinuation<T?, Never>) in
            @Sendable func answer(_ value: T?) {
                if once.claim() { continuation.resume(returning: value) }
            }
            let timer = Task {
                try? await Task.sleep(for: .seconds(seconds))
                answer(nil)
            }
            Task {
                answer(await work())
                timer.cancel()
            }
        }
    }

    // MARK: makePayment

    /// makePayment: the body and the Authorization header in, the answer out (see MakePaymentChannelHandler).
    func makePaymentEndpoint() -> MakePaymentChannelHandler.Serve {
        let counter = makePaymentsInFlight
        let pipeline = self.pipeline, queue = self.queue
        return { buffer, authorization, receivedAt in
            counter.enter()
            defer { counter.leave() }
            let parsed = buffer.withUnsafeReadableBytes { MakePaymentRequest.parse(json: $0) }
            let body: MakePaymentRequest?, fallbackId: String
            switch parsed {
            case .request(let request): (body, fallbackId) = (request, "")
            // For a body that is not a valid request, still name the payment in the answer if we can.
            case .invalid(let id): (body, fallbackId) = (nil, id ?? "")
            }
            return await pipeline.handle(body: body, authorization: authorization, queue: queue, receivedAt: receivedAt,
                                         idForInvalidBody: fallbackId)
        }
    }

    // MARK: admin

    /// The payment id of a `/payments/{id}` path, percent-decoded as a client's URL encoder wrote
    /// it (`a%40b` is `a@b`). Ids never hold `%` themselves, so one that does not decode matches none.
    static func paymentId(_ segment: String?) -> String {
        guard let segment else { return "" }
        return segment.removingPercentEncoding ?? ""
    }

    private func adminOnly(_ request: Request, _ body: () async -> Response) async -> Response {
        guard let adminTokenHash, let header = request.headers.soleAuthorization,
              let token = Secrets.bearerCredentials(header),
              Secrets.sha256(of: token, equals: adminTokenHash)
        else {
            adminRefusals.increment()
            var refusal = Responses.errors(.unauthorized, [(nil, .unauthorized, "Unauthorized: an admin bearer token is required")])
            refusal.headers[.wwwAuthenticate] = #"Bearer realm="psp-worker""#
            return refusal
        }
        return await body()
    }

    func register(_ request: Request) async -> Response {
        var request = request
        let buffer: ByteBuffer
        do {
            buffer = try await request.collectBody(upTo: configuration.maxBodyBytes)
        } catch is NIOTooManyBytesError {
            return Responses.errors(.contentTooLarge, [(nil, .invalidRequest, "Invalid request")])
        } catch {
            // A body cut short (the client gone, or stalled past the body timeout): not too large.
            return Responses.errors(.badRequest, [(nil, .invalidRequest, "Invalid request: the body could not be read")])
        }
        let parsed: RegisterPaymentRequest
        switch RegisterPaymentRequest.parse(Data(buffer: buffer)) {
        case .success(let p): parsed = p
        case .failure(let problems): return Responses.errors(.badRequest, problems.entries)
        }
        let registration = PaymentRegistration(
            pspTransactionId: parsed.pspTransactionId, merchantSerialNumber: parsed.merchantSerialNumber,
            merchantOrderId: parsed.merchantOrderId, amount: parsed.amount, currency: parsed.currency,
            tokenHash: Secrets.sha256(parsed.makePaymentToken), paymentText: parsed.paymentText)
        do {
            switch try await store.register(registration, now: wallClockMilliseconds()) {
            case .created:
                return Responses.json(.created, #"{"pspTransactionId":\#(JSONText.quoted(parsed.pspTransactionId)),"state":"pending"}"#)
            case .alreadyExists:
                // The same registration again (a retry after a lost answer) is told the payment's
                // state; different contents under the same id are a conflict.
                if let existing = try await store.payment(parsed.pspTransactionId), existing.registration.hasSameBytes(as: registration) {
                    return Responses.json(.ok, #"{"pspTransactionId":\#(JSONText.quoted(parsed.pspTransactionId)),"state":"\#(existing.state.rawValue)"}"#)
                }
                return Responses.errors(.conflict, [("pspTransactionId", .idExists, "PSP Transaction id already exists")])
            }
        } catch {
            // The id passed registration's checks: printable, no separators a log line could be forged with.
            return storeFailed("register", error, id: parsed.pspTransactionId)
        }
    }

    /// 500 with 91, and the failure in the log for an operator (the step and the store's error;
    /// an id from a URL is not logged: it may be any bytes).
    private func storeFailed(_ step: String, _ error: any Error, id: String? = nil) -> Response {
        var metadata: Logger.Metadata = ["step": "\(step)", "error": "\(error)"]
        if let id { metadata["pspTransactionId"] = "\(id)" }
        logger.error("admin call failed in the store", metadata: metadata)
        return Responses.errors(.internalServerError, [(nil, .internalError, "Internal error")])
    }

    func cancel(_ id: String) async -> Response {
        do {
            switch try await store.cancel(id, now: wallClockMilliseconds()) {
            // Idempotent: a PSP that retries after losing the first answer is told it is cancelled.
            case .cancelled, .notPending(.cancelled):
                return Responses.json(.ok, #"{"pspTransactionId":\#(JSONText.quoted(id)),"state":"cancelled"}"#)
            case .notFound: return Responses.errors(.notFound, [("pspTransactionId", .notFound, "No such payment")])
            case .notPending(let state):
                return Responses.errors(.conflict, [("pspTransactionId", .notPending, "The payment is \(state.rawValue) and can no longer be cancelled")])
            }
        } catch {
            return storeFailed("cancel", error)
        }
    }

    func show(_ id: String) async -> Response {
        do {
            guard let record = try await store.payment(id) else {
                return Responses.errors(.notFound, [("pspTransactionId", .notFound, "No such payment")])
            }
            let reversals = try await store.reversals(for: id)
            let view = PaymentView(record, reversals: reversals, counts: acquirer as? any AuthorizationCounting)
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            return Responses.json(.ok, String(decoding: try encoder.encode(view), as: UTF8.self))
        } catch {
            return storeFailed("show", error)
        }
    }
}

/// The store's readiness check, one at a time: probes that come while one is stuck wait on it
/// (each with its own 2 s) instead of each leaving another read blocked on a thread of the pool.
final class StoreProbe: Sendable {
    enum Health: Sendable { case up, readsFailing, writesFailing }
    private let store: any PaymentStore
    private let inFlight = Mutex<Task<Health, Never>?>(nil)
    init(store: any PaymentStore) { self.store = store }

    /// The check in flight, or a new one: a read of an id no payment has (the file is open,
    /// readable and not stuck behind a lock), then, only while the last write failed, a probe
    /// write (a full disk or a lock held elsewhere can leave reads working).
    func check() -> Task<Health, Never> {
        inFlight.withLock { current in
            if let current { return current }
            let task = Task { [store] () -> Health in
                var health = Health.up
                do { _ = try await store.payment("") } catch { health = .readsFailing }
                if health == .up && store.writesFailing {
                    do { try await store.probeWrite(now: wallClockMilliseconds()) } catch { health = .writesFailing }
                }
                // After the lock that set it is released: this task waits for it.
                self.inFlight.withLock { $0 = nil }
                return health
            }
            current = task
            return task
        }
    }
}

/// True for the first caller only.
final class Once: Sendable {
    private let done = Atomic<Bool>(false)
    func claim() -> Bool { !done.exchange(true, ordering: .acquiringAndReleasing) }
}

/// Counts makePayment calls being answered, for the in-flight gauge.
final class InFlightCounter: Sendable {
    private let count = Atomic<Int>(0)
    func enter() { count.add(1, ordering: .relaxed) }
    func leave() { count.subtract(1, ordering: .relaxed) }
    var value: Int { count.load(ordering: .relaxed) }
}


/// A route no endpoint has is answered 404, and a method a route does not take 405 with the
/// methods it does (RFC 9110 §15.5.6), each with a JSON error like every other refusal.
struct UnknownRouteMiddleware<Context: RequestContext>: RouterMiddleware {
    /// Each route's path (a segment `:name` stands for any one segment) and its methods; the
    /// first is makePayment's, matched as a whole.
    let routes: [(path: String, methods: [HTTPRequest.Method])]

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as HTTPError where error.status == .notFound {
            var refusal: Response
            if let methods = allowedMethods(for: request.uri.path), !methods.contains(request.method) {
                refusal = Responses.errors(.methodNotAllowed, [(nil, .methodNotAllowed, "Method not allowed")])
                refusal.headers[.allow] = methods.map(\.rawValue).joined(separator: ", ")
            } else {
                refusal = Responses.errors(.notFound, [(nil, .notFound, "No such endpoint")])
            }
            // An answer to HEAD has no body (RFC 9110 §9.3.2): a client would read it as the next answer.
            return request.method == .head ? refusal.createHeadResponse() : refusal
        }
    }

    /// The methods of the route `path` names, or nil when no route matches it.
    func allowedMethods(for path: String) -> [HTTPRequest.Method]? {
        // makePayment is matched as sent, ahead of the router (`MakePaymentChannelHandler`); the
        // router's routes segment by segment, empty segments dropped, as its trie does.
        if let makePayment = routes.first, path == makePayment.path { return makePayment.methods }
        let segments = path.split(separator: "/")
        for route in routes.dropFirst() {
            let pattern = route.path.split(separator: "/")
            guard pattern.count == segments.count else { continue }
            if zip(pattern, segments).allSatisfy({ $0.first == ":" || $0 == $1 }) { return route.methods }
        }
        return nil
    }
}
