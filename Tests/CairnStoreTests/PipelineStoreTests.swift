import CairnHTTP
import CairnStorage
import CairnTestSupport
import Foundation
import HTTPTypes
import SQLKit
import Testing

@testable import CairnPipelines

@Suite("PipelineStore on both engines")
struct PipelineStoreTests {
    @Test(arguments: TestEngine.available)
    func aPipelineReadsBackWithItsSpecificationOnlyInItsTenant(engine: TestEngine) async throws {
        try await withStore(engine, PipelineStore.init) { store, tenant, other, database in
            let spec = Factory.pipelineSpec(sql: "SELECT name, COUNT(*) AS n FROM input GROUP BY name", cron: "0 * * * *")
            let pipeline = try await Factory.pipeline(
                on: database, tenant: tenant, name: "Hourly counts", spec: spec, scheduleId: "schedule-1", createdBy: "someone", createdAt: 1_000)

            let stored = try #require(try await store.get(id: pipeline.id, tenantId: tenant.id))
            #expect(stored.spec == spec)
            #expect(stored.name == "Hourly counts")
            #expect(stored.scheduleId == "schedule-1")
            #expect(stored.lastScheduledFileId == nil)
            #expect(stored.createdBy == "someone")
            #expect(stored.createdAt == 1_000)
            #expect(stored.updatedAt == 1_000)
            #expect(stored.version == 1)
            #expect(try await store.get(id: pipeline.id, tenantId: other.id) == nil)
            #expect(try await store.get(id: "not-a-uuid", tenantId: tenant.id) == nil)
            #expect(try await store.list(tenantId: other.id, page: PageRequest()).items.isEmpty)
        }
    }

    @Test(arguments: TestEngine.available)
    func pipelinesPageNewestFirst(engine: TestEngine) async throws {
        try await withStore(engine, PipelineStore.init) { store, tenant, other, database in
            let made = try await rows(5, in: tenant, beside: other) { owner, index in
                try await Factory.pipeline(on: database, tenant: owner, name: "P\(index)")
            }
            try await expectListing(limit: 2, made.reversed().map(\.id), id: \.id) { try await store.list(tenantId: tenant.id, page: $0) }
        }
    }

    @Test(arguments: TestEngine.available)
    func updatesReplaceThePipelineOnlyAtTheExpectedVersionInItsTenant(engine: TestEngine) async throws {
        try await withStore(engine, PipelineStore.init) { store, tenant, other, database in
            let pipeline = try await Factory.pipeline(on: database, tenant: tenant, name: "Before", createdAt: 1_000)

            var edit = pipeline
            edit.name = "After"
            edit.spec = Factory.pipelineSpec(sql: "SELECT 1 AS one FROM input", cron: "*/5 * * * *")
            edit.scheduleId = "schedule-2"
            edit.updatedAt = 2_000
            let changed = edit
            edit.tenantId = other.id
            let hijack = edit

            #expect(try await !database.transaction { db in try await PipelineStore.update(hijack, expected: 1, on: db) })
            #expect(try await !database.transaction { db in try await PipelineStore.update(changed, expected: 2, on: db) })
            #expect(try await store.get(id: pipeline.id, tenantId: tenant.id)?.name == "Before")

            #expect(try await database.transaction { db in try await PipelineStore.update(changed, expected: 1, on: db) })
            let stored = try #require(try await store.get(id: pipeline.id, tenantId: tenant.id))
            #expect(stored.name == "After")
            #expect(stored.spec == changed.spec)
            #expect(stored.scheduleId == "schedule-2")
            #expect(stored.version == 2)
            #expect(stored.updatedAt == 2_000)
            #expect(stored.createdAt == 1_000)
            // The version moved on: the same change at version 1 now loses.
            #expect(try await !database.transaction { db in try await PipelineStore.update(changed, expected: 1, on: db) })
        }
    }

    @Test(arguments: TestEngine.available)
    func deletesAreTenantScoped(engine: TestEngine) async throws {
        try await withStore(engine, PipelineStore.init) { store, tenant, other, database in
            let pipeline = try await Factory.pipeline(on: database, tenant: tenant)
            try await database.transaction { db in try await PipelineStore.delete(id: pipeline.id, tenantId: other.id, on: db) }
            #expect(try await store.get(id: pipeline.id, tenantId: tenant.id) != nil)
            try await database.transaction { db in try await PipelineStore.delete(id: pipeline.id, tenantId: tenant.id, on: db) }
            #expect(try await store.get(id: pipeline.id, tenantId: tenant.id) == nil)
        }
    }

    @Test(arguments: TestEngine.available)
    func theLastScheduledFileOnlyMovesForward(engine: TestEngine) async throws {
        try await withStore(engine, PipelineStore.init) { store, tenant, other, database in
            let pipeline = try await Factory.pipeline(on: database, tenant: tenant)
            let (older, newer) = (UUIDv7.make(), UUIDv7.make())

            try await store.recordScheduledFile(pipelineId: pipeline.id, tenantId: other.id, fileId: older)
            #expect(try await store.get(id: pipeline.id, tenantId: tenant.id)?.lastScheduledFileId == nil)
            try await store.recordScheduledFile(pipelineId: pipeline.id, tenantId: tenant.id, fileId: newer)
            #expect(try await store.get(id: pipeline.id, tenantId: tenant.id)?.lastScheduledFileId == newer)
            // A run that took an older file and finished later does not move it back.
            try await store.recordScheduledFile(pipelineId: pipeline.id, tenantId: tenant.id, fileId: older)
            #expect(try await store.get(id: pipeline.id, tenantId: tenant.id)?.lastScheduledFileId == newer)
        }
    }

    @Test(arguments: TestEngine.available)
    func anUnreadableStoredSpecificationIsAnInternalError(engine: TestEngine) async throws {
        try await withStore(engine, PipelineStore.init) { store, tenant, _, database in
            let pipeline = try await Factory.pipeline(on: database, tenant: tenant)
            try await database.write { db in
                try await db.raw("UPDATE pipelines SET spec = 'not json' WHERE id = \(bind: pipeline.id)").run()
            }
            await expectAppError(.internalServerError) { try await store.get(id: pipeline.id, tenantId: tenant.id) }
        }
    }
}
