import Histogram
import Synchronization

/// Everything a run measures, shared by its connections. One lock, taken once per answer: at the
/// few thousand answers a second a 2-core worker gives, it is never contended enough to matter.
public final class Recorder: Sendable {
    /// Mismatches listed by name in the report; the rest are only counted.
    public static let listedMismatches = 10

    struct State {
        /// Latency in microseconds, 1 µs to 10 minutes at 3 significant digits.
        var latency = Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 600_000_000,
                                        numberOfSignificantValueDigits: .three)
        /// Open loop: how late the generator itself sent, after the intended time.
        var sendLag = Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 600_000_000,
                                        numberOfSignificantValueDigits: .three)
        var answered = 0
        var outcomes: [String: Int] = [:]
        var kinds: [String: Int] = [:]
        var mismatches = 0
        var firstMismatches: [String] = []
        var transportErrors = 0
        var lastAnswer: ContinuousClock.Instant?
        /// With an interval: when the timed run began, and a histogram per interval since, by the
        /// time each answer came (1 µs to 10 minutes at 2 significant digits: ~20 KB each).
        var runStart: ContinuousClock.Instant?
        /// How long the timed run is meant to last (nil: until its payments are answered).
        var runLength: Duration?
        /// The last interval: answers after the run's end (those in flight when it ended, or a
        /// time-out that came later) are counted in it rather than in intervals of their own.
        var lastInterval = Recorder.maxIntervals - 1
        var intervals: [Histogram<UInt64>] = []
        /// Answers in each interval (its histogram also holds the requests that failed there).
        var intervalAnswers: [Int] = []
    }

    /// At most this many intervals (each histogram is ~25 KB): later answers go into the last one.
    public static let maxIntervals = 10_000

    private let state = Mutex(State())
    /// The length of the intervals the report breaks the latency into (nil: none).
    public let interval: Duration?

    public init(interval: Duration? = nil) {
        self.interval = interval.flatMap { $0 > .zero ? $0 : nil }
    }

    /// The timed run begins, for `duration` if given: answers from now on are also counted in
    /// their interval.
    public func begin(at start: ContinuousClock.Instant, duration: Duration? = nil) {
        state.withLock { s in
            s.runStart = start
            s.runLength = duration
            if let interval, let duration, duration > .zero {
                s.lastInterval = min(Int((duration / interval).rounded(.up)), Self.maxIntervals) - 1
            }
        }
    }

    /// Records `micros` in the histogram of the interval `instant` falls in, and counts it there
    /// if it was an answer. Called with the lock held.
    private func recordInInterval(_ s: inout State, _ micros: UInt64, at instant: ContinuousClock.Instant, answered: Bool) {
        guard let interval, let start = s.runStart, instant >= start else { return }
        let index = min(Int((instant - start) / interval), s.lastInterval)
        while s.intervals.count <= index {
            s.intervals.append(Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 600_000_000,
                                                 numberOfSignificantValueDigits: .two))
            s.intervalAnswers.append(0)
        }
        _ = s.intervals[index].record(micros)
        if answered { s.intervalAnswers[index] += 1 }
    }

    /// A payment case was sent (counted once, even when a duplicate sends twice).
    public func sent(_ kind: CaseKind) {
        state.withLock { $0.kinds[kind.name, default: 0] += 1 }
    }

    /// An HTTP answer arrived `latency` after its intended send time.
    public func answered(_ answer: CheckedAnswer, latency: Duration, sendLag: Duration? = nil, label: @autoclosure () -> String,
                         at instant: ContinuousClock.Instant = .now) {
        state.withLock { s in
            s.answered += 1
            // Answers from several connections may be recorded out of order.
            s.lastAnswer = max(s.lastAnswer ?? instant, instant)
            let micros = Self.micros(latency)
            _ = s.latency.record(micros)
            recordInInterval(&s, micros, at: instant, answered: true)
            if let sendLag { _ = s.sendLag.record(Self.micros(sendLag)) }
            s.outcomes[answer.outcome, default: 0] += 1
            if let problem = answer.problem { Self.mismatch(&s, label() + ": " + problem) }
        }
    }

    /// A check outside a single answer failed (a duplicate authorized twice, say).
    public func mismatch(_ description: String) {
        state.withLock { Self.mismatch(&$0, description) }
    }

    /// No answer at all: the connection failed or the request timed out. `failedAfter` (from the
    /// intended send time to the failure) goes into the latency figures too, at the time it failed:
    /// left out, the requests a stalled server never answered (timed out at `--request-timeout`)
    /// would flatter its tail. Any of these fails the run anyway.
    public func transportError(_ description: String, failedAfter latency: Duration? = nil,
                               at instant: ContinuousClock.Instant = .now) {
        state.withLock { s in
            if let latency {
                let micros = Self.micros(latency)
                _ = s.latency.record(micros)
                recordInInterval(&s, micros, at: instant, answered: false)
            }
            s.transportErrors += 1
            s.outcomes["transport error", default: 0] += 1
            Self.mismatch(&s, description)
        }
    }

    private static func mismatch(_ s: inout State, _ description: String) {
        s.mismatches += 1
        if s.firstMismatches.count < listedMismatches { s.firstMismatches.append(description) }
    }

    /// Each interval's figures. Answers per second are over the interval's length, except for
    /// the last one, which may be cut short: over what is left of the run's duration, or without
    /// one, up to the last answer.
    private static func intervals(_ s: State, length: Duration, start: ContinuousClock.Instant) -> [Report.Interval] {
        s.intervals.enumerated().map { i, h in
            let from = length * i
            var span = length
            if i == s.intervals.count - 1 {
                let end = s.runLength ?? ((s.lastAnswer ?? start) - start)
                span = max(min(length, end - from), .milliseconds(1))
            }
            let answers = s.intervalAnswers[i]
            return Report.Interval(startSeconds: from.seconds, answered: answers,
                                   perSecond: Double(answers) / span.seconds, latencyMs: Report.Latency(h))
        }
    }

    static func micros(_ d: Duration) -> UInt64 { UInt64(max(1, min(d.nanoseconds / 1000, 600_000_000))) }

    /// For the progress line.
    public struct Progress: Sendable {
        public var answered: Int
        public var mismatches: Int
        public var p99Milliseconds: Double
    }

    public var progress: Progress {
        state.withLock { s in
            Progress(answered: s.answered, mismatches: s.mismatches,
                     p99Milliseconds: s.answered == 0 ? 0 : Double(s.latency.valueAtPercentile(99)) / 1000)
        }
    }

    /// The final report of a run that began at `start`.
    public func report(setup: Report.Setup, start: ContinuousClock.Instant, unsent: Int) -> Report {
        state.withLock { s in
            let elapsed = ((s.lastAnswer ?? start) - start).seconds
            return Report(setup: setup, elapsedSeconds: elapsed, answered: s.answered,
                          throughput: elapsed > 0 ? Double(s.answered) / elapsed : 0,
                          latencyMs: Report.Latency(s.latency),
                          sendLagMs: setup.mode == .open && s.sendLag.totalCount > 0 ? Report.Latency(s.sendLag) : nil,
                          outcomes: s.outcomes, kinds: s.kinds, mismatches: s.mismatches,
                          firstMismatches: s.firstMismatches, transportErrors: s.transportErrors, unsent: unsent,
                          intervals: interval.map { Self.intervals(s, length: $0, start: start) })
        }
    }
}
