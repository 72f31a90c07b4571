import MakePayment
import NIOPosix
import PaymentStoreConformance
import Processing
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
