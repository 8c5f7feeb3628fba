import CairnFormats
import CairnHTTP
import CairnStorage
import Foundation
package import Logging
import Metrics
import ServiceLifecycle
import Synchronization
import Tracing

/// Runs jobs on this node: claims due jobs (woken by the EventBus, with a slow poll as a
/// fallback), renews their leases, stops cancelled ones, rescues lapsed leases of dead nodes,
/// cancels attempts that run past their time limit (``JobQueue/timeout(for:)``, on the queue's
/// clock), prunes old jobs, and on shutdown stops claiming, lets running handlers finish within the
/// grace period, and releases the rest for other nodes.
///
/// Shutdown starts at ``beginShutdown()`` (a node calls it when the signal arrives, so the
/// grace does not wait for the services a service group stops before this one, the HTTP
/// server's drain above all) or at this service's own graceful shutdown, whichever comes
/// first; ``run()`` returns once the handlers ended and their outcomes are written, and not
/// before its own graceful shutdown, keeping its place in the group's stop order.
package final class JobWorker: Service, Sendable {
    enum StopReason: Sendable {
        case cancelRequested, leaseLost, shutdown
        /// The attempt ran past its time limit.
        case timedOut(Duration)
    }

    struct Running: Sendable {
        let tenantId: String
        let task: Task<Void, any Error>
        /// The attempt's time limit and the instant of the queue's clock it ends at; nil for none.
        let limit: (timeout: Duration, deadline: ContinuousClock.Instant)?
    }

    struct State: Sendable {
        var running: [String: Running] = [:]
        var stopReasons: [String: StopReason] = [:]
        var draining = false
        /// Handlers that ended whose outcome is still being written; shutdown waits for them.
        var recording = 0
        /// A claim is under way that may still start jobs.
        var claiming = false
        /// The shutdown begun by ``beginShutdown()``: the grace, then the hand-back.
        var windDown: Task<Void, Never>?
        /// Where the next claim starts listing tenants with waiting jobs, when there are more
        /// than one claim lists (``JobWorker/tenantsPerClaim``): they take turns.
        var tenantCursor = ""
    }

    let queue: JobQueue
    let logger: Logger
    private let state = Mutex(State())
    private let wake = WakeSignal()
    private let completions: CompletionBatcher
    /// Jobs claimed since the table was last vacuumed (see `vacuumIfChurned`).
    private let claimedSinceVacuum = Atomic<Int>(0)

    /// Creates a worker for a queue.
    package init(queue: JobQueue, logger: Logger) {
        self.queue = queue
        self.logger = logger
        self.completions = CompletionBatcher(store: queue.store, node: queue.settings.nodeId, clock: queue.clock)
    }

    private var settings: JobsSettings { queue.settings }
    private var store: JobStore { queue.store }

    /// Runs until graceful shutdown (or cancellation), and until the shutdown begun then or
    /// earlier by ``beginShutdown()`` has handed back what still ran.
    package func run() async throws {
        let notifications = queue.bus.subscribe(channel: JobQueue.wakeChannel)
        await withGracefulShutdownHandler {
            await withTaskGroup(of: Void.self) { group in
                group.addTask { [wake] in
                    for await _ in notifications { wake.signal() }
                }
                group.addTask { await self.claimLoop() }
                group.addTask { await self.every(.seconds(Double(self.settings.leaseSeconds) / 3)) { try await self.renewLeases() } }
                group.addTask { await self.every(.milliseconds(500)) { try await self.stopCancelled() } }
                group.addTask { await self.every(Self.timeoutCheckInterval) { self.stopTimedOut() } }
                group.addTask { await self.every(self.settings.rescueInterval) { try await self.rescue() } }
                group.addTask { await self.every(.seconds(2)) { try await self.vacuumIfChurned() } }
                group.addTask {
                    await self.every(.seconds(3600)) {
                        _ = try await self.store.prune(before: self.queue.clock.milliseconds - Int64(self.settings.retentionSeconds) * 1000)
                        try await IdempotencyMiddleware.prune(database: self.store.database)
                    }
                }
                await self.waitUntilDrained()
                group.cancelAll()
            }
        } onGracefulShutdown: {
            self.beginShutdown()
        }
        // Cancelled rather than shut down: the running jobs are handed back all the same.
        beginShutdown()
        await state.withLock { $0.windDown }?.value
        // Begun at the signal, the shutdown may be over long before this service's turn to
        // stop; a service that ends before its turn makes the group cancel every other one.
        try? await gracefulShutdown()
    }

    /// Starts this worker's shutdown now, once: it stops claiming, and the jobs running get
    /// the grace period (`CAIRN_JOBS_SHUTDOWN_GRACE`) from this moment, then are cancelled and
    /// handed back for other nodes. Maintenance (lease renewal, rescue, pruning) stops too.
    /// ``run()`` waits for it to end; later calls do nothing.
    package func beginShutdown() {
        let first = state.withLock { state -> Bool in
            guard state.windDown == nil else { return false }
            state.draining = true
            // Its own task: the caller's may be cancelled (a sleep there returns at once), and
            // the hand-back's writes must go through.
            state.windDown = Task { await self.shutdown() }
            return true
        }
        if first { wake.signal() }
    }

    /// Returns once graceful shutdown began, or the worker's task was cancelled.
    private func waitUntilDrained() async {
        while !state.withLock({ $0.draining }) && !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(100))
        }
    }

    /// Repeats `body` every `interval` until cancelled; errors are logged, never fatal.
    private func every(_ interval: Duration, _ body: @Sendable () async throws -> Void) async {
        while !Task.isCancelled {
            try? await Task.sleep(for: interval)
            if Task.isCancelled { return }
            do { try await body() } catch {
                logger.warning("job maintenance failed", metadata: ["error": .string(String(describing: error).prefix(200).description)])
            }
        }
    }

    // MARK: Claiming

    private func claimLoop() async {
        while !Task.isCancelled {
            let (free, perTenant, draining) = state.withLock { state -> (Int, [String: Int], Bool) in
                var perTenant: [String: Int] = [:]
                for running in state.running.values { perTenant[running.tenantId, default: 0] += 1 }
                // Shutdown waits for a claim that began before it to start its jobs, so that it
                // hands those back too.
                state.claiming = !state.draining
                return (settings.concurrency - state.running.count, perTenant, state.draining)
            }
            if draining { return }
            var claimed: [Job] = []
            let claimStarted = DefaultTracerClock.now
            do {
                defer { state.withLock { $0.claiming = false } }
                if free > 0 {
                    do {
                        claimed = try await claimRound(free: free, running: perTenant)
                        claimed = try await enforceTenantCap(claimed)
                    } catch is CancellationError {
                        return
                    } catch {
                        logger.warning("claiming jobs failed", metadata: ["error": .string(String(describing: error).prefix(200).description)])
                    }
                    for job in claimed { start(job, claimStarted: claimStarted) }
                    claimedSinceVacuum.add(claimed.count, ordering: .relaxed)
                    // Announcing is best effort and must not hold up the next claim.
                    if !claimed.isEmpty { Task { [events = queue.events, ids = claimed.map(\.id)] in await events.announce(ids) } }
                }
            }
            // Something was claimed: go round at once to fill the remaining slots; otherwise
            // sleep until a notification, a finished job, or the poll interval.
            if !claimed.isEmpty { continue }
            await wake.wait(timeout: settings.pollInterval)
        }
    }

    /// Fills up to `free` slots fairly between tenants (``FairClaim``), `running` being this
    /// node's running jobs per tenant: first the tenants with due jobs are listed; when two or
    /// more are below their cap, one statement takes each one's share. When one is, its jobs
    /// are claimed in statements of at most `claimLimit` jobs each, up to `maxClaimsInFlight`
    /// of them at once (so claiming singly still keeps every slot busy).
    private func claimRound(free: Int, running: [String: Int]) async throws -> [Job] {
        let store = self.store
        let node = settings.nodeId
        let clock = queue.clock
        let leaseMs = Int64(settings.leaseSeconds) * 1000
        let cap = settings.maxRunningPerTenant
        let eligible = try await tenantsWithDueJobs(now: clock.milliseconds).filter {
            $0.priority != nil && running[$0.tenantId, default: 0] < cap
        }
        guard let only = eligible.first else { return [] }
        if eligible.count > 1 {
            let shares = FairClaim.shares(free: free, cap: cap, reserve: settings.reservedSlots, running: running, heads: eligible)
            return try await store.claim(node: node, shares: shares, now: clock.milliseconds, leaseMs: leaseMs)
        }
        // One tenant has due jobs: up to its cap, in batches; the tenants at their cap are left
        // out (any job of theirs that became due since is handed back by `enforceTenantCap`).
        let excluded = Set(running.filter { $0.value >= cap }.keys)
        let limit = settings.claimLimit
        var sizes: [Int] = []
        var left = FairClaim.slots(for: only.tenantId, free: free, cap: cap, reserve: settings.reservedSlots, running: running)
        guard left > 0 else { return [] }
        if running.contains(where: { $0.key != only.tenantId && $0.value > 0 }) {
            // Beside other tenants' jobs (where a slot may be a reserved one): this tenant's
            // jobs only, not another's that came due since the list was read.
            return try await store.claim(node: node, shares: [.init(tenantId: only.tenantId, count: left)], now: clock.milliseconds, leaseMs: leaseMs)
        }
        while left > 0 && sizes.count < Self.maxClaimsInFlight {
            sizes.append(min(limit, left))
            left -= limit
        }
        if sizes.count == 1 {
            return try await store.claim(
                node: node, limit: sizes[0], excludedTenants: excluded, queues: [], now: clock.milliseconds, leaseMs: leaseMs)
        }
        // A failed statement must not drop the jobs the others claimed: each reports alone.
        return await withTaskGroup(of: [Job].self) { [logger] group in
            for size in sizes {
                group.addTask {
                    do {
                        return try await store.claim(
                            node: node, limit: size, excludedTenants: excluded, queues: [], now: clock.milliseconds, leaseMs: leaseMs)
                    } catch {
                        logger.warning("claiming jobs failed", metadata: ["error": .string(String(describing: error).prefix(200).description)])
                        return []
                    }
                }
            }
            var all: [Job] = []
            for await jobs in group { all += jobs }
            return all
        }
    }

    /// Claim statements one round may run at once.
    static let maxClaimsInFlight = 8

    /// Tenants with waiting jobs one claim considers. With more, each claim lists the next ones
    /// in id order, so all take turns.
    static let tenantsPerClaim = 256

    /// The tenants with waiting jobs, up to ``tenantsPerClaim`` of them from where the last
    /// claim's list ended (wrapping round to the first), each with its most urgent due job.
    private func tenantsWithDueJobs(now: Int64) async throws -> [FairClaim.TenantHead] {
        let limit = Self.tenantsPerClaim
        let cursor = state.withLock { $0.tenantCursor }
        var heads = try await store.waitingTenants(after: cursor, limit: limit, now: now)
        var next = ""
        if heads.count == limit, let last = heads.last {
            next = last.tenantId
        } else if !cursor.isEmpty {
            heads += try await store.waitingTenants(after: "", limit: limit - heads.count, now: now).filter { $0.tenantId <= cursor }
        }
        state.withLock { $0.tenantCursor = next }
        return heads
    }

    /// A batch is claimed in priority order across tenants; any job that would take its tenant
    /// past `maxRunningPerTenant` on this node is handed straight back (no attempt consumed),
    /// which leaves the free slots to other tenants' jobs.
    private func enforceTenantCap(_ claimed: [Job]) async throws -> [Job] {
        var counts = state.withLock { state -> [String: Int] in
            var counts: [String: Int] = [:]
            for running in state.running.values { counts[running.tenantId, default: 0] += 1 }
            return counts
        }
        var kept: [Job] = []
        var extra: [String] = []
        for job in claimed {
            if counts[job.tenantId, default: 0] < settings.maxRunningPerTenant {
                counts[job.tenantId, default: 0] += 1
                kept.append(job)
            } else {
                extra.append(job.id)
            }
        }
        if !extra.isEmpty { try await store.release(ids: extra, node: settings.nodeId, now: queue.clock.milliseconds, abandoned: queue.abandonHook) }
        return kept
    }

    /// Runs one attempt of a claimed job. Its span (`job <kind>`, a consumer span) is a child of
    /// the span that enqueued the job, whichever node that was on; a `job claim` span under the
    /// same parent covers the claim that took it (from `claimStarted`).
    private func start(_ job: Job, claimStarted: DefaultTracerClock.Instant) {
        if let waited = job.attemptedAt.map({ $0 - job.runAt }), waited >= 0 {
            Timer(label: "cairn_jobs_wait_seconds", dimensions: [("kind", job.kind)]).recordMilliseconds(waited)
        }
        let node = settings.nodeId
        let store = self.store
        let context = JobContext(
            job: job, checkpoint: job.checkpoint.flatMap { JSONValue(text: $0) },
            save: { [events = queue.events] progress, checkpoint, result in
                guard try await store.save(id: job.id, node: node, progress: progress, checkpoint: checkpoint, result: result) else {
                    throw CancellationError()
                }
                await events.announce([job.id])
            })
        let registration = queue.registration(job.kind)
        // From the claim, on the queue's clock: the time the attempt is given starts as it does.
        let limit = queue.timeout(for: job).map { (timeout: $0, deadline: queue.clock.instant + $0) }
        let parent = TraceContext.context(from: job.traceContext)
        if TraceContext.isEnabled {
            let claim = startSpan("job claim \(job.kind)", context: parent, ofKind: .consumer, at: claimStarted)
            JobQueue.describe(claim, operation: "receive", queue: job.queue, kind: job.kind, tenantId: job.tenantId)
            claim.attributes["messaging.message.id"] = job.id
            claim.attributes["cairn.node_id"] = node
            claim.end()
        }
        // The handler runs in its own task, the one cancellation targets; the outcome is
        // recorded by another, which stays uncancelled so its database writes go through.
        let attemptContext = AttemptContext()
        let handler = Task<Void, any Error> {
            guard let registration else { throw PermanentJobError("no handler is registered for kind '\(job.kind)'") }
            try await TraceContext.withSpan("job \(job.kind)", context: parent, ofKind: .consumer) { span in
                attemptContext.keep(ServiceContext.current)
                JobQueue.describe(span, operation: "process", queue: job.queue, kind: job.kind, tenantId: job.tenantId)
                span.attributes["messaging.message.id"] = job.id
                span.attributes["cairn.job.attempt"] = job.attempt
                span.attributes["cairn.node_id"] = node
                try await registration.handler(context)
            }
        }
        state.withLock { state in
            state.running[job.id] = Running(tenantId: job.tenantId, task: handler, limit: limit)
        }
        Task {
            let startedAt = ContinuousClock.now
            var failure: (any Error)?
            do { try await handler.value } catch { failure = error }
            let reason = self.state.withLock { state -> StopReason? in
                state.running[job.id] = nil
                state.recording += 1
                return state.stopReasons.removeValue(forKey: job.id)
            }
            Timer(label: "cairn_jobs_run_seconds", dimensions: [("kind", job.kind)]).recordNanoseconds((ContinuousClock.now - startedAt).nanoseconds)
            do {
                if try await self.record(job, failure: failure, reason: reason, attempt: attemptContext.value) {
                    await self.queue.events.announce([job.id])
                }
            } catch {
                self.logger.warning(
                    "recording a job outcome failed; its lease will lapse and it will be retried", metadata: ["job_id": .string(job.id)])
            }
            self.state.withLock { $0.recording -= 1 }
            self.wake.signal()
        }
    }

    /// Writes a handler's outcome. Returns true when the change still has to be announced
    /// (batched completions announce their whole batch themselves). `attempt` is the context
    /// the handler ran in (its span's), which the outcome's log line is written in.
    private func record(_ job: Job, failure: (any Error)?, reason: StopReason?, attempt: ServiceContext?) async throws -> Bool {
        let now = queue.clock.milliseconds
        let node = settings.nodeId
        var failure = failure
        switch reason {
        case .leaseLost:
            return false
        case .shutdown:
            if failure != nil {
                try await store.release(ids: [job.id], node: node, now: now, abandoned: queue.abandonHook)
                return true
            }
        case .cancelRequested:
            if failure != nil {
                _ = try await store.finish(id: job.id, node: node, state: .cancelled, now: now, abandoned: queue.abandonHook)
                Counter(label: "cairn_jobs_finished_total", dimensions: [("kind", job.kind), ("state", "cancelled")]).increment()
                return true
            }
        case .timedOut(let limit):
            // Whatever the cancelled handler threw, the attempt failed by running too long; one
            // that finished all the same succeeded.
            if failure != nil {
                failure = JobTimedOut(limit: limit)
                ServiceContext.$current.withValue(attempt ?? ServiceContext.current) {
                    logger.warning(
                        "job attempt timed out",
                        metadata: [
                            "job_id": .string(job.id), "kind": .string(job.kind), "attempt": .stringConvertible(job.attempt),
                            "timeout": .string(SettingsReader.describe(limit)),
                        ])
                }
            }
        case nil:
            break
        }
        if let snooze = failure as? SnoozeJob {
            _ = try await store.snooze(
                id: job.id, node: node, claimedRunAt: job.runAt, until: now + snooze.milliseconds, now: now, abandoned: queue.abandonHook)
            return true
        }
        guard let failure else {
            Counter(label: "cairn_jobs_finished_total", dimensions: [("kind", job.kind), ("state", "succeeded")]).increment()
            if settings.batchCompletions {
                try await completions.complete(job.id, events: queue.events)
                return false
            }
            try await store.succeed(ids: [job.id], node: node, now: now)
            return true
        }
        let message = String(String(describing: failure).prefix(2000))
        var errors: [JSONValue] = []
        if case .array(let existing) = JSONValue(text: job.errors) ?? .array([]) { errors = existing }
        errors.append(
            .object(["at": .string(Timestamp.format(milliseconds: now)), "attempt": .number(Double(job.attempt)), "error": .string(message)]))
        let permanent = failure is PermanentJobError
        if permanent || job.attempt >= job.maxAttempts {
            _ = try await store.finish(
                id: job.id, node: node, state: .discarded, errors: JSONValue.array(errors).text, now: now, abandoned: queue.abandonHook)
            Counter(label: "cairn_jobs_finished_total", dimensions: [("kind", job.kind), ("state", "discarded")]).increment()
            // In the attempt's context, ended by now, so the line carries its trace and span ids as
            // the attempt's own lines do.
            ServiceContext.$current.withValue(attempt ?? ServiceContext.current) {
                logger.warning(
                    "job discarded", metadata: ["job_id": .string(job.id), "kind": .string(job.kind), "attempt": .stringConvertible(job.attempt)])
            }
        } else {
            let runAt = now + ((failure as? RetryJobLater)?.milliseconds ?? JobQueue.backoff(afterAttempt: job.attempt))
            _ = try await store.finish(id: job.id, node: node, state: .retryable, runAt: runAt, errors: JSONValue.array(errors).text, now: now)
            Counter(label: "cairn_jobs_finished_total", dimensions: [("kind", job.kind), ("state", "retryable")]).increment()
        }
        return true
    }

    // MARK: Leases, cancellation, rescue, queue depth

    private func renewLeases() async throws {
        let ids = state.withLock { Array($0.running.keys) }
        guard !ids.isEmpty else { return }
        let held = try await store.renew(ids: ids, node: settings.nodeId, until: queue.clock.milliseconds + Int64(settings.leaseSeconds) * 1000)
        for id in ids where !held.contains(id) { stop(id, reason: .leaseLost) }
    }

    private func stopCancelled() async throws {
        guard state.withLock({ !$0.running.isEmpty }) else { return }
        for id in try await store.cancelRequested(node: settings.nodeId) { stop(id, reason: .cancelRequested) }
    }

    /// How often running attempts are checked against their time limits: the queue's clock may be
    /// a test's, which moves without telling anyone, so it is read rather than slept on.
    static let timeoutCheckInterval: Duration = .milliseconds(250)

    /// Cancels every attempt past its deadline on the queue's clock; ``record(_:failure:reason:attempt:)``
    /// then fails it as timed out.
    private func stopTimedOut() {
        let now = queue.clock.instant
        let late = state.withLock { state in
            state.running.compactMap { id, running in running.limit.flatMap { now >= $0.deadline ? (id, $0.timeout) : nil } }
        }
        for (id, timeout) in late { stop(id, reason: .timedOut(timeout)) }
    }

    private func stop(_ id: String, reason: StopReason) {
        let task = state.withLock { state -> Task<Void, any Error>? in
            guard let running = state.running[id], state.stopReasons[id] == nil else { return nil }
            state.stopReasons[id] = reason
            return running.task
        }
        task?.cancel()
    }

    private func rescue() async throws {
        let counts = try await store.countsByState()
        for state in JobState.allCases {
            Gauge(label: "cairn_jobs", dimensions: [("state", state.rawValue)]).record(counts[state] ?? 0)
        }
        let rescued = try await store.rescue(now: queue.clock.milliseconds, abandoned: queue.abandonHook)
        if !rescued.isEmpty {
            await queue.events.announce(rescued.map(\.id))
            logger.info("rescued jobs whose lease lapsed", metadata: ["count": .stringConvertible(rescued.count)])
            wake.signal()
        }
        // After the rescue, so a failing lag query cannot hold rescues back.
        try await queue.sampleLag()
    }

    /// Every claim leaves a dead row version in the claim index; PostgreSQL's claim scans step
    /// over all of them until a VACUUM, so a busy queue slows down quadratically between
    /// autovacuum runs (a minute apart by default). After 2,000 claims this node vacuums the
    /// table, unless another node is already doing it.
    private func vacuumIfChurned() async throws {
        guard claimedSinceVacuum.load(ordering: .relaxed) >= 2000 else { return }
        claimedSinceVacuum.store(0, ordering: .relaxed)
        _ = try await store.database.vacuum(table: "jobs", lockKey: Self.vacuumLockKey)
    }

    /// The advisory lock that lets one node at a time vacuum `jobs` ("cairn-jobs-vacuum").
    static let vacuumLockKey: Int64 = 0x6A6F_6273_7661_6375

    // MARK: Shutdown

    private func shutdown() async {
        let start = ContinuousClock.now
        // The leases of the jobs still running are renewed through the grace and the
        // hand-back, as while running: a grace longer than a lease must not let another node
        // rescue a job that still runs here. (The maintenance loops stop when shutdown begins.)
        let renewal = Task {
            await self.every(.seconds(Double(self.settings.leaseSeconds) / 3)) { try await self.renewLeases() }
        }
        defer { renewal.cancel() }
        _ = await Self.wait(until: start + settings.shutdownGrace) { self.state.withLock { $0.running.isEmpty && !$0.claiming } }
        // A claim that began before the shutdown starts its jobs all the same: they go back too.
        _ = await Self.wait(until: ContinuousClock.now + settings.abandonAfter) { self.state.withLock { !$0.claiming } }
        let remaining = state.withLock { Array($0.running.keys) }
        for id in remaining { stop(id, reason: .shutdown) }
        // Outcomes being written still need the database, which closes after this returns. A
        // handler that ignores its cancellation is left behind after `abandonAfter`: its lease
        // lapses and another node rescues the job.
        let ended = await Self.wait(until: ContinuousClock.now + settings.abandonAfter) {
            self.state.withLock { $0.running.isEmpty && $0.recording == 0 }
        }
        if !ended {
            logger.error("job handlers did not stop after cancellation; their leases will lapse")
        }
        if !remaining.isEmpty {
            logger.info("released running jobs for other nodes", metadata: ["count": .stringConvertible(remaining.count)])
        }
    }

    /// Waits until `done()` holds (true) or `deadline` passes (false), checking every 20 ms.
    ///
    /// The wait runs in a task of its own because shutdown often runs in a cancelled task, where
    /// `Task.sleep` returns at once: a loop there spins, and two spinning workers occupy the
    /// whole cooperative pool, so the handlers it waits for (and the process reaping they await)
    /// never run again.
    static func wait(until deadline: ContinuousClock.Instant, _ done: @escaping @Sendable () -> Bool) async -> Bool {
        await Task {
            while !done() {
                if ContinuousClock.now >= deadline { return false }
                try? await Task.sleep(for: .milliseconds(20))
            }
            return true
        }.value
    }
}

