import CairnHTTP
public import CairnJobs
import CairnStorage
import Foundation
public import Logging
public import ServiceLifecycle

/// The module's background work on each node, as one `Service`: retention pruning of read
/// notifications, the job-status bridge, and closing live connections on shutdown.
///
/// Job status: every change a job announces (state changes, progress, checkpoints) becomes a
/// stored `job_status` notification to the job's creator, so it reaches the creator's SSE and
/// WebSocket streams and the inbox. Progress is throttled to one notification per job per
/// `progressInterval` (2 s) on each node, so a chatty job cannot flood the inbox; state changes
/// always pass. Each notification carries the dedupe key `job:<id>:<version>`, so when every
/// node hears the same change, only one row is stored.
public struct NotificationService: Service {
    let center: Notifier
    let jobs: JobQueue?
    let logger: Logger
    let progressInterval: Duration

    /// Creates the service; without `jobs`, no job-status notifications are made.
    public init(center: Notifier, jobs: JobQueue?, logger: Logger, progressInterval: Duration = .seconds(2)) {
        self.center = center
        self.jobs = jobs
        self.logger = logger
        self.progressInterval = progressInterval
    }

    /// Runs until graceful shutdown.
    public func run() async throws {
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
            let cutoff = WallClock.milliseconds() - Int64(center.settings.retentionSeconds) * 1000
            do {
                while try await center.store.pruneRead(before: cutoff) >= 1000 {}
            } catch {
                logger.warning("notification retention pruning failed; retrying later")
            }
            do { try await Task.sleep(for: center.settings.pruneInterval) } catch { return }
        }
    }

    private struct Seen {
        var state: JobState
        var lastProgressAt: ContinuousClock.Instant
    }

    private func bridge(_ jobs: JobQueue) async {
        var seen: [String: Seen] = [:]
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
                let now = ContinuousClock.now
                let previous = seen[job.id]
                if let previous, previous.state == job.state, now - previous.lastProgressAt < progressInterval { continue }
                if job.state.isFinal { seen[job.id] = nil } else { seen[job.id] = Seen(state: job.state, lastProgressAt: now) }
                if seen.count > 100_000 { seen.removeAll() }
                var data: [String: JSONValue] = [
                    "jobId": .string(job.id), "kind": .string(job.kind), "state": .string(job.state.rawValue),
                    "attempt": .number(Double(job.attempt)), "version": .number(Double(job.version)),
                ]
                if let progress = job.progress.flatMap(JSONValue.init(text:)) { data["progress"] = progress }
                let draft = NotificationDraft(
                    type: "job_status", title: "Job \(job.kind) \(job.state.rawValue)", body: "", data: .object(data),
                    dedupeKey: "job:\(job.id):\(job.version)")
                do {
                    try await center.publish(draft, to: [creator], tenantId: job.tenantId)
                } catch {
                    logger.warning("job status notification failed", metadata: ["job_id": .string(job.id)])
                }
            }
        }
    }
}
