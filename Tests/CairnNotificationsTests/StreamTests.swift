import CairnAccounts
import CairnHTTP
import CairnJobs
import CairnNotifications
import CairnServer
import CairnStorage
import CairnTestSupport
import Foundation
import HTTPTypes
import HummingbirdTesting
import Logging
import Testing

@Suite("Notifications: Server-Sent Events")
struct StreamTests {
    @Test(arguments: TestEngine.available)
    func catchUpAfterLastEventIDThenLiveWithNoGapOrDuplicate(engine: TestEngine) async throws {
        try await withLiveOwner(engine, "sse@example.com") { app, owner in
            let center = app.components.notifications
            let draft = { (n: Int) in NotificationDraft(type: "message", title: "n\(n)", data: .object(["n": .number(Double(n))])) }
            try await center.publish(draft(0), to: [owner.userId], tenantId: owner.tenantId)
            // Disconnected: 100 notifications arrive.
            for n in 1...100 { try await center.publish(draft(n), to: [owner.userId], tenantId: owner.tenantId) }
            let reader = try await SSEReader(port: app.port!, token: owner.token, lastEventId: 1)
            defer { reader.stop() }
            try await reader.wait("the 100 missed notifications") { $0.notifications.count >= 100 }
            // Live ones, published while the stream runs, interleaved with the replay's end.
            for n in 101...150 { try await center.publish(draft(n), to: [owner.userId], tenantId: owner.tenantId) }
            let received = try await reader.wait("the 50 live notifications") { $0.notifications.count >= 150 }
            #expect(received.seqs == Array(2...151).map(Int64.init))
            #expect(received.notifications.first?.data["title"] as? String == "n1")
            #expect(received.text.hasPrefix("retry: 3000\n\n"))
            // Heartbeats every 500 ms here.
            try await reader.wait("a heartbeat") { $0.text.contains(": heartbeat\n\n") }
        }
    }

    /// A `Last-Event-ID` past the newest seq starts the stream at the newest: the next
    /// notification arrives. Before, the stream took the cursor as sent and stayed silent
    /// (found by a fresh-user trial).
    @Test(arguments: TestEngine.available)
    func aCursorPastTheNewestSeqStartsAtTheNewest(engine: TestEngine) async throws {
        try await withLiveOwner(engine, "sse-ahead@example.com") { app, owner in
            let center = app.components.notifications
            try await publishMessages(2, titled: "before", to: owner, on: center)
            let reader = try await SSEReader(port: app.port!, token: owner.token, lastEventId: 100_000)
            defer { reader.stop() }
            try await reader.waitUntilOpen()
            try await center.publish(NotificationDraft(type: "message", title: "after"), to: [owner.userId], tenantId: owner.tenantId)
            let received = try await reader.wait("the notification published after the connect") { !$0.notifications.isEmpty }
            #expect(received.seqs == [3])
            #expect(received.notifications.first?.data["title"] as? String == "after")
        }
    }

    @Test(arguments: TestEngine.available)
    func theSeamHoldsWhilePublishersRaceTheConnect(engine: TestEngine) async throws {
        try await withLiveOwner(engine, "seam@example.com") { app, owner in
            let center = app.components.notifications
            let publisher = Task { try await publishMessages(200, titled: "r", to: owner, on: center) }
            let reader = try await SSEReader(port: app.port!, token: owner.token, query: "?since=0")
            defer { reader.stop() }
            try await publisher.value
            let received = try await reader.wait("all 200 notifications") { $0.notifications.count >= 200 }
            #expect(received.seqs == Array(1...200).map(Int64.init))
        }
    }

    @Test(arguments: TestEngine.available)
    func streamsAreIsolatedPerUserAndEndWhenSessionsAreRevoked(engine: TestEngine) async throws {
        try await withLiveOwner(engine, "iso@example.com") { app, owner in
            let (client, port) = (app.client, app.port!)
            let member = try await addMember(client, owner: owner, email: "iso-m@example.com")
            let stranger = try await signUp(client, "iso-s@example.com")
            let ownerStream = try await SSEReader(port: port, token: owner.token, query: "?since=0")
            let strangerStream = try await SSEReader(port: port, token: stranger.token, query: "?since=0")
            defer {
                ownerStream.stop()
                strangerStream.stop()
            }
            let published = try await client.json(
                .post, "/notifications", ["userIds": [member.userId], "type": "message", "title": "for member"], token: owner.token)
            #expect(published.status == .accepted)
            let memberStream = try await SSEReader(port: port, token: member.token, query: "?since=0")
            defer { memberStream.stop() }
            let received = try await memberStream.wait("the member's notification") { !$0.notifications.isEmpty }
            #expect(received.notifications.count == 1)
            // The others' streams opened before the publish: had it reached them, it would be there by now.
            try await ownerStream.waitUntilOpen()
            try await strangerStream.waitUntilOpen()
            #expect(ownerStream.events.isEmpty && strangerStream.events.isEmpty)

            // Revocation (logout-all) ends the member's stream at its next token check.
            #expect(try await client.json(.post, "/auth/logout-all", token: member.token).status == .noContent)
            try await memberStream.wait("the member's stream ending") { $0.ended }
            #expect(!ownerStream.ended)
        }
    }

