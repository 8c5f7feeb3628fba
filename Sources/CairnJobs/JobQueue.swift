package import CairnHTTP
package import CairnStorage
import Foundation
import Metrics
package import SQLKit
import Synchronization
package import Tracing

/// Settings of the job system (`CAIRN_JOBS_*`).
package struct JobsSettings: Sendable {
    /// Jobs run at once on this node (`CAIRN_JOBS_CONCURRENCY`, default 2 × cores; 0 makes an
    /// HTTP-only node that enqueues jobs for the others to run).
    package var concurrency = 2 * ProcessInfo.processInfo.activeProcessorCount
    /// Lease length in seconds (`CAIRN_JOBS_LEASE`, default 30); renewed every third of it.
    package var leaseSeconds = 30
    /// Running jobs per tenant on this node (default 2).
    package var maxRunningPerTenant = 2
    /// Free slots kept, while two or more tenants run jobs on this node, for a tenant running
    /// none (`CAIRN_JOBS_RESERVED_SLOTS`, default 1; see ``FairClaim``).
    package var reservedSlots = 1
    /// Waiting jobs per tenant before enqueue answers 429 (default 100,000).
    package var maxPendingPerTenant = 100_000
    /// The longest one attempt of a job may run on this node before it is cancelled and counted
    /// as failed (`CAIRN_JOBS_TIMEOUT`, default 30 min; nil, set as 0, for none), as River's
    /// `JobTimeout`: a kind may declare its own (``JobArguments/timeout``), and a job may ask
    /// for less (``JobRequest/timeoutMs``), never more.
    package var timeout: Duration? = .seconds(1800)
    /// Schedules one tenant may have, its pipelines' included (`CAIRN_JOBS_MAX_SCHEDULES_PER_TENANT`,
    /// default 100); past it, creating one answers 409.
    package var maxSchedulesPerTenant = 100
    /// Fallback poll interval when no notification arrives.
    package var pollInterval: Duration = .seconds(1)
    /// How long running handlers get to finish on shutdown before they are released.
    package var shutdownGrace: Duration = .seconds(10)
    /// How long shutdown then waits for cancelled handlers to end before it leaves those that
    /// ignore cancellation to their lapsing leases (default 30 s past the grace).
    package var abandonAfter: Duration = .seconds(30)
    /// Age after which succeeded and cancelled jobs are deleted (default 7 days).
    package var retentionSeconds = 7 * 86_400
    /// How often lapsed leases are looked for.
    package var rescueInterval: Duration = .seconds(5)
    /// This node's name in leases.
    package var nodeId = "node-" + UUIDv7.make()
    /// Most jobs one claim statement takes (`CAIRN_JOBS_CLAIM_LIMIT`, default 100); 1 claims
    /// singly.
    package var claimLimit = 100
    /// Write successful completions that arrive together as one statement (group commit, as
    /// River's batch completer; `CAIRN_JOBS_BATCH_COMPLETIONS`, default true).
    package var batchCompletions = true

    /// Creates the defaults.
    package init() {}
}

/// Where the schedules of a kind that another module owns are managed (``JobArguments/schedulesManagedBy``).
struct ScheduleOwnership: Sendable {
    /// Where to manage them, in words and paths.
    let place: String
    /// The resource owning a schedule with these arguments (`/pipelines/{id}`).
    let owner: @Sendable (JSONValue) -> String
}

/// How long one attempt of a kind's jobs may run before the worker cancels it
/// (``JobArguments/timeout``).
package enum JobTimeout: Sendable, Equatable {
    /// The node's limit, `CAIRN_JOBS_TIMEOUT` (``JobsSettings/timeout``).
    case node
    /// A limit of the kind's own, whatever the node's.
    case fixed(Duration)
    /// None: the kind bounds its own work (a pipeline run's sandbox limits).
    case unlimited
}

/// The failure of an attempt that ran past its time limit: recorded as `timed out after 30m`
/// (the limit as the settings write durations), then retried or discarded like any failure.
struct JobTimedOut: Error, CustomStringConvertible {
    /// The limit it ran past.
    let limit: Duration
    var description: String { "timed out after \(SettingsReader.describe(limit))" }
}

