import Logging
import Metrics
import NIOCore
import NIOHTTPTypes
import Synchronization

/// The worker's limit on open HTTP connections (`maxConnections`), shared by every event loop.
/// Past it a connection is closed as soon as it is accepted, before anything is read from it:
/// nothing it sent is processed, so its client sees the failure at once and may retry. (Not
/// accepting instead would leave it in the kernel's accept queue, where the worker cannot see
/// how long it waited: a makePayment taken from there could be authorized after Vipps's 14 s.)
/// Refusals are counted in `psp_http_connections_refused_total`, and the limit reached is logged,
/// then again once the connections have eased to 90 % of it; `psp_http_connections` (read at each
/// scrape) is the count open.
final class ConnectionLimit: Sendable {
    let limit: Int
    private let count = Atomic<Int>(0)
    private let atLimit = Atomic<Bool>(false)
    private let refusals: Counter
    private let logger: Logger

    init(_ limit: Int, factory: any MetricsFactory, logger: Logger) {
        self.limit = max(limit, 1)
        refusals = Counter(label: "psp_http_connections_refused_total", factory: factory)
        self.logger = logger
    }

    var open: Int { count.load(ordering: .relaxed) }

    /// Takes a place for a new connection; false (and counted) when none is left.
    func admit() -> Bool {
        guard count.add(1, ordering: .relaxed).newValue > limit else { return true }
        count.subtract(1, ordering: .relaxed)
        refusals.increment()
        if !atLimit.exchange(true, ordering: .relaxed) {
            logger.warning("connection limit reached: connections past it are closed at once", metadata: ["maxConnections": "\(limit)"])
        }
        return false
    }

    /// Gives back the place of a connection `admit` let in.
    func release() {
        let now = count.subtract(1, ordering: .relaxed).newValue
        if now * 10 <= limit * 9, atLimit.compareExchange(expected: true, desired: false, ordering: .relaxed).exchanged {
            logger.notice("connections below the limit again", metadata: ["open": "\(now)", "maxConnections": "\(limit)"])
        }
    }
}

/// First of our handlers on every connection: takes its place under the `ConnectionLimit` when
/// it becomes active (closing it if none is left), gives it back when it closes, and leaves the
/// pipeline once admitted, so that the connection's requests do not pass through it.
final class ConnectionLimitHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart

    private let limit: ConnectionLimit
    private var decided = false

    init(_ limit: ConnectionLimit) { self.limit = limit }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { decide(context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        context.fireChannelActive()
        decide(context: context)
    }

    /// Once per connection. Closed here, within its activation: nothing has been read from it yet.
    private func decide(context: ChannelHandlerContext) {
        guard !decided else { return }
        decided = true
        guard limit.admit() else {
            context.close(promise: nil)
            return
        }
        let limit = self.limit
        context.channel.closeFuture.whenComplete { _ in limit.release() }
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}
