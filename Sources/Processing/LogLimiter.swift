import Synchronization

/// Lets through at most `burst` log lines of one kind per `interval` and counts the rest: a
/// failure that meets every payment (an acquirer down, a store refusing writes) logs a few lines
/// and a count, not a line per payment at full traffic, when the disk is busy enough already.
/// Nothing is lost by it: every payment's outcome and reversal is in the store, every event in
/// the metrics.
public final class LogLimiter: Sendable {
    private let burst: Int
    private let interval: Duration
    private let state: Mutex<(windowStart: ContinuousClock.Instant?, admitted: Int, suppressed: Int)>

    public init(burst: Int = 10, per interval: Duration = .seconds(10)) {
        self.burst = burst
        self.interval = interval
        state = Mutex((nil, 0, 0))
    }

    /// nil: leave this line out. Else log it, with how many were left out since the last one.
    public func admit(now: ContinuousClock.Instant = .now) -> Int? {
        state.withLock { s in
            if s.windowStart.map({ now - $0 >= interval }) ?? true {
                s.windowStart = now
                s.admitted = 0
            }
            guard s.admitted < burst else {
                s.suppressed += 1
                return nil
            }
            s.admitted += 1
            defer { s.suppressed = 0 }
            return s.suppressed
        }
    }
}
