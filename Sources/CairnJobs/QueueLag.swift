import CairnStorage
import Metrics
import Synchronization

/// Job queue lag: per queue, the age in seconds of the oldest job that could run now (due and
/// waiting), as the gauge `cairn_jobs_queue_lag_seconds{queue}`; 0 when a queue has caught up
/// (`default` is always reported).
///
/// Queue names are chosen by API callers, so the label is bounded: the
/// ``QueueLag/maximumQueues`` laggiest queues keep their names and the rest are reported
/// together as `queue="other"` (their largest lag). One query per sample (a `GROUP BY` over
/// the waiting rows), taken by the job worker beside the queue-depth gauges.
package final class QueueLag: Sendable {
    /// Queues reported by name; more fold into `other`.
    package static let maximumQueues = 20
    /// Labels reported by the last sample, reset to 0 when their queue empties.
    private let reported = Mutex(Set<String>())

    /// Creates a sampler with nothing reported yet.
    init() {}

    /// Samples the lag of every queue of `queue`'s store at its clock's now, and records it.
    /// - Returns: the lag in seconds per label, as recorded.
    /// - Throws: the database's error.
    @discardableResult
    package func sample(_ queue: JobQueue) async throws -> [String: Double] {
        let now = queue.clock.milliseconds
        let oldest = try await queue.store.oldestDue(now: now)
        let lags = oldest.mapValues { Double(max(0, now - $0)) / 1000 }
        // The default queue is always reported, so its series exists while it is empty.
        var labelled: [String: Double] = ["default": 0]
        for (index, (name, lag)) in lags.sorted(by: { $0.value > $1.value || ($0.value == $1.value && $0.key < $1.key) }).enumerated() {
            if index < Self.maximumQueues && name != "other" {
                labelled[name] = lag
            } else {
                labelled["other"] = max(labelled["other"] ?? 0, lag)
            }
        }
        let cleared = reported.withLock { reported in
            defer { reported = Set(labelled.keys) }
            return reported.subtracting(labelled.keys)
        }
        for name in cleared { Gauge(label: "cairn_jobs_queue_lag_seconds", dimensions: [("queue", name)]).record(0) }
        for (name, lag) in labelled { Gauge(label: "cairn_jobs_queue_lag_seconds", dimensions: [("queue", name)]).record(lag) }
        return labelled
    }
}

extension JobQueue {
    /// Samples and records the lag of this queue's jobs (see ``QueueLag``).
    /// - Returns: the lag in seconds per queue label.
    /// - Throws: the database's error.
    @discardableResult
    package func sampleLag() async throws -> [String: Double] {
        try await lag.sample(self)
    }
}