/// A handler that must not be retried: the job is discarded at once.
package struct PermanentJobError: Error, CustomStringConvertible {
    /// Why.
    package var message: String
    /// Creates the error.
    package init(_ message: String) { self.message = message }
    /// The message.
    package var description: String { message }
}

/// What a running handler gets besides its typed arguments: its job, the last checkpoint, and
/// ways to report.
package struct JobContext: Sendable {
    /// The job being run (state `running`, `attempt` already counts this attempt).
    package let job: Job
    /// The checkpoint saved by an earlier attempt, if any: resume from here.
    package let checkpoint: JSONValue?
    let save: @Sendable (_ progress: String?, _ checkpoint: String?, _ result: String?) async throws -> Void

    /// Stores a progress report (e.g. `{rowsDone, bytesDone, fraction}`).
    /// - Throws: `CancellationError` when the job's lease is lost; the database's error.
    package func reportProgress(_ progress: JSONValue) async throws {
        try await save(progress.text, nil, nil)
    }

    /// Stores a checkpoint; a later attempt (after a crash or a retry) receives it.
    /// - Throws: `CancellationError` when the job's lease is lost; the database's error.
    package func saveCheckpoint(_ checkpoint: JSONValue, progress: JSONValue? = nil) async throws {
        try await save(progress?.text, checkpoint.text, nil)
    }

    /// Stores the job's result (shown as `result` of the job), with a last progress report.
    /// A later attempt may replace it.
    /// - Throws: `CancellationError` when the job's lease is lost; the database's error.
    package func saveResult(_ result: JSONValue, progress: JSONValue? = nil) async throws {
        try await save(progress?.text, nil, result.text)
    }

    /// True once the job was cancelled, its lease lost, or the node is shutting down; the
    /// handler's task is cancelled too, so `Task.checkCancellation()` works as well.
    package var isCancelled: Bool { Task.isCancelled }
}

/// A job handler after its arguments were decoded: runs one attempt; throws to fail it (retried
/// with backoff), or throws `PermanentJobError` to discard it. Modules register typed handlers
/// with ``JobQueue/register(_:handler:)``.
typealias JobHandler = @Sendable (JobContext) async throws -> Void

/// What to enqueue: built from a kind's ``JobArguments`` (``init(_:)``), or, for jobs named
/// over HTTP and by schedules, from a kind name and a JSON object.
package struct JobRequest: Sendable {
    /// Handler name.
    package var kind: String
    /// Arguments, the JSON object stored as the job's `args`.
    package var args: JSONValue
    /// Queue name.
    package var queue = "default"
    /// 1 (most urgent) to 4.
    package var priority = 1
    /// Not before this time (epoch ms); now when nil.
    package var runAt: Int64?
    /// Deduplication key among the tenant's unfinished jobs of this kind.
    package var uniqueKey: String?
    /// Attempts before discarding.
    package var maxAttempts = 20
    /// The most milliseconds one attempt may run, when less than its kind's limit on the node
    /// (``JobsSettings/timeout``); nil for the kind's limit.
    package var timeoutMs: Int64?

    /// Creates a request from a kind's name and its arguments as JSON (`/jobs`, schedules);
    /// Swift producers use ``init(_:)`` with the kind's ``JobArguments``.
    package init(kind: String, args: JSONValue = .object([:])) {
        self.kind = kind
        self.args = args
    }
}

