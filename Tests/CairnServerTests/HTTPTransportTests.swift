import CairnAccounts
import CairnHTTP
import CairnNotifications
import CairnServer
import CairnStorage
import CairnTestSupport
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Timeouts short enough that each test takes about a second.
private func shortTimeouts(_ configuration: inout CairnConfiguration) {
    configuration.http.headTimeout = .seconds(1)
    configuration.http.idleTimeout = .seconds(1)
    configuration.http.bodyTimeout = .seconds(1)
}

/// Short timeouts but a head timeout far off, so an answer is the parser's, however loaded the
/// machine (the tests of 400 and 431).
private func parserAnswerTimeouts(_ configuration: inout CairnConfiguration) {
    shortTimeouts(&configuration)
    configuration.http.headTimeout = .seconds(30)
}

/// A live app on `engine` with the parser's answer timeouts, on the WebSocket layer `deflate`
/// picks (permessage-deflate negotiable or not): the handshake tests run on both layers.
private func withWebSocketLayer(_ engine: TestEngine, deflate: Bool, _ body: @Sendable (TestApp) async throws -> Void) async throws {
    try await withTestApp(
        engine, mode: .live,
        configure: {
            parserAnswerTimeouts(&$0)
            $0.http.webSocketDeflate = deflate
        }, body)
}

/// The connection bounds of issue 13 (HTTP transport), over real TCP: what a client that stops
/// sending, or sends what is not HTTP/1.1, gets; and what must not be cut (a slow but steady
/// upload, an SSE stream).
@Suite("HTTP transport bounds")
struct HTTPTransportTests {
    /// Half a head: `408 request_timeout` after the head timeout, then the connection closes
    /// (before: 150 such connections were all still held after 45 s).
    @Test(arguments: TestEngine.available)
    func aHalfSentHeadIsAnswered408AndClosed(engine: TestEngine) async throws {
        try await withTestApp(engine, mode: .live, configure: shortTimeouts) { app in
            let wire = try WireClient(port: app.port!)
            await wire.send("GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: ")
            let answer = await wire.readToEnd(deadline: 10)
            #expect(answer.ended)
            #expect(answer.text.hasPrefix("HTTP/1.1 408"))
            #expect(answer.text.contains(#""code":"request_timeout""#))
            #expect(answer.text.contains("application/problem+json"))
            // Not before the timeout; that it came at all is `ended` within the read's deadline
            // (no other limit closes a connection that soon): no upper bound on a loaded clock.
            #expect(answer.elapsed >= 0.9, "closed after \(answer.elapsed) s")
        }
    }

