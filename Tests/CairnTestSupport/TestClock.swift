import CairnStorage
package import Foundation
import Synchronization

/// A clock that stands still until the test moves it: tests of expiry, backoff, leases,
/// schedules and quiet hours advance it instead of sleeping through real time.
///
/// Pass it to the test app (`withTestApp(…, clock:)`); every module of the node reads it.
package final class TestClock: CairnClock {
    private let state: Mutex<(now: Date, instant: ContinuousClock.Instant)>

    /// A clock reading `now` (the real time by default) until it is advanced.
    package init(now: Date = Date()) {
        state = Mutex((now, ContinuousClock.now))
    }

    /// The clock's wall time.
    package var now: Date { state.withLock { $0.now } }

    /// The clock's monotonic instant; it moves with ``now``.
    package var instant: ContinuousClock.Instant { state.withLock { $0.instant } }

    /// Moves the clock forward by `duration`.
    package func advance(by duration: Duration) {
        precondition(duration >= .zero, "a clock does not go back")
        let (seconds, attoseconds) = duration.components
        state.withLock {
            $0.now += Double(seconds) + Double(attoseconds) / 1e18
            $0.instant += duration
        }
    }

    /// Moves the clock forward to `date`, which must not be earlier than ``now``.
    package func advance(to date: Date) {
        let step = date.timeIntervalSince(now)
        advance(by: .milliseconds(Int64((step * 1000).rounded(.up))))
    }
}
