import CairnAccounts
import CairnFormats
package import CairnHTTP
import CairnStorage
import Foundation
import HTTPTypes
package import Hummingbird
import HummingbirdWebSocket
import Logging
import Metrics
import NIOCore
import NIOWebSocket
import ServiceLifecycle

/// A client message of the `/ws` protocol, parsed.
package enum ClientMessage: Sendable {
    case auth(token: String)
    case subscribe(since: Int64?)
    case ack(seq: Int64)
    case ping
    /// Any other text: not a JSON object with a known `type`, or a `subscribe`, `ack` or `ping`
    /// with members it does not have. Closed with 1008 once authenticated, and with 4401 before,
    /// as a well-formed message is: every message but `auth` needs an authenticated socket,
    /// whatever its members.
    case invalid(String)
    /// An `auth` message with members it does not have (no token, another member, one
    /// repeated), or a binary frame: closed with 1008, authenticated or not (the client did try to authenticate, and
    /// the reason says what was wrong).
    case violation(String)
    /// The client's side of the socket ended.
    case disconnected

    /// A member value of a client message, as far as the protocol looks at it.
    package enum Member: Equatable {
        case string(String)
        case integer(Int64)
        case null
        /// Any other JSON value (a fraction, a bool, an array, an object).
        case other
    }

    package static func parse(_ text: String) -> ClientMessage {
        guard text.utf8.count <= 8192 else { return .invalid("messages are JSON objects with a \"type\"") }
        // Acks arrive once per delivered notification: Foundation's JSONDecoder cost more than
        // the rest of the socket's work, so the protocol's flat messages take a short scanner.
        if let members = flatObject(text) { return message(members) }
        switch fullParse(text) {
        case .members(let members): return message(members)
        case .refused(let reason, let repeated?) where repeated != "type" && isAuth(text):
            // Still an attempt to authenticate: told what was wrong, as any malformed `auth` is.
            // (A repeated `type` leaves the type unknown.)
            return .violation(reason)
        case .refused(let reason, _): return .invalid(reason)
        }
    }

    /// Whether `text`, refused for a repeated member other than `type`, is an `auth` all the
    /// same. Read with Foundation's parser, which takes a repeated member's last value; only
    /// on this rare path.
    static func isAuth(_ text: String) -> Bool {
        let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]
        return object?["type"] as? String == "auth"
    }

    /// What the full parser makes of a message: its members, or the close reason (with the
    /// path of the member whose name is repeated, when that is why).
    package enum FullParse: Equatable {
        case members([String: Member])
        case refused(String, repeated: String? = nil)
    }

    /// The members of any JSON object, through the full parser. Refused, with a reason naming
    /// the member: one whose name is repeated (RFC 8259 §4, as every JSON input refuses).
    /// Refused as not a message: text that is not a JSON object. A number is an integer when
    /// its value is one (`7`, `7.0`, `7e0`); a non-zero number too small for a `Double`
    /// (`1e-400`) is not, where it would read as 0.
    package static func fullParse(_ text: String) -> FullParse {
        let object: JSONObject
        switch Result(catching: { () throws(JSONTreeError) in try JSONNode(strictText: text) }) {
        case .success(.object(let members)): object = members
        case .failure(.duplicateKey(let path)): return .refused("member \"\(path)\" is repeated", repeated: path)
        default: return .refused("messages are JSON objects with a \"type\"")
        }
        var members: [String: Member] = [:]
        for index in object.keys.indices {
            members[object.keys[index]] =
                switch object.values[index] {
                case .string(let string): .string(string)
                case .null: .null
                case .number(_, let integer?, _): .integer(integer)
                default: .other
                }
        }
        return .members(members)
    }

    /// The members of any JSON object, through the full parser (nil when ``fullParse(_:)``
    /// refuses the text).
    package static func fullMembers(_ text: String) -> [String: Member]? {
        if case .members(let members) = fullParse(text) { return members }
        return nil
    }

    static func message(_ object: [String: Member]) -> ClientMessage {
        guard case .string(let type)? = object["type"] else { return .invalid("messages are JSON objects with a \"type\"") }
        func seq(_ key: String) -> Int64?? {
            switch object[key] {
            // Absent means "none"; an explicit null is refused like any other non-seq, so a
            // client that meant to resume (and serialised a missing value) is told, not
            // silently started at the present.
            case nil: return .some(nil)
            case .integer(let exact)?:
                guard exact >= 0 else { return nil }
                return .some(exact)
            default: return nil
            }
        }
        // Each type's members, `type` aside; any other member is refused, as unknown members of
        // HTTP bodies are (a misspelt `since` would otherwise replay nothing, silently).
        let member: String?
        switch type {
        case "auth": member = "token"
        case "subscribe": member = "since"
        case "ack": member = "seq"
        case "ping": member = nil
        default: return .invalid("unknown message type")
        }
        if let unknown = object.keys.filter({ $0 != "type" && $0 != member }).min() {
            let article = type.first.map { "aeiou".contains($0) } == true ? "an" : "a"
            let reason = "unknown member \"\(unknown)\" in \(article) \"\(type)\" message"
            return type == "auth" ? .violation(reason) : .invalid(reason)
        }
        switch type {
        case "auth":
            guard case .string(let token)? = object["token"], !token.isEmpty, token.utf8.count <= 4096 else {
                return .violation("auth needs a token")
            }
            return .auth(token: token)
        case "subscribe":
            guard let since = seq("since") else {
                return .invalid("since must be a sequence number (an integer, 0 or more); leave it out to start at the present")
            }
            return .subscribe(since: since)
        case "ack":
            // Seqs start at 1: an ack of 0 or less acknowledges nothing ever sent.
            guard let value = seq("seq"), let seq = value, seq >= 1 else { return .invalid("ack needs a seq (1 or more)") }
            return .ack(seq: seq)
        default:
            return .ping
        }
    }

    /// The members of a flat JSON object (RFC 8259) whose values are strings without escapes,
    /// integers of at most 15 digits (exact as the full parser's doubles) or null; nil for
    /// anything else, duplicate keys included, which the full parser then decides.
    package static func flatObject(_ text: String) -> [String: Member]? {
        var text = text
        return text.withUTF8 { bytes -> [String: Member]? in
            var index = 0
            func skipSpace() {
                while index < bytes.count, bytes[index] == 0x20 || bytes[index] == 0x0A || bytes[index] == 0x0D || bytes[index] == 0x09 { index += 1 }
            }
            func string() -> String? {
                guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else { return nil }
                index += 1
                let start = index
                while index < bytes.count {
                    let byte = bytes[index]
                    if byte == UInt8(ascii: "\"") {
                        index += 1
                        return String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<(index - 1)]), as: UTF8.self)
                    }
                    if byte == UInt8(ascii: "\\") || byte < 0x20 { return nil }
                    index += 1
                }
                return nil
            }
            func integer() -> Int64? {
                let start = index
                if index < bytes.count, bytes[index] == UInt8(ascii: "-") { index += 1 }
                let digits = index
                while index < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[index]) { index += 1 }
                let count = index - digits
                guard count >= 1, count <= 15, count == 1 || bytes[digits] != UInt8(ascii: "0") else { return nil }
                if index < bytes.count, [UInt8(ascii: "."), UInt8(ascii: "e"), UInt8(ascii: "E")].contains(bytes[index]) { return nil }
                var value: Int64 = 0
                for position in digits..<index { value = value * 10 + Int64(bytes[position] - UInt8(ascii: "0")) }
                return bytes[start] == UInt8(ascii: "-") ? -value : value
            }
            var members: [String: Member] = [:]
            skipSpace()
            guard index < bytes.count, bytes[index] == UInt8(ascii: "{") else { return nil }
            index += 1
            skipSpace()
            if index < bytes.count, bytes[index] == UInt8(ascii: "}") {
                index += 1
            } else {
                while true {
                    skipSpace()
                    guard let key = string(), members[key] == nil else { return nil }
                    skipSpace()
                    guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else { return nil }
                    index += 1
                    skipSpace()
                    guard index < bytes.count else { return nil }
                    switch bytes[index] {
                    case UInt8(ascii: "\""):
                        guard let value = string() else { return nil }
                        members[key] = .string(value)
                    case UInt8(ascii: "n"):
                        guard index + 4 <= bytes.count, bytes[index + 1] == UInt8(ascii: "u"), bytes[index + 2] == UInt8(ascii: "l"),
                            bytes[index + 3] == UInt8(ascii: "l")
                        else { return nil }
                        index += 4
                        members[key] = .null
                    default:
                        guard let value = integer() else { return nil }
                        members[key] = .integer(value)
                    }
                    skipSpace()
                    guard index < bytes.count else { return nil }
                    if bytes[index] == UInt8(ascii: ",") {
                        index += 1
                        continue
                    }
                    guard bytes[index] == UInt8(ascii: "}") else { return nil }
                    index += 1
                    break
                }
            }
            skipSpace()
            return index == bytes.count ? members : nil
        }
    }
}

