import CairnHTTP
import CairnStorage
import CairnTestSupport
import Foundation
import HTTPTypes
import Testing

@testable import CairnJobs

@Suite("JobStore on both engines")
struct JobStoreTests {
    /// A fixed "now" far from the wall clock, so times in assertions are exact.
    let now: Int64 = 1_800_000_000_000

    @Test(arguments: TestEngine.available)
    func anInsertedJobWaitsWithNoAttemptYet(engine: TestEngine) async throws {
        try await withStore(engine, JobStore.init) { _, tenant, _, database in
            let job = try await Factory.job(
                on: database, tenant: tenant, kind: "report", args: #"{"n":1}"#, queue: "reports", priority: 3, now: now, maxAttempts: 5,
                createdBy: "someone")
            let stored = try #require(try await JobStore(database: database).job(id: job.id, tenantId: tenant.id))
            #expect(stored.state == .available)
            #expect(stored.attempt == 0)
            #expect(stored.version == 1)
            #expect(stored.errors == "[]")
            #expect(stored.kind == "report")
            #expect(stored.args == #"{"n":1}"#)
            #expect(stored.queue == "reports")
            #expect(stored.priority == 3)
            #expect(stored.maxAttempts == 5)
            #expect(stored.runAt == now)
            #expect(stored.createdBy == "someone")
            #expect(stored.leaseOwner == nil)
            #expect(stored.finishedAt == nil)
            let later = try await Factory.job(on: database, tenant: tenant, runAt: now + 1, now: now)
            #expect(later.state == .scheduled)
        }
    }

    /// The enqueuing span's trace context (issue 16) is stored with the job, single and in
    /// batches, and comes back with the claim that starts an attempt on whichever node.
    @Test(arguments: TestEngine.available)
    func aJobKeepsTheTraceContextItWasEnqueuedWith(engine: TestEngine) async throws {
        try await withStore(engine, JobStore.init) { store, tenant, _, database in
            let context = #"{"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}"#
            var single = Factory.jobRow(tenant: tenant, now: now)
            single.traceContext = context
            var batched = Factory.jobRow(tenant: tenant, priority: 2, now: now)
            batched.traceContext = context
            let untraced = Factory.jobRow(tenant: tenant, priority: 3, now: now)
            let inserted = try await database.write { [single] db in try await JobStore.insert(single, on: db) }
            #expect(inserted.job.traceContext == context)
            let many = try await database.write { [batched] db in try await JobStore.insertMany([batched, untraced], on: db) }
            #expect(many.map(\.job.traceContext) == [context, nil])
            let claimed = try await store.claim(node: "node-b", limit: 3, excludedTenants: [], queues: [], now: now, leaseMs: 30_000)
            // RETURNING gives no order: compared by id.
            let byId = Dictionary(uniqueKeysWithValues: claimed.map { ($0.id, $0.traceContext) })
            #expect(byId == [single.id: context, batched.id: context, untraced.id: nil])
        }
    }

    @Test(arguments: TestEngine.available)
    func aUniqueKeyIsHeldByOneUnfinishedJobPerTenantAndKind(engine: TestEngine) async throws {
        try await withStore(engine, JobStore.init) { _, a, b, database in
            let first = try await Factory.job(on: database, tenant: a, kind: "report", uniqueKey: "daily")

            let again = Factory.jobRow(tenant: a, kind: "report", uniqueKey: "daily")
            let duplicate = try await database.write { db in try await JobStore.insert(again, on: db) }
            #expect(!duplicate.inserted)
            #expect(duplicate.job.id == first.id)
            #expect(try await JobStore(database: database).job(id: again.id, tenantId: a.id) == nil)

            // Other tenants and other kinds have keys of their own.
            #expect(try await Factory.job(on: database, tenant: b, kind: "report", uniqueKey: "daily").id != first.id)
            #expect(try await Factory.job(on: database, tenant: a, kind: "export", uniqueKey: "daily").id != first.id)

            // A running job still holds its key; a finished one no longer does.
            let running = try await Factory.runningJob(on: database, tenant: a, kind: "sync", uniqueKey: "hourly")
            #expect(try await Factory.job(on: database, tenant: a, kind: "sync", uniqueKey: "hourly").id == running.id)
            let finished = try await Factory.finishedJob(on: database, tenant: a, state: .discarded, kind: "mail", uniqueKey: "welcome")
            #expect(try await Factory.job(on: database, tenant: a, kind: "mail", uniqueKey: "welcome").id != finished.id)
        }
    }

