import CairnFormats
import CairnHTTP
import CairnJobs
import CairnServer
import CairnStorage
import CairnTestSupport
import Foundation
import HTTPTypes
import HummingbirdTesting
import SQLKit
import Synchronization
import Testing

func jobCount(_ database: Database) async throws -> Int {
    try await database.read { db in
        try await db.raw("SELECT COUNT(*) AS n FROM jobs").first()?.decode(column: "n", as: Int.self) ?? -1
    }
}

@Suite("Jobs: batch enqueue and fairness at scale")
struct JobBatchTests {
    @Test(arguments: TestEngine.available)
    func aBatchIsEnqueuedWhollyInOrderWithUniqueKeysResolved(engine: TestEngine) async throws {
        try await withTestApp(engine) { client, components in
            let token = try await client.registerAndLogin(email: "batch@example.com").tokens["accessToken"] as! String
            let later = "2099-01-01T00:00:00Z"
            let held = try await enqueue(client, token: token, ["kind": "noop", "uniqueKey": "nightly", "runAt": later])
            let response = try await client.json(
                .post, "/jobs/batch",
                [
                    "jobs": [
                        ["kind": "noop", "runAt": later, "priority": 2],
                        ["kind": "noop", "uniqueKey": "nightly", "runAt": later],
                        ["kind": "noop", "uniqueKey": "weekly", "runAt": later],
                        ["kind": "noop", "uniqueKey": "weekly", "runAt": later],
                    ]
                ], token: token)
            #expect(response.status == .created)
            let items = response.object["items"] as? [[String: Any]] ?? []
            #expect(items.count == 4)
            #expect(items.first?["priority"] as? Int == 2)
            #expect(response.object["createdCount"] as? Int == 2)
            #expect(response.object["existing"] as? [Int] == [1, 3])
            // An existing unique job is returned, and a key repeated inside the batch makes one job.
            #expect(items[1]["id"] as? String == held.job["id"] as? String)
            #expect(items[2]["id"] as? String == items[3]["id"] as? String)
            #expect(try await jobCount(components.database) == 3)

            // Only duplicates: nothing created → 200.
            let again = try await client.json(.post, "/jobs/batch", ["jobs": [["kind": "noop", "uniqueKey": "nightly"]]], token: token)
            #expect(again.status == .ok)
            #expect(again.object["createdCount"] as? Int == 0)
        }
    }

