import Acquiring
import Logging
import Synchronization

/// Where the pipeline hands a reversal it has recorded, to be sent soon.
public protocol ReversalSender: Sendable {
    func sendSoon(_ reversal: ReversalRequest)
    /// Sends a reversal the store could not record (its outcome's write failed), straight to the
    /// acquirer. The store records it later (the orphan sweep), and then sends it once more: a
    /// second reversal of one authorization is answered as a repeat or "no such authorization".
    func sendUnrecorded(_ reversal: ReversalRequest)
    /// Sends again the reversals of an attempt approved after all, late (see `ReversalService`).
    /// It may wait out a store that refuses writes (`ReversalService` tries again for hours):
    /// callers run it in a task of its own.
    func reopen(pspTransactionId: String, attemptReference: String) async
    /// `reopen` without waiting for it, tracked at once: a shutdown that begins right after waits
    /// for it (a task of the caller's own could reach the service after the store has closed).
    func reopenSoon(pspTransactionId: String, attemptReference: String)
}

/// Store and forward for reversals. A reversal is recorded in the store first (with the outcome
/// that needs it), then sent until the acquirer acknowledges it, with back-off, across restarts;
/// after `maxTries` it is flagged for an operator (metric and log) and left in the store.
public final class ReversalService: ReversalSender {
    public struct Configuration: Sendable {
        public var timeout: Duration = .seconds(10)
        public var firstRetryMilliseconds: Int64 = 1_000
        public var maxRetryMilliseconds: Int64 = 60_000
        /// 200 tries, at most 60 s apart after the first few: over 3 hours, so an acquirer's
        /// outage of an hour or two leaves nothing for an operator.
        public var maxTries = 200
        /// A "no such authorization" (25) this soon after the reversal was recorded may only mean
        /// the authorization is not on file yet (a slow host, an HTTP pool's parallel requests):
        /// the reversal is repeated until this much time has passed, then 25 is taken as final.
        public var noOriginalSettleMilliseconds: Int64 = 30_000
        public var pollInterval: Duration = .seconds(1)
        /// Reversals one pass sends at once. One at a time, the backlog an acquirer's outage
        /// leaves would drain one round trip at a time, with the cardholders' money held meanwhile.
        public var concurrentSends = 16
        /// Sends one pass may start; a pass that starts them all is followed by the next at once.
        public var sendsPerPass = 1_000
        public init() {}
    }

    private let store: any PaymentStore
    private let acquirer: any AcquirerAdapter
    private let configuration: Configuration
    private let metrics: PipelineMetrics
    private let logger: Logger
    private let now: @Sendable () -> Int64
    /// Reversal ids being sent right now, so the poller and `sendSoon` never send one twice at once.
    private let sending = Mutex<Set<String>>([])
    /// Reversals sent without a record (`sendUnrecorded`), so each goes out once from here. Kept
    /// once acknowledged (the store may still refuse the write that records it, and the sweep
    /// finds the orphan again), so bounded: the latest 100,000; one pushed out is long done, and
    /// one still being sent is held in `sending` as well.
    private let sentUnrecorded = Mutex(RecentMap<String, Void>(limit: 100_000))
    /// Every reversal this process has sent without a record (the latest ones; those are rare,
    /// one per outcome the store failed to write): the recorded send of one is a repeat (0401), since the
    /// host may hold the first send's 0400.
    private let everSentUnrecorded = Mutex(RecentMap<String, Void>(limit: 10_000))
    /// A backlog's retries in an acquirer's outage, and the store's refusals while it fails: a few
    /// lines and a count per 10 s each, not a line per try.
    private let retryLog = LogLimiter()
    private let storeErrorLog = LogLimiter()
    /// The sends `sendSoon` and `sendUnrecorded` started and that have not finished.
    private let soonSends = Mutex<(next: UInt64, tasks: [UInt64: Task<Void, Never>])>((0, [:]))
    /// Shutdown has begun (`finishSendingSoon`): an unrecorded reversal gets one more try, not its back-off.
    private let stopping = Atomic<Bool>(false)

