import Acquiring
import Foundation
@testable import SQLitePaymentStore
import Testing

@Suite struct MonotonicConditionTests {
    /// The deadline is an instant of the monotonic clock (seconds since boot). A condition timed on
    /// the wall clock (NSCondition, a default pthread condition) would read it as an instant decades
    /// ago and return at once.
    @Test func aTimedWaitLastsUntilItsMonotonicDeadline() {
        let condition = MonotonicCondition()
        let deadline = monotonicNanoseconds() + 50_000_000
        condition.lock()
        // Nothing signals it: it times out, and not before the deadline. (A spurious wake-up, which
        // pthreads allow, returns true early: waited out again, as every caller does.)
        var signalled = true
        while signalled && monotonicNanoseconds() < deadline + 5_000_000_000 {
            signalled = condition.wait(untilMonotonicNanoseconds: deadline)
        }
        let returned = monotonicNanoseconds()
        condition.unlock()
        #expect(!signalled && returned >= deadline)
    }

    @Test func aDeadlineAlreadyPastReturnsAtOnceAsTimedOut() {
        let condition = MonotonicCondition()
        condition.lock()
        let signalled = condition.wait(untilMonotonicNanoseconds: monotonicNanoseconds() - 1)
        condition.unlock()
        #expect(!signalled)
    }

    @Test func aSignalEndsTheWaitBeforeItsDeadline() {
        let condition = MonotonicCondition()
        nonisolated(unsafe) var ready = false
        let deadline = monotonicNanoseconds() + 60_000_000_000
        let signaller = Thread {
            condition.lock()
            ready = true
            condition.signal()
            condition.unlock()
        }
        condition.lock()
        signaller.start()
        while !ready && monotonicNanoseconds() < deadline {
            condition.wait(untilMonotonicNanoseconds: deadline)
        }
        let woken = ready
        condition.unlock()
        #expect(woken)
        #expect(monotonicNanoseconds() < deadline)
    }
}
