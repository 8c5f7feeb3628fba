import AsyncHTTPClient
import CairnNotifications
import CairnServer
import CairnTestSupport
import Foundation
import HTTPTypes
import HummingbirdTesting
import NIOCore
import NIOHTTP1
import Testing

/// Live connections check their token once an hour here: only the announcement of the logout
/// (issue 13) can end them within the tests' deadlines.
private func slowTokenChecks(_ configuration: inout CairnConfiguration) {
    fastNotifications(&configuration)
    configuration.notifications.authCheckInterval = .seconds(3600)
}

/// Opens one SSE stream and one WebSocket per session token, and waits until the node's hub
/// holds all of them (so the logout happens while they are live, not before they start).
private struct LiveConnections {
    var streams: [SSEReader] = []
    var sockets: [Task<UInt16?, any Error>] = []

    static func open(port: Int, hub: NotificationHub, tokens: [String]) async throws -> LiveConnections {
        var live = LiveConnections()
        for token in tokens {
            live.streams.append(try await SSEReader(port: port, token: token, query: "?since=0"))
            live.sockets.append(Task { try await socketCloseCode(port: port, token: token) })
        }
        try await hub.waitForConnections("\(tokens.count * 2) live connections", where: { $0 == tokens.count * 2 })
        return live
    }

    func stop() {
        for stream in streams { stream.stop() }
        for socket in sockets { socket.cancel() }
    }
}

@Suite("Notifications: logout ends live connections")
struct LogoutTests {
    /// `POST /auth/logout` ends that session's SSE stream and closes its WebSocket (4401, with
    /// a reason) at once, long before their next periodic token check; the user's other session
    /// keeps its connections until `POST /auth/logout-all` ends them too.
    @Test(arguments: TestEngine.available)
    func logoutEndsThatSessionsStreamsAndLogoutAllEndsTheRest(engine: TestEngine) async throws {
        try await withTestApp(engine, mode: .live, configure: slowTokenChecks) { app in
            let (client, port) = (app.client, app.port!)
            let first = try await client.registerAndLogin(email: "logout-live@example.com").tokens
            let second = try await client.login(email: "logout-live@example.com", password: "correct horse battery")
            let live = try await LiveConnections.open(
                port: port, hub: app.components.notifications.hub, tokens: [first.accessToken, second.accessToken])
            defer { live.stop() }

            let logout = try await client.json(.post, "/auth/logout", ["refreshToken": first.refreshToken])
            #expect(logout.status == .noContent)
            try await live.streams[0].wait("the logged-out session's stream ending", timeout: .seconds(10)) { $0.ended }
            let closed = try await withDeadline(.seconds(10), "the logged-out session's socket closing") { try await live.sockets[0].value }
            #expect(closed == 4401)
            #expect(!live.streams[1].ended, "the other session's stream stays open")
            try await app.components.notifications.hub.waitForConnections("the other session's two connections", where: { $0 == 2 })

            #expect(try await client.json(.post, "/auth/logout-all", token: second.accessToken).status == .noContent)
            try await live.streams[1].wait("the other session's stream ending", timeout: .seconds(10)) { $0.ended }
            let closedToo = try await withDeadline(.seconds(10), "the other session's socket closing") { try await live.sockets[1].value }
            #expect(closedToo == 4401)
        }
    }

    /// The connections live on node B, the logout is made on node A: B hears it through
    /// LISTEN/NOTIFY, drops its cached session state and ends them.
    @Test func aLogoutOnOneNodeEndsStreamsOnAnother() async throws {
        guard TestEngine.available.contains(.postgres) else { return }
        try await withTwoNodes(mode: .live, configure: slowTokenChecks) { nodeA, nodeB in
            let tokens = try await nodeA.client.registerAndLogin(email: "logout-nodes@example.com").tokens
            let live = try await LiveConnections.open(
                port: nodeB.port!, hub: nodeB.components.notifications.hub, tokens: [tokens.accessToken])
            defer { live.stop() }
            #expect(try await nodeA.client.json(.post, "/auth/logout-all", token: tokens.accessToken).status == .noContent)
            try await live.streams[0].wait("node B's stream ending", timeout: .seconds(10)) { $0.ended }
            let closed = try await withDeadline(.seconds(10), "node B's socket closing") { try await live.sockets[0].value }
            #expect(closed == 4401)
        }
    }