/// `GET /ws`: notifications over WebSocket (RFC 6455), JSON text frames.
///
/// Protocol (version `cairn.v1`):
/// 1. Authenticate, either with `Sec-WebSocket-Protocol: cairn.v1, bearer.<access token>`
///    (the server answers `cairn.v1`) or with a first message `{"type":"auth","token":"…"}`
///    within 10 s. The server answers `{"type":"ready","userId":…,"seq":<latest seq>}`. A later
///    `auth` message with a fresh token of the same user extends the connection's life.
/// 2. `{"type":"subscribe","since":<seq>}` starts delivery: every stored notification after
///    `since` is replayed, then live ones follow, with no gap and no duplicate. Without
///    `since`, delivery starts at the present. A reconnecting client sends the last seq it
///    acknowledged.
/// 3. The server sends `{"type":"notification","seq":n,"notification":{…}}` in seq order.
///    The client answers `{"type":"ack","seq":n}` (cumulative: everything up to n). Anything
///    not acknowledged within 10 s is sent again while the socket is open; at most 500 are
///    in flight, the rest wait.
/// 4. `{"type":"ping"}` → `{"type":"pong"}`; the server also sends WebSocket pings every 30 s
///    once authenticated.
///
/// Messages are JSON objects (RFC 8259) with exactly the members above: a member of another
/// name, or one repeated, closes the socket with 1008 and a reason naming it (4401 before
/// `auth`, unless the message is an `auth`: its one `type` member says so). Seqs (`since`,
/// `seq`) are integers: a fraction, a number too small to read (`1e-400`) or `null` is refused
/// rather than read as another value. Every message but `auth` needs an authenticated socket.
///
/// Close codes: 4401 token missing, invalid, expired or revoked (refresh and reconnect), sent
/// within moments of the session's logout (or logout-all) on any node, with a reason;
/// 4408 no `auth` in time, or no client message for 60 s; 4401 also for any text message but
/// `auth` before `auth` (a `subscribe`, `ack` or `ping`, malformed or not, or any other text);
/// 1008 a malformed or unexpected message once authenticated, a malformed `auth`, a binary frame; 1013 (RFC 6455 §7.4.1 "Try Again Later") slow consumer: its live buffer filled, or
/// a frame could not be written for `writeTimeout` (10 s) because the client stopped reading;
/// the close frame is queued behind the unread data and the TCP connection is dropped 2 s later
/// whether or not it went out; reconnect and resume from the last ack. 4429 at `auth`: the
/// user already holds `CAIRN_NOTIFICATIONS_MAX_USER_CONNECTIONS` live connections (streams
/// and sockets) on this node. 1001 server shutdown.
/// Tokens are never logged.
package struct NotificationSocketController: Sendable {
    let center: Notifier

    /// The subprotocol name.
    package static let subprotocol = "cairn.v1"
    /// The socket's path: the transport offers WebSocket upgrades on it alone.
    package static let path = "/ws"

    /// Creates the controller.
    package init(center: Notifier) {
        self.center = center
    }

    /// The values offered in `Sec-WebSocket-Protocol`.
    static func offeredProtocols(_ request: Request) -> [String] {
        request.headers[values: .secWebSocketProtocol].flatMap { $0.split(separator: ",") }.map {
            $0.trimmingCharacters(in: .whitespaces)
        }
    }

    /// Adds `GET /ws` to the root router (the socket authenticates itself).
    package func addRoutes(to router: Router<CairnRequestContext>) {
        router.ws(RouterPath(Self.path), shouldUpgrade: shouldUpgrade, onUpgrade: onUpgrade)
    }

    /// Upgrades a WebSocket handshake, agreeing on `cairn.v1` when offered.
    /// - Throws: 426 `invalid_input` for a plain GET (no upgrade), instead of an empty 200.
    @Sendable func shouldUpgrade(_ request: Request, context: CairnRequestContext) async throws -> RouterShouldUpgrade {
        // A plain GET (no upgrade) gets a problem, not an empty 200.
        guard request.headers[.upgrade]?.lowercased().contains("websocket") == true else {
            throw AppError(
                .upgradeRequired, code: .invalidInput,
                detail: "GET /ws speaks WebSocket only (RFC 6455): send Connection: Upgrade and Upgrade: websocket.",
                errors: [FieldIssue(field: "Upgrade", issue: "must be websocket, with Connection: Upgrade")], headers: [.upgrade: "websocket"])
        }
        let offered = Self.offeredProtocols(request)
        var headers = HTTPFields()
        if offered.contains(Self.subprotocol) { headers[.secWebSocketProtocol] = Self.subprotocol }
        // Served from the channel pipeline where the server supports it (no task per socket);
        // Hummingbird's WebSocket layer runs `onUpgrade` otherwise (permessage-deflate).
        let (center, token) = (self.center, Self.headerToken(request))
        context.webSocketPipeline.set { channel in try PipelineSocket.install(on: channel, center: center, headerToken: token) }
        return .upgrade(headers)
    }

    /// The token of a `bearer.<token>` subprotocol, if offered.
    static func headerToken(_ request: Request) -> String? {
        offeredProtocols(request).first { $0.hasPrefix("bearer.") }.map { String($0.dropFirst(7)) }
    }

    /// Runs one connection's ``SocketSession``, with the token of `bearer.<token>` if offered.
    @Sendable func onUpgrade(
        _ inbound: WebSocketInboundStream, _ outbound: WebSocketOutboundWriter, context: WebSocketRouterContext<CairnRequestContext>
    ) async throws {
        let token = Self.headerToken(context.request)
        let session = SocketSession(center: center, outbound: WriterOutput(writer: outbound), channel: context.requestContext.channel)
        try await session.run(inbound: inbound, headerToken: token)
    }
}

