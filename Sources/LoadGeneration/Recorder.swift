import Histogram
import Synchronization

/// Everything a run measures, shared by its connections. One lock, taken once per answer: at the
/// few thousand answers a second a 2-core worker gives, it is never contended enough to matter.
public final class Recorder: Sendable {
    /// Mismatches listed by name in the report; the rest are only counted.
    public static let listedMismatches = 10

    struct State {
        /// Latency in microseconds, 1 µs to `highestMicros` at 3 significant digits.
        var latency = Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: Recorder.highestMicros,
                                        numberOfSignificantValueDigits: .three)
        /// Open loop: how late the generator itself sent, after the intended time.
        var sendLag = Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: Recorder.highestMicros,
                                        numberOfSignificantValueDigits: .three)
        /// Requests whose latency (or send lag) was longer than `highestMicros`, recorded as that:
        /// an open loop's backlog can grow without bound, and its figures must say when they were cut.
        var beyondRange = 0
        var answered = 0
        var outcomes: [String: Int] = [:]
        var kinds: [String: Int] = [:]
        var mismatches = 0
        var firstMismatches: [String] = []
        var transportErrors = 0
        /// When the last request ended, answered or not.
        var lastEnded: ContinuousClock.Instant?
        /// With an interval: when the timed run began, and a histogram per interval since, by the
        /// time each answer came (1 µs to `highestMicros` at 2 significant digits: ~30 KB each).
        var runStart: ContinuousClock.Instant?
        /// How long the timed run is meant to last (nil: until its payments are answered).
        var runLength: Duration?
        /// The last interval: answers after the run's end (those in flight when it ended, or a
        /// time-out that came later) are counted in it rather than in intervals of their own.
        var lastInterval: Int
        var intervals: [Histogram<UInt64>] = []
        /// Answers in each interval (its histogram also holds the requests that failed there).
        var intervalAnswers: [Int] = []
    }

    /// At most this many intervals (each histogram is ~30 KB): later answers go into the last one.
    public static let maxIntervals = 10_000
    /// The longest latency the histograms hold, in microseconds (an hour). An open loop measures
    /// from the intended send time, so a server that falls behind can take its latency past any
    /// request timeout; longer ones are recorded as this and counted (`Report.latenciesBeyondRange`).
    public static let highestMicros: UInt64 = 3_600_000_000

    private let state: Mutex<State>
    /// How many intervals at most (`maxIntervals`, fewer in tests).
    let intervalLimit: Int
    /// The length of the intervals the report breaks the latency into (nil: none).
    public let interval: Duration?

    public convenience init(interval: Duration? = nil) {
        self.init(interval: interval, intervalLimit: Self.maxIntervals)
    }

    init(interval: Duration?, intervalLimit: Int) {
        self.intervalLimit = max(1, intervalLimit)
        state = Mutex(State(lastInterval: self.intervalLimit - 1))
        self.interval = interval.flatMap { $0 > .zero ? $0 : nil }
    }

    /// The timed run begins, for `duration` if given: answers from now on are also counted in
    /// their interval.
    public func begin(at start: ContinuousClock.Instant, duration: Duration? = nil) {
        state.withLock { s in
            s.runStart = start
            s.runLength = duration
            if let interval, let duration, duration > .zero {
                s.lastInterval = min(Int((duration / interval).rounded(.up)), intervalLimit) - 1
            }
        }
    }

    /// Records `micros` in the histogram of the interval `instant` falls in, and counts it there
    /// if it was an answer. Called with the lock held.
    private func recordInInterval(_ s: inout State, _ micros: UInt64, at instant: ContinuousClock.Instant, answered: Bool) {
        guard let interval, let start = s.runStart, instant >= start else { return }
        let index = min(Int((instant - start) / interval), s.lastInterval)
        while s.intervals.count <= index {
            s.intervals.append(Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: Self.highestMicros,
                                                 numberOfSignificantValueDigits: .two))
            s.intervalAnswers.append(0)
        }
        _ = s.intervals[index].record(micros)
        if answered { s.intervalAnswers[index] += 1 }
    }

    /// A request of the timed run ended at `instant`, answered or not: its latency (from its intended
    /// send time) and send lag. Requests on several connections may end out of order.
    private func recordRequest(_ s: inout State, latency: Duration, sendLag: Duration?, at instant: ContinuousClock.Instant, answered: Bool) {
        s.lastEnded = max(s.lastEnded ?? instant, instant)
        // Counted once per request: its send lag is part of its latency.
        if Self.beyondRange(latency) || sendLag.map(Self.beyondRange) == true { s.beyondRange += 1 }
        let micros = Self.micros(latency)
        _ = s.latency.record(micros)
        recordInInterval(&s, micros, at: instant, answered: answered)
        // The most delayed sends are the ones that time out: left out, the lag would flatter the generator.
        if let sendLag { _ = s.sendLag.record(Self.micros(sendLag)) }
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
            recordRequest(&s, latency: latency, sendLag: sendLag, at: instant, answered: true)
            s.outcomes[answer.outcome, default: 0] += 1
            if let problem = answer.problem { Self.mismatch(&s, label() + ": " + problem) }
        }
    }

    /// What a connection calls when an answer arrives that no request was waiting for: a mismatch.
    public var unexpectedAnswerReport: @Sendable () -> Void {
        { [self] in mismatch("an answer arrived on a connection with no request waiting for it (answered twice?)") }
    }

    /// A check outside a single answer failed (a duplicate authorized twice, say).
    public func mismatch(_ description: String) {
        state.withLock { Self.mismatch(&$0, description) }
    }

    /// No answer at all: the connection failed or the request timed out. `failedAfter` (from the
    /// intended send time to the failure) goes into the latency figures too, at the time it failed:
    /// left out, the requests a stalled server never answered (timed out at `--request-timeout`)
    /// would flatter its tail. Any of these fails the run anyway.
    public func transportError(_ description: String, failedAfter latency: Duration? = nil, sendLag: Duration? = nil,
                               at instant: ContinuousClock.Instant = .now) {
        state.withLock { s in
            if let latency {
                // A request of the timed run (the read-back's failures after it have no latency).
                recordRequest(&s, latency: latency, sendLag: sendLag, at: instant, answered: false)
            } else if let sendLag {
                // The most delayed sends are the ones that time out: left out, the lag would flatter the generator.
                _ = s.sendLag.record(Self.micros(sendLag))
            }
            s.transportErrors += 1
            s.outcomes["transport error", default: 0] += 1
            Self.mismatch(&s, description)
        }
    }

    /// A read-back after the run (`GET /payments/{id}`) that got no answer: a transport error and
    /// a mismatch, but not in the outcome mix, which is of makePayment's answers.
    public func readBackFailed(_ description: String) {
        state.withLock { s in
            s.transportErrors += 1
            Self.mismatch(&s, description)
        }
    }

    private static func mismatch(_ s: inout State, _ description: String) {
        s.mismatches += 1
        if s.firstMismatches.count < listedMismatches { s.firstMismatches.append(description) }
    }

    /// Each interval's figures. Answers per second are over the interval's length, except for
    /// the last one: the run's last interval (`lastInterval`) takes every later answer, so its rate
    /// is over all the time it covers, to the last request's end or the run's, whichever is later
    /// (past `maxIntervals` that is more than one interval); one before it, where the answers
    /// stopped, is over what is left of the run up to one interval.
    private static func intervals(_ s: State, length: Duration, start: ContinuousClock.Instant) -> [Report.Interval] {
        s.intervals.enumerated().map { i, h in
            let from = length * i
            var span = length
            if i == s.intervals.count - 1 {
                // Answers after the run's end are in the last interval: its span runs to the last of them.
                let end = max(s.runLength ?? .zero, (s.lastEnded ?? start) - start)
                span = max(i == s.lastInterval ? end - from : min(length, end - from), .milliseconds(1))
            }
            let answers = s.intervalAnswers[i]
            return Report.Interval(startSeconds: from.seconds, answered: answers,
                                   perSecond: Double(answers) / span.seconds, latencyMs: Report.Latency(h))
        }
    }

    static func micros(_ d: Duration) -> UInt64 { UInt64(max(1, min(d.nanoseconds / 1000, Double(highestMicros)))) }

    /// Longer than the histograms hold.
    static func beyondRange(_ d: Duration) -> Bool { d.nanoseconds / 1000 > Double(highestMicros) }

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
            // To the last request's end, answered or not: requests that failed at the end took that time too.
            let elapsed = ((s.lastEnded ?? start) - start).seconds
            return Report(setup: setup, elapsedSeconds: elapsed, answered: s.answered,
                          throughput: elapsed > 0 ? Double(s.answered) / elapsed : 0,
                          latencyMs: Report.Latency(s.latency),
                          sendLagMs: setup.mode == .open && s.sendLag.totalCount > 0 ? Report.Latency(s.sendLag) : nil,
                          outcomes: s.outcomes, kinds: s.kinds, mismatches: s.mismatches,
                          firstMismatches: s.firstMismatches, transportErrors: s.transportErrors, unsent: unsent,
                          latenciesBeyondRange: s.beyondRange,
                          intervals: interval.map { Self.intervals(s, length: $0, start: start) })
        }
    }
}
