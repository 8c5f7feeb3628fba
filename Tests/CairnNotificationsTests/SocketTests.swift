import CairnHTTP
import CairnNotifications
import CairnServer
import CairnStorage
import CairnTestSupport
import Foundation
import HTTPTypes
import HummingbirdTesting
import HummingbirdWSClient
import Logging
import NIOWebSocket
import Synchronization
import Testing

/// A parsed server frame.
private func frame(_ text: String) -> [String: Any] {
    (try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]) ?? [:]
}

/// Runs a WebSocket client against `/ws`; `handle` gets each server frame and the writer, and
/// returns false to leave. Returns the close frame the server sent, if any.
private func socket(
    port: Int, headers: HTTPFields = [:], opening: [String] = [],
    _ handle: @escaping @Sendable ([String: Any], WebSocketOutboundWriter) async throws -> Bool = { _, _ in true }
) async throws -> WebSocketCloseFrame? {
    var configuration = WebSocketClientConfiguration()
    configuration.additionalHeaders = headers
    return try await WebSocketClient.connect(url: "ws://127.0.0.1:\(port)/ws", configuration: configuration, logger: testLogger) {
        inbound, outbound, _ in
        for message in opening { try await outbound.write(.text(message)) }
        for try await message in inbound.messages(maxSize: 1 << 20) {
            guard case .text(let text) = message else { continue }
            if try await !handle(frame(text), outbound) { return }
        }
    }
}

/// The close code the server sends a socket that authenticates with `token` and subscribes.
func socketCloseCode(port: Int, token: String) async throws -> UInt16? {
    closeCode(of: try await socket(port: port, opening: [auth(token), subscribe(nil)]))
}

