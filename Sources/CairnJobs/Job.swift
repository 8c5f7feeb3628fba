package import CairnHTTP
package import CairnStorage
import Foundation

/// The life of a job (River's state names): `scheduled`/`available`/`retryable` wait to run,
/// `running` holds a lease, and `succeeded`, `cancelled` and `discarded` (the dead letters)
/// are final.
package enum JobState: String, Sendable, CaseIterable, Codable, JSONEnum {
    case scheduled, available, running, retryable, succeeded, cancelled, discarded

    /// True for states a job never leaves on its own.
    package var isFinal: Bool { self == .succeeded || self == .cancelled || self == .discarded }

    /// States that wait to be claimed.
    static let waiting: [JobState] = [.scheduled, .available, .retryable]
}

/// A durable job, as stored and as clients see it.
///
/// As JSON: `{id, queue, kind, args, priority, state, attempt, maxAttempts, runAt, progress,
/// checkpoint, result, errors, uniqueKey, createdBy, createdAt, attemptedAt, finishedAt}`
/// (camelCase, RFC 3339 times).
@JSONObject
package struct Job: Sendable, JSONWritable {
    /// UUIDv7.
    package var id: String
    /// The owning tenant.
    @JSONSkip package var tenantId: String
    /// Queue name (`default` unless given).
    package var queue: String
    /// The registered handler's name.
    package var kind: String
    /// Arguments, JSON text.
    @JSONText package var args: String
    /// 1 (most urgent) to 4, as in River.
    package var priority: Int
    /// Where it is in its life.
    @JSONRawValue package var state: JobState
    /// Attempts started so far (a claim starts one).
    package var attempt: Int
    /// Attempts allowed before the job is discarded.
    package var maxAttempts: Int
    /// The most milliseconds one attempt may run, as the job asked (its kind's limit on the
    /// node bounds it too: `CAIRN_JOBS_TIMEOUT`); nil for the kind's limit alone.
    package var timeoutMs: Int64? = nil
    /// Epoch milliseconds before which it is not run.
    @JSONTimestamp package var runAt: Int64
    /// Latest progress report, JSON text.
    @JSONText package var progress: String?
    /// Latest checkpoint, JSON text, handed to the next attempt.
    @JSONText package var checkpoint: String?
    /// What the handler reported as its outcome (JSON text), e.g. a pipeline run's output file.
    @JSONText package var result: String? = nil
    /// One entry per failed attempt, JSON array text: `[{at, attempt, error}]`.
    @JSONText package var errors: String
    /// Deduplication key (unique per tenant and kind among unfinished jobs).
    package var uniqueKey: String?
    /// The user who enqueued it, if any.
    package var createdBy: String?
    /// Epoch milliseconds.
    @JSONTimestamp package var createdAt: Int64
    /// When the last attempt started (epoch ms).
    @JSONTimestamp package var attemptedAt: Int64?
    /// When it reached a final state (epoch ms).
    @JSONTimestamp package var finishedAt: Int64?
    /// The node holding its lease while running.
    @JSONSkip package var leaseOwner: String?
    /// When the lease lapses unless renewed (epoch ms).
    @JSONSkip package var leaseExpiresAt: Int64?
    /// Set when cancellation was requested while it ran.
    @JSONSkip package var cancelRequestedAt: Int64?
    /// Grows with every change of state, progress or checkpoint: the event id of
    /// `GET /jobs/{id}/events`.
    @JSONSkip package var version: Int
    /// The W3C Trace Context of the span that enqueued it (JSON text of `traceparent` and
    /// `tracestate`), so each attempt, on whichever node, continues that trace. Never shown to
    /// clients.
    @JSONSkip package var traceContext: String? = nil

    /// The job as `JobStore.insertMany` writes its row: no attempt, progress, checkpoint, errors,
    /// lease or result yet, at version 1.
    var asInserted: Job {
        var job = self
        job.attempt = 0
        job.progress = nil
        job.checkpoint = nil
        job.errors = "[]"
        job.attemptedAt = nil
        job.finishedAt = nil
        job.leaseOwner = nil
        job.leaseExpiresAt = nil
        job.cancelRequestedAt = nil
        job.version = 1
        job.result = nil
        return job
    }
}

/// The jobs module's tables: `Migrations/jobs/*.sql` and `Migrations/schedules/*.sql` among its resources.
package enum JobsMigrations {
    /// All migrations of the module, in order.
    package static func all() throws -> [Migration] { try Migration.files(in: .module) }
}
