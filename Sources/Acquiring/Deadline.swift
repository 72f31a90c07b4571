import Synchronization

/// How an operation under a deadline ended.
public enum DeadlineOutcome<T: Sendable>: Sendable {
    case value(T)
    case failed(any Error)
    case timedOut
}

/// Runs `operation` and returns its result, or `.timedOut` as soon as `duration` has passed,
/// cancelling the operation. Unlike a task group it does not wait for an operation that ignores
/// cancellation: the caller gets its answer on time whatever the adapter does.
///
/// Cheap on the hot path: the operation starts at once on the caller's thread (`Task.immediate`),
/// so one that answers without suspending (the simulator) costs no hop; and the deadline is an
/// entry in one shared `DeadlineTimer`, not a sleeping task of its own per call.
///
/// `late` is given the value of an operation that ignored its cancellation and returned after
/// the deadline had answered for it: an acquirer's answer nobody waits for any more, which may
/// be an approval holding money. A value, kept in the race's own object: no allocation of its
/// own on the hot path, where it is almost never called.
public func withDeadline<T: Sendable, Late: LateValueHandler<T>>(
    _ duration: Duration, late: Late, _ operation: @escaping @Sendable () async throws -> T
) async -> DeadlineOutcome<T> {
    let race = DeadlineRace<T, Late>(late: late)
    let work = Task.immediate {
        let result: DeadlineOutcome<T>
        do { result = .value(try await operation()) } catch { result = .failed(error) }
        if !race.finish(result), case .value(let value) = result { race.late.late(value) }
    }
    // Answered without suspending: no timer, no suspension of the caller.
    if let early = race.early() { return early }
    return await withCheckedContinuation { continuation in
        race.install(continuation)
        race.arm(after: duration) { work.cancel() }
    }
}

/// `withDeadline` for an operation whose late value needs nothing done.
public func withDeadline<T: Sendable>(
    _ duration: Duration, _ operation: @escaping @Sendable () async throws -> T
) async -> DeadlineOutcome<T> {
    await withDeadline(duration, late: IgnoreLateValue<T>(), operation)
}

/// What `withDeadline` does with a value that came after its deadline.
public protocol LateValueHandler<Value>: Sendable {
    associatedtype Value
    func late(_ value: Value)
}

public struct IgnoreLateValue<Value>: LateValueHandler {
    public init() {}
    public func late(_ value: Value) {}
}

/// Resumes the caller exactly once, with whichever of the work and the timer finishes first.
private final class DeadlineRace<T: Sendable, Late: LateValueHandler<T>>: Sendable {
    let late: Late
    init(late: Late) { self.late = late }

    private struct State {
        var continuation: CheckedContinuation<DeadlineOutcome<T>, Never>?
        var finished = false
        var timer: DeadlineTimer.Ticket?
        /// The work's outcome when it finished before the caller waited.
        var early: DeadlineOutcome<T>?
    }
    private let state = Mutex(State())

    /// The outcome, if the work finished before anyone waited for it.
    func early() -> DeadlineOutcome<T>? {
        state.withLock { $0.early.take() }
    }

    /// Waits for the outcome; resumes at once if it came between `early()` and now.
    func install(_ continuation: CheckedContinuation<DeadlineOutcome<T>, Never>) {
        let now = state.withLock { s -> DeadlineOutcome<T>? in
            if let early = s.early.take() { return early }
            s.continuation = continuation
            return nil
        }
        if let now { continuation.resume(returning: now) }
    }

    /// Sets the deadline, unless the work has already finished (it often has, having run at once).
    func arm(after duration: Duration, onTimeout cancel: @escaping @Sendable () -> Void) {
        let timer = DeadlineTimer.shared
        guard !state.withLock({ $0.finished }) else { return }
        let ticket = timer.schedule(after: duration) { [self] in if self.finish(.timedOut) { cancel() } }
        let finishedMeanwhile = state.withLock { s -> Bool in
            if s.finished { return true }
            s.timer = ticket
            return false
        }
        if finishedMeanwhile { timer.cancel(ticket) }
    }

    /// Settles the outcome if nobody has yet (true if this call did): resumes the caller waiting,
    /// or keeps the outcome for it when it has not started waiting.
    @discardableResult
    func finish(_ outcome: DeadlineOutcome<T>) -> Bool {
        let (first, continuation, ticket) = state.withLock {
            s -> (Bool, CheckedContinuation<DeadlineOutcome<T>, Never>?, DeadlineTimer.Ticket?) in
            guard !s.finished else { return (false, nil, nil) }
            s.finished = true
            if s.continuation == nil { s.early = outcome }
            defer { s.continuation = nil; s.timer = nil }
            return (true, s.continuation, s.timer)
        }
        if let ticket { DeadlineTimer.shared.cancel(ticket) }
        continuation?.resume(returning: outcome)
        return first
    }
}

/// One ticking task for every deadline in the process: scheduling is a lock and a dictionary
/// insert, where a sleeping task per deadline would cost a task, a timer and a hop. It ticks
/// every `resolution` while any deadline is set, and not at all otherwise; a deadline fires at
/// most one `resolution` late.
final class DeadlineTimer: Sendable {
    static let shared = DeadlineTimer()

    struct Ticket: Sendable, Hashable { let id: UInt64 }
    private struct Entry { let deadline: ContinuousClock.Instant; let fire: @Sendable () -> Void }
    private struct State {
        var entries: [UInt64: Entry] = [:]
        var nextId: UInt64 = 0
        var ticking = false
    }
    private let state = Mutex(State())
    private let resolution: Duration

    init(resolution: Duration = .milliseconds(5)) { self.resolution = resolution }

    /// Runs `fire` once `duration` has passed, unless cancelled first.
    func schedule(after duration: Duration, _ fire: @escaping @Sendable () -> Void) -> Ticket {
        let deadline = ContinuousClock.now + duration
        let (ticket, startTicking) = state.withLock { s -> (Ticket, Bool) in
            s.nextId &+= 1
            s.entries[s.nextId] = Entry(deadline: deadline, fire: fire)
            defer { s.ticking = true }
            return (Ticket(id: s.nextId), !s.ticking)
        }
        if startTicking { Task.detached { await self.tick() } }
        return ticket
    }

    func cancel(_ ticket: Ticket) {
        _ = state.withLock { $0.entries.removeValue(forKey: ticket.id) }
    }

    private func tick() async {
        while true {
            try? await Task.sleep(for: resolution, tolerance: resolution / 2)
            let now = ContinuousClock.now
            let (due, more) = state.withLock { s -> ([Entry], Bool) in
                let dueIds = s.entries.compactMap { $0.value.deadline <= now ? $0.key : nil }
                let due = dueIds.compactMap { s.entries.removeValue(forKey: $0) }
                if s.entries.isEmpty { s.ticking = false }
                return (due, !s.entries.isEmpty)
            }
            due.forEach { $0.fire() }
            if !more { return }
        }
    }
}
