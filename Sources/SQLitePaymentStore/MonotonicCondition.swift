import Acquiring
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A mutex and a condition variable whose timed wait runs on the monotonic clock.
///
/// NSCondition's `wait(until: Date)` waits for a wall-clock instant: if the clock is stepped back
/// (an operator, a VM restored from a snapshot, NTP stepping rather than slewing), the wait grows by
/// the step, and a writer gathering a group would hold every payment's commit that long.
final class MonotonicCondition: @unchecked Sendable {
    // @unchecked: the pthread objects are what makes this thread-safe; they are allocated once, so they never move.
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let cond = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)

    init() {
        let mutexInit = pthread_mutex_init(mutex, nil)
        precondition(mutexInit == 0, "pthread_mutex_init failed")
        #if canImport(Darwin)
        let condInit = pthread_cond_init(cond, nil)  // timed waits are relative there
        #else
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        let clockSet = pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        precondition(clockSet == 0, "pthread_condattr_setclock(CLOCK_MONOTONIC) failed")
        let condInit = pthread_cond_init(cond, &attributes)
        pthread_condattr_destroy(&attributes)
        #endif
        precondition(condInit == 0, "pthread_cond_init failed")
    }

    deinit {
        pthread_cond_destroy(cond)
        pthread_mutex_destroy(mutex)
        cond.deallocate()
        mutex.deallocate()
    }

    func lock() { pthread_mutex_lock(mutex) }
    func unlock() { pthread_mutex_unlock(mutex) }
    func signal() { pthread_cond_signal(cond) }

    /// Waits for a signal (spurious wake-ups included). Call with the lock held.
    func wait() { pthread_cond_wait(cond, mutex) }

    /// Waits for a signal or until `deadline` (`monotonicNanoseconds()`), whichever comes first;
    /// false if the deadline passed. Call with the lock held; wake-ups may be spurious.
    @discardableResult
    func wait(untilMonotonicNanoseconds deadline: UInt64) -> Bool {
        #if !canImport(Darwin)
        var until = timespec(tv_sec: Int(deadline / 1_000_000_000), tv_nsec: Int(deadline % 1_000_000_000))
        return pthread_cond_timedwait(cond, mutex, &until) != ETIMEDOUT
        #else
        let now = monotonicNanoseconds()
        guard deadline > now else { return false }
        let remaining = deadline - now
        var interval = timespec(tv_sec: Int(remaining / 1_000_000_000), tv_nsec: Int(remaining % 1_000_000_000))
        return pthread_cond_timedwait_relative_np(cond, mutex, &interval) != ETIMEDOUT
        #endif
    }
}
