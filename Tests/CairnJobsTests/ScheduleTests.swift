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
        try await withTestApp(engine) { client, _ in
            let token = try await client.registerAndLogin(email: "cron@example.com").tokens["accessToken"] as! String
            let bad = try await client.json(
                .post, "/schedules", ["name": "x", "cron": "61 * * * *", "timeZone": "Mars/Olympus", "kind": "nope"], token: token)
            #expect(bad.status == .badRequest)
            let fields = Set((bad.object["errors"] as? [[String: Any]] ?? []).compactMap { $0["field"] as? String })
            #expect(fields == ["cron.minute", "timeZone", "kind"])
            let created = try await client.json(
                .post, "/schedules", ["name": "nightly", "cron": "30 2 * * *", "timeZone": "Europe/Berlin", "kind": "noop", "args": ["sleepMs": 1]],
                token: token)
            #expect(created.status == .created)
            let id = created.object["id"] as! String
            let nextRun = Timestamp.parse(created.object["nextRunAt"] as! String)!
            var berlin = Calendar(identifier: .gregorian)
            berlin.timeZone = TimeZone(identifier: "Europe/Berlin")!
            #expect(berlin.component(.hour, from: nextRun) == 2 && berlin.component(.minute, from: nextRun) == 30)
            #expect(nextRun > Date() && nextRun < Date().addingTimeInterval(86_400 + 3600))

            let etag = try #require(created.headers[.eTag])
            #expect(try await client.json(.get, "/schedules/\(id)", token: token, headers: [.ifNoneMatch: etag]).status == .notModified)
            let utc = try await client.json(.post, "/schedules", ["name": "u", "cron": "@daily", "kind": "noop"], token: token)
            #expect(utc.object["timeZone"] as? String == "UTC")
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
            let plus = try await client.json(.post, "/schedules", ["name": "p", "cron": "+5 * * * *", "kind": "noop"], token: token)
            #expect((plus.object["errors"] as? [[String: Any]])?.first?["field"] as? String == "cron.minute")
            #expect(
                try await client.json(.patch, "/schedules/\(id)", ["cron": "@hourly"], token: token, headers: [.ifMatch: "\"9\""]).status
                    == .preconditionFailed)
            let patched = try await client.json(
                .patch, "/schedules/\(id)", ["cron": "@hourly", "enabled": false], token: token, headers: [.ifMatch: etag])
            #expect(patched.status == .ok)
            #expect(patched.object["enabled"] as? Bool == false)
            #expect((try await client.json(.get, "/schedules", token: token).object["items"] as? [Any])?.count == 5)

            let stranger = try await client.registerAndLogin(email: "cron2@example.com").tokens["accessToken"] as! String
            #expect(try await client.json(.get, "/schedules/\(id)", token: stranger).status == .notFound)
            #expect(try await client.json(.delete, "/schedules/\(id)", token: stranger).status == .notFound)
            _ = try await client.json(
                .post, "/users", ["email": "m@cron.example", "name": "M", "role": "member", "password": "member password"], token: token)
            let member = try await client.login(email: "m@cron.example", password: "member password")["accessToken"] as! String
            #expect(try await client.json(.get, "/schedules", token: member).status == .forbidden)
            #expect(try await client.json(.delete, "/schedules/\(id)", token: token).status == .noContent)
        }
    }

    @Test(arguments: TestEngine.available)
    func eachOccurrenceFiresExactlyOnceAndMissedOnesFireOnce(engine: TestEngine) async throws {
        var test = try await TestDatabase.make(engine)
        test.configuration.accounts.bcryptCost = 4
        let nodeCount = engine == .postgres ? 3 : 1
        var nodes: [CairnComponents] = []
        for _ in 0..<nodeCount { nodes.append(try await buildComponents(configuration: test.configuration, logger: testLogger)) }
        let database = nodes[0].database
        let tenant = UUIDv7.make()
        let missedSince = WallClock.milliseconds() - 10 * 60_000  // ten occurrences were missed
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
        let firing = WallClock.milliseconds()
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
        // The next occurrence is the first minute after the firing began (compared with that
        // moment, not with the clock after the reads: a run crossing a minute boundary is fine).
        #expect(next > firing)
        #expect(next <= WallClock.milliseconds() + 60_000)
        #expect(next % 60_000 == 0)
        for node in nodes { await node.database.close() }
    }
}
