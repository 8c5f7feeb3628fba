import CairnHTTP
package import CairnJobs
import CairnStorage
import Foundation
package import Logging
import ServiceLifecycle
import Synchronization

/// The job-status bridge of a node, as one `Service`: every change a job makes (state changes,
/// progress, checkpoints) becomes a stored `job_status` notification to the job's creator, so
/// it reaches the creator's SSE and WebSocket streams and the inbox (see ``JobStatusBridge``
/// for what is said when).
///
/// Durable, though it listens to an at-most-once stream: each job row carries the version
/// whose change is reported (`JobStore/markStatusReported(_:)`), and a sweep reads the jobs
/// whose latest change is not (`JobStore/unreportedStatus(after:limit:)`, in pages of
/// `batchSize`) when the service starts, each time its subscription (re)starts listening, and
/// every `sweepInterval`. So a change announced while no bridge listened (a crash, a restart, a
/// dropped announcement) is reported by the next sweep on any node. Dedupe keys make a change
/// handled twice (by two nodes, by a sweep and an announcement, after a crash between storing
/// and marking) one stored row.
///
/// Fast: the changed jobs heard meanwhile are read in one statement and their drafts stored
/// together (``Notifier/publishAll(_:)``: one commit for many jobs), then marked in one
/// statement; a lagging bridge takes bigger batches, not more commits.
///
/// Run it before the job worker in a service group (which stops services last first): on
/// graceful shutdown the workers finish first, then the bridge reports what it heard and
/// sweeps once more, then the database closes. What a drain misses (a node killed meanwhile),
/// the next sweep reports.
package struct JobStatusService: Service {
    let center: Notifier
    let jobs: JobQueue
    let logger: Logger
    let progressInterval: Duration
    let sweepInterval: Duration
    let batchSize: Int

    /// Creates the service. `progressInterval` throttles progress reports of a job on this node;
    /// `sweepInterval` is the safety-net sweep's period (real time); `batchSize` bounds the jobs
    /// read and reported together (and a sweep's page), at least 1.
    package init(
        center: Notifier, jobs: JobQueue, logger: Logger, progressInterval: Duration = .seconds(2), sweepInterval: Duration = .seconds(15),
        batchSize: Int = 200
    ) {
        self.center = center
        self.jobs = jobs
        self.logger = logger
        self.progressInterval = progressInterval
        self.sweepInterval = sweepInterval
        self.batchSize = max(1, batchSize)
    }

    /// Runs until graceful shutdown, then reports what was heard, sweeps once more, and returns;
    /// returns at once when cancelled.
    package func run() async throws {
        let inbox = JobStatusInbox()
        inbox.requestSweep()
        let changes = jobs.events.changes(onListening: { inbox.requestSweep() })
        let sweepInterval = self.sweepInterval
        await withGracefulShutdownHandler {
            await withTaskGroup(of: Void.self) { group in
                group.addTask {
                    for await ids in changes { inbox.heard(ids) }
                }
                group.addTask {
                    while !Task.isCancelled {
                        do { try await Task.sleep(for: sweepInterval) } catch { return }
                        inbox.requestSweep()
                    }
                }
                var reporter = JobStatusReporter(
                    center: center, store: jobs.store, logger: logger, statuses: JobStatusBridge(progressInterval: progressInterval),
                    batchSize: batchSize)
                await reporter.run(inbox)
                group.cancelAll()
            }
        } onGracefulShutdown: {
            inbox.close()
        }
    }
}

/// What the bridge has to do, filled by the subscription and the sweep timer, emptied by the
/// one loop that reports (so ``JobStatusBridge``'s memory of each job sees every read, in order).
final class JobStatusInbox: Sendable {
    /// The next thing to do.
    enum Work: Equatable {
        /// Report these heard job ids (distinct, in order heard).
        case changed([String])
        /// Read every unreported job.
        case sweep
        /// Shutdown: everything heard is reported and the last sweep done.
        case closed
    }

    private struct State {
        var ids: [String] = []
        var queued: Set<String> = []
        var sweep = false
        var closed = false
    }

    private let state = Mutex(State())
    /// One buffered wake-up: whatever is added while the loop works is found by its next `take`.
    let wakes: AsyncStream<Void>
    private let wake: AsyncStream<Void>.Continuation

