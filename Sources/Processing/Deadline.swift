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
public func withDeadline<T: Sendable>(
    _ duration: Duration, _ operation: @escaping @Sendable () async throws -> T
) async -> DeadlineOutcome<T> {
    let race = DeadlineRace<T>()
    return await withCheckedContinuation { continuation in
        race.install(continuation)
        let work = Task {
            let result: DeadlineOutcome<T>
            do { result = .value(try await operation()) } catch { result = .failed(error) }
            race.finish(result)
        }
        let timer = Task {
            try? await Task.sleep(for: duration)
            guard !Task.isCancelled else { return }
            if race.finish(.timedOut) { work.cancel() }
        }
        race.setTimer(timer)
    }
}

/// Resumes the caller exactly once, with whichever of the work and the timer finishes first.
private final class DeadlineRace<T: Sendable>: Sendable {
    private struct State {
        var continuation: CheckedContinuation<DeadlineOutcome<T>, Never>?
        var finished = false
        var timer: Task<Void, Never>?
    }
    private let state = Mutex(State())

    func install(_ continuation: CheckedContinuation<DeadlineOutcome<T>, Never>) {
        state.withLock { $0.continuation = continuation }
    }
    func setTimer(_ task: Task<Void, Never>) {
        let cancelNow = state.withLock { s -> Bool in s.timer = task; return s.finished }
        if cancelNow { task.cancel() }
    }

    /// Resumes the caller if nobody has yet; true if this call did.
    @discardableResult
    func finish(_ outcome: DeadlineOutcome<T>) -> Bool {
        let (continuation, timer) = state.withLock { s -> (CheckedContinuation<DeadlineOutcome<T>, Never>?, Task<Void, Never>?) in
            guard !s.finished else { return (nil, nil) }
            s.finished = true
            defer { s.continuation = nil }
            return (s.continuation, s.timer)
        }
        guard let continuation else { return false }
        timer?.cancel()
        continuation.resume(returning: outcome)
        return true
    }
}