/// The job system's Swift API for other modules: register handlers, enqueue (alone or in the
/// caller's transaction), cancel, retry.
package final class JobQueue: Sendable {
    struct Registration: Sendable {
        let handler: JobHandler
        let enqueueableOverHTTP: Bool
        let adminOnly: Bool
        /// The kind's argument check (``JobArguments/issues(in:)``).
        let check: @Sendable (JSONValue) -> [FieldIssue]
        /// Runs in the transaction that cancels or discards a job of the kind, if the kind has one.
        let abandoned: (@Sendable (Job, any SQLDatabase) async throws -> Void)?
        /// Set when another module owns the kind's schedules (``JobArguments/schedulesManagedBy``).
        let schedules: ScheduleOwnership?
        /// The kind's attempt time limit (``JobArguments/timeout``).
        let timeout: JobTimeout
    }

    /// Table access.
    package let store: JobStore
    /// Settings.
    package let settings: JobsSettings
    let bus: EventBus
    /// Job-change notifications for event streams.
    package let events: JobEventHub
    /// The time jobs are stamped with, become due by, and back off and lease against.
    package let clock: any CairnClock
    private let registry = Mutex<[String: Registration]>([:])
    /// The queue-lag gauges' sampler.
    let lag = QueueLag()

    /// The EventBus channel that wakes workers when jobs are enqueued.
    static let wakeChannel = "cairn_jobs_wake"

    /// Creates the queue; `clock` gives the time runs are due, leased and retried by.
    package init(store: JobStore, bus: EventBus, settings: JobsSettings, clock: any CairnClock = SystemClock()) {
        self.store = store
        self.bus = bus
        self.settings = settings
        self.clock = clock
        self.events = JobEventHub(bus: bus)
    }

    /// Registers the handler of a kind (``register(_:handler:)`` is the typed way). A second
    /// registration of a kind replaces the first. `enqueueableOverHTTP` lets `POST /jobs` create it.
    /// `check` finds what is wrong with a request's arguments (none by default).
    /// `abandoned`, if any, runs in the transaction that ends a job of the kind without success.
    func register(
        kind: String, enqueueableOverHTTP: Bool, adminOnly: Bool, check: @escaping @Sendable (JSONValue) -> [FieldIssue] = { _ in [] },
        abandoned: (@Sendable (Job, any SQLDatabase) async throws -> Void)? = nil, schedules: ScheduleOwnership? = nil,
        timeout: JobTimeout = .node, handler: @escaping JobHandler
    ) {
        registry.withLock {
            $0[kind] = Registration(
                handler: handler, enqueueableOverHTTP: enqueueableOverHTTP, adminOnly: adminOnly, check: check, abandoned: abandoned,
                schedules: schedules, timeout: timeout)
        }
    }

    /// The most time an attempt of `kind` may run on this node: its kind's own limit, or the
    /// node's (``JobsSettings/timeout``); nil for none (and for a kind not registered here).
    func kindTimeout(_ kind: String) -> Duration? {
        switch registration(kind)?.timeout ?? .node {
        case .node: settings.timeout
        case .fixed(let limit): limit
        case .unlimited: nil
        }
    }

    /// The time limit of one attempt of `job` on this node: the job's own (``JobRequest/timeoutMs``)
    /// within its kind's (``kindTimeout(_:)``), which bounds it here too, whatever the node that
    /// enqueued it allowed; nil for none.
    func timeout(for job: Job) -> Duration? {
        let limit = kindTimeout(job.kind)
        guard let own = job.timeoutMs.map({ Duration.milliseconds($0) }) else { return limit }
        return limit.map { min($0, own) } ?? own
    }

    /// The most milliseconds a job of `kind` may ask for as its `timeoutMs`: its kind's limit
    /// on this node, or, without one, the longest duration any setting takes (10 years).
    func maxTimeoutMs(_ kind: String) -> Int64 {
        let limit = kindTimeout(kind) ?? SettingsReader.durationRange.upperBound
        return limit.components.seconds * 1000 + limit.components.attoseconds / 1_000_000_000_000_000
    }

    /// Runs the kinds' `abandoned` hooks for jobs just cancelled or discarded, on `db` (the
    /// transaction that ended them): what every job-ending write of the store is given.
    var abandonHook: JobStore.AbandonHook {
        { [weak self] jobs, db in
            guard let self else { return }
            for job in jobs {
                try await self.registration(job.kind)?.abandoned?(job, db)
            }
        }
    }

    func registration(_ kind: String) -> Registration? {
        registry.withLock { $0[kind] }
    }

    /// Enqueues a job for a tenant. With `db` (the caller's open transaction), the job commits
    /// or rolls back with the caller's own rows.
    /// - Returns: the job and whether it is new (false: an unfinished job with the same unique key).
    /// - Throws: 400 `invalid_input` (unknown kind, bad fields), 429 `rate_limited` (pending cap).
    package func enqueue(_ request: JobRequest, tenantId: String, createdBy: String?, on db: (any SQLDatabase)? = nil) async throws -> (
        job: Job, created: Bool
    ) {
        let issues = validate(request, field: "")
        if !issues.isEmpty { throw AppError.invalidInput(issues) }
        return try await TraceContext.withSpan("job enqueue \(request.kind)", ofKind: .producer) { span in
            Self.describe(span, operation: "send", queue: request.queue, kind: request.kind, tenantId: tenantId)
            try await checkPendingCap(tenantId: tenantId, adding: 1)
            let job = makeJob(request, tenantId: tenantId, createdBy: createdBy, now: clock.milliseconds)
            let result = try await store.database.transaction(joining: db) { [bus] db in
                let result = try await JobStore.insert(job, on: db)
                if result.inserted { try await bus.publish(channel: Self.wakeChannel, payload: job.id, on: db) }
                return result
            }
            span.attributes["messaging.message.id"] = result.job.id
            if result.inserted { Counter(label: "cairn_jobs_enqueued_total", dimensions: [("kind", job.kind)]).increment() }
            return (result.job, result.inserted)
        }
    }

    /// Sets the OpenTelemetry messaging attributes of a job span: `messaging.system` `cairn`,
    /// `messaging.operation.type` (`send`, `receive`, `process`), the queue as
    /// `messaging.destination.name`, `cairn.job.kind` and `cairn.tenant_id`.
    package static func describe(_ span: any Span, operation: String, queue: String, kind: String, tenantId: String?) {
        span.attributes["messaging.system"] = "cairn"
        span.attributes["messaging.operation.type"] = operation
        span.attributes["messaging.destination.name"] = queue
        span.attributes["cairn.job.kind"] = kind
        if let tenantId { span.attributes["cairn.tenant_id"] = tenantId }
    }

    /// Enqueues up to 1,000 jobs for a tenant at once (River's `InsertMany`, BullMQ's
    /// `addBulk`): one validation pass, multi-row inserts and a single worker wake-up, all in one
    /// transaction (the caller's when `db` is given) — either every job is enqueued or none.
    /// - Returns: one entry per request, in order; `created` is false for a unique-key match.
    /// - Throws: 400 `invalid_input` naming `jobs[i].field`, 429 `rate_limited` when the batch
    ///   would take the tenant past its pending cap.
    package func enqueueMany(_ requests: [JobRequest], tenantId: String, createdBy: String?, on db: (any SQLDatabase)? = nil) async throws
        -> [(job: Job, created: Bool)]
    {
        guard !requests.isEmpty else { return [] }
        guard requests.count <= Self.maxBatch else { throw AppError.invalidField("jobs", "must hold 1 to \(Self.maxBatch) jobs") }
        let issues = requests.indices.flatMap { validate(requests[$0], field: "jobs[\($0)].") }
        if !issues.isEmpty { throw AppError.invalidInput(Array(issues.prefix(50))) }
        return try await TraceContext.withSpan("job enqueue batch", ofKind: .producer) { span in
            span.attributes["messaging.system"] = "cairn"
            span.attributes["messaging.operation.type"] = "send"
            span.attributes["messaging.batch.message_count"] = requests.count
            span.attributes["cairn.tenant_id"] = tenantId
            return try await enqueueBatch(requests, tenantId: tenantId, createdBy: createdBy, on: db)
        }
    }

    /// ``enqueueMany(_:tenantId:createdBy:on:)`` once validated, inside its span.
    private func enqueueBatch(_ requests: [JobRequest], tenantId: String, createdBy: String?, on db: (any SQLDatabase)?) async throws
        -> [(job: Job, created: Bool)]
    {
        try await checkPendingCap(tenantId: tenantId, adding: requests.count)
        let now = clock.milliseconds
        let jobs = requests.map { makeJob($0, tenantId: tenantId, createdBy: createdBy, now: now) }
        let insert: @Sendable (any SQLDatabase) async throws -> [(job: Job, inserted: Bool)] = { [bus] db in
            let results = try await JobStore.insertMany(jobs, on: db)
            if results.contains(where: \.inserted) { try await bus.publish(channel: Self.wakeChannel, payload: "batch", on: db) }
            return results
        }
        let results = try await store.database.transaction(joining: db, insert)
        var counts: [String: Int] = [:]
        for result in results where result.inserted { counts[result.job.kind, default: 0] += 1 }
        for (kind, count) in counts { Counter(label: "cairn_jobs_enqueued_total", dimensions: [("kind", kind)]).increment(by: count) }
        return results.map { ($0.job, $0.inserted) }
    }

    /// The most jobs one `enqueueMany` call takes.
    package static let maxBatch = 1000

    /// The accepted `priority` (1 most urgent) and `maxAttempts` of a job, by field name: what
    /// ``validate(_:field:)`` checks, and what the body decoder names for a number beyond an
    /// integer (`1e20`), so both get the same words.
    package static let integerRanges: [String: ClosedRange<Int64>] = ["priority": 1...4, "maxAttempts": 1...100]

    func validate(_ request: JobRequest, field prefix: String) -> [FieldIssue] {
        var issues: [FieldIssue] = []
        if registration(request.kind) == nil { issues.append(FieldIssue(field: prefix + "kind", issue: "is not a registered job kind")) }
        for (name, value) in [("priority", Int64(request.priority)), ("maxAttempts", Int64(request.maxAttempts))] {
            let range = Self.integerRanges[name]!
            if !range.contains(value) {
                issues.append(FieldIssue(field: prefix + name, issue: "must be an integer from \(range.lowerBound) to \(range.upperBound)"))
            }
        }
        if request.queue.isEmpty || TextSafety.length(request.queue) > 64
            || !request.queue.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" || $0 == "-" })
        {
            issues.append(FieldIssue(field: prefix + "queue", issue: "must be 1 to 64 letters, digits, - or _"))
        }
        if let key = request.uniqueKey, key.isEmpty || TextSafety.length(key) > 256 {
            issues.append(FieldIssue(field: prefix + "uniqueKey", issue: "must be 1 to 256 characters"))
        }
        if let timeout = request.timeoutMs {
            let most = maxTimeoutMs(request.kind)
            if !(1...most).contains(timeout) {
                let limit = SettingsReader.describe(.milliseconds(most))
                issues.append(
                    FieldIssue(
                        field: prefix + "timeoutMs",
                        issue: "must be an integer from 1 to \(most) (milliseconds; at most the job timeout of its kind, \(limit))"))
            }
        }
        if let runAt = request.runAt, !(0...253_402_300_799_999).contains(runAt) {
            issues.append(FieldIssue(field: prefix + "runAt", issue: "must be between 1970-01-01 and 9999-12-31 (UTC)"))
        }
        if request.args.text.utf8.count > 64 * 1024 {
            issues.append(FieldIssue(field: prefix + "args", issue: "must be at most 64 KiB of JSON"))
        } else if case .object = request.args, let registration = registration(request.kind) {
            issues += registration.check(request.args).map { FieldIssue(field: prefix + $0.field, issue: $0.issue) }
        }
        return issues
    }

    private func checkPendingCap(tenantId: String, adding: Int) async throws {
        if try await store.unfinishedCount(tenantId: tenantId) + adding > settings.maxPendingPerTenant {
            throw AppError.rateLimited(
                retryAfter: 30, policy: "\(settings.maxPendingPerTenant);w=1", detail: "Too many pending jobs for this tenant.")
        }
    }

    private func makeJob(_ request: JobRequest, tenantId: String, createdBy: String?, now: Int64) -> Job {
        let runAt = request.runAt ?? now
        return Job(
            id: UUIDv7.make(), tenantId: tenantId, queue: request.queue, kind: request.kind, args: request.args.text, priority: request.priority,
            state: runAt > now ? .scheduled : .available, attempt: 0, maxAttempts: request.maxAttempts, timeoutMs: request.timeoutMs, runAt: runAt,
            progress: nil, checkpoint: nil,
            errors: "[]", uniqueKey: request.uniqueKey, createdBy: createdBy, createdAt: now, attemptedAt: nil, finishedAt: nil, leaseOwner: nil,
            leaseExpiresAt: nil, cancelRequestedAt: nil, version: 1, traceContext: TraceContext.serialized())
    }

    /// Cancels a job: at once when waiting; a running one is stopped by its node within a second.
    /// Either way the kind's `abandoned` hook runs in the transaction that cancels it.
    /// - Throws: 404 when missing; 409 when already final.
    package func cancel(id: String, tenantId: String) async throws -> Job {
        if let job = try await store.requestCancel(id: id, tenantId: tenantId, now: clock.milliseconds, abandoned: abandonHook) {
            await events.announce([job.id])
            return job
        }
        guard try await store.job(id: id, tenantId: tenantId) != nil else { throw AppError.notFound("No such job.") }
        throw AppError.conflict("The job has already finished.")
    }

    /// Makes a job snoozed by ``SnoozeJob`` due now (a running one snoozes no longer than it takes
    /// to end its attempt), and wakes the workers. With `db`, in the caller's transaction. Does
    /// nothing to a job in another state.
    package func wake(id: String, tenantId: String, on db: (any SQLDatabase)? = nil) async throws {
        let now = clock.milliseconds
        let woken = try await store.database.transaction(joining: db) { [bus] db in
            let woken = try await JobStore.wake(id: id, tenantId: tenantId, now: now, on: db)
            if woken { try await bus.publish(channel: Self.wakeChannel, payload: id, on: db) }
            return woken
        }
        if woken && db == nil { await events.announce([id]) }
    }

    /// Cancels the tenant's unfinished jobs among `ids` on `db` (the caller's transaction): waiting
    /// ones at once (their kinds' `abandoned` hooks run there too), running ones are flagged for
    /// their nodes to stop within a second. For a job that stands for others (a chunked pipeline
    /// run's chunks), from its own `abandoned` hook.
    package func cancel(ids: [String], tenantId: String, on db: any SQLDatabase) async throws {
        let changed = try await JobStore.requestCancel(ids: ids, tenantId: tenantId, now: clock.milliseconds, on: db)
        let ended = changed.filter { $0.state == .cancelled }
        if !ended.isEmpty { try await abandonHook(ended, db) }
        let announced = changed.map(\.id)
        // Announced once the caller's transaction has had its chance to commit.
        if !announced.isEmpty { Task { [events] in await events.announce(announced) } }
    }

    /// Retries a discarded (dead-letter) or cancelled job.
    /// - Throws: 404 when missing; 409 in any other state.
    package func retry(id: String, tenantId: String) async throws -> Job {
        let retried: Job?
        do {
            retried = try await store.retry(id: id, tenantId: tenantId, now: clock.milliseconds)
        } catch  where Database.isUniqueViolation(error) {
            throw AppError.conflict("Another unfinished job holds this job's unique key.")
        }
        if let job = retried {
            try? await bus.publish(channel: Self.wakeChannel, payload: job.id)
            await events.announce([job.id])
            return job
        }
        guard try await store.job(id: id, tenantId: tenantId) != nil else { throw AppError.notFound("No such job.") }
        throw AppError.conflict("Only discarded or cancelled jobs can be retried.")
    }

    /// Deletes a finished job, and announces it (so a node still holding something of the job,
    /// such as a pipeline run's work folder, lets it go at once).
    /// - Throws: 404 when missing; 409 when not finished.
    package func delete(id: String, tenantId: String) async throws {
        if try await store.delete(id: id, tenantId: tenantId) {
            await events.announce([id])
            return
        }
        guard try await store.job(id: id, tenantId: tenantId) != nil else { throw AppError.notFound("No such job.") }
        throw AppError.conflict("Only finished jobs can be deleted; cancel it first.")
    }

    /// Backoff before attempt `attempt + 1`: about `min(2^attempt s, 1 h)` ± 10 % jitter.
    static func backoff(afterAttempt attempt: Int) -> Int64 {
        let base = min(pow(2.0, Double(min(attempt, 20))), 3600)
        return Int64(base * Double.random(in: 0.9...1.1) * 1000)
    }
}