    init() {
        (wakes, wake) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(1))
    }

    /// Adds announced job ids (an id already waiting is not added twice).
    func heard(_ ids: [String]) {
        state.withLock { state in
            for id in ids where state.queued.insert(id).inserted { state.ids.append(id) }
        }
        wake.yield()
    }

    /// Asks for a sweep (requests made before it starts are one sweep).
    func requestSweep() {
        state.withLock { $0.sweep = true }
        wake.yield()
    }

    /// Graceful shutdown: what was heard is still reported, then a last sweep, then ``Work/closed``.
    func close() {
        state.withLock { state in
            state.closed = true
            state.sweep = true
        }
        wake.yield()
    }

    /// The next work, without waiting: up to `limit` heard ids first, then a requested sweep,
    /// then ``Work/closed`` once closed; nil when there is nothing to do yet.
    func take(limit: Int) -> Work? {
        state.withLock { state in
            if !state.ids.isEmpty {
                let taken = Array(state.ids.prefix(limit))
                state.ids.removeFirst(taken.count)
                state.queued.subtract(taken)
                return .changed(taken)
            }
            if state.sweep {
                state.sweep = false
                return .sweep
            }
            return state.closed ? .closed : nil
        }
    }
}

/// The bridge's one loop: reads changed jobs in bulk, stores their drafts together, and marks
/// them reported.
struct JobStatusReporter {
    let center: Notifier
    let store: JobStore
    let logger: Logger
    var statuses: JobStatusBridge
    let batchSize: Int

    /// Works through `inbox` until it is closed and drained, or the task is cancelled.
    mutating func run(_ inbox: JobStatusInbox) async {
        var wakes = inbox.wakes.makeAsyncIterator()
        while !Task.isCancelled {
            switch inbox.take(limit: batchSize) {
            case .changed(let ids):
                let rows: [(job: Job, statusVersion: Int)]
                do {
                    rows = try await store.jobsWithStatusVersion(ids: ids)
                } catch {
                    // The next sweep reads them.
                    logger.warning("job status: reading changed jobs failed", metadata: ["count": .stringConvertible(ids.count)])
                    continue
                }
                await report(rows)
            case .sweep:
                await sweep()
            case .closed:
                return
            case nil:
                if await wakes.next() == nil { return }
            }
        }
    }

    /// Reports every job whose latest change is not reported, page by page (in id order, so a
    /// job that keeps failing is passed over until the next sweep).
    mutating func sweep() async {
        var after: String?
        while !Task.isCancelled {
            let page: [(job: Job, statusVersion: Int)]
            do {
                page = try await store.unreportedStatus(after: after, limit: batchSize)
            } catch {
                logger.warning("job status: reading unreported jobs failed")
                return
            }
            await report(page)
            guard page.count == batchSize, let last = page.last else { return }
            after = last.job.id
        }
    }

    /// Publishes the drafts of `rows` (those with a creator and a change not reported yet)
    /// together, then marks them reported at the version read. A job whose drafts could not be
    /// stored is not marked, and is read afresh by the next sweep.
    mutating func report(_ rows: [(job: Job, statusVersion: Int)]) async {
        var drafts: [(job: Job, drafts: [NotificationDraft])] = []
        var handled: [String: Int] = [:]
        for (job, statusVersion) in rows where statusVersion < job.version {
            guard job.createdBy != nil else { continue }
            // Throttled progress (no draft) is handled all the same.
            drafts.append((job, statuses.drafts(for: job, now: center.clock.instant)))
            handled[job.id] = job.version
        }
        guard !handled.isEmpty else { return }
        let publishes = drafts.flatMap { entry in
            entry.drafts.map { (draft: $0, userIds: [entry.job.createdBy ?? ""], tenantId: entry.job.tenantId) }
        }
        do {
            try await center.publishAll(publishes)
        } catch {
            // One job at a time, so that a job the database refuses holds no other back. Rows
            // already committed are not stored twice: every draft has a dedupe key.
            for (job, jobDrafts) in drafts where !jobDrafts.isEmpty {
                do {
                    try await center.publishAll(jobDrafts.map { (draft: $0, userIds: [job.createdBy ?? ""], tenantId: job.tenantId) })
                } catch {
                    logger.warning("job status notification failed", metadata: ["job_id": .string(job.id)])
                    statuses.forget(job.id)
                    handled[job.id] = nil
                }
            }
        }
        do {
            try await store.markStatusReported(handled)
        } catch {
            // Reported again by a later read or sweep; the dedupe keys keep that to one row each.
            logger.warning("job status: marking reported jobs failed", metadata: ["count": .stringConvertible(handled.count)])
        }
    }
}