    /// The token's lifetime passes on the node's clock while the stream is open: the stream
    /// ends at its next check, and a socket with the same token is closed with 4401.
    @Test(arguments: TestEngine.available)
    func streamsEndWhenTheAccessTokenExpires(engine: TestEngine) async throws {
        let clock = TestClock()
        try await withTestApp(engine, mode: .live, clock: clock, configure: fastNotifications) { app in
            let owner = try await signUp(app.client, "expiry@example.com")
            let reader = try await SSEReader(port: app.port!, token: owner.token, query: "?since=0")
            defer { reader.stop() }
            try await reader.waitUntilOpen()
            #expect(!reader.ended)
            // Past the 15-minute lifetime and the 60 s of clock skew token checks allow.
            clock.advance(by: .seconds(900 + 61))
            try await reader.wait("the stream ending") { $0.ended }
            let closed = try await socketCloseCode(port: app.port!, token: owner.token)
            #expect(closed == 4401)
        }
    }

    /// A stream reader that stops reading: the body's writes wait on the full send buffers;
    /// after the write timeout the connection is closed and the hub forgets it (memory held
    /// until then: the mailbox, capped, and the send buffers).
    @Test(arguments: TestEngine.available)
    func aReaderThatStopsReadingIsCut(engine: TestEngine) async throws {
        try await withLiveOwner(engine, "sse-stall@example.com", configure: stallingNotifications) { app, owner in
            let port = app.port!
            let center = app.components.notifications
            let raw = try RawClient(port: port)
            await raw.send(
                Array(
                    ("GET /notifications/stream HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nAuthorization: Bearer \(owner.token)\r\n\r\n").utf8))
            let opened = await raw.read { $0.containsText("retry: 3000") }
            try #require(opened.bytes.containsText("200 OK") && !opened.ended)
            try await center.hub.waitForConnections("the stream registered") { $0 == 1 }
            try await overflowStalledClient(center, owner: owner, client: "stream")
            #expect(await raw.read().ended)
            // Other streams are still served.
            let reader = try await SSEReader(port: port, token: owner.token, query: "?since=600")
            defer { reader.stop() }
            try await reader.waitUntilOpen()
            try await center.publish(NotificationDraft(type: "message", title: "after"), to: [owner.userId], tenantId: owner.tenantId)
            let received = try await reader.wait("the notification after the stall") { !$0.notifications.isEmpty }
            #expect(received.seqs == [601])
        }
    }

    @Test(arguments: TestEngine.available)
    func badCursorsAndMissingTokensAreProblems(engine: TestEngine) async throws {
        try await withLiveOwner(engine, "bad@example.com") { app, owner in
            let client = app.client
            let bad = try await client.execute(
                uri: "/notifications/stream?since=-4", method: .get, headers: [.authorization: "Bearer \(owner.token)"])
            #expect(bad.status == .badRequest && bad.code == "invalid_input")
            let anonymous = try await client.execute(uri: "/notifications/stream", method: .get)
            #expect(anonymous.status == .unauthorized)
        }
    }

    /// RFC 6750 §2.3 for browsers' EventSource: the stream (and only the stream) takes
    /// `?access_token=`; the token never reaches a log line, whatever the level.
    @Test(arguments: TestEngine.available)
    func theStreamTakesTheTokenInTheQueryAndNoLogLineHoldsIt(engine: TestEngine) async throws {
        let captured = CapturedLog()
        try await withTestApp(engine, mode: .live, configure: fastNotifications, logger: captured.logger()) { app in
            let client = app.client
            let owner = try await signUp(client, "query-token@example.com")
            try await app.components.notifications.publish(
                NotificationDraft(type: "message", title: "hello"), to: [owner.userId], tenantId: owner.tenantId)
            let reader = try await SSEReader(port: app.port!, token: owner.token, query: "?since=0", tokenInQuery: true)
            defer { reader.stop() }
            #expect(try await reader.wait("the stored notification") { !$0.notifications.isEmpty }.seqs == [1])

            let forged = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJub2JvZHkifQ.bm90LWEtc2lnbmF0dXJl"
            let wrong = try await client.execute(uri: "/notifications/stream?access_token=\(forged)", method: .get)
            #expect(wrong.status == .unauthorized && wrong.code == "invalid_token")
            #expect(wrong.headers[.contentType] == "application/problem+json")
            #expect(wrong.headers[.wwwAuthenticate]?.hasPrefix("Bearer") == true)
            // Other routes ignore the parameter: no token there means 401.
            let elsewhere = try await client.execute(uri: "/notifications?access_token=\(owner.token)", method: .get)
            #expect(elsewhere.status == .unauthorized && elsewhere.code == "unauthorized")
            // RFC 6750 §2: one method per request.
            let both = try await client.execute(
                uri: "/notifications/stream?access_token=\(owner.token)", method: .get, headers: [.authorization: "Bearer \(owner.token)"])
            #expect(both.status == .badRequest && both.code == "invalid_input")

            // A parameter name in another case is refused, and its value is still a credential.
            let shouting = try await client.execute(uri: "/notifications/stream?ACCESS_TOKEN=\(owner.token)", method: .get)
            #expect(shouting.status == .unauthorized)

            let log = captured.text
            #expect(log.contains("/notifications/stream?since=0&access_token=***"), "the request log line is there, redacted")
            #expect(log.contains("ACCESS_TOKEN=***"))
            #expect(!log.contains(owner.token), "an access token reached the log")
            #expect(!log.contains(forged), "a rejected token reached the log")
        }
    }

