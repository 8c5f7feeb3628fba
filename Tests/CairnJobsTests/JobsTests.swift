import CairnFormats
import CairnHTTP
import CairnServer
import CairnStorage
import CairnTestSupport
import Foundation
import HTTPTypes
import HummingbirdTesting
import SQLKit
import Synchronization
import Testing

@testable import CairnJobs

func enqueue(_ client: any TestClientProtocol, token: String, _ body: [String: Any]) async throws -> (status: HTTPResponse.Status, job: [String: Any])
{
    let response = try await client.json(.post, "/jobs", body, token: token)
    return (response.status, response.object)
}

@Suite("Jobs: queue, retries, dead letters")
struct JobLifecycleTests {
    @Test(arguments: TestEngine.available)
    func jobsSucceedRetryWithBackoffAndLandInTheDeadLetters(engine: TestEngine) async throws {
        // Backoff is measured on a clock the test moves: no waiting for a retry to come due.
        let clock = TestClock()
        try await withTestApp(engine, owner: "jobs@example.com", clock: clock, runServices: true) { app, token in
            let client = app.client
            let ok = try await enqueue(client, token: token, ["kind": "noop", "args": ["sleepMs": 20]])
            #expect(ok.status == .created)
            let okId = ok.job["id"] as! String
            let succeeded = try await app.waitForJob(okId, state: .succeeded, token: token)
            #expect(succeeded.attempt == 1)
            #expect(succeeded.finishedAt != nil)

            let permanent = try await enqueue(client, token: token, ["kind": "noop", "args": ["fail": "permanent"]])
            let permanentId = permanent.job["id"] as! String
            let dead = try await app.waitForJob(permanentId, state: .discarded, token: token)
            #expect(dead.attempt == 1)
            #expect(dead.errors.count == 1)

            let transient = try await enqueue(client, token: token, ["kind": "noop", "args": ["fail": "transient"], "maxAttempts": 2])
            let transientId = transient.job["id"] as! String
            let retryable = try await app.waitForJob(transientId, state: .retryable, token: token)
            #expect(retryable.attempt == 1)
            // Backoff after attempt 1 is 2 s ± 10 %, from the failure, on the node's clock.
            // In whole milliseconds (the stored unit): two dates' difference in seconds comes out
            // a hair under 1.8 at the lowest jitter (1.7999999523), which failed once in CI.
            let backoff = (retryable.runAt.timeIntervalSince(try #require(retryable.errors.first).at) * 1000).rounded()
            #expect((1800...2200).contains(backoff), "backoff \(backoff) ms")
            clock.advance(by: .seconds(3))
            let exhausted = try await app.waitForJob(transientId, state: .discarded, token: token)
            #expect(exhausted.attempt == 2)
            #expect(exhausted.errors.map(\.attempt) == [1, 2])

            // Retry from the dead letters: a fresh set of attempts, errors kept.
            let retried = try await client.json(.post, "/jobs/\(permanentId)/retry", token: token)
            #expect(retried.status == .ok)
            #expect(try retried.decode(JobBody.self).attempt == 0)
            let again = try await app.waitForJob(permanentId, state: .discarded, token: token)
            #expect(again.errors.count == 2)

            // Only final jobs may be deleted; only dead or cancelled ones retried.
            #expect(try await client.json(.post, "/jobs/\(okId)/retry", token: token).status == .conflict)
            #expect(try await client.json(.delete, "/jobs/\(okId)", token: token).status == .noContent)
            #expect(try await client.json(.get, "/jobs/\(okId)", token: token).status == .notFound)
            let waiting = try await enqueue(client, token: token, ["kind": "noop", "runAt": "2099-01-01T00:00:00Z"])
            #expect(waiting.job["state"] as? String == "scheduled")
            #expect(try await client.json(.delete, "/jobs/\(waiting.job["id"] as! String)", token: token).status == .conflict)

            let listed = try await client.json(.get, "/jobs?state=discarded&limit=10", token: token).decode(PageBody<JobBody>.self)
            #expect(listed.items.count == 2)
            #expect(try await client.json(.get, "/jobs?state=bogus", token: token).code == "invalid_input")
        }
    }

    @Test(arguments: TestEngine.available)
    func enqueueValidatesKindsFieldsAndRoles(engine: TestEngine) async throws {
        try await withTestApp(engine, owner: "owner@example.com") { client, _, token in
            let unknown = try await client.json(.post, "/jobs", ["kind": "rm -rf"], token: token)
            #expect(unknown.status == .badRequest)
            #expect((unknown.object["errors"] as? [[String: Any]])?.first?["field"] as? String == "kind")
            for (field, value) in [("priority", 9 as Any), ("maxAttempts", 0), ("queue", "no spaces"), ("runAt", "tomorrow"), ("args", [1, 2])] {
                let response = try await client.json(.post, "/jobs", ["kind": "noop", field: value], token: token)
                #expect(response.status == .badRequest, "\(field)")
                #expect((response.object["errors"] as? [[String: Any]])?.first?["field"] as? String == field, "\(field)")
            }
            // noop is for admins only.
            let member = try await client.addUser(email: "m@example.com", token: token).tokens.accessToken
            #expect(try await client.json(.post, "/jobs", ["kind": "noop"], token: member).status == .forbidden)
        }
    }

    @Test(arguments: TestEngine.available)
    func uniqueKeysDeduplicateUnfinishedJobsAndThePendingCapAnswers429(engine: TestEngine) async throws {
        try await withTestApp(engine, owner: "uniq@example.com", configure: { $0.jobs.maxPendingPerTenant = 3 }) { client, _, token in
            let body: [String: Any] = ["kind": "noop", "uniqueKey": "report-2026-11", "runAt": "2099-01-01T00:00:00Z"]
            let first = try await enqueue(client, token: token, body)
            let second = try await enqueue(client, token: token, body)
            #expect(first.status == .created)
            #expect(second.status == .ok)
            #expect(first.job["id"] as? String == second.job["id"] as? String)
            // Once the job is final, the key is free again.
            #expect(
                try await client.json(.post, "/jobs/\(first.job["id"] as! String)/cancel", token: token).object["state"] as? String == "cancelled")
            let third = try await enqueue(client, token: token, body)
            #expect(third.status == .created)
            #expect(third.job["id"] as? String != first.job["id"] as? String)
            _ = try await enqueue(client, token: token, ["kind": "noop", "runAt": "2099-01-01T00:00:00Z"])
            _ = try await enqueue(client, token: token, ["kind": "noop", "runAt": "2099-01-01T00:00:00Z"])
            let over = try await client.json(.post, "/jobs", ["kind": "noop"], token: token)
            #expect(over.status == .tooManyRequests)
            #expect(over.code == "rate_limited")
            #expect(over.headers[.retryAfter] != nil)
        }
    }

    @Test(arguments: TestEngine.available)
    func anotherTenantsJobIsNotFound(engine: TestEngine) async throws {
        try await withTestApp(engine, owner: "a@example.com") { client, _, owner in
            let other = try await client.registerAndLogin(email: "b@example.com").tokens.accessToken
            let job = try await enqueue(client, token: owner, ["kind": "noop", "runAt": "2099-01-01T00:00:00Z"])
            let id = job.job["id"] as! String
            #expect(try await client.json(.get, "/jobs/\(id)", token: other).status == .notFound)
            #expect(try await client.json(.post, "/jobs/\(id)/cancel", token: other).status == .notFound)
            #expect(try await client.json(.post, "/jobs/\(id)/retry", token: other).status == .notFound)
            #expect(try await client.json(.delete, "/jobs/\(id)", token: other).status == .notFound)
            #expect((try await client.json(.get, "/jobs", token: other).object["items"] as? [Any])?.isEmpty == true)
        }
    }
}

@Suite("Jobs: cancellation, fairness, crash recovery, many nodes")
struct JobRuntimeTests {
    @Test(arguments: TestEngine.available)
    func cancellationStopsARunningHandler(engine: TestEngine) async throws {
        try await withTestApp(engine, owner: "cancel@example.com", runServices: true) { app, token in
            let client = app.client
            let job = try await enqueue(client, token: token, ["kind": "noop", "args": ["sleepMs": 60_000, "checkpointEvery": 100]])
            let id = job.job["id"] as! String
            try await app.waitForJob(id, state: .running, token: token)
            let cancel = try await client.json(.post, "/jobs/\(id)/cancel", token: token)
            #expect(cancel.status == .ok)
            // The handler would sleep for a minute: reaching `cancelled` at all proves it was stopped.
            let cancelled = try await app.waitForJob(id, state: .cancelled, token: token)
            #expect(cancelled.finishedAt != nil)
            #expect(try await client.json(.post, "/jobs/\(id)/cancel", token: token).status == .conflict)
        }
    }

