import CairnHTTP
import CairnJobs
import CairnNotifications
import CairnServer
import CairnStorage
import CairnTestSupport
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import Synchronization
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Settings that make live connections check often, so tests do not wait long.
func fastNotifications(_ configuration: inout CairnConfiguration) {
    configuration.notifications.tick = .milliseconds(100)
    configuration.notifications.heartbeat = .milliseconds(500)
    configuration.notifications.authCheckInterval = .milliseconds(200)
    configuration.notifications.ackTimeout = .milliseconds(800)
    // Not shorter: a loaded machine took longer than 800 ms to answer an auth message, and
    // the socket was closed (4408) before its replay.
    configuration.notifications.authTimeout = .seconds(5)
    configuration.notifications.resyncInterval = .seconds(2)
    configuration.jobs.rescueInterval = .seconds(1)
}

/// ``fastNotifications(_:)`` with a short write timeout, so a client that stops reading is cut
/// soon after its send buffers fill.
func stallingNotifications(_ configuration: inout CairnConfiguration) {
    fastNotifications(&configuration)
    configuration.notifications.writeTimeout = .milliseconds(500)
}

/// A registered tenant owner: token and user id.
struct Member: Sendable {
    var token: String
    var userId: String
    var tenantId: String
}

func signUp(_ client: any TestClientProtocol, _ email: String) async throws -> Member {
    let (user, tokens) = try await client.registerAndLogin(email: email)
    return Member(token: tokens.accessToken, userId: user.id, tenantId: user.tenantId)
}

/// An owner plus `members` more users in one tenant, and a user of another tenant, with emails
/// starting `prefix`: the cast of the tests of who may see or change what.
func makeTenant(_ client: any TestClientProtocol, prefix: String, members: Int) async throws -> (owner: Member, members: [Member], stranger: Member) {
    let owner = try await signUp(client, "\(prefix)-owner@example.com")
    var added: [Member] = []
    for n in 0..<members { added.append(try await addMember(client, owner: owner, email: "\(prefix)-\(n)@example.com")) }
    let stranger = try await signUp(client, "\(prefix)-stranger@example.com")
    return (owner, added, stranger)
}

/// Runs `body` with the router-level client of a node on a fresh `engine` database and
/// ``makeTenant(_:prefix:members:)``'s owner, one member of theirs and a user of another tenant.
func withTenant(
    _ engine: TestEngine, _ prefix: String, configure: @Sendable (inout CairnConfiguration) -> Void = { _ in },
    _ body: @Sendable (_ client: any TestClientProtocol, _ owner: Member, _ member: Member, _ stranger: Member) async throws -> Void
) async throws {
    try await withTestApp(engine, configure: configure) { client, _ in
        let (owner, members, stranger) = try await makeTenant(client, prefix: prefix, members: 1)
        try await body(client, owner, members[0], stranger)
    }
}

/// Publishes `count` messages to `member` alone, one after another, titled `title` followed by
/// their number (1 to `count`).
func publishMessages(_ count: Int, titled title: String, to member: Member, on notifier: Notifier) async throws {
    for n in 1...count {
        try await notifier.publish(NotificationDraft(type: "message", title: "\(title)\(n)"), to: [member.userId], tenantId: member.tenantId)
    }
}

/// Runs `body` with the router-level client and components of a node on a fresh `engine`
/// database, and a tenant owner signed up as `email`.
func withOwner(
    _ engine: TestEngine, _ email: String, configure: @Sendable (inout CairnConfiguration) -> Void = { _ in }, runServices: Bool = false,
    _ body: @Sendable (any TestClientProtocol, CairnComponents, Member) async throws -> Void
) async throws {
    try await withTestApp(engine, configure: configure, runServices: runServices) { client, components in
        try await body(client, components, try await signUp(client, email))
    }
}

/// Runs `body` on a live node (fast notification settings unless `configure` says otherwise)
/// reading `clock`, with a tenant owner signed up as `email`: the opening of the live notification tests.
func withLiveOwner(
    _ engine: TestEngine, _ email: String, clock: any CairnClock = SystemClock(),
    configure: @Sendable (inout CairnConfiguration) -> Void = fastNotifications, _ body: @Sendable (TestApp, Member) async throws -> Void
) async throws {
    try await withTestApp(engine, mode: .live, clock: clock, configure: configure) { app in
        try await body(app, try await signUp(app.client, email))
    }
}

/// Adds a member to the owner's tenant and logs them in.
func addMember(_ client: any TestClientProtocol, owner: Member, email: String, role: String = "member") async throws -> Member {
    let (user, tokens) = try await client.addUser(email: email, role: role, token: owner.token)
    return Member(token: tokens.accessToken, userId: user.id, tenantId: owner.tenantId)
}