/// The job kinds of the job system itself (`noop`).
package enum BuiltInJobs {
    /// Registers the built-in kinds on `queue`; called once, from the composition root.
    package static func registerJobs(on queue: JobQueue) {
        queue.register(Noop.self, handler: Noop.run)
    }
}

/// The built-in `noop` kind: sleeps `sleepMs` (in slices of `checkpointEvery` ms, saving a
/// checkpoint after each and resuming from it), then succeeds, or fails with
/// `fail: "transient"` (retried) or `"permanent"` (discarded). For tests and benchmarks;
/// owners and admins may enqueue it over HTTP. However long it sleeps, one attempt runs no
/// longer than the job timeout (`CAIRN_JOBS_TIMEOUT`); with checkpoints, the next attempt
/// resumes where the timed-out one stopped.
struct Noop: JobArguments {
    static let kind = "noop"
    static let enqueueableOverHTTP = true
    static let adminOnly = true

    /// Milliseconds to sleep, 0 to ``maxMilliseconds`` (default 0).
    var sleepMs: Int?
    /// Milliseconds between checkpoints, ``minCheckpointEvery`` to ``maxMilliseconds``; none
    /// are saved without it.
    var checkpointEvery: Int?
    /// `transient` or `permanent` to fail as asked; succeeds when absent or null.
    var fail: String?