    @Test(arguments: TestEngine.available)
    func anInsertWithATakenIdIsAConflict(engine: TestEngine) async throws {
        try await withStore(engine, JobStore.init) { _, tenant, _, database in
            let job = try await Factory.job(on: database, tenant: tenant, kind: "first")
            var row = Factory.jobRow(tenant: tenant, kind: "second")
            row.id = job.id
            let copy = row
            await expectAppError(.conflict) { try await database.write { db in try await JobStore.insert(copy, on: db) } }
            #expect(try await JobStore(database: database).job(id: job.id, tenantId: tenant.id)?.kind == "first")
        }
    }

    @Test(arguments: TestEngine.available)
    func insertManyKeepsInputOrderAcrossStatementsAndResolvesKeysWithinTheBatch(engine: TestEngine) async throws {
        try await withStore(engine, JobStore.init) { _, tenant, _, database in
            let existing = try await Factory.job(on: database, tenant: tenant, kind: "k", uniqueKey: "held")
            // 502 jobs: two statements (500 rows each at most). Job 1 repeats job 0's key in the
            // same statement, job 501 in the next one, and job 2 asks for a key already held.
            var batch = (0..<502).map { Factory.jobRow(tenant: tenant, kind: "k", uniqueKey: "key-\($0)") }
            batch[1].uniqueKey = "key-0"
            batch[501].uniqueKey = "key-0"
            batch[2].uniqueKey = "held"
            let rows = batch
            let results = try await database.transaction { db in try await JobStore.insertMany(rows, on: db) }
            #expect(results.count == rows.count)
            #expect(results.map(\.inserted) == rows.indices.map { ![1, 2, 501].contains($0) })
            #expect(results[1].job.id == rows[0].id)
            #expect(results[501].job.id == rows[0].id)
            #expect(results[2].job.id == existing.id)
            for index in rows.indices where ![1, 2, 501].contains(index) {
                #expect(results[index].job.id == rows[index].id)
            }
            #expect(try await JobStore(database: database).unfinishedCount(tenantId: tenant.id) == 500)
        }
    }