    public init(store: any PaymentStore, acquirer: any AcquirerAdapter, configuration: Configuration = .init(),
                metrics: PipelineMetrics = .disabled, logger: Logger = Logger(label: "psp-worker.reversals"),
                now: @escaping @Sendable () -> Int64 = wallClockMilliseconds) {
        self.store = store
        self.acquirer = acquirer
        self.configuration = configuration
        self.metrics = metrics
        self.logger = logger
        self.now = now
    }

    public func sendSoon(_ reversal: ReversalRequest) { sendSoon(reversalId: reversal.reversalId) }

    private func sendSoon(reversalId id: String) {
        track { await self.send(id) }
    }

    /// Runs `work` in a task that `finishSendingSoon` waits for.
    @discardableResult
    private func track(_ work: @escaping @Sendable () async -> Void) -> Task<Void, Never> {
        // Registered under the lock the task takes to leave, so it cannot leave before it is in.
        soonSends.withLock { sends in
            sends.next += 1
            let key = sends.next
            let task = Task {
                await work()
                _ = self.soonSends.withLock { $0.tasks.removeValue(forKey: key) }
            }
            sends.tasks[key] = task
            return task
        }
    }

    /// The reversals of an attempt whose authorization was approved after all, late (after the
    /// pipeline gave up on it and answered 85). Unless the host reversed it, it starts again as
    /// new (pending, a first 0400 under a fresh STAN, "no such authorization" no longer settling
    /// it) and is sent; a try in flight is then not recorded. All in the store, so whichever
    /// process on it settled or sends the reversal, the one that hears the approval reopens it.
    /// An attempt still `processing`, its 85 and reversal not yet written (the reply came while
    /// they were), is tried again with the same back-off until they are: the reversal goes out
    /// anyway, but only the reopen marks it approved late (a 25 then does not settle it).
    /// A store that refuses the write is tried again with back-off (the approval holds the
    /// cardholder's money, and nothing else would hear of it again), and at shutdown once more.
    public func reopen(pspTransactionId: String, attemptReference: String) async {
        await reopening(pspTransactionId: pspTransactionId, attemptReference: attemptReference).value
    }

    public func reopenSoon(pspTransactionId: String, attemptReference: String) {
        _ = reopening(pspTransactionId: pspTransactionId, attemptReference: attemptReference)
    }

    private func reopening(pspTransactionId: String, attemptReference: String) -> Task<Void, Never> {
        track {
            var tries = 0
            while true {
                tries += 1
                let last = self.stopping.load(ordering: .relaxed) || tries >= self.configuration.maxTries
                if await self.reopenOnce(pspTransactionId: pspTransactionId, attemptReference: attemptReference, last: last) || last { return }
                await self.sleepUnlessStopping(.milliseconds(self.backoff(after: tries)))
            }
        }
    }

