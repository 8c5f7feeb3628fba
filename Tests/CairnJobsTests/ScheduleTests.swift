import CairnAccounts
import CairnFormats
import CairnHTTP
import CairnServer
import CairnStorage
import CairnTestSupport
import Foundation
import HTTPTypes
import HummingbirdTesting
import SQLKit
import Testing

@testable import CairnJobs

@Suite("Schedules (cron)")
struct ScheduleTests {
    @Test(arguments: TestEngine.available)
    func schedulesAreValidatedAndManagedByAdminsOfTheirTenant(engine: TestEngine) async throws {
        // 2026-03-10T12:00:00Z: the next 02:30 in Berlin (UTC+1 until the 29th) is 01:30 UTC on the 11th.
        let clock = TestClock(now: Date(timeIntervalSince1970: 1_773_144_000))
        try await withTestApp(engine, owner: "cron@example.com", clock: clock) { app, token in
            let client = app.client
            let bad = try await client.json(
                .post, "/schedules", ["name": "x", "cron": "61 * * * *", "timeZone": "Mars/Olympus", "kind": "nope"], token: token)
            #expect(bad.status == .badRequest)
            let fields = Set((bad.object["errors"] as? [[String: Any]] ?? []).compactMap { $0["field"] as? String })
            #expect(fields == ["cron.minute", "timeZone", "kind"])
            let created = try await client.json(
                .post, "/schedules", ["name": "nightly", "cron": "30 2 * * *", "timeZone": "Europe/Berlin", "kind": "noop", "args": ["sleepMs": 1]],
                token: token)
            #expect(created.status == .created)
            let schedule = try created.decode(ScheduleBody.self)
            let id = schedule.id
            #expect(schedule.nextRunAt == Date(timeIntervalSince1970: 1_773_192_600))

            let etag = try #require(created.headers[.eTag])
            #expect(try await client.json(.get, "/schedules/\(id)", token: token, headers: [.ifNoneMatch: etag]).status == .notModified)
            let utc = try await client.json(.post, "/schedules", ["name": "u", "cron": "@daily", "kind": "noop"], token: token).decode(
                ScheduleBody.self)
            #expect(utc.timeZone == "UTC")
            #expect(utc.nextRunAt == Date(timeIntervalSince1970: 1_773_187_200), "midnight UTC after the clock's noon")
            for zone in ["Asia/Kolkata", "Etc/UTC", "America/Argentina/Buenos_Aires"] {
                let response = try await client.json(
                    .post, "/schedules", ["name": "z", "cron": "@daily", "kind": "noop", "timeZone": zone], token: token)
                #expect(response.status == .created, "\(zone)")
                #expect(response.object["timeZone"] as? String == zone)
            }
            let huge = try await client.json(
                .post, "/schedules", ["name": "big", "cron": "@daily", "kind": "noop", "args": ["pad": String(repeating: "x", count: 70_000)]],
                token: token)
            #expect((huge.object["errors"] as? [[String: Any]])?.first?["field"] as? String == "args")
            // Issue 20: an expression that can never fire is refused, on creation and on change.
            let never = try await client.json(.post, "/schedules", ["name": "n", "cron": "0 0 30 2 *", "kind": "noop"], token: token)
            #expect(never.status == .badRequest)
            #expect(never.object["code"] as? String == "invalid_input")
            #expect((never.object["errors"] as? [[String: Any]])?.map { $0["field"] as? String } == ["cron.dayOfMonth"])
            let neverPatched = try await client.json(.patch, "/schedules/\(id)", ["cron": "0 0 31 4,6,9,11 *"], token: token)
            #expect(neverPatched.status == .badRequest)
            #expect((neverPatched.object["errors"] as? [[String: Any]])?.first?["field"] as? String == "cron.dayOfMonth")
            let plus = try await client.json(.post, "/schedules", ["name": "p", "cron": "+5 * * * *", "kind": "noop"], token: token)
            #expect((plus.object["errors"] as? [[String: Any]])?.first?["field"] as? String == "cron.minute")
            #expect(
                try await client.json(.patch, "/schedules/\(id)", ["cron": "@hourly"], token: token, headers: [.ifMatch: "\"9\""]).status
                    == .preconditionFailed)
            let patched = try await client.json(
                .patch, "/schedules/\(id)", ["cron": "@hourly", "enabled": false], token: token, headers: [.ifMatch: etag])
            #expect(patched.status == .ok)
            #expect(try patched.decode(ScheduleBody.self).enabled == false)
            #expect((try await client.json(.get, "/schedules", token: token).object["items"] as? [Any])?.count == 5)

            let stranger = try await client.registerAndLogin(email: "cron2@example.com").tokens.accessToken
            #expect(try await client.json(.get, "/schedules/\(id)", token: stranger).status == .notFound)
            #expect(try await client.json(.delete, "/schedules/\(id)", token: stranger).status == .notFound)
            let member = try await client.addUser(email: "m@cron.example", token: token).tokens.accessToken
            #expect(try await client.json(.get, "/schedules", token: member).status == .forbidden)
            #expect(try await client.json(.delete, "/schedules/\(id)", token: token).status == .noContent)
        }
    }

    @Test(arguments: TestEngine.available)
    func eachOccurrenceFiresExactlyOnceAndMissedOnesFireOnce(engine: TestEngine) async throws {
        // Every node reads one clock, stopped 20.5 s past a minute.
        let clock = TestClock(now: Date(timeIntervalSince1970: 1_773_144_020.5))
        try await withTestDatabase(engine) { test in
            let nodeCount = engine == .postgres ? 3 : 1
            var nodes: [CairnComponents] = []
            for _ in 0..<nodeCount {
                nodes.append(try await buildComponents(configuration: test.configuration, logger: testLogger, clock: clock))
            }
            do {
                try await fireOnce(nodes, clock: clock)
            } catch {
                for node in nodes { await node.database.close() }
                throw error
            }
            for node in nodes { await node.database.close() }
        }
    }

    /// A tenant has at most `CAIRN_JOBS_MAX_SCHEDULES_PER_TENANT` schedules: a fresh-user trial
    /// created 3,000 every-minute ones. Past it, `POST /schedules` answers 409 `conflict`, also
    /// when the creates arrive at once; other tenants are not affected, and deleting one makes
    /// room.
    @Test(arguments: TestEngine.available)
    func aTenantsSchedulesAreLimited(engine: TestEngine) async throws {
        try await withTestApp(engine, owner: "many@example.com", configure: { $0.jobs.maxSchedulesPerTenant = 3 }) { app, token in
            let client = app.client
            let statuses = try await withThrowingTaskGroup(of: HTTPResponse.Status.self) { group in
                for index in 0..<6 {
                    group.addTask {
                        try await client.json(.post, "/schedules", ["name": "s\(index)", "cron": "* * * * *", "kind": "noop"], token: token).status
                    }
                }
                return try await group.reduce(into: [HTTPResponse.Status]()) { $0.append($1) }
            }
            #expect(statuses.filter { $0 == .created }.count == 3, "\(statuses)")
            #expect(statuses.filter { $0 == .conflict }.count == 3, "\(statuses)")
            let over = try await client.json(.post, "/schedules", ["name": "one more", "cron": "@daily", "kind": "noop"], token: token)
            #expect(over.status == .conflict)
            #expect(over.code == "conflict")
            #expect((over.object["detail"] as? String)?.contains("3 schedules") == true, "\(over.text)")
            let listed = try await client.json(.get, "/schedules", token: token).object["items"] as? [[String: Any]] ?? []
            #expect(listed.count == 3)

            let other = try await client.registerAndLogin(email: "few@example.com").tokens.accessToken
            #expect(try await client.json(.post, "/schedules", ["name": "o", "cron": "@daily", "kind": "noop"], token: other).status == .created)

            let first = try #require(listed.first?["id"] as? String)
            // Changing one is not adding one.
            #expect(try await client.json(.patch, "/schedules/\(first)", ["cron": "@hourly"], token: token).status == .ok)
            #expect(try await client.json(.delete, "/schedules/\(first)", token: token).status == .noContent)
            #expect(try await client.json(.post, "/schedules", ["name": "again", "cron": "@daily", "kind": "noop"], token: token).status == .created)
        }
    }

    private func fireOnce(_ nodes: [CairnComponents], clock: TestClock) async throws {
        let database = nodes[0].database
        let tenant = UUIDv7.make()
        let missedSince = clock.milliseconds - 10 * 60_000  // ten occurrences were missed
        try await database.write { db in
            try await db.raw(
                """
                INSERT INTO schedules (id, tenant_id, name, cron, time_zone, kind, args, enabled, next_run_at, last_run_at, created_by,
                    created_at, updated_at, version)
                VALUES ('01a22800-0000-7000-8000-000000000001', \(bind: tenant), 'every minute', '* * * * *', 'UTC', 'noop', '{}',
                    \(bind: true), \(bind: missedSince), NULL, NULL, 0, 0, 1)
                """
            ).run()
        }
        let schedulers = nodes.map { Scheduler(queue: $0.jobs, logger: testLogger) }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for scheduler in schedulers {
                for _ in 0..<5 { group.addTask { try await scheduler.fireDue() } }
            }
            try await group.waitForAll()
        }
        let (jobs, next) = try await database.read { db in
            (
                try await db.raw("SELECT unique_key FROM jobs").all().map { try $0.decode(column: "unique_key", as: String.self) },
                try await db.raw("SELECT next_run_at FROM schedules").first()!.decode(column: "next_run_at", as: Int64.self)
            )
        }
        #expect(jobs == ["schedule:01a22800-0000-7000-8000-000000000001:\(missedSince)"])
        // The next occurrence is the first minute after the clock's time.
        #expect(next == 1_773_144_060_000)
    }
}
