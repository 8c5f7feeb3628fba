import Synchronization

/// The limit of ``withDeadline(_:_:)`` passed before its body finished.
package struct DeadlineExceeded: Error, CustomStringConvertible {
    /// The limit that passed.
    package let limit: Duration

    /// Creates the error for `limit`.
    package init(limit: Duration) {
        self.limit = limit
    }

    /// "not within <limit>".
    package var description: String { "not within \(limit)" }
}

/// Runs `body`, and returns what it returns or throws what it throws, unless `limit` passes
/// first: then it throws ``DeadlineExceeded`` at once.
///
/// The deadline holds even when `body` ignores cancellation (a driver awaiting a reply that
/// never comes): `body` runs in a task of its own, which is cancelled when the deadline passes
/// or the caller is cancelled, and is left to finish on its own. A task group would wait for
/// its child before returning, so a stuck body would hold the caller past any deadline.
/// Cancelling the caller throws `CancellationError` at once, for the same reason.
/// - Throws: ``DeadlineExceeded`` at the deadline, `CancellationError` when the caller is
///   cancelled first, otherwise what `body` throws.
package func withDeadline<R: Sendable>(
    _ limit: Duration, _ body: @escaping @Sendable () async throws -> R
) async throws -> R {
    let race = DeadlineRace<R>()
    return try await withTaskCancellationHandler {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<R, any Error>) in
            // Runs before `work` and `timer` exist, so either of them may finish the race
            // before `track` hands them over; `track` then cancels them itself.
            race.begin(continuation)
            let work = Task {
                let result: Result<R, any Error>
                do { result = .success(try await body()) } catch { result = .failure(error) }
                race.finish(with: result)
            }
            let timer = Task {
                // The deadline itself: a real-time sleep, cancelled when `body` finishes first.
                try? await Task.sleep(for: limit)
                if !Task.isCancelled { race.finish(with: .failure(DeadlineExceeded(limit: limit))) }
            }
            race.track(work: work, timer: timer)
        }
    } onCancel: {
        race.finish(with: .failure(CancellationError()))
    }
}

/// The state of one ``withDeadline(_:_:)``: whichever of the body, the timer and the caller's
/// cancellation finishes first resumes the caller and cancels the other two tasks.
private final class DeadlineRace<R: Sendable>: Sendable {
    private struct State {
        var continuation: CheckedContinuation<R, any Error>?
        var work: Task<Void, Never>?
        var timer: Task<Void, Never>?
        /// The outcome, when it came before the continuation (the caller was already cancelled).
        var early: Result<R, any Error>?
        var done = false
    }
    private let state = Mutex(State())

    func begin(_ continuation: CheckedContinuation<R, any Error>) {
        let early = state.withLock { state -> Result<R, any Error>? in
            guard let early = state.early else {
                state.continuation = continuation
                return nil
            }
            return early
        }
        if let early { continuation.resume(with: early) }
    }

    func track(work: Task<Void, Never>, timer: Task<Void, Never>) {
        let finished = state.withLock { state -> Bool in
            state.work = work
            state.timer = timer
            return state.done
        }
        if finished {
            work.cancel()
            timer.cancel()
        }
    }

    func finish(with result: Result<R, any Error>) {
        let (continuation, work, timer) = state.withLock { state -> (CheckedContinuation<R, any Error>?, Task<Void, Never>?, Task<Void, Never>?) in
            guard !state.done else { return (nil, nil, nil) }
            state.done = true
            if state.continuation == nil { state.early = result }
            defer { state.continuation = nil }
            return (state.continuation, state.work, state.timer)
        }
        work?.cancel()
        timer?.cancel()
        continuation?.resume(with: result)
    }
}
