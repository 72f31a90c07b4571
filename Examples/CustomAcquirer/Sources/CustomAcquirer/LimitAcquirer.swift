import Acquiring
import MakePayment
import Synchronization

/// An example acquirer adapter: a "bank" that approves up to one amount limit and refuses
/// with 61 (exceeds withdrawal amount limit) above it, and otherwise answers by the simulator's test
/// cards so that the conformance kit can check it. A real adapter would speak its acquirer's protocol
/// here; everything else (deadline, reversal store-and-forward, code mapping) the worker does.
public final class LimitAcquirer: AcquirerAdapter, AuthorizationCounting {
    public let name = "limit-bank"
    public let limit: Int
    private let seen = Mutex<[String: (authorizations: Int, reversals: Int)]>([:])

    public init(limit: Int = 1_000_000) { self.limit = limit }

    public func authorize(_ request: AuthorizationRequest) async throws -> AcquirerAnswer {
        // As late as possible before sending (in process, the call is the send).
        if AuthorizationDeadline.passed { throw AuthorizationDeadline.notSent }
        seen.withLock { $0[request.pspTransactionId, default: (0, 0)].authorizations += 1 }
        if request.amount > limit {
            return AcquirerAnswer(responseCode: "61", message: "over limit", acquirerReference: request.attemptReference)
        }
        let code = request.card.pan.withASCIIDigits { SimulatorAcquirer.answerCode(asciiDigits: $0) }
        guard let code else {
            try await Task.sleep(for: .seconds(3600))  // never answers; the worker's deadline cancels this
            throw CancellationError()
        }
        return AcquirerAnswer(responseCode: code, authorizationCode: SimulatorAcquirer.approves(code) ? "LB0001" : nil,
                              acquirerReference: request.attemptReference, scheme: request.scheme)
    }

    public func reverse(_ reversal: ReversalRequest) async throws -> ReversalAnswer {
        seen.withLock { $0[reversal.pspTransactionId, default: (0, 0)].reversals += 1 }
        return .reversed
    }

    public func authorizationCount(pspTransactionId: String) -> Int { seen.withLock { $0[pspTransactionId]?.authorizations ?? 0 } }
    public func reversalCount(pspTransactionId: String) -> Int { seen.withLock { $0[pspTransactionId]?.reversals ?? 0 } }
}