/// Where a connection's loop writes its frames: Hummingbird's WebSocket writer, or the
/// channel itself when the socket is served from its pipeline.
protocol SocketOutput: Sendable {
    /// Writes one frame; waits while the peer is not reading.
    func write(_ frame: WebSocketFrame) async throws
    /// Starts the closing handshake with `code` and `reason`.
    func close(code: UInt16, reason: String) async throws
}

/// The output of a socket served by Hummingbird's WebSocket layer.
struct WriterOutput: SocketOutput {
    let writer: WebSocketOutboundWriter

    func write(_ frame: WebSocketFrame) async throws {
        try await writer.write(.custom(frame))
    }

    func close(code: UInt16, reason: String) async throws {
        try await writer.close(.init(codeNumber: Int(code)), reason: reason)
    }
}

/// One WebSocket connection's state machine; one task at a time makes its decisions.
struct SocketSession {
    let center: Notifier
    let outbound: any SocketOutput
    let channel: any Channel

    enum Closing: Error {
        case close(UInt16, String)
    }

    /// A notification sent and not yet acknowledged: its seq, and its message for a resend.
    struct InFlight {
        var seq: Int64
        var message: ByteBuffer
        var sentAt: ContinuousClock.Instant
    }

    /// Closes a socket whose client stopped reading: the session's task is parked in a write
    /// that only the channel's closing can fail. The 1013 close frame is queued behind the
    /// unread data (a client that resumes reading gets it); the connection is dropped once it
    /// is written, or after 2 s.
    static func closeSlowConsumer(_ channel: any Channel, reason: Mailbox.Stall, center: Notifier) {
        center.logger.warning(
            "closing a slow WebSocket consumer with 1013",
            metadata: ["reason": "\(reason == .writeTimeout ? "write timeout" : "buffer overflow during a write")"])
        Counter(label: "cairn_notifications_slow_consumers_total", dimensions: [("transport", "websocket")]).increment()
        var data = ByteBuffer()
        data.write(webSocketErrorCode: .init(codeNumber: 1013))
        data.writeString("slow consumer: reconnect and resume from your last ack")
        let written = channel.eventLoop.makePromise(of: Void.self)
        channel.writeAndFlush(WebSocketFrame(fin: true, opcode: .connectionClose, data: data), promise: written)
        let deadline = channel.eventLoop.scheduleTask(in: .seconds(2)) { channel.close(promise: nil) }
        written.futureResult.whenComplete { _ in
            deadline.cancel()
            channel.close(promise: nil)
        }
    }

