import CairnFiles
import CairnHTTP
import CairnJobs
import CairnServer
import CairnStorage
import CairnTestSupport
import Foundation
import HTTPTypes
import SQLKit
import Testing

@testable import CairnPipelines

/// A row of `schedules`, as the job system stores a pipeline's schedule.
struct StoredSchedule: Equatable {
    var id: String
    var name: String
    var cron: String
    var timeZone: String
    var kind: String
    var args: String
}

/// The tenant's job schedules, oldest id first.
func schedules(of tenantId: String, in database: Database) async throws -> [StoredSchedule] {
    try await database.read { db in
        try await db.raw("SELECT id, name, cron, time_zone, kind, args FROM schedules WHERE tenant_id = \(bind: tenantId) ORDER BY id").all()
    }.map { row in
        StoredSchedule(
            id: try row.decode(column: "id", as: String.self), name: try row.decode(column: "name", as: String.self),
            cron: try row.decode(column: "cron", as: String.self), timeZone: try row.decode(column: "time_zone", as: String.self),
            kind: try row.decode(column: "kind", as: String.self), args: try row.decode(column: "args", as: String.self))
    }
}

/// The status of the `AppError` `body` throws (nil, with a failed expectation, when it throws none).
func appErrorStatus<R>(sourceLocation: SourceLocation = #_sourceLocation, _ body: () async throws -> R) async -> HTTPResponse.Status? {
    await #expect(throws: AppError.self, sourceLocation: sourceLocation) { _ = try await body() }?.status
}

/// A CSV pipeline body, with a schedule when `cron` is given.
func pipelineChanges(name: String = "Nightly", sql: String = "SELECT * FROM input", cron: String? = nil) -> PipelineChanges {
    PipelineChanges(
        name: name, input: PipelineSpec.Input(format: .csv, options: nil, recordPath: nil, columns: nil), sql: sql,
        schedule: cron.map { .some(PipelineSpec.Schedule(cron: $0, timeZone: "Europe/Paris", source: nil, namePattern: nil)) })
}

/// Runs `body` on a node of a fresh `engine` database with its pipeline service, the tenant
/// whose pipelines the test makes, and another tenant that must see none of them.
func withPipelineService(
    _ engine: TestEngine, _ body: @Sendable (PipelineService, _ tenant: TenantRow, _ other: TenantRow, CairnComponents) async throws -> Void
) async throws {
    try await withTestApp(engine) { _, components in
        let tenant = try await Factory.tenant(on: components.database)
        let other = try await Factory.tenant(on: components.database)
        try await body(components.pipelineService, tenant, other, components)
    }
}