    /// The longest sleep and checkpoint interval: one day, in milliseconds.
    static let maxMilliseconds = 86_400_000
    /// The shortest interval between checkpoints, in milliseconds: each is a database write and
    /// an event to every listener, and a fresh-user trial saw `checkpointEvery: 1` write about
    /// 110 of them a second.
    static let minCheckpointEvery = 100

    /// Unknown keys, non-integers, values out of range and other `fail` values, each naming its
    /// field (`args.sleepMs`); `null` is the same as leaving a key out.
    static func issues(in arguments: JSONValue) -> [FieldIssue] {
        guard case .object(let fields) = arguments else { return [FieldIssue(field: "args", issue: "must be a JSON object")] }
        var issues: [FieldIssue] = []
        for (key, value) in fields.sorted(by: { $0.key < $1.key }) where value != .null {
            switch key {
            case "sleepMs", "checkpointEvery":
                let lowest = key == "sleepMs" ? 0 : minCheckpointEvery
                if value.int.map({ (lowest...maxMilliseconds).contains($0) }) != true {
                    issues.append(FieldIssue(field: "args.\(key)", issue: "must be an integer from \(lowest) to \(maxMilliseconds) (milliseconds)"))
                }
            case "fail":
                if value != .string("transient") && value != .string("permanent") {
                    issues.append(FieldIssue(field: "args.fail", issue: "must be \"transient\" or \"permanent\""))
                }
            default:
                issues.append(FieldIssue(field: "args.\(key)", issue: "is not an argument of noop (sleepMs, checkpointEvery, fail)"))
            }
        }
        return issues
    }

