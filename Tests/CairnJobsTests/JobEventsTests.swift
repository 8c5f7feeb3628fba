import CairnAccounts
import CairnHTTP
import CairnServer
import CairnStorage
import CairnTestSupport
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import SQLKit
import Testing

@testable import CairnJobs

/// Parses `text/event-stream` into (id, event, data) triples.
func serverSentEvents(_ text: String) -> [(id: Int, event: String, data: [String: Any])] {
    text.components(separatedBy: "\n\n").compactMap { block in
        var id: Int?
        var event = ""
        var data = ""
        for line in block.split(separator: "\n") {
            if line.hasPrefix("id: ") { id = Int(line.dropFirst(4)) }
            if line.hasPrefix("event: ") { event = String(line.dropFirst(7)) }
            if line.hasPrefix("data: ") { data += line.dropFirst(6) }
        }
        guard let id, let object = try? JSONSerialization.jsonObject(with: Data(data.utf8)) as? [String: Any] else { return nil }
        return (id, event, object)
    }
}

@Suite("Jobs: live status over Server-Sent Events")
struct JobEventsTests {
    @Test(arguments: TestEngine.available)
    func theStreamFollowsAJobToItsEndAndResumesAfterLastEventID(engine: TestEngine) async throws {
        try await withTestApp(engine, runServices: true) { client, _ in
            let token = try await client.registerAndLogin(email: "sse@example.com").tokens["accessToken"] as! String
            let created = try await client.json(.post, "/jobs", ["kind": "noop", "args": ["sleepMs": 400, "checkpointEvery": 100]], token: token)
            let id = created.object["id"] as! String
            let stream = try await client.execute(uri: "/jobs/\(id)/events", method: .get, headers: [.authorization: "Bearer \(token)"])
            #expect(stream.status == .ok)
            #expect(stream.headers[.contentType] == "text/event-stream")
            #expect(stream.text.hasPrefix("retry: 2000\n\n"))
            let events = serverSentEvents(stream.text)
            #expect(events.count >= 3, "expected the initial state, progress and the end")
            #expect(events.allSatisfy { $0.event == "job" && $0.data["id"] as? String == id })
            #expect(events.map(\.id) == events.map(\.id).sorted())
            #expect(Set(events.map(\.id)).count == events.count)
            #expect(events.last?.data["state"] as? String == "succeeded")
            #expect(events.contains { ($0.data["progress"] as? [String: Any])?["fraction"] != nil })

            // Reconnecting after the last event: nothing new, the stream just ends.
            let last = events.last!.id
            let resumed = try await client.execute(
                uri: "/jobs/\(id)/events", method: .get,
                headers: [.authorization: "Bearer \(token)", HTTPField.Name("Last-Event-ID")!: String(last)])
            #expect(serverSentEvents(resumed.text).isEmpty)
            // Reconnecting from an earlier event: the current state once.
            let earlier = try await client.execute(
                uri: "/jobs/\(id)/events", method: .get,
                headers: [.authorization: "Bearer \(token)", HTTPField.Name("Last-Event-ID")!: String(events.first!.id)])
            #expect(serverSentEvents(earlier.text).map(\.id) == [last])

            let stranger = try await client.registerAndLogin(email: "sse2@example.com").tokens["accessToken"] as! String
            #expect(try await client.json(.get, "/jobs/\(id)/events", token: stranger).status == .notFound)
        }
    }
}

