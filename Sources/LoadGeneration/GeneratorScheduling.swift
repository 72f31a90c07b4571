import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// How vipps-sim keeps out of the worker's way on cores they share (a benchmark on one machine;
/// Vipps itself calls from elsewhere).
///
/// Under Linux's SCHED_BATCH a thread keeps its fair share of the CPU, but its wake-ups do not
/// preempt a running thread: an answer arriving while both cores decrypt is read when a core comes
/// free, not by interrupting an RSA operation, and the generator handles several at a wake-up (a
/// quarter less of its CPU per answer on the worker's 2 cores). Whatever this delays the generator
/// by still counts against the worker: latency runs from each request's intended send time to the
/// moment its answer is read.
public enum GeneratorScheduling {
    /// SCHED_BATCH from <linux/sched.h> (Glibc's module exports it only to _GNU_SOURCE code).
    static let batchPolicy: Int32 = 3

    /// Puts every thread of this process under SCHED_BATCH; threads started later inherit it from the
    /// thread that starts them. Returns how many threads were switched (nil: not on Linux, or
    /// /proc is not there).
    public static func batchAllThreads() -> Int? {
        #if os(Linux)
        guard let tasks = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task") else { return nil }
        return tasks.compactMap(pid_t.init).filter(batch(thread:)).count
        #else
        return nil
        #endif
    }

    /// Puts one thread (0: the calling one) under SCHED_BATCH. Whether it now runs under it.
    @discardableResult
    public static func batch(thread: pid_t) -> Bool {
        #if os(Linux)
        var parameters = sched_param(sched_priority: 0)
        return sched_setscheduler(thread, batchPolicy, &parameters) == 0
        #else
        return false
        #endif
    }

    /// Whether a thread (0: the calling one) runs under SCHED_BATCH.
    public static func isBatch(thread: pid_t) -> Bool {
        #if os(Linux)
        return sched_getscheduler(thread) == batchPolicy
        #else
        return false
        #endif
    }
}
