import CairnAccounts
import CairnHTTP
package import CairnJobs
import CairnStorage
import Foundation

/// Tenant broadcasts (`POST /notifications {"audience": "tenant"}`) as durable jobs of kind
/// `notifications.broadcast`, so the request answers at once and a large tenant is stored in
/// the background, one page of members per transaction, without holding the writer for long.
///
/// The job pages through the tenant's users in id order (`settings.batchSize` per page),
/// publishes each page with ``Notifier/publish(_:to:tenantId:on:)`` and saves a checkpoint
/// `{after, members, stored}` after it. Every row carries the dedupe key
/// `broadcast:<broadcastId>`, so an attempt that redoes a page (a crash between the page's
/// commit and its checkpoint, a lost lease, a retry) never stores a second row for a user. The
/// job's result is `{broadcastId, members, stored}`: users visited, and inbox rows of this
/// broadcast (users who turned the type's in-app channel off have none).
package final class TenantBroadcasts: Sendable {
    /// The job kind.
    package static var kind: String { SendBroadcast.kind }

    let center: Notifier
    let jobs: JobQueue

    /// Creates the broadcaster; call ``registerJobs(on:)`` once, from the composition root.
    package init(center: Notifier, jobs: JobQueue) {
        self.center = center
        self.jobs = jobs
    }

    /// Registers the broadcast job handler on `queue`.
    package func registerJobs(on queue: JobQueue) {
        queue.register(SendBroadcast.self, on: self, whenGone: { PermanentJobError("notifications are shutting down") }) {
            try await $0.run($1, context: $2)
        }
    }

    /// The dedupe key of a broadcast's rows.
    package static func dedupeKey(broadcastId: String) -> String { "broadcast:" + broadcastId }

    /// Starts a broadcast of `draft` to every user of `tenantId`: enqueues its job and returns.
    /// - Parameter createdBy: the publishing user (the job's creator, who gets its
    ///   `job_status` notifications); nil for a service token.
    /// - Returns: the new broadcast's id (UUIDv7) and its job.
    /// - Throws: 400 `invalid_input` for a bad draft (or one too large to be a job's
    ///   arguments); 429 `rate_limited` when the tenant has too many pending jobs.
    package func start(_ draft: NotificationDraft, tenantId: String, createdBy: String?) async throws -> (broadcastId: String, job: Job) {
        try draft.validate()
        let broadcastId = UUIDv7.make()
        let request = try JobRequest(
            SendBroadcast(broadcastId: broadcastId, type: draft.type, title: draft.title, body: draft.body, data: draft.data))
        // A body near its 10,000-character limit with escapes, plus 16 KiB of data, can exceed
        // the 64 KiB of a job's arguments: name the fields the client sent, not `args`.
        if request.args.text.utf8.count > 64 * 1024 {
            throw AppError.invalidField("body", "together with data must fit in 64 KiB of JSON for a tenant broadcast")
        }
        let (job, _) = try await jobs.enqueue(request, tenantId: tenantId, createdBy: createdBy)
        return (broadcastId, job)
    }

    /// Where a broadcast stands: the last user id done, users visited, rows stored.
    struct Progress: Equatable {
        var after: String?
        var members = 0
        var stored = 0

        init(checkpoint: JSONValue?) {
            after = checkpoint?["after"]?.string
            members = checkpoint?["members"]?.int ?? 0
            stored = checkpoint?["stored"]?.int ?? 0
        }

        var checkpoint: JSONValue {
            .object(["after": after.map(JSONValue.string) ?? .null, "members": .number(Double(members)), "stored": .number(Double(stored))])
        }

        var report: JSONValue {
            .object(["members": .number(Double(members)), "stored": .number(Double(stored))])
        }
    }

    /// One attempt: resumes after the checkpoint's user id, page by page.
    func run(_ args: SendBroadcast, context: JobContext) async throws {
        let broadcastId = args.broadcastId
        guard UUIDv7.isValid(broadcastId) else { throw PermanentJobError("the broadcast's id is not a UUIDv7") }
        let key = Self.dedupeKey(broadcastId: broadcastId)
        let draft = NotificationDraft(type: args.type, title: args.title, body: args.body, data: args.data, dedupeKey: key)
        do { try draft.validate() } catch { throw PermanentJobError("the broadcast's notification is invalid") }
        let tenantId = context.job.tenantId
        let pageSize = max(1, center.settings.batchSize)
        var progress = Progress(checkpoint: context.checkpoint)
        while true {
            try Task.checkCancellation()
            let page = try await center.accounts.store.users(tenantId: tenantId, page: PageRequest(limit: pageSize, after: progress.after))
            guard let last = page.items.last else { break }
            let userIds = page.items.map(\.id)
            try await center.publish(draft, to: userIds, tenantId: tenantId)
            // Counted from the table, not from this attempt's inserts: a page redone after a
            // crash may have stored some or all of its rows in the earlier attempt.
            progress.stored += try await center.store.count(dedupeKey: key, tenantId: tenantId, userIds: userIds)
            progress.members += userIds.count
            progress.after = last.id
            try await context.saveCheckpoint(progress.checkpoint, progress: progress.report)
            if page.nextCursor == nil { break }
        }
        try await context.saveResult(
            .object(["broadcastId": .string(broadcastId), "members": .number(Double(progress.members)), "stored": .number(Double(progress.stored))]),
            progress: progress.report)
    }
}

/// The arguments of a `notifications.broadcast` job: the broadcast's id and its notification.
struct SendBroadcast: JobArguments {
    static let kind = "notifications.broadcast"
    static let defaultQueue = "notifications"
    static let defaultMaxAttempts = 10

    /// The broadcast's id (UUIDv7), which keys its rows' dedupe key.
    var broadcastId: String
    /// The notification's type.
    var type: String
    /// The notification's title.
    var title: String
    /// The notification's body.
    var body: String
    /// The notification's data (a JSON object).
    var data: JSONValue
}

/// `{"broadcastId": "…", "job": {…}}`: the 202 answer of a tenant broadcast.
struct BroadcastAccepted: JSONWritable {
    var broadcastId: String
    var job: Job

    func writeJSON(to writer: inout JSONWriter) {
        writer.objectStart()
        writer.field("broadcastId", broadcastId)
        writer.key("job")
        job.writeJSON(to: &writer)
        writer.objectEnd()
    }
}
