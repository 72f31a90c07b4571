import Foundation
import NIOCore

/// Drives one connection's share of the timed run on that connection's event loop: the wait for
/// the intended send time, the send, the answer, its check and the next send all run on that one
/// thread. Driving it from Swift tasks instead cost two or three thread hand-offs per request
/// (timer → task → event loop → task), and the generator shares the worker's cores: what it
/// burns, the worker does not get.
///
/// All mutable state is touched only on `loop`.
final class SlotDriver: @unchecked Sendable {
    struct Run: Sendable {
        let plan: [PlannedPayment]
        let cursor: Counter
        let executed: Counter
        let start: ContinuousClock.Instant
        let deadline: ContinuousClock.Instant?
        let timeout: TimeAmount
        let drive: LoadConfiguration.Drive
        let address: ServerAddress
        let acquirerFaults: Bool
    }

    private let run: Run
    private let recorder: Recorder
    private let loop: any EventLoop
    private var connection: HTTPConnection?
    /// A second connection, opened for the first `duplicate-in-flight` case: its other copy goes there.
    private var sideConnection: HTTPConnection?
    /// The two answers of a `duplicate-in-flight` case so far (nil: that copy got none), with when each came.
    private var pair: [(exchanged: (answer: HTTPAnswer, sentAt: ContinuousClock.Instant)?, at: ContinuousClock.Instant)] = []
    private let finished: EventLoopPromise<Void>
    private let decoder = JSONDecoder()

    init(run: Run, recorder: Recorder, connection: HTTPConnection) {
        self.run = run
        self.recorder = recorder
        self.connection = connection
        self.loop = connection.eventLoop
        self.finished = connection.eventLoop.makePromise()
    }

    /// Starts the slot; the future completes when the plan or the duration is used up.
    func start() -> EventLoopFuture<Void> {
        loop.execute { self.next() }
        return finished.futureResult
    }

    /// Closes the slot's connection (after the run).
    func close() -> EventLoopFuture<Void> {
        loop.flatSubmit {
            defer { self.connection = nil; self.sideConnection = nil }
            let open = [self.connection, self.sideConnection].compactMap { $0 }
            return EventLoopFuture.andAllComplete(open.map { $0.closeFuture() }, on: self.loop)
        }
    }

    private func next() {
        if case .closed = run.drive, let deadline = run.deadline, ContinuousClock.now >= deadline { return finished.succeed() }
        let index = run.cursor.next()
        guard index < run.plan.count else { return finished.succeed() }
        switch run.drive {
        case .closed:
            send(index, intended: .now)
        case .open(let rate, _):
            let intended = run.start + OpenLoopSchedule(rate: rate).offset(of: index)
            if let deadline = run.deadline, intended >= deadline { return finished.succeed() }
            // Due later: wait on the loop's own timer. Already late (every connection was busy):
            // send at once; the wait is counted in its latency.
            let wait = intended - .now
            if wait > .zero {
                loop.scheduleTask(in: TimeAmount(wait)) { self.send(index, intended: intended) }
            } else {
                send(index, intended: intended)
            }
        }
    }

    /// Sends one case and checks its answer; a duplicate sends the same request again at once.
    private func send(_ index: Int, intended: ContinuousClock.Instant) {
        let payment = run.plan[index]
        _ = run.executed.next()
        recorder.sent(payment.kind)
        if payment.kind == .duplicateInFlight { return sendTwiceAtOnce(payment, intended: intended) }
        exchange(payment, since: intended) { first in
            guard let first else { return self.loop.execute { self.next() } }
            let answeredAt = ContinuousClock.now
            let lag = self.sendLag(first.sentAt, intended: intended)
            let expected = payment.kind.expected
            let firstCheck = self.check(first.answer, payment)
            self.recorder.answered(firstCheck, latency: answeredAt - intended, sendLag: lag,
                                   label: "\(payment.id) [\(payment.kind)]", at: answeredAt)
            guard payment.kind == .duplicate else { return self.next() }
            // Timed from here, a reconnect before the repeat included, as every other request is.
            let repeatStart = ContinuousClock.now
            self.exchange(payment, since: repeatStart, isRepeat: true) { again in
                guard let again else { return self.loop.execute { self.next() } }
                let now = ContinuousClock.now
                var check = AnswerCheck.check(httpStatus: again.answer.status, isJSON: again.answer.isJSON, body: again.answer.body,
                                              expected: expected, pspTransactionId: payment.id, decoder: self.decoder)
                if firstCheck.problem == nil && check.outcome == firstCheck.outcome { check.problem = nil }
                if check.problem == nil, Self.differ(again.answer, first.answer) { check.problem = "the repeat's answer differs from the first" }
                self.recorder.answered(check, latency: now - repeatStart, label: "\(payment.id) [duplicate, repeat]", at: now)
                self.next()
            }
        }
    }

    /// Both copies at once, one on each of the slot's two connections: the worker must answer the
    /// second alike, joined to the first in flight or from its stored outcome, and authorize once.
    private func sendTwiceAtOnce(_ payment: PlannedPayment, intended: ContinuousClock.Instant) {
        pair = []
        let arrived: @Sendable ((answer: HTTPAnswer, sentAt: ContinuousClock.Instant)?) -> Void = { exchanged in
            self.pair.append((exchanged, ContinuousClock.now))
            guard self.pair.count == 2 else { return }
            self.checkPair(payment, intended: intended)
        }
        exchange(payment, since: intended, arrived)
        exchange(payment, since: intended, side: true, arrived)
    }

