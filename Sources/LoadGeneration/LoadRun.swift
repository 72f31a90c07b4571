import CardCrypto
import Foundation
import NIOCore
import NIOPosix
import Synchronization

/// What `vipps-sim` was asked to do.
public struct LoadConfiguration: Sendable {
    public enum Drive: Sendable, Equatable {
        /// `concurrency` requests in flight, each sent as soon as the previous one on its slot is answered.
        case closed(concurrency: Int)
        /// `rate` requests per second on schedule, over up to `connections` connections.
        case open(rate: Double, connections: Int)
    }

    public var address: ServerAddress
    public var makePaymentPath = "/makePayment"
    public var publicKeyPath = "keys-example/psp-public-key.pem"
    public var adminToken: String
    public var merchantSerialNumber = "123456"
    public var drive: Drive
    public var count: Int?
    public var duration: Duration?
    public var mix: Mix
    public var seed: UInt64 = 1
    public var requestTimeout: Duration = .seconds(15)
    /// How long the read-back waits for the reversals that must have been sent (`CaseKind.mustBeReversed`).
    public var reversalWait: Duration = .seconds(20)
    /// The acquirer injects faults (dropped replies, resets): a case that reaches it may also be
    /// answered FAIL 85, and is counted as an unknown outcome rather than a mismatch.
    public var acquirerFaults = false
    /// Connections used to register payments before the run.
    public var registrationConcurrency = 16
    /// Event-loop threads of the client. One is plenty for a worker on the same 2 cores, and
    /// leaves the other core to the worker.
    public var clientThreads = 1
    public var showProgress = false
    /// After the run, read duplicates and wrong-token payments back through `GET /payments/{id}`.
    public var verifyIdempotency = true
    /// Break the report's latency into intervals of this length (`--interval`).
    public var interval: Duration?
    /// Closed loop with only `--duration`: payments prepared per second of it, more than a worker
    /// on this machine's cores can answer (a core makes under 5,000 RSA-2048 private operations a
    /// second, and most cases need one); those left over are simply not sent.
    public var closedLoopBudgetPerSecond = 5_000 * max(1, ProcessInfo.processInfo.activeProcessorCount)

    /// The most payments a run prepares: what half this machine's memory holds, at ~2 KB each
    /// (the registration, the makePayment request in its buffer, the id).
    public static var maxPlannedPayments: Int { Int(ProcessInfo.processInfo.physicalMemory / 2 / 2048) }

    public init(address: ServerAddress, adminToken: String, drive: Drive, mix: Mix) {
        self.address = address
        self.adminToken = adminToken
        self.drive = drive
        self.mix = mix
    }

    /// How many payments to prepare: `count`, or what `duration` needs, or the lesser of the two.
    /// A closed loop given both prepares `count` (how many it will answer in the duration is not
    /// known beforehand); only a closed loop given no count falls back on the budget per second.
    public var plannedPayments: Int {
        let byDuration: Int? = duration.map { d in
            switch drive {
            case .closed: count ?? Int(d.seconds.rounded(.up)) * closedLoopBudgetPerSecond
            case .open(let rate, _): OpenLoopSchedule(rate: rate).count(for: d)
            }
        }
        switch (count, byDuration) {
        case let (c?, d?): return min(c, d)
        case let (c?, nil): return c
        case let (nil, d?): return d
        case (nil, nil): return 10_000
        }
    }
}

public enum LoadRunError: Error, CustomStringConvertible {
    case publicKey(String)
    case registration(String)

    public var description: String {
        switch self {
        case .publicKey(let reason): "cannot use the public key: \(reason)"
        case .registration(let reason): "registering payments failed: \(reason)"
        }
    }
}

/// One run of `vipps-sim`: prepare, register, drive, verify, report.
public final class LoadRun: Sendable {
    public let configuration: LoadConfiguration
    private let log: @Sendable (String) -> Void
    private let recorder: Recorder
    private let group: MultiThreadedEventLoopGroup