/// A one-slot wake-up: `signal()` wakes the current waiter, or the next one to wait.
final class WakeSignal: Sendable {
    private let state = Mutex<(pending: Bool, waiter: CheckedContinuation<Void, Never>?)>((false, nil))

    func signal() {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            if let waiter = state.waiter {
                state.waiter = nil
                return waiter
            }
            state.pending = true
            return nil
        }
        waiter?.resume()
    }

    func wait(timeout: Duration) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                    let resumeNow = self.state.withLock { state -> Bool in
                        if state.pending {
                            state.pending = false
                            return true
                        }
                        if let previous = state.waiter { previous.resume() }
                        state.waiter = continuation
                        return false
                    }
                    if resumeNow { continuation.resume() }
                }
            }
            group.addTask {
                try? await Task.sleep(for: timeout)
                let waiter = self.state.withLock { state -> CheckedContinuation<Void, Never>? in
                    defer { state.waiter = nil }
                    return state.waiter
                }
                waiter?.resume()
            }
            await group.next()
            group.cancelAll()
        }
    }
}

extension Duration {
    var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}

/// Group commit for successful completions: the first job to finish writes alone; jobs that
/// finish while that write is in flight are written together by the next statement, and so
/// on. No timer adds latency, and a busy node writes one statement (and one announcement) per
/// batch instead of one per job — River's batch completer, without its fixed flush interval.
final class CompletionBatcher: Sendable {
    private struct State {
        var pending: [(id: String, done: CheckedContinuation<Void, any Error>)] = []
        var flushing = false
    }
    private let state = Mutex(State())
    private let store: JobStore
    private let node: String
    private let clock: any CairnClock