    func send(_ text: String, _ mailbox: Mailbox) async throws {
        try await mailbox.writing { try await outbound.write(WebSocketFrame(fin: true, opcode: .text, data: ByteBuffer(string: text))) }
    }

    /// Sends a WebSocket ping (RFC 6455 §5.5.2); the client's pong needs no answer.
    func ping(_ mailbox: Mailbox) async throws {
        try await mailbox.writing { try await outbound.write(WebSocketFrame(fin: true, opcode: .ping, data: ByteBuffer())) }
    }

    /// How the hub writes notification messages to this socket while its loop sleeps: on the
    /// channel's event loop, behind the writes the loop queued there before (the outbound
    /// writer queues its writes on that loop too, and loops do not run on it). With
    /// permessage-deflate negotiated these frames still go uncompressed (RSV1 unset): RFC 7692
    /// lets a sender leave any message uncompressed, and one encoded buffer serves every socket.
    var directWriter: DirectWriter {
        let channel = self.channel
        return DirectWriter(
            isWritable: { channel.isWritable },
            write: { messages in
                channel.eventLoop.execute {
                    for message in messages { channel.write(WebSocketFrame(fin: true, opcode: .text, data: message), promise: nil) }
                    channel.flush()
                }
            })
    }

    /// Sends an encoded text message (a buffer shared with the user's other sockets is not copied).
    func send(message: ByteBuffer, _ mailbox: Mailbox) async throws {
        try await mailbox.writing { try await outbound.write(WebSocketFrame(fin: true, opcode: .text, data: message)) }
    }