    /// The jobs `insertMany` returns are the rows as stored, every field, even when the input
    /// carried values the insert does not write (an attempt, errors, a lease, a version).
    @Test(arguments: TestEngine.available)
    func insertManyReturnsTheRowsAsStored(engine: TestEngine) async throws {
        try await withStore(engine, JobStore.init) { store, tenant, _, database in
            var odd = Factory.jobRow(tenant: tenant, kind: "k", args: #"{"n":2}"#, priority: 4, now: now, uniqueKey: "u", createdBy: "me")
            odd.attempt = 3
            odd.errors = #"["old"]"#
            odd.progress = "{}"
            odd.leaseOwner = "node-x"
            odd.leaseExpiresAt = now
            odd.version = 9
            odd.result = "{}"
            odd.traceContext = "{}"
            let rows = [odd, Factory.jobRow(tenant: tenant, runAt: now + 5, now: now)]
            let results = try await database.transaction { db in try await JobStore.insertMany(rows, on: db) }
            for (job, inserted) in results {
                #expect(inserted)
                let stored = try #require(try await store.job(id: job.id, tenantId: tenant.id))
                #expect(String(describing: job) == String(describing: stored))
            }
        }
    }

    @Test(arguments: TestEngine.available)
    func claimTakesDueJobsByPriorityThenRunAtThenId(engine: TestEngine) async throws {
        try await withStore(engine, JobStore.init) { store, tenant, _, database in
            let lowEarly = try await Factory.job(on: database, tenant: tenant, priority: 2, runAt: now - 3_000, now: now)
            let urgentLate = try await Factory.job(on: database, tenant: tenant, priority: 1, runAt: now - 1_000, now: now)
            let urgentEarly = try await Factory.job(on: database, tenant: tenant, priority: 1, runAt: now - 2_000, now: now)
            let notDue = try await Factory.job(on: database, tenant: tenant, priority: 1, runAt: now + 60_000, now: now)
            let urgentEarlyTwin = try await Factory.job(on: database, tenant: tenant, priority: 1, runAt: now - 2_000, now: now)
            let lowest = try await Factory.job(on: database, tenant: tenant, priority: 4, runAt: now - 10_000, now: now)

            var order: [String] = []
            while let job = try await store.claim(node: "node-a", limit: 1, excludedTenants: [], queues: [], now: now, leaseMs: 30_000).first {
                order.append(job.id)
                #expect(job.state == .running)
                #expect(job.attempt == 1)
                #expect(job.version == 2)
                #expect(job.leaseOwner == "node-a")
                #expect(job.attemptedAt == now)
                #expect(job.leaseExpiresAt == now + 30_000)
                if order.count > 6 { break }
            }
            #expect(order == [urgentEarly.id, urgentEarlyTwin.id, urgentLate.id, lowEarly.id, lowest.id])
            // A scheduled job becomes due at its run time, not before.
            #expect(try await store.claim(node: "node-a", limit: 5, excludedTenants: [], queues: [], now: now + 59_999, leaseMs: 1).isEmpty)
            let due = try await store.claim(node: "node-a", limit: 5, excludedTenants: [], queues: [], now: now + 60_000, leaseMs: 1)
            #expect(due.map(\.id) == [notDue.id])
        }
    }

    @Test(arguments: TestEngine.available)
    func claimHonoursItsLimitQueuesAndExcludedTenants(engine: TestEngine) async throws {
        try await withStore(engine, JobStore.init) { store, a, b, database in
            let aDefault = [try await Factory.job(on: database, tenant: a, now: now), try await Factory.job(on: database, tenant: a, now: now)]
            let aReports = try await Factory.job(on: database, tenant: a, queue: "reports", now: now)
            let bDefault = [try await Factory.job(on: database, tenant: b, now: now), try await Factory.job(on: database, tenant: b, now: now)]
            func claim(limit: Int, excluding: Set<String> = [], queues: [String] = []) async throws -> Set<String> {
                Set(try await store.claim(node: "n", limit: limit, excludedTenants: excluding, queues: queues, now: now, leaseMs: 1_000).map(\.id))
            }
            #expect(try await claim(limit: 0).isEmpty)
            #expect(try await claim(limit: 10, queues: ["reports"]) == [aReports.id])
            #expect(try await claim(limit: 10, queues: ["nothing-here"]).isEmpty)
            #expect(try await claim(limit: 10, excluding: [a.id]) == Set(bDefault.map(\.id)))
            #expect(try await claim(limit: 10, excluding: [a.id, b.id]).isEmpty)
            let one = try await claim(limit: 1)
            #expect(one.count == 1)
            #expect(one.isSubset(of: Set(aDefault.map(\.id))))
            #expect(try await claim(limit: 10) == Set(aDefault.map(\.id)).subtracting(one))
            #expect(try await claim(limit: 10).isEmpty)
        }
    }

    @Test(arguments: TestEngine.available)
    func concurrentClaimersNeverTakeTheSameJob(engine: TestEngine) async throws {
        try await withStore(engine, JobStore.init) { _, tenant, _, database in
            let rows = (0..<120).map { _ in Factory.jobRow(tenant: tenant, now: now) }
            _ = try await database.transaction { db in try await JobStore.insertMany(rows, on: db) }
            // Eight claimers race, each claiming four at a time until nothing is left: PostgreSQL
            // skips rows another claim has locked; SQLite's single writer runs claims one by one.
            let claims = try await withThrowingTaskGroup(of: [Job].self) { group in
                for claimer in 0..<8 {
                    group.addTask {
                        let store = JobStore(database: database)
                        var taken: [Job] = []
                        while true {
                            let batch = try await store.claim(
                                node: "node-\(claimer)", limit: 4, excludedTenants: [], queues: [], now: now, leaseMs: 30_000)
                            if batch.isEmpty { return taken }
                            taken += batch
                        }
                    }
                }
                return try await group.reduce(into: [Job]()) { $0 += $1 }
            }
            #expect(claims.count == rows.count)
            #expect(Set(claims.map(\.id)) == Set(rows.map(\.id)))
            #expect(claims.allSatisfy { $0.attempt == 1 && $0.state == .running })
            let stored = try await JobStore(database: database).jobs(ids: rows.map(\.id))
            let owners = Dictionary(uniqueKeysWithValues: claims.map { ($0.id, $0.leaseOwner) })
            #expect(stored.allSatisfy { $0.attempt == 1 && $0.leaseOwner == owners[$0.id] })
        }
    }

    @Test(arguments: TestEngine.available)
    func renewExtendsOnlyTheLeasesTheNodeHolds(engine: TestEngine) async throws {
        try await withStore(engine, JobStore.init) { store, tenant, _, database in
            let mine = try await Factory.runningJob(on: database, tenant: tenant, node: "node-a", now: now, leaseMs: 1_000)
            let theirs = try await Factory.runningJob(on: database, tenant: tenant, node: "node-b", now: now, leaseMs: 1_000)
            let waiting = try await Factory.job(on: database, tenant: tenant, now: now)

            #expect(try await store.renew(ids: [mine.id, theirs.id, waiting.id], node: "node-a", until: now + 9_000) == [mine.id])
            #expect(try await store.job(id: mine.id, tenantId: tenant.id)?.leaseExpiresAt == now + 9_000)
            #expect(try await store.job(id: theirs.id, tenantId: tenant.id)?.leaseExpiresAt == now + 1_000)
            #expect(try await store.renew(ids: [], node: "node-a", until: now).isEmpty)
            #expect(try await store.finish(id: mine.id, node: "node-a", state: .succeeded, now: now))
            #expect(try await store.renew(ids: [mine.id], node: "node-a", until: now + 9_000).isEmpty)
        }
    }

    @Test(arguments: TestEngine.available)
    func finishingAnAttemptNeedsItsLease(engine: TestEngine) async throws {
        try await withStore(engine, JobStore.init) { store, tenant, _, database in
            let job = try await Factory.runningJob(on: database, tenant: tenant, node: "node-a", queue: "q", now: now)
            let errors = #"[{"at":"2027-01-15T08:00:00.000Z","attempt":1,"error":"boom"}]"#

            #expect(try await !store.finish(id: job.id, node: "node-b", state: .succeeded, now: now))
            #expect(try await store.job(id: job.id, tenantId: tenant.id)?.state == .running)

            // A failed attempt waits for its backoff; it is not finished.
            #expect(try await store.finish(id: job.id, node: "node-a", state: .retryable, runAt: now + 2_000, errors: errors, now: now + 10))
            var stored = try #require(try await store.job(id: job.id, tenantId: tenant.id))
            #expect(stored.state == .retryable)
            #expect(stored.runAt == now + 2_000)
            #expect(stored.errors == errors)
            #expect(stored.leaseOwner == nil)
            #expect(stored.leaseExpiresAt == nil)
            #expect(stored.finishedAt == nil)
            #expect(stored.version == job.version + 1)
            #expect(try await !store.finish(id: job.id, node: "node-a", state: .succeeded, now: now + 20))

            #expect(try await store.claim(node: "node-b", limit: 1, excludedTenants: [], queues: ["q"], now: now + 1_999, leaseMs: 1_000).isEmpty)
            let second = try await store.claim(node: "node-b", limit: 1, excludedTenants: [], queues: ["q"], now: now + 2_000, leaseMs: 1_000)
            #expect(second.map(\.attempt) == [2])
            #expect(try await store.finish(id: job.id, node: "node-b", state: .succeeded, now: now + 2_500))
            stored = try #require(try await store.job(id: job.id, tenantId: tenant.id))
            #expect(stored.state == .succeeded)
            #expect(stored.finishedAt == now + 2_500)
            #expect(stored.errors == errors)
        }
    }

    @Test(arguments: TestEngine.available)
    func batchedSuccessCompletesOnlyTheNodesRunningJobs(engine: TestEngine) async throws {
        try await withStore(engine, JobStore.init) { store, tenant, _, database in
            let first = try await Factory.runningJob(on: database, tenant: tenant, node: "node-a", now: now)
            let second = try await Factory.runningJob(on: database, tenant: tenant, node: "node-a", now: now)
            let elsewhere = try await Factory.runningJob(on: database, tenant: tenant, node: "node-b", now: now)
            let waiting = try await Factory.job(on: database, tenant: tenant, now: now)

            // Only the two jobs node-a holds count: the others' leases are not its own.
            #expect(try await store.succeed(ids: [first.id, second.id, elsewhere.id, waiting.id], node: "node-a", now: now + 5) == 2)
            #expect(try await store.succeed(ids: [first.id], node: "node-a", now: now + 6) == 0)
            for id in [first.id, second.id] {
                let job = try #require(try await store.job(id: id, tenantId: tenant.id))
                #expect(job.state == .succeeded)
                #expect(job.finishedAt == now + 5)
                #expect(job.leaseOwner == nil)
            }
            #expect(try await store.job(id: elsewhere.id, tenantId: tenant.id)?.state == .running)
            #expect(try await store.job(id: waiting.id, tenantId: tenant.id)?.state == .available)
            #expect(try await store.succeed(ids: [], node: "node-a", now: now) == 0)
        }
    }

    @Test(arguments: TestEngine.available)
    func releasingHandsAJobBackWithoutUsingAnAttempt(engine: TestEngine) async throws {
        try await withStore(engine, JobStore.init) { store, tenant, _, database in
            let job = try await Factory.runningJob(on: database, tenant: tenant, node: "node-a", queue: "q", now: now)
            try await store.release(ids: [job.id], node: "node-b")
            #expect(try await store.job(id: job.id, tenantId: tenant.id)?.state == .running)
            try await store.release(ids: [job.id], node: "node-a")
            let released = try #require(try await store.job(id: job.id, tenantId: tenant.id))
            #expect(released.state == .available)
            #expect(released.attempt == 0)
            #expect(released.leaseOwner == nil)
            #expect(released.leaseExpiresAt == nil)
            let again = try await store.claim(node: "node-b", limit: 1, excludedTenants: [], queues: ["q"], now: now, leaseMs: 1_000)
            #expect(again.map(\.attempt) == [1])
        }
    }

    @Test(arguments: TestEngine.available)
    func rescueRequeuesLapsedLeasesAndDiscardsJobsWithoutAttemptsLeft(engine: TestEngine) async throws {
        try await withStore(engine, JobStore.init) { store, tenant, _, database in
            let lapsed = try await Factory.runningJob(on: database, tenant: tenant, node: "dead", now: now, leaseMs: 1_000)
            let lastAttempt = try await Factory.runningJob(on: database, tenant: tenant, node: "dead", maxAttempts: 1, now: now, leaseMs: 1_000)
            let live = try await Factory.runningJob(on: database, tenant: tenant, node: "alive", now: now, leaseMs: 60_000)

            // A lease is good up to and including its expiry time.
            #expect(try await store.rescue(now: now + 1_000).isEmpty)
            let rescued = try await store.rescue(now: now + 1_001)
            #expect(Set(rescued.map(\.id)) == [lapsed.id, lastAttempt.id])

            let requeued = try #require(try await store.job(id: lapsed.id, tenantId: tenant.id))
            #expect(requeued.state == .available)
            #expect(requeued.finishedAt == nil)
            #expect(requeued.leaseOwner == nil)
            #expect(requeued.attempt == 1)
            let discarded = try #require(try await store.job(id: lastAttempt.id, tenantId: tenant.id))
            #expect(discarded.state == .discarded)
            #expect(discarded.finishedAt == now + 1_001)
            #expect(try await store.job(id: live.id, tenantId: tenant.id)?.leaseOwner == "alive")

            // The dead node's late answers change nothing.
            #expect(try await !store.finish(id: lapsed.id, node: "dead", state: .succeeded, now: now + 2_000))
            #expect(try await !store.save(id: lapsed.id, node: "dead", progress: "{}", checkpoint: nil))
            #expect(try await store.rescue(now: now + 1_001).isEmpty)
        }
    }

    @Test(arguments: TestEngine.available)
    func aRequestedCancelSurvivesTheLossOfTheRunningNode(engine: TestEngine) async throws {
        try await withStore(engine, JobStore.init) { store, tenant, _, database in
            let abandoned = try await Factory.runningJob(on: database, tenant: tenant, node: "dead", queue: "q", now: now, leaseMs: 1_000)
            let shutDown = try await Factory.runningJob(on: database, tenant: tenant, node: "leaving", queue: "q", now: now, leaseMs: 60_000)
            #expect(try await store.requestCancel(id: abandoned.id, tenantId: tenant.id, now: now + 10)?.cancelRequestedAt == now + 10)
            #expect(try await store.requestCancel(id: shutDown.id, tenantId: tenant.id, now: now + 10)?.cancelRequestedAt == now + 10)

            // Its node died before it saw the request: the rescue ends the job as cancelled
            // instead of queueing it to run again.
            #expect(try await store.rescue(now: now + 1_001).map(\.id) == [abandoned.id])
            let rescued = try #require(try await store.job(id: abandoned.id, tenantId: tenant.id))
            #expect(rescued.state == .cancelled)
            #expect(rescued.finishedAt == now + 1_001)
            // Its node shut down before it saw the request: handing it back cancels it too.
            try await store.release(ids: [shutDown.id], node: "leaving")
            #expect(try await store.job(id: shutDown.id, tenantId: tenant.id)?.state == .cancelled)
            #expect(try await store.job(id: shutDown.id, tenantId: tenant.id)?.finishedAt != nil)
            #expect(try await store.claim(node: "other", limit: 10, excludedTenants: [], queues: ["q"], now: now + 2_000, leaseMs: 1_000).isEmpty)
        }
    }

    @Test(arguments: TestEngine.available)
    func progressCheckpointsAndResultsNeedTheLease(engine: TestEngine) async throws {
        try await withStore(engine, JobStore.init) { store, tenant, _, database in
            let job = try await Factory.runningJob(on: database, tenant: tenant, node: "node-a", now: now)

            #expect(try await store.save(id: job.id, node: "node-a", progress: #"{"fraction":0.5}"#, checkpoint: #"{"row":10}"#))
            var stored = try #require(try await store.job(id: job.id, tenantId: tenant.id))
            #expect(stored.progress == #"{"fraction":0.5}"#)
            #expect(stored.checkpoint == #"{"row":10}"#)
            #expect(stored.result == nil)
            #expect(stored.version == job.version + 1)

            // Nothing to save changes nothing; a progress report keeps the checkpoint.
            #expect(try await store.save(id: job.id, node: "node-a", progress: nil, checkpoint: nil))
            #expect(try await store.save(id: job.id, node: "node-a", progress: #"{"fraction":1}"#, checkpoint: nil, result: #"{"file":"f"}"#))
            stored = try #require(try await store.job(id: job.id, tenantId: tenant.id))
            #expect(stored.version == job.version + 2)
            #expect(stored.progress == #"{"fraction":1}"#)
            #expect(stored.checkpoint == #"{"row":10}"#)
            #expect(stored.result == #"{"file":"f"}"#)

            #expect(try await !store.save(id: job.id, node: "node-b", progress: #"{"fraction":0}"#, checkpoint: nil))
            #expect(try await store.finish(id: job.id, node: "node-a", state: .succeeded, now: now))
            #expect(try await !store.save(id: job.id, node: "node-a", progress: #"{"fraction":0}"#, checkpoint: nil))
            #expect(try await store.job(id: job.id, tenantId: tenant.id)?.progress == #"{"fraction":1}"#)
        }
    }

    @Test(arguments: TestEngine.available)
    func retentionDeletesOnlyOldSucceededAndCancelledJobs(engine: TestEngine) async throws {
        try await withStore(engine, JobStore.init) { store, tenant, _, database in
            let oldSucceeded = try await Factory.finishedJob(on: database, tenant: tenant, state: .succeeded, finishedAt: now - 10_000)
            let oldCancelled = try await Factory.finishedJob(on: database, tenant: tenant, state: .cancelled, finishedAt: now - 10_000)
            let oldDiscarded = try await Factory.finishedJob(on: database, tenant: tenant, state: .discarded, finishedAt: now - 10_000)
            let recent = try await Factory.finishedJob(on: database, tenant: tenant, state: .succeeded, finishedAt: now)
            let waiting = try await Factory.job(on: database, tenant: tenant, runAt: now - 20_000, now: now - 20_000)
            let running = try await Factory.runningJob(on: database, tenant: tenant, now: now - 20_000)

            #expect(try await store.prune(before: now) == 2)
            #expect(try await store.job(id: oldSucceeded.id, tenantId: tenant.id) == nil)
            #expect(try await store.job(id: oldCancelled.id, tenantId: tenant.id) == nil)
            // Dead letters stay for inspection and retry; unfinished jobs are never pruned.
            for kept in [oldDiscarded, recent, waiting, running] {
                #expect(try await store.job(id: kept.id, tenantId: tenant.id) != nil)
            }
            #expect(try await store.prune(before: now) == 0)
            #expect(try await store.prune(before: now + 1) == 1)
        }
    }

    @Test(arguments: TestEngine.available)
    func cancelEndsAWaitingJobAtOnceAndFlagsARunningOne(engine: TestEngine) async throws {
        try await withStore(engine, JobStore.init) { store, tenant, other, database in
            let waiting = try await Factory.job(on: database, tenant: tenant, now: now)
            let running = try await Factory.runningJob(on: database, tenant: tenant, node: "node-a", now: now)
            let done = try await Factory.finishedJob(on: database, tenant: tenant, finishedAt: now)

            #expect(try await store.requestCancel(id: waiting.id, tenantId: other.id, now: now + 1) == nil)
            #expect(try await store.job(id: waiting.id, tenantId: tenant.id)?.state == .available)

            let cancelled = try #require(try await store.requestCancel(id: waiting.id, tenantId: tenant.id, now: now + 1))
            #expect(cancelled.state == .cancelled)
            #expect(cancelled.finishedAt == now + 1)
            #expect(cancelled.version == waiting.version + 1)
            #expect(try await store.requestCancel(id: waiting.id, tenantId: tenant.id, now: now + 2) == nil)

            let flagged = try #require(try await store.requestCancel(id: running.id, tenantId: tenant.id, now: now + 3))
            #expect(flagged.state == .running)
            #expect(flagged.cancelRequestedAt == now + 3)
            #expect(flagged.finishedAt == nil)
            #expect(try await store.cancelRequested(node: "node-a") == [running.id])
            #expect(try await store.cancelRequested(node: "node-b").isEmpty)

            #expect(try await store.requestCancel(id: done.id, tenantId: tenant.id, now: now + 4) == nil)
            #expect(try await store.job(id: done.id, tenantId: tenant.id)?.state == .succeeded)
        }
    }

    @Test(arguments: TestEngine.available)
    func retryRequeuesDeadLettersWithFreshAttempts(engine: TestEngine) async throws {
        try await withStore(engine, JobStore.init) { store, tenant, other, database in
            let dead = try await Factory.finishedJob(on: database, tenant: tenant, state: .discarded, finishedAt: now)
            let succeeded = try await Factory.finishedJob(on: database, tenant: tenant, state: .succeeded, finishedAt: now)
            let waiting = try await Factory.job(on: database, tenant: tenant, now: now)

            #expect(try await store.retry(id: dead.id, tenantId: other.id, now: now + 1) == nil)
            #expect(try await store.retry(id: succeeded.id, tenantId: tenant.id, now: now + 1) == nil)
            #expect(try await store.retry(id: waiting.id, tenantId: tenant.id, now: now + 1) == nil)
            let retried = try #require(try await store.retry(id: dead.id, tenantId: tenant.id, now: now + 1))
            #expect(retried.state == .available)
            #expect(retried.attempt == 0)
            #expect(retried.runAt == now + 1)
            #expect(retried.finishedAt == nil)
            #expect(retried.cancelRequestedAt == nil)
        }
    }

    @Test(arguments: TestEngine.available)
    func retryingADeadLetterWhoseKeyIsTakenAgainFails(engine: TestEngine) async throws {
        try await withStore(engine, JobStore.init) { store, tenant, _, database in
            let dead = try await Factory.finishedJob(on: database, tenant: tenant, state: .discarded, kind: "sync", uniqueKey: "k", finishedAt: now)
            _ = try await Factory.job(on: database, tenant: tenant, kind: "sync", now: now, uniqueKey: "k")
            do {
                _ = try await store.retry(id: dead.id, tenantId: tenant.id, now: now + 1)
                Issue.record("two unfinished jobs now hold one unique key")
            } catch {
                #expect(Database.isUniqueViolation(error))
            }
            #expect(try await store.job(id: dead.id, tenantId: tenant.id)?.state == .discarded)
        }
    }

    @Test(arguments: TestEngine.available)
    func onlyFinishedJobsOfTheTenantCanBeDeleted(engine: TestEngine) async throws {
        try await withStore(engine, JobStore.init) { store, tenant, other, database in
            let waiting = try await Factory.job(on: database, tenant: tenant, now: now)
            let running = try await Factory.runningJob(on: database, tenant: tenant, now: now)
            let done = try await Factory.finishedJob(on: database, tenant: tenant, state: .cancelled, finishedAt: now)

            #expect(try await !store.delete(id: waiting.id, tenantId: tenant.id))
            #expect(try await !store.delete(id: running.id, tenantId: tenant.id))
            #expect(try await !store.delete(id: done.id, tenantId: other.id))
            #expect(try await store.job(id: done.id, tenantId: tenant.id) != nil)
            #expect(try await store.delete(id: done.id, tenantId: tenant.id))
            #expect(try await store.job(id: done.id, tenantId: tenant.id) == nil)
            #expect(try await store.job(id: waiting.id, tenantId: tenant.id) != nil)
        }
    }

    @Test(arguments: TestEngine.available)
    func listsPageNewestFirstAndFilterByStateAndKind(engine: TestEngine) async throws {
        try await withStore(engine, JobStore.init) { store, tenant, other, database in
            let made = try await rows(6, in: tenant, beside: other) { owner, index in
                try await Factory.job(on: database, tenant: owner, kind: index % 2 == 0 ? "even" : "odd", now: now)
            }
            let done = try await Factory.finishedJob(on: database, tenant: tenant, kind: "even", finishedAt: now)

            try await expectListing(limit: 4, ([done] + made.reversed()).map(\.id), id: \.id) {
                try await store.list(tenantId: tenant.id, state: nil, kind: nil, page: $0)
            }
            try await expectListing(limit: 2, made.filter { $0.kind == "odd" }.reversed().map(\.id), id: \.id) {
                try await store.list(tenantId: tenant.id, state: nil, kind: "odd", page: $0)
            }
            let succeeded = try await store.list(tenantId: tenant.id, state: .succeeded, kind: nil, page: PageRequest())
            #expect(succeeded.items.map(\.id) == [done.id])
            #expect(succeeded.nextCursor == nil)
            let evenWaiting = try await store.list(tenantId: tenant.id, state: .available, kind: "even", page: PageRequest())
            #expect(evenWaiting.items.map(\.id) == made.filter { $0.kind == "even" }.reversed().map(\.id))
        }
    }

    @Test(arguments: TestEngine.available)
    func readsByIdAreTenantScopedExceptTheCrossTenantBulkRead(engine: TestEngine) async throws {
        try await withStore(engine, JobStore.init) { store, a, b, database in
            let mine = try await Factory.job(on: database, tenant: a, now: now)
            let theirs = try await Factory.job(on: database, tenant: b, now: now)
            #expect(try await store.job(id: theirs.id, tenantId: a.id) == nil)
            #expect(try await store.job(id: "not-a-uuid", tenantId: a.id) == nil)
            #expect(try await store.list(tenantId: a.id, state: nil, kind: nil, page: PageRequest()).items.map(\.id) == [mine.id])
            // For event fan-out: jobs by id across tenants, ignoring ids that are not UUIDs.
            try await expectBulkRead(of: [mine.id, theirs.id], id: \.id) { try await store.jobs(ids: $0) }
        }
    }

    @Test(arguments: TestEngine.available)
    func pendingCountsOnlyWaitingJobsOfTheTenant(engine: TestEngine) async throws {
        try await withStore(engine, JobStore.init) { store, a, b, database in
            _ = try await Factory.job(on: database, tenant: a, now: now)
            _ = try await Factory.job(on: database, tenant: a, runAt: now + 60_000, now: now)
            _ = try await Factory.runningJob(on: database, tenant: a, now: now)
            _ = try await Factory.finishedJob(on: database, tenant: a, finishedAt: now)
            _ = try await Factory.job(on: database, tenant: b, now: now)
            let retrying = try await Factory.runningJob(on: database, tenant: a, node: "n", now: now)
            #expect(try await store.finish(id: retrying.id, node: "n", state: .retryable, runAt: now + 1_000, now: now))

            #expect(try await store.unfinishedCount(tenantId: a.id) == 3)
            #expect(try await store.unfinishedCount(tenantId: b.id) == 1)
            let counts = try await store.countsByState()
            #expect(counts[.available] == 2)
            #expect(counts[.scheduled] == 1)
            #expect(counts[.retryable] == 1)
            #expect(counts[.running] == 1)
            #expect(counts[.succeeded] == 1)
            #expect(counts[.discarded] == nil)
        }
    }
}
