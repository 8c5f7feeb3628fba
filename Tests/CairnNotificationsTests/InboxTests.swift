import CairnHTTP
import CairnJobs
import CairnNotifications
import CairnServer
import CairnStorage
import CairnTestSupport
import Foundation
import HTTPTypes
import HummingbirdTesting
import NIOCore
import SQLKit
import Testing

private func items(_ response: TestResponse) -> [[String: Any]] {
    response.object["items"] as? [[String: Any]] ?? []
}

@Suite("Notifications: inbox, publish API and REST")
struct InboxTests {
    @Test(arguments: TestEngine.available)
    func publishInsideACallerTransactionCommitsOrRollsBackWithIt(engine: TestEngine) async throws {
        try await withOwner(engine, "tx@example.com") { client, components, owner in
            let center = components.notifications
            struct Boom: Error {}
            await #expect(throws: Boom.self) {
                try await components.database.transaction { db in
                    try await center.publish(NotificationDraft(type: "message", title: "never"), to: [owner.userId], tenantId: owner.tenantId, on: db)
                    throw Boom()
                }
            }
            #expect(try await center.store.after(seq: 0, tenantId: owner.tenantId, userId: owner.userId, limit: 10).isEmpty)
            #expect(try await center.store.currentSeq(tenantId: owner.tenantId, userId: owner.userId) == 0)
            let stored = try await components.database.transaction { db in
                try await center.publish(NotificationDraft(type: "message", title: "kept"), to: [owner.userId], tenantId: owner.tenantId, on: db)
            }
            #expect(stored.map(\.seq) == [1])
            for n in 2...5 {
                let more = try await center.publish(NotificationDraft(type: "message", title: "n\(n)"), to: [owner.userId], tenantId: owner.tenantId)
                #expect(more.first?.seq == Int64(n))
            }
            // A dedupe key stores once; the sequence does not move for the duplicate.
            let draft = NotificationDraft(type: "job_status", title: "once", dedupeKey: "job:x:1")
            #expect(try await center.publish(draft, to: [owner.userId], tenantId: owner.tenantId).count == 1)
            #expect(try await center.publish(draft, to: [owner.userId], tenantId: owner.tenantId).isEmpty)
            #expect(try await center.store.currentSeq(tenantId: owner.tenantId, userId: owner.userId) == 6)
            let all = try await center.store.after(seq: 0, tenantId: owner.tenantId, userId: owner.userId, limit: 100)
            #expect(all.map(\.seq) == [1, 2, 3, 4, 5, 6])
        }
    }

    @Test(arguments: TestEngine.available)
    func concurrentPublishersGetDistinctContiguousSeqs(engine: TestEngine) async throws {
        try await withOwner(engine, "seq@example.com") { client, components, owner in
            let center = components.notifications
            try await withThrowingTaskGroup(of: Void.self) { group in
                for n in 0..<40 {
                    group.addTask {
                        try await center.publish(NotificationDraft(type: "message", title: "c\(n)"), to: [owner.userId], tenantId: owner.tenantId)
                    }
                }
                try await group.waitForAll()
            }
            let all = try await center.store.after(seq: 0, tenantId: owner.tenantId, userId: owner.userId, limit: 100)
            #expect(all.map(\.seq) == Array(1...40).map(Int64.init))
        }
    }

    @Test(arguments: TestEngine.available)
    func restInboxIsScopedToTheCallerAndSupportsReadState(engine: TestEngine) async throws {
        try await withTenant(engine, "inbox") { client, owner, member, stranger in

            // Members cannot publish; admins can, to users of their own tenant only.
            let forbidden = try await client.json(
                .post, "/notifications", ["userIds": [owner.userId], "type": "message", "title": "hi"], token: member.token)
            #expect(forbidden.status == .forbidden)
            let foreign = try await client.json(
                .post, "/notifications", ["userIds": [stranger.userId], "type": "message", "title": "hi"], token: owner.token)
            #expect(foreign.status == .badRequest)
            let badType = try await client.json(
                .post, "/notifications", ["userIds": [member.userId], "type": "Bad!", "title": "x"], token: owner.token)
            #expect(badType.status == .badRequest && badType.code == "invalid_input")

            var ids: [String] = []
            for n in 1...3 {
                let published = try await client.json(
                    .post, "/notifications",
                    ["userIds": [member.userId], "type": n == 3 ? "friend_request" : "message", "title": "hello \(n)", "data": ["n": n]],
                    token: owner.token)
                #expect(published.status == .accepted)
                ids += published.object["ids"] as? [String] ?? []
            }
            #expect(ids.count == 3)

            let list = try await client.json(.get, "/notifications?limit=2", token: member.token)
            #expect(items(list).compactMap { $0["seq"] as? Int } == [3, 2])
            let next = try #require(list.object["nextCursor"] as? String)
            let page2 = try await client.json(.get, "/notifications?limit=2&cursor=\(next)", token: member.token)
            #expect(items(page2).compactMap { $0["seq"] as? Int } == [1])
            #expect(items(try await client.json(.get, "/notifications?type=friend_request", token: member.token)).count == 1)
            #expect(try await client.json(.get, "/notifications/unread-count", token: member.token).object["unread"] as? Int == 3)

            // Another user (same tenant or not) sees nothing and gets 404s.
            #expect(items(try await client.json(.get, "/notifications", token: owner.token)).isEmpty)
            #expect(try await client.json(.post, "/notifications/\(ids[0])/read", token: owner.token).status == .notFound)
            #expect(try await client.json(.delete, "/notifications/\(ids[0])", token: stranger.token).status == .notFound)
            #expect(try await client.json(.get, "/notifications/\(ids[0])", token: stranger.token).status == .notFound)

            let read = try await client.json(.post, "/notifications/\(ids[0])/read", token: member.token)
            #expect(read.status == .ok && read.object["readAt"] is String)
            #expect(items(try await client.json(.get, "/notifications?unread=true", token: member.token)).count == 2)
            let readAll = try await client.json(.post, "/notifications/read-all", ["upToSeq": 2], token: member.token)
            #expect(readAll.object["updated"] as? Int == 1)
            #expect(try await client.json(.get, "/notifications/unread-count", token: member.token).object["unread"] as? Int == 1)
            #expect(try await client.json(.post, "/notifications/read-all", token: member.token).object["updated"] as? Int == 1)
            #expect(try await client.json(.delete, "/notifications/\(ids[1])", token: member.token).status == .noContent)
            #expect(try await client.json(.get, "/notifications/\(ids[1])", token: member.token).status == .notFound)
        }
    }

    @Test(arguments: TestEngine.available)
    func broadcastReachesEveryUserOfTheTenantAndIdempotencyKeyReplays(engine: TestEngine) async throws {
        try await withOwner(engine, "bc@example.com", runServices: true) { client, components, owner in
            var members: [Member] = []
            for n in 0..<4 { members.append(try await addMember(client, owner: owner, email: "m\(n)@example.com")) }
            let stranger = try await signUp(client, "outside@example.com")
            let headers: HTTPFields = [
                HTTPField.Name("Idempotency-Key")!: "broadcast-1", .authorization: "Bearer \(owner.token)", .contentType: "application/json",
            ]
            let body = ByteBuffer(string: #"{"audience":"tenant","type":"announcement","title":"maintenance"}"#)
            let first = try await client.execute(uri: "/notifications", method: .post, headers: headers, body: body)
            #expect(first.status == .accepted)
            #expect(first.object["broadcastId"] is String)
            let again = try await client.execute(uri: "/notifications", method: .post, headers: headers, body: body)
            #expect(again.status == .accepted)
            #expect(again.object["broadcastId"] as? String == first.object["broadcastId"] as? String)
            // The broadcast is a job: its rows are committed once it succeeded.
            let jobId = try #require((first.object["job"] as? [String: Any])?["id"] as? String)
            try await components.jobs.waitForJob(jobId, state: .succeeded)
            for member in members + [owner] {
                // The owner also gets the job's job_status notifications: count the broadcast's type.
                let inbox = try await client.json(.get, "/notifications?type=announcement", token: member.token).decode(
                    PageBody<NotificationBody>.self)
                #expect(inbox.items.map(\.title) == ["maintenance"])
            }
            #expect(try await client.json(.get, "/notifications/unread-count", token: stranger.token).object["unread"] as? Int == 0)
            _ = components
        }
    }

    /// `job_status` and `system_alert` are the server's: neither an admin nor a service token
    /// may publish them (to users or to the tenant), so nothing can pass for the server or
    /// send an alert users cannot mute. Other types still publish.
    @Test(arguments: TestEngine.available)
    func publishersCannotUseTheServersTypes(engine: TestEngine) async throws {
        try await withOwner(engine, "reserved@example.com") { client, components, owner in
            let member = try await addMember(client, owner: owner, email: "reserved-m@example.com")
            let admin = try await addMember(client, owner: owner, email: "reserved-a@example.com", role: "admin")
            let created = try await client.json(
                .post, "/service-tokens", ["name": "impostor", "scopes": ["notifications:publish"]], token: owner.token)
            let serviceToken = try #require(created.object["token"] as? String)
            for token in [owner.token, admin.token, serviceToken] {
                for type in ["job_status", "system_alert"] {
                    for target in [["userIds": [member.userId]], ["audience": "tenant"]] as [[String: Any]] {
                        let refused = try await client.json(
                            .post, "/notifications", target.merging(["type": type, "title": "Job done"]) { $1 }, token: token)
                        #expect(refused.status == .badRequest, "\(type) to \(target) was accepted")
                        #expect(refused.code == "invalid_input")
                        #expect((refused.object["errors"] as? [[String: Any]])?.first?["field"] as? String == "type")
                    }
                }
            }
            #expect(try await components.notifications.store.currentSeq(tenantId: owner.tenantId, userId: member.userId) == 0)
            let allowed = try await client.json(
                .post, "/notifications", ["userIds": [member.userId], "type": "announcement", "title": "hello"], token: serviceToken)
            #expect(allowed.status == .accepted)
        }
    }

    /// The default retention (90 days) passes on the node's clock, not in real time.
    @Test(arguments: TestEngine.available)
    func readNotificationsArePrunedAfterTheRetention(engine: TestEngine) async throws {
        let clock = TestClock()
        try await withTestApp(engine, clock: clock, configure: { $0.notifications.pruneInterval = .milliseconds(200) }, runServices: true) {
            app in
            let owner = try await signUp(app.client, "prune@example.com")
            let center = app.components.notifications
            let stored = try await center.publish(NotificationDraft(type: "message", title: "old"), to: [owner.userId], tenantId: owner.tenantId)
            try await center.publish(NotificationDraft(type: "message", title: "unread"), to: [owner.userId], tenantId: owner.tenantId)
            #expect(try await app.client.json(.post, "/notifications/\(stored[0].id)/read", token: owner.token).status == .ok)
            clock.advance(by: .seconds(90 * 86_400 + 1))
            // The retention pass runs every 200 ms here and announces nothing: polled.
            try await pollUntil("the read notification pruned") {
                try await center.store.after(seq: 0, tenantId: owner.tenantId, userId: owner.userId, limit: 10).map(\.seq) == [2]
            }
        }
    }
}
