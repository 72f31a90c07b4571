import Foundation
import Histogram

/// The result of a run: what `vipps-sim` prints at the end and writes with `--json`.
public struct Report: Codable, Sendable, Equatable {
    public enum Mode: String, Codable, Sendable { case closed, open }

    /// How the run was driven.
    public struct Setup: Codable, Sendable, Equatable {
        public var mode: Mode
        /// Closed loop: requests in flight. Open loop: connections.
        public var concurrency: Int
        /// Open loop: requests per second asked for.
        public var targetRate: Double?
        public var payments: Int
        public var mix: String
        public var url: String

        public init(mode: Mode, concurrency: Int, targetRate: Double?, payments: Int, mix: String, url: String) {
            self.mode = mode
            self.concurrency = concurrency
            self.targetRate = targetRate
            self.payments = payments
            self.mix = mix
            self.url = url
        }
    }

    /// Percentiles in milliseconds.
    public struct Latency: Codable, Sendable, Equatable {
        public var p50: Double
        public var p90: Double
        public var p99: Double
        public var p999: Double
        public var max: Double
        public var mean: Double

        public init(p50: Double, p90: Double, p99: Double, p999: Double, max: Double, mean: Double) {
            self.p50 = p50
            self.p90 = p90
            self.p99 = p99
            self.p999 = p999
            self.max = max
            self.mean = mean
        }

        /// From a histogram of microseconds.
        init(_ h: Histogram<UInt64>) {
            func ms(_ percentile: Double) -> Double { h.totalCount == 0 ? 0 : Double(h.valueAtPercentile(percentile)) / 1000 }
            self.init(p50: ms(50), p90: ms(90), p99: ms(99), p999: ms(99.9),
                      max: h.totalCount == 0 ? 0 : Double(h.maxRecorded) / 1000, mean: h.totalCount == 0 ? 0 : h.mean / 1000)
        }
    }

    /// One interval of the timed run: the answers that came in it and their latency. The last
    /// one also has the answers that came after the run's end, and its answers per second are
    /// over the part of it the run lasted.
    public struct Interval: Codable, Sendable, Equatable {
        /// Seconds from the start of the timed run.
        public var startSeconds: Double
        /// HTTP answers that came in the interval, and per second of it.
        public var answered: Int
        public var perSecond: Double
        /// Of every request that ended in the interval: answered, or failed (timed out, say).
        public var latencyMs: Latency
    }

    public var setup: Setup
    /// From the first intended send to the end of the last request (its answer, or its failure).
    public var elapsedSeconds: Double
    /// HTTP answers (a duplicate case has two).
    public var answered: Int
    /// Answers per second.
    public var throughput: Double
    public var latencyMs: Latency
    /// Open loop only: how late each request went out after its intended send time. That is the
    /// generator's own lateness (its timer, its share of the CPU) and also any wait for a free
    /// connection, which a slow server causes: large values are not the generator's alone. Either
    /// way the latency figures include it, as they must (no coordinated omission).
    public var sendLagMs: Latency?
    /// Answers by "HTTP status, status, errorId".
    public var outcomes: [String: Int]
    /// Cases sent, by kind.
    public var kinds: [String: Int]
    public var mismatches: Int
    public var firstMismatches: [String]
    public var transportErrors: Int
    /// Prepared payments not sent before `--duration` ran out.
    public var unsent: Int
    /// Requests whose latency (or send lag) was longer than the histograms hold
    /// (`Recorder.highestMicros`), recorded as that longest value: the tail figures are then lower bounds.
    public var latenciesBeyondRange: Int = 0
    /// CPU the generator itself used during the timed run, per answer (user and system, all its
    /// threads). On the worker's own cores, this is CPU the worker did not get.
    public var generatorCPUMicrosecondsPerAnswer: Double? = nil
    /// With `--interval`: the run in intervals of that length, so that a stall or a slow minute
    /// shows where it happened rather than only in the whole run's tail.
    public var intervals: [Interval]? = nil

    /// No mismatch, no request without an answer, and something answered (a run that checked
    /// nothing proves nothing).
    public var passed: Bool { mismatches == 0 && transportErrors == 0 && answered > 0 }

    public func json() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return try encoder.encode(self)
    }

    /// The human-readable report.
    public var text: String {
        func f(_ x: Double, _ digits: Int = 2) -> String { String(format: "%.\(digits)f", x) }
        var lines: [String] = []
        let target = setup.targetRate.map { ", target \(f($0, 0))/s" } ?? ""
        lines.append("vipps-sim: \(setup.mode.rawValue) loop, \(setup.concurrency) connections\(target), \(setup.url)")
        lines.append("  mix          \(setup.mix)")
        lines.append("  answered     \(answered) in \(f(elapsedSeconds)) s" + (unsent > 0 ? " (\(unsent) prepared payments not sent)" : ""))
        lines.append("  throughput   \(f(throughput, 1)) makePayment/s")
        let l = latencyMs
        lines.append("  latency ms   p50 \(f(l.p50, 3))  p90 \(f(l.p90, 3))  p99 \(f(l.p99, 3))  p99.9 \(f(l.p999, 3))  max \(f(l.max, 3))  mean \(f(l.mean, 3))")
        if latenciesBeyondRange > 0 {
            lines.append("               \(latenciesBeyondRange) longer than the histograms hold (\(Recorder.highestMicros / 3_600_000_000) h), counted as that: the tail figures are lower bounds")
        }
        if let cpu = generatorCPUMicrosecondsPerAnswer {
            lines.append("  generator    \(f(cpu, 0)) µs of CPU per answer")
        }
        if let s = sendLagMs {
            lines.append("  send lag ms  p50 \(f(s.p50, 3))  p99 \(f(s.p99, 3))  max \(f(s.max, 3))  (sent after the intended time: the generator's lateness or a wait for a free connection; included in latency)")
        }
        if let intervals, !intervals.isEmpty {
            lines.append("  intervals    from (s)   answers/s   p50 ms   p99 ms   max ms")
            let digits = intervals.contains { $0.startSeconds != $0.startSeconds.rounded() } ? 2 : 0
            for i in intervals {
                lines.append("               " + f(i.startSeconds, digits).leftPadded(8) + f(i.perSecond, 0).leftPadded(12)
                             + f(i.latencyMs.p50).leftPadded(9) + f(i.latencyMs.p99).leftPadded(9) + f(i.latencyMs.max).leftPadded(9))
            }
        }
        lines.append("  outcomes")
        // Shares of every request that ended: answered, or not (transport errors are an outcome too).
        let ended = outcomes.values.reduce(0, +)
        for (outcome, count) in outcomes.sorted(by: { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }) {
            let share = ended > 0 ? Double(count) * 100 / Double(ended) : 0
            lines.append("    \(outcome.padding(toLength: 22, withPad: " ", startingAt: 0)) \(String(count).leftPadded(8))  \(f(share, 2).leftPadded(6)) %")
        }
        lines.append("  kinds sent   " + kinds.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "))
        lines.append("  mismatches   \(mismatches)" + (transportErrors > 0 ? " (\(transportErrors) without an answer)" : ""))
        if answered == 0 { lines.append("    nothing was answered: the run checked nothing, and does not pass") }
        for m in firstMismatches { lines.append("    " + m) }
        if mismatches > firstMismatches.count { lines.append("    … and \(mismatches - firstMismatches.count) more") }
        return lines.joined(separator: "\n")
    }
}

extension String {
    fileprivate func leftPadded(_ width: Int) -> String {
        count >= width ? self : String(repeating: " ", count: width - count) + self
    }
}