    /// The fresh-user trial's burst: 50 publishers over loopback HTTP send to five users while
    /// an owner deletes one of them, whose two WebSockets are subscribed. Once the deletion has
    /// answered 204, the sockets close with 4401 at once, though their periodic token check is
    /// an hour away (only the deletion's own announcement can close them within the deadline),
    /// and no notification reaches them after that answer. Before, on SQLite, the re-check
    /// read the user from a reader connection that another statement kept on a snapshot from
    /// before the deletion, so the socket stayed open and kept receiving for up to 10 s.
    @Test(arguments: TestEngine.available)
    func aUserDeletedDuringAPublishBurstHasTheirSocketsClosedAtOnce(engine: TestEngine) async throws {
        try await withTestApp(engine, mode: .live, configure: slowTokenChecks) { app in
            let (client, port, hub) = (app.client, app.port!, app.components.notifications.hub)
            let (owner, members, _) = try await makeTenant(client, prefix: "burst", members: 5)
            let victim = members[0]
            // Notifications the sockets received: in all, and after the deletion's 204.
            let received = Observed((all: 0, afterDeletion: 0, deleted: false))
            let sockets = (0..<2).map { _ in
                Task {
                    try await socketCloseCode(port: port, token: victim.token) { _ in
                        received.update {
                            $0.all += 1
                            if $0.deleted { $0.afterDeletion += 1 }
                        }
                    }
                }
            }
            defer { for socket in sockets { socket.cancel() } }
            try await hub.waitForConnections("the victim's two sockets", where: { $0 == 2 })

            let publishers = 50
            var configuration = HTTPClient.Configuration()
            configuration.connectionPool = .init(idleTimeout: .seconds(30), concurrentHTTP1ConnectionsPerHostSoftLimit: publishers)
            let http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
            let stop = Observed(false)
            let everyone = members.map(\.userId)
            let others = Array(everyone.dropFirst())
            let burst = Task {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for publisher in 0..<publishers {
                        group.addTask {
                            // Bounded: each publisher stops when told, and after 2,000 publishes.
                            for index in 0..<2000 where !stop.value {
                                let userIds = received.value.deleted ? others : everyone
                                var request = HTTPClientRequest(url: "\(app.baseURL)/notifications")
                                request.method = .POST
                                request.headers.add(name: "Authorization", value: "Bearer \(owner.token)")
                                request.headers.add(name: "Content-Type", value: "application/json")
                                let body: [String: Any] = ["type": "message", "title": "p\(publisher)-\(index)", "userIds": userIds]
                                request.body = .bytes(ByteBuffer(bytes: try JSONSerialization.data(withJSONObject: body)))
                                let response = try await http.execute(request, timeout: .seconds(30))
                                _ = try await response.body.collect(upTo: 1 << 16)
                            }
                        }
                    }
                    try await group.waitForAll()
                }
            }
            do {
                // The deletion comes while notifications stream to both sockets.
                try await received.wait("notifications reaching the victim's sockets") { $0.all >= 40 }
                let deletion = try await client.json(.delete, "/users/\(victim.userId)", token: owner.token)
                received.update { $0.deleted = true }
                #expect(deletion.status == .noContent)
                for (index, socket) in sockets.enumerated() {
                    let code = try await withDeadline(.seconds(5), "the victim's socket \(index) closing") { try await socket.value }
                    #expect(code == 4401)
                }
                #expect(received.value.afterDeletion == 0, "notifications received after the deletion's 204")
            } catch {
                stop.update { $0 = true }
                _ = await burst.result
                try await http.shutdown()
                throw error
            }
            stop.update { $0 = true }
            try await burst.value
            try await http.shutdown()
        }
    }
}