    @Test(arguments: TestEngine.available)
    func aBadBatchNamesTheJobAndFieldAndEnqueuesNothing(engine: TestEngine) async throws {
        try await withTestApp(engine, configure: { $0.jobs.maxPendingPerTenant = 3 }) { client, components in
            let token = try await client.registerAndLogin(email: "badbatch@example.com").tokens["accessToken"] as! String
            let unknown = try await client.json(
                .post, "/jobs/batch", ["jobs": [["kind": "noop"], ["kind": "no-such-kind"]]], token: token)
            #expect(unknown.status == .badRequest)
            #expect(unknown.code == "invalid_input")
            #expect((unknown.object["errors"] as? [[String: Any]])?.first?["field"] as? String == "jobs[1].kind")
            let badPriority = try await client.json(
                .post, "/jobs/batch", ["jobs": [["kind": "noop"], ["kind": "noop", "priority": 9]]], token: token)
            #expect((badPriority.object["errors"] as? [[String: Any]])?.first?["field"] as? String == "jobs[1].priority")
            // Every problem is listed, an unknown kind among them.
            let several = try await client.json(
                .post, "/jobs/batch", ["jobs": [["kind": "bad"], ["kind": "noop", "priority": 9, "queue": ""]]], token: token)
            #expect(
                (several.object["errors"] as? [[String: Any]])?.compactMap { $0["field"] as? String }
                    == ["jobs[0].kind", "jobs[1].priority", "jobs[1].queue"])
            let single = try await client.json(.post, "/jobs", ["kind": "bad", "priority": 9, "maxAttempts": 0], token: token)
            #expect((single.object["errors"] as? [[String: Any]])?.compactMap { $0["field"] as? String } == ["kind", "priority", "maxAttempts"])
            #expect(try await client.json(.post, "/jobs/batch", ["jobs": []], token: token).status == .badRequest)
            let tooMany = Array(repeating: ["kind": "noop"], count: 1001)
            #expect(try await client.json(.post, "/jobs/batch", ["jobs": tooMany], token: token).code == "invalid_input")
            // Past the pending cap the whole batch is refused.
            let overCap = try await client.json(
                .post, "/jobs/batch", ["jobs": Array(repeating: ["kind": "noop", "runAt": "2099-01-01T00:00:00Z"], count: 4)], token: token)
            #expect(overCap.status == .tooManyRequests)
            #expect(overCap.headers[.retryAfter] != nil)
            #expect(try await jobCount(components.database) == 0)
            // Within the cap, the same request goes through.
            #expect(try await client.json(.post, "/jobs/batch", ["jobs": [["kind": "noop"]]], token: token).status == .created)
        }
    }

    @Test(arguments: TestEngine.available)
    func enqueueManyInsideTheCallersTransactionRollsBackWithIt(engine: TestEngine) async throws {
        try await withTestApp(engine) { _, components in
            struct Abort: Error {}
            let tenant = UUIDv7.make()
            await #expect(throws: Abort.self) {
                try await components.database.transaction { db in
                    _ = try await components.jobs.enqueueMany(
                        Array(repeating: JobRequest(kind: "noop"), count: 700), tenantId: tenant, createdBy: nil, on: db)
                    throw Abort()
                }
            }
            #expect(try await jobCount(components.database) == 0)
            let results = try await components.jobs.enqueueMany(
                Array(repeating: JobRequest(kind: "noop"), count: 700), tenantId: tenant, createdBy: nil)
            #expect(results.count == 700)
            #expect(Set(results.map(\.job.id)).count == 700)
            #expect(try await jobCount(components.database) == 700)
        }
    }

    /// The fairness bar: a tenant with 10,000 queued jobs must not delay another
    /// tenant's single job by more than one job's length.
    @Test(arguments: TestEngine.available)
    func tenThousandQueuedJobsOfOneTenantDoNotDelayAnothersJob(engine: TestEngine) async throws {
        let jobLengthMs = 3000
        let probe = ConcurrencyProbe()
        try await withTestApp(
            engine,
            configure: {
                $0.jobs.concurrency = 4; $0.jobs.maxRunningPerTenant = 2
            }, runServices: true,
            prepare: { components in
                // A noop that counts how many of its handlers run at once, per tenant.
                components.jobs.register(Probe.self) { _, context in
                    probe.enter(context.job.tenantId)
                    defer { probe.leave(context.job.tenantId) }
                    try await Task.sleep(for: .milliseconds(jobLengthMs))
                }
            }
        ) { client, components in
            let busyTenant = UUIDv7.make()
            for _ in 0..<10 {
                _ = try await components.jobs.enqueueMany(
                    Array(repeating: try JobRequest(Probe()), count: 1000), tenantId: busyTenant, createdBy: nil)
            }
            // Let the busy tenant's jobs take the slots it may have before the other job arrives.
            #expect(
                try await eventually {
                    try await components.database.read { db in
                        try await db.raw("SELECT COUNT(*) AS n FROM jobs WHERE state = 'running'").first()?.decode(column: "n", as: Int.self)
                    } == 2
                })
            let quiet = try await client.registerAndLogin(email: "quiet10k@example.com").tokens["accessToken"] as! String
            let single = try await enqueue(client, token: quiet, ["kind": "noop"])
            let done = try await awaitJob(client, single.job["id"] as! String, token: quiet, state: "succeeded", timeout: .seconds(20))
            let waited = Timestamp.parse(done["attemptedAt"] as? String ?? "")!.timeIntervalSince(Timestamp.parse(done["runAt"] as! String)!)
            #expect(waited * 1000 < Double(jobLengthMs), "the single job waited \(waited) s behind the backlog")
            // Handlers that run at once, not rows in state 'running': a finished handler frees its
            // slot at once, while its completion is group-committed a moment later, so the table
            // briefly shows the finished jobs next to the ones claimed in their place.
            #expect(probe.maxConcurrent(busyTenant) == 2, "the busy tenant runs more than its per-node cap")
        }
    }
}

/// Counts concurrently running handlers per tenant, and the most seen at once.
final class ConcurrencyProbe: Sendable {
    private let state = Mutex<(current: [String: Int], max: [String: Int])>(([:], [:]))

    func enter(_ tenant: String) {
        state.withLock { state in
            state.current[tenant, default: 0] += 1
            state.max[tenant] = Swift.max(state.max[tenant] ?? 0, state.current[tenant]!)
        }
    }

    func leave(_ tenant: String) {
        state.withLock { $0.current[tenant, default: 0] -= 1 }
    }

    func maxConcurrent(_ tenant: String) -> Int {
        state.withLock { $0.max[tenant] ?? 0 }
    }
}

/// A job kind without arguments, whose handler a test registers.
struct Probe: JobArguments {
    static let kind = "test.probe"
}