    /// A small backlog: the quiet job is not held behind it (see the 10,000-job case in JobBatchTests).
    @Test(arguments: TestEngine.available)
    func oneTenantsBacklogDoesNotDelayAnothersJob(engine: TestEngine) async throws {
        try await expectBacklogDoesNotDelayAnotherTenant(engine, backlog: 20, quietEmail: "quiet@example.com")
    }

    /// A node that claimed the job died holding a lease: once the lease's time has passed on the
    /// node's clock, the rescue pass hands the job to a live worker, which resumes from the
    /// dead attempt's checkpoint.
    @Test(arguments: TestEngine.available)
    func aLapsedLeaseIsRescuedAndTheJobResumesFromItsCheckpoint(engine: TestEngine) async throws {
        let clock = TestClock()
        try await withTestApp(engine, clock: clock, configure: { $0.jobs.rescueInterval = .milliseconds(200) }, runServices: true) { app in
            let (user, tokens) = try await app.client.registerAndLogin(email: "crash@example.com")
            let token = tokens.accessToken
            let job = try await enqueue(
                app.client, token: token, ["kind": "noop", "args": ["sleepMs": 600, "checkpointEvery": 100], "runAt": "2099-01-01T00:00:00Z"])
            let id = job.job["id"] as! String
            // As if a node claimed it now with a 30 s lease, checkpointed at 400 ms, and died.
            let now = clock.milliseconds
            let tenantId = user.tenantId
            try await app.database.write { db in
                try await db.raw(
                    """
                    UPDATE jobs SET state = 'running', attempt = 1, lease_owner = 'dead-node', lease_expires_at = \(bind: now + 30_000),
                        run_at = \(bind: now), attempted_at = \(bind: now), checkpoint = '{"doneMs":400}'
                    WHERE id = \(bind: id) AND tenant_id = \(bind: tenantId)
                    """
                ).run()
            }
            clock.advance(by: .seconds(31))
            let done = try await app.waitForJob(id, state: .succeeded, token: token)
            #expect(done.attempt == 2)
            #expect(done.progress?["resumedFromMs"] == .number(400))
        }
    }

