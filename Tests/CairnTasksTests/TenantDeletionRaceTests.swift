import AsyncHTTPClient
import CairnHTTP
import CairnServer
import CairnStorage
import CairnTasks
import CairnTestSupport
import Foundation
import HTTPTypes
import HummingbirdTesting
import NIOCore
import NIOHTTP1
import SQLKit
import Testing

/// The tenant's tasks, counted straight in the database.
private func tasks(of tenantId: String, _ database: Database) async throws -> Int {
    try await database.rowCount("tasks WHERE tenant_id = \(bind: tenantId)")
}

/// A task of `tenantId` as `POST /tasks` would make it.
private func newTask(tenantId: String, createdBy: String, title: String) -> TaskItem {
    let now = WallClock.milliseconds()
    return TaskItem(
        id: UUIDv7.make(), tenantId: tenantId, title: title, description: nil, completed: false, createdBy: createdBy, version: 1,
        createdAt: now, updatedAt: now)
}

@Suite("Tasks: a POST racing the deletion of its tenant")
struct TenantDeletionRaceTests {
    static let password = "correct horse battery"

    /// The trial's losing interleaving, ordered: the request's token was checked, then the
    /// tenant was deleted (committed), then the insert runs. It must fail as the token now
    /// does (401 `invalid_token`) and leave no row.
    @Test(arguments: TestEngine.available)
    func anInsertAfterTheTenantIsDeletedFailsAndLeavesNoRow(engine: TestEngine) async throws {
        try await withTestApp(engine) { app in
            let (owner, tokens) = try await app.client.registerAndLogin(email: "gone@example.com", password: Self.password)
            let deleted = try await app.client.json(.delete, "/users/me?tenant=delete", ["currentPassword": Self.password], token: tokens.accessToken)
            #expect(deleted.status == .noContent)
            let late = newTask(tenantId: owner.tenantId, createdBy: owner.id, title: "Too late")
            let error = await #expect(throws: AppError.self) { try await TaskStore(database: app.database).insert(late) }
            #expect(error?.status == .unauthorized)
            #expect(error?.code == .invalidToken)
            #expect(try await tasks(of: owner.tenantId, app.database) == 0)
        }
    }

    /// The other interleaving on PostgreSQL, ordered: an insert has run but not committed when
    /// the deletion starts. The deletion must wait for it (the insert's key check holds a key
    /// share lock on the tenant row, which the deletion locks first) and then delete the row;
    /// without that it reads the tasks before the insert commits and the row outlives the
    /// tenant. (SQLite's single writer cannot interleave them: it runs one, then the other.)
    @Test func aDeletionWaitsForAnInsertInFlightAndDeletesItsRow() async throws {
        guard TestEngine.available.contains(.postgres) else { return }
        try await withTestApp(.postgres) { app in
            let (owner, tokens) = try await app.client.registerAndLogin(email: "inflight@example.com", password: Self.password)
            let task = newTask(tenantId: owner.tenantId, createdBy: owner.id, title: "In flight")
            let deletion = Observed<Int?>(nil)
            try await app.database.transaction { db in
                try await db.raw(
                    """
                    INSERT INTO tasks (id, tenant_id, title, description, completed, created_by, version, created_at, updated_at)
                    VALUES (\(bind: task.id), \(bind: task.tenantId), \(bind: task.title), NULL, false, \(bind: task.createdBy), 1,
                    \(bind: task.createdAt), \(bind: task.updatedAt))
                    """
                ).run()
                let client = app.client
                Task {
                    let response = try? await client.json(
                        .delete, "/users/me?tenant=delete", ["currentPassword": Self.password], token: tokens.accessToken)
                    deletion.update { $0 = Int(response?.status.code ?? 0) }
                }
                // A lock wait is no event a test can subscribe to: poll the server's view of
                // its sessions until the deletion waits on a lock, or has already answered.
                try await pollUntil("the deletion waiting for the insert, or answering", every: .milliseconds(20)) {
                    if deletion.value != nil { return true }
                    return try await app.database.read { db in
                        try await db.raw(
                            """
                            SELECT COUNT(*) AS n FROM pg_stat_activity
                            WHERE datname = current_database() AND wait_event_type = 'Lock'
                            """
                        ).first()?.decode(column: "n", as: Int.self) ?? 0
                    } > 0
                }
            }
            let status = try await deletion.wait("the deletion answering") { $0 != nil }
            #expect(status == 204)
            #expect(try await tasks(of: owner.tenantId, app.database) == 0, "the task committed during the deletion outlived its tenant")
        }
    }

    /// A database made before `tasks/2` keeps its tasks through the migration, with their
    /// indexes, and loses only tasks whose tenant was deleted already (the trial left some);
    /// afterwards the key holds: a task naming no tenant is refused.
    @Test(arguments: TestEngine.available)
    func theForeignKeyMigrationKeepsLiveTasksAndDropsOrphans(engine: TestEngine) async throws {
        try await withTestDatabase(engine, migrated: false) { test in
            let database = try await test.open()
            do {
                try await Self.upgrade(database, engine: engine)
            } catch {
                await database.close()
                throw error
            }
            await database.close()
        }
    }

