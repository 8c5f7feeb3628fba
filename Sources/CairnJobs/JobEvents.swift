import CairnHTTP
import CairnStorage
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import ServiceLifecycle
import Synchronization

/// Fans job-change notifications out to this node's event streams. One EventBus subscription
/// per node (one LISTEN connection on PostgreSQL), however many clients watch; each watcher
/// gets a wake-up and re-reads its job.
package final class JobEventHub: Sendable {
    /// The EventBus channel carrying ids of changed jobs, comma-separated.
    static let channel = "cairn_job_events"

    private struct State {
        var watchers: [UInt64: (jobId: String, signal: WakeSignal)] = [:]
        var subscription: Task<Void, Never>?
        var nextId: UInt64 = 0
    }
    private let bus: EventBus
    private let state = Mutex(State())

    init(bus: EventBus) {
        self.bus = bus
    }

    /// Announces that jobs changed (best effort: watchers also poll).
    func announce(_ ids: [String]) async {
        guard !ids.isEmpty else { return }
        var start = 0
        while start < ids.count {  // PostgreSQL caps a payload at 8000 bytes: 100 ids ≈ 3.7 KB
            let end = min(start + 100, ids.count)
            try? await bus.publish(channel: Self.channel, payload: ids[start..<end].joined(separator: ","))
            start = end
        }
    }

    /// Ids of changed jobs as they are announced on any node (state changes, progress,
    /// checkpoints), until the consuming task is cancelled. At most once and best effort: for
    /// modules that turn job changes into something else (job status notifications).
    ///
    /// `onListening` runs each time the subscription starts receiving (see
    /// `EventBus.subscribe(channel:onListening:)`): a consumer that must not miss a change
    /// re-reads the jobs it follows then.
    package func changes(onListening: (@Sendable () -> Void)? = nil) -> AsyncStream<[String]> {
        let source = bus.subscribe(channel: Self.channel, onListening: onListening)
        return AsyncStream { continuation in
            let task = Task {
                for await payload in source { continuation.yield(payload.split(separator: ",").map(String.init)) }
                continuation.finish()
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    /// Starts watching a job; returns the watcher id and its wake-up signal.
    func watch(jobId: String) -> (UInt64, WakeSignal) {
        let signal = WakeSignal()
        let (id, needsSubscription) = state.withLock { state -> (UInt64, Bool) in
            state.nextId += 1
            state.watchers[state.nextId] = (jobId, signal)
            return (state.nextId, state.subscription == nil)
        }
        if needsSubscription {
            let stream = bus.subscribe(channel: Self.channel)
            let task = Task { [weak self] in
                for await payload in stream {
                    guard let self else { return }
                    let ids = Set(payload.split(separator: ",").map(String.init))
                    let signals = self.state.withLock { state in state.watchers.values.filter { ids.contains($0.jobId) }.map(\.signal) }
                    for signal in signals { signal.signal() }
                }
            }
            state.withLock { state in
                if state.subscription == nil { state.subscription = task } else { task.cancel() }
            }
        }
        return (id, signal)
    }

    /// Stops watching.
    func unwatch(_ id: UInt64) {
        _ = state.withLock { $0.watchers.removeValue(forKey: id) }
    }
}

extension JobsController {
    /// `GET /jobs/{id}/events`: Server-Sent Events (WHATWG HTML §9.2) of a job's changes. The
    /// first event is the current state; each event's `id` is the job's version, so a client
    /// reconnecting with `Last-Event-ID` only gets what changed since (an id past the job's
    /// version gets the current state, as if absent; one that is no such id is 400
    /// `invalid_input` on `Last-Event-ID`). A comment line every
    /// 15 s keeps proxies from closing an idle stream; the stream ends after the final state,
    /// on server shutdown, when the access token expires, and within ``credentialCheckInterval``
    /// of its session's logout (or any other revocation of the credential), as notification
    /// streams do.
    @Sendable func events(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        let id = try context.parameters.require("id")
        let lastEventId = try Self.lastEventId(request.headers[HTTPField.Name("Last-Event-ID")!])
        let tenantId = context.identity.tenantId
        guard try await queue.store.job(id: id, tenantId: tenantId) != nil else { throw AppError.notFound("No such job.") }
        return Response(
            status: .ok,
            headers: [.contentType: "text/event-stream", .cacheControl: "no-cache", HTTPField.Name("X-Accel-Buffering")!: "no"],
            body: eventStream(jobId: id, tenantId: tenantId, after: lastEventId, credential: context.credential))
    }

    /// A job stream's `Last-Event-ID`: a version the stream sent (0 or more), 0 when absent.
    /// Anything else is refused rather than read as 0 (which replays the current state as if
    /// nothing had been seen), as `GET /notifications/stream` refuses it.
    /// - Throws: 400 `invalid_input` on `Last-Event-ID`.
    static func lastEventId(_ header: String?) throws -> Int {
        guard let header else { return 0 }
        guard let value = Int(header.trimmingCharacters(in: .whitespaces)), value >= 0 else {
            throw AppError.invalidField("Last-Event-ID", "must be an event id this stream sent (an integer, 0 or more)")
        }
        return value
    }

    /// A job's state as one server-sent event: `id` is its version, `event: job`, the job as data.
    static func event(_ job: Job) -> ByteBuffer {
        var json = JSONWriter()
        job.writeJSON(to: &json)
        var event = ByteBuffer(string: "id: \(job.version)\nevent: job\ndata: ")
        event.writeImmutableBuffer(json.buffer)
        event.writeString("\n\n")
        return event
    }

    /// How often a job's event stream re-checks the caller's credential (revocations).
    static let credentialCheckInterval: Duration = .seconds(2)

    /// The events of job `id` after version `lastEventId`, until its final state, shutdown,
    /// or the end of `credential` (its expiry on the queue's clock, or its revocation).
    func eventStream(jobId id: String, tenantId: String, after lastEventId: Int, credential: CredentialCheck?) -> ResponseBody {
        let store = queue.store
        let hub = queue.events
        let clock = queue.clock
        return ResponseBody { writer in
            let (watcher, signal) = hub.watch(jobId: id)
            defer { hub.unwatch(watcher) }
            try await writer.write(ByteBuffer(string: "retry: 2000\n\n"))
            var sent = lastEventId
            var lastWrite = ContinuousClock.now
            var lastCredentialCheck = ContinuousClock.now
            let stopping = Atomic<Bool>(false)
            try await withGracefulShutdownHandler {
                while !Task.isCancelled && !stopping.load(ordering: .relaxed) {
                    // The stream outlives the request's authentication: like a notification
                    // stream it ends when the token expires or its session is revoked.
                    if let credential {
                        if let expiresAt = credential.expiresAtMs, clock.milliseconds >= expiresAt { break }
                        if ContinuousClock.now - lastCredentialCheck >= Self.credentialCheckInterval {
                            lastCredentialCheck = .now
                            guard try await credential.isStillValid() else { break }
                        }
                    }
                    guard let job = try await store.job(id: id, tenantId: tenantId) else { break }
                    // A Last-Event-ID past the job's version names no state it ever had (a stale
                    // id, a restored database): start from the present, as notification streams
                    // do, or the client would never learn the job's state.
                    if sent > job.version { sent = 0 }
                    if job.version > sent {
                        try await writer.write(Self.event(job))
                        sent = job.version
                        lastWrite = .now
                    }
                    if job.state.isFinal { break }
                    if ContinuousClock.now - lastWrite >= .seconds(15) {
                        try await writer.write(ByteBuffer(string: ": heartbeat\n\n"))
                        lastWrite = .now
                    }
                    await signal.wait(timeout: .seconds(1))
                }
            } onGracefulShutdown: {
                stopping.store(true, ordering: .relaxed)
                signal.signal()
            }
            try await writer.finish(nil)
        }
    }
}