/// ``socketCloseCode(port:token:)`` for a client that acknowledges every notification it
/// receives, after handing its seq to `received`.
func socketCloseCode(port: Int, token: String, received: @escaping @Sendable (Int64) -> Void) async throws -> UInt16? {
    closeCode(
        of: try await socket(port: port, opening: [auth(token), subscribe(nil)]) { message, outbound in
            guard message["type"] as? String == "notification", let seq = (message["seq"] as? NSNumber)?.int64Value else { return true }
            received(seq)
            try await outbound.write(.text(#"{"type":"ack","seq":\#(seq)}"#))
            return true
        })
}

/// The numeric code of a server's close frame (nil: none was sent).
private func closeCode(of close: WebSocketCloseFrame?) -> UInt16? {
    switch close?.closeCode {
    case .unknown(let code)?: return code
    case .policyViolation?: return 1008
    case .goingAway?: return 1001
    case .normalClosure?: return 1000
    default: return nil
    }
}

private func auth(_ token: String) -> String { #"{"type":"auth","token":"\#(token)"}"# }
private func subscribe(_ since: Int64?) -> String {
    since.map { #"{"type":"subscribe","since":\#($0)}"# } ?? #"{"type":"subscribe"}"#
}

@Suite("Notifications: WebSocket protocol")
struct SocketTests {
    @Test(arguments: TestEngine.available)
    func replayAcksAndResumeAfterADropMidStream(engine: TestEngine) async throws {
        try await withLiveOwner(engine, "ws@example.com") { app, owner in
            let (components, port) = (app.components, app.port!)
            try await publishMessages(100, titled: "w", to: owner, on: components.notifications)
            // First connection: reads 40, acknowledges 30, then drops.
            let firstSeqs = Mutex<[Int64]>([])
            _ = try await socket(port: port, opening: [auth(owner.token), subscribe(0)]) { message, outbound in
                guard message["type"] as? String == "notification", let seq = (message["seq"] as? NSNumber)?.int64Value else { return true }
                firstSeqs.withLock { $0.append(seq) }
                if seq == 30 { try await outbound.write(.text(#"{"type":"ack","seq":30}"#)) }
                return seq < 40
            }
            #expect(firstSeqs.withLock { $0 } == Array(1...40).map(Int64.init))
            // Reconnect after the last ack: 31…100 once each, in order, and live ones after.
            let secondSeqs = Mutex<[Int64]>([])
            let center = components.notifications
            let secondClose = try await socket(port: port, opening: [auth(owner.token), subscribe(30)]) { message, outbound in
                guard message["type"] as? String == "notification", let seq = (message["seq"] as? NSNumber)?.int64Value else { return true }
                secondSeqs.withLock { $0.append(seq) }
                try await outbound.write(.text(#"{"type":"ack","seq":\#(seq)}"#))
                if seq == 100 {
                    try await center.publish(NotificationDraft(type: "message", title: "live"), to: [owner.userId], tenantId: owner.tenantId)
                }
                return seq < 101
            }
            #expect(secondSeqs.withLock { $0 } == Array(31...101).map(Int64.init), "server close: \(String(describing: secondClose))")
        }
    }

    /// A `subscribe` with a `since` past the newest seq starts at the newest: the next
    /// notification arrives. Before, the socket took the cursor as sent and stayed silent
    /// (found by a fresh-user trial).
    @Test(arguments: TestEngine.available)
    func aSinceAheadOfTheNewestSeqStartsAtTheNewest(engine: TestEngine) async throws {
        try await withLiveOwner(engine, "ws-ahead@example.com") { app, owner in
            let center = app.components.notifications
            try await publishMessages(2, titled: "before", to: owner, on: center)
            let seqs = Mutex<[Int64]>([])
            // A ping after the subscribe: its pong means the subscribe was taken.
            _ = try await socket(port: app.port!, opening: [auth(owner.token), subscribe(100_000), #"{"type":"ping"}"#]) { message, _ in
                switch message["type"] as? String {
                case "pong":
                    try await center.publish(NotificationDraft(type: "message", title: "after"), to: [owner.userId], tenantId: owner.tenantId)
                    return true
                case "notification":
                    seqs.withLock { $0.append((message["seq"] as? NSNumber)?.int64Value ?? -1) }
                    return false
                default:
                    return true
                }
            }
            #expect(seqs.withLock { $0 } == [3])
        }
    }

    @Test(arguments: TestEngine.available)
    func unacknowledgedNotificationsAreSentAgain(engine: TestEngine) async throws {
        try await withLiveOwner(engine, "resend@example.com") { app, owner in
            let (components, port) = (app.components, app.port!)
            try await components.notifications.publish(
                NotificationDraft(type: "message", title: "again"), to: [owner.userId], tenantId: owner.tenantId)
            let seen = Mutex(0)
            _ = try await socket(port: port, opening: [auth(owner.token), subscribe(0)]) { message, _ in
                guard message["type"] as? String == "notification" else { return true }
                #expect((message["seq"] as? NSNumber)?.int64Value == 1)
                return seen.withLock { count in
                    count += 1
                    return count < 2
                }
            }
            #expect(seen.withLock { $0 } == 2)
        }
    }

    @Test(arguments: TestEngine.available)
    func subprotocolAuthPingAndCloseCodes(engine: TestEngine) async throws {
        try await withLiveOwner(engine, "codes@example.com") { app, owner in
            let port = app.port!
            // Token in Sec-WebSocket-Protocol: ready without an auth message; ping → pong.
            let got = Mutex<[String]>([])
            _ = try await socket(
                port: port, headers: [.secWebSocketProtocol: "cairn.v1, bearer.\(owner.token)"], opening: [#"{"type":"ping"}"#]
            ) { message, _ in
                let type = message["type"] as? String ?? "?"
                got.withLock { $0.append(type) }
                return !(got.withLock { $0.contains("ready") && $0.contains("pong") })
            }
            #expect(Set(got.withLock { $0 }) == ["ready", "pong"])

            let badToken = try await socket(port: port, opening: [auth("not-a-token")])
            #expect(badToken?.closeCode == .unknown(4401))
            let silent = try await socket(port: port)
            #expect(silent?.closeCode == .unknown(4408))
            let garbage = try await socket(port: port, opening: [auth(owner.token), "{oops"])
            #expect(garbage?.closeCode == .policyViolation)
            let early = try await socket(port: port, opening: [subscribe(0)])
            #expect(early?.closeCode == .unknown(4401))
        }
    }

    /// Over a real socket, the protocol is strict and says why (found by a fresh-user trial):
    /// a ping before `auth` closes with 4401 like a subscribe (it was answered), a `since` of
    /// `1e-400` closes with 1008 (it replayed from 0), and so does an unknown member (it was
    /// ignored), with a reason naming it; a repeated member's reason names the member.
    @Test(arguments: TestEngine.available)
    func theProtocolRefusesWhatItDoesNotHaveNamingIt(engine: TestEngine) async throws {
        try await withLiveOwner(engine, "strict-socket@example.com") { app, owner in
            let port = app.port!
            // An ack before `auth` is unauthenticated first, like a ping (it was 1008 "subscribe first").
            // So is any other message, whatever its members (an ack with a null seq was 1008).
            for message in [
                #"{"type":"ping"}"#, #"{"type":"ack","seq":1}"#, #"{"type":"ack","seq":null}"#, #"{"type":"ack"}"#,
                #"{"type":"ack","seq":1,"x":2}"#, #"{"type":"subscribe","since":"1"}"#, #"{"type":"ping","id":1}"#, #"{"type":"nope"}"#,
                #"{"type":"ack","seq":1,"seq":2}"#, "{oops",
            ] {
                let early = try await socket(port: port, opening: [message])
                #expect(early?.closeCode == .unknown(4401), "\(message)")
                #expect(early?.reason == "authenticate first", "\(message)")
            }
            // A malformed `auth` is an attempt to authenticate: its reason says what was wrong.
            let noToken = try await socket(port: port, opening: [#"{"type":"auth"}"#])
            #expect(noToken?.closeCode == .policyViolation)
            #expect(noToken?.reason == "auth needs a token")
            let repeatedToken = try await socket(port: port, opening: [#"{"type":"auth","token":"a","token":"b"}"#])
            #expect(repeatedToken?.closeCode == .policyViolation)
            #expect(repeatedToken?.reason == #"member "token" is repeated"#)
            let cases = [
                // An explicit null `since` started at the present, as if none was sent.
                (#"{"type":"subscribe","since":null}"#, "since"),
                (#"{"type":"subscribe","since":1e-400}"#, "since"), (#"{"type":"subscribe","sinse":0}"#, #"unknown member "sinse""#),
                (#"{"type":"ping","id":1}"#, #"unknown member "id""#), (#"{"type":"subscribe","since":1,"since":2}"#, #"member "since" is repeated"#),
            ]
            for (message, named) in cases {
                let close = try await socket(port: port, opening: [auth(owner.token), message])
                #expect(close?.closeCode == .policyViolation, "\(message)")
                #expect(close?.reason?.contains(named) == true, "\(message): \(String(describing: close?.reason))")
            }
        }
    }

    /// `CAIRN_NOTIFICATIONS_MAX_USER_CONNECTIONS`: a user holding the limit's live connections
    /// on a node gets 429 `rate_limited` (with `Retry-After`) for one more stream and close 4429
    /// for one more socket's `auth`; another user of the tenant is not held back, and a stream
    /// that ends gives its slot back.
    @Test(arguments: TestEngine.available)
    func oneUserHoldsAtMostTheLimitOfLiveConnections(engine: TestEngine) async throws {
        let configure: @Sendable (inout CairnConfiguration) -> Void = {
            fastNotifications(&$0)
            $0.notifications.maxUserConnections = 2
        }
        try await withLiveOwner(engine, "slots@example.com", configure: configure) { app, owner in
            let port = app.port!
            let hub = app.components.notifications.hub
            let first = try await SSEReader(port: port, token: owner.token)
            let second = try await SSEReader(port: port, token: owner.token)
            defer {
                first.stop()
                second.stop()
            }
            try await first.waitUntilOpen()
            try await second.waitUntilOpen()
            let refused = try await app.client.execute(
                uri: "/notifications/stream", method: .get, headers: [.authorization: "Bearer \(owner.token)"])
            #expect(refused.status == .tooManyRequests && refused.code == "rate_limited")
            #expect(refused.headers[.retryAfter] == "5")
            let close = try await socket(port: port, opening: [auth(owner.token)])
            #expect(closeCode(of: close) == 4429)
            #expect(close?.reason?.contains("2 live connections") == true)

            let member = try await addMember(app.client, owner: owner, email: "slots-m@example.com")
            let other = try await SSEReader(port: port, token: member.token)
            defer { other.stop() }
            try await other.waitUntilOpen()

            first.stop()
            try await hub.waitForConnections("the first stream to end", timeout: .seconds(20)) { $0 == 2 }
            let again = try await SSEReader(port: port, token: owner.token)
            defer { again.stop() }
            try await again.waitUntilOpen()
        }
    }

    /// With `CAIRN_WS_DEFLATE` on, a client that offers permessage-deflate (RFC 7692; Python
    /// `websockets` does by default) gets it, and every message decodes: replayed ones
    /// (compressed by the WebSocket layer) and a live one the hub writes (uncompressed). Off,
    /// the offer is declined.
    @Test(arguments: TestEngine.available)
    func permessageDeflateIsNegotiatedWhenEnabled(engine: TestEngine) async throws {
        let client = #"""
            import json, sys, urllib.request
            from websockets.sync.client import connect
            port, token, user = sys.argv[1], sys.argv[2], sys.argv[3]
            with connect(f"ws://127.0.0.1:{port}/ws", subprotocols=["cairn.v1", "bearer." + token], open_timeout=30) as ws:
                ws.send(json.dumps({"type": "subscribe", "since": 0}))
                titles = []
                while len(titles) < 3:
                    message = json.loads(ws.recv(timeout=30))
                    if message["type"] != "notification":
                        continue
                    titles.append(message["notification"]["title"])
                    ws.send(json.dumps({"type": "ack", "seq": message["seq"]}))
                    if len(titles) == 2:
                        body = {"userIds": [user], "type": "message", "title": "live", "data": {"pad": "compressible " * 100}}
                        request = urllib.request.Request(f"http://127.0.0.1:{port}/notifications", json.dumps(body).encode(),
                            {"content-type": "application/json", "authorization": "Bearer " + token})
                        urllib.request.urlopen(request, timeout=30).read()
                print(json.dumps({"extensions": ws.response.headers.get("Sec-WebSocket-Extensions"), "titles": titles}))
            """#
        for enabled in [true, false] {
            let configure = { @Sendable (configuration: inout CairnConfiguration) in
                fastNotifications(&configuration)
                configuration.http.webSocketDeflate = enabled
            }
            try await withLiveOwner(engine, "deflate@example.com", configure: configure) { app, owner in
                let center = app.components.notifications
                let pad = JSONValue.object(["pad": .string(String(repeating: "compressible ", count: 100))])
                for title in ["one", "two"] {
                    try await center.publish(
                        NotificationDraft(type: "message", title: title, data: pad), to: [owner.userId], tenantId: owner.tenantId)
                }
                let output = try await runPython(client, [String(app.port!), owner.token, owner.userId])
                let result = try JSONSerialization.jsonObject(with: output) as? [String: Any] ?? [:]
                #expect(result["titles"] as? [String] == ["one", "two", "live"], "\(String(decoding: output, as: UTF8.self))")
                let extensions = result["extensions"] as? String
                #expect((extensions?.contains("permessage-deflate") ?? false) == enabled, "negotiated: \(String(describing: extensions))")
            }
        }
    }

    /// An ack is of a seq the server sent: one past the last sent (a seq the user does not have
    /// yet, or ever) closes with 1008 as other protocol errors do; acks up to it are accepted.
    @Test(arguments: TestEngine.available)
    func anAckOfASeqNeverSentClosesWith1008(engine: TestEngine) async throws {
        try await withLiveOwner(engine, "ack-unsent@example.com") { app, owner in
            let (components, port) = (app.components, app.port!)
            try await publishMessages(3, titled: "a", to: owner, on: components.notifications)
            // Acks up to the last seq sent (3) keep the socket open: a ping after them is answered.
            let got = Mutex<[String]>([])
            let fine = try await socket(port: port, opening: [auth(owner.token), subscribe(0)]) { message, outbound in
                let type = message["type"] as? String ?? "?"
                got.withLock { $0.append(type) }
                if type == "notification", (message["seq"] as? NSNumber)?.int64Value == 3 {
                    try await outbound.write(.text(#"{"type":"ack","seq":2}"#))
                    try await outbound.write(.text(#"{"type":"ack","seq":3}"#))
                    try await outbound.write(.text(#"{"type":"ping"}"#))
                }
                return type != "pong"
            }
            #expect(fine == nil || fine?.closeCode == .normalClosure)
            #expect(got.withLock { $0 }.filter { $0 == "notification" }.count == 3)
            // Before anything is sent, and after all three were: an ack past the last seq sent closes.
            let ahead = try await socket(port: port, opening: [auth(owner.token), subscribe(3), #"{"type":"ack","seq":4}"#])
            #expect(ahead?.closeCode == .policyViolation)
            let far = try await socket(port: port, opening: [auth(owner.token), subscribe(0)]) { message, outbound in
                if message["type"] as? String == "notification", (message["seq"] as? NSNumber)?.int64Value == 3 {
                    try await outbound.write(.text(#"{"type":"ack","seq":1000000}"#))
                }
                return true
            }
            #expect(far?.closeCode == .policyViolation)
        }
    }

    @Test(arguments: TestEngine.available)
    func socketsNeverCarryAnotherUsersNotifications(engine: TestEngine) async throws {
        try await withLiveOwner(engine, "wsiso@example.com") { app, owner in
            let (client, components, port) = (app.client, app.components, app.port!)
            let member = try await addMember(client, owner: owner, email: "wsiso-m@example.com")
            let stranger = try await signUp(client, "wsiso-s@example.com")
            let center = components.notifications
            try await center.publish(NotificationDraft(type: "message", title: "owner"), to: [owner.userId], tenantId: owner.tenantId)
            try await center.publish(NotificationDraft(type: "message", title: "stranger"), to: [stranger.userId], tenantId: stranger.tenantId)
            try await center.publish(NotificationDraft(type: "message", title: "member"), to: [member.userId], tenantId: member.tenantId)
            let titles = Mutex<[String]>([])
            _ = try await socket(port: port, opening: [auth(member.token), subscribe(0)]) { message, outbound in
                if message["type"] as? String == "notification" {
                    titles.withLock { $0.append((message["notification"] as? [String: Any])?["title"] as? String ?? "?") }
                    try await outbound.write(.text(#"{"type":"ping"}"#))
                }
                return message["type"] as? String != "pong"
            }
            // Unacknowledged notifications are re-sent after the ack timeout (a slow machine can
            // hit it), so the same one may come twice; another user's never.
            #expect(Set(titles.withLock { $0 }) == ["member"])
        }
    }

    /// An authenticated socket is pinged (RFC 6455 §5.5.2) every `pingInterval` by its own
    /// tick: the WebSocket layer's auto-ping, a task beside every connection, is off.
    @Test(arguments: TestEngine.available)
    func anAuthenticatedSocketIsPingedFromItsTick(engine: TestEngine) async throws {
        let configure = { @Sendable (configuration: inout CairnConfiguration) in
            fastNotifications(&configuration)
            configuration.notifications.pingInterval = .milliseconds(300)
        }
        try await withLiveOwner(engine, "pinged@example.com", configure: configure) { app, owner in
            let raw = try RawClient(port: app.port!)
            await raw.send(webSocketUpgradeRequest(headers: ["Sec-WebSocket-Protocol: cairn.v1, bearer.\(owner.token)"]))
            let opened = await raw.read { $0.containsText(#""type":"ready""#) }
            try #require(opened.bytes.containsText("101 Switching Protocols") && !opened.ended)
            // An unmasked server ping with an empty payload: 0x89 0x00 (a read gives up after 10 s).
            let isPing = { @Sendable (bytes: [UInt8]) in zip(bytes, bytes.dropFirst()).contains { $0 == (0x89, 0x00) } }
            let pinged = await raw.read(until: isPing)
            #expect(isPing(pinged.bytes) && !pinged.ended)
        }
    }

    /// A client that completes the handshake, authenticates and subscribes, then never reads
    /// again while large notifications pile up: the server's writes wait on the full send
    /// buffers, so only the write deadline can notice. The connection must be dropped (1013
    /// queued, the hub forgets it) and the node must keep serving other sockets.
    @Test(arguments: TestEngine.available)
    func aClientThatStopsReadingIsDisconnected(engine: TestEngine) async throws {
        try await withLiveOwner(engine, "stall@example.com", configure: stallingNotifications) { app, owner in
            let (client, components, port) = (app.client, app.components, app.port!)
            let member = try await addMember(client, owner: owner, email: "stall-m@example.com")
            let center = components.notifications
            let raw = try RawClient(port: port)
            await raw.send(webSocketUpgradeRequest(headers: ["Sec-WebSocket-Protocol: cairn.v1, bearer.\(owner.token)"]))
            let opened = await raw.read { $0.containsText(#""type":"ready""#) }
            try #require(opened.bytes.containsText("101 Switching Protocols") && !opened.ended)
            await raw.send(RawClient.textFrame(subscribe(nil)))
            try await center.hub.waitForConnections("the socket registered") { $0 == 1 }
            try await overflowStalledClient(center, owner: owner, client: "socket")
            // Reading again drains what the kernel held, then the end of the connection.
            let rest = await raw.read()
            #expect(rest.ended)

            // The node still serves: another socket gets its notification.
            try await center.publish(NotificationDraft(type: "message", title: "still here"), to: [member.userId], tenantId: owner.tenantId)
            let titles = Mutex<[String]>([])
            _ = try await socket(port: port, opening: [auth(member.token), subscribe(0)]) { message, _ in
                guard message["type"] as? String == "notification" else { return true }
                titles.withLock { $0.append((message["notification"] as? [String: Any])?["title"] as? String ?? "?") }
                return false
            }
            #expect(titles.withLock { $0 } == ["still here"])
        }
    }
}

/// What the fan-out test's sockets saw.
private final class Tally: Sendable {
    let received = Mutex<[String: [Int64]]>([:])
    let ready = Observed(0)
    let foreign = Mutex(0)
    /// The close codes of the sockets the server ended before their user had every notification.
    let closes = Mutex<[UInt16?]>([])

    func count(of userId: String) -> Int { received.withLock { $0[userId]?.count ?? 0 } }
    func last(of userId: String) -> Int64? { received.withLock { $0[userId]?.last } }
}

@Suite("Notifications: fan-out across nodes")
struct FanOutTests {
    /// 100 users connected over WebSocket, half to each of two nodes on one PostgreSQL;
    /// 10,000 notifications published through both nodes at once: every user receives exactly
    /// their own 100, in seq order, none lost (the recorded sequence must be 1...100 with no gap:
    /// a seq skipped or out of order would show, re-sends of a seq already held are dropped as
    /// a client does).
    @Test func tenThousandNotificationsToOneHundredUsersAcrossTwoNodes() async throws {
        guard TestEngine.available.contains(.postgres) else { return }
        let configure = { (configuration: inout CairnConfiguration) in
            fastNotifications(&configuration)
            configuration.notifications.ackTimeout = .seconds(30)
        }
        try await withTwoNodes(mode: .live, configure: configure) { nodeA, nodeB in
            let (clientA, componentsA, portA) = (nodeA.client, nodeA.components, nodeA.port!)
            let (componentsB, portB) = (nodeB.components, nodeB.port!)
            let owner = try await signUp(clientA, "fan@example.com")
            var members: [Member] = []
            for n in 0..<99 { members.append(try await addMember(clientA, owner: owner, email: "fan\(n)@example.com")) }
            let users = members + [owner]
            let perUser = 100
            let tally = Tally()
            try await withThrowingTaskGroup(of: Void.self) { group in
                for (index, user) in users.enumerated() {
                    group.addTask {
                        // A client reconnects after the last seq it holds when the server ends its
                        // socket (a slow consumer's 1013, a failed read's 1011 on a loaded machine),
                        // as `cairn-wsload` does; exactly once is then checked across connections.
                        var since: Int64? = nil
                        for _ in 0..<10 {
                            let close = try await socket(port: index % 2 == 0 ? portA : portB, opening: [auth(user.token), subscribe(since)]) {
                                message, outbound in
                                switch message["type"] as? String {
                                case "ready":
                                    tally.ready.update { $0 += 1 }
                                    return true
                                case "notification":
                                    let seq = (message["seq"] as? NSNumber)?.int64Value ?? -1
                                    let data = (message["notification"] as? [String: Any])?["data"] as? [String: Any]
                                    if data?["user"] as? String != user.userId { tally.foreign.withLock { $0 += 1 } }
                                    // At-least-once with seq: a client drops what it already has (a
                                    // re-send after the ack timeout, on a slow machine).
                                    let count = tally.received.withLock { all in
                                        if let last = all[user.userId]?.last, seq <= last { return all[user.userId]!.count }
                                        all[user.userId, default: []].append(seq)
                                        return all[user.userId]!.count
                                    }
                                    try await outbound.write(.text(#"{"type":"ack","seq":\#(seq)}"#))
                                    return count < perUser
                                default:
                                    return true
                                }
                            }
                            if tally.count(of: user.userId) >= perUser { return }
                            tally.closes.withLock { $0.append(closeCode(of: close)) }
                            since = tally.last(of: user.userId) ?? 0
                        }
                    }
                }
                // Publish once every socket is authenticated: `ready` fixes the socket's cursor,
                // so whatever is stored after it is delivered once the socket subscribes.
                try await tally.ready.wait("every socket ready", timeout: .seconds(60)) { $0 >= users.count }
                try await withThrowingTaskGroup(of: Void.self) { publishers in
                    for (node, center) in [componentsA.notifications, componentsB.notifications].enumerated() {
                        for worker in 0..<4 {
                            publishers.addTask {
                                for round in 0..<(perUser / 2) where round % 4 == worker {
                                    for user in users {
                                        try await center.publish(
                                            NotificationDraft(
                                                type: "message", title: "n\(node)-\(round)", data: .object(["user": .string(user.userId)])),
                                            to: [user.userId], tenantId: user.tenantId)
                                    }
                                }
                            }
                        }
                    }
                    try await publishers.waitForAll()
                }
                try await group.waitForAll()
            }
            let all = tally.received.withLock { $0 }
            #expect(tally.foreign.withLock { $0 } == 0)
            // Only the closes a loaded machine may cause: a failed database read (1011), a
            // client that did not read for the write timeout (1013), a reconnect whose `auth`
            // came later than the auth timeout or a socket with no client message for the idle
            // timeout while the publishers were slowed (4408: these clients send no pings), or
            // no close frame at all.
            let closes = tally.closes.withLock { $0 }
            #expect(closes.allSatisfy { [nil, 1011, 1013, 4408].contains($0) }, "close codes: \(closes)")
            if !closes.isEmpty { print("fan-out: \(closes.count) sockets ended by the server and reconnected; close codes \(closes)") }
            for user in users {
                #expect(all[user.userId] == Array(1...Int64(perUser)), "user \(user.userId) got \(all[user.userId]?.count ?? 0)")
            }
        }
    }
}
