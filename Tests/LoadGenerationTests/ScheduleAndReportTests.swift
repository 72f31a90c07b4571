import Foundation
@testable import LoadGeneration
import MakePayment
import Testing

@Suite struct OpenLoopScheduleTests {
    @Test func requestsAreEvenlySpacedFromTheStart() {
        let schedule = OpenLoopSchedule(rate: 1000)
        #expect(schedule.offset(of: 0) == .zero)
        #expect(schedule.offset(of: 1) == .milliseconds(1))
        #expect(schedule.offset(of: 1500) == .milliseconds(1500))
        #expect(OpenLoopSchedule(rate: 3).offset(of: 1) == .nanoseconds(333_333_333))
    }

    @Test func dueCountIncludesTheRequestDueExactlyNow() {
        let schedule = OpenLoopSchedule(rate: 1000)
        #expect(schedule.dueCount(at: .zero) == 1)
        #expect(schedule.dueCount(at: .microseconds(999)) == 1)
        #expect(schedule.dueCount(at: .milliseconds(1)) == 2)
        #expect(schedule.dueCount(at: .seconds(2)) == 2001)
        #expect(schedule.dueCount(at: .milliseconds(-1)) == 0)
    }

    @Test func aRunOfDurationSendsRateTimesDuration() {
        #expect(OpenLoopSchedule(rate: 1200).count(for: .seconds(300)) == 360_000)
        #expect(OpenLoopSchedule(rate: 0.5).count(for: .seconds(3)) == 2)
        // Every request counted is due strictly before the end of the run.
        let schedule = OpenLoopSchedule(rate: 7)
        let n = schedule.count(for: .seconds(2))
        #expect(schedule.offset(of: n - 1) < .seconds(2))
        #expect(schedule.offset(of: n) >= .seconds(2))
    }

    @Test func plannedPaymentsFollowCountDurationAndRate() throws {
        let mix = try Mix(parsing: "approved=1")
        let address = ServerAddress(host: "127.0.0.1", port: 8080)
        var open = LoadConfiguration(address: address, adminToken: "t", drive: .open(rate: 500, connections: 8), mix: mix)
        #expect(open.plannedPayments == 10_000)
        open.duration = .seconds(10)
        #expect(open.plannedPayments == 5_000)
        open.count = 2_000
        #expect(open.plannedPayments == 2_000)
        var closed = LoadConfiguration(address: address, adminToken: "t", drive: .closed(concurrency: 8), mix: mix)
        closed.duration = .seconds(2)
        #expect(closed.plannedPayments == 2 * closed.closedLoopBudgetPerSecond)
        // Given a count too, a closed loop prepares the count: it runs until the count is answered
        // or the duration ends, not until a budget smaller than the count runs out.
        closed.count = 3 * closed.closedLoopBudgetPerSecond
        #expect(closed.plannedPayments == 3 * closed.closedLoopBudgetPerSecond)
        #expect(closed.closedLoopBudgetPerSecond >= 5_000 * ProcessInfo.processInfo.activeProcessorCount)
    }

    @Test(arguments: [
        ("http://127.0.0.1:8080", ServerAddress(host: "127.0.0.1", port: 8080)),
        ("http://localhost:9/", ServerAddress(host: "localhost", port: 9)),
        ("http://worker", ServerAddress(host: "worker", port: 80)),
    ])
    func urlsParse(url: String, address: ServerAddress) {
        #expect(ServerAddress(url: url) == address)
    }

    @Test(arguments: ["https://127.0.0.1:8443", "127.0.0.1:8080", "http://:80", "http://h:0", "http://h:8080/x"])
    func unusableURLsAreRefused(url: String) {
        #expect(ServerAddress(url: url) == nil)
    }
}

@Suite struct ReportTests {
    static func sampleReport() -> Report {
        let recorder = Recorder()
        let start = ContinuousClock.now
        // 1000 answers at 1…1000 ms: percentiles are known to within the histogram's 3 digits.
        for ms in 1...1000 {
            recorder.sent(.approved)
            recorder.answered(CheckedAnswer(outcome: "200 OK", problem: nil), latency: .milliseconds(ms),
                              label: "p\(ms)", at: start + .milliseconds(2 * ms))
        }
        for i in 0..<12 {
            recorder.sent(.code("51"))
            recorder.answered(CheckedAnswer(outcome: "200 FAIL 82", problem: "expected 200 FAIL 89, got errorId 82"),
                              latency: .milliseconds(5), label: "m\(i) [51]", at: start + .milliseconds(100))
        }
        let setup = Report.Setup(mode: .closed, concurrency: 4, targetRate: nil, payments: 1012, mix: "approved=99,51=1",
                                 url: "http://127.0.0.1:8080")
        return recorder.report(setup: setup, start: start, unsent: 0)
    }

