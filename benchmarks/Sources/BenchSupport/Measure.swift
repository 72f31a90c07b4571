import Foundation
import Synchronization

/// Fixed-duration loops on real threads: the figure a ratio to `openssl speed` needs (it, too,
/// counts operations for a fixed time on one process per core).
public enum Measure {
    /// Runs `body(threadIndex, iteration)` on `threads` threads: a warm-up, then `seconds` of
    /// counting. Returns operations per second, all threads together.
    public static func opsPerSecond(threads: Int, seconds: Double, warmup: Double = 0.5,
                                    _ body: @escaping @Sendable (Int, Int) -> Void) -> Double {
        let counters = (0..<threads).map { _ in ThreadCounter() }
        let stop = StopFlag()
        let done = DispatchSemaphore(value: 0)
        for t in 0..<threads {
            let counter = counters[t]
            let thread = Thread {
                var i = 0
                while !stop.isSet {
                    body(t, i)
                    i += 1
                    counter.set(i)
                }
                done.signal()
            }
            thread.stackSize = 1 << 20
            thread.start()
        }
        Thread.sleep(forTimeInterval: warmup)
        let before = counters.reduce(0) { $0 + $1.value }
        let start = ContinuousClock.now
        Thread.sleep(forTimeInterval: seconds)
        let after = counters.reduce(0) { $0 + $1.value }
        let elapsed = ContinuousClock.now - start
        stop.set()
        for _ in 0..<threads { done.wait() }
        let (s, atto) = elapsed.components
        return Double(after - before) / (Double(s) + Double(atto) / 1e18)
    }
}

final class ThreadCounter: Sendable {
    private let atomic = Atomic<Int>(0)
    func set(_ value: Int) { atomic.store(value, ordering: .relaxed) }
    var value: Int { atomic.load(ordering: .relaxed) }
}

final class StopFlag: Sendable {
    private let atomic = Atomic<Bool>(false)
    func set() { atomic.store(true, ordering: .relaxed) }
    var isSet: Bool { atomic.load(ordering: .relaxed) }
}

/// CPU seconds this process's threads named `name` have used so far (Linux: nanoseconds on a CPU
/// from /proc/self/task/*/schedstat; without it, whole clock ticks of user + system time from
/// /proc/self/task/*/stat, 10 ms each; 0 elsewhere).
public func threadCPUSeconds(named name: String) -> Double {
    let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
    var seconds = 0.0
    for task in tasks {
        let dir = "/proc/self/task/\(task)"
        guard let comm = try? String(contentsOfFile: dir + "/comm", encoding: .utf8),
              comm.trimmingCharacters(in: .whitespacesAndNewlines) == name else { continue }
        if let schedstat = try? String(contentsOfFile: dir + "/schedstat", encoding: .utf8),
           let onCPU = schedstat.split(separator: " ").first.flatMap({ Int($0) }) {
            seconds += Double(onCPU) / 1e9
        } else if let stat = try? String(contentsOfFile: dir + "/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") {
            // After "pid (comm) ": state is field 3, utime and stime are fields 14 and 15.
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            if fields.count > 12, let user = Int(fields[11]), let system = Int(fields[12]) {
                seconds += Double(user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
            }
        }
    }
    return seconds
}

/// User + system CPU seconds this process has used so far, all threads.
public func processCPUSeconds() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
}
