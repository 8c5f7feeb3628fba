import Logging
import NIOCore
import ServiceLifecycle
import Synchronization

/// The connections a node's HTTP server holds open, so that a drain that outlasts its deadline
/// can close them and cancel the tasks serving them.
package final class OpenConnections: Sendable {
    /// One open connection, and how to cancel the task serving it (once it is served).
    private struct Open {
        let channel: any Channel
        var cancel: (@Sendable () -> Void)?
    }

    private let state = Mutex<(open: [ObjectIdentifier: Open], closed: Bool)>(([:], false))

    /// An empty set.
    package init() {}

    /// Tracks `channel` until it closes.
    func add(_ channel: any Channel) {
        let key = ObjectIdentifier(channel)
        state.withLock { $0.open[key] = Open(channel: channel) }
        channel.closeFuture.whenComplete { _ in
            _ = self.state.withLock { $0.open.removeValue(forKey: key) }
        }
    }

    /// Runs `serve`, the handling of `channel`, in a child task that ``closeAll()`` cancels.
    ///
    /// Closing a connection alone does not end its handler: a request waiting on something
    /// other than the connection (a queued password hash, a database call) would go on, and
    /// hold the node's exit, long after its client was cut off. Cancelled, it stops waiting (a
    /// queued hash is dropped unrun) and answers no one.
    func serve(_ channel: any Channel, _ serve: @escaping @Sendable () async -> Void) async {
        let key = ObjectIdentifier(channel)
        let ended = Outcome()
        let closed = state.withLock { state -> Bool in
            state.open[key]?.cancel = { ended.settle(cancelled: true) }
            return state.closed
        }
        if closed { ended.settle(cancelled: true) }
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await serve()
                ended.settle(cancelled: false)
            }
            if await ended.value { group.cancelAll() }
        }
    }

    /// Closes every connection still open and cancels the tasks serving them (and any that
    /// starts later); returns how many connections there were.
    func closeAll() -> Int {
        let open = state.withLock { state in
            state.closed = true
            return Array(state.open.values)
        }
        for connection in open {
            connection.channel.close(promise: nil)
            connection.cancel?()
        }
        return open.count
    }
}

/// How a connection's serving ended, settled once: by its own end, or cancelled by the
/// drain's deadline. ``value`` waits for it.
private final class Outcome: Sendable {
    private let state = Mutex<(cancelled: Bool?, waiter: CheckedContinuation<Bool, Never>?)>((nil, nil))

    /// Settles the outcome, unless it is settled already.
    func settle(cancelled: Bool) {
        let waiter = state.withLock { state -> CheckedContinuation<Bool, Never>? in
            guard state.cancelled == nil else { return nil }
            state.cancelled = cancelled
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(returning: cancelled)
    }

    /// True when cancelled, false when the serving ended by itself. (Not cancellable: the
    /// serving task, cancelled with the caller's, settles it as it ends.)
    var value: Bool {
        get async {
            await withCheckedContinuation { continuation in
                let settled = state.withLock { state -> Bool? in
                    if state.cancelled == nil { state.waiter = continuation }
                    return state.cancelled
                }
                if let settled { continuation.resume(returning: settled) }
            }
        }
    }
}

/// Runs a node's application and bounds its HTTP server's drain: the connections still open
/// `limit` after shutdown began (``startClock()``, called when the signal arrives, or this
/// service's own graceful shutdown) are closed and the tasks serving them cancelled, with one
/// log line. A request cut so sees its body end short: an upload stores nothing (raw bodies
/// are read against their `Content-Length`, multipart ones up to their closing delimiter, tus
/// appends keep what arrived, as after any broken connection).
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
