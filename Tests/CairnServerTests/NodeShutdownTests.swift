import CairnTestSupport
import Logging
import ServiceLifecycle
import Synchronization
import Testing

@testable import CairnServer

/// A clock that stands still until the test moves it, with the sleeps waiting on it in view:
/// a test reads the deadline a service sleeps until instead of living through it.
private final class ManualClock: Clock {
    typealias Duration = Swift.Duration
    typealias Instant = ContinuousClock.Instant

    private struct State {
        var now = ContinuousClock.now
        var next = 0
        var sleepers: [Int: (deadline: Instant, continuation: CheckedContinuation<Void, any Error>)] = [:]
        var cancelled: Set<Int> = []
    }

    private let state = Mutex(State())
    /// The deadlines slept until now, in no order.
    let deadlines = Observed<[Instant]>([])

    var now: Instant { state.withLock { $0.now } }
    var minimumResolution: Duration { .zero }

    func sleep(until deadline: Instant, tolerance: Duration?) async throws {
        let id = state.withLock { state -> Int in
            state.next += 1
            return state.next
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let outcome = state.withLock { state -> Result<Void, any Error>? in
                    if state.cancelled.remove(id) != nil { return .failure(CancellationError()) }
                    if deadline <= state.now { return .success(()) }
                    state.sleepers[id] = (deadline, continuation)
                    return nil
                }
                if let outcome { continuation.resume(with: outcome) } else { publish() }
            }
        } onCancel: {
            let sleeper = state.withLock { state in
                let sleeper = state.sleepers.removeValue(forKey: id)
                if sleeper == nil { state.cancelled.insert(id) }
                return sleeper
            }
            sleeper?.continuation.resume(throwing: CancellationError())
            publish()
        }
    }

    /// Moves the clock forward by `duration`, waking the sleeps it reaches.
    func advance(by duration: Duration) {
        let woken = state.withLock { state in
            state.now += duration
            let due = state.sleepers.filter { $0.value.deadline <= state.now }
            for id in due.keys { state.sleepers.removeValue(forKey: id) }
            return due.values.map(\.continuation)
        }
        for continuation in woken { continuation.resume() }
        publish()
    }

    private func publish() {
        let current = state.withLock { $0.sleepers.values.map(\.deadline) }
        deadlines.update { $0 = current }
    }
}

/// A service that ignores graceful shutdown and ends only when cancelled (an exporter stuck on
/// a collector that does not answer).
private struct StuckService: Service {
    let cancelled: Observed<Bool>

    func run() async throws {
        await withTaskCancellationHandler {
            try? await Gate().wait()
        } onCancel: {
            cancelled.update { $0 = true }
        }
    }
}

@Suite("Node shutdown")
struct NodeShutdownTests {
    /// A fresh-user trial: the exporter's 5 s counted from its own turn to stop, after the HTTP
    /// drain, and a node with a hanging collector exited only at SIGKILL. The bound now counts
    /// from the signal: a turn 4 s after it leaves 1 s.
    @Test func theExportersBoundCountsFromTheSignal() async throws {
        let clock = ManualClock()
        let cancelled = Observed(false)
        let bounded = BoundedShutdown(StuckService(cancelled: cancelled), bound: .seconds(5), clock: clock)
        let group = ServiceGroup(configuration: .init(services: [bounded], logger: testLogger))
        async let ran: Void = group.run()
        let signal = clock.now
        bounded.startClock()
        clock.advance(by: .seconds(4))  // the HTTP drain
        await group.triggerGracefulShutdown()
        let deadlines = try await clock.deadlines.wait("the bound's sleep") { !$0.isEmpty }
        #expect(deadlines == [signal + .seconds(5)])
        clock.advance(by: .seconds(1))
        try await cancelled.wait("the exporter cancelled at the bound") { $0 }
        try await ran
    }

    /// A turn that comes after the bound has passed (a drain that took its full 25 s) still
    /// gets a moment to flush, not none.
    @Test func aLateTurnStillGetsAMomentToFlush() async throws {
        let clock = ManualClock()
        let cancelled = Observed(false)
        let bounded = BoundedShutdown(StuckService(cancelled: cancelled), bound: .seconds(5), minimum: .milliseconds(250), clock: clock)
        let group = ServiceGroup(configuration: .init(services: [bounded], logger: testLogger))
        async let ran: Void = group.run()
        bounded.startClock()
        clock.advance(by: .seconds(25))
        let turn = clock.now
        await group.triggerGracefulShutdown()
        let deadlines = try await clock.deadlines.wait("the bound's sleep") { !$0.isEmpty }
        #expect(deadlines == [turn + .milliseconds(250)])
        clock.advance(by: .milliseconds(250))
        try await cancelled.wait("the exporter cancelled after its moment") { $0 }
        try await ran
    }
}
