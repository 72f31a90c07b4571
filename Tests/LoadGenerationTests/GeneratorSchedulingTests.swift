import Foundation
import LoadGeneration
import Testing

#if os(Linux)
@Suite struct GeneratorSchedulingTests {
    /// What vipps-sim relies on: a thread switched to SCHED_BATCH runs under it, and a thread it
    /// starts (an event loop, say) inherits it. Run on threads of its own, not the test runner's.
    @Test func aThreadSwitchedToBatchAndTheThreadsItStartsRunUnderIt() async {
        let observed = await withCheckedContinuation { (continuation: CheckedContinuation<[Bool], Never>) in
            Thread {
                let before = GeneratorScheduling.isBatch(thread: 0)
                let switched = GeneratorScheduling.batch(thread: 0)
                let after = GeneratorScheduling.isBatch(thread: 0)
                let started = DispatchSemaphore(value: 0)
                nonisolated(unsafe) var inherited = false
                Thread {
                    inherited = GeneratorScheduling.isBatch(thread: 0)
                    started.signal()
                }.start()
                started.wait()
                continuation.resume(returning: [before, switched, after, inherited])
            }.start()
        }
        #expect(observed == [false, true, true, true])
    }
}
#endif
