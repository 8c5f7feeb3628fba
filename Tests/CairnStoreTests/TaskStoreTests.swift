import CairnHTTP
import CairnStorage
import CairnTasks
import CairnTestSupport
import Foundation
import Testing

@Suite("TaskStore on both engines")
struct TaskStoreTests {
    @Test(arguments: TestEngine.available)
    func aTaskReadsBackAsInsertedOnlyInItsTenant(engine: TestEngine) async throws {
        try await withStore(engine, TaskStore.init) { store, tenant, other, database in
            let task = try await Factory.task(on: database, tenant: tenant, title: "Write tests", description: "Both engines", completed: true)
            #expect(try await store.get(id: task.id, tenantId: tenant.id) == task)
            #expect(try await store.get(id: task.id, tenantId: other.id) == nil)
            #expect(try await store.get(id: "not-a-uuid", tenantId: tenant.id) == nil)
            #expect(try await store.list(tenantId: other.id, completed: nil, page: PageRequest()).items.isEmpty)
            #expect(try await store.batch(tenantId: other.id, after: nil, limit: 10).isEmpty)
        }
    }

    /// The hot reads run their cached SQLite statements as compiled: a statement that SQLite
    /// marks to be compiled again when a parameter is bound anew (a bare bound LIMIT, or any
    /// statement with such a mark when its bindings are cleared) would be parsed and planned on
    /// every request.
    @Test(arguments: TestEngine.available)
    func hotReadsKeepTheirCompiledStatements(engine: TestEngine) async throws {
        try await withStore(engine, TaskStore.init) { store, tenant, other, database in
            let made = try await rows(4, in: tenant, beside: other) { owner, index in
                try await Factory.task(on: database, tenant: owner, title: "Task \(index)", completed: index % 2 == 0)
            }
            for round in 1...12 {
                let limit = round % 5 + 1
                let page = try await store.list(tenantId: tenant.id, completed: nil, page: PageRequest(limit: limit))
                #expect(page.items.map(\.id) == Array(made.reversed().map(\.id).prefix(limit)))
                #expect(try await store.list(tenantId: tenant.id, completed: round % 2 == 0, page: PageRequest(limit: limit)).items.count <= limit)
                #expect(try await store.get(id: made[round % made.count].id, tenantId: tenant.id) == made[round % made.count])
            }
            if let counts = database.sqliteStatementCacheCounts {
                #expect(counts.reused > 0, "\(counts)")
                #expect(counts.recompiled == 0, "\(counts)")
            }
        }
    }

    @Test(arguments: TestEngine.available)
    func listsPageNewestFirstAndFilterByCompletion(engine: TestEngine) async throws {
        try await withStore(engine, TaskStore.init) { store, tenant, other, database in
            let made = try await rows(7, in: tenant, beside: other) { owner, index in
                try await Factory.task(on: database, tenant: owner, title: "Task \(index)", completed: index % 2 == 0)
            }
            try await expectListing(limit: 3, made.reversed().map(\.id), id: \.id) {
                try await store.list(tenantId: tenant.id, completed: nil, page: $0)
            }
            try await expectListing(limit: 2, made.filter(\.completed).reversed().map(\.id), id: \.id) {
                try await store.list(tenantId: tenant.id, completed: true, page: $0)
            }
            try await expectListing(limit: 2, made.filter { !$0.completed }.reversed().map(\.id), id: \.id) {
                try await store.list(tenantId: tenant.id, completed: false, page: $0)
            }
        }
    }

    @Test(arguments: TestEngine.available)
    func updatesApplyAtTheExpectedVersionInTheTenant(engine: TestEngine) async throws {
        try await withStore(engine, TaskStore.init) { store, tenant, other, database in
            let task = try await Factory.task(on: database, tenant: tenant, title: "Before", description: "Keep me")

            #expect(try await store.update(id: task.id, tenantId: other.id, expectedVersion: nil, change: TaskChange(title: "Hijacked")) == nil)
            #expect(try await store.update(id: task.id, tenantId: tenant.id, expectedVersion: 2, change: TaskChange(title: "Stale")) == nil)
            #expect(try await store.update(id: "not-a-uuid", tenantId: tenant.id, expectedVersion: nil, change: TaskChange(title: "X")) == nil)
            #expect(try await store.get(id: task.id, tenantId: tenant.id) == task)

            // Fields left nil stay; the title and completion change.
            let first = try await store.update(
                id: task.id, tenantId: tenant.id, expectedVersion: 1, change: TaskChange(title: "After", completed: true))
            #expect(first?.version == 2)
            #expect(first?.title == "After")
            #expect(first?.description == "Keep me")
            #expect(first?.completed == true)
            #expect(first?.createdAt == task.createdAt)
            // `.some(nil)` clears the description.
            let cleared = try await store.update(id: task.id, tenantId: tenant.id, expectedVersion: nil, change: TaskChange(description: .some(nil)))
            #expect(cleared?.version == 3)
            #expect(cleared?.description == nil)
            #expect(cleared?.title == "After")
            #expect(try await store.get(id: task.id, tenantId: tenant.id) == cleared)
        }
    }

