package import CairnStorage
import Foundation
import Synchronization

/// A circuit breaker for database reads (closed → open → half-open → closed).
///
/// Closed: calls pass; `failureThreshold` consecutive failures (errors or timeouts) open it.
/// Open: calls fail fast for `cooldown`, sparing a struggling database. Then half-open: one
/// probe call passes; its success closes the circuit, its failure opens it again.
package final class CircuitBreaker: Sendable {
    /// The breaker's state.
    package enum State: Int, Sendable {
        case closed = 0
        case open = 1
        case halfOpen = 2
    }

    /// A call refused while the circuit is open; `retryAfter` is the time left, whole seconds ≥ 1.
    package struct OpenError: Error, Sendable {
        /// Seconds until a probe may be tried.
        package var retryAfter: Int
    }

    private struct Inner {
        var state: State = .closed
        var failures = 0
        var openUntil: ContinuousClock.Instant?
        var probeInFlight = false
        var trips = 0
    }

    private let inner = Mutex(Inner())
    let failureThreshold: Int
    let cooldown: Duration
    let clock: any CairnClock
    let onChange: @Sendable (_ from: State, _ to: State) -> Void

    /// Creates a closed breaker; `onChange` is told of every state change, from and to (for
    /// metrics and logs; `to == .open` is a trip). The cooldown is measured on `clock`'s monotonic instant.
    package init(
        failureThreshold: Int, cooldown: Duration, clock: any CairnClock = SystemClock(),
        onChange: @escaping @Sendable (_ from: State, _ to: State) -> Void = { _, _ in }
    ) {
        self.failureThreshold = max(1, failureThreshold)
        self.cooldown = cooldown
        self.clock = clock
        self.onChange = onChange
    }

    /// The current state.
    package var state: State { inner.withLock { $0.state } }

    /// Times the circuit has opened.
    package var trips: Int { inner.withLock { $0.trips } }

    /// Runs `body` through the breaker.
    /// - Throws: `OpenError` without calling `body` while open (or while a probe is out);
    ///   otherwise whatever `body` throws (counted as a failure, except cancellation).
    package func call<R: Sendable>(_ body: @Sendable () async throws -> R) async throws -> R {
        let now = clock.instant
        let (verdict, changed): (Result<Bool, OpenError>, State?) = inner.withLock { inner in
            switch inner.state {
            case .closed:
                return (.success(false), nil)
            case .open:
                if let openUntil = inner.openUntil, now < openUntil {
                    return (.failure(OpenError(retryAfter: Self.seconds(now.duration(to: openUntil)))), nil)
                }
                inner.state = .halfOpen
                inner.probeInFlight = true
                return (.success(true), .halfOpen)
            case .halfOpen:
                if inner.probeInFlight { return (.failure(OpenError(retryAfter: 1)), nil) }
                inner.probeInFlight = true
                return (.success(true), nil)
            }
        }
        if let changed { onChange(.open, changed) }
        let isProbe = try verdict.get()
        do {
            let result = try await body()
            succeeded(probe: isProbe)
            return result
        } catch is CancellationError {
            if isProbe { inner.withLock { $0.probeInFlight = false } }
            throw CancellationError()
        } catch {
            failed(probe: isProbe)
            throw error
        }
    }

    private func succeeded(probe: Bool) {
        let from = inner.withLock { inner -> State? in
            inner.failures = 0
            if probe { inner.probeInFlight = false }
            guard inner.state != .closed else { return nil }
            defer { inner.state = .closed }
            return inner.state
        }
        if let from { onChange(from, .closed) }
    }

    private func failed(probe: Bool) {
        let now = clock.instant
        let from = inner.withLock { inner -> State? in
            if probe { inner.probeInFlight = false }
            inner.failures += 1
            guard inner.state == .halfOpen || (inner.state == .closed && inner.failures >= failureThreshold) else { return nil }
            defer { inner.state = .open }
            inner.openUntil = now + cooldown
            inner.trips += 1
            return inner.state
        }
        if let from { onChange(from, .open) }
    }

    static func seconds(_ duration: Duration) -> Int {
        let (seconds, attoseconds) = duration.components
        return max(1, Int(seconds) + (attoseconds > 0 ? 1 : 0))
    }
}