/// Publishes 600 notifications of 12 KiB to `owner`, far more than the kernel's and NIO's
/// buffers hold for a client whose window stays closed (and more than the 500 a socket may
/// have unacknowledged), then waits until the hub has dropped that stalled `client`.
func overflowStalledClient(_ notifier: Notifier, owner: Member, client: String) async throws {
    let pad = JSONValue.object(["pad": .string(String(repeating: "x", count: 12 * 1024))])
    for n in 1...600 {
        try await notifier.publish(
            NotificationDraft(type: "message", title: "big \(n)", data: pad), to: [owner.userId], tenantId: owner.tenantId)
    }
    try await notifier.hub.waitForConnections("the stalled \(client) dropped", timeout: .seconds(60)) { $0 == 0 }
}

/// A `curl -N` reading `/notifications/stream` as it arrives (see `EventStreamReader`).
final class SSEReader: Sendable {
    private let reader: EventStreamReader

    /// With `tokenInQuery`, the token goes in `?access_token=` (appended to `query`) instead
    /// of the `Authorization` header, as a browser's `EventSource` sends it.
    init(port: Int, token: String, lastEventId: Int64? = nil, query: String = "", tokenInQuery: Bool = false) async throws {
        var headers: [String] = []
        var query = query
        if tokenInQuery {
            query += (query.isEmpty ? "?" : "&") + "access_token=\(token)"
        } else {
            headers.append("Authorization: Bearer \(token)")
        }
        if let lastEventId { headers.append("Last-Event-ID: \(lastEventId)") }
        reader = try await EventStreamReader(url: "http://127.0.0.1:\(port)/notifications/stream\(query)", headers: headers)
    }

    /// Everything received so far.
    var text: String { reader.text }
    /// True once the server ended the stream.
    var ended: Bool { reader.ended }
    /// The `notification` events received so far: (seq, JSON object).
    var events: [(seq: Int64, data: [String: Any])] { reader.current.notifications }

    /// Returns once `predicate` holds for what arrived, re-checked as bytes arrive.
    /// - Throws: `WaitTimeout` after `timeout`.
    @discardableResult
    func wait(_ what: String, timeout: Duration = .seconds(30), until predicate: @escaping @Sendable (EventStreamReader.Received) -> Bool)
        async throws -> EventStreamReader.Received
    {
        try await reader.wait(what, timeout: timeout, until: predicate)
    }

    /// Returns once the stream opened (its first bytes, the `retry:` line, arrived).
    func waitUntilOpen() async throws {
        try await wait("the stream opening") { $0.text.hasPrefix("retry:") }
    }

    func stop() { reader.stop() }
}

extension EventStreamReader.Received {
    /// The `notification` events: (seq, JSON object).
    var notifications: [(seq: Int64, data: [String: Any])] {
        events.compactMap { event in
            guard event.event == "notification", let seq = event.id.flatMap({ Int64($0) }), let object = event.object else { return nil }
            return (seq, object)
        }
    }

    /// The seqs of the `notification` events.
    var seqs: [Int64] { notifications.map(\.seq) }
}

/// A raw TCP client over loopback with a small receive buffer, for clients that stop reading:
/// `Foundation`/NIO clients read on their own, so a stalled reader has to be a plain socket.
/// Blocking calls run on a thread of their own (as `readChunks` reads); reads time out after
/// 10 s so a test never hangs on a connection the server failed to drop.
final class RawClient: Sendable {
    let fd: Int32

    /// Connects to 127.0.0.1:`port` with `SO_RCVBUF` set first, so the advertised window stays small.
    init(port: Int, receiveBuffer: Int32 = 4096) throws {
        fd = try loopbackSocket(port: port) { fd in
            var size = receiveBuffer
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
            var timeout = timeval(tv_sec: 10, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        }
    }

    deinit { Glibc.close(fd) }

    /// Sends all of `bytes`.
    func send(_ bytes: [UInt8]) async { await sendAll(bytes, on: fd) }

    /// Reads until `done` holds for what was read, the peer ends the connection, or a read
    /// times out; returns the bytes and whether the connection ended (EOF or reset).
    func read(until done: @escaping @Sendable ([UInt8]) -> Bool = { _ in false }) async -> (bytes: [UInt8], ended: Bool) {
        await offThePool { [fd] in
            var received: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 65536)
            while !done(received) {
                let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                if count == 0 { return (received, true) }
                if count < 0 { return (received, errno == ECONNRESET) }
                received += chunk[0..<count]
            }
            return (received, false)
        }
    }

    /// A masked client text frame (RFC 6455 §5.2, §5.3), payload under 126 bytes.
    static func textFrame(_ text: String) -> [UInt8] {
        let payload = Array(text.utf8)
        precondition(payload.count < 126)
        let mask: [UInt8] = [0x12, 0x34, 0x56, 0x78]
        return [0x81, 0x80 | UInt8(payload.count)] + mask + payload.enumerated().map { $0.element ^ mask[$0.offset % 4] }
    }
}