@Suite("Jobs: live status across nodes")
struct JobEventsAcrossNodesTests {
    /// Node B serves the stream, node A runs the job: B hears of every step through
    /// LISTEN/NOTIFY. Its fallback poll is 1 s, so a 3 s job with ten checkpoints would show at
    /// most four events if the notifications did not cross.
    @Test func aStreamOnOneNodeFollowsAJobRunningOnAnother() async throws {
        guard TestEngine.available.contains(.postgres) else { return }
        var database = try await TestDatabase.make(.postgres)
        database.configuration.accounts.bcryptCost = 4
        let nodeA = try await buildComponents(configuration: database.configuration, logger: testLogger)
        let nodeB = try await buildComponents(configuration: database.configuration, logger: testLogger)
        let appA = Application(router: buildRouter(components: nodeA), services: nodeA.makeServices(), logger: testLogger)
        let appB = Application(router: buildRouter(components: nodeB), logger: testLogger)
        try await appA.test(.router) { _ in
            try await appB.test(.router) { clientB in
                let token = try await clientB.registerAndLogin(email: "sse-nodes@example.com").tokens["accessToken"] as! String
                let created = try await clientB.json(
                    .post, "/jobs", ["kind": "noop", "args": ["sleepMs": 3000, "checkpointEvery": 300]], token: token)
                let id = created.object["id"] as! String
                let stream = try await clientB.execute(uri: "/jobs/\(id)/events", method: .get, headers: [.authorization: "Bearer \(token)"])
                let events = serverSentEvents(stream.text)
                #expect(events.last?.data["state"] as? String == "succeeded")
                // Eleven changes (claim, ten checkpoints, outcome); polling alone would show at
                // most four or five. A loaded machine coalesces some (a re-read covers several).
                #expect(events.count >= 6, "only \(events.count) events reached the other node")
                #expect(events.map(\.id) == events.map(\.id).sorted())
            }
        }
        await nodeA.database.close()
        await nodeB.database.close()
    }
}

@Suite("Jobs: metrics")
struct JobMetricsTests {
    @Test func countersTimersAndQueueDepthAreExported() async throws {
        try await withTestApp(.sqlite, configure: { $0.jobs.rescueInterval = .milliseconds(100) }, runServices: true) { client, _ in
            let token = try await client.registerAndLogin(email: "metrics@example.com").tokens["accessToken"] as! String
            let created = try await client.json(.post, "/jobs", ["kind": "noop"], token: token)
            _ = try await awaitJob(client, created.object["id"] as! String, token: token, state: "succeeded")
            let exported = try await eventually(timeout: .seconds(5)) {
                let text = try await client.execute(uri: "/metrics", method: .get).text
                return text.contains(#"cairn_jobs_enqueued_total{kind="noop"}"#)
                    && text.contains(#"cairn_jobs_finished_total{kind="noop",state="succeeded"}"#)
                    && text.contains(#"cairn_jobs{state="succeeded"}"#)
                    && text.contains("cairn_jobs_wait_seconds_bucket") && text.contains("cairn_jobs_run_seconds_bucket")
            }
            #expect(exported)
        }
    }
}

@Suite("Jobs: retention")
struct JobRetentionTests {
    @Test(arguments: TestEngine.available)
    func pruningDeletesOldFinishedJobsButKeepsDeadLettersAndRecentOnes(engine: TestEngine) async throws {
        try await withTestApp(engine) { client, components in
            let token = try await client.registerAndLogin(email: "prune@example.com").tokens["accessToken"] as! String
            var ids: [String] = []
            for _ in 0..<3 {
                ids.append(
                    try await client.json(.post, "/jobs", ["kind": "noop", "runAt": "2099-01-01T00:00:00Z"], token: token).object["id"] as! String)
            }
            let old = WallClock.milliseconds() - 8 * 86_400_000
            let created = ids
            try await components.database.write { db in
                try await db.raw("UPDATE jobs SET state = 'succeeded', finished_at = \(bind: old) WHERE id = \(bind: created[0])").run()
                try await db.raw("UPDATE jobs SET state = 'discarded', finished_at = \(bind: old) WHERE id = \(bind: created[1])").run()
                try await db.raw(
                    "UPDATE jobs SET state = 'cancelled', finished_at = \(bind: WallClock.milliseconds()) WHERE id = \(bind: created[2])"
                )
                .run()
            }
            let deleted = try await components.jobs.store.prune(before: WallClock.milliseconds() - 7 * 86_400_000)
            #expect(deleted == 1)
            #expect(try await client.json(.get, "/jobs/\(ids[0])", token: token).status == .notFound)
            #expect(try await client.json(.get, "/jobs/\(ids[1])", token: token).status == .ok)
            #expect(try await client.json(.get, "/jobs/\(ids[2])", token: token).status == .ok)
        }
    }
}
