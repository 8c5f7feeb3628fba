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

/// A real node (HTTP + WebSocket upgrade, services running) on a loopback port.
func withNode<R: Sendable>(
    configuration: CairnConfiguration, logger: Logger = testLogger, observers: [any PublishObserver] = [],
    _ body: @Sendable (any TestClientProtocol, CairnComponents, Int) async throws -> R
) async throws -> R {
    let components = try await buildComponents(configuration: configuration, logger: logger, observers: observers)
    let app = makeApplication(components: components)
    return try await app.test(.live) { client in
        try await body(client, components, client.port!)
    }
}

/// A node on a fresh database of `engine`.
func withNode<R: Sendable>(
    _ engine: TestEngine, configure: @Sendable (inout CairnConfiguration) -> Void = fastNotifications, observers: [any PublishObserver] = [],
    _ body: @Sendable (any TestClientProtocol, CairnComponents, Int) async throws -> R
) async throws -> R {
    var database = try await TestDatabase.make(engine)
    configure(&database.configuration)
    return try await withNode(configuration: database.configuration, observers: observers, body)
}

/// A registered tenant owner: token and user id.
struct Member: Sendable {
    var token: String
    var userId: String
    var tenantId: String
}

func signUp(_ client: any TestClientProtocol, _ email: String) async throws -> Member {
    let (user, tokens) = try await client.registerAndLogin(email: email)
    return Member(
        token: try #require(tokens["accessToken"] as? String), userId: try #require(user["id"] as? String),
        tenantId: try #require(user["tenantId"] as? String))
}

/// Adds a member to the owner's tenant and logs them in.
func addMember(_ client: any TestClientProtocol, owner: Member, email: String, role: String = "member") async throws -> Member {
    let created = try await client.json(
        .post, "/users", ["email": email, "name": "Member", "role": role, "password": "correct horse battery"], token: owner.token)
    try #require(created.status == .created, "create user: \(created.status) \(created.text)")
    let tokens = try await client.login(email: email, password: "correct horse battery")
    return Member(
        token: try #require(tokens["accessToken"] as? String), userId: try #require(created.object["id"] as? String), tenantId: owner.tenantId)
}

/// Reads a pipe on a thread of its own (not the 2-thread concurrency pool, which blocking reads
/// would starve): `received` gets each chunk, then nil at end of file.
func readLines(_ handle: FileHandle, _ received: @escaping @Sendable (Data?) -> Void) {
    let thread = Thread {
        while true {
            let data = handle.availableData
            if data.isEmpty {
                received(nil)
                return
            }
            received(data)
        }
    }
    thread.start()
}

/// A `curl -N` reading a Server-Sent Events stream into memory as it arrives.
final class SSEReader: Sendable {
    private final class Received: Sendable {
        let data = Mutex(Data())
        let done = Mutex(false)
    }
    private let process: Process
    private let received = Received()

    /// With `tokenInQuery`, the token goes in `?access_token=` (appended to `query`) instead
    /// of the `Authorization` header, as a browser's `EventSource` sends it.
    init(port: Int, token: String, lastEventId: Int64? = nil, query: String = "", tokenInQuery: Bool = false) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
        var arguments = ["-sN"]
        var query = query
        if tokenInQuery {
            query += (query.isEmpty ? "?" : "&") + "access_token=\(token)"
        } else {
            arguments += ["-H", "Authorization: Bearer \(token)"]
        }
        if let lastEventId { arguments += ["-H", "Last-Event-ID: \(lastEventId)"] }
        arguments.append("http://127.0.0.1:\(port)/notifications/stream\(query)")
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        self.process = process
        try process.run()
        readLines(pipe.fileHandleForReading) { [received] data in
            if let data { received.data.withLock { $0.append(data) } } else { received.done.withLock { $0 = true } }
        }
    }

    /// Everything received so far.
    var text: String { received.data.withLock { String(decoding: $0, as: UTF8.self) } }
    /// True once the server ended the stream.
    var ended: Bool { received.done.withLock { $0 } }

    /// The `notification` events received so far: (seq, JSON object).
    var events: [(seq: Int64, data: [String: Any])] {
        text.components(separatedBy: "\n\n").compactMap { block in
            var id: Int64?
            var event = ""
            var data = ""
            for line in block.split(separator: "\n") {
                if line.hasPrefix("id: ") { id = Int64(line.dropFirst(4)) }
                if line.hasPrefix("event: ") { event = String(line.dropFirst(7)) }
                if line.hasPrefix("data: ") { data += line.dropFirst(6) }
            }
            guard let id, event == "notification", let object = try? JSONSerialization.jsonObject(with: Data(data.utf8)) as? [String: Any]
            else { return nil }
            return (id, object)
        }
    }

    /// SIGKILL: a child inherits the test process's signal mask, in which ServiceLifecycle
    /// blocks SIGTERM, so `terminate()` could leave it running.
    func stop() {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }
}

/// Keeps every log line of a logger (message and metadata, as text), at every level.
struct CapturingLogHandler: LogHandler {
    final class Lines: Sendable {
        let lines = Mutex<[String]>([])
        var text: String { lines.withLock { $0.joined(separator: "\n") } }
    }

    let captured: Lines
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let all = metadata.merging(event.metadata ?? [:], uniquingKeysWith: { $1 })
        let line = "\(event.level) \(event.message) \(all.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "))"
        captured.lines.withLock { $0.append(line) }
    }
}

/// A raw TCP client over loopback with a small receive buffer, for clients that stop reading:
/// `Foundation`/NIO clients read on their own, so a stalled reader has to be a plain socket.
/// Blocking calls run on a thread of their own (see ``readLines(_:_:)``); reads time out after
/// 10 s so a test never hangs on a connection the server failed to drop.
final class RawClient: Sendable {
    let fd: Int32

    /// Connects to 127.0.0.1:`port` with `SO_RCVBUF` set first, so the advertised window stays small.
    init(port: Int, receiveBuffer: Int32 = 4096) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(.EMFILE) }
        var size = receiveBuffer
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            Glibc.close(fd)
            throw POSIXError(.ECONNREFUSED)
        }
    }

    deinit { Glibc.close(fd) }

    /// Runs blocking socket calls off the concurrency pool.
    private func blocking<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { continuation in
            Thread { continuation.resume(returning: body()) }.start()
        }
    }

    /// Sends all of `bytes`.
    func send(_ bytes: [UInt8]) async {
        await blocking { [fd] in
            var offset = 0
            while offset < bytes.count {
                let sent = bytes[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                if sent <= 0 { return }
                offset += sent
            }
        }
    }

    /// Reads until `done` holds for what was read, the peer ends the connection, or a read
    /// times out; returns the bytes and whether the connection ended (EOF or reset).
    func read(until done: @escaping @Sendable ([UInt8]) -> Bool = { _ in false }) async -> (bytes: [UInt8], ended: Bool) {
        await blocking { [fd] in
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

extension [UInt8] {
    /// Whether `text` occurs in these bytes.
    func containsText(_ text: String) -> Bool {
        let needle = Array(text.utf8)
        guard needle.count <= count else { return false }
        return (0...(count - needle.count)).contains { self[$0..<($0 + needle.count)].elementsEqual(needle) }
    }
}
