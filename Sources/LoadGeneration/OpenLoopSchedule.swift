/// When each request of an open-loop run is meant to be sent: request `i` at `i / rate` seconds
/// after the start. Latency is measured from that intended time, not from when a connection was
/// free to send it, so a server that stalls pays for every request it held back (no coordinated
/// omission): the generator does not politely wait and then time only the lucky ones.
public struct OpenLoopSchedule: Sendable, Equatable {
    /// Requests per second.
    public let rate: Double

    public init(rate: Double) {
        precondition(rate > 0 && rate.isFinite, "rate must be a positive number")
        self.rate = rate
    }

    /// Time from the start of the run to the intended send time of request `index`.
    public func offset(of index: Int) -> Duration {
        .nanoseconds(Int64((Double(index) * 1e9 / rate).rounded(.down)))
    }

    /// How many requests are due by `elapsed` (request 0 is due at once).
    public func dueCount(at elapsed: Duration) -> Int {
        guard elapsed >= .zero else { return 0 }
        return Int((elapsed.nanoseconds * rate / 1e9).rounded(.down)) + 1
    }

    /// How many requests a run of `duration` sends: those due strictly before its end.
    public func count(for duration: Duration) -> Int {
        Int((duration.nanoseconds * rate / 1e9).rounded(.up))
    }
}

extension Duration {
    /// The whole duration in nanoseconds, as a Double (exact up to 104 days).
    var nanoseconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) * 1e9 + Double(attoseconds / 1_000_000_000)
    }

    var seconds: Double { nanoseconds / 1e9 }
}
