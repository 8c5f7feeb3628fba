package import CairnHTTP
import CairnStorage
import Foundation
import HTTPTypes
package import Hummingbird

/// `/jobs`: enqueue (kinds registered as enqueueable over HTTP), list, read, cancel, retry,
/// delete; all scoped to the caller's tenant.
@MemberwiseInit
package struct JobsController: Sendable {
    let queue: JobQueue
    /// Serves the enqueue routes' `Idempotency-Key`.
    let idempotency: IdempotencyMiddleware

    struct EnqueueBody: Decodable, ValueChecked {
        var kind: String
        var args: JSONValue?
        var queue: String?
        var priority: Int?
        var runAt: Date?
        var uniqueKey: String?
        var maxAttempts: Int?
        /// Read as any JSON number: its range depends on the kind and the node, so a value the
        /// decoder would refuse as beyond 64 bits (`1e20`) or a fraction is told that range by
        /// the check (`must be an integer from 1 to 1800000 (milliseconds; …)`), like `0` is.
        var timeoutMs: Double?

        /// `priority` and `maxAttempts` beyond an integer (`1e20`) are told their own range.
        static var integerRanges: [String: ClosedRange<Int64>] { JobQueue.integerRanges }

        /// Checked with the rest of the request by ``JobsController/makeRequest(_:field:context:)``.
        func valueIssues() -> [FieldIssue] { [] }
    }

    /// Decodes an enqueue body, with every type and value issue in one answer.
    func decodeEnqueue(_ request: inout Request, context: AuthenticatedContext) async throws -> EnqueueBody {
        try await Self.unifyingRunAt {
            try await request.decodeJSON(as: EnqueueBody.self, context: context) { body in
                try makeRequest(body, field: "", context: context).1
            }
        }
    }

    /// Runs `decode`, giving a `runAt` of any wrong type the same issue as an unparsable string.
    static func unifyingRunAt<T>(_ decode: () async throws -> T) async throws -> T {
        do {
            return try await decode()
        } catch var error as AppError where error.code == .invalidInput {
            for index in error.errors.indices where error.errors[index].field.hasSuffix("runAt") {
                error.errors[index].issue = "must be an RFC 3339 date-time"
            }
            throw error
        }
    }

    struct BatchBody: Decodable {
        var jobs: [EnqueueBody]
    }

    /// `{items, createdCount, existing}`: the jobs in request order; `existing` lists the
    /// indexes that matched an unfinished job's unique key instead of creating one.
    struct BatchResult: JSONWritable {
        let results: [(job: Job, created: Bool)]
        var createdCount: Int { results.count { $0.created } }

        func writeJSON(to writer: inout JSONWriter) {
            writer.objectStart()
            writer.key("items")
            writer.arrayStart()
            for result in results { result.job.writeJSON(to: &writer) }
            writer.arrayEnd()
            writer.field("createdCount", createdCount)
            writer.key("existing")
            writer.arrayStart()
            for index in results.indices where !results[index].created { writer.int(index) }
            writer.arrayEnd()
            writer.objectEnd()
        }
    }

    /// Turns a request body into a `JobRequest` and lists every problem with it (field names
    /// carry `field` as a prefix), so a client sees all of them at once. A kind that is not
    /// enqueueable over HTTP is one problem among the others; an admin-only kind asked for by a
    /// member is 403 at once.
    func makeRequest(_ body: EnqueueBody, field: String, context: AuthenticatedContext) throws -> (JobRequest, [FieldIssue]) {
        var issues: [FieldIssue] = []
        let registration = queue.registration(body.kind)
        if let registration, registration.enqueueableOverHTTP {
            if registration.adminOnly { try context.identity.requireAdmin() }
        } else {
            issues.append(FieldIssue(field: field + "kind", issue: "is not a job kind that can be enqueued over HTTP"))
        }
        if let args = body.args, case .object = args {
        } else if body.args != nil {
            issues.append(FieldIssue(field: field + "args", issue: "must be a JSON object"))
        }
        var job = JobRequest(kind: body.kind, args: body.args ?? .object([:]))
        job.queue = body.queue ?? job.queue
        job.priority = body.priority ?? job.priority
        job.runAt = body.runAt.map { Int64(($0.timeIntervalSince1970 * 1000).rounded()) }
        job.uniqueKey = body.uniqueKey
        job.maxAttempts = body.maxAttempts ?? job.maxAttempts
        // Not a whole number of milliseconds within 64 bits: 0, which the check refuses with the range.
        job.timeoutMs = body.timeoutMs.map { Int64(exactly: $0) ?? 0 }
        let enqueueable = registration?.enqueueableOverHTTP == true
        // The arguments of a kind clients may not enqueue are none of their business.
        issues += queue.validate(job, field: field).filter { $0.field != field + "kind" && (enqueueable || !$0.field.hasPrefix(field + "args.")) }
        return (job, issues)
    }

    /// The requests of a batch body and its issues (at most 50, so the answer stays small).
    func makeRequests(_ body: BatchBody, context: AuthenticatedContext) throws -> ([JobRequest], [FieldIssue]) {
        guard (1...JobQueue.maxBatch).contains(body.jobs.count) else {
            return ([], [FieldIssue(field: "jobs", issue: "must hold 1 to \(JobQueue.maxBatch) jobs")])
        }
        var requests: [JobRequest] = []
        var issues: [FieldIssue] = []
        for index in body.jobs.indices {
            let (job, problems) = try makeRequest(body.jobs[index], field: "jobs[\(index)].", context: context)
            requests.append(job)
            issues += problems
        }
        return (requests, Array(issues.prefix(50)))
    }

    /// Members may cancel, retry or delete only jobs they enqueued; owners and admins any job
    /// of the tenant. Returns the job id. Throws 404 (missing or another tenant's) or 403.
    func authorizeChange(_ context: AuthenticatedContext) async throws -> String {
        let id = try context.parameters.require("id")
        guard let job = try await queue.store.job(id: id, tenantId: context.identity.tenantId) else { throw AppError.notFound("No such job.") }
        try context.identity.requireAdminOrCreator(job.createdBy, "Only admins and the job's creator can change it.")
        return id
    }

    /// Adds the routes to the authenticated group; the two enqueue routes honour `Idempotency-Key`.
    package func addRoutes(to group: RouterGroup<AuthenticatedContext>) {
        group.group("jobs").add(middleware: idempotency)
            .resource(create: enqueue)
            .post("batch", use: enqueueBatch)
        group.group("jobs")
            .resource(list: list, show: show, delete: delete)
            .post(":id/cancel", use: cancel)
            .post(":id/retry", use: retry)
            .get(":id/events", use: events)
    }

    /// `POST /jobs`: 201 for a new job, 200 when its unique key matched an unfinished one.
    @Sendable func enqueue(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        var request = request
        let body = try await decodeEnqueue(&request, context: context)
        let (job, issues) = try makeRequest(body, field: "", context: context)
        if !issues.isEmpty { throw AppError.invalidInput(issues) }
        let (created, isNew) = try await queue.enqueue(job, tenantId: context.identity.tenantId, createdBy: context.identity.userId)
        return .json(created, status: isNew ? .created : .ok, headers: [.location: "/jobs/\(created.id)"])
    }

    /// `POST /jobs/batch`: up to ``JobQueue/maxBatch`` jobs in one transaction.
    @Sendable func enqueueBatch(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        var request = request
        let body = try await Self.unifyingRunAt {
            try await request.decodeJSON(as: BatchBody.self, context: context) { body in
                try makeRequests(body, context: context).1
            }
        }
        let (requests, issues) = try makeRequests(body, context: context)
        if !issues.isEmpty { throw AppError.invalidInput(issues) }
        let results = try await queue.enqueueMany(requests, tenantId: context.identity.tenantId, createdBy: context.identity.userId)
        let batch = BatchResult(results: results)
        return .json(batch, status: batch.createdCount > 0 ? .created : .ok)
    }

    /// `GET /jobs[?state=&kind=]`: a page of the tenant's jobs.
    @Sendable func list(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        let page = try PageRequest.parse(request.uri, validateKey: UUIDv7.isValid)
        var state: JobState?
        if let raw = request.uri.queryParameters.get("state") {
            guard let parsed = JobState(rawValue: raw) else {
                throw AppError.invalidField("state", "must be one of \(JobState.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            state = parsed
        }
        let kind = request.uri.queryParameters.get("kind").map { String($0) }
        if let kind, kind.isEmpty || kind.utf8.count > 64 || !kind.utf8.allSatisfy({ $0 >= 0x21 && $0 <= 0x7E }) {
            throw AppError.invalidField("kind", "must be 1 to 64 visible ASCII characters")
        }
        return .json(try await queue.store.list(tenantId: context.identity.tenantId, state: state, kind: kind, page: page))
    }

    /// `GET /jobs/{id}`.
    @Sendable func show(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        guard let job = try await queue.store.job(id: try context.parameters.require("id"), tenantId: context.identity.tenantId) else {
            throw AppError.notFound("No such job.")
        }
        return .json(job)
    }

    /// `POST /jobs/{id}/cancel` (the job's creator, owners and admins).
    @Sendable func cancel(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        let id = try await authorizeChange(context)
        return .json(try await queue.cancel(id: id, tenantId: context.identity.tenantId))
    }

    /// `POST /jobs/{id}/retry` (the job's creator, owners and admins).
    @Sendable func retry(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        let id = try await authorizeChange(context)
        return .json(try await queue.retry(id: id, tenantId: context.identity.tenantId))
    }

    /// `DELETE /jobs/{id}` (the job's creator, owners and admins).
    @Sendable func delete(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        try await queue.delete(id: try await authorizeChange(context), tenantId: context.identity.tenantId)
        return Response(status: .noContent)
    }
}