    @Test(arguments: TestEngine.available)
    func everyJobRunsExactlyOnceAcrossNodes(engine: TestEngine) async throws {
        let configure = { (configuration: inout CairnConfiguration) in
            configuration.jobs.maxRunningPerTenant = 8
            configuration.jobs.concurrency = 8
        }
        try await withTestDatabase(engine, configure: configure) { test in
            let nodeCount = engine == .postgres ? 2 : 1
            var nodes: [CairnComponents] = []
            for _ in 0..<nodeCount {
                nodes.append(try await buildComponents(configuration: test.configuration, logger: testLogger))
            }
            do {
                try await runEveryJobOnce(nodes)
            } catch {
                for node in nodes { await node.database.close() }
                throw error
            }
            for node in nodes { await node.database.close() }
        }
    }

    private func runEveryJobOnce(_ nodes: [CairnComponents]) async throws {
        let database = nodes[0].database
        try await database.write { db in
            try await db.raw("CREATE TABLE effects (job_id TEXT PRIMARY KEY, node TEXT NOT NULL, started BIGINT NOT NULL, ended BIGINT NOT NULL)")
                .run()
            try await db.raw("CREATE TABLE runs (job_id TEXT NOT NULL, node TEXT NOT NULL)").run()
        }
        for (index, node) in nodes.enumerated() {
            let name = "node-\(index)"
            let db = node.database
            node.jobs.register(Effect.self) { _, context in
                let started = WallClock.milliseconds()
                try await db.write { try await $0.raw("INSERT INTO runs (job_id, node) VALUES (\(bind: context.job.id), \(bind: name))").run() }
                // Lets other handlers, on this node and the other, run in between.
                await Task.yield()
                let ended = WallClock.milliseconds()
                try await db.write {
                    try await $0.raw(
                        "INSERT INTO effects (job_id, node, started, ended) VALUES (\(bind: context.job.id), \(bind: name), \(bind: started), \(bind: ended))"
                    ).run()
                }
            }
        }
        let tenant = UUIDv7.make()
        let total = 2000
        let producer = nodes[0].jobs
        try await database.transaction { db in
            for _ in 0..<total {
                try await producer.enqueue(Effect(), tenantId: tenant, createdBy: nil, on: db)
            }
        }
        let workers = nodes.map { JobWorker(queue: $0.jobs, logger: testLogger) }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for worker in workers { group.addTask { try await worker.run() } }
            try await producer.waitUntil("every job succeeded", timeout: .seconds(300)) {
                try await database.rowCount("jobs WHERE state = 'succeeded'") == total
            }
            group.cancelAll()
        }
        let (effects, runs, failed, busiest) = try await database.read { db in
            (
                try await db.raw("SELECT COUNT(*) AS n FROM effects").first()!.decode(column: "n", as: Int.self),
                try await db.raw("SELECT COUNT(*) AS n FROM runs").first()!.decode(column: "n", as: Int.self),
                try await db.raw("SELECT COUNT(*) AS n FROM jobs WHERE errors <> '[]'").first()!.decode(column: "n", as: Int.self),
                try await db.raw("SELECT COUNT(DISTINCT node) AS n FROM effects").first()!.decode(column: "n", as: Int.self)
            )
        }
        #expect(effects == total)
        #expect(runs == total, "some job ran more than once")
        #expect(failed == 0)
        #expect(busiest == nodes.count, "every node took part")
    }
}