    private func checkPair(_ payment: PlannedPayment, intended: ContinuousClock.Instant) {
        let answered = pair.compactMap { entry in entry.exchanged.map { (answer: $0.answer, sentAt: $0.sentAt, at: entry.at) } }
        pair = []
        for (i, this) in answered.enumerated() {
            var check = check(this.answer, payment)
            if i == 1, check.problem == nil, Self.differ(this.answer, answered[0].answer) { check.problem = "the two answers differ" }
            let lag = sendLag(this.sentAt, intended: intended)
            recorder.answered(check, latency: this.at - intended, sendLag: lag, label: "\(payment.id) [\(payment.kind)]", at: this.at)
        }
        next()
    }

    /// `answer` checked against what `payment`'s case must get. With acquirer faults, a payment that
    /// reaches the acquirer may also be 85, text and all.
    private func check(_ answer: HTTPAnswer, _ payment: PlannedPayment) -> CheckedAnswer {
        let checked = AnswerCheck.check(httpStatus: answer.status, isJSON: answer.isJSON, body: answer.body,
                                        expected: payment.kind.expected, pspTransactionId: payment.id, decoder: decoder)
        guard checked.problem != nil, run.acquirerFaults, payment.kind.reachesAcquirer else { return checked }
        let tooLate = AnswerCheck.check(httpStatus: answer.status, isJSON: answer.isJSON, body: answer.body,
                                        expected: .fail(.responseReceivedTooLate), pspTransactionId: payment.id, decoder: decoder)
        return tooLate.problem == nil ? tooLate : checked
    }

    /// A request that got no answer: why, and when it went out (nil: it did not), or when it was
    /// given up before it could.
    private struct Unanswered: Error {
        let error: any Error
        let sentAt: ContinuousClock.Instant?
        let notSentBy: ContinuousClock.Instant?
    }

    /// An open loop's send lag for a request sent (or given up) at `sentAt`, intended at `intended`.
    private func sendLag(_ sentAt: ContinuousClock.Instant, intended: ContinuousClock.Instant) -> Duration? {
        if case .open = run.drive { max(.zero, sentAt - intended) } else { nil }
    }

    /// Two answers to the same payment that a client could tell apart.
    private static func differ(_ a: HTTPAnswer, _ b: HTTPAnswer) -> Bool {
        a.status != b.status || a.isJSON != b.isJSON || a.body != b.body
    }

    /// One request on the slot's connection (or its second one), connecting again first if it was
    /// lost. Nil (and a transport error recorded, its latency counted from `since`) when there is no
    /// answer within the request timeout of `since`. A duplicate's repeat (`isRepeat`), sent as soon
    /// as the first answer came, has no intended time of its own: no send lag.
    private func exchange(_ payment: PlannedPayment, since: ContinuousClock.Instant, side: Bool = false, isRepeat: Bool = false,
                          _ completion: @escaping @Sendable ((answer: HTTPAnswer, sentAt: ContinuousClock.Instant)?) -> Void) {
        let current = side ? sideConnection : connection
        let connected: EventLoopFuture<HTTPConnection>
        if let current, current.isUsable {
            connected = loop.makeSucceededFuture(current)
        } else {
            current?.closeFuture().whenComplete { _ in }
            if side { sideConnection = nil } else { connection = nil }
            connected = HTTPConnection.connect(to: run.address, on: loop, unexpectedAnswer: recorder.unexpectedAnswerReport)
        }
        // Vipps's patience runs from the intended send (an open loop's request sent late, after a
        // wait for a free connection, has less of it left): a request whose patience ran out before
        // it could go is not sent, and an answer past it is lost, however it came.
        let patience = Duration(run.timeout)
        connected.flatMap { connection -> EventLoopFuture<(answer: HTTPAnswer, sentAt: ContinuousClock.Instant)> in
            if side { self.sideConnection = connection } else { self.connection = connection }
            let sentAt = ContinuousClock.now
            let left = patience - (sentAt - since)
            guard left > .zero else {
                return self.loop.makeFailedFuture(Unanswered(error: HTTPClientError.timedOut, sentAt: nil, notSentBy: sentAt))
            }
            return connection.send(payment.makePayment, timeout: TimeAmount(left)).map { ($0, sentAt) }
                .flatMapErrorThrowing { throw Unanswered(error: $0, sentAt: sentAt, notSentBy: nil) }
        }.whenComplete { result in
            let now = ContinuousClock.now
            switch result {
            case .success(let exchanged) where now - since <= patience:
                completion(exchanged)
            case .success(let exchanged):
                // The connection's timer fires every 100 ms: an answer after the patience but before it is lost all the same.
                self.recorder.transportError("\(payment.id) [\(payment.kind)]: answered after the request timeout",
                                             failedAfter: now - since, sendLag: isRepeat ? nil : self.sendLag(exchanged.sentAt, intended: since), at: now)
                completion(nil)
            case .failure(let error):
                // Sent, or given up unsent (its patience ran out, or no connection could be made) at the failure.
                let unanswered = error as? Unanswered
                let lag = isRepeat ? nil : self.sendLag(unanswered?.sentAt ?? unanswered?.notSentBy ?? now, intended: since)
                self.recorder.transportError("\(payment.id) [\(payment.kind)]: \(unanswered?.error ?? error)", failedAfter: now - since,
                                             sendLag: lag, at: now)
                // Not sent for want of patience: nothing is in flight on the connection, which stays.
                if let unanswered, unanswered.sentAt == nil, unanswered.notSentBy != nil { return completion(nil) }
                if side {
                    self.sideConnection?.closeFuture().whenComplete { _ in }
                    self.sideConnection = nil
                } else {
                    self.connection?.closeFuture().whenComplete { _ in }
                    self.connection = nil
                }
                completion(nil)
            }
        }
    }
}