    /// One try of `reopen`: whether it was recorded.
    private func reopenOnce(pspTransactionId: String, attemptReference: String, last: Bool) async -> Bool {
        do {
            // Read before the reversals: an 85 recorded between the two reads is then found by the
            // second, or, if it is not, the attempt was still processing and this is tried again.
            let stillProcessing = try await store.payment(pspTransactionId).map {
                $0.state == .processing && $0.attempt?.attemptReference == attemptReference
            } ?? false
            var found = false
            for reversal in try await store.reversals(for: pspTransactionId) where reversal.request.attemptReference == attemptReference {
                found = true
                let id = reversal.request.reversalId
                let at = now()
                switch try await store.lateApproval(ofReversal: id, now: at, claimsEndBy: at + claimMilliseconds) {
                case .reopened:
                    metrics.reversalsRestarted.increment()
                    logger.critical("authorization approved late; its reversal starts again as new", metadata: [
                        "pspTransactionId": "\(pspTransactionId)", "reversalId": "\(id)", "before": "\(reversal.state.rawValue)"])
                    sendSoon(reversalId: id)
                case .stands:
                    // Reversed by the host: the approval is undone (the usual case: the late reply is
                    // the old answer). A store written by an older build does not say why it settled.
                    logger.info("authorization approved late; its reversal was acknowledged", metadata: [
                        "pspTransactionId": "\(pspTransactionId)", "reversalId": "\(id)"])
                }
            }
            if !found && stillProcessing {
                if last {
                    logger.error("authorization approved late; its reversal was not recorded in time to be marked so", metadata: [
                        "pspTransactionId": "\(pspTransactionId)"])
                }
                return false
            }
            return true
        } catch {
            if last {
                logger.critical("late approval: cannot reopen its reversal; needs an operator", metadata: [
                    "pspTransactionId": "\(pspTransactionId)", "error": "\(error)"])
            } else if let left = storeErrorLog.admit() {
                logger.error("late approval: cannot reopen its reversal yet; trying again", metadata: [
                    "pspTransactionId": "\(pspTransactionId)", "error": "\(error)", "alikeLeftOut": "\(left)"])
            }
            return false
        }
    }

    /// Once per reversal id in this process: while the store refuses writes, the sweep and Vipps's
    /// retries find the same orphan every few seconds, and each would send it again. Waited for at
    /// shutdown (`finishSendingSoon`), with one more try then rather than its back-off: a restart
    /// while the store still refuses writes finds the attempt another process's (its instance id
    /// is new) and cannot send it, so what goes out now is all that goes out until writes work.
    /// The id is held in `sending` all the while: once the store takes writes again, the sweep or
    /// a retry may record the reversal and `sendSoon` it, and its first 0400 under another STAN
    /// would go out beside this one's. (A recorded send of it already under way: nothing to add.)
    public func sendUnrecorded(_ reversal: ReversalRequest) {
        let id = reversal.reversalId
        guard sentUnrecorded.withLock({ map in
            guard map[id] == nil else { return false }
            map.set((), for: id)
            return true
        }) else { return }
        guard sending.withLock({ $0.insert(id).inserted }) else {
            _ = sentUnrecorded.withLock { $0.removeValue(forKey: id) }
            return
        }
        logger.critical("outcome not recorded; reversing without a record", metadata: [
            "pspTransactionId": "\(reversal.pspTransactionId)", "reversalId": "\(id)"])
        track {
            await self.sendWithoutRecord(reversal)
            _ = self.sending.withLock { $0.remove(id) }
        }
    }

    /// Tries with back-off until the acquirer reverses it: five failures, or a "no such
    /// authorization" (25) that outlasts the settle time (soon after a timeout the authorization
    /// may not be on file yet). After that the store, once it takes writes again, carries it on.
    private func sendWithoutRecord(_ reversal: ReversalRequest) async {
        var request = reversal
        let acquirer = self.acquirer
        let first = ContinuousClock.now
        // Sent before without a record (an earlier round given up): this round repeats it (0401),
        // not a second 0400 under a new STAN.
        let sentBefore = everSentUnrecorded.withLock { map in
            defer { map.set((), for: reversal.reversalId) }
            return map[reversal.reversalId] != nil
        }
        var failures = 0, tries = 0
        let earlierSends = sentBefore ? 1 : 0
        var lastError = "none"
        while true {
            let last = stopping.load(ordering: .relaxed)
            tries += 1
            request.sendCount = earlierSends + tries
            metrics.reversalsSent.increment()
            let outcome = await withDeadline(configuration.timeout) { [request] in try await acquirer.reverse(request) }
            switch outcome {
            case .value(.reversed):
                logger.warning("unrecorded reversal acknowledged", metadata: [
                    "pspTransactionId": "\(reversal.pspTransactionId)", "reversalId": "\(reversal.reversalId)", "tries": "\(tries)"])
                return
            case .value(.noOriginal):
                if ContinuousClock.now - first >= .milliseconds(configuration.noOriginalSettleMilliseconds) {
                    logger.warning("acquirer has no such authorization; unrecorded reversal done", metadata: [
                        "pspTransactionId": "\(reversal.pspTransactionId)", "reversalId": "\(reversal.reversalId)", "tries": "\(tries)"])
                    return
                }
            case .failed(let error):
                failures += 1
                lastError = "\(error)"
            case .timedOut:
                failures += 1
                lastError = "no answer in time"
            }
            guard failures < unrecordedFailures, !last else { break }
            await sleepUnlessStopping(.milliseconds(backoff(after: tries)))
        }
        // Given up for now: the next sweep or retry that finds the orphan may send it again.
        _ = sentUnrecorded.withLock { $0.removeValue(forKey: reversal.reversalId) }
        logger.critical("unrecorded reversal not acknowledged; left to the orphan sweep once the store takes writes", metadata: [
            "pspTransactionId": "\(reversal.pspTransactionId)", "reversalId": "\(reversal.reversalId)", "lastError": "\(lastError)"])
    }
    private let unrecordedFailures = 5