    /// Token checks allow some clock skew; a stream opened with a token already past its
    /// expiry answers 401 `token_expired` rather than an empty stream an EventSource retries.
    @Test func aStreamWithAnExpiredTokenIsRefused() async throws {
        let clock = TestClock()
        try await withTestApp(.sqlite, mode: .live, clock: clock, configure: fastNotifications) { app in
            let client = app.client
            let owner = try await signUp(client, "expired-stream@example.com")
            // 2 s past the 15-minute lifetime: expired, but within the skew other checks allow.
            clock.advance(by: .seconds(900 + 2))
            let expired = try await client.execute(
                uri: "/notifications/stream", method: .get, headers: [.authorization: "Bearer \(owner.token)"])
            #expect(expired.status == .unauthorized)
            #expect(expired.code == "token_expired")
        }
    }

    @Test func twoNodesOnOnePostgreSQLDeliverAcrossNodes() async throws {
        guard TestEngine.available.contains(.postgres) else { return }
        try await withTwoNodes(mode: .live, configure: fastNotifications) { nodeA, nodeB in
            let owner = try await signUp(nodeA.client, "nodes@example.com")
            let member = try await addMember(nodeA.client, owner: owner, email: "nodes-m@example.com")
            let reader = try await SSEReader(port: nodeB.port!, token: member.token, query: "?since=0")
            defer { reader.stop() }
            // Node B's stream is connected once its first bytes arrived.
            try await reader.waitUntilOpen()
            let published = try await nodeA.client.json(
                .post, "/notifications", ["userIds": [member.userId], "type": "message", "title": "across"], token: owner.token)
            #expect(published.status == .accepted)
            try await reader.wait("the notification published over HTTP on node A") { $0.seqs == [1] }
            // And through node A's Swift API.
            try await nodeA.components.notifications.publish(
                NotificationDraft(type: "message", title: "api"), to: [member.userId], tenantId: member.tenantId)
            try await reader.wait("the notification published through node A's API") { $0.seqs == [1, 2] }
        }
    }

    @Test(arguments: TestEngine.available)
    /// Progress notifications are throttled to one per 2 s of the node's clock, which stands
    /// still here: however long the 3 checkpoints take, only the run and the outcome are
    /// reported (unthrottled: 5 notifications).
    func jobChangesReachTheCreatorAsJobStatusNotifications(engine: TestEngine) async throws {
        try await withTestApp(engine, mode: .live, clock: TestClock(), configure: fastNotifications) { app in
            let client = app.client
            let owner = try await signUp(client, "jobs@example.com")
            let reader = try await SSEReader(port: app.port!, token: owner.token, query: "?since=0")
            defer { reader.stop() }
            try await reader.waitUntilOpen()
            let created = try await client.json(
                .post, "/jobs", ["kind": "noop", "args": ["sleepMs": 300, "checkpointEvery": 100]], token: owner.token)
            #expect(created.status == .created)
            let jobId = try #require(created.object["id"] as? String)
            try await app.components.jobs.waitForJob(jobId, state: .succeeded)
            let received = try await reader.wait("the job's outcome on the stream") { received in
                received.notifications.contains { (($0.data["data"] as? [String: Any])?["state"] as? String) == "succeeded" }
            }
            let statuses = received.notifications.filter { $0.data["type"] as? String == "job_status" }
            #expect(statuses.allSatisfy { ($0.data["data"] as? [String: Any])?["jobId"] as? String == jobId })
            // The run is reported before the outcome even when the bridge reads the job only after
            // it finished (a loaded machine): see JobStatusBridgeTests.
            let states = statuses.compactMap { ($0.data["data"] as? [String: Any])?["state"] as? String }
            #expect(states == ["running", "succeeded"])
        }
    }
}