/// Turns the jobs this node reads after change announcements (or finds unreported) into
/// `job_status` drafts.
///
/// Announcements carry ids only, so the bridge sees each job as it is when read, not as it was
/// when announced: a bridge that lags (a loaded node), or a sweep after a restart, may first read
/// a job that already finished. The row still tells that it ran: `attempt` > 0 with
/// `attemptedAt` set. So the first time a claim is seen, in whatever state, a `running` draft
/// for that attempt comes first (dedupe key `job:<id>:running:<attemptedAt>`, the same on every
/// node), then the state read, if it is not `running` (`job:<id>:<version>`). Progress while
/// running is throttled to one draft per job per `progressInterval` on this node; state changes
/// always pass. The keys make a change heard by several nodes, or read twice, one stored row.
/// States the job passed through between two reads other than its claims (a `retryable`
/// between two attempts read late) are not reconstructed.
struct JobStatusBridge {
    struct Seen {
        var state: JobState
        var lastProgressAt: ContinuousClock.Instant
        /// `attemptedAt` of the last claim reported as `running`.
        var claimReported: Int64?
    }

    let progressInterval: Duration
    private(set) var seen: [String: Seen] = [:]

    init(progressInterval: Duration) {
        self.progressInterval = progressInterval
    }

    /// Forgets what was reported of job `id` (its drafts could not be stored), so its next read
    /// starts afresh; the dedupe keys drop whatever was stored after all.
    mutating func forget(_ id: String) {
        seen[id] = nil
    }

    /// The drafts for one read of `job`, in the order to publish them; none for a job without
    /// a creator.
    mutating func drafts(for job: Job, now: ContinuousClock.Instant) -> [NotificationDraft] {
        guard job.createdBy != nil else { return [] }
        let previous = seen[job.id]
        var drafts: [NotificationDraft] = []
        var claimReported = previous?.claimReported
        var lastAt = previous?.lastProgressAt
        // A claim not reported yet, whatever the job's state now: it ran.
        if let attemptedAt = job.attemptedAt, job.attempt > 0, claimReported != attemptedAt {
            claimReported = attemptedAt
            lastAt = now
            drafts.append(Self.draft(job, state: .running, current: job.state == .running, key: "job:\(job.id):running:\(attemptedAt)"))
        }
        if job.state == .running {
            // The claim is reported: this read is a progress step.
            if drafts.isEmpty, lastAt.map({ now - $0 >= progressInterval }) ?? true {
                lastAt = now
                drafts.append(Self.draft(job, state: .running, current: true, key: "job:\(job.id):\(job.version)"))
            }
        } else if let previous, previous.state == job.state, now - previous.lastProgressAt < progressInterval {
            // The same waiting state read again shortly after: nothing new to say.
        } else {
            lastAt = now
            drafts.append(Self.draft(job, state: job.state, current: true, key: "job:\(job.id):\(job.version)"))
        }
        if job.state.isFinal {
            seen[job.id] = nil
        } else {
            seen[job.id] = Seen(state: job.state, lastProgressAt: lastAt ?? now, claimReported: claimReported)
        }
        if seen.count > 100_000 { seen.removeAll() }
        return drafts
    }

    /// `data` is `{jobId, kind, state, attempt}`, plus `version` and `progress` when `current`
    /// (the state is the row's own, not an earlier one the bridge reconstructs).
    static func draft(_ job: Job, state: JobState, current: Bool, key: String) -> NotificationDraft {
        var data: [String: JSONValue] = [
            "jobId": .string(job.id), "kind": .string(job.kind), "state": .string(state.rawValue), "attempt": .number(Double(job.attempt)),
        ]
        if current {
            data["version"] = .number(Double(job.version))
            if let progress = job.progress.flatMap(JSONValue.init(text:)) { data["progress"] = progress }
        }
        return NotificationDraft(type: "job_status", title: "Job \(job.kind) \(state.rawValue)", body: "", data: .object(data), dedupeKey: key)
    }
}
