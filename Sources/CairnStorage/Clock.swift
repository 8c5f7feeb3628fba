package import Foundation

/// Where Cairn reads the time of day, passed by init injection to whatever compares time with
/// stored deadlines: token expiry, job backoff, leases and schedules, quiet hours.
///
/// Production passes ``SystemClock``; tests pass a clock they move by hand, so a test of an
/// expiry or a backoff advances time instead of sleeping through it.
package protocol CairnClock: Sendable {
    /// The wall-clock time: what rows store and token expiry is compared with.
    var now: Date { get }
    /// A monotonic instant, for intervals that must not jump when the wall clock is set (cache
    /// ages, reload intervals). It moves together with ``now``.
    var instant: ContinuousClock.Instant { get }
}

extension CairnClock {
    /// ``now`` as Unix epoch milliseconds, the unit every table stores (rounded down, as
    /// ``WallClock/milliseconds()``).
    package var milliseconds: Int64 {
        Int64((now.timeIntervalSince1970 * 1000).rounded(.down))
    }
}

/// The machine's clocks: `Date()` and `ContinuousClock.now`.
package struct SystemClock: CairnClock {
    /// Creates the system clock.
    package init() {}

    /// `Date()`.
    package var now: Date { Date() }

    /// `ContinuousClock.now`.
    package var instant: ContinuousClock.Instant { .now }
}
