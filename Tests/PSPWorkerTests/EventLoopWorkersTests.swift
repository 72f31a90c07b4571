import MakePayment
import NIOPosix
import PaymentStoreConformance
import Processing
import NIOCore
import Synchronization
import Testing
@testable import PSPWorker

/// `--worker-threads event-loops`: the workers, and the authorizations they hand on, run on the
/// HTTP event loops, never on the cooperative pool.
@Suite struct EventLoopWorkersTests {
    @Test func workersAndTheirAuthorizationsRunOnTheEventLoops() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let executors = EventLoopTaskExecutor.forEachLoop(of: group)
        #expect(executors.count == 2)
        let onLoop: @Sendable () -> Bool = { executors.contains { $0.eventLoop.inEventLoop } }
        let checks = Mutex<(worker: [Bool], authorization: [Bool])>(([], []))
        let queue = InProcessMakePaymentQueue(capacity: 64)
        let workers = Task {
            await queue.runWorkers(2, executors: executors) { job in
                checks.withLock { $0.worker.append(onLoop()) }
                return .awaiting {
                    await Task.yield()  // resumed by the executor: still on a loop
                    checks.withLock { $0.authorization.append(onLoop()) }
                    return MakePaymentResult(httpStatus: 200, response: .ok(job.request.pspTransactionId))
                }
            }
        }
        let answers = try await withThrowingTaskGroup(of: MakePaymentResult.self) { submitters in
            for i in 0..<20 {
                let id = "p\(i)"
                let record = PaymentRecord(registration: PaymentStoreConformance.registration(id), state: .pending, outcome: nil,
                                           attempt: nil, authorizationsSent: 0, createdAt: 0, updatedAt: 0, completedAt: nil)
                let request = MakePaymentRequest(pspTransactionId: id, merchantSerialNumber: "1", cardData: "", confirmed: .yes)
                submitters.addTask { try await queue.submit(MakePaymentJob(request: request, payment: record)) }
            }
            return try await submitters.reduce(into: [MakePaymentResult]()) { $0.append($1) }
        }
        queue.close()
        await workers.value
        #expect(Set(answers.map(\.response.paymentInfo.pspTransactionId)) == Set((0..<20).map { "p\($0)" }))
        let (worker, authorization) = checks.withLock { $0 }
        #expect(worker.count == 20 && worker.allSatisfy { $0 })
        #expect(authorization.count == 20 && authorization.allSatisfy { $0 })
        #expect(!onLoop())
        try await group.shutdownGracefully()
    }

    @Test func aJobGoesToTheIdleWorkerOnTheSubmittingLoop() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let executors = EventLoopTaskExecutor.forEachLoop(of: group)
        let queue = InProcessMakePaymentQueue(capacity: 64)
        let workers = Task {
            await queue.runWorkers(2, executors: executors) { job in
                // Answers with the index of the loop the worker runs on.
                let loop = executors.firstIndex { $0.isCurrentThread }.map(String.init) ?? "none"
                return .answered(MakePaymentResult(httpStatus: 200, response: .ok(loop)))
            }
        }
        let record = PaymentRecord(registration: PaymentStoreConformance.registration("x"), state: .pending, outcome: nil,
                                   attempt: nil, authorizationsSent: 0, createdAt: 0, updatedAt: 0, completedAt: nil)
        let job = MakePaymentJob(request: MakePaymentRequest(pspTransactionId: "x", merchantSerialNumber: "1", cardData: "", confirmed: .yes),
                                 payment: record)
        for round in 0..<10 {
            let idleBy = ContinuousClock.now + .seconds(30)
            while queue.idleWorkers < 2 {
                try #require(ContinuousClock.now < idleBy, "both workers idle again")
                try await Task.sleep(for: .milliseconds(1))
            }
            let submitting = round % 2
            let answer = try await Task(executorPreference: executors[submitting]) { try await queue.submit(job) }.value
            #expect(answer.response.paymentInfo.pspTransactionId == String(submitting), "round \(round)")
        }
        queue.close()
        await workers.value
        try await group.shutdownGracefully()
    }
}

/// A worker taking job after job on an event loop still lets the loop read its sockets: NIO runs
/// every task queued during a tick in that tick, so a worker that only yielded kept the loop from
/// its selector until the queue was empty (a request, or an acquirer's reply, waited behind every
/// job queued: here, all 40).
@Suite struct EventLoopIOTurnTests {
    final class Counter: Sendable { let value = Atomic<Int>(0) }
    final class Reads: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let answered: Counter
        let answeredAtRead = Mutex<Int?>(nil)
        init(answered: Counter) { self.answered = answered }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let now = answered.value.load(ordering: .relaxed)
            answeredAtRead.withLock { if $0 == nil { $0 = now } }
        }
    }

    @Test func aBusyWorkerLetsItsLoopReadItsSockets() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = group.next()
        let answered = Counter()
        let reads = Reads(answered: answered)
        let server = try await ServerBootstrap(group: loop)
            .childChannelInitializer { channel in channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(reads) } }
            .bind(host: "127.0.0.1", port: 0).get()
        let port = try #require(server.localAddress?.port)
        let queue = InProcessMakePaymentQueue(capacity: 64)
        // The first job holds the loop until the test has queued every job and sent its byte.
        let taken = Counter(), gate = Counter()
        let workers = Task {
            await queue.runWorkers(1, executors: [EventLoopTaskExecutor(loop)]) { job in
                if taken.value.add(1, ordering: .relaxed).newValue == 1 {
                    while gate.value.load(ordering: .relaxed) == 0 {}
                }
                let until = ContinuousClock.now + .milliseconds(2)  // a decryption's worth, and more
                while ContinuousClock.now < until {}
                return .answered(MakePaymentResult(httpStatus: 200, response: .ok(job.request.pspTransactionId)))
            }
        }
        let jobs = 40
        let submitted = Task {
            try await withThrowingTaskGroup(of: Void.self) { submitters in
                for i in 0..<jobs {
                    let record = PaymentRecord(registration: PaymentStoreConformance.registration("t\(i)"), state: .pending, outcome: nil,
                                               attempt: nil, authorizationsSent: 0, createdAt: 0, updatedAt: 0, completedAt: nil)
                    let request = MakePaymentRequest(pspTransactionId: "t\(i)", merchantSerialNumber: "1", cardData: "", confirmed: .yes)
                    submitters.addTask {
                        _ = try await queue.submit(MakePaymentJob(request: request, payment: record))
                        answered.value.add(1, ordering: .relaxed)
                    }
                }
                try await submitters.waitForAll()
            }
        }
        // With the worker busy and every other job queued behind it, a client connects and sends a byte.
        try await waitUntil(within: .seconds(30)) { queue.depth == jobs - 1 }
        let client = try RawHTTP.Connection(port: port)
        try client.send("x")
        gate.value.store(1, ordering: .relaxed)
        try await submitted.value
        #expect(answered.value.load(ordering: .relaxed) == jobs)
        let atRead = try #require(reads.answeredAtRead.withLock { $0 }, "the byte was never read")
        #expect(atRead < jobs - 5, "the byte was read only after \(atRead) of \(jobs) jobs were answered")
        _ = client
        queue.close()
        await workers.value
        try await server.close()
        try await group.shutdownGracefully()
    }
}
