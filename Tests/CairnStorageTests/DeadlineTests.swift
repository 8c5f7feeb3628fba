import CairnStorage
import CairnTestSupport
import Synchronization
import Testing

/// A body that ignores cancellation: it returns only when the test releases it, as a driver
/// call waiting for a reply that never comes.
final class StuckBody: Sendable {
    private let state = Mutex<(continuation: CheckedContinuation<Void, Never>?, released: Bool)>((nil, false))
    /// Whether the body saw its task cancelled once released.
    let sawCancellation = Observed<Bool?>(nil)
    /// Set once the body is waiting.
    let waiting = Observed(false)

    /// Waits, ignoring cancellation, until ``release()``; then records whether it was cancelled.
    func run() async -> Int {
        await withCheckedContinuation { continuation in
            let releasedAlready = state.withLock { state -> Bool in
                if state.released { return true }
                state.continuation = continuation
                return false
            }
            if releasedAlready { continuation.resume() } else { waiting.update { $0 = true } }
        }
        let cancelled = Task.isCancelled
        sawCancellation.update { $0 = cancelled }
        return 7
    }

    /// Lets the body return.
    func release() {
        let continuation = state.withLock { state in
            state.released = true
            defer { state.continuation = nil }
            return state.continuation
        }
        continuation?.resume()
    }
}

@Suite("Deadlines that hold")
struct DeadlineTests {
    /// Failure bounds for the waits: a full parallel run on two cores can delay a new task by
    /// tens of seconds, and a passing test never sits through them.
    static let generous: Duration = .seconds(120)

    /// The deadline passes while the body ignores cancellation: the call throws
    /// `DeadlineExceeded` then, without waiting for the body, which is cancelled and finishes on
    /// its own later. (A task group waits for its children, so the caller would hang.) The
    /// deadline is real time: it is what is tested, and it is short.
    @Test func theDeadlineHoldsWhenTheBodyIgnoresCancellation() async throws {
        let body = StuckBody()
        let outcome = Observed<String?>(nil)
        let caller = Task {
            do {
                let value = try await withDeadline(.milliseconds(50)) { await body.run() }
                outcome.update { $0 = "returned \(value)" }
            } catch let error as DeadlineExceeded {
                outcome.update { $0 = "deadline \(error.limit)" }
            } catch {
                outcome.update { $0 = "threw \(error)" }
            }
        }
        defer { body.release() }
        let seen = try await outcome.wait("the call to give up at its deadline", timeout: Self.generous) { $0 != nil }
        #expect(seen == "deadline 0.05 seconds")
        await caller.value
        body.release()
        let cancelled = try await body.sawCancellation.wait("the left-behind body to finish", timeout: Self.generous) { $0 != nil }
        #expect(cancelled == true)
    }

    /// Cancelling the caller ends the call at once with `CancellationError`, even though the
    /// body ignores cancellation; the body is cancelled too.
    @Test func cancellingTheCallerDoesNotWaitForTheBody() async throws {
        let body = StuckBody()
        let outcome = Observed<String?>(nil)
        let caller = Task {
            do {
                _ = try await withDeadline(.seconds(3600)) { await body.run() }
                outcome.update { $0 = "returned" }
            } catch is CancellationError {
                outcome.update { $0 = "cancelled" }
            } catch {
                outcome.update { $0 = "threw \(error)" }
            }
        }
        defer { body.release() }
        try await body.waiting.wait("the body to start waiting", timeout: Self.generous) { $0 }
        caller.cancel()
        let seen = try await outcome.wait("the cancelled call to return", timeout: Self.generous) { $0 != nil }
        #expect(seen == "cancelled")
        body.release()
        #expect(try await body.sawCancellation.wait("the body to finish", timeout: Self.generous) { $0 != nil } == true)
    }

    /// A body that finishes in time: its value, or its error, reaches the caller unchanged.
    @Test func aBodyThatFinishesInTimeIsAnsweredAsIs() async throws {
        #expect(try await withDeadline(.seconds(3600)) { 42 } == 42)
        struct Refused: Error {}
        await #expect(throws: Refused.self) { try await withDeadline(.seconds(3600)) { () async throws -> Int in throw Refused() } }
    }
}
