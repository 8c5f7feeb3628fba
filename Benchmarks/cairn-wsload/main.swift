// cairn-wsload: the notification benchmark's WebSocket load client (Benchmarks/notifications).
//
// One process, one event-loop thread, no task per connection: it holds N authenticated and
// subscribed `/ws` connections, acknowledges every notification, checks every seq (lost and
// duplicated are counted per connection, and each connection's last seq is compared with the
// highest seq any connection of its user saw) and records publish -> receive latency from the
// bench's own payload (`data.t`, epoch seconds; `data.p` the phase, `data.r` the round).
//
// Usage: cairn-wsload PORT TOKENS_FILE   (TOKENS_FILE: one `userIndex token [port]` line per
// connection; a line's port, when given, is the node that connection holds, PORT otherwise)
// stdout: `ready N` once every connection is ready; then on each `report` line read from stdin,
// one line of JSON with the counts, latencies and this process's CPU seconds, overall and per
// node (`nodes`, keyed by port); `quit` exits.
// `publish SECONDS CONNECTIONS TOKEN USER_IDS_FILE` (one user id a line, in userIndex order)
// posts `{"userIds":[one random user]}` notifications to PORT for SECONDS over CONNECTIONS keep-alive
// HTTP/1.1 connections on the same event loop (the Python publishers' GIL capped the stored
// rate), then answers one line of JSON: stored (202s), other statuses, the deliveries expected
// (the recipient's sockets), the elapsed seconds.
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket

/// Everything the connections record; touched only on the one event loop.
final class Stats: @unchecked Sendable {
    // @unchecked: confined to the single event loop thread (the main thread reads it through
    // `eventLoop.submit`).
    var latencies: [String: [Double]] = ["b": [], "t": []]
    var rounds: [Int: [Double]] = [:]
    var lost = 0
    var duplicated = 0
    /// The same, per node (keyed by port).
    var nodes: [Int: Node] = [:]
    var ready = 0
    var readyAnnounced = false
    var closes: [Int: Int] = [:]
    var reconnects = 0
    var connections: [Connection] = []
    var total = 0
    var pending: [Connection] = []
    var inHandshake = 0
}

/// What the connections to one node recorded.
struct Node {
    var latencies: [String: [Double]] = ["b": [], "t": []]
    var lost = 0
    var duplicated = 0
}

/// One connection's seq tracking, kept across reconnects.
final class Connection: @unchecked Sendable {
    // @unchecked: event-loop confined, like ``Stats``.
    let user: Int
    let token: String
    /// The node (its port) this connection holds.
    let port: Int
    var last: Int64 = -1
    var isReady = false
    var channel: (any Channel)?

    init(user: Int, token: String, port: Int) {
        self.user = user
        self.token = token
        self.port = port
    }
}