    /// Sleeps for `duration`, or less once shutdown begins (checked every 250 ms: a few wake-ups
    /// a second for a try that may wait out a back-off for hours, at most 250 ms on a shutdown).
    private func sleepUnlessStopping(_ duration: Duration) async {
        let end = ContinuousClock.now + duration
        while !stopping.load(ordering: .relaxed), ContinuousClock.now < end {
            try? await Task.sleep(for: min(.milliseconds(250), end - ContinuousClock.now))
        }
    }

    /// Waits for the sends `sendSoon` and `sendUnrecorded` started. At shutdown, before the store closes: a reversal
    /// the acquirer acknowledged but the store never heard of would go out again after the
    /// restart as a first 0400, not a repeat.
    /// Reversals sent without a record get one more try (each at most the send timeout).
    public func finishSendingSoon() async {
        stopping.store(true, ordering: .relaxed)
        while let task = soonSends.withLock({ $0.tasks.values.first }) { await task.value }
    }

    /// Sends every due reversal until cancelled: the store-and-forward loop. A pass that found as
    /// many as it may send is followed by the next at once (a backlog), else after the poll interval.
    public func run() async {
        while !Task.isCancelled {
            if await sendDue(limit: configuration.sendsPerPass) < configuration.sendsPerPass {
                try? await Task.sleep(for: configuration.pollInterval)
            }
        }
    }

    /// One pass: sends up to `limit` due reversals, `concurrentSends` at a time, recording each try.
    /// A place that frees takes the next due one at once (the store is read again when the list
    /// runs out), so one slow send holds only its own place. Returns how many sends it started.
    /// Checked before each send: with the acquirer down, sends at their full timeout would hold a
    /// shutdown for minutes (what is left is due again after the restart).
    @discardableResult
    public func sendDue(limit: Int) async -> Int {
        let width = max(configuration.concurrentSends, 1)
        return await withTaskGroup(of: Void.self) { group in
            var started: Set<String> = [], inFlight = 0
            // Due, but held by a send already under way here (`sendSoon`, or `sendUnrecorded` for
            // up to a minute of tries): not claimed, so each read finds them first again.
            var passedOver: Set<String> = []
            var due: [ReversalRecord] = [], next = 0
            var more = true
            while started.count < limit, !Task.isCancelled {
                if next == due.count {
                    guard more else { break }
                    // Those started already are claimed (due later) by now, but for those still in
                    // flight whose claim is not yet written, and those passed over: asked for on
                    // top, and left out.
                    let asked = min(limit - started.count, 100) + inFlight + passedOver.count
                    do {
                        let read = try await store.dueReversals(now: now(), limit: asked)
                        more = read.count == asked
                        due = read.filter { !started.contains($0.request.reversalId) && !passedOver.contains($0.request.reversalId) }
                    } catch {
                        if let left = storeErrorLog.admit() {
                            logger.error("cannot read due reversals", metadata: ["error": "\(error)", "alikeLeftOut": "\(left)"])
                        }
                        break
                    }
                    next = 0
                    if due.isEmpty { break }
                }
                if inFlight == width {
                    await group.next()
                    inFlight -= 1
                    continue  // cancelled meanwhile?
                }
                let id = due[next].request.reversalId
                next += 1
                if sending.withLock({ $0.contains(id) }) {
                    passedOver.insert(id)
                    continue
                }
                group.addTask { await self.send(id) }
                inFlight += 1
                started.insert(id)
            }
            return started.count
        }
    }

