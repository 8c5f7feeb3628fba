public import CairnFiles
import CairnFormats
public import CairnHTTP
import CairnJobs
import CairnStorage
import Foundation
import HTTPTypes
public import Hummingbird
import SQLKit

/// `/pipelines`: a tenant's processing logic (owners and admins write, members read and run)
/// and `POST /pipelines/{id}/runs`, which starts a run as a job (202 + `Location: /jobs/{id}`,
/// `Idempotency-Key` honoured).
public struct PipelinesController: Sendable {
    let store: PipelineStore
    let files: FileStore
    let runner: PipelineRunner

    /// Creates the controller.
    public init(store: PipelineStore, files: FileStore, runner: PipelineRunner) {
        self.store = store
        self.files = files
        self.runner = runner
    }

    /// A create or update body. On update every member is optional; `schedule: null` removes
    /// the schedule.
    struct Body: Decodable {
        var name: String?
        var input: PipelineSpec.Input?
        var sql: String?
        var output: PipelineSpec.Output?
        var onRowError: PipelineSpec.RowErrorPolicy?
        var schedule: PipelineSpec.Schedule?
        var hasSchedule = false

        enum CodingKeys: String, CodingKey {
            case name, input, sql, output, onRowError, schedule
        }

        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            name = try container.decodeIfPresent(String.self, forKey: .name)
            input = try container.decodeIfPresent(PipelineSpec.Input.self, forKey: .input)
            sql = try container.decodeIfPresent(String.self, forKey: .sql)
            output = try container.decodeIfPresent(PipelineSpec.Output.self, forKey: .output)
            onRowError = try container.decodeIfPresent(PipelineSpec.RowErrorPolicy.self, forKey: .onRowError)
            hasSchedule = container.contains(.schedule)
            schedule = try container.decodeIfPresent(PipelineSpec.Schedule.self, forKey: .schedule)
        }
    }

    struct RunBody: Decodable {
        var fileId: String
    }

    /// Adds the routes to the authenticated group: owners and admins write, members read and run.
    public func addRoutes(to group: RouterGroup<AuthenticatedContext>) {
        group.group("pipelines")
            .get(use: list)
            .get(":id", use: show)
        group.group("pipelines").add(middleware: RequireAdmin())
            .post(use: create)
            .patch(":id", use: update)
            .delete(":id", use: delete)
        group.group("pipelines").add(middleware: IdempotencyMiddleware(database: store.database))
            .post(":id/runs", use: run)
    }

    /// `POST /pipelines` (admins): the pipeline and, with a schedule, its job schedule, in one transaction.
    @Sendable func create(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        let jobs = runner.jobs
        var request = request
        let body = try await request.decodeJSON(as: Body.self, context: context)
        var issues: [FieldIssue] = []
        for (field, present) in [("name", body.name != nil), ("input", body.input != nil), ("sql", body.sql != nil)] where !present {
            issues.append(FieldIssue(field: field, issue: "is required"))
        }
        guard let name = body.name, let input = body.input, let sql = body.sql else { throw AppError.invalidInput(issues) }
        let spec = PipelineSpec(
            input: input, sql: sql, output: body.output ?? PipelineSpec.Output(format: .csv), onRowError: body.onRowError ?? .fail,
            schedule: body.schedule)
        PipelineValidation.validate(name: name, spec: spec, issues: &issues)
        if !issues.isEmpty { throw AppError.invalidInput(issues) }
        let now = WallClock.milliseconds()
        let pipeline = Pipeline(
            id: UUIDv7.make(), tenantId: context.identity.tenantId, name: name.trimmingCharacters(in: .whitespaces), spec: spec,
            scheduleId: spec.schedule == nil ? nil : UUIDv7.make(), lastScheduledFileId: nil, createdBy: context.identity.userId,
            createdAt: now, updatedAt: now, version: 1)
        try await store.database.transaction { db in
            try await PipelineStore.insert(pipeline, on: db)
            try await Self.syncSchedule(pipeline, previous: nil, jobs: jobs, on: db)
        }
        return .json(pipeline, status: .created, headers: [.location: "/pipelines/\(pipeline.id)", .eTag: ETag.of(version: 1)])
    }

    /// `GET /pipelines`: a page of the tenant's pipelines.
    @Sendable func list(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        let page = try PageRequest.parse(request.uri, validateKey: UUIDv7.isValid)
        return .json(try await store.list(tenantId: context.identity.tenantId, page: page))
    }

    /// `GET /pipelines/{id}`, with `If-None-Match` → 304.
    @Sendable func show(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        let pipeline = try await load(context)
        let etag = ETag.of(version: pipeline.version)
        if ETag.notModified(request, etag: etag) { return ETag.notModifiedResponse(etag: etag) }
        return .json(pipeline, headers: [.eTag: etag])
    }

    /// `PATCH /pipelines/{id}` (admins; `If-Match` optional; `schedule: null` removes the schedule).
    @Sendable func update(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        let jobs = runner.jobs
        let expected = try ETag.expectedVersion(request)
        var request = request
        let body = try await request.decodeJSON(as: Body.self, context: context)
        let current = try await load(context)
        if let expected, expected != current.version { throw AppError.preconditionFailed() }
        var updated = current
        updated.name = body.name?.trimmingCharacters(in: .whitespaces) ?? current.name
        updated.spec.input = body.input ?? current.spec.input
        updated.spec.sql = body.sql ?? current.spec.sql
        updated.spec.output = body.output ?? current.spec.output
        updated.spec.onRowError = body.onRowError ?? current.spec.onRowError
        if body.hasSchedule { updated.spec.schedule = body.schedule }
        var issues: [FieldIssue] = []
        PipelineValidation.validate(name: body.name, spec: updated.spec, issues: &issues)
        if !issues.isEmpty { throw AppError.invalidInput(issues) }
        if updated.spec.schedule == nil {
            updated.scheduleId = nil
        } else if updated.scheduleId == nil {
            updated.scheduleId = UUIDv7.make()
        }
        updated.updatedAt = WallClock.milliseconds()
        updated.version = current.version + 1
        let change = updated
        let saved = try await store.database.transaction { db -> Bool in
            guard try await PipelineStore.update(change, expected: current.version, on: db) else { return false }
            try await Self.syncSchedule(change, previous: current, jobs: jobs, on: db)
            return true
        }
        guard saved else { throw AppError.preconditionFailed() }
        return .json(updated, headers: [.eTag: ETag.of(version: updated.version)])
    }

    /// `DELETE /pipelines/{id}` (admins; `If-Match` optional): the pipeline and its schedule.
    @Sendable func delete(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        let jobs = runner.jobs
        let expected = try ETag.expectedVersion(request)
        let current = try await load(context)
        if let expected, expected != current.version { throw AppError.preconditionFailed() }
        try await store.database.transaction { db in
            try await PipelineStore.delete(id: current.id, tenantId: current.tenantId, on: db)
            if let scheduleId = current.scheduleId { try await jobs.deleteSchedule(id: scheduleId, tenantId: current.tenantId, on: db) }
        }
        return Response(status: .noContent)
    }

    /// `POST /pipelines/{id}/runs`: 202 + `Location: /jobs/{id}`; the run is a job.
    @Sendable func run(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        var request = request
        let body = try await request.decodeJSON(as: RunBody.self, context: context)
        let pipeline = try await load(context)
        guard let file = try await files.get(id: body.fileId, tenantId: context.identity.tenantId) else {
            throw AppError.notFound("No such file.")
        }
        let format = pipeline.spec.input.format.rawValue
        guard file.format == format || (file.format == "binary") else {
            throw AppError.invalidField("fileId", "names a \(file.format) file, but the pipeline reads \(format)")
        }
        let job = try await runner.enqueue(pipeline: pipeline, fileId: file.id, createdBy: context.identity.userId)
        return .json(job, status: .accepted, headers: [.location: "/jobs/\(job.id)"])
    }

    private func load(_ context: AuthenticatedContext) async throws -> Pipeline {
        guard let pipeline = try await store.get(id: try context.parameters.require("id"), tenantId: context.identity.tenantId) else {
            throw AppError.notFound("No such pipeline.")
        }
        return pipeline
    }

    /// Creates, replaces or removes the job-system schedule that runs a pipeline, in the
    /// transaction that stores the pipeline.
    static func syncSchedule(_ pipeline: Pipeline, previous: Pipeline?, jobs: JobQueue, on db: any SQLDatabase) async throws {
        if let old = previous?.scheduleId, old != pipeline.scheduleId {
            try await jobs.deleteSchedule(id: old, tenantId: pipeline.tenantId, on: db)
        }
        guard let schedule = pipeline.spec.schedule, let scheduleId = pipeline.scheduleId else { return }
        if let previous, previous.spec.schedule == schedule, previous.scheduleId == scheduleId { return }
        try await jobs.putSchedule(
            id: scheduleId, tenantId: pipeline.tenantId, name: "pipeline \(pipeline.name)", cron: schedule.cron,
            timeZone: schedule.timeZone ?? "UTC", job: RunPipeline(pipelineId: pipeline.id),
            createdBy: pipeline.createdBy, on: db)
    }
}
