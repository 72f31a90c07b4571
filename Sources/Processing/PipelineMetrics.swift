import Acquiring
import MakePayment
import Metrics

/// The pipeline's metrics, made once from a factory (no global bootstrap, so tests can build many
/// applications). Counters per answer are made up front: the hot path only looks one up.
public struct PipelineMetrics: Sendable {
    private let answers: [Int: Counter]
    private let decrypt: Metrics.Timer
    private let acquirerLatency: Metrics.Timer
    private let authorizations: Counter
    private let rejected: Counter
    private let lateReplies: Counter
    private let notSent: Counter
    public let reversalsSent: Counter
    public let reversalsAcknowledged: Counter
    public let reversalsFailed: Counter
    /// Reversals started again as new by a late approval (each may later count as acknowledged
    /// or failed a second time).
    public let reversalsRestarted: Counter

    /// The API's statuses that makePayment answers (it never needs 403).
    static let statuses = [200, 400, 401, 404, 500]

    public init(factory: any MetricsFactory) {
        var answers: [Int: Counter] = [:]
        for status in Self.statuses {
            for errorId in [0] + APIError.allCases.map(\.rawValue) {
                answers[status * 1000 + errorId] = Counter(
                    label: "psp_makepayment_requests_total",
                    dimensions: [("status", String(status)), ("errorId", errorId == 0 ? "none" : String(errorId))],
                    factory: factory)
            }
        }
        self.answers = answers
        decrypt = Metrics.Timer(label: "psp_decrypt_duration_seconds", preferredDisplayUnit: .seconds, factory: factory)
        acquirerLatency = Metrics.Timer(label: "psp_acquirer_duration_seconds", preferredDisplayUnit: .seconds, factory: factory)
        authorizations = Counter(label: "psp_authorizations_sent_total", factory: factory)
        rejected = Counter(label: "psp_queue_rejected_total", factory: factory)
        lateReplies = Counter(label: "psp_acquirer_late_replies_total", factory: factory)
        notSent = Counter(label: "psp_authorizations_not_sent_total", factory: factory)
        reversalsSent = Counter(label: "psp_reversals_sent_total", factory: factory)
        reversalsAcknowledged = Counter(label: "psp_reversals_acknowledged_total", factory: factory)
        reversalsFailed = Counter(label: "psp_reversals_failed_total", factory: factory)
        reversalsRestarted = Counter(label: "psp_reversals_restarted_total", factory: factory)
    }

    public static let disabled = PipelineMetrics(factory: NOOPMetricsHandler.instance)

    /// Also for answers given before the pipeline (a body over the limit: 400).
    public func recordAnswer(_ result: MakePaymentResult) {
        answers[result.httpStatus * 1000 + (result.response.errorMessage?.errorId ?? 0)]?.increment()
    }

    func recordDecrypt(since start: ContinuousClock.Instant) { decrypt.recordInterval(since: start) }
    func recordAcquirer(since start: ContinuousClock.Instant) { acquirerLatency.recordInterval(since: start) }
    func authorizationSent() { authorizations.increment() }
    func queueRejected() { rejected.increment() }
    func lateReply() { lateReplies.increment() }
    /// A payment answered 85 with nothing sent to the acquirer (too late to send, or the adapter
    /// knew it never left): an 85 with no reversal.
    func authorizationNotSent() { notSent.increment() }
}

extension Metrics.Timer {
    func recordInterval(since start: ContinuousClock.Instant) {
        recordNanoseconds((ContinuousClock.now - start).wholeNanoseconds)
    }
}