    public init(_ configuration: LoadConfiguration, log: @escaping @Sendable (String) -> Void) {
        self.configuration = configuration
        self.log = log
        self.recorder = Recorder(interval: configuration.interval)
        self.group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, configuration.clientThreads))
    }

    /// Runs once; the client's threads stop when it returns.
    public func run() async throws -> Report {
        try await stoppingClient { try await drive() }
    }

    /// `body`, then the client's threads stop, whether it returned or threw.
    private func stoppingClient<T>(_ body: () async throws -> T) async throws -> T {
        do {
            let value = try await body()
            try? await group.shutdownGracefully()
            return value
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
    }

    /// Prepares and registers the payments, then writes their makePayment requests to `path` instead
    /// of sending them, for another load generator (wrk): one line per payment,
    /// `pspTransactionId<TAB>Authorization<TAB>body`. Returns how many were written.
    public func exportRequests(to path: String) async throws -> Int {
        let plan = try await stoppingClient { try await prepareAndRegister() }
        var text = ""
        text.reserveCapacity(plan.count * 480)
        for payment in plan {
            text += payment.id + "\t" + (payment.makePayment.authorization ?? "") + "\t"
            text += String(decoding: payment.makePayment.body, as: UTF8.self) + "\n"
        }
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
        return plan.count
    }

    /// Steps 1 and 2 of a run: every payload prepared, every payment registered.
    private func prepareAndRegister() async throws -> [PlannedPayment] {
        let c = configuration
        // 1. Prepare every payload.
        let total = c.plannedPayments
        let key: RSAKey
        do { key = try KeyFiles.loadPublicKey(path: c.publicKeyPath) } catch { throw LoadRunError.publicKey("\(error)") }
        let runId = PaymentPlanner.randomHex(4)
        let planner = PaymentPlanner(runId: runId, merchantSerialNumber: c.merchantSerialNumber,
                                     makePaymentPath: c.makePaymentPath, hostHeader: c.address.hostHeader)
        let clock = ContinuousClock.now
        let plan = try await planner.payments(kinds: c.mix.assign(total: total, seed: c.seed), publicKey: key)
        log("prepared \(plan.count) payments (run \(runId)) in \(Self.seconds(since: clock)) s")

        // 2. Register them, as the PSP's checkout would.
        let registering = ContinuousClock.now
        try await register(plan)
        log("registered \(plan.count) payments in \(Self.seconds(since: registering)) s")
        return plan
    }

    private func drive() async throws -> Report {
        let c = configuration
        let plan = try await prepareAndRegister()

        // 3. Drive the timed run over connections opened beforehand.
        let connections: Int
        switch c.drive {
        case .closed(let concurrency): connections = concurrency
        case .open(_, let n): connections = n
        }
        var opened: [HTTPConnection] = []
        for _ in 0..<connections {
            opened.append(try await HTTPConnection.connect(to: c.address, on: group, unexpectedAnswer: recorder.unexpectedAnswerReport))
        }
        let pool = opened
        // Cases are taken in order; the ones sent are always a prefix of the plan.
        let cursor = Counter()
        let executed = Counter()
        let timeout = TimeAmount(c.requestTimeout)
        // Answers to come: one per payment, two for a duplicate (its repeat). Counted before the
        // clock starts: a pass over a large plan would make the first sends late.
        let answers = plan.count + plan.filter(\.kind.sendsTwice).count
        let cpuAtStart = Self.processCPUMicroseconds()
        let start = ContinuousClock.now
        recorder.begin(at: start, duration: c.duration)
        let deadline = c.duration.map { start + $0 }
        let progress = c.showProgress ? Task { await self.showProgress(start: start, total: answers) } : nil

        let run = SlotDriver.Run(plan: plan, cursor: cursor, executed: executed, start: start, deadline: deadline,
                                 timeout: timeout, drive: c.drive, address: c.address, acquirerFaults: c.acquirerFaults)
        let drivers = pool.map { SlotDriver(run: run, recorder: recorder, connection: $0) }
        let running = drivers.map { $0.start() }
        for slot in running { try? await slot.get() }
        let generatorCPU = Self.processCPUMicroseconds() - cpuAtStart
        progress?.cancel()
        _ = await progress?.value
        let sent = executed.value
        // Scripts that account for the run's CPU (benchmarks/e2e.sh) stop counting here: the
        // read-back after it is a trickle of GETs with the cores mostly idle.
        log("timed run done: \(sent) payments sent")
        for driver in drivers { try? await driver.close().get() }
        // A closed loop given only a duration prepares `closedLoopBudgetPerSecond` payments per
        // second of it; a worker that answered them all early ran out, and the run was shorter.
        if case .closed = c.drive, c.count == nil, let deadline, sent == plan.count, ContinuousClock.now < deadline {
            log("warning: every one of the \(plan.count) prepared payments was sent before --duration ran out; "
                + "give --count (more than \(c.closedLoopBudgetPerSecond) a second of --duration) for a run of the full duration")
        }

        // 4. Idempotency, read back: a duplicate was authorized once; a wrong token, never.
        if c.verifyIdempotency { await verify(plan[..<sent]) }

        var setup: Report.Setup
        switch c.drive {
        case .closed(let concurrency):
            setup = Report.Setup(mode: .closed, concurrency: concurrency, targetRate: nil, payments: sent,
                                 mix: c.mix.description, url: c.address.description)
        case .open(let rate, let n):
            setup = Report.Setup(mode: .open, concurrency: n, targetRate: rate, payments: sent,
                                 mix: c.mix.description, url: c.address.description)
        }
        setup.payments = sent
        var report = recorder.report(setup: setup, start: start, unsent: plan.count - sent)
        if report.answered > 0 { report.generatorCPUMicrosecondsPerAnswer = generatorCPU / Double(report.answered) }
        return report
    }

    /// User and system CPU of the whole process so far, in microseconds.
    static func processCPUMicroseconds() -> Double {
        var usage = rusage()
        guard getrusage(RUSAGE_SELF.rawValue, &usage) == 0 else { return 0 }
        func micros(_ t: timeval) -> Double { Double(t.tv_sec) * 1e6 + Double(t.tv_usec) }
        return micros(usage.ru_utime) + micros(usage.ru_stime)
    }

    /// One read-back request on `connection`, reconnecting first if it was lost. Nil (and a
    /// transport error recorded) when there is no answer.
    private func exchange(_ request: PreparedRequest, label payment: PlannedPayment, connection: inout HTTPConnection?,
                          timeout: TimeAmount) async -> (answer: HTTPAnswer, sentAt: ContinuousClock.Instant)? {
        do {
            if connection?.isUsable != true {
                await connection?.close()
                connection = try await HTTPConnection.connect(to: configuration.address, on: group,
                                                              unexpectedAnswer: recorder.unexpectedAnswerReport)
            }
            let sentAt = ContinuousClock.now
            let answer = try await connection!.send(request, timeout: timeout)
            return (answer, sentAt)
        } catch {
            recorder.readBackFailed("\(payment.id) [\(payment.kind)]: \(error)")
            await connection?.close()
            connection = nil
            return nil
        }
    }

    /// Registers every payment through `POST /payments` with the admin token.
    private func register(_ plan: [PlannedPayment]) async throws {
        let c = configuration
        let cursor = Counter()
        let timeout = TimeAmount(c.requestTimeout)
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            for _ in 0..<max(1, min(c.registrationConcurrency, plan.count)) {
                tasks.addTask {
                    let connection = try await HTTPConnection.connect(to: c.address, on: self.group)
                    while true {
                        let index = cursor.next()
                        // Stops early once another registration failed (the group is cancelled then).
                        guard index < plan.count, !Task.isCancelled else { await connection.close(); return }
                        let request = PreparedRequest(method: .POST, uri: "/payments", host: c.address.hostHeader,
                                                      authorization: "Bearer " + c.adminToken, body: plan[index].registrationBody)
                        let answer: HTTPAnswer
                        do { answer = try await connection.send(request, timeout: timeout) } catch {
                            await connection.close()
                            throw LoadRunError.registration("\(plan[index].id): \(error)")
                        }
                        guard answer.status == 201 else {
                            await connection.close()
                            let hint = answer.status == 401 ? " (is the admin token the worker's PSP_ADMIN_TOKEN?)" : ""
                            throw LoadRunError.registration("\(plan[index].id): HTTP \(answer.status) "
                                + String(decoding: answer.body.prefix(200), as: UTF8.self) + hint)
                        }
                    }
                }
            }
            // The first failure ends the wait (once each registration in flight has its answer) and
            // cancels the rest, which start no more.
            for try await _ in tasks {}
        }
    }

    /// Reads back duplicates (one authorization), the cases answered before the acquirer (none;
    /// wrong-token payments still pending) and, where the acquirer counts them (the simulator),
    /// the authorizations that must be reversed (it is sent as the 85 is recorded, so it is
    /// waited for a few seconds).
    private func verify(_ sent: ArraySlice<PlannedPayment>) async {
        let c = configuration
        let targets = sent.filter { $0.kind.sendsTwice || $0.kind.neverAuthorized || ($0.kind.mustBeReversed && !c.acquirerFaults) }
        let reversalsDue = ContinuousClock.now + c.reversalWait
        // Against an acquirer with faults an approval may rightly be 85 and reversed, or not reached.
        let checksReversals = !c.acquirerFaults
        guard !targets.isEmpty else { return }
        let timeout = TimeAmount(c.requestTimeout)
        var connection: HTTPConnection?
        for payment in targets {
            let request = PreparedRequest(method: .GET, uri: "/payments/" + payment.id, host: c.address.hostHeader,
                                          authorization: "Bearer " + c.adminToken, body: [])
            var fetched: (view: [String: Any], sentCount: Int, state: String)?
            while true {
                guard let (answer, _) = await exchange(request, label: payment, connection: &connection, timeout: timeout) else { break }
                guard answer.status == 200,
                      let object = (try? JSONSerialization.jsonObject(with: Data(answer.body))) as? [String: Any],
                      let count = object["authorizationsSent"] as? Int, let text = object["state"] as? String
                else {
                    recorder.mismatch("\(payment.id) [\(payment.kind)]: GET /payments/{id} answered HTTP \(answer.status)")
                    break
                }
                fetched = (object, count, text)
                // A reversal not sent yet: asked again until it is, or until the wait is over.
                guard checksReversals, payment.kind.mustBeReversed, let reversals = object["acquirerReversals"] as? Int, reversals == 0,
                      (object["acquirerAuthorizations"] as? Int ?? 0) > 0, ContinuousClock.now < reversalsDue else { break }
                try? await Task.sleep(for: .milliseconds(100))
            }
            guard let (view, sentCount, state) = fetched else { continue }
            // What the acquirer authorized is reversed: once, or more where a reversal's answer was
            // lost and it was sent again (harmless: a host acknowledges a repeat). An attempt closed
            // unsent (85 with too little time left) reached no acquirer and has nothing to undo.
            if checksReversals, payment.kind.mustBeReversed, let reversals = view["acquirerReversals"] as? Int,
               let authorized = view["acquirerAuthorizations"] as? Int, (authorized > 0) != (reversals > 0) {
                recorder.mismatch("\(payment.id) [\(payment.kind)]: reversed \(reversals) times after \(authorized) authorizations at the acquirer")
            }
            let acquirerCount = view["acquirerAuthorizations"] as? Int
            if payment.kind.sendsTwice, sentCount != 1 || (acquirerCount ?? 1) != 1 {
                recorder.mismatch("\(payment.id) [\(payment.kind)]: authorized \(sentCount) times (acquirer saw \(acquirerCount ?? -1)), expected once")
            }
            if payment.kind == .wrongToken, state != "pending" || sentCount != 0 {
                recorder.mismatch("\(payment.id) [wrong-token]: state \(state) with \(sentCount) authorizations, expected pending with none")
            } else if payment.kind.neverAuthorized, sentCount != 0 || (acquirerCount ?? 0) != 0 {
                recorder.mismatch("\(payment.id) [\(payment.kind)]: authorized \(sentCount) times (acquirer saw \(acquirerCount ?? -1)), expected never")
            }
        }
        await connection?.close()
    }

    /// A live line on the terminal: elapsed, answered, rate, mismatches, p99 so far.
    private func showProgress(start: ContinuousClock.Instant, total: Int) async {
        var last = (at: start, answered: 0)
        while !Task.isCancelled {
            try? await Task.sleep(for: .seconds(1))
            let now = ContinuousClock.now
            let p = recorder.progress
            let rate = Double(p.answered - last.answered) / max((now - last.at).seconds, 1e-3)
            last = (now, p.answered)
            let line = String(format: "\r\u{1B}[K%6.1f s  answered %d/%d  %.0f/s  mismatches %d  p99 %.2f ms",
                              (now - start).seconds, p.answered, total, rate, p.mismatches, p.p99Milliseconds)
            FileHandle.standardError.write(Data(line.utf8))
        }
        FileHandle.standardError.write(Data("\r\u{1B}[K".utf8))
    }

    static func seconds(since instant: ContinuousClock.Instant) -> String {
        String(format: "%.1f", (ContinuousClock.now - instant).seconds)
    }
}

/// A shared counter that tasks can capture (an `Atomic` itself cannot be captured by a task).
final class Counter: Sendable {
    private let atomic = Atomic<Int>(0)
    /// The current value, then one more.
    func next() -> Int { atomic.add(1, ordering: .relaxed).oldValue }
    var value: Int { atomic.load(ordering: .relaxed) }
}
