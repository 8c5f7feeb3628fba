import CairnHTTP
import CairnJobs
import CairnServer
import CairnStorage
import CairnTestSupport
import Foundation
import SQLKit
import ServiceLifecycle
import Testing

@testable import CairnNotifications

/// The `job_status` rows of a user: dedupe key, job id and state of each, in seq order.
func jobStatusRows(_ database: Database, userId: String) async throws -> [(key: String, jobId: String, state: String, seq: Int64)] {
    try await database.read { db in
        try await db.raw(
            "SELECT dedupe_key, data, seq FROM notifications WHERE user_id = \(bind: userId) AND type = 'job_status' ORDER BY seq"
        ).all().map { row in
            let data = JSONValue(text: try row.decode(column: "data", as: String.self))
            return (
                try row.decode(column: "dedupe_key", as: String.self), data?["jobId"]?.string ?? "?", data?["state"]?.string ?? "?",
                try row.decode(column: "seq", as: Int64.self)
            )
        }
    }
}

/// The ids of those of `jobs` that have not exactly one `job_status` row for the state they are in.
func withoutOneStatusRow(_ jobs: [Job], in rows: [(key: String, jobId: String, state: String, seq: Int64)]) -> [String] {
    jobs.filter { job in rows.filter { $0.jobId == job.id && $0.state == job.state.rawValue }.count != 1 }.map(\.id)
}

/// Runs `body` with a job worker running on `app`'s queue and nothing else: no job-status
/// bridge hears what it does (a node whose bridge is gone). The worker is stopped gracefully
/// when `body` returns.
func withBareWorker<R: Sendable>(_ app: TestApp, _ body: @Sendable () async throws -> R) async throws -> R {
    let group = ServiceGroup(configuration: .init(services: [JobWorker(queue: app.components.jobs, logger: testLogger)], logger: testLogger))
    return try await withThrowingTaskGroup(of: Void.self) { tasks in
        tasks.addTask { try await group.run() }
        do {
            let result = try await body()
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
            return result
        } catch {
            await group.triggerGracefulShutdown()
            throw error
        }
    }
}

@Suite("Notifications: job status is durable")
struct JobStatusDurabilityTests {
    /// A noop job that runs for `sleepMs`.
    static func noop(_ sleepMs: Int) -> JobRequest {
        JobRequest(kind: "noop", args: .object(["sleepMs": .number(Double(sleepMs))]))
    }

    @Test(arguments: TestEngine.available)
    /// The fresh-user trial's case: SIGTERM while jobs run. The jobs running then finish while
    /// the node drains, after its HTTP server stopped: the bridge stops after the worker, so
    /// they are reported before the node is gone; the jobs it never started run on the next
    /// node. Each job ends with exactly one `job_status` row for its final state.
    func jobsFinishingWhileANodeShutsDownAreReported(engine: TestEngine) async throws {
        try await withTestDatabase(
            engine,
            configure: {
                fastNotifications(&$0)
                $0.jobs.concurrency = 8
                $0.jobs.maxRunningPerTenant = 8
            }
        ) { database in
            let (owner, ids) = try await withTestApp(on: database, runServices: true) { app in
                let owner = try await signUp(app.client, "shutdown@example.com")
                let queue = app.components.jobs
                let ids = try await queue.enqueueMany((0..<20).map { _ in Self.noop(3000) }, tenantId: owner.tenantId, createdBy: owner.userId)
                    .map(\.job.id)
                try await queue.waitUntil("8 jobs running") { try await queue.store.jobs(ids: ids).filter { $0.state == .running }.count == 8 }
                // The signal's moment, chosen by the test: the worker claims nothing more, and the
                // 8 running finish within their grace while the node stops.
                try #require(app.worker).beginShutdown()
                return (owner, ids)
            }
            // The node has stopped (its services last first): every job it finished is reported.
            let afterShutdown = try await database.open()
            let finished = try await JobStore(database: afterShutdown).jobs(ids: ids).filter(\.state.isFinal)
            let stored = try await jobStatusRows(afterShutdown, userId: owner.userId)
            await afterShutdown.close()
            #expect(finished.count == 8, "the running jobs finished while the node drained")
            #expect(withoutOneStatusRow(finished, in: stored) == [], "reported before the node stopped")

            try await withTestApp(on: database, runServices: true) { app in
                let queue = app.components.jobs
                let rows = try await waitForStatusRows(app, owner: owner, ids: ids)
                let jobs = try await queue.store.jobs(ids: ids)
                #expect(withoutOneStatusRow(jobs, in: rows) == [])
                #expect(Set(rows.map(\.key)).count == rows.count, "no dedupe key twice")
            }
        }
    }

    @Test(arguments: TestEngine.available)
    /// The crash case: jobs ran and finished on a node whose bridge heard nothing (killed, or
    /// its announcements lost). The next node to start reports each of them.
    func aStartingNodeReportsWhatNoBridgeHeard(engine: TestEngine) async throws {
        try await withTestDatabase(engine, configure: fastNotifications) { database in
            let (owner, ids) = try await withTestApp(on: database, runServices: false) { app in
                let owner = try await signUp(app.client, "crash@example.com")
                let queue = app.components.jobs
                let ids = try await queue.enqueueMany((0..<6).map { _ in Self.noop(0) }, tenantId: owner.tenantId, createdBy: owner.userId)
                    .map(\.job.id)
                try await withBareWorker(app) {
                    for id in ids { try await queue.waitUntilFinished(id) }
                }
                #expect(try await jobStatusRows(app.database, userId: owner.userId).isEmpty, "nothing was listening")
                return (owner, ids)
            }
            try await withTestApp(on: database, runServices: true) { app in
                let rows = try await waitForStatusRows(app, owner: owner, ids: ids)
                for id in ids { #expect(rows.filter { $0.jobId == id }.map(\.state) == ["running", "succeeded"]) }
            }
        }
    }
}

/// Waits until every job of `ids` is final and has its final state's `job_status` row on
/// `app`'s database: re-checked whenever a notification is stored or a job changes.
/// - Returns: the owner's `job_status` rows then.
func waitForStatusRows(_ app: TestApp, owner: Member, ids: [String], timeout: Duration = .seconds(60)) async throws -> [(
    key: String, jobId: String, state: String, seq: Int64
)] {
    let signal = ChangeSignal()
    let stored = app.components.events.subscribe(channel: NotificationHub.channel, onListening: { signal.notify() })
    let changed = app.components.jobs.events.changes(onListening: { signal.notify() })
    let forward = Task {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { for await _ in stored { signal.notify() } }
            group.addTask { for await _ in changed { signal.notify() } }
        }
    }
    defer { forward.cancel() }
    let last = Observed<[(key: String, jobId: String, state: String, seq: Int64)]>([])
    try await signal.wait("a job_status row for the final state of each of \(ids.count) jobs", timeout: timeout) {
        let jobs = try await app.components.jobs.store.jobs(ids: ids)
        guard jobs.count == ids.count, jobs.allSatisfy(\.state.isFinal) else { return false }
        let rows = try await jobStatusRows(app.database, userId: owner.userId)
        last.update { $0 = rows }
        return jobs.allSatisfy { job in rows.contains { $0.jobId == job.id && $0.state == job.state.rawValue } }
    }
    return last.value
}
