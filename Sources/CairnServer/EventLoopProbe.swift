import Metrics
package import NIOCore
import NIOPosix
import ServiceLifecycle

/// Measures event-loop latency: every `interval`, schedules a task on each event loop of
/// `group` and records how long it waited to run, in `cairn_event_loop_lag_seconds`
/// (histogram, no labels). A loop blocked by CPU-bound work or a blocking call shows up as a
/// long wait; an idle loop answers in microseconds.
package struct EventLoopProbe: Service {
    /// The loops probed (the server's: NIO's shared group).
    let group: any EventLoopGroup
    /// The time between probes.
    let interval: Duration

    /// Creates a probe of `group` (NIO's shared group by default) every `interval`.
    package init(group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, interval: Duration = .seconds(1)) {
        self.group = group
        self.interval = interval
    }

    /// Probes until graceful shutdown.
    package func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                await probe()
                try? await Task.sleep(for: interval)
            }
        }
    }

    /// Probes every loop once, all at once, and returns when each has answered.
    /// - Parameter submitted: called once per loop right after its probe task is scheduled
    ///   (tests use it to hold a loop busy past that moment).
    package func probe(submitted: @escaping @Sendable () -> Void = {}) async {
        await withTaskGroup(of: Void.self) { tasks in
            for loop in group.makeIterator() {
                tasks.addTask {
                    let asked = ContinuousClock.now
                    let answered = loop.submit { ContinuousClock.now }
                    submitted()
                    guard let at = try? await answered.get() else { return }
                    let lag = (at - asked).components
                    Timer(label: "cairn_event_loop_lag_seconds", preferredDisplayUnit: .seconds)
                        .recordNanoseconds(lag.seconds * 1_000_000_000 + lag.attoseconds / 1_000_000_000)
                }
            }
        }
    }
}