    /// Serves a connection of Hummingbird's WebSocket layer (the transport with
    /// permessage-deflate; see ``PipelineSocket`` for the other) until either side ends it,
    /// then sends the close frame the loop chose (none when the client left or the write stalled).
    func run(inbound: WebSocketInboundStream, headerToken: String?) async throws {
        let mailbox = makeMailbox()
        var registered: (tenantId: String, userId: String)?
        defer {
            if let registered { center.hub.unregister(mailbox, tenantId: registered.tenantId, userId: registered.userId, transport: .websocket) }
        }
        let closeCode: (UInt16, String)
        do {
            closeCode = try await serve(inbound: inbound, mailbox: mailbox, headerToken: headerToken, registered: &registered)
        } catch {
            // A stalled write fails once the watchdog closes the channel: the socket is done.
            if error is CancellationError || mailbox.hasStalled { return }
            throw error
        }
        if closeCode.0 != 0 {
            try? await mailbox.writing { try await outbound.close(code: closeCode.0, reason: closeCode.1) }
        }
    }

    /// The connection's mailbox: a stalled write or an overflow during one closes the socket
    /// as a slow consumer.
    func makeMailbox() -> Mailbox {
        let (channel, center) = (self.channel, self.center)
        return Mailbox(capacity: center.settings.mailboxCapacity, writeTimeout: center.settings.writeTimeout, stallOnOverflow: true) {
            Self.closeSlowConsumer(channel, reason: $0, center: center)
        }
    }

    /// Runs the connection's ``loop(mailbox:headerToken:registered:)`` beside its frame reader
    /// and its authentication deadline; a graceful shutdown closes the mailbox.
    func serve(
        inbound: WebSocketInboundStream, mailbox: Mailbox, headerToken: String?, registered: inout (tenantId: String, userId: String)?
    ) async throws -> (UInt16, String) {
        // Acks of a subscribed socket are taken on the event loop, not by the reader task: one
        // task switch fewer per delivered notification. Added before the reader starts, so
        // every frame not taken there still reaches it in order.
        try? await channel.eventLoop.submit { [channel] in
            let pipeline = channel.pipeline.syncOperations
            let decoder = try pipeline.context(handlerType: ByteToMessageHandler<WebSocketFrameDecoder>.self)
            try pipeline.addHandler(AckTaker(mailbox: mailbox), position: .after(decoder.handler))
        }.get()
        // The authentication deadline ticks the mailbox (the hub ticks registered ones): a timer
        // on the channel's event loop, not a task sleeping beside every connection. The loop
        // counts its deadline from `started`, taken first, so the timer never fires before it
        // is due (a tick before it would leave the loop asleep for good).
        let started = ContinuousClock.now
        let authDeadline = channel.eventLoop.scheduleTask(in: TimeAmount(center.settings.authTimeout)) { mailbox.tick() }
        defer { authDeadline.cancel() }
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await Self.read(inbound, into: mailbox) }
            let result = try await withGracefulShutdownHandler {
                try await loop(mailbox: mailbox, headerToken: headerToken, started: started, registered: &registered)
            } onGracefulShutdown: {
                mailbox.close()
            }
            group.cancelAll()
            return result
        }
    }

    /// The reader: parses client frames into the mailbox, never blocking on the sender, and
    /// reports the end of the client's side.
    static func read(_ inbound: WebSocketInboundStream, into mailbox: Mailbox) async {
        do {
            for try await message in inbound.messages(maxSize: 64 * 1024) {
                switch message {
                case .text(let text): mailbox.push(client: ClientMessage.parse(text))
                case .binary: mailbox.push(client: .violation("binary frames are not part of the protocol"))
                }
            }
        } catch {}
        mailbox.push(client: .disconnected)
    }

    /// The connection's loop; returns the close code to send (0: the client left).
    func loop(
        mailbox: Mailbox, headerToken: String?, started: ContinuousClock.Instant = .now, registered: inout (tenantId: String, userId: String)?
    ) async throws -> (UInt16, String) {
        var state = SocketLoop(session: self, mailbox: mailbox, started: started)
        // Written back on return and on throw, so `run` unregisters whatever was registered.
        defer {
            registered = state.registered
            state.slot?.release()
        }
        if let headerToken, let close = try await state.authenticate(headerToken) { return close }
        let writer = directWriter
        while true {
            state.prepareToSleep(writer: writer)
            if let close = try await state.handle(await mailbox.next()) { return close }
        }
    }
}

