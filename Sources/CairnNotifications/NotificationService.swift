import CairnHTTP
package import CairnJobs
import CairnStorage
import Foundation
package import Logging
import ServiceLifecycle

/// The module's background work on each node, as one `Service`: retention pruning of read
/// notifications, the job-status bridge, and closing live connections on shutdown.
///
/// Job status: every change a job announces (state changes, progress, checkpoints) becomes a
/// stored `job_status` notification to the job's creator, so it reaches the creator's SSE and
/// WebSocket streams and the inbox (see ``JobStatusBridge`` for the rules).
package struct NotificationService: Service {
    let center: Notifier
    let jobs: JobQueue?
    let logger: Logger
    let progressInterval: Duration

    /// Creates the service; without `jobs`, no job-status notifications are made.
    package init(center: Notifier, jobs: JobQueue?, logger: Logger, progressInterval: Duration = .seconds(2)) {
        self.center = center
        self.jobs = jobs
        self.logger = logger
        self.progressInterval = progressInterval
    }

    /// Runs until graceful shutdown.
    package func run() async throws {
        await withGracefulShutdownHandler {
            await cancelWhenGracefulShutdown {
                await withTaskGroup(of: Void.self) { group in
                    group.addTask { await prune() }
                    if let jobs { group.addTask { await bridge(jobs) } }
                    await group.waitForAll()
                }
            }
        } onGracefulShutdown: { [center] in
            center.hub.closeAll()
        }
        center.hub.closeAll()
        center.hub.stop()
    }

    private func prune() async {
        while !Task.isCancelled {
            let cutoff = center.clock.milliseconds - Int64(center.settings.retentionSeconds) * 1000
            do {
                while try await center.store.pruneRead(before: cutoff) >= 1000 {}
            } catch {
                logger.warning("notification retention pruning failed; retrying later")
            }
            do { try await Task.sleep(for: center.settings.pruneInterval) } catch { return }
        }
    }

    private func bridge(_ jobs: JobQueue) async {
        var statuses = JobStatusBridge(progressInterval: progressInterval)
        for await ids in jobs.events.changes() {
            let changed: [Job]
            do {
                changed = try await jobs.store.jobs(ids: ids)
            } catch {
                logger.warning("job status: reading changed jobs failed")
                continue
            }
            for job in changed {
                guard let creator = job.createdBy else { continue }
                for draft in statuses.drafts(for: job, now: center.clock.instant) {
                    do {
                        try await center.publish(draft, to: [creator], tenantId: job.tenantId)
                    } catch {
                        logger.warning("job status notification failed", metadata: ["job_id": .string(job.id)])
                    }
                }
            }
        }
    }
}

/// Turns the jobs this node reads after change announcements into `job_status` drafts.
///
/// Announcements carry ids only, so the bridge sees each job as it is when read, not as it was
/// when announced: a bridge that lags (a loaded node) may first read a job that already
/// finished. The row still tells that it ran: `attempt` > 0 with `attemptedAt` set. So the
/// first time a claim is seen, in whatever state, a `running` draft for that attempt comes
/// first (dedupe key `job:<id>:running:<attemptedAt>`, the same on every node), then the state
/// read, if it is not `running` (`job:<id>:<version>`). Progress while running is throttled to
/// one draft per job per `progressInterval` on this node; state changes always pass. The keys
/// make a change heard by several nodes, or read twice, one stored row. States the job passed
/// through between two reads other than its claims (a `retryable` between two attempts read
/// late) are not reconstructed.
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
