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
            defer { self.connection = nil }
            guard let connection = self.connection else { return self.loop.makeSucceededVoidFuture() }
            return connection.closeFuture()
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
                let (seconds, attoseconds) = wait.components
                let delay = TimeAmount.nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
                loop.scheduleTask(in: delay) { self.send(index, intended: intended) }
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
        exchange(payment, since: intended) { first in
            guard let first else { return self.loop.execute { self.next() } }
            let answeredAt = ContinuousClock.now
            let lag: Duration? = if case .open = self.run.drive { max(.zero, first.sentAt - intended) } else { nil }
            let expected = payment.kind.expected
            var checked = AnswerCheck.check(httpStatus: first.answer.status, isJSON: first.answer.isJSON, body: first.answer.body,
                                            expected: expected, pspTransactionId: payment.id, decoder: self.decoder)
            // With acquirer faults, a payment that reaches the acquirer may also be 85, text and all.
            if checked.problem != nil, self.run.acquirerFaults, payment.kind.reachesAcquirer {
                let tooLate = AnswerCheck.check(httpStatus: first.answer.status, isJSON: first.answer.isJSON, body: first.answer.body,
                                                expected: .fail(.responseReceivedTooLate), pspTransactionId: payment.id, decoder: self.decoder)
                if tooLate.problem == nil { checked = tooLate }
            }
            let firstCheck = checked
            self.recorder.answered(firstCheck, latency: answeredAt - intended, sendLag: lag,
                                   label: "\(payment.id) [\(payment.kind)]", at: answeredAt)
            guard payment.kind == .duplicate else { return self.next() }
            self.exchange(payment, since: .now) { again in
                guard let again else { return self.loop.execute { self.next() } }
                let now = ContinuousClock.now
                var check = AnswerCheck.check(httpStatus: again.answer.status, isJSON: again.answer.isJSON, body: again.answer.body,
                                              expected: expected, pspTransactionId: payment.id, decoder: self.decoder)
                if firstCheck.problem == nil && check.outcome == firstCheck.outcome { check.problem = nil }
                if check.problem == nil, again.answer.body != first.answer.body || again.answer.status != first.answer.status
                    || again.answer.isJSON != first.answer.isJSON {
                    check.problem = "the repeat's answer differs from the first"
                }
                self.recorder.answered(check, latency: now - again.sentAt, label: "\(payment.id) [duplicate, repeat]", at: now)
                self.next()
            }
        }
    }

    /// One request on the slot's connection, connecting again first if it was lost. Nil (and a
    /// transport error recorded, its latency counted from `since`) when there is no answer.
    private func exchange(_ payment: PlannedPayment, since: ContinuousClock.Instant,
                          _ completion: @escaping @Sendable ((answer: HTTPAnswer, sentAt: ContinuousClock.Instant)?) -> Void) {
        let connected: EventLoopFuture<HTTPConnection>
        if let connection, connection.isUsable {
            connected = loop.makeSucceededFuture(connection)
        } else {
            connection?.closeFuture().whenComplete { _ in }
            connection = nil
            connected = HTTPConnection.connect(to: run.address, on: loop)
        }
        connected.flatMap { connection -> EventLoopFuture<(answer: HTTPAnswer, sentAt: ContinuousClock.Instant)> in
            self.connection = connection
            let sentAt = ContinuousClock.now
            return connection.send(payment.makePayment, timeout: self.run.timeout).map { ($0, sentAt) }
        }.whenComplete { result in
            switch result {
            case .success(let exchanged):
                completion(exchanged)
            case .failure(let error):
                self.recorder.transportError("\(payment.id) [\(payment.kind)]: \(error)", failedAfter: ContinuousClock.now - since)
                self.connection?.closeFuture().whenComplete { _ in }
                self.connection = nil
                completion(nil)
            }
        }
    }
}