    init(store: JobStore, node: String, clock: any CairnClock) {
        self.store = store
        self.node = node
        self.clock = clock
    }

    /// Marks a job this node runs `succeeded`; returns once the write committed (and throws if
    /// it failed: the lease then lapses and the job runs again).
    func complete(_ id: String, events: JobEventHub) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let flush = state.withLock { state -> Bool in
                state.pending.append((id, continuation))
                if state.flushing { return false }
                state.flushing = true
                return true
            }
            // The caller that found no write in flight becomes the writer until the queue is empty.
            if flush { Task { await self.drain(events: events) } }
        }
    }

    private func drain(events: JobEventHub) async {
        while true {
            let batch = state.withLock { state -> [(id: String, done: CheckedContinuation<Void, any Error>)] in
                let batch = Array(state.pending.prefix(500))
                state.pending.removeFirst(batch.count)
                if batch.isEmpty { state.flushing = false }
                return batch
            }
            if batch.isEmpty { return }
            do {
                try await store.succeed(ids: batch.map(\.id), node: node, now: clock.milliseconds)
                for entry in batch { entry.done.resume() }
                Task { [ids = batch.map(\.id)] in await events.announce(ids) }
            } catch {
                for entry in batch { entry.done.resume(throwing: error) }
            }
        }
    }
}

/// The service context a job attempt's handler ran in (its span's, when tracing is on), kept
/// for the outcome recorded after the span ended.
private final class AttemptContext: Sendable {
    private let context = Mutex<ServiceContext?>(nil)

    /// Keeps `context`.
    func keep(_ context: ServiceContext?) { self.context.withLock { $0 = context } }

    /// The context kept, if any.
    var value: ServiceContext? { context.withLock { $0 } }
}