    @Sendable static func run(_ args: Noop, context: JobContext) async throws {
        let total = max(0, args.sleepMs ?? 0)
        let resumedFrom = context.checkpoint?["doneMs"]?.int ?? 0
        try await sleep(args, resumedFrom: resumedFrom, clock: ContinuousClock()) { done in
            try await context.saveCheckpoint(
                .object(["doneMs": .number(Double(done))]),
                progress: .object([
                    "fraction": .number(total == 0 ? 1 : Double(done) / Double(total)), "resumedFromMs": .number(Double(resumedFrom)),
                ]))
        }
        switch args.fail {
        case "transient": throw NoopFailure(message: "noop failed as asked (attempt \(context.job.attempt))")
        case "permanent": throw PermanentJobError("noop failed permanently as asked")
        default: return
        }
    }

    /// Sleeps from `resumedFrom` to `sleepMs` milliseconds on `clock`, calling `checkpoint` with
    /// the milliseconds done after each slice of `checkpointEvery` (when given). Each slice ends
    /// at a deadline counted from the start, so the time the checkpoints take is part of the
    /// sleep, not added to it: the whole lasts about `sleepMs - resumedFrom` however slow the
    /// writes (slices one after another ran about 9 times as long with `checkpointEvery: 1`).
    static func sleep<C: Clock>(_ args: Noop, resumedFrom: Int, clock: C, checkpoint: (Int) async throws -> Void) async throws
    where C.Duration == Duration {
        let total = max(0, args.sleepMs ?? 0)
        let slice = max(1, args.checkpointEvery ?? max(total, 1))
        let start = clock.now
        var done = resumedFrom
        while done < total {
            done = min(done + slice, total)
            try await clock.sleep(until: start.advanced(by: .milliseconds(done - resumedFrom)), tolerance: nil)
            if args.checkpointEvery != nil { try await checkpoint(done) }
        }
    }

    struct NoopFailure: Error, CustomStringConvertible {
        var message: String
        var description: String { message }
    }
}