/// `PipelineService` called directly on both engines: each write keeps the pipeline and its job
/// schedule in step, in one transaction, and runs start as jobs.
@Suite("PipelineService on both engines")
struct PipelineServiceTests {
    @Test(arguments: TestEngine.available)
    func createStoresThePipelineWithItsScheduleOrWithNone(engine: TestEngine) async throws {
        try await withPipelineService(engine) { service, tenant, _, components in
            let scheduled = try await service.create(pipelineChanges(name: "  Nightly ", cron: "0 3 * * *"), tenantId: tenant.id, createdBy: nil)
            #expect(scheduled.name == "Nightly")
            #expect(scheduled.version == 1)
            #expect(scheduled.spec.output.format == .csv)
            #expect(scheduled.spec.onRowError == .fail)
            let scheduleId = try #require(scheduled.scheduleId)
            #expect(try await service.get(id: scheduled.id, tenantId: tenant.id).scheduleId == scheduleId)
            let stored = try await schedules(of: tenant.id, in: components.database)
            #expect(stored.map(\.id) == [scheduleId])
            #expect(stored.first?.name == "pipeline Nightly")
            #expect(stored.first?.cron == "0 3 * * *")
            #expect(stored.first?.timeZone == "Europe/Paris")
            #expect(stored.first?.kind == "pipeline.run")
            #expect(stored.first?.args.contains(scheduled.id) == true)
            #expect(try await components.jobs.nextRun(scheduleId: scheduleId, tenantId: tenant.id) != nil)

            let plain = try await service.create(pipelineChanges(name: "On demand"), tenantId: tenant.id, createdBy: nil)
            #expect(plain.scheduleId == nil)
            #expect(try await schedules(of: tenant.id, in: components.database).count == 1)

            // Missing members are listed together, and nothing is stored.
            let missing = await #expect(throws: AppError.self) {
                try await service.create(PipelineChanges(input: pipelineChanges().input), tenantId: tenant.id, createdBy: nil)
            }
            #expect(missing?.errors.map(\.field) == ["name", "sql"])
            #expect(try await service.list(tenantId: tenant.id, page: PageRequest()).items.count == 2)
        }
    }

    @Test(arguments: TestEngine.available)
    func aPipelineIsNotStoredWhenItsScheduleCannotBe(engine: TestEngine) async throws {
        try await withPipelineService(engine) { service, tenant, _, components in
            // Without its table, the job system cannot store a schedule: the pipeline's insert,
            // made first in the same transaction, must go with it.
            try await components.database.write { db in try await db.raw("ALTER TABLE schedules RENAME TO schedules_away").run() }
            await #expect(throws: (any Error).self) {
                try await service.create(pipelineChanges(cron: "0 3 * * *"), tenantId: tenant.id, createdBy: nil)
            }
            #expect(try await service.list(tenantId: tenant.id, page: PageRequest()).items.isEmpty)
            // A pipeline without a schedule never touches the job system's table.
            let plain = try await service.create(pipelineChanges(), tenantId: tenant.id, createdBy: nil)
            #expect(try await service.list(tenantId: tenant.id, page: PageRequest()).items.map(\.id) == [plain.id])
            try await components.database.write { db in try await db.raw("ALTER TABLE schedules_away RENAME TO schedules").run() }
        }
    }

    @Test(arguments: TestEngine.available)
    func updatesAddReplaceKeepAndRemoveTheSchedule(engine: TestEngine) async throws {
        try await withPipelineService(engine) { service, tenant, other, components in
            let created = try await service.create(pipelineChanges(), tenantId: tenant.id, createdBy: nil)

            let added = try await service.update(
                id: created.id, tenantId: tenant.id, expectedVersion: 1,
                changes: PipelineChanges(schedule: pipelineChanges(cron: "0 3 * * *").schedule))
            let scheduleId = try #require(added.scheduleId)
            #expect(added.version == 2)
            #expect(try await schedules(of: tenant.id, in: components.database).map(\.cron) == ["0 3 * * *"])

            let replaced = try await service.update(
                id: created.id, tenantId: tenant.id, expectedVersion: nil,
                changes: PipelineChanges(schedule: pipelineChanges(cron: "30 4 * * 1").schedule))
            #expect(replaced.scheduleId == scheduleId)
            #expect(try await schedules(of: tenant.id, in: components.database).map(\.cron) == ["30 4 * * 1"])

            // A change that leaves the schedule alone leaves the job system's row alone.
            let before = try await schedules(of: tenant.id, in: components.database)
            let edited = try await service.update(id: created.id, tenantId: tenant.id, expectedVersion: 3, changes: PipelineChanges(sql: "SELECT 1"))
            #expect(edited.spec.sql == "SELECT 1")
            #expect(edited.scheduleId == scheduleId)
            #expect(try await schedules(of: tenant.id, in: components.database) == before)

            // A stale version, another tenant and an invalid change touch nothing.
            #expect(
                await appErrorStatus {
                    try await service.update(id: created.id, tenantId: tenant.id, expectedVersion: 3, changes: PipelineChanges(schedule: .some(nil)))
                } == .preconditionFailed)
            #expect(
                await appErrorStatus {
                    try await service.update(id: created.id, tenantId: other.id, expectedVersion: nil, changes: PipelineChanges(schedule: .some(nil)))
                } == .notFound)
            #expect(
                await appErrorStatus {
                    try await service.update(id: created.id, tenantId: tenant.id, expectedVersion: nil, changes: PipelineChanges(name: ""))
                } == .badRequest)
            #expect(try await service.get(id: created.id, tenantId: tenant.id).version == 4)
            #expect(try await schedules(of: tenant.id, in: components.database) == before)

            let removed = try await service.update(
                id: created.id, tenantId: tenant.id, expectedVersion: 4, changes: PipelineChanges(schedule: .some(nil)))
            #expect(removed.scheduleId == nil)
            #expect(removed.spec.schedule == nil)
            #expect(removed.version == 5)
            #expect(try await schedules(of: tenant.id, in: components.database).isEmpty)
            #expect(try await service.get(id: created.id, tenantId: tenant.id).scheduleId == nil)
        }
    }

    @Test(arguments: TestEngine.available)
    func deleteRemovesThePipelineAndItsSchedule(engine: TestEngine) async throws {
        try await withPipelineService(engine) { service, tenant, other, components in
            let pipeline = try await service.create(pipelineChanges(cron: "0 3 * * *"), tenantId: tenant.id, createdBy: nil)

            #expect(
                await appErrorStatus { try await service.delete(id: pipeline.id, tenantId: tenant.id, expectedVersion: 2) } == .preconditionFailed)
            #expect(await appErrorStatus { try await service.delete(id: pipeline.id, tenantId: other.id, expectedVersion: nil) } == .notFound)
            #expect(try await schedules(of: tenant.id, in: components.database).count == 1)

            try await service.delete(id: pipeline.id, tenantId: tenant.id, expectedVersion: 1)
            #expect(try await schedules(of: tenant.id, in: components.database).isEmpty)
            #expect(await appErrorStatus { try await service.get(id: pipeline.id, tenantId: tenant.id) } == .notFound)
        }
    }

    @Test(arguments: TestEngine.available)
    func startRunEnqueuesARunOfTheTenantsPipelineOnAFileItCanRead(engine: TestEngine) async throws {
        try await withPipelineService(engine) { service, tenant, other, components in
            let pipeline = try await service.create(pipelineChanges(), tenantId: tenant.id, createdBy: nil)
            let csv = try await Factory.file(on: components.database, tenant: tenant, format: "csv")
            let binary = try await Factory.file(on: components.database, tenant: tenant, format: "binary")
            let json = try await Factory.file(on: components.database, tenant: tenant, format: "json", contentType: "application/json")
            let othersFile = try await Factory.file(on: components.database, tenant: other, format: "csv")

            let job = try await service.startRun(pipelineId: pipeline.id, fileId: csv.id, tenantId: tenant.id, createdBy: "someone")
            #expect(job.kind == "pipeline.run")
            #expect(job.tenantId == tenant.id)
            #expect(job.createdBy == "someone")
            let args = try JSONDecoder().decode([String: String].self, from: Data(job.args.utf8))
            #expect(args == ["pipelineId": pipeline.id, "fileId": csv.id])
            #expect(try await components.jobs.store.job(id: job.id, tenantId: tenant.id)?.state == .available)
            _ = try await service.startRun(pipelineId: pipeline.id, fileId: binary.id, tenantId: tenant.id, createdBy: nil)

            let wrongFormat = await #expect(throws: AppError.self) {
                try await service.startRun(pipelineId: pipeline.id, fileId: json.id, tenantId: tenant.id, createdBy: nil)
            }
            #expect(wrongFormat?.errors.map(\.field) == ["fileId"])
            #expect(
                await appErrorStatus {
                    try await service.startRun(pipelineId: pipeline.id, fileId: othersFile.id, tenantId: tenant.id, createdBy: nil)
                } == .notFound)
            #expect(
                await appErrorStatus {
                    try await service.startRun(pipelineId: pipeline.id, fileId: othersFile.id, tenantId: other.id, createdBy: nil)
                } == .notFound)
        }
    }
}
