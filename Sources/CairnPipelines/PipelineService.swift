package import CairnFiles
package import CairnHTTP
package import CairnJobs
import CairnStorage
import Foundation
import SQLKit

/// A create or update of a pipeline as a client sent it: every member optional (a create
/// requires `name`, `input` and `sql`); `schedule` is `.some(nil)` when the client removes it.
package struct PipelineChanges: Sendable {
    /// A label, 1 to 100 characters (trimmed).
    package var name: String?
    /// How to read the file.
    package var input: PipelineSpec.Input?
    /// The tenant's query.
    package var sql: String?
    /// How to write the result (create's default: CSV).
    package var output: PipelineSpec.Output?
    /// What a bad record does (create's default: `fail`).
    package var onRowError: PipelineSpec.RowErrorPolicy?
    /// nil: unchanged (none on create); `.some(nil)`: removed; `.some(schedule)`: set.
    package var schedule: PipelineSpec.Schedule??

    /// Creates a change set; members left nil are unchanged.
    package init(
        name: String? = nil, input: PipelineSpec.Input? = nil, sql: String? = nil, output: PipelineSpec.Output? = nil,
        onRowError: PipelineSpec.RowErrorPolicy? = nil, schedule: PipelineSpec.Schedule?? = nil
    ) {
        self.name = name
        self.input = input
        self.sql = sql
        self.output = output
        self.onRowError = onRowError
        self.schedule = schedule
    }
}