/// On a socket of Hummingbird's WebSocket layer (permessage-deflate), takes a subscribed
/// socket's acks out of its inbound frames on the event loop, into its mailbox (see ``Mailbox/takeAcksAside(wake:)``), where they would have gone through the
/// reader task one frame at a time. Everything else passes on to the reader untouched: frames
/// before the subscription (an ack before it is an error the loop reports in order), other
/// messages, control frames, fragmented messages, frames with reserved bits, and non-ASCII text
/// (the reader's UTF-8 checks apply).
final class AckTaker: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = WebSocketFrame
    typealias InboundOut = WebSocketFrame

    let mailbox: Mailbox
    /// Inside a fragmented message, whose frames all go to the reader.
    private var inFragments = false

    init(mailbox: Mailbox) {
        self.mailbox = mailbox
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        if frame.opcode == .text || frame.opcode == .binary || frame.opcode == .continuation {
            let whole = frame.opcode == .text && frame.fin && !inFragments
            if frame.opcode != .continuation { inFragments = !frame.fin } else if frame.fin { inFragments = false }
            if whole, !frame.rsv1, !frame.rsv2, !frame.rsv3, frame.data.readableBytes <= 256, mailbox.setsAcksAside,
                case .ack(let seq) = Self.ack(frame.unmaskedData)
            {
                mailbox.push(client: .ack(seq: seq))
                return
            }
        }
        context.fireChannelRead(data)
    }

    /// The message in an ASCII text payload, or nil.
    static func ack(_ payload: ByteBuffer) -> ClientMessage? {
        guard payload.readableBytesView.allSatisfy({ $0 < 0x80 }) else { return nil }
        let message = ClientMessage.parse(String(buffer: payload))
        if case .ack = message { return message }
        return nil
    }
}

/// What one connection's loop knows between wake-ups, and how it answers each kind of wake-up;
/// a close code returned by a handler ends the connection.
struct SocketLoop {
    typealias Close = (UInt16, String)

    let session: SocketSession
    let mailbox: Mailbox
    /// When the connection started: its authentication deadline counts from here.
    let started: ContinuousClock.Instant
    var token: String?
    var identity: Identity?
    var expiresAt = Date.distantFuture
    var lastAuthCheck = ContinuousClock.now
    var lastClientMessage = ContinuousClock.now
    var lastResync = ContinuousClock.now
    var lastPing = ContinuousClock.now
    var subscribed = false
    var cursor: LiveCursor
    var inFlight: [SocketSession.InFlight] = []
    /// Stored rows after the cursor did not fit the in-flight window: acks refill from the store.
    var behind = false
    var registered: (tenantId: String, userId: String)?
    /// The user's live-connection slot on this node, taken at the first `auth` and given back
    /// when the loop ends.
    var slot: LiveSlot?

    init(session: SocketSession, mailbox: Mailbox, started: ContinuousClock.Instant = .now) {
        self.started = started
        self.session = session
        self.mailbox = mailbox
        self.cursor = LiveCursor(store: session.center.store, tenantId: "", userId: "")
    }

    var center: Notifier { session.center }
    var settings: NotificationSettings { session.center.settings }

    /// Tells the mailbox what may wake the loop before it sleeps: its next periodic check,
    /// acks (only when the in-flight window is full), and, when caught up, live rows the hub
    /// writes to the socket itself through `writer` while the loop sleeps.
    func prepareToSleep(writer: DirectWriter) {
        mailbox.nextCheck(at: nextCheck())
        guard subscribed else { return }
        mailbox.takeAcksAside(wake: behind)
        if !behind {
            mailbox.armDirect(after: cursor.last, room: settings.maxUnacked - inFlight.count, ackTimeout: settings.ackTimeout, writer: writer)
        }
    }

