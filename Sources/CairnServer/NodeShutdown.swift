import Logging
import NIOCore
import ServiceLifecycle
import Synchronization

/// The connections a node's HTTP server holds open, so that a drain that outlasts its deadline
/// can close them.
package final class OpenConnections: Sendable {
    private let channels = Mutex<[ObjectIdentifier: any Channel]>([:])

    /// An empty set.
    package init() {}

    /// Tracks `channel` until it closes.
    func add(_ channel: any Channel) {
        let key = ObjectIdentifier(channel)
        channels.withLock { $0[key] = channel }
        channel.closeFuture.whenComplete { _ in
            _ = self.channels.withLock { $0.removeValue(forKey: key) }
        }
    }

    /// Closes every connection still open; returns how many there were.
    func closeAll() -> Int {
        let open = channels.withLock { Array($0.values) }
        for channel in open { channel.close(promise: nil) }
        return open.count
    }
}

/// Runs a node's application and bounds its HTTP server's drain: the connections still open
/// `limit` after shutdown began (``startClock()``, called when the signal arrives, or this
/// service's own graceful shutdown) are closed, with one log line. A request cut so sees its
/// body end short: an upload stores nothing (raw bodies are read against their
/// `Content-Length`, multipart ones up to their closing delimiter, tus appends keep what
/// arrived, as after any broken connection).
///
/// Not `ServiceGroupConfiguration.maximumGracefulShutdownDuration`: that cancels every service
/// of the group at once, the job worker and the database included, so the job status bridge
/// could no longer report what the workers finished before the database closes.
final class BoundedDrain<Application: Service>: Service {
    let application: Application
    let connections: OpenConnections
    let limit: Duration
    let logger: Logger
    private let started = Mutex<ContinuousClock.Instant?>(nil)
    private let starts: AsyncStream<Void>
    private let startsContinuation: AsyncStream<Void>.Continuation

    init(_ application: Application, connections: OpenConnections, limit: Duration, logger: Logger) {
        self.application = application
        self.connections = connections
        self.limit = limit
        self.logger = logger
        (starts, startsContinuation) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(1))
    }

    /// Starts the drain's clock now, if it has not started yet.
    func startClock() {
        let first = started.withLock { started -> Bool in
            guard started == nil else { return false }
            started = .now
            return true
        }
        if first {
            startsContinuation.yield()
            startsContinuation.finish()
        }
    }

    /// Runs the application until it ends; once shutdown began, closes the connections still
    /// open at the deadline.
    func run() async throws {
        try await withThrowingTaskGroup(of: Bool.self) { group in
            group.addTask {
                try await self.application.run()
                return true
            }
            group.addTask {
                await self.closeAtDeadline()
                return false
            }
            // The deadline's task ends first when it fired, the application's otherwise.
            while let applicationEnded = try await group.next() {
                if applicationEnded {
                    group.cancelAll()
                    return
                }
            }
        }
    }

    /// Waits for the clock to start and the deadline to pass (unless cancelled first), then
    /// closes what is still open.
    private func closeAtDeadline() async {
        await withGracefulShutdownHandler {
            for await _ in starts { break }
        } onGracefulShutdown: {
            self.startClock()
        }
        guard let start = started.withLock({ $0 }) else { return }
        try? await Task.sleep(until: start + limit, clock: .continuous)
        guard !Task.isCancelled else { return }
        let closed = connections.closeAll()
        guard closed > 0 else { return }
        logger.warning(
            "drain deadline passed: closing the connections still open (CAIRN_HTTP_DRAIN_TIMEOUT)",
            metadata: ["connections": .stringConvertible(closed), "drain_timeout_s": .stringConvertible(limit.components.seconds)])
    }
}

/// Starts, when the shutdown signal arrives, what must not wait for its turn in the service
/// group's reverse stop order: placed last, this service stops first, and its `action` starts
/// the job worker's grace and the HTTP drain's deadline clock (``runNode(components:services:)``).
struct ShutdownStart: Service {
    let action: @Sendable () -> Void

    func run() async throws {
        try? await gracefulShutdown()
        action()
    }
}