/// The byte patterns the client looks for, made once (they were made per frame and per
/// candidate position, which cost the client most of its CPU).
enum Pattern {
    static let seq = Array(#""seq":"#.utf8)
    static let t = Array(#""t":"#.utf8)
    static let r = Array(#""r":"#.utf8)
    static let ready = Array(#"{"type":"ready""#.utf8)
    static let notification = Array(#"{"type":"notification""#.utf8)
    static let broadcast = Array(#""p":"b""#.utf8)
}

/// Where `pattern` occurs in `view` at or after `start` (nil: nowhere).
func find(_ pattern: [UInt8], in view: [UInt8], from start: Int = 0) -> Int? {
    var index = start
    while index + pattern.count <= view.count {
        if view[index] == pattern[0] {
            var offset = 1
            while offset < pattern.count, view[index + offset] == pattern[offset] { offset += 1 }
            if offset == pattern.count { return index }
        }
        index += 1
    }
    return nil
}

/// Finds `pattern` (`"key":`) in `view` from `start` and parses the number after it (nil: absent).
func number(after pattern: [UInt8], in view: [UInt8], from start: Int = 0) -> (Double, Int)? {
    guard let index = find(pattern, in: view, from: start) else { return nil }
    let begin = index + pattern.count
    var end = begin
    while end < view.count, let scalar = Optional(view[end]),
        (scalar >= 48 && scalar <= 57) || scalar == 46 || scalar == 45 || scalar == 101 || scalar == 43
    {
        end += 1
    }
    guard let value = Double(String(decoding: view[begin..<end], as: UTF8.self)) else { return nil }
    return (value, end)
}

/// The WebSocket handler of one connection: parses, checks and acknowledges on the event loop.
final class SocketHandler: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    let connection: Connection
    let stats: Stats
    let client: LoadClient
    var text = ByteBuffer()
    var toAck: Int64?

    init(connection: Connection, stats: Stats, client: LoadClient) {
        self.connection = connection
        self.stats = stats
        self.client = client
    }

    func handlerAdded(context: ChannelHandlerContext) {
        // Resume after the last seq seen when this is a reconnect.
        let message = connection.last >= 0 ? #"{"type":"subscribe","since":\#(connection.last)}"# : #"{"type":"subscribe"}"#
        send(message, context: context)
    }

    func send(_ message: String, context: ChannelHandlerContext, opcode: WebSocketOpcode = .text) {
        var buffer = context.channel.allocator.buffer(capacity: message.utf8.count)
        buffer.writeString(message)
        let frame = WebSocketFrame(fin: true, opcode: opcode, maskKey: .random(), data: buffer)
        context.write(wrapOutboundOut(frame), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.opcode {
        case .text, .continuation:
            var data = frame.unmaskedData
            text.writeBuffer(&data)
            if frame.fin {
                handle(Array(text.readableBytesView), context: context)
                text.clear()
            }
        case .ping:
            let frame = WebSocketFrame(fin: true, opcode: .pong, maskKey: .random(), data: frame.unmaskedData)
            context.write(wrapOutboundOut(frame), promise: nil)
        case .connectionClose:
            var data = frame.unmaskedData
            let code = data.readInteger(as: UInt16.self).map(Int.init) ?? 1005
            stats.closes[code, default: 0] += 1
            context.close(promise: nil)
        default:
            break
        }
    }

    func handle(_ bytes: [UInt8], context: ChannelHandlerContext) {
        let now = Date().timeIntervalSince1970
        if bytes.starts(with: Pattern.ready) {
            guard let (seq, _) = number(after: Pattern.seq, in: bytes) else { return }
            if connection.last < 0 { connection.last = Int64(seq) }
            if !connection.isReady {
                connection.isReady = true
                stats.ready += 1
                client.handshakeDone()
            }
            return
        }
        guard bytes.starts(with: Pattern.notification), let (seqValue, at) = number(after: Pattern.seq, in: bytes) else { return }
        let seq = Int64(seqValue)
        if seq <= connection.last {
            stats.duplicated += 1
            stats.nodes[connection.port, default: Node()].duplicated += 1
        } else {
            if seq > connection.last + 1 {
                stats.lost += Int(seq - connection.last - 1)
                stats.nodes[connection.port, default: Node()].lost += Int(seq - connection.last - 1)
            }
            connection.last = seq
            if let (sent, _) = number(after: Pattern.t, in: bytes, from: at) {
                let latency = (now - sent) * 1000
                let isBroadcast = find(Pattern.broadcast, in: bytes, from: at) != nil
                stats.latencies[isBroadcast ? "b" : "t", default: []].append(latency)
                stats.nodes[connection.port, default: Node()].latencies[isBroadcast ? "b" : "t", default: []].append(latency)
                if isBroadcast, let (round, _) = number(after: Pattern.r, in: bytes, from: at) {
                    stats.rounds[Int(round), default: []].append(latency)
                }
            }
        }
        toAck = max(toAck ?? seq, seq)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        // One cumulative ack per read burst.
        if let seq = toAck {
            toAck = nil
            send(#"{"type":"ack","seq":\#(seq)}"#, context: context)
        }
        context.flush()
    }

    func channelInactive(context: ChannelHandlerContext) {
        client.lost(connection)
    }
}

/// Opens the connections, a bounded number of handshakes at a time, and reopens any that close.
final class LoadClient: @unchecked Sendable {
    // @unchecked: every method runs on `loop`.
    let loop: any EventLoop
    let port: Int
    let stats = Stats()
    let maxHandshakes = 64
    var stopping = false

    init(loop: any EventLoop, port: Int) {
        self.loop = loop
        self.port = port
    }

    func start(_ connections: [Connection]) {
        stats.connections = connections
        stats.total = connections.count
        stats.pending = connections.reversed()
        pump()
        // The server closes a socket silent for 60 s (4408): ping each one every 20 s.
        loop.scheduleRepeatedTask(initialDelay: .seconds(20), delay: .seconds(20)) { _ in
            for connection in self.stats.connections where connection.isReady {
                var buffer = ByteBuffer()
                buffer.writeString(#"{"type":"ping"}"#)
                connection.channel?.writeAndFlush(WebSocketFrame(fin: true, opcode: .text, maskKey: .random(), data: buffer), promise: nil)
            }
        }
    }

    func pump() {
        while stats.inHandshake < maxHandshakes, let next = stats.pending.popLast() {
            stats.inHandshake += 1
            open(next)
        }
        if stats.ready == stats.total, !stats.readyAnnounced {
            stats.readyAnnounced = true
            output("ready \(stats.ready)")
        }
    }

    func handshakeDone() {
        stats.inHandshake -= 1
        pump()
    }

    /// `connection`'s channel closed (or never opened): it is opened again shortly.
    func lost(_ connection: Connection) {
        connection.channel = nil
        guard !stopping else { return }
        if connection.isReady {
            stats.ready -= 1
            stats.reconnects += 1
        } else {
            stats.inHandshake -= 1
        }
        connection.isReady = false
        loop.scheduleTask(in: .milliseconds(200)) {
            self.stats.pending.append(connection)
            self.pump()
        }
    }

    func open(_ connection: Connection) {
        let port = connection.port
        let stats = stats
        ClientBootstrap(group: loop)
            .channelOption(.socketOption(.so_reuseaddr), value: 1)
            .channelInitializer { channel in
                let upgrader = NIOWebSocketClientUpgrader(maxFrameSize: 1 << 20, automaticErrorHandling: true) { channel, _ in
                    // Upgraded: the requester leaves (its reads are HTTP), the socket's handler comes.
                    channel.pipeline.removeHandler(name: "requester").flatMapThrowing {
                        try channel.pipeline.syncOperations.addHandler(SocketHandler(connection: connection, stats: stats, client: self))
                    }
                }
                return channel.pipeline.addHTTPClientHandlers(
                    leftOverBytesStrategy: .forwardBytes, withClientUpgrade: (upgraders: [upgrader], completionHandler: { _ in })
                )
                .flatMapThrowing {
                    try channel.pipeline.syncOperations.addHandler(
                        UpgradeRequester(port: port, token: connection.token, connection: connection, client: self), name: "requester")
                }
            }
            .connect(host: "127.0.0.1", port: port)
            .whenComplete { result in
                switch result {
                case .success(let channel):
                    connection.channel = channel
                case .failure:
                    self.lost(connection)
                }
            }
    }

    /// The report: counts, latencies, per-round spread, seq consistency per user, CPU.
    func report() -> String {
        var highest: [Int: Int64] = [:]
        for connection in stats.connections { highest[connection.user] = max(highest[connection.user] ?? -1, connection.last) }
        var behind = 0
        var behindOn: [Int: Int] = [:]
        for connection in stats.connections {
            let gap = Int((highest[connection.user] ?? 0) - connection.last)
            behind += gap
            behindOn[connection.port, default: 0] += gap
        }
        var nodes: [String: Any] = [:]
        for (port, node) in stats.nodes {
            nodes[String(port)] = ["latencies": node.latencies, "lost": node.lost, "duplicated": node.duplicated, "behind": behindOn[port] ?? 0]
        }
        for (port, gap) in behindOn where stats.nodes[port] == nil {
            nodes[String(port)] = ["latencies": ["b": [Double](), "t": [Double]()], "lost": 0, "duplicated": 0, "behind": gap]
        }
        var usage = rusage()
        getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
        let cpu = Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
        let object: [String: Any] = [
            "ready": stats.ready, "lost": stats.lost, "duplicated": stats.duplicated, "behind": behind,
            "closes": Dictionary(uniqueKeysWithValues: stats.closes.map { (String($0.key), $0.value) }), "reconnects": stats.reconnects,
            "latencies": stats.latencies, "rounds": Dictionary(uniqueKeysWithValues: stats.rounds.map { (String($0.key), $0.value) }),
            "cpuSeconds": cpu, "maxRssKiB": usage.ru_maxrss, "nodes": nodes,
        ]
        let data = (try? JSONSerialization.data(withJSONObject: object)) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }
}

/// Sends the upgrade request (authenticating with `Sec-WebSocket-Protocol: cairn.v1, bearer.<token>`).
/// Removed once upgraded; a connection that ends before that is retried.
final class UpgradeRequester: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny
    typealias OutboundOut = HTTPClientRequestPart
    let port: Int
    let token: String
    let connection: Connection
    let client: LoadClient

    init(port: Int, token: String, connection: Connection, client: LoadClient) {
        self.port = port
        self.token = token
        self.connection = connection
        self.client = client
    }

    func channelActive(context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: "127.0.0.1:\(port)")
        headers.add(name: "Sec-WebSocket-Protocol", value: "cairn.v1, bearer.\(token)")
        headers.add(name: "Content-Length", value: "0")
        let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: "/ws", headers: headers)
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // Only reached when the server refused the upgrade.
        context.close(promise: nil)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        client.lost(connection)
    }
}

/// The HTTP publishers of the `publish` command; event-loop confined.
final class Publishers: @unchecked Sendable {
    // @unchecked: every method runs on `loop`.
    let loop: any EventLoop
    let port: Int
    let token: String
    let userIds: [String]
    let socketsOf: [Int]
    let deadline: NIODeadline
    var stored = 0
    var expected = 0
    var statuses: [Int: Int] = [:]
    var running = 0
    let started = Date()
    let done: EventLoopPromise<String>

    init(loop: any EventLoop, port: Int, token: String, userIds: [String], socketsOf: [Int], seconds: Int) {
        self.loop = loop
        self.port = port
        self.token = token
        self.userIds = userIds
        self.socketsOf = socketsOf
        self.deadline = .now() + .seconds(Int64(seconds))
        self.done = loop.makePromise()
    }

    func start(connections: Int) {
        for _ in 0..<connections {
            running += 1
            ClientBootstrap(group: loop)
                .channelInitializer { channel in
                    channel.pipeline.addHTTPClientHandlers().flatMapThrowing {
                        try channel.pipeline.syncOperations.addHandler(PublishHandler(publishers: self))
                    }
                }
                .connect(host: "127.0.0.1", port: port)
                .whenFailure { _ in self.finished() }
        }
    }

    /// One request's head and body for a random user; the user's index rides along.
    func nextRequest() -> (HTTPRequestHead, ByteBuffer, Int)? {
        guard NIODeadline.now() < deadline else { return nil }
        let target = Int.random(in: 0..<userIds.count)
        let body = #"{"userIds":["\#(userIds[target])"],"type":"message","title":"tp","data":{"t":\#(Date().timeIntervalSince1970),"p":"t"}}"#
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: "127.0.0.1:\(port)")
        headers.add(name: "Content-Type", value: "application/json")
        headers.add(name: "Authorization", value: "Bearer \(token)")
        headers.add(name: "Content-Length", value: String(body.utf8.count))
        return (HTTPRequestHead(version: .http1_1, method: .POST, uri: "/notifications", headers: headers), ByteBuffer(string: body), target)
    }

    func answered(status: Int, target: Int) {
        statuses[status, default: 0] += 1
        if status == 202 {
            stored += 1
            expected += socketsOf[target]
        }
    }

    func finished() {
        running -= 1
        guard running == 0 else { return }
        let object: [String: Any] = [
            "stored": stored, "expected": expected, "elapsed": Date().timeIntervalSince(started),
            "statuses": Dictionary(uniqueKeysWithValues: statuses.map { (String($0.key), $0.value) }),
        ]
        let data = (try? JSONSerialization.data(withJSONObject: object)) ?? Data("{}".utf8)
        done.succeed(String(decoding: data, as: UTF8.self))
    }
}

/// One keep-alive publishing connection: the next request goes when the last answer ended.
final class PublishHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart
    let publishers: Publishers
    var target = 0
    var status = 0
    var isDone = false

    init(publishers: Publishers) {
        self.publishers = publishers
    }

    func channelActive(context: ChannelHandlerContext) {
        sendNext(context: context)
        context.fireChannelActive()
    }

    func sendNext(context: ChannelHandlerContext) {
        guard let (head, body, target) = publishers.nextRequest() else {
            finish()
            context.close(promise: nil)
            return
        }
        self.target = target
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): status = Int(head.status.code)
        case .body: break
        case .end:
            publishers.answered(status: status, target: target)
            sendNext(context: context)
        }
    }

    func finish() {
        guard !isDone else { return }
        isDone = true
        publishers.finished()
    }

    func channelInactive(context: ChannelHandlerContext) {
        finish()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

/// Writes one line to stdout at once (the bench reads it line by line).
func output(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}

let arguments = CommandLine.arguments
guard arguments.count == 3, let port = Int(arguments[1]), let tokens = try? String(contentsOfFile: arguments[2], encoding: .utf8) else {
    FileHandle.standardError.write(Data("usage: cairn-wsload PORT TOKENS_FILE\n".utf8))
    exit(2)
}
let connections = tokens.split(separator: "\n").compactMap { line -> Connection? in
    let parts = line.split(separator: " ")
    guard parts.count == 2 || parts.count == 3, let user = Int(parts[0]) else { return nil }
    return Connection(user: user, token: String(parts[1]), port: parts.count == 3 ? Int(parts[2]) ?? port : port)
}
let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
let loop = group.next()
let client = LoadClient(loop: loop, port: port)
loop.execute { client.start(connections) }
while let line = readLine() {
    switch line.trimmingCharacters(in: .whitespaces) {
    case "report":
        let report = try loop.submit { client.report() }.wait()
        output(report)
    case let command where command.hasPrefix("publish "):
        let parts = command.split(separator: " ").map(String.init)
        guard parts.count == 5, let seconds = Int(parts[1]), let count = Int(parts[2]),
            let ids = try? String(contentsOfFile: parts[4], encoding: .utf8)
        else {
            output("{}")
            continue
        }
        let userIds = ids.split(separator: "\n").map(String.init)
        let report = try loop.submit { () -> EventLoopFuture<String> in
            var socketsOf = [Int](repeating: 0, count: userIds.count)
            for connection in client.stats.connections where connection.user < userIds.count { socketsOf[connection.user] += 1 }
            let publishers = Publishers(loop: loop, port: port, token: parts[3], userIds: userIds, socketsOf: socketsOf, seconds: seconds)
            publishers.start(connections: count)
            return publishers.done.futureResult
        }.wait().wait()
        output(report)
    case "quit":
        try loop.submit {
            client.stopping = true
            for connection in client.stats.connections { connection.channel?.close(promise: nil) }
        }.wait()
        exit(0)
    default:
        continue
    }
}