    /// Answers one batch of wake-ups, in the order that keeps delivery gap-free.
    mutating func handle(_ batch: MailboxBatch) async throws -> Close? {
        // What the hub wrote while this loop slept is in flight, before any ack is checked.
        for sent in batch.sent {
            inFlight.append(SocketSession.InFlight(seq: sent.seq, message: sent.message, sentAt: sent.sentAt))
            cursor.last = sent.seq
        }
        if batch.closed { return (1001, "server shutting down") }
        if batch.clientFlood { return (1008, "too many messages") }
        if batch.authCheck, token != nil {
            // The user's sessions changed on some node (a logout, a deletion): checked before
            // anything more is sent, and the socket closed now if this one's session ended.
            if let close = try await recheckSession(reason: "session ended (logged out or revoked); log in again") { return close }
            // Sending stopped for this check may have left stored rows unsent.
            if subscribed && behind { try await fill() }
        }
        if let acked = batch.acked {
            // Acks set aside are merged to their highest seq: above the cursor, one was never sent.
            if acked > cursor.last { return (1008, "ack of seq \(acked), which was never sent") }
            lastClientMessage = max(lastClientMessage, batch.ackedAt ?? .now)
            try await acknowledge(upTo: acked)
        }
        for message in batch.client {
            if let close = try await handle(message) { return close }
        }
        if batch.overflowed {
            if subscribed { return (1013, "slow consumer: reconnect and resume from your last ack") }
        } else if subscribed && batch.resync {
            try await fill()
        } else if subscribed && !batch.rows.isEmpty {
            try await deliver(live: batch.rows)
        }
        if batch.ticked { return try await tick(at: batch.tickedAt ?? .now) }
        return nil
    }

