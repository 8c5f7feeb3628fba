import CairnFormats
import CairnHTTP
import CairnJobs
import CairnServer
import CairnStorage
import CairnTestSupport
import Foundation
import HTTPTypes
import HummingbirdTesting
import NIOCore
import SQLKit
import Testing

@Suite("Jobs: batch enqueue and fairness at scale")
struct JobBatchTests {
    @Test(arguments: TestEngine.available)
    func aBatchIsEnqueuedWhollyInOrderWithUniqueKeysResolved(engine: TestEngine) async throws {
        try await withTestApp(engine, owner: "batch@example.com") { client, components, token in
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
            #expect(try await components.database.rowCount("jobs") == 3)

            // Only duplicates: nothing created → 200.
            let again = try await client.json(.post, "/jobs/batch", ["jobs": [["kind": "noop", "uniqueKey": "nightly"]]], token: token)
            #expect(again.status == .ok)
            #expect(again.object["createdCount"] as? Int == 0)
        }
    }

    @Test(arguments: TestEngine.available)
    func aBadBatchNamesTheJobAndFieldAndEnqueuesNothing(engine: TestEngine) async throws {
        try await withTestApp(engine, owner: "badbatch@example.com", configure: { $0.jobs.maxPendingPerTenant = 3 }) { client, components, token in
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
            // A number beyond an integer gets the field's own range, in the same words as one within it.
            for priority in ["0", "1e20"] {
                for path in ["/jobs", "/jobs/batch"] {
                    let job = #"{"kind":"noop","priority":\#(priority),"maxAttempts":\#(priority)}"#
                    let answer = try await client.execute(
                        uri: path, method: .post, headers: [.contentType: "application/json", .authorization: "Bearer \(token)"],
                        body: ByteBuffer(string: path == "/jobs" ? job : #"{"jobs":[\#(job)]}"#))
                    let prefix = path == "/jobs" ? "" : "jobs[0]."
                    #expect(answer.status == .badRequest)
                    #expect(
                        try answer.decode(ProblemBody.self).errors?.map { [$0.field, $0.issue] }
                            == [
                                [prefix + "priority", "must be an integer from 1 to 4"],
                                [prefix + "maxAttempts", "must be an integer from 1 to 100"],
                            ],
                        "\(path) \(priority)")
                }
            }
            #expect(try await client.json(.post, "/jobs/batch", ["jobs": []], token: token).status == .badRequest)
            let tooMany = Array(repeating: ["kind": "noop"], count: 1001)
            #expect(try await client.json(.post, "/jobs/batch", ["jobs": tooMany], token: token).code == "invalid_input")
            // Past the pending cap the whole batch is refused.
            let overCap = try await client.json(
                .post, "/jobs/batch", ["jobs": Array(repeating: ["kind": "noop", "runAt": "2099-01-01T00:00:00Z"], count: 4)], token: token)
            #expect(overCap.status == .tooManyRequests)
            #expect(overCap.headers[.retryAfter] != nil)
            #expect(try await components.database.rowCount("jobs") == 0)
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
            #expect(try await components.database.rowCount("jobs") == 0)
            let results = try await components.jobs.enqueueMany(
                Array(repeating: JobRequest(kind: "noop"), count: 700), tenantId: tenant, createdBy: nil)
            #expect(results.count == 700)
            #expect(Set(results.map(\.job.id)).count == 700)
            #expect(try await components.database.rowCount("jobs") == 700)
        }
    }

    /// The issue's fairness bar: a tenant with 10,000 queued jobs must not delay another
    /// tenant's single job by more than one job's length.
    @Test(arguments: TestEngine.available)
    func tenThousandQueuedJobsOfOneTenantDoNotDelayAnothersJob(engine: TestEngine) async throws {
        try await expectBacklogDoesNotDelayAnotherTenant(engine, backlog: 10_000, quietEmail: "quiet10k@example.com")
    }

    /// When every slot is taken by two tenants with backlogs, the next slot to free goes to a
    /// third tenant's single job, enqueued after both backlogs, not to the backlogs' next jobs:
    /// a fresh-user trial saw it wait for all 24 before it (concurrency 4, cap 2 per tenant, no
    /// reserved slot).
    @Test(arguments: TestEngine.available)
    func aFreedSlotGoesToTheTenantRunningFewestJobs(engine: TestEngine) async throws {
        try await expectNextSlotGoesToTheQuietTenant(engine, reservedSlots: 0)
    }

    /// With a slot reserved (the default), the third tenant's job does not wait for any busy
    /// job to end: a fresh-user trial held all four slots with two tenants' day-long jobs.
    @Test(arguments: TestEngine.available)
    func aTenantRunningNothingStartsInTheReservedSlot(engine: TestEngine) async throws {
        try await expectNextSlotGoesToTheQuietTenant(engine, reservedSlots: 1)
    }

    /// Two busy tenants take the slots they may (all four, or three with one reserved), then a
    /// third tenant's single job must be the next to start: at once in the reserved slot, or
    /// when the first busy job ends without one.
    private func expectNextSlotGoesToTheQuietTenant(_ engine: TestEngine, reservedSlots: Int) async throws {
        let first = Gate()
        let rest = Gate()
        let starts = Observed([String]())
        let busy = [UUIDv7.make(), UUIDv7.make()]
        let quiet = UUIDv7.make()
        try await withTestApp(
            engine,
            configure: {
                fourSlotsTwoPerTenant(&$0)
                $0.jobs.reservedSlots = reservedSlots
            }, runServices: true,
            prepare: { components in
                components.jobs.register(Probe.self) { _, context in
                    let tenant = context.job.tenantId
                    var order = 0
                    starts.update {
                        order = $0.count; $0.append(tenant)
                    }
                    if tenant == quiet { return }
                    // The first busy job to start ends when the test says; the others hold
                    // their slots for the whole test.
                    try await (order == 0 ? first : rest).wait()
                }
            }
        ) { app in
            defer { first.open(); rest.open() }
            for tenant in busy {
                _ = try await app.components.jobs.enqueueMany(Array(repeating: try JobRequest(Probe()), count: 12), tenantId: tenant, createdBy: nil)
            }
            let held = 4 - reservedSlots
            try await starts.wait("the busy tenants in \(held) slots") { $0.count == held && busy.allSatisfy($0.contains) }
            _ = try await app.components.jobs.enqueueMany([try JobRequest(Probe())], tenantId: quiet, createdBy: nil)
            if reservedSlots == 0 { first.open() }
            let seen = try await starts.wait("the quiet tenant's job started") { $0.contains(quiet) }
            #expect(seen.firstIndex(of: quiet) == held, "started before the quiet tenant's job: \(seen)")
        }
    }
}

/// The fairness tests' node: four job slots, at most two of them one tenant's.
let fourSlotsTwoPerTenant: @Sendable (inout CairnConfiguration) -> Void = {
    $0.jobs.concurrency = 4
    $0.jobs.maxRunningPerTenant = 2
}

/// The fairness check, at any backlog size: a busy tenant's `backlog` jobs are held at a gate
/// for the whole test, so another tenant's single job can only succeed if it waited for none of
/// them (fairness without a stopwatch), and the busy tenant never runs more than its per-node cap.
func expectBacklogDoesNotDelayAnotherTenant(_ engine: TestEngine, backlog: Int, quietEmail: String) async throws {
    let gate = Gate()
    let probe = ConcurrencyProbe()
    try await withTestApp(
        engine, configure: fourSlotsTwoPerTenant, runServices: true,
        prepare: { components in
            // A handler that counts how many of its kind run at once, per tenant, and waits at the gate.
            components.jobs.register(Probe.self) { _, context in
                probe.enter(context.job.tenantId)
                defer { probe.leave(context.job.tenantId) }
                try await gate.wait()
            }
        }
    ) { app in
        defer { gate.open() }
        let busyTenant = UUIDv7.make()
        // In batches of at most 1,000, as a client would send them.
        for start in stride(from: 0, to: backlog, by: 1000) {
            _ = try await app.components.jobs.enqueueMany(
                Array(repeating: try JobRequest(Probe()), count: min(1000, backlog - start)), tenantId: busyTenant, createdBy: nil)
        }
        // The busy tenant's jobs take the slots it may have before the other job arrives.
        try await probe.waitForRunning(busyTenant, 2)
        let quiet = try await app.client.registerAndLogin(email: quietEmail).tokens.accessToken
        let single = try await enqueue(app.client, token: quiet, ["kind": "noop"])
        try await app.waitForJob(single.job["id"] as! String, state: .succeeded, token: quiet)
        #expect(probe.finished(busyTenant) == 0, "the single job ran while every busy job was still held")
        // Handlers that run at once, not rows in state 'running': a finished handler frees its
        // slot at once, while its completion is group-committed a moment later, so the table
        // briefly shows the finished jobs next to the ones claimed in their place.
        #expect(probe.maxConcurrent(busyTenant) == 2, "the busy tenant runs more than its per-node cap")
    }
}

/// Counts running handlers per tenant: how many now, the most at once, and how many ended.
final class ConcurrencyProbe: Sendable {
    private struct Counts: Sendable {
        var current: [String: Int] = [:]
        var max: [String: Int] = [:]
        var finished: [String: Int] = [:]
    }
    private let state = Observed(Counts())

    func enter(_ tenant: String) {
        state.update { state in
            state.current[tenant, default: 0] += 1
            state.max[tenant] = Swift.max(state.max[tenant] ?? 0, state.current[tenant]!)
        }
    }

    func leave(_ tenant: String) {
        state.update { state in
            state.current[tenant, default: 0] -= 1
            state.finished[tenant, default: 0] += 1
        }
    }

    func maxConcurrent(_ tenant: String) -> Int {
        state.value.max[tenant] ?? 0
    }

    func finished(_ tenant: String) -> Int {
        state.value.finished[tenant] ?? 0
    }

    /// Returns once `count` handlers of the tenant run at once.
    func waitForRunning(_ tenant: String, _ count: Int) async throws {
        try await state.wait("\(count) handlers of \(tenant) running") { $0.current[tenant, default: 0] >= count }
    }
}

/// A job kind without arguments, whose handler a test registers.
struct Probe: JobArguments {
    static let kind = "test.probe"
}
