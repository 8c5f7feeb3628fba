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
        try await withNode(engine) { client, components, port in
            let owner = try await signUp(client, "sse@example.com")
            let center = components.notifications
            let draft = { (n: Int) in NotificationDraft(type: "message", title: "n\(n)", data: .object(["n": .number(Double(n))])) }
            try await center.publish(draft(0), to: [owner.userId], tenantId: owner.tenantId)
            // Disconnected: 100 notifications arrive.
            for n in 1...100 { try await center.publish(draft(n), to: [owner.userId], tenantId: owner.tenantId) }
            let reader = try SSEReader(port: port, token: owner.token, lastEventId: 1)
            defer { reader.stop() }
            #expect(try await eventually { reader.events.count >= 100 })
            // Live ones, published while the stream runs, interleaved with the replay's end.
            for n in 101...150 { try await center.publish(draft(n), to: [owner.userId], tenantId: owner.tenantId) }
            #expect(try await eventually { reader.events.count >= 150 })
            let seqs = reader.events.map(\.seq)
            #expect(seqs == Array(2...151).map(Int64.init))
            #expect(reader.events.first?.data["title"] as? String == "n1")
            #expect(reader.text.hasPrefix("retry: 3000\n\n"))
            #expect(try await eventually { reader.text.contains(": heartbeat\n\n") })
        }
    }

    @Test(arguments: TestEngine.available)
    func theSeamHoldsWhilePublishersRaceTheConnect(engine: TestEngine) async throws {
        try await withNode(engine) { client, components, port in
            let owner = try await signUp(client, "seam@example.com")
            let center = components.notifications
            let publisher = Task {
                for n in 1...200 {
                    try await center.publish(NotificationDraft(type: "message", title: "r\(n)"), to: [owner.userId], tenantId: owner.tenantId)
                }
            }
            let reader = try SSEReader(port: port, token: owner.token, query: "?since=0")
            defer { reader.stop() }
            try await publisher.value
            #expect(try await eventually { reader.events.count >= 200 })
            #expect(reader.events.map(\.seq) == Array(1...200).map(Int64.init))
        }
    }

    @Test(arguments: TestEngine.available)
    func streamsAreIsolatedPerUserAndEndWhenSessionsAreRevoked(engine: TestEngine) async throws {
        try await withNode(engine) { client, components, port in
            let owner = try await signUp(client, "iso@example.com")
            let member = try await addMember(client, owner: owner, email: "iso-m@example.com")
            let stranger = try await signUp(client, "iso-s@example.com")
            let ownerStream = try SSEReader(port: port, token: owner.token, query: "?since=0")
            let strangerStream = try SSEReader(port: port, token: stranger.token, query: "?since=0")
            defer {
                ownerStream.stop()
                strangerStream.stop()
            }
            let published = try await client.json(
                .post, "/notifications", ["userIds": [member.userId], "type": "message", "title": "for member"], token: owner.token)
            #expect(published.status == .accepted)
            let memberStream = try SSEReader(port: port, token: member.token, query: "?since=0")
            defer { memberStream.stop() }
            #expect(try await eventually { memberStream.events.count == 1 })
            #expect(ownerStream.events.isEmpty && strangerStream.events.isEmpty)

            // Revocation (logout-all) ends the member's stream within seconds.
            #expect(try await client.json(.post, "/auth/logout-all", token: member.token).status == .noContent)
            #expect(try await eventually { memberStream.ended })
            #expect(!ownerStream.ended)
            _ = components
        }
    }

    @Test(arguments: TestEngine.available)
    func streamsEndWhenTheAccessTokenExpires(engine: TestEngine) async throws {
        try await withNode(
            engine,
            configure: {
                fastNotifications(&$0)
                // Long enough to open the stream before it expires on a loaded machine (an
                // expired token is refused with 401 at once).
                $0.accounts.accessTokenTTL = 5
            }
        ) { client, _, port in
            let owner = try await signUp(client, "expiry@example.com")
            let reader = try SSEReader(port: port, token: owner.token, query: "?since=0")
            defer { reader.stop() }
            #expect(try await eventually { reader.text.hasPrefix("retry:") })
            #expect(try await eventually { reader.ended })
            let closed = try await socketCloseCode(port: port, token: owner.token)
            #expect(closed == 4401)
        }
    }

    /// A stream reader that stops reading: the body's writes wait on the full send buffers;
    /// after the write timeout the connection is closed and the hub forgets it (memory held
    /// until then: the mailbox, capped, and the send buffers).
    @Test(arguments: TestEngine.available)
    func aReaderThatStopsReadingIsCut(engine: TestEngine) async throws {
        try await withNode(
            engine,
            configure: {
                fastNotifications(&$0)
                $0.notifications.writeTimeout = .milliseconds(500)
            }
        ) { client, components, port in
            let owner = try await signUp(client, "sse-stall@example.com")
            let center = components.notifications
            let raw = try RawClient(port: port)
            await raw.send(
                Array(
                    ("GET /notifications/stream HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nAuthorization: Bearer \(owner.token)\r\n\r\n").utf8))
            let opened = await raw.read { $0.containsText("retry: 3000") }
            try #require(opened.bytes.containsText("200 OK") && !opened.ended)
            #expect(try await eventually { center.hub.connectionCount == 1 })
            let pad = JSONValue.object(["pad": .string(String(repeating: "x", count: 12 * 1024))])
            for n in 1...600 {
                try await center.publish(
                    NotificationDraft(type: "message", title: "big \(n)", data: pad), to: [owner.userId], tenantId: owner.tenantId)
            }
            #expect(try await eventually(timeout: .seconds(20)) { center.hub.connectionCount == 0 })
            #expect(await raw.read().ended)
            // Other streams are still served.
            let reader = try SSEReader(port: port, token: owner.token, query: "?since=600")
            defer { reader.stop() }
            try await center.publish(NotificationDraft(type: "message", title: "after"), to: [owner.userId], tenantId: owner.tenantId)
            #expect(try await eventually { reader.events.map(\.seq) == [601] })
        }
    }

    @Test(arguments: TestEngine.available)
    func badCursorsAndMissingTokensAreProblems(engine: TestEngine) async throws {
        try await withNode(engine) { client, _, _ in
            let owner = try await signUp(client, "bad@example.com")
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
        let captured = CapturingLogHandler.Lines()
        var logger = Logger(label: "cairn-capture", factory: { _ in CapturingLogHandler(captured: captured) })
        logger.logLevel = .trace
        var database = try await TestDatabase.make(engine)
        fastNotifications(&database.configuration)
        try await withNode(configuration: database.configuration, logger: logger) { client, components, port in
            let owner = try await signUp(client, "query-token@example.com")
            try await components.notifications.publish(
                NotificationDraft(type: "message", title: "hello"), to: [owner.userId], tenantId: owner.tenantId)
            let reader = try SSEReader(port: port, token: owner.token, query: "?since=0", tokenInQuery: true)
            defer { reader.stop() }
            #expect(try await eventually { reader.events.map(\.seq) == [1] })

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
        try await withNode(
            .sqlite,
            configure: {
                fastNotifications(&$0)
                $0.accounts.accessTokenTTL = 1
            }
        ) { client, _, _ in
            let owner = try await signUp(client, "expired-stream@example.com")
            try await Task.sleep(for: .milliseconds(2100))
            let expired = try await client.execute(
                uri: "/notifications/stream", method: .get, headers: [.authorization: "Bearer \(owner.token)"])
            #expect(expired.status == .unauthorized)
            #expect(expired.code == "token_expired")
        }
    }

    @Test func twoNodesOnOnePostgreSQLDeliverAcrossNodes() async throws {
        guard TestEngine.available.contains(.postgres) else { return }
        var database = try await TestDatabase.make(.postgres)
        fastNotifications(&database.configuration)
        let configuration = database.configuration
        try await withNode(configuration: configuration) { clientA, componentsA, _ in
            try await withNode(configuration: configuration) { clientB, _, portB in
                let owner = try await signUp(clientA, "nodes@example.com")
                let member = try await addMember(clientA, owner: owner, email: "nodes-m@example.com")
                let reader = try SSEReader(port: portB, token: member.token, query: "?since=0")
                defer { reader.stop() }
                // Wait until node B's stream is connected (its first bytes arrived).
                #expect(try await eventually { reader.text.hasPrefix("retry:") })
                let published = try await clientA.json(
                    .post, "/notifications", ["userIds": [member.userId], "type": "message", "title": "across"], token: owner.token)
                #expect(published.status == .accepted)
                #expect(try await eventually(timeout: .seconds(5)) { reader.events.count == 1 })
                // And through node A's Swift API.
                try await componentsA.notifications.publish(
                    NotificationDraft(type: "message", title: "api"), to: [member.userId], tenantId: member.tenantId)
                #expect(try await eventually(timeout: .seconds(5)) { reader.events.map(\.seq) == [1, 2] })
                _ = clientB
            }
        }
    }

    @Test(arguments: TestEngine.available)
    func jobChangesReachTheCreatorAsJobStatusNotifications(engine: TestEngine) async throws {
        try await withNode(engine) { client, components, port in
            let owner = try await signUp(client, "jobs@example.com")
            let reader = try SSEReader(port: port, token: owner.token, query: "?since=0")
            defer { reader.stop() }
            #expect(try await eventually { reader.text.hasPrefix("retry:") })
            let created = try await client.json(
                .post, "/jobs", ["kind": "noop", "args": ["sleepMs": 1500, "checkpointEvery": 100]], token: owner.token)
            #expect(created.status == .created)
            let jobId = try #require(created.object["id"] as? String)
            // The job's own end first (a loaded machine can stretch its 15 checkpoints a lot),
            // then its notification on the stream.
            #expect(
                try await eventually(timeout: .seconds(90)) {
                    try await client.json(.get, "/jobs/\(jobId)", token: owner.token).object["state"] as? String == "succeeded"
                })
            #expect(
                try await eventually(timeout: .seconds(30)) {
                    reader.events.contains { (($0.data["data"] as? [String: Any])?["state"] as? String) == "succeeded" }
                })
            let statuses = reader.events.filter { $0.data["type"] as? String == "job_status" }
            #expect(statuses.allSatisfy { ($0.data["data"] as? [String: Any])?["jobId"] as? String == jobId })
            // The run is reported before the outcome even when the bridge reads the job only after
            // it finished (a loaded machine): see JobStatusBridgeTests.
            let states = statuses.compactMap { ($0.data["data"] as? [String: Any])?["state"] as? String }
            #expect(states.first == "running" && states.last == "succeeded", "\(states)")
            // Progress is throttled (one per 2 s per job): 15 checkpoints make far fewer
            // notifications (unthrottled: 17 with the claim and the outcome).
            #expect(statuses.count < 12, "\(statuses.count)")
            _ = components
        }
    }
}