    @Test func percentilesThroughputAndOutcomesComeFromTheAnswers() {
        let report = Self.sampleReport()
        #expect(report.answered == 1012)
        #expect(abs(report.elapsedSeconds - 2.0) < 1e-9)
        #expect(abs(report.throughput - 506) < 1e-6)
        // The twelve 5 ms answers sit below the 1…1000 ms ones and move the median down six places.
        #expect(abs(report.latencyMs.p50 - 494) <= 1)
        #expect(abs(report.latencyMs.p99 - 990) <= 1)
        #expect(abs(report.latencyMs.max - 1000) <= 1)
        #expect(report.latencyMs.p50 <= report.latencyMs.p90 && report.latencyMs.p90 <= report.latencyMs.p99)
        #expect(report.outcomes == ["200 OK": 1000, "200 FAIL 82": 12])
        #expect(report.kinds == ["approved": 1000, "51": 12])
        #expect(report.sendLagMs == nil)
    }

    @Test func mismatchesAreCountedAndTheFirstFewListed() {
        let report = Self.sampleReport()
        #expect(report.mismatches == 12)
        #expect(report.firstMismatches.count == Recorder.listedMismatches)
        #expect(report.firstMismatches.first == "m0 [51]: expected 200 FAIL 89, got errorId 82")
        #expect(!report.passed)
        #expect(report.text.contains("… and 2 more"))
    }

    @Test func transportErrorsFailTheRun() {
        let recorder = Recorder()
        recorder.transportError("p1 [approved]: connection closed before the answer")
        let setup = Report.Setup(mode: .open, concurrency: 1, targetRate: 10, payments: 1, mix: "approved=1", url: "http://h:1")
        let report = recorder.report(setup: setup, start: .now, unsent: 0)
        #expect(report.transportErrors == 1 && report.mismatches == 1 && !report.passed)
        #expect(report.outcomes == ["transport error": 1])
    }

    /// A run in which nothing was answered checked nothing: it does not pass.
    @Test func aRunWithNoAnswerDoesNotPass() {
        let setup = Report.Setup(mode: .closed, concurrency: 1, targetRate: nil, payments: 0, mix: "approved=1", url: "http://h:1")
        let report = Recorder().report(setup: setup, start: .now, unsent: 0)
        #expect(report.mismatches == 0 && report.transportErrors == 0)
        #expect(!report.passed)
        #expect(report.text.contains("nothing was answered"))
    }

    /// The outcome shares are of every request that ended, answered or not: they add up to 100 %.
    @Test func outcomeSharesCountTheRequestsWithoutAnAnswer() {
        let recorder = Recorder()
        for i in 0..<3 { recorder.answered(CheckedAnswer(outcome: "200 OK", problem: nil), latency: .milliseconds(1), label: "p\(i)") }
        recorder.transportError("p3 [approved]: timed out")
        let setup = Report.Setup(mode: .closed, concurrency: 1, targetRate: nil, payments: 4, mix: "approved=1", url: "http://h:1")
        let text = recorder.report(setup: setup, start: .now, unsent: 0).text
        #expect(text.contains(" 75.00 %") && text.contains(" 25.00 %"), "\(text)")
    }

    /// A request that never got an answer counts in the latency figures, at the time it failed.
    @Test func aTimedOutRequestIsTheTailOfTheLatencies() {
        let recorder = Recorder()
        let start = ContinuousClock.now
        for i in 0..<99 {
            recorder.answered(CheckedAnswer(outcome: "200 OK", problem: nil), latency: .milliseconds(5), label: "p\(i) [approved]",
                              at: start + .milliseconds(10))
        }
        recorder.transportError("p99 [approved]: timed out", failedAfter: .seconds(30))
        let setup = Report.Setup(mode: .open, concurrency: 1, targetRate: 10, payments: 100, mix: "approved=1", url: "http://h:1")
        let report = recorder.report(setup: setup, start: start, unsent: 0)
        #expect(abs(report.latencyMs.max - 30_000) <= 30)
        #expect(report.latencyMs.p50 < 10)
    }

    /// An open loop measures from the intended send time, so a server fallen behind takes its
    /// latency past any request timeout: the histograms hold an hour (they stopped at 600 s, and a
    /// 20-minute backlog read as 600 s with no word of it), and longer ones are counted and shown.
    @Test func latenciesPastTheHistogramsAreCountedAndShown() {
        let recorder = Recorder()
        let start = ContinuousClock.now
        let ok = CheckedAnswer(outcome: "200 OK", problem: nil)
        recorder.answered(ok, latency: .seconds(1_200), label: "slow", at: start + .seconds(1))
        let setup = Report.Setup(mode: .open, concurrency: 1, targetRate: 10, payments: 2, mix: "approved=1", url: "http://h:1")
        var report = recorder.report(setup: setup, start: start, unsent: 0)
        #expect(report.latencyMs.max >= 1_199_000, "a 20-minute latency reads \(report.latencyMs.max) ms")
        #expect(report.latenciesBeyondRange == 0 && !report.text.contains("longer than the histograms hold"))
        // Counted once per request, though its send lag (part of its latency) is past the range too.
        recorder.answered(ok, latency: .seconds(7_200), sendLag: .seconds(7_100), label: "slower", at: start + .seconds(2))
        report = recorder.report(setup: setup, start: start, unsent: 0)
        #expect(report.latenciesBeyondRange == 1)
        #expect(report.text.contains("1 longer than the histograms hold"), "\(report.text)")
    }