    /// ``theForeignKeyMigrationKeepsLiveTasksAndDropsOrphans(engine:)`` on an open database.
    private static func upgrade(_ database: Database, engine: TestEngine) async throws {
        let all = try allMigrations()
        let before = all.filter { !($0.module == "tasks" && $0.version >= 2) }
        #expect(before.count == all.count - 1)
        try await Migrator(database: database, migrations: before, logger: testLogger).migrate()
        let tenant = try await Factory.tenant(on: database)
        let kept = newTask(tenantId: tenant.id, createdBy: "u", title: "Kept")
        try await TaskStore(database: database).insert(kept)
        try await TaskStore(database: database).insert(newTask(tenantId: "01900000-0000-7000-8000-00000000dead", createdBy: "u", title: "Orphan"))
        #expect(try await database.rowCount("tasks") == 2)

        #expect(try await Migrator(database: database, migrations: all, logger: testLogger).migrate() == ["tasks/2"])
        #expect(try await database.rowCount("tasks") == 1)
        #expect(try await TaskStore(database: database).get(id: kept.id, tenantId: tenant.id) == kept)
        let indexes =
            engine == .sqlite
            ? "sqlite_master WHERE type = 'index' AND tbl_name = 'tasks' AND name LIKE 'tasks_tenant%'"
            : "pg_indexes WHERE tablename = 'tasks' AND indexname LIKE 'tasks_tenant%'"
        #expect(try await database.rowCount(SQLQueryString(indexes)) == 2)
        let orphan = newTask(tenantId: "01900000-0000-7000-8000-00000000dead", createdBy: "u", title: "Orphan again")
        await #expect(throws: AppError.self) { try await TaskStore(database: database).insert(orphan) }
    }

    /// The trial's run: 32 clients create tasks over loopback HTTP as fast as they can while
    /// the tenant's last owner deletes it. Invariant: once the deletion has answered 204 and
    /// every client has its answers, no task row of the tenant exists. Every `POST /tasks`
    /// answered 201 committed before the deletion read the tasks, which removed its row; every
    /// one that lost the race answered 401 `invalid_token` (its token is revoked either way)
    /// and wrote nothing. Each client stops at its first refusal, so every client's last
    /// answer is that 401: none is left running, and none got any other status.
    @Test(arguments: TestEngine.available)
    func concurrentCreatesRacingTheDeletionLeaveNoTaskOfTheTenant(engine: TestEngine) async throws {
        try await withTestApp(engine, mode: .live, runServices: false) { app in
            let (owner, tokens) = try await app.client.registerAndLogin(email: "doomed@example.com", password: Self.password)
            let (bystander, bystanderTokens) = try await app.client.registerAndLogin(email: "bystander@example.com", password: Self.password)
            #expect(try await app.client.json(.post, "/tasks", ["title": "Stays"], token: bystanderTokens.accessToken).status == .created)

            let clients = 32
            var configuration = HTTPClient.Configuration()
            configuration.connectionPool = .init(idleTimeout: .seconds(30), concurrentHTTP1ConnectionsPerHostSoftLimit: clients)
            let http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
            let url = "\(app.baseURL)/tasks"
            let token = tokens.accessToken
            let created = Observed(0)
            do {
                let (answers, deletion) = try await withThrowingTaskGroup(of: ([Int], Int?).self) { group in
                    for client in 0..<clients {
                        group.addTask {
                            // Bounded: a client stops at its first refusal, and after 500 creates.
                            var statuses: [Int] = []
                            for index in 0..<500 {
                                var request = HTTPClientRequest(url: url)
                                request.method = .POST
                                request.headers.add(name: "Authorization", value: "Bearer \(token)")
                                request.headers.add(name: "Content-Type", value: "application/json")
                                request.body = .bytes(ByteBuffer(string: #"{"title":"Client \#(client) task \#(index)"}"#))
                                let response = try await http.execute(request, timeout: .seconds(30))
                                let body = try await response.body.collect(upTo: 1 << 16)
                                let status = Int(response.status.code)
                                statuses.append(status)
                                guard status == 201 else {
                                    #expect(status == 401, "\(String(buffer: body))")
                                    #expect(String(buffer: body).contains("invalid_token"), "\(String(buffer: body))")
                                    break
                                }
                                created.update { $0 += 1 }
                            }
                            return (statuses, nil)
                        }
                    }
                    group.addTask {
                        // The deletion starts while every client is creating.
                        try await created.wait("tasks being created") { $0 >= 4 * clients }
                        let response = try await app.client.json(.delete, "/users/me?tenant=delete", ["currentPassword": Self.password], token: token)
                        return ([], Int(response.status.code))
                    }
                    var answers: [[Int]] = []
                    var deletion: Int?
                    for try await (statuses, status) in group {
                        if let status { deletion = status } else { answers.append(statuses) }
                    }
                    return (answers, deletion)
                }
                #expect(deletion == 204)
                #expect(answers.count == clients)
                #expect(answers.allSatisfy { $0.last == 401 }, "every client ends refused: \(answers.map { $0.suffix(2) })")
                #expect(answers.allSatisfy { $0.dropLast().allSatisfy { $0 == 201 } })
                #expect(try await tasks(of: owner.tenantId, app.database) == 0, "tasks of the deleted tenant remain")
                #expect(try await tasks(of: bystander.tenantId, app.database) == 1)
            } catch {
                try? await http.shutdown()
                throw error
            }
            try await http.shutdown()
        }
    }
}
