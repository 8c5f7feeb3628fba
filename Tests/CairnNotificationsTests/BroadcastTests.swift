import CairnHTTP
import CairnServer
import CairnStorage
import CairnTestSupport
import Foundation
import HTTPTypes
import HummingbirdTesting
import NIOCore
import SQLKit
import Synchronization
import Testing

@testable import CairnJobs
@testable import CairnNotifications

/// Rows of one broadcast, per user id.
func broadcastRows(_ database: Database, broadcastId: String) async throws -> [String: Int] {
    let key = TenantBroadcasts.dedupeKey(broadcastId: broadcastId)
    return try await database.read { db in
        var rows: [String: Int] = [:]
        for row in try await db.raw("SELECT user_id, COUNT(*) AS n FROM notifications WHERE dedupe_key = \(bind: key) GROUP BY user_id").all() {
            rows[try row.decode(column: "user_id", as: String.self)] = try row.decode(column: "n", as: Int.self)
        }
        return rows
    }
}

/// The typed arguments of a broadcast's job, decoded from its stored `args`.
func broadcastArguments(_ job: Job) throws -> SendBroadcast {
    try JSONDecoder().decode(SendBroadcast.self, from: Data(job.args.utf8))
}

/// What a handler saved through its context.
struct Saved: Sendable {
    var checkpoints: [JSONValue] = []
    var result: JSONValue?
}

final class SavedBox: Sendable {
    let value = Mutex(Saved())
}

/// A value shared with other tasks.
final class Box<Value: Sendable>: Sendable {
    let value: Mutex<Value>
    init(_ value: Value) { self.value = Mutex(value) }
}

@Suite("Notifications: tenant broadcasts as jobs")
struct BroadcastTests {
    @Test(arguments: TestEngine.available)
    func aBroadcastIsAJobStoringOneRowPerMemberInPagesAndIdempotencyKeyReplaysIt(engine: TestEngine) async throws {
        try await withTestApp(
            engine, mode: .live,
            configure: {
                fastNotifications(&$0)
                $0.notifications.batchSize = 3
            }
        ) { app in
            let (client, components) = (app.client, app.components)
            // 8 users: three pages of at most 3.
            let (owner, members, stranger) = try await makeTenant(client, prefix: "bcast", members: 7)
            let headers: HTTPFields = [
                HTTPField.Name("Idempotency-Key")!: "broadcast-1", .authorization: "Bearer \(owner.token)", .contentType: "application/json",
            ]
            let body = ByteBuffer(string: #"{"audience":"tenant","type":"announcement","title":"maintenance","data":{"minutes":30}}"#)
            let first = try await client.execute(uri: "/notifications", method: .post, headers: headers, body: body)
            #expect(first.status == .accepted)
            let broadcastId = try #require(first.object["broadcastId"] as? String)
            let job = try #require(first.object["job"] as? [String: Any])
            let jobId = try #require(job["id"] as? String)
            #expect(job["kind"] as? String == "notifications.broadcast")
            #expect(first.headers[.location] == "/jobs/\(jobId)")

            let again = try await client.execute(uri: "/notifications", method: .post, headers: headers, body: body)
            #expect(again.status == .accepted)
            #expect(again.headers[HTTPField.Name("Idempotent-Replayed")!] == "true")
            #expect(again.object["broadcastId"] as? String == broadcastId)
            #expect(again.headers[.location] == "/jobs/\(jobId)")

            let done = try await app.waitForJob(jobId, state: .succeeded, token: owner.token)
            let result = try #require(done.result)
            #expect(result["broadcastId"]?.string == broadcastId)
            #expect(result["members"]?.int == 8)
            #expect(result["stored"]?.int == 8)
            // The last checkpoint is after the last page.
            #expect(done.checkpoint?["after"]?.string == ([owner] + members).map(\.userId).max())

            // Exactly one row per member, none outside the tenant, and one job for both requests.
            let rows = try await broadcastRows(components.database, broadcastId: broadcastId)
            #expect(rows == Dictionary(uniqueKeysWithValues: ([owner] + members).map { ($0.userId, 1) }))
            for member in [owner] + members {
                let inbox = try await client.json(.get, "/notifications?type=announcement", token: member.token).object
                #expect((inbox["items"] as? [[String: Any]])?.map { $0["title"] as? String } == ["maintenance"])
            }
            #expect(try await client.json(.get, "/notifications/unread-count", token: stranger.token).object["unread"] as? Int == 0)
            let jobs = try await components.database.rowCount("jobs WHERE kind = 'notifications.broadcast'")
            #expect(jobs == 1)
        }
    }

    @Test(arguments: TestEngine.available)
    func aRetriedBroadcastResumesFromItsCheckpointWithoutDuplicates(engine: TestEngine) async throws {
        try await withTestApp(engine, configure: { $0.notifications.batchSize = 3 }) { client, components in
            let (owner, members, _) = try await makeTenant(client, prefix: "resume", members: 6)
            let everyone = ([owner] + members).map(\.userId)
            let started = try await components.broadcasts.start(
                NotificationDraft(type: "system_alert", title: "resume"), tenantId: owner.tenantId, createdBy: owner.userId)
            struct Crash: Error {}
            // An attempt whose `crashAtCheckpoint`-th checkpoint write fails: the page before it
            // is committed, its checkpoint is not (a crash or lost lease between the two).
            func attempt(_ number: Int, from checkpoint: JSONValue?, crashAtCheckpoint: Int? = nil) async throws -> Saved {
                let saved = SavedBox()
                var job = started.job
                job.attempt = number
                let context = JobContext(
                    job: job, checkpoint: checkpoint,
                    save: { _, checkpoint, result in
                        try saved.value.withLock { saved in
                            if let checkpoint {
                                if saved.checkpoints.count + 1 == crashAtCheckpoint { throw Crash() }
                                saved.checkpoints.append(JSONValue(text: checkpoint)!)
                            }
                            if let result { saved.result = JSONValue(text: result) }
                        }
                    })
                do {
                    try await components.broadcasts.run(try broadcastArguments(job), context: context)
                } catch is Crash {}
                return saved.value.withLock { $0 }
            }

            // Attempt 1 stores pages 1 and 2, and dies before page 2's checkpoint.
            let first = try await attempt(1, from: nil, crashAtCheckpoint: 2)
            #expect(first.result == nil)
            #expect(first.checkpoints.count == 1)
            #expect(try await broadcastRows(components.database, broadcastId: started.broadcastId).count == 6)

            // Attempt 2 resumes after page 1: page 2 again (nothing new), then page 3.
            let second = try await attempt(2, from: first.checkpoints.last)
            #expect(second.checkpoints.map { $0["members"]?.int } == [6, 7])
            #expect(second.checkpoints.map { $0["stored"]?.int } == [6, 7])
            #expect(second.result?["stored"]?.int == 7)
            #expect(second.result?["members"]?.int == 7)

            // A retry that lost every checkpoint redoes all pages and stores nothing new.
            let third = try await attempt(3, from: nil)
            #expect(third.result?["stored"]?.int == 7)

            let rows = try await broadcastRows(components.database, broadcastId: started.broadcastId)
            #expect(rows == Dictionary(uniqueKeysWithValues: everyone.map { ($0, 1) }))
            // The skipped duplicates gave their sequence numbers back: no gaps in anyone's seq.
            for userId in everyone {
                #expect(try await components.notifications.store.currentSeq(tenantId: owner.tenantId, userId: userId) == 1)
            }
            // The key dedupes per user: another broadcast reaches everyone again.
            let other = try await components.broadcasts.start(
                NotificationDraft(type: "system_alert", title: "other"), tenantId: owner.tenantId, createdBy: nil)
            var job = other.job
            job.attempt = 1
            try await components.broadcasts.run(try broadcastArguments(job), context: JobContext(job: job, checkpoint: nil, save: { _, _, _ in }))
            #expect(
                try await broadcastRows(components.database, broadcastId: other.broadcastId)
                    == Dictionary(uniqueKeysWithValues: everyone.map { ($0, 1) }))
        }
    }