    /// Sends one reversal if it is still due. Claimed in the store first: the list it came from
    /// may be stale (the other path, or another process on the same store, may have sent it
    /// meanwhile), and a second 0400 must never go out for one acknowledged already. The claim
    /// lasts for one send; if this process dies sending, the reversal is due again after it.
    private func send(_ id: String) async {
        guard sending.withLock({ $0.insert(id).inserted }) else { return }
        defer { _ = sending.withLock { $0.remove(id) } }
        let record: ReversalRecord
        // Each try's answer is recorded under this claim: if the reversal changed meanwhile (a
        // late approval started it again, or the claim ran out and another sender took it), the
        // answer is not recorded, and the reversal is sent as it now stands.
        let claimedUntil = now() + claimMilliseconds
        do {
            guard let claimed = try await store.claimReversal(id, now: now(), until: claimedUntil) else { return }
            record = claimed
        } catch {
            if let left = storeErrorLog.admit() {
                logger.error("cannot claim reversal", metadata: ["reversalId": "\(id)", "error": "\(error)", "alikeLeftOut": "\(left)"])
            }
            return
        }
        // The claim's own commit may have taken seconds (a stalled disk, the gate held elsewhere):
        // the send must still be over with the claim's 5 s for recording its answer left, or the
        // claim could run out mid-send and another sender send the reversal too. With under half
        // a second left (half the timeout, if shorter), nothing is sent: the reversal is due again
        // once the claim has run out.
        let sendWithin = min(configuration.timeout, .milliseconds(claimedUntil - Self.claimRecordMilliseconds - now()))
        guard sendWithin >= min(.milliseconds(500), configuration.timeout / 2) else {
            logger.warning("reversal claimed too slowly to send under its claim; due again after it",
                           metadata: ["reversalId": "\(id)", "pspTransactionId": "\(record.request.pspTransactionId)"])
            return
        }
        // The claim counted this try (`request.sendCount`): 1 for a first send (0400), more for a
        // repeat (0401). A claim too slow to send under (above) counts too: the next send is then
        // a repeat of one the host never had, which it takes as it would the first.
        // Sent before from here without a record: the host may hold that 0400, so this is a repeat;
        // unless approved late since, which starts it again as new (a repeat would replay the 25
        // the host gave that send).
        let tries = record.tries
        var request = record.request
        if request.sendCount < 2, !record.lateApproved, everSentUnrecorded.withLock({ $0[id] != nil }) { request.sendCount = 2 }
        metrics.reversalsSent.increment()
        let acquirer = self.acquirer
        let outcome = await withDeadline(sendWithin) { [request] in try await acquirer.reverse(request) }
        let pspTransactionId = request.pspTransactionId
        func recordTry(_ state: ReversalState, nextTryAt: Int64) async throws -> Bool {
            let recorded = try await store.recordReversalTry(id, state: state, nextTryAt: nextTryAt, now: now(), claimedUntil: claimedUntil)
            if !recorded {
                logger.warning("reversal changed while it was sent (approved late, or taken by another sender); this answer is not recorded",
                               metadata: ["pspTransactionId": "\(pspTransactionId)", "reversalId": "\(id)"])
            }
            return recorded
        }
        do {
            switch outcome {
            case .value(.noOriginal) where tries < configuration.maxTries
                && (now() - record.createdAt < configuration.noOriginalSettleMilliseconds || record.lateApproved):
                if try await recordTry(.pending, nextTryAt: now() + backoff(after: tries)) {
                    logger.info("acquirer has no such authorization yet; will ask again", metadata: [
                        "pspTransactionId": "\(pspTransactionId)", "reversalId": "\(id)", "tries": "\(tries)"])
                }
            case .value(.noOriginal) where record.lateApproved:
                // Approved late, and still "no such authorization" after every try: an operator's.
                if try await recordTry(.failed, nextTryAt: 0) {
                    metrics.reversalsFailed.increment()
                    logger.critical("authorization approved late, its reversal still finds no original after all tries; needs an operator", metadata: [
                        "pspTransactionId": "\(pspTransactionId)", "reversalId": "\(id)", "tries": "\(tries)"])
                }
            case .value(.noOriginal):
                if try await store.settleReversalWithoutOriginal(id, now: now(), claimedUntil: claimedUntil) {
                    metrics.reversalsAcknowledged.increment()
                    logger.info("reversal settled: the acquirer has no such authorization", metadata: [
                        "pspTransactionId": "\(pspTransactionId)", "reversalId": "\(id)", "tries": "\(tries)"])
                } else {
                    logger.warning("reversal changed while it was sent (approved late, or taken by another sender); not settled",
                                   metadata: ["pspTransactionId": "\(pspTransactionId)", "reversalId": "\(id)"])
                }
            case .value:
                // Reversed: recorded whatever became of the claim. A late approval that started the
                // reversal again meanwhile is undone by this very answer.
                if try await store.recordReversalTry(id, state: .acknowledged, nextTryAt: 0, now: now(), claimedUntil: nil) {
                    metrics.reversalsAcknowledged.increment()
                    logger.info("reversal acknowledged", metadata: ["pspTransactionId": "\(pspTransactionId)", "reversalId": "\(id)", "tries": "\(tries)"])
                }
            case .failed, .timedOut:
                // Why, for the operator: a refusal code (a format error, 12, 94) is not a host that is down.
                let why = if case .failed(let error) = outcome { "\(error)" } else { "no answer in time" }
                if tries >= configuration.maxTries {
                    if try await recordTry(.failed, nextTryAt: 0) {
                        metrics.reversalsFailed.increment()
                        logger.critical("reversal not acknowledged after all tries; needs an operator", metadata: [
                            "pspTransactionId": "\(pspTransactionId)", "reversalId": "\(id)", "tries": "\(tries)", "lastError": "\(why)"])
                    }
                } else if try await recordTry(.pending, nextTryAt: now() + backoff(after: tries)), let left = retryLog.admit() {
                    logger.warning("reversal not acknowledged; will retry", metadata: [
                        "pspTransactionId": "\(pspTransactionId)", "reversalId": "\(id)", "tries": "\(tries)", "error": "\(why)",
                        "alikeLeftOut": "\(left)"])
                }
            }
        } catch {
            if let left = storeErrorLog.admit() {
                logger.error("cannot record reversal try", metadata: ["reversalId": "\(id)", "error": "\(error)", "alikeLeftOut": "\(left)"])
            }
        }
    }

    /// How long a claim holds: one send, and `claimRecordMilliseconds` to record its answer.
    private var claimMilliseconds: Int64 { configuration.timeout.wholeMilliseconds + Self.claimRecordMilliseconds }
    /// The part of a claim kept for recording the send's answer.
    static let claimRecordMilliseconds: Int64 = 5_000

    /// The wait before the next try: the first retry's, doubled per try, up to the cap.
    private func backoff(after tries: Int) -> Int64 {
        min(configuration.firstRetryMilliseconds << min(Int64(tries - 1), 20), configuration.maxRetryMilliseconds)
    }
}