    /// Answers one client message.
    mutating func handle(_ message: ClientMessage) async throws -> Close? {
        lastClientMessage = .now
        switch message {
        case .disconnected:
            return (0, "")
        case .invalid(let reason):
            // Unauthenticated comes first, whatever the message's members (an ack with a null
            // seq was 1008 before auth, a well-formed one 4401).
            guard identity != nil else { return (4401, "authenticate first") }
            return (1008, reason)
        case .violation(let reason):
            return (1008, reason)
        case .auth(let candidate):
            return try await authenticate(candidate)
        case .ping:
            // Like every message but `auth`, a ping needs an authenticated socket.
            guard identity != nil else { return (4401, "authenticate first") }
            try await session.send(#"{"type":"pong"}"#, mailbox)
        case .subscribe(let since):
            guard identity != nil else { return (4401, "authenticate first") }
            guard !subscribed else { return (1008, "already subscribed") }
            subscribed = true
            if let since {
                // Past the newest seq, the cursor starts at the newest instead: as sent, every
                // later row would look already delivered (see NotificationEventStream.open).
                let newest = try await center.store.currentSeq(tenantId: cursor.tenantId, userId: cursor.userId)
                cursor.last = min(since, newest)
            }
            try await fill()
        case .ack(let seq):
            // As for a ping or a subscribe: unauthenticated is 4401, before any protocol order.
            guard identity != nil else { return (4401, "authenticate first") }
            guard subscribed else { return (1008, "subscribe first") }
            // A client acks what it received: a seq past the last one sent is a protocol error.
            guard seq <= cursor.last else { return (1008, "ack of seq \(seq), which was never sent") }
            try await acknowledge(upTo: seq)
        }
        return nil
    }

    /// Verifies a token (the first one registers the connection with the hub and answers
    /// `ready`; a later one must be the same user's and extends the connection's life).
    mutating func authenticate(_ candidate: String) async throws -> Close? {
        let verified: Identity
        do {
            verified = try await center.accounts.authenticate(bearer: candidate)
            expiresAt = Date(timeIntervalSince1970: try await center.accounts.tokens.verify(candidate).exp)
        } catch {
            return (4401, "token invalid, expired or revoked; refresh and reconnect")
        }
        if let identity, identity.userId != verified.userId || identity.tenantId != verified.tenantId {
            return (1008, "a connection cannot change user")
        }
        token = candidate
        lastAuthCheck = .now
        if identity == nil {
            guard let slot = center.hub.reserve(tenantId: verified.tenantId, userId: verified.userId) else {
                return (4429, "this user already holds \(center.hub.maxUserConnections) live connections on this node")
            }
            self.slot = slot
            identity = verified
            cursor = LiveCursor(store: center.store, tenantId: verified.tenantId, userId: verified.userId)
            center.hub.register(mailbox, tenantId: verified.tenantId, userId: verified.userId, transport: .websocket)
            registered = (verified.tenantId, verified.userId)
            let seq = try await center.store.currentSeq(tenantId: verified.tenantId, userId: verified.userId)
            cursor.last = seq
            try await session.send(#"{"type":"ready","userId":"\#(verified.userId)","seq":\#(seq)}"#, mailbox)
        }
        return nil
    }

    /// Drops acknowledged rows from the in-flight window and refills it if rows wait.
    mutating func acknowledge(upTo seq: Int64) async throws {
        inFlight.removeAll { $0.seq <= seq }
        if behind { try await fill() }
    }

    /// Sends stored rows after the cursor while the in-flight window has room.
    mutating func fill() async throws {
        while inFlight.count < settings.maxUnacked {
            let room = min(200, settings.maxUnacked - inFlight.count)
            let rows = try await center.store.after(seq: cursor.last, tenantId: cursor.tenantId, userId: cursor.userId, limit: room)
            for row in rows {
                if stopsForSessionCheck() { return }
                try await send(row.seq, message: LiveRow.webSocketMessage(row))
            }
            if rows.count < room {
                behind = false
                return
            }
        }
        behind = true
    }

    /// Sends live rows that continue the cursor; a gap, a full window or rows waiting in the
    /// store send from the store instead, so order holds.
    mutating func deliver(live rows: [LiveRow]) async throws {
        let fresh = rows.filter { $0.seq > cursor.last }.sorted { $0.seq < $1.seq }
        if behind || inFlight.count + fresh.count > settings.maxUnacked || (fresh.first.map { $0.seq != cursor.last + 1 } ?? false) {
            return try await fill()
        }
        var expected = cursor.last + 1
        for row in fresh {
            if row.seq < expected { continue }
            if row.seq > expected { return try await fill() }
            if stopsForSessionCheck() { return }
            try await send(row.seq, message: row.webSocketMessage)
            expected = row.seq + 1
        }
    }

    /// True when a session check waits in the mailbox (see ``Mailbox/requestAuthCheck()``):
    /// nothing more is sent before it is made, and what was not sent is read from the store
    /// afterwards (`behind`) if the session goes on.
    mutating func stopsForSessionCheck() -> Bool {
        guard mailbox.authCheckPending else { return false }
        behind = true
        return true
    }

    /// Sends one row's message and holds it in flight until acknowledged.
    mutating func send(_ seq: Int64, message: ByteBuffer) async throws {
        try await session.send(message: message, mailbox)
        inFlight.append(SocketSession.InFlight(seq: seq, message: message, sentAt: .now))
        cursor.last = seq
    }

    /// Re-authenticates the connection's token: a 401 closes it with 4401 and `reason`.
    mutating func recheckSession(reason: String, at now: ContinuousClock.Instant = .now) async throws -> Close? {
        guard let token else { return nil }
        lastAuthCheck = now
        do {
            _ = try await center.accounts.authenticate(bearer: token)
        } catch let error as AppError where error.status == .unauthorized {
            return (4401, reason)
        }
        return nil
    }

    /// The periodic checks: auth deadline, token expiry, idleness, session, resync, redelivery.
    mutating func tick(at now: ContinuousClock.Instant) async throws -> Close? {
        if identity == nil {
            return now - started >= settings.authTimeout ? (4408, "no auth message in time") : nil
        }
        if center.clock.now >= expiresAt { return (4401, "access token expired; refresh and reconnect") }
        if now - lastClientMessage >= settings.idleTimeout { return (4408, "idle") }
        if now - lastAuthCheck >= settings.authCheckInterval,
            let close = try await recheckSession(reason: "session revoked or token expired; refresh and reconnect", at: now)
        {
            return close
        }
        if now - lastPing >= settings.pingInterval {
            // Keeps idle connections alive through proxies; sent from the connection's tick
            // rather than by a task of the WebSocket layer beside every connection.
            lastPing = now
            try await session.ping(mailbox)
        }
        if subscribed && now - lastResync >= settings.resyncInterval {
            lastResync = now
            try await fill()
        }
        for index in inFlight.indices where now - inFlight[index].sentAt >= settings.ackTimeout {
            if mailbox.authCheckPending { break }
            try await session.send(message: inFlight[index].message, mailbox)
            inFlight[index].sentAt = now
        }
        return nil
    }

    /// When the next periodic check is due (the earliest of the checks in ``tick(at:)``).
    func nextCheck() -> ContinuousClock.Instant {
        guard identity != nil else { return started + settings.authTimeout }
        var next = min(lastClientMessage + settings.idleTimeout, lastAuthCheck + settings.authCheckInterval)
        let left = expiresAt.timeIntervalSince(center.clock.now)
        if left < 86_400 { next = min(next, .now + .milliseconds(Int64(max(0, left) * 1000))) }
        next = min(next, lastPing + settings.pingInterval)
        if subscribed { next = min(next, lastResync + settings.resyncInterval) }
        for entry in inFlight { next = min(next, entry.sentAt + settings.ackTimeout) }
        return next
    }
}