    @Test(arguments: TestEngine.available)
    func requestsAreAnsweredWhileABroadcastRuns(engine: TestEngine) async throws {
        let gate = Gate()
        try await withTestApp(
            engine, mode: .live,
            configure: {
                fastNotifications(&$0)
                $0.notifications.batchSize = 2
            },
            // The broadcast's first page waits here, inside its transaction, until the gate opens.
            observers: [BroadcastGate(gate: gate)]
        ) { app in
            let client = app.client
            let (owner, members, _) = try await makeTenant(client, prefix: "busy", members: 3)
            defer { gate.open() }
            let answered = Observed<TestResponse?>(nil)
            let post = Task {
                let response = try await client.json(
                    .post, "/notifications", ["audience": "tenant", "type": "announcement", "title": "big"], token: owner.token)
                answered.update { $0 = response }
            }
            try await gate.waitForArrivals(1)  // the broadcast started
            // The POST is answered while the broadcast's first page is still open.
            do {
                try await answered.wait("the POST answered while the broadcast runs") { $0 != nil }
            } catch {
                gate.open()
                throw error
            }
            try await post.value
            let response = try #require(answered.value)
            #expect(response.status == .accepted)
            let jobId = try #require((response.object["job"] as? [String: Any])?["id"] as? String)
            // Other requests are answered meanwhile: the job is running, nobody has the row yet.
            #expect(try await client.json(.get, "/jobs/\(jobId)", token: owner.token).object["state"] as? String == "running")
            #expect(try await client.json(.get, "/notifications/unread-count", token: members[0].token).object["unread"] as? Int == 0)
            gate.open()
            try await app.waitForJob(jobId, state: .succeeded, token: owner.token)
            for member in [owner] + members {
                let inbox = try await client.json(.get, "/notifications?type=announcement", token: member.token).object
                #expect((inbox["items"] as? [[String: Any]])?.count == 1)
            }
        }
    }
}

/// Holds each broadcast page inside its publishing transaction until the gate opens.
struct BroadcastGate: PublishObserver {
    let gate: Gate

    func didStore(_ rows: [StoredNotification], draft: NotificationDraft, preferences: [String: NotificationPreferences], on db: any SQLDatabase)
        async throws
    {
        if draft.dedupeKey?.hasPrefix("broadcast:") == true { try await gate.wait() }
    }
}