    /// The run lasts until its last request ends, answered or not: requests that failed at the end
    /// (a server that stopped answering) took that time too. (It ended at the last answer, and such
    /// a run read as keeping the target rate.)
    @Test func theRunLastsUntilItsLastRequestEnds() {
        let recorder = Recorder()
        let start = ContinuousClock.now
        for i in 0..<10 {
            recorder.answered(CheckedAnswer(outcome: "200 OK", problem: nil), latency: .milliseconds(5), label: "p\(i)",
                              at: start + .milliseconds(100 * (i + 1)))
        }
        recorder.transportError("p10 [approved]: timed out", failedAfter: .seconds(15), at: start + .seconds(16))
        let setup = Report.Setup(mode: .open, concurrency: 1, targetRate: 10, payments: 11, mix: "approved=1", url: "http://h:1")
        // The read-back after the run (no latency: not a request of the timed run) does not stretch it.
        recorder.readBackFailed("p3 [approved]: GET /payments/p3 failed")
        let report = recorder.report(setup: setup, start: start, unsent: 0)
        #expect(abs(report.elapsedSeconds - 16) < 1e-6)
        #expect(abs(report.throughput - 10.0 / 16) < 1e-6)
        // Counted as a failure, but not in the mix of makePayment's answers.
        #expect(report.transportErrors == 2 && report.mismatches == 2)
        #expect(report.outcomes == ["200 OK": 10, "transport error": 1])
    }

    /// An open loop's send lag counts the requests that failed too: in a backlog the latest sends
    /// are the ones that time out, and left out they flattered the generator.
    @Test func theSendLagCountsTheRequestsThatFailed() {
        let recorder = Recorder()
        let start = ContinuousClock.now
        recorder.answered(CheckedAnswer(outcome: "200 OK", problem: nil), latency: .milliseconds(5), sendLag: .milliseconds(1), label: "p0",
                          at: start + .milliseconds(10))
        recorder.transportError("p1 [approved]: timed out", failedAfter: .seconds(15), sendLag: .seconds(9), at: start + .seconds(15))
        let setup = Report.Setup(mode: .open, concurrency: 1, targetRate: 10, payments: 2, mix: "approved=1", url: "http://h:1")
        let lag = recorder.report(setup: setup, start: start, unsent: 0).sendLagMs
        #expect(abs((lag?.max ?? 0) - 9_000) < 1)
    }

    /// The maximum is the longest latency recorded, not the top of its histogram bucket (up to
    /// 0.1 % more, 1 % in the intervals' histograms: an interval's max could exceed the run's).
    @Test func theMaximumIsTheLongestRecorded() {
        let recorder = Recorder(interval: .seconds(10))
        let start = ContinuousClock.now
        recorder.begin(at: start, duration: .seconds(10))
        recorder.answered(CheckedAnswer(outcome: "200 OK", problem: nil), latency: .microseconds(16_572_400), label: "p0",
                          at: start + .seconds(1))
        let setup = Report.Setup(mode: .open, concurrency: 1, targetRate: 10, payments: 1, mix: "approved=1", url: "http://h:1")
        let report = recorder.report(setup: setup, start: start, unsent: 0)
        #expect(report.latencyMs.max == 16_572.4)
        #expect(report.intervals?.first?.latencyMs.max == 16_572.4)
    }

    @Test func jsonHasTheReportsFieldsAndRoundTrips() throws {
        let report = Self.sampleReport()
        let data = try report.json()
        #expect(try JSONDecoder().decode(Report.self, from: data) == report)
        let object = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let latency = try #require(object["latencyMs"] as? [String: Any])
        #expect(Set(latency.keys) == ["p50", "p90", "p99", "p999", "max", "mean"])
        #expect(object["throughput"] as? Double == report.throughput)
        #expect(object["mismatches"] as? Int == 12)
        #expect((object["setup"] as? [String: Any])?["mode"] as? String == "closed")
    }
}

@Suite struct IntervalReportTests {
    static let ok = CheckedAnswer(outcome: "200 OK", problem: nil)
    static let setup = Report.Setup(mode: .open, concurrency: 1, targetRate: 10, payments: 1, mix: "approved=1", url: "http://h:1")

