import CairnHTTP
import CairnJobs
import CairnServer
import CairnStorage
import CairnTestSupport
import Foundation
import SQLKit
import Testing

/// A kind whose jobs sleep, then succeed or fail as asked; its `abandoned` hook logs each job
/// it is given, and refuses (throws) for `refuse`.
private struct Abandonable: JobArguments {
    static let kind = "test.abandonable"
    var sleepMs = 0
    var fail: String?
    var refuse = false
}

private struct Refused: Error {}

/// Registers ``Abandonable`` on `queue`, logging into `abandoned_log`.
private func registerAbandonable(on queue: JobQueue, database: Database) async throws {
    try await database.write { db in
        try await db.raw("CREATE TABLE abandoned_log (job_id TEXT PRIMARY KEY, state TEXT NOT NULL)").run()
    }
    queue.register(
        Abandonable.self,
        handler: { args, _ in
            if args.sleepMs > 0 { try await Task.sleep(for: .milliseconds(args.sleepMs)) }
            switch args.fail {
            case "permanent": throw PermanentJobError("failed as asked")
            case "transient": throw Refused()
            default: return
            }
        },
        abandoned: { args, job, db in
            if args.refuse { throw Refused() }
            try await db.raw("INSERT INTO abandoned_log (job_id, state) VALUES (\(bind: job.id), \(bind: job.state.rawValue))").run()
        })
}

/// The states `abandoned_log` holds for each job.
private func logged(_ database: Database) async throws -> [String: String] {
    try await database.read { db in
        var states: [String: String] = [:]
        for row in try await db.raw("SELECT job_id, state FROM abandoned_log").all() {
            states[try row.decode(column: "job_id", as: String.self)] = try row.decode(column: "state", as: String.self)
        }
        return states
    }
}

@Suite("Jobs: a kind's abandoned hook runs in the transaction that cancels or discards its job")
struct AbandonedJobTests {
    /// Cancelled while waiting or while running, discarded by a permanent failure or by the
    /// rescue of its last attempt: the hook sees each job once, in its final state. A success,
    /// and a failure with attempts left, are not abandonment. A hook that throws rolls the
    /// cancellation back.
    @Test(arguments: TestEngine.available)
    func theHookSeesEveryCancelledOrDiscardedJob(engine: TestEngine) async throws {
        let clock = TestClock()
        try await withTestApp(engine, clock: clock, configure: { $0.jobs.rescueInterval = .milliseconds(200) }, runServices: true) { app in
            let queue = app.components.jobs
            try await registerAbandonable(on: queue, database: app.database)
            let tenant = UUIDv7.make()
            func enqueue(_ args: Abandonable, maxAttempts: Int = 3, later: Bool = false) async throws -> String {
                var request = try JobRequest(args)
                request.maxAttempts = maxAttempts
                if later { request.runAt = clock.milliseconds + 3_600_000 }
                return try await queue.enqueue(request, tenantId: tenant, createdBy: nil).job.id
            }

            let waiting = try await enqueue(Abandonable(), later: true)
            _ = try await queue.cancel(id: waiting, tenantId: tenant)
            #expect(try await logged(app.database)[waiting] == "cancelled", "logged in the cancelling transaction")

            let refused = try await enqueue(Abandonable(refuse: true), later: true)
            await #expect(throws: Refused.self) { _ = try await queue.cancel(id: refused, tenantId: tenant) }
            #expect(try await queue.store.job(id: refused, tenantId: tenant)?.state == .scheduled, "the refused hook rolled the cancel back")

            let running = try await enqueue(Abandonable(sleepMs: 60_000))
            _ = try await queue.waitForJob(running, state: .running)
            _ = try await queue.cancel(id: running, tenantId: tenant)
            _ = try await queue.waitForJob(running, state: .cancelled)

            let permanent = try await enqueue(Abandonable(fail: "permanent"))
            _ = try await queue.waitForJob(permanent, state: .discarded)
            let succeeded = try await enqueue(Abandonable())
            _ = try await queue.waitForJob(succeeded, state: .succeeded)
            let retrying = try await enqueue(Abandonable(fail: "transient"))
            _ = try await queue.waitForJob(retrying, state: .retryable)

            // As if a node took the last attempt and died: the rescue discards it.
            let crashed = try await enqueue(Abandonable(), maxAttempts: 1, later: true)
            let now = clock.milliseconds
            try await app.database.write { db in
                try await db.raw(
                    """
                    UPDATE jobs SET state = 'running', attempt = 1, lease_owner = 'dead-node', lease_expires_at = \(bind: now + 30_000),
                        attempted_at = \(bind: now) WHERE id = \(bind: crashed)
                    """
                ).run()
            }
            clock.advance(by: .seconds(31))
            _ = try await queue.waitForJob(crashed, state: .discarded)

            let log = try await logged(app.database)
            #expect(log[running] == "cancelled")
            #expect(log[permanent] == "discarded")
            #expect(log[crashed] == "discarded")
            #expect(log[succeeded] == nil && log[retrying] == nil && log[refused] == nil)
            #expect(log.count == 4)
        }
    }
}