/// The job kind of the exactly-once test, without arguments; each node registers its handler.
struct Effect: JobArguments {
    static let kind = "effect"
}

/// The job kind of the stuck-handler test.
struct Stuck: JobArguments {
    static let kind = "stuck"
}

/// A gate a handler waits at, deaf to its task's cancellation, until the test opens it.
final class DeafGate: Sendable {
    private let state = Mutex<(open: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    func wait() async {
        await withCheckedContinuation { continuation in
            let ready = state.withLock { state -> Bool in
                if state.open { return true }
                state.waiters.append(continuation)
                return false
            }
            if ready { continuation.resume() }
        }
    }

    func open() {
        for waiter in state.withLock({ state -> [CheckedContinuation<Void, Never>] in
            state.open = true
            defer { state.waiters = [] }
            return state.waiters
        }) { waiter.resume() }
    }
}

@Suite("Jobs: worker shutdown")
struct JobWorkerShutdownTests {
    /// A worker whose task is cancelled while a handler ignores its own cancellation returns
    /// once `abandonAfter` has passed, instead of waiting for that handler for ever (before, its
    /// wait loop also spun: a sleep in a cancelled task returns at once). The job keeps its
    /// lease, for another node to rescue.
    @Test(arguments: TestEngine.available)
    func aCancelledWorkerDoesNotWaitForeverForAHandlerThatIgnoresCancellation(engine: TestEngine) async throws {
        let configure = { (configuration: inout CairnConfiguration) in
            configuration.jobs.shutdownGrace = .zero
            configuration.jobs.abandonAfter = .milliseconds(200)
        }
        try await withTestDatabase(engine, configure: configure) { test in
            let node = try await buildComponents(configuration: test.configuration, logger: testLogger)
            let gate = DeafGate()
            let (started, startedContinuation) = AsyncStream.makeStream(of: String.self)
            node.jobs.register(Stuck.self) { _, context in
                startedContinuation.yield(context.job.id)
                await gate.wait()
            }
            defer { gate.open() }
            let id = try await node.jobs.enqueue(Stuck(), tenantId: UUIDv7.make(), createdBy: nil).job.id
            let worker = Task { try? await JobWorker(queue: node.jobs, logger: testLogger).run() }
            var running = started.makeAsyncIterator()
            #expect(await running.next() == id)
            worker.cancel()
            // Fails at the deadline, leaving a worker that never stops behind, instead of hanging.
            try await withDeadline(.seconds(60), "the cancelled worker stops beside a handler deaf to cancellation") {
                await worker.value
            }
            let job = try #require(try await node.jobs.store.jobs(ids: [id]).first)
            #expect(job.state == .running, "left under its lease for rescue")
            gate.open()
            await node.database.close()
        }
    }