    /// Answers past the last interval the recorder keeps (`maxIntervals`) all go into it, and its
    /// rate is over all the time it covers (it was over one interval's length: 6 answers in 6 s
    /// read as 6/s).
    @Test(arguments: [nil, Duration.seconds(15)])
    func pastTheLimitTheLastIntervalTakesTheRestAtItsOwnRate(duration: Duration?) {
        let recorder = Recorder(interval: .seconds(1), intervalLimit: 10)
        let start = ContinuousClock.now
        recorder.begin(at: start, duration: duration)
        for t in 0..<15 { recorder.answered(Self.ok, latency: .milliseconds(1), label: "p\(t)", at: start + .seconds(t) + .milliseconds(500)) }
        let intervals = recorder.report(setup: Self.setup, start: start, unsent: 0).intervals ?? []
        #expect(intervals.count == 10)
        #expect(intervals.first?.perSecond == 1)
        // The last, from 9 s: the answers at 9.5 … 14.5 s, over the 5.5 s up to the last of them
        // (or the 6 s to the run's end at 15 s).
        #expect(intervals.last?.answered == 6)
        let span = duration == nil ? 5.5 : 6
        #expect(abs((intervals.last?.perSecond ?? 0) - 6 / span) < 1e-9, "\(String(describing: intervals.last))")
    }

    /// Answers land in the interval of the time they came, so a stall shows where it happened;
    /// those after the run's end count in the last one.
    @Test func theLatencyIsBrokenIntoIntervalsByTheTimeOfEachAnswer() {
        let recorder = Recorder(interval: .seconds(10))
        let start = ContinuousClock.now
        recorder.begin(at: start, duration: .seconds(30))
        // 0–10 s: 100 answers of 2 ms; 10–20 s: nothing; 20–30 s: 50 of 40 ms and one lost after
        // 30 s; after the end, one more answer (in flight when the run ended).
        for i in 0..<100 {
            recorder.answered(Self.ok, latency: .milliseconds(2), label: "a\(i)", at: start + .milliseconds(100 * i))
        }
        for i in 0..<50 {
            recorder.answered(Self.ok, latency: .milliseconds(40), label: "b\(i)", at: start + .seconds(20) + .milliseconds(100 * i))
        }
        recorder.transportError("c [approved]: timed out", failedAfter: .seconds(30), at: start + .seconds(29))
        recorder.answered(Self.ok, latency: .milliseconds(40), label: "d", at: start + .milliseconds(30_500))
        let report = recorder.report(setup: Self.setup, start: start, unsent: 0)
        let intervals = report.intervals ?? []
        #expect(intervals.map(\.startSeconds) == [0, 10, 20])
        // The lost request is in its interval's latency, not in its answers: the intervals' answers
        // add up to the run's.
        #expect(intervals.map(\.answered) == [100, 0, 51])
        // The last, from 20 s, is rated up to its last answer, half a second past the run's end.
        #expect(intervals.map(\.perSecond) == [10, 0, 51 / 10.5])
        #expect(intervals.map(\.answered).reduce(0, +) == report.answered)
        #expect(abs(intervals[0].latencyMs.max - 2) <= 0.05)
        #expect(abs(intervals[2].latencyMs.p50 - 40) <= 0.5)
        #expect(abs(intervals[2].latencyMs.max - 30_000) <= 300)
        #expect(report.text.contains("intervals"))
        // The whole run's figures are unchanged by the intervals.
        #expect(report.answered == 151 && abs(report.latencyMs.max - 30_000) <= 30)
    }

    /// Without a duration, the last interval's rate is over the part of it up to the last answer.
    @Test func aLastIntervalCutShortIsRatedOverWhatItLasted() {
        let recorder = Recorder(interval: .seconds(10))
        let start = ContinuousClock.now
        recorder.begin(at: start)
        for i in 0..<120 {
            recorder.answered(Self.ok, latency: .milliseconds(1), label: "a\(i)", at: start + .milliseconds(100 * (i + 1)))
        }
        let intervals = recorder.report(setup: Self.setup, start: start, unsent: 0).intervals ?? []
        #expect(intervals.map(\.answered) == [99, 21])
        #expect(intervals[0].perSecond == 9.9)
        #expect(abs(intervals[1].perSecond - 10.5) < 1e-9)
    }

    @Test func withoutAnIntervalTheReportHasNone() {
        let recorder = Recorder()
        let start = ContinuousClock.now
        recorder.begin(at: start)
        recorder.answered(Self.ok, latency: .milliseconds(2), label: "a", at: start)
        let report = recorder.report(setup: Self.setup, start: start, unsent: 0)
        #expect(report.intervals == nil)
        #expect(!report.text.contains("intervals"))
    }
}