    @Test(arguments: TestEngine.available)
    func deletesApplyAtTheExpectedVersionInTheTenant(engine: TestEngine) async throws {
        try await withStore(engine, TaskStore.init) { store, tenant, other, database in
            let task = try await Factory.task(on: database, tenant: tenant)
            let bystander = try await Factory.task(on: database, tenant: tenant)

            #expect(try await !store.delete(id: task.id, tenantId: other.id, expectedVersion: nil))
            #expect(try await !store.delete(id: task.id, tenantId: tenant.id, expectedVersion: 5))
            #expect(try await !store.delete(id: "not-a-uuid", tenantId: tenant.id, expectedVersion: nil))
            #expect(try await store.get(id: task.id, tenantId: tenant.id) != nil)
            #expect(try await store.delete(id: task.id, tenantId: tenant.id, expectedVersion: 1))
            #expect(try await store.get(id: task.id, tenantId: tenant.id) == nil)
            #expect(try await !store.delete(id: task.id, tenantId: tenant.id, expectedVersion: nil))
            #expect(try await store.get(id: bystander.id, tenantId: tenant.id) == bystander)
        }
    }

    @Test(arguments: TestEngine.available)
    func batchesWalkOldestFirstAfterAnId(engine: TestEngine) async throws {
        try await withStore(engine, TaskStore.init) { store, tenant, other, database in
            let made = try await rows(5, in: tenant, beside: other) { owner, index in
                try await Factory.task(on: database, tenant: owner, completed: index >= 3)
            }
            #expect(try await store.batch(tenantId: tenant.id, after: nil, limit: 2).map(\.id) == made[0..<2].map(\.id))
            #expect(try await store.batch(tenantId: tenant.id, after: made[1].id, limit: 2).map(\.id) == made[2..<4].map(\.id))
            #expect(try await store.batch(tenantId: tenant.id, after: made[3].id, limit: 2).map(\.id) == [made[4].id])
            #expect(try await store.batch(tenantId: tenant.id, after: made[4].id, limit: 2).isEmpty)
            #expect(try await store.batch(tenantId: tenant.id, completed: true, after: nil, limit: 10).map(\.id) == [made[3].id, made[4].id])
            #expect(try await store.batch(tenantId: tenant.id, completed: false, after: made[0].id, limit: 10).map(\.id) == [made[1].id, made[2].id])
        }
    }

    /// The in-place read behind reports: every field as stored, keyset batches like `batch`,
    /// and a field read out of column order refused rather than answered with another column.
    @Test(arguments: TestEngine.available)
    func rowViewsLendEveryFieldInColumnOrderOnly(engine: TestEngine) async throws {
        try await withStore(engine, TaskStore.init) { store, tenant, other, database in
            let made = try await rows(3, in: tenant, beside: other) { owner, index in
                try await Factory.task(
                    on: database, tenant: owner, title: "Zürich \"東京\" \(index)", description: index == 1 ? nil : "d\(index)", completed: index == 2)
            }
            let read = try await store.scanBatch(tenantId: tenant.id, after: made[0].id, limit: 10, into: [TaskItem]()) { items, row in
                let id = try row.withID { String(decoding: $0, as: UTF8.self) }
                let title = try row.withTitle { String(decoding: $0, as: UTF8.self) }
                let description = try row.withDescription { $0.map { String(decoding: $0, as: UTF8.self) } }
                let completed = try row.completed()
                let createdBy = try row.withCreatedBy { String(decoding: $0, as: UTF8.self) }
                let createdAt = try row.createdAt()
                let updatedAt = try row.updatedAt()
                items.append(
                    TaskItem(
                        id: id, tenantId: tenant.id, title: title, description: description, completed: completed, createdBy: createdBy,
                        version: 1, createdAt: createdAt, updatedAt: updatedAt))
            }
            #expect(read == Array(made[1...]))
            let error = await #expect(throws: PositionalRowError.self) {
                _ = try await store.scanBatch(tenantId: tenant.id, after: nil, limit: 10, into: 0) { _, row in
                    _ = try row.withID { $0.count }
                    _ = try row.completed()
                }
            }
            #expect(error?.column == 3)
        }
    }

    @Test(arguments: TestEngine.available)
    func batchInsertsCrossChunksAndAreAllOrNothing(engine: TestEngine) async throws {
        try await withStore(engine, TaskStore.init) { store, tenant, _, database in
            let now = WallClock.milliseconds()
            func row(_ index: Int, id: String = UUIDv7.make()) -> TaskItem {
                TaskItem(
                    id: id, tenantId: tenant.id, title: "Seeded \(index)", description: nil, completed: false, createdBy: "seed", version: 1,
                    createdAt: now, updatedAt: now)
            }
            // 1,001 rows: two statements (1,000 rows each at most).
            let rows = (0..<1_001).map { row($0) }
            try await store.insertBatch(rows)
            let stored = try await store.batch(tenantId: tenant.id, after: nil, limit: 2_000)
            #expect(stored.map(\.id) == rows.map(\.id))
            #expect(stored.last == rows.last)

            // The second chunk repeats an id: the first chunk is rolled back with it.
            let failing = (0..<1_000).map { row($0) } + [row(1_000, id: rows[0].id)]
            await #expect(throws: (any Error).self) { try await store.insertBatch(failing) }
            #expect(try await store.get(id: failing[0].id, tenantId: tenant.id) == nil)
            #expect(try await store.batch(tenantId: tenant.id, after: nil, limit: 3_000).count == 1_001)
            try await store.insertBatch([])
        }
    }
}