    /// `beginShutdown()` (a node calls it at the signal, while its HTTP server still drains)
    /// hands a running job back after the grace, without waiting for the worker's own graceful
    /// shutdown; the worker's service still waits for that, so as not to end before its turn.
    /// A grace longer than a lease: the running job's lease is still renewed after shutdown
    /// began, so no other node's rescue takes a job that still runs here (the maintenance
    /// loops, renewal among them, stop when shutdown begins).
    @Test(arguments: TestEngine.available)
    func leasesAreRenewedThroughTheShutdownGrace(engine: TestEngine) async throws {
        let clock = TestClock()
        try await withTestDatabase(
            engine,
            configure: {
                $0.jobs.shutdownGrace = .seconds(3600); $0.jobs.leaseSeconds = 3
            }
        ) { test in
            let node = try await buildComponents(configuration: test.configuration, logger: testLogger, clock: clock)
            let gate = Gate()
            let (started, startedContinuation) = AsyncStream.makeStream(of: String.self)
            node.jobs.register(Stuck.self) { _, context in
                startedContinuation.yield(context.job.id)
                try await gate.wait()
            }
            let id = try await node.jobs.enqueue(Stuck(), tenantId: UUIDv7.make(), createdBy: nil).job.id
            let worker = JobWorker(queue: node.jobs, logger: testLogger)
            let running = Task { try? await worker.run() }
            var starts = started.makeAsyncIterator()
            #expect(await starts.next() == id)
            worker.beginShutdown()
            // An hour on: the lease taken at the claim lapsed long ago, unless renewed since.
            clock.advance(by: .seconds(3600))
            let later = clock.milliseconds
            // A renewal announces nothing on the bus (nothing about the job changed for its
            // watchers), so the row is read until it shows one.
            let store = node.jobs.store
            try await pollUntil("the lease renewed during the grace") {
                try await store.jobs(ids: [id]).first.map { $0.state == .running && ($0.leaseExpiresAt ?? 0) > later } ?? false
            }
            #expect(try await node.jobs.store.rescue(now: later).isEmpty, "a rescue took the job still running here")
            gate.open()
            _ = try await node.jobs.waitForJob(id, state: .succeeded)
            running.cancel()
            try await withDeadline(.seconds(60), "the worker stops") { await running.value }
            await node.database.close()
        }
    }

    @Test(arguments: TestEngine.available)
    func beginShutdownHandsJobsBackBeforeTheWorkersOwnShutdown(engine: TestEngine) async throws {
        try await withTestDatabase(engine, configure: { $0.jobs.shutdownGrace = .milliseconds(100) }) { test in
            let node = try await buildComponents(configuration: test.configuration, logger: testLogger)
            let (started, startedContinuation) = AsyncStream.makeStream(of: String.self)
            node.jobs.register(Stuck.self) { _, context in
                startedContinuation.yield(context.job.id)
                try await Task.sleep(for: .seconds(3600))
            }
            let id = try await node.jobs.enqueue(Stuck(), tenantId: UUIDv7.make(), createdBy: nil).job.id
            let worker = JobWorker(queue: node.jobs, logger: testLogger)
            let ended = Observed(false)
            let running = Task {
                try? await worker.run()
                ended.update { $0 = true }
            }
            var starts = started.makeAsyncIterator()
            #expect(await starts.next() == id)
            worker.beginShutdown()
            let job = try await node.jobs.waitForJob(id, "the job handed back") { $0.state == .available }
            #expect(job.attempt == 0, "the hand-back spent an attempt")
            #expect(!ended.value, "the worker's service ended before its own shutdown")
            running.cancel()
            try await withDeadline(.seconds(60), "the worker stops") { await running.value }
            await node.database.close()
        }
    }
}