    /// A keep-alive connection is reused while busy, then closed after the idle timeout.
    @Test(arguments: TestEngine.available)
    func anIdleKeepAliveConnectionIsClosed(engine: TestEngine) async throws {
        try await withTestApp(engine, mode: .live, configure: shortTimeouts) { app in
            let wire = try WireClient(port: app.port!)
            var lastSent = ContinuousClock.now
            for _ in 0..<2 {
                lastSent = ContinuousClock.now
                await wire.send("GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                let answer = await wire.read(deadline: 10) { $0.containsText(#"{"status":"ok"}"#) }
                #expect(!answer.ended)
                #expect(answer.text.hasPrefix("HTTP/1.1 200"))
            }
            let rest = await wire.readToEnd(deadline: 10)
            #expect(rest.ended)
            #expect(rest.bytes.isEmpty)
            // The idle timer starts when the answer is written, which is after the request was
            // sent but may be well before a loaded client reads it: measure from the send.
            let idle = (ContinuousClock.now - lastSent) / .seconds(1)
            // Closed by the idle timer: not before it, and (`ended` above) within the read's deadline,
            // which no other limit reaches; no upper bound on a loaded machine's clock.
            #expect(idle >= 0.9, "closed \(idle) s after the last request, \(rest.elapsed) s after its answer was read")
        }
    }

    /// A body that stops half-way closes the connection after the body timeout.
    @Test(arguments: TestEngine.available)
    func aStalledBodyClosesTheConnection(engine: TestEngine) async throws {
        try await withTestApp(engine, mode: .live, configure: shortTimeouts) { app in
            let wire = try WireClient(port: app.port!)
            await wire.send(
                "POST /auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{\"email\": ")
            let answer = await wire.readToEnd(deadline: 10)
            #expect(answer.ended)
            // Not before the timeout; that it came at all is `ended` within the read's deadline
            // (no other limit closes a connection that soon): no upper bound on a loaded clock.
            #expect(answer.elapsed >= 0.9, "closed after \(answer.elapsed) s")
        }
    }

    /// The body timeout is a stall limit, not a total: a body sent in small pieces every 250 ms
    /// for about 6 s (half again the 4 s timeout) is read to its end and answered. The gaps are a
    /// sixteenth of the timeout, so a loaded machine's late wake-ups do not turn them into stalls.
    @Test(arguments: TestEngine.available)
    func aSlowButSteadyBodyIsServed(engine: TestEngine) async throws {
        try await withTestApp(
            engine, mode: .live,
            configure: {
                shortTimeouts(&$0)
                $0.http.bodyTimeout = .seconds(4)
            }
        ) { app in
            let body =
                Array(#"{"email": "nobody@example.com", "password": "not the right one"}"#.utf8)
                + Array(repeating: UInt8(ascii: " "), count: 36)
            let wire = try WireClient(port: app.port!)
            await wire.send(
                "POST /auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: \(body.count)\r\n\r\n")
            // The pacing is the client under test, not a wait for the server. It runs on a
            // thread of its own: on the test process's busy cooperative pool, a 250 ms sleep
            // could stretch past the 4 s body timeout while other suites run beside it.
            await offThePool { [fd = wire.fd] in
                for piece in stride(from: 0, to: body.count, by: 4) {
                    usleep(250_000)
                    let bytes = Array(body[piece..<min(piece + 4, body.count)])
                    guard bytes.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) == bytes.count else { return }
                }
            }
            let answer = await wire.read(deadline: 20) { $0.containsText("invalid_credentials") }
            #expect(answer.text.hasPrefix("HTTP/1.1 401"), "got \(answer.text.prefix(200))")
        }
    }

    /// An SSE stream writes nothing for longer than the idle and head timeouts and stays open,
    /// still delivering.
    @Test(arguments: TestEngine.available)
    func anSSEStreamOutlivesTheIdleTimeout(engine: TestEngine) async throws {
        try await withTestApp(engine, mode: .live, configure: shortTimeouts) { app in
            // The user is made through the service, not the test's HTTP client: that client keeps
            // its connection between requests, and on a loaded machine the 1 s idle timeout under
            // test could close it between registering and logging in.
            let accounts = app.components.accounts
            let user = try await accounts.register(
                email: "transport-sse@example.com", password: "correct horse battery", name: "SSE", tenantName: nil)
            let tokens = try await accounts.login(email: "transport-sse@example.com", password: "correct horse battery", client: "test")
            let wire = try WireClient(port: app.port!)
            await wire.send("GET /notifications/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \(tokens.accessToken)\r\n\r\n")
            let opened = await wire.read(deadline: 10) { $0.containsText("retry: 3000") }
            try #require(opened.text.hasPrefix("HTTP/1.1 200") && !opened.ended)
            // 2.5 s of silence (heartbeats come every 15 s): more than the idle, head and body timeouts.
            let quiet = await wire.read(deadline: 2.5) { _ in false }
            #expect(!quiet.ended)
            try await app.components.notifications.publish(
                NotificationDraft(type: "message", title: "still here"), to: [user.id], tenantId: user.tenantId)
            let delivered = await wire.read(deadline: 10) { $0.containsText("still here") }
            #expect(delivered.text.contains("still here"))
            #expect(!delivered.ended)
        }
    }

    /// A WebSocket is not timed by the transport: after the upgrade it stays open, silent, past
    /// every timeout, and frames still flow (a ping is answered with a pong). The guard leaves
    /// the pipeline on the upgrade: had it stayed, the first frame would reach it as raw bytes.
    @Test(arguments: TestEngine.available)
    func aWebSocketOutlivesTheTimeouts(engine: TestEngine) async throws {
        try await withTestApp(engine, mode: .live, configure: shortTimeouts) { app in
            let wire = try WireClient(port: app.port!)
            await wire.send(webSocketUpgradeRequest())
            let upgraded = await wire.read(deadline: 10) { $0.containsText("\r\n\r\n") }
            try #require(upgraded.text.hasPrefix("HTTP/1.1 101"), "got \(upgraded.text.prefix(200))")
            // 2.5 s of silence: more than the idle, head and body timeouts (the socket's own
            // authentication timeout is 10 s).
            let quiet = await wire.read(deadline: 2.5) { _ in false }
            #expect(!quiet.ended)
            await wire.send([0x89, 0x80, 0x01, 0x02, 0x03, 0x04])  // a masked, empty ping
            let pong = await wire.read(deadline: 10) { $0.starts(with: [0x8A, 0x00]) }
            #expect(pong.bytes.starts(with: [0x8A, 0x00]))
            #expect(!pong.ended)
        }
    }

    /// A message sent in the same TCP write as the handshake is read: the socket's frame
    /// handler joins the pipeline at the upgrade, before the first frame is decoded (the
    /// earlier attempt to take frames on the event loop lost such messages).
    @Test(arguments: TestEngine.available)
    func aMessageRightBehindTheHandshakeIsRead(engine: TestEngine) async throws {
        try await withTestApp(engine, owner: "behind-handshake@example.com", mode: .live) { app, token in
            let wire = try WireClient(port: app.port!)
            // Authenticated by the subprotocol: a ping before `auth` closes the socket.
            let upgrade = webSocketUpgradeRequest(headers: ["Sec-WebSocket-Protocol: cairn.v1, bearer.\(token)"])
            await wire.send(upgrade + maskedClientFrame(opcode: 0x1, Array(#"{"type":"ping"}"#.utf8)))
            let answer = await wire.read(deadline: 10) { $0.containsText(#"{"type":"pong"}"#) }
            #expect(answer.text.hasPrefix("HTTP/1.1 101"), "got \(answer.text.prefix(200))")
            #expect(answer.text.contains(#"{"type":"pong"}"#))
            #expect(!answer.ended)
        }
    }

    /// Frames the protocol does not allow close the socket with RFC 6455's codes: reserved
    /// bits, a frame the client did not mask, or a continuation with nothing to continue 1002,
    /// a binary message 1008 (the `cairn.v1` protocol is JSON text), a frame over 16 KiB 1009.
    @Test(arguments: TestEngine.available)
    func framesOutsideTheProtocolClose(engine: TestEngine) async throws {
        try await withTestApp(engine, mode: .live) { app in
            let cases: [([UInt8], UInt16)] = [
                ([0xC1, 0x80, 1, 2, 3, 4], 1002),  // text with RSV1, no extension agreed
                (maskedClientFrame(opcode: 0x0, Array("{}".utf8)), 1002),
                (maskedClientFrame(opcode: 0x2, [1, 2, 3]), 1008),
                ([0x81, 0xFE, 0x4E, 0x20, 1, 2, 3, 4], 1009),  // a 20,000-byte frame announced (over 16 KiB)
                ([0x81, 0x02] + Array("{}".utf8), 1002),  // not masked (RFC 6455 §5.1)
            ]
            for (frame, code) in cases {
                let wire = try WireClient(port: app.port!)
                await wire.send(webSocketUpgradeRequest())
                let upgraded = await wire.read(deadline: 10) { $0.containsText("\r\n\r\n") }
                try #require(upgraded.text.hasPrefix("HTTP/1.1 101"), "got \(upgraded.text.prefix(200))")
                await wire.send(frame)
                let closing = await wire.read(deadline: 10) { $0.count >= 4 }
                #expect(
                    Array(closing.bytes.prefix(1)) == [0x88]
                        && Array(closing.bytes.dropFirst(2).prefix(2)) == [UInt8(code >> 8), UInt8(code & 0xFF)],
                    "frame \(frame.prefix(2)): got \(closing.bytes.prefix(8))")
            }
        }
    }

    /// A path with an empty or dot segment is refused over a real connection too, as `curl
    /// --path-as-is` sends it (see PathSegmentTests): the server's HTTP layer hands the path on
    /// as written, and the refusal comes before authentication (a 404, not a 401,
    /// for a path no route has), the WebSocket endpoint included.
    @Test(arguments: TestEngine.available)
    func theRefusalHoldsOnTheWire(engine: TestEngine) async throws {
        try await withTestApp(engine, mode: .live) { app in
            for path in ["/users/me/devices/..", "/tasks//0190d6a0-0000-7000-8000-000000000000", "/ws/.", "/health//live"] {
                let wire = try WireClient(port: app.port!)
                await wire.send("GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-Id: wire-1\r\n\r\n")
                let answer = await wire.read(deadline: 10) { $0.containsText("}") }
                #expect(answer.text.hasPrefix("HTTP/1.1 404"), "\(path): \(answer.text.prefix(200))")
                #expect(answer.text.contains(#""code":"not_found""#), "\(path)")
                #expect(answer.text.lowercased().contains("x-request-id: wire-1"), "\(path)")
            }
            let live = try WireClient(port: app.port!)
            await live.send("GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            #expect(await live.read(deadline: 10) { $0.containsText(#"{"status":"ok"}"#) }.text.hasPrefix("HTTP/1.1 200"))
        }
    }

    /// A WebSocket handshake to a path that is no WebSocket endpoint is served as the plain
    /// request it also is (here `404 not_found`; before: an empty 400); an upgrade asked for on a
    /// later request of a keep-alive connection gets `307` to the same URL with
    /// `Connection: close` (only a connection's first request can upgrade).
    @Test(arguments: TestEngine.available)
    func upgradesThatCannotBeServedAreAnswered(engine: TestEngine) async throws {
        try await withTestApp(engine, mode: .live) { app in
            let refused = try WireClient(port: app.port!)
            await refused.send(webSocketUpgradeRequest(path: "/nowhere"))
            let answer = await refused.read(deadline: 10) { $0.containsText("}") }
            #expect(answer.text.hasPrefix("HTTP/1.1 404"), "got \(answer.text.prefix(200))")
            #expect(answer.text.contains(#""code":"not_found""#))
            let later = try WireClient(port: app.port!)
            await later.send("GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            let first = await later.read(deadline: 10) { $0.containsText(#"{"status":"ok"}"#) }
            #expect(first.text.hasPrefix("HTTP/1.1 200"))
            await later.send(webSocketUpgradeRequest(path: "/ws?x=1"))
            let redirected = await later.readToEnd(deadline: 10)
            #expect(redirected.text.hasPrefix("HTTP/1.1 307"), "got \(redirected.text.prefix(200))")
            #expect(redirected.text.lowercased().contains("location: /ws?x=1"))
            #expect(redirected.ended)
        }
    }

    /// A handshake NIO's upgrader would fail before any route is asked is answered, on both
    /// WebSocket layers, and the connection closes (before: no answer at all): another
    /// `Sec-WebSocket-Version` gets `426` naming version 13 (RFC 6455 §4.2.2); a missing,
    /// doubled or short `Sec-WebSocket-Key` gets `400` (§4.2.1). Each carries `Date` and echoes
    /// the client's `X-Request-Id`, and the 426 `Upgrade: websocket` (RFC 9110 §15.5.22), as
    /// every other answer does (those three were missing before, found by a fresh-user trial).
    /// A valid one still upgrades.
    @Test(arguments: TestEngine.available, [false, true])
    func malformedHandshakesAreAnswered(engine: TestEngine, deflate: Bool) async throws {
        try await withWebSocketLayer(engine, deflate: deflate) { app in
            let start = "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nX-Request-Id: trial-42\r\n"
            let key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            let cases: [(headers: String, status: String, code: String)] = [
                (key + "Sec-WebSocket-Version: 8\r\n", "426", "invalid_input"),
                (key, "426", "invalid_input"),
                ("Sec-WebSocket-Version: 13\r\n", "400", "bad_request"),
                ("Sec-WebSocket-Key: c2hvcnQ=\r\nSec-WebSocket-Version: 13\r\n", "400", "bad_request"),
                (key + key + "Sec-WebSocket-Version: 13\r\n", "400", "bad_request"),
            ]
            for (headers, status, code) in cases {
                let wire = try WireClient(port: app.port!)
                await wire.send(start + headers + "\r\n")
                let answer = await wire.readToEnd(deadline: 10)
                #expect(answer.text.hasPrefix("HTTP/1.1 \(status)"), "\(headers): got \(answer.text.prefix(200))")
                #expect(answer.text.contains(#""code":"\#(code)""#), "\(headers)")
                #expect(answer.ended, "\(headers)")
                let lowered = answer.text.lowercased()
                #expect(lowered.contains("\r\nx-request-id: trial-42\r\n"), "\(headers): \(answer.text.prefix(400))")
                #expect(lowered.contains("\r\ndate: "), "\(headers): \(answer.text.prefix(400))")
                if status == "426" {
                    #expect(lowered.contains("\r\nupgrade: websocket\r\n"), "\(headers): \(answer.text.prefix(400))")
                    #expect(answer.text.lowercased().contains("sec-websocket-version: 13\r\n"), "\(headers)")
                    // As every other invalid_input, it names its field.
                    #expect(answer.text.contains(#""errors":[{"field":"Sec-WebSocket-Version","issue":"#), "\(headers): \(answer.text)")
                }
            }
            let valid = try WireClient(port: app.port!)
            await valid.send(webSocketUpgradeRequest())
            let upgraded = await valid.read(deadline: 10) { $0.containsText("\r\n\r\n") }
            #expect(upgraded.text.hasPrefix("HTTP/1.1 101"), "got \(upgraded.text.prefix(200))")
        }
    }

    /// An `Upgrade` the server does not take is ignored (RFC 9110 §7.8) and the request served
    /// as plain HTTP/1.1 on a connection that stays open, on both WebSocket layers: `h2c` (what
    /// `curl --http2` sends on plain HTTP, RFC 7540 §3.2) to a public and an authenticated
    /// route, and a WebSocket handshake to routes that are no WebSocket endpoint (the answer is
    /// the route's own, problem+json and `X-Request-Id` included). Before, `h2c` got no answer
    /// at all and the handshakes an empty `400`.
    @Test(arguments: TestEngine.available, [false, true])
    func anUpgradeTheServerDoesNotTakeIsIgnored(engine: TestEngine, deflate: Bool) async throws {
        try await withTestApp(engine, mode: .live, configure: { $0.http.webSocketDeflate = deflate }) { app in
            let accounts = app.components.accounts
            _ = try await accounts.register(email: "transport-h2c@example.com", password: "correct horse battery", name: "H", tenantName: nil)
            let token = try await accounts.login(email: "transport-h2c@example.com", password: "correct horse battery", client: "test").accessToken
            let h2c = "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n"
            let webSocket =
                "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            let auth = "Authorization: Bearer \(token)\r\n"
            let cases: [(request: String, status: String, ends: String)] = [
                ("GET /health/live", "200", #"{"status":"ok"}"#),
                ("GET /tasks", "200", #""nextCursor":null}"#),
                ("PUT /ws", "405", #""code":"method_not_allowed""#),
                ("GET /tasks", "200", #""nextCursor":null}"#),
                ("GET /openapi.yaml", "200", "openapi: "),
            ]
            for upgrade in [h2c, webSocket] {
                // One connection for all of them: each answer leaves it open for the next.
                let wire = try WireClient(port: app.port!)
                for (request, status, ends) in cases {
                    await wire.send("\(request) HTTP/1.1\r\nHost: 127.0.0.1\r\n\(auth)\(upgrade)\r\n")
                    let answer = await wire.read(deadline: 10, until: isWholeResponse)
                    let head = answer.text.prefix(300)
                    #expect(answer.text.hasPrefix("HTTP/1.1 \(status)"), "\(request) with \(upgrade): got \(head)")
                    #expect(answer.text.contains(ends), "\(request) with \(upgrade): got \(head)")
                    #expect(answer.text.contains("X-Request-Id: "), "\(request) with \(upgrade)")
                    #expect(!answer.ended, "\(request) with \(upgrade): the connection closed")
                    if status != "200" { #expect(answer.text.contains("application/problem+json"), "\(request) with \(upgrade)") }
                }
            }
        }
    }

    /// A request pipelined right behind one whose `Upgrade` is ignored, in the same write (so
    /// in one socket read), is answered after it, on both WebSocket layers. Before, its bytes
    /// reached the replacement decoder outside any read and were never handed on: no second
    /// answer, and the connection stayed open past the idle timeout (found by a fresh-user trial).
    @Test(arguments: TestEngine.available, [false, true])
    func aRequestPipelinedBehindAnIgnoredUpgradeIsAnswered(engine: TestEngine, deflate: Bool) async throws {
        try await withTestApp(engine, mode: .live, configure: { $0.http.webSocketDeflate = deflate }) { app in
            let upgrades = [
                "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n",
                "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
            ]
            for upgrade in upgrades {
                let wire = try WireClient(port: app.port!)
                await wire.send(
                    "GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\(upgrade)\r\n"
                        + "GET /openapi.yaml HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                let answer = await wire.read(deadline: 10) { $0.containsText(#"{"status":"ok"}"#) && $0.containsText("openapi: ") }
                let text = answer.text
                let first = text.range(of: #"{"status":"ok"}"#)
                let second = text.range(of: "openapi: ")
                #expect(text.hasPrefix("HTTP/1.1 200"), "\(upgrade): got \(text.prefix(300))")
                #expect(first != nil && second != nil, "\(upgrade): both answers, got \(text.prefix(600))")
                if let first, let second { #expect(first.upperBound <= second.lowerBound, "\(upgrade): in order") }
                #expect(!answer.ended, "\(upgrade): the connection closed")
            }
        }
    }

    /// A handshake the WebSocket route itself refuses (here a `GET /ws` route that answers
    /// 403 and opens no socket) gets `400 bad_request` as problem+json with `X-Request-Id`,
    /// and the connection closes (before: an empty 400). No route of Cairn's refuses a
    /// well-formed handshake today; this is the answer for when one does.
    @Test func aHandshakeItsRouteRefusesIsAnsweredWithAProblem() async throws {
        let router = Router(context: CairnRequestContext.self)
        router.get("ws") { _, _ -> HTTPResponse.Status in .forbidden }
        let app = Application(
            router: router, server: .cairn(router: router, settings: HTTPTransportSettings()),
            configuration: .init(address: .hostname("127.0.0.1", port: 0)), logger: testLogger)
        try await app.test(.live) { client in
            let wire = try WireClient(port: try #require(client.port))
            await wire.send(webSocketUpgradeRequest(headers: ["X-Request-Id: refused-7"]))
            let answer = await wire.readToEnd(deadline: 10)
            #expect(answer.text.hasPrefix("HTTP/1.1 400"), "got \(answer.text.prefix(300))")
            #expect(answer.text.contains("application/problem+json"))
            #expect(answer.text.contains(#""code":"bad_request""#))
            #expect(answer.text.lowercased().contains("\r\nx-request-id: refused-7\r\n"), "got \(answer.text.prefix(300))")
            #expect(answer.text.lowercased().contains("\r\ndate: "), "got \(answer.text.prefix(300))")
            #expect(answer.ended)
        }
    }

    /// `GET /ws` without a handshake (no `Upgrade`, or `Upgrade: websocket` without
    /// `Connection: Upgrade`, which RFC 9110 §7.8 makes no upgrade) answers `426 invalid_input`
    /// whose `errors` name `Upgrade`, as every `invalid_input` names its field.
    @Test(arguments: TestEngine.available, [false, true])
    func aPlainGetOfTheSocketNamesUpgrade(engine: TestEngine, deflate: Bool) async throws {
        try await withTestApp(engine, mode: .live, configure: { $0.http.webSocketDeflate = deflate }) { app in
            for extra in ["", "Upgrade: websocket\r\n"] {
                let wire = try WireClient(port: app.port!)
                await wire.send("GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n\(extra)\r\n")
                let answer = await wire.read(deadline: 10, until: isWholeResponse)
                #expect(answer.text.hasPrefix("HTTP/1.1 426"), "\(extra): got \(answer.text.prefix(200))")
                #expect(answer.text.contains(#""code":"invalid_input""#), "\(extra)")
                #expect(answer.text.contains(#""errors":[{"field":"Upgrade","issue":"#), "\(extra): \(answer.text)")
            }
        }
    }

    /// A message in fragments (RFC 6455 §5.4) is read whole; a client's close frame is
    /// answered with one (1000) and the connection ends.
    @Test(arguments: TestEngine.available)
    func fragmentsAreJoinedAndACloseIsAnswered(engine: TestEngine) async throws {
        try await withTestApp(engine, owner: "fragments@example.com", mode: .live) { app, token in
            let wire = try WireClient(port: app.port!)
            // Authenticated by the subprotocol: a ping before `auth` closes the socket.
            await wire.send(webSocketUpgradeRequest(headers: ["Sec-WebSocket-Protocol: cairn.v1, bearer.\(token)"]))
            let upgraded = await wire.read(deadline: 10) { $0.containsText("\r\n\r\n") }
            try #require(upgraded.text.hasPrefix("HTTP/1.1 101"), "got \(upgraded.text.prefix(200))")
            await wire.send(maskedClientFrame(opcode: 0x1, fin: false, Array(#"{"type""#.utf8)))
            await wire.send(maskedClientFrame(opcode: 0x0, fin: false, Array(#":"pi"#.utf8)))
            await wire.send(maskedClientFrame(opcode: 0x0, Array(#"ng"}"#.utf8)))
            let pong = await wire.read(deadline: 10) { $0.containsText(#"{"type":"pong"}"#) }
            #expect(pong.text.contains(#"{"type":"pong"}"#))
            await wire.send(maskedClientFrame(opcode: 0x8, [0x03, 0xE8]))
            let closed = await wire.readToEnd(deadline: 10)
            #expect(closed.bytes.starts(with: [0x88, 0x02, 0x03, 0xE8]), "got \(closed.bytes.prefix(8))")
            #expect(closed.ended)
        }
    }

    /// A WebSocket handshake that announces a body and never sends it is not left waiting,
    /// untimed, in the upgrade: `400 bad_request`, then the connection closes.
    @Test(arguments: TestEngine.available)
    func aWebSocketHandshakeWithABodyIsRefused(engine: TestEngine) async throws {
        try await withTestApp(engine, mode: .live, configure: shortTimeouts) { app in
            let wire = try WireClient(port: app.port!)
            await wire.send(webSocketUpgradeRequest(headers: ["Content-Length: 10"]))
            let answer = await wire.readToEnd(deadline: 10)
            #expect(answer.ended)
            #expect(answer.text.hasPrefix("HTTP/1.1 400"), "got \(answer.text.prefix(200))")
            #expect(answer.text.contains(#""code":"bad_request""#))
        }
    }

    /// A raw non-ASCII byte in the request line: `400 bad_request`, then the connection closes
    /// (before: no answer, and the connection stayed open).
    @Test(arguments: TestEngine.available)
    func aNonASCIIRequestLineIsAnswered400AndClosed(engine: TestEngine) async throws {
        try await withTestApp(engine, mode: .live, configure: parserAnswerTimeouts) { app in
            for path in [[0xC3, 0xA9], [0xE9]] as [[UInt8]] {
                let wire = try WireClient(port: app.port!)
                await wire.send(Array("GET /health/".utf8) + path + Array(" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".utf8))
                let answer = await wire.readToEnd(deadline: 10)
                #expect(answer.ended)
                #expect(answer.text.hasPrefix("HTTP/1.1 400"), "got \(answer.text.prefix(200))")
                #expect(answer.text.contains(#""code":"bad_request""#))
                #expect(answer.text.contains("Connection: close"))
                #expect(answer.text.contains("X-Request-Id: "))
                #expect(answer.elapsed < 20, "answered after \(answer.elapsed) s: the head timeout, not the parser")
            }
        }
    }

    /// A valid request and a malformed one in one write (pipelining): the first is answered,
    /// then the second gets its 400, in order. The connection used to close at once, dropping
    /// the first answer although its request had run (found by a fresh-user trial).
    @Test(arguments: TestEngine.available)
    func aMalformedRequestPipelinedBehindAValidOneWaitsForItsAnswer(engine: TestEngine) async throws {
        try await withTestApp(engine, mode: .live, configure: shortTimeouts) { app in
            let wire = try WireClient(port: app.port!)
            await wire.send(
                Array("GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET /h".utf8) + [0xFF] + Array(" HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
            let answer = await wire.readToEnd(deadline: 10)
            #expect(answer.ended)
            #expect(answer.text.hasPrefix("HTTP/1.1 200"), "got \(answer.text.prefix(300))")
            let second = answer.text.range(of: "HTTP/1.1 400")
            #expect(second != nil, "then the 400: \(answer.text)")
            #expect(answer.text.contains(#""code":"bad_request""#))
        }
    }

    /// Persistence follows RFC 9112 §9.3: an HTTP/1.0 request without `keep-alive`, and an
    /// HTTP/1.1 one listing `close` in any case, are answered with `Connection: close` and the
    /// connection closes at once (idle timeout 65 s here); HTTP/1.0 with `keep-alive` gets
    /// `Connection: keep-alive` and the connection serves the next request. Before, HTTP/1.0
    /// connections stayed open with no `Connection` (found by a fresh-user trial).
    @Test(arguments: TestEngine.available)
    func httpOneZeroIsNotPersistentUnlessAskedTo(engine: TestEngine) async throws {
        try await withTestApp(engine, mode: .live) { app in
            for request in [
                "GET /health/live HTTP/1.0\r\n\r\n", "GET /health/live HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n",
                "GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Close\r\n\r\n",
                "GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: te, close\r\nTE: trailers\r\n\r\n",
                // Pipelined behind the connection's last request: neither served nor answered
                // (RFC 9112 §9.6; before, the decoder's refusal of those bytes got a 400).
                "GET /health/live HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET /health/live HTTP/1.1\r\nHost: a\r\n\r\n",
                "GET /health/live HTTP/1.0\r\n\r\nGET /health/live HTTP/1.0\r\n\r\n",
                "GET /health/live HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nnot http at all\r\n\r\n",
            ] {
                let wire = try WireClient(port: app.port!)
                await wire.send(request)
                let answer = await wire.readToEnd(deadline: 10)
                #expect(answer.text.hasPrefix("HTTP/1.1 200"), "\(request): got \(answer.text.prefix(300))")
                #expect(answer.text.components(separatedBy: "HTTP/1.1 ").count == 2, "\(request): one answer, got \(answer.text.prefix(600))")
                #expect(answer.text.lowercased().contains("\r\nconnection: close\r\n"), "\(request): got \(answer.text.prefix(300))")
                // Closed after the answer: within the read's 10 s deadline, which the idle timer
                // (65 s by default) never reaches.
                #expect(answer.ended, "\(request): closed \(answer.ended) after \(answer.elapsed) s")
            }
            let wire = try WireClient(port: app.port!)
            for _ in 0..<2 {
                await wire.send("GET /health/live HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                let answer = await wire.read(deadline: 10, until: isWholeResponse)
                #expect(answer.text.hasPrefix("HTTP/1.1 200"), "got \(answer.text.prefix(300))")
                #expect(answer.text.lowercased().contains("\r\nconnection: keep-alive\r\n"), "got \(answer.text.prefix(300))")
                #expect(!answer.ended)
            }
        }
    }

    /// An HTTP/1.1 request without `Host`, or with two, is answered `400 bad_request` and the
    /// connection closes (RFC 9112 §3.2); behind a pipelined valid request, after its answer.
    /// Before, it was served (found by a fresh-user trial).
    @Test(arguments: TestEngine.available)
    func anHTTPOneOneRequestNeedsOneHost(engine: TestEngine) async throws {
        try await withTestApp(engine, mode: .live, configure: parserAnswerTimeouts) { app in
            for request in [
                "GET /health/live HTTP/1.1\r\n\r\n", "GET /health/live HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
                "GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET /health/live HTTP/1.1\r\nX-Request-Id: no-host\r\n\r\n",
            ] {
                let wire = try WireClient(port: app.port!)
                await wire.send(request)
                let answer = await wire.readToEnd(deadline: 10)
                let text = answer.text
                let pipelined = request.components(separatedBy: "GET ").count > 2
                #expect(text.hasPrefix(pipelined ? "HTTP/1.1 200" : "HTTP/1.1 400"), "\(request): got \(text.prefix(300))")
                #expect(text.contains("HTTP/1.1 400 Bad Request"), "\(request): got \(text.prefix(600))")
                #expect(text.contains(#""code":"bad_request""#), "\(request)")
                if pipelined { #expect(text.contains("X-Request-Id: no-host"), "\(request): got \(text.prefix(600))") }
                #expect(answer.ended, "\(request)")
            }
        }
    }

    /// A WebSocket handshake over HTTP/1.0 is answered `400 bad_request` (RFC 6455 §4.1 asks
    /// for HTTP/1.1 or later) and opens no socket, on both WebSocket layers. Before, it upgraded.
    @Test(arguments: TestEngine.available, [false, true])
    func aWebSocketHandshakeOverHTTPOneZeroIsRefused(engine: TestEngine, deflate: Bool) async throws {
        try await withWebSocketLayer(engine, deflate: deflate) { app in
            let wire = try WireClient(port: app.port!)
            await wire.send(String(decoding: webSocketUpgradeRequest(), as: UTF8.self).replacingOccurrences(of: "HTTP/1.1", with: "HTTP/1.0"))
            let answer = await wire.readToEnd(deadline: 10)
            #expect(answer.text.hasPrefix("HTTP/1.1 400"), "got \(answer.text.prefix(300))")
            #expect(answer.text.contains(#""code":"bad_request""#))
            #expect(answer.ended)
        }
    }

    /// A 100 KiB header block: `431 request_header_fields_too_large` (RFC 6585 §5), then the
    /// connection closes, and the answer survives the unread rest of the block.
    @Test(arguments: TestEngine.available)
    func anOversizedHeaderBlockIsAnswered431(engine: TestEngine) async throws {
        try await withTestApp(engine, mode: .live, configure: parserAnswerTimeouts) { app in
            let fields = (0..<100).map { "X-Filler-\($0): \(String(repeating: "a", count: 1000))\r\n" }.joined()
            let wire = try WireClient(port: app.port!)
            await wire.send("GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\(fields)\r\n")
            let answer = await wire.readToEnd(deadline: 10)
            #expect(answer.ended)
            #expect(answer.text.hasPrefix("HTTP/1.1 431"), "got \(answer.text.prefix(200))")
            #expect(answer.text.contains(#""code":"request_header_fields_too_large""#))
            #expect(answer.elapsed < 20, "answered after \(answer.elapsed) s: the head timeout, not the parser")
        }
    }

    /// The timeouts come from `CAIRN_HTTP_*_TIMEOUT`, with defaults near nginx's and Node's (the
    /// drain's inside Kubernetes' 30 s before SIGKILL).
    @Test func theConnectionLimitFollowsTheOpenFileLimit() {
        #expect(FileDescriptorLimit.defaultMaxConnections(limit: 1024) == 768)
        #expect(FileDescriptorLimit.defaultMaxConnections(limit: 524_288) == 458_752)
        #expect(FileDescriptorLimit.defaultMaxConnections(limit: 100) == 16)
    }

    /// One warning when the limit is reached, and another only once the count fell below nine
    /// tenths of it: connections churning at the limit do not flood the log.
    @Test func theConnectionLimitWarnsOncePerApproach() async throws {
        let log = CapturedLog()
        var limit = ConnectionLimit(maximum: 20, logger: log.logger(level: .warning))
        func warnings() -> Int { log.text.split(separator: "\n").filter { $0.contains("at the connection limit") }.count }
        for _ in 0..<19 { limit.connectionOpened() }
        #expect(warnings() == 0 && limit.isAcceptingNewConnections())
        limit.connectionOpened()
        #expect(warnings() == 1 && !limit.isAcceptingNewConnections())
        for _ in 0..<5 {
            limit.connectionClosed()
            limit.connectionOpened()
        }
        #expect(warnings() == 1)
        for _ in 0..<3 { limit.connectionClosed() }  // 17: below 18, nine tenths of 20
        for _ in 0..<3 { limit.connectionOpened() }
        #expect(warnings() == 2)
    }

    @Test func theConnectionLimitIsRead() async throws {
        let defaults = try await CairnConfiguration.load(flags: [:], environment: [:])
        #expect(defaults.http.maxConnections == FileDescriptorLimit.defaultMaxConnections(limit: FileDescriptorLimit.current))
        let set = try await CairnConfiguration.load(flags: [:], environment: ["CAIRN_HTTP_MAX_CONNECTIONS": "5000"])
        #expect(set.http.maxConnections == 5000)
        await #expect(throws: ConfigurationError.self) {
            _ = try await CairnConfiguration.load(flags: [:], environment: ["CAIRN_HTTP_MAX_CONNECTIONS": "8"])
        }
    }

    @Test func timeoutsAreRead() async throws {
        let defaults = try await CairnConfiguration.load(flags: [:], environment: [:])
        #expect(defaults.http.headTimeout == .seconds(30))
        #expect(defaults.http.idleTimeout == .seconds(65))
        #expect(defaults.http.bodyTimeout == .seconds(60))
        #expect(defaults.http.drainTimeout == .seconds(25))
        #expect(defaults.http.maxHeaderBytes == 64 * 1024)
        let set = try await CairnConfiguration.load(
            flags: [:],
            environment: [
                "CAIRN_HTTP_HEAD_TIMEOUT": "10", "CAIRN_HTTP_IDLE_TIMEOUT": "5s", "CAIRN_HTTP_BODY_TIMEOUT": "2m", "CAIRN_HTTP_DRAIN_TIMEOUT": "40s",
            ])
        #expect(set.http.headTimeout == .seconds(10))
        #expect(set.http.idleTimeout == .seconds(5))
        #expect(set.http.bodyTimeout == .seconds(120))
        #expect(set.http.drainTimeout == .seconds(40))
        await #expect(throws: ConfigurationError.self) {
            _ = try await CairnConfiguration.load(flags: [:], environment: ["CAIRN_HTTP_IDLE_TIMEOUT": "soon"])
        }
    }

    /// permessage-deflate for `/ws` is off unless `CAIRN_WS_DEFLATE` turns it on.
    @Test func webSocketDeflateIsReadAndOffByDefault() async throws {
        #expect(try await CairnConfiguration.load(flags: [:], environment: [:]).http.webSocketDeflate == false)
        #expect(try await CairnConfiguration.load(flags: [:], environment: ["CAIRN_WS_DEFLATE": "true"]).http.webSocketDeflate == true)
        await #expect(throws: ConfigurationError.self) {
            _ = try await CairnConfiguration.load(flags: [:], environment: ["CAIRN_WS_DEFLATE": "maybe"])
        }
    }
}

/// True once `bytes` hold one whole response with a `Content-Length` body.
@Sendable private func isWholeResponse(_ bytes: [UInt8]) -> Bool {
    let separator = Array("\r\n\r\n".utf8)
    guard let end = bytes.indices.first(where: { bytes[$0...].starts(with: separator) }) else { return false }
    let head = String(decoding: bytes[..<end], as: UTF8.self).lowercased()
    guard let field = head.range(of: "\r\ncontent-length: ") else { return false }
    let length = Int(head[field.upperBound...].prefix { $0.isNumber }) ?? 0
    return bytes.count - (end + separator.count) >= length
}

/// A blocking TCP client for bytes no HTTP library would send.
private final class WireClient: Sendable {
    let fd: Int32

    /// Connects to 127.0.0.1:`port`.
    init(port: Int) throws {
        fd = try loopbackSocket(port: port)
    }

    deinit { Glibc.close(fd) }

    /// What a read got: the bytes, whether the peer ended the connection (EOF or reset), and
    /// the seconds it took.
    struct Read: Sendable {
        let bytes: [UInt8]
        let ended: Bool
        let elapsed: Double
        var text: String { String(decoding: bytes, as: UTF8.self) }
    }

    /// Sends `text` as UTF-8.
    func send(_ text: String) async { await send(Array(text.utf8)) }

    /// Sends all of `bytes` (stops quietly if the peer is gone).
    func send(_ bytes: [UInt8]) async { await sendAll(bytes, on: fd) }

    /// Reads until the peer ends the connection or `deadline` seconds pass.
    func readToEnd(deadline: Double) async -> Read { await read(deadline: deadline) { _ in false } }

    /// Reads until `done` holds for what was read, the peer ends the connection, or `deadline`
    /// seconds pass.
    func read(deadline: Double, until done: @escaping @Sendable ([UInt8]) -> Bool) async -> Read {
        await offThePool { [fd] in
            let start = Date()
            var received: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 65536)
            while !done(received) {
                let left = deadline - Date().timeIntervalSince(start)
                if left <= 0 { break }
                var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                guard poll(&poller, 1, Int32(left * 1000) + 1) > 0 else { continue }
                let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                if count == 0 || (count < 0 && errno == ECONNRESET) {
                    return Read(bytes: received, ended: true, elapsed: Date().timeIntervalSince(start))
                }
                if count < 0 { break }
                received += chunk[0..<count]
            }
            return Read(bytes: received, ended: false, elapsed: Date().timeIntervalSince(start))
        }
    }
}