/// Pipelines' use cases, whatever calls them: a pipeline and its job-system schedule are
/// written in one transaction (so a schedule never outlives, or runs ahead of, its pipeline),
/// and runs start as jobs of kind `pipeline.run`. Reads and writes are scoped to `tenantId`:
/// another tenant's pipeline or file is 404.
package struct PipelineService: Sendable {
    /// The pipelines' table.
    package let store: PipelineStore
    let files: FileStore
    let jobs: JobQueue

    /// Creates the service over the pipelines' store, the tenant's files (a run's input) and
    /// the job queue (runs and schedules).
    package init(store: PipelineStore, files: FileStore, jobs: JobQueue) {
        self.store = store
        self.files = files
        self.jobs = jobs
    }

    /// A pipeline of the tenant.
    /// - Throws: 404 `not_found` when the tenant has no pipeline `id`.
    package func get(id: String, tenantId: String) async throws -> Pipeline {
        guard let pipeline = try await store.get(id: id, tenantId: tenantId) else { throw AppError.notFound("No such pipeline.") }
        return pipeline
    }

    /// The spec of a new pipeline and every issue with `changes` (all of them checked without
    /// the database); no spec when a required member is missing.
    package static func newSpec(_ changes: PipelineChanges) -> (PipelineSpec?, [FieldIssue]) {
        var issues: [FieldIssue] = []
        for (field, present) in [("name", changes.name != nil), ("input", changes.input != nil), ("sql", changes.sql != nil)] where !present {
            issues.append(FieldIssue(field: field, issue: "is required"))
        }
        guard let name = changes.name, let input = changes.input, let sql = changes.sql else {
            // The name needs nothing else to be checked.
            if let name = changes.name, let issue = PipelineValidation.nameIssue(name) { issues.append(issue) }
            return (nil, issues)
        }
        let spec = PipelineSpec(
            input: input, sql: sql, output: changes.output ?? PipelineSpec.Output(format: .csv), onRowError: changes.onRowError ?? .fail,
            schedule: changes.schedule ?? nil)
        PipelineValidation.validate(name: name, spec: spec, issues: &issues)
        return (spec, issues)
    }

    /// A page of the tenant's pipelines, newest first.
    package func list(tenantId: String, page: PageRequest) async throws -> Page<Pipeline> {
        try await store.list(tenantId: tenantId, page: page)
    }

    /// Stores a new pipeline (version 1) and, when it has a schedule, its job schedule, in one
    /// transaction.
    /// - Throws: 400 `invalid_input` listing every missing or invalid member; the database's error
    ///   (nothing is stored then).
    package func create(_ changes: PipelineChanges, tenantId: String, createdBy: String?) async throws -> Pipeline {
        let (spec, issues) = Self.newSpec(changes)
        guard issues.isEmpty, let spec, let name = changes.name else { throw AppError.invalidInput(issues) }
        let now = WallClock.milliseconds()
        let pipeline = Pipeline(
            id: UUIDv7.make(), tenantId: tenantId, name: name.trimmingCharacters(in: .whitespaces), spec: spec,
            scheduleId: spec.schedule == nil ? nil : UUIDv7.make(), lastScheduledFileId: nil, createdBy: createdBy, createdAt: now,
            updatedAt: now, version: 1)
        try await store.database.transaction { db in
            try await PipelineStore.insert(pipeline, on: db)
            try await syncSchedule(pipeline, previous: nil, on: db)
        }
        return pipeline
    }

    /// Applies `changes` to the tenant's pipeline `id` and brings its job schedule in line
    /// (created, replaced or removed), in one transaction.
    /// - Parameter expectedVersion: the version the client saw (`If-Match`), nil for any.
    /// - Returns: the stored pipeline, one version later (unchanged when `changes` is empty).
    /// - Throws: 404 `not_found`; 412 `precondition_failed` when the version is not
    ///   `expectedVersion` or another change came first; 400 `invalid_input`.
    package func update(id: String, tenantId: String, expectedVersion: Int?, changes: PipelineChanges) async throws -> Pipeline {
        let current = try await get(id: id, tenantId: tenantId)
        if let expectedVersion, expectedVersion != current.version { throw AppError.preconditionFailed() }
        // Nothing to change (PATCH `{}`): no write, so `version`, `ETag` and `updatedAt` stay.
        if changes.name == nil, changes.input == nil, changes.sql == nil, changes.output == nil, changes.onRowError == nil,
            changes.schedule == nil
        {
            return current
        }
        let updated = try Self.applying(changes, to: current, now: WallClock.milliseconds())
        // The stored values again change nothing either: no write, no new version.
        if updated.name == current.name, updated.spec == current.spec { return current }
        let saved = try await store.database.transaction { db -> Bool in
            guard try await PipelineStore.update(updated, expected: current.version, on: db) else { return false }
            try await syncSchedule(updated, previous: current, on: db)
            return true
        }
        guard saved else { throw AppError.preconditionFailed() }
        return updated
    }

    /// Deletes the tenant's pipeline `id` and its job schedule, in one transaction.
    /// - Parameter expectedVersion: the version the client saw (`If-Match`), nil for any.
    /// - Throws: 404 `not_found`; 412 `precondition_failed` when the version is not `expectedVersion`.
    package func delete(id: String, tenantId: String, expectedVersion: Int?) async throws {
        let current = try await get(id: id, tenantId: tenantId)
        if let expectedVersion, expectedVersion != current.version { throw AppError.preconditionFailed() }
        try await store.database.transaction { db in
            try await PipelineStore.delete(id: current.id, tenantId: current.tenantId, on: db)
            if let scheduleId = current.scheduleId { try await jobs.deleteSchedule(id: scheduleId, tenantId: current.tenantId, on: db) }
        }
    }

    /// Starts a run of the tenant's pipeline `id` on its file `fileId`, as a job.
    /// - Returns: the enqueued `pipeline.run` job.
    /// - Throws: 404 `not_found` for the pipeline or the file; 400 `invalid_input` on `fileId` when
    ///   the file's format is neither the pipeline's input format nor `binary`; the job system's
    ///   errors (429 when the tenant has too many pending jobs).
    package func startRun(pipelineId id: String, fileId: String, tenantId: String, createdBy: String?) async throws -> Job {
        let pipeline = try await get(id: id, tenantId: tenantId)
        guard let file = try await files.get(id: fileId, tenantId: tenantId) else { throw AppError.notFound("No such file.") }
        let format = pipeline.spec.input.format.rawValue
        guard file.format == format || file.format == "binary" else {
            throw AppError.invalidField("fileId", "names a \(file.format) file, but the pipeline reads \(format)")
        }
        return try await jobs.enqueue(RunPipeline(pipelineId: pipeline.id, fileId: file.id), tenantId: tenantId, createdBy: createdBy).job
    }

    /// `current` with `changes` applied, validated, one version later: a schedule gets an id
    /// when it appears and loses it when removed.
    /// - Throws: 400 `invalid_input` listing every invalid member.
    static func applying(_ changes: PipelineChanges, to current: Pipeline, now: Int64) throws -> Pipeline {
        var updated = current
        updated.name = changes.name?.trimmingCharacters(in: .whitespaces) ?? current.name
        updated.spec.input = changes.input ?? current.spec.input
        updated.spec.sql = changes.sql ?? current.spec.sql
        updated.spec.output = changes.output ?? current.spec.output
        updated.spec.onRowError = changes.onRowError ?? current.spec.onRowError
        if let schedule = changes.schedule { updated.spec.schedule = schedule }
        var issues: [FieldIssue] = []
        PipelineValidation.validate(name: changes.name, spec: updated.spec, compile: changes.sql != nil || changes.input != nil, issues: &issues)
        if !issues.isEmpty { throw AppError.invalidInput(issues) }
        if updated.spec.schedule == nil {
            updated.scheduleId = nil
        } else if updated.scheduleId == nil {
            updated.scheduleId = UUIDv7.make()
        }
        updated.updatedAt = now
        updated.version = current.version + 1
        return updated
    }

    /// Creates, replaces or removes the job-system schedule that runs a pipeline, in the
    /// transaction that stores the pipeline.
    func syncSchedule(_ pipeline: Pipeline, previous: Pipeline?, on db: any SQLDatabase) async throws {
        if let old = previous?.scheduleId, old != pipeline.scheduleId {
            try await jobs.deleteSchedule(id: old, tenantId: pipeline.tenantId, on: db)
        }
        guard let schedule = pipeline.spec.schedule, let scheduleId = pipeline.scheduleId else { return }
        if let previous, previous.spec.schedule == schedule, previous.scheduleId == scheduleId { return }
        try await jobs.putSchedule(
            id: scheduleId, tenantId: pipeline.tenantId, name: "pipeline \(pipeline.name)", cron: schedule.cron,
            timeZone: schedule.timeZone ?? "UTC", job: RunPipeline(pipelineId: pipeline.id), createdBy: pipeline.createdBy, on: db)
    }
}
