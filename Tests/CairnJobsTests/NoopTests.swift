import CairnTestSupport
import Synchronization
import Testing

@testable import CairnJobs

@Suite("Jobs: the noop kind")
struct NoopTests {
    /// `noop` sleeps until deadlines counted from its start, so the time its checkpoints take
    /// is not added to its sleep (a fresh-user trial's `checkpointEvery: 1` slept about 9 times
    /// `sleepMs`). On a clock that moves only when slept on or written to, with every
    /// checkpoint write taking 50 ms, 300 ms in 100 ms slices end 300 ms after the start
    /// (plus the last write), not 450.
    @Test func noopSleepsToDeadlinesFromItsStartWhateverItsCheckpointsTake() async throws {
        let clock = SteppingClock()
        let written = Observed([Int]())
        try await Noop.sleep(Noop(sleepMs: 300, checkpointEvery: 100), resumedFrom: 0, clock: clock) { done in
            written.update { $0.append(done) }
            clock.advance(by: .milliseconds(50))
        }
        #expect(written.value == [100, 200, 300])
        #expect(clock.sleptUntil == [.milliseconds(100), .milliseconds(200), .milliseconds(300)])
        #expect(clock.now.offset == .milliseconds(350))
        // Resumed from a checkpoint: the rest only, from the new start.
        let resumed = SteppingClock()
        try await Noop.sleep(Noop(sleepMs: 300, checkpointEvery: 100), resumedFrom: 200, clock: resumed) { _ in }
        #expect(resumed.sleptUntil == [.milliseconds(100)])
    }
}

/// A clock that moves only when something sleeps on it (to the deadline, at once) or the test
/// advances it; it records the deadlines slept until, as offsets from its start.
final class SteppingClock: Clock, Sendable {
    struct Instant: InstantProtocol {
        var offset: Duration
        func advanced(by duration: Duration) -> Instant { Instant(offset: offset + duration) }
        func duration(to other: Instant) -> Duration { other.offset - offset }
        static func < (a: Instant, b: Instant) -> Bool { a.offset < b.offset }
    }

    private let state = Mutex((now: Instant(offset: .zero), slept: [Duration]()))

    var now: Instant { state.withLock { $0.now } }
    var minimumResolution: Duration { .zero }
    /// The deadlines slept until, in order.
    var sleptUntil: [Duration] { state.withLock { $0.slept } }

    func sleep(until deadline: Instant, tolerance: Duration?) async throws {
        state.withLock {
            $0.slept.append(deadline.offset)
            if $0.now < deadline { $0.now = deadline }
        }
    }

    func advance(by duration: Duration) {
        state.withLock { $0.now = $0.now.advanced(by: duration) }
    }
}
