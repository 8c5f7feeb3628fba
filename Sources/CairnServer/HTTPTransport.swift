package import CairnHTTP
import CairnNotifications
package import CairnStorage
import Foundation
import HTTPTypes
package import Hummingbird
import HummingbirdCore
import HummingbirdWSCompression
import HummingbirdWebSocket
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import NIOWebSocket
import Synchronization

/// How long an HTTP/1.1 client may hold a connection without making progress, and how large a
/// request head may be. SSE responses and WebSocket connections are not timed here: they keep
/// their own heartbeats.
package struct HTTPTransportSettings: Sendable {
    /// Time for a request head (request line and headers) to arrive in full, counted from the
    /// connection's opening or from the first bytes of a later request (`CAIRN_HTTP_HEAD_TIMEOUT`,
    /// default 30 s; Node's `headersTimeout`, nginx's `client_header_timeout`). A client that
    /// sent part of a head gets `408 request_timeout`, then the connection closes.
    package var headTimeout: Duration = .seconds(30)
    /// Time a keep-alive connection may wait between a response's end and the next request
    /// (`CAIRN_HTTP_IDLE_TIMEOUT`, default 65 s: above the 60 s of common load balancers, so
    /// they close first and never reuse a connection Cairn is closing; Node's `keepAliveTimeout`,
    /// nginx's `keepalive_timeout`).
    package var idleTimeout: Duration = .seconds(65)
    /// Longest pause in a request body while the server is ready to read it
    /// (`CAIRN_HTTP_BODY_TIMEOUT`, default 60 s; nginx's `client_body_timeout`). A stall limit,
    /// not a total one: an upload that keeps sending is never cut, and time the server spends
    /// not reading (back-pressure) does not count.
    package var bodyTimeout: Duration = .seconds(60)
    /// Largest header block in bytes (64 KiB; nginx allows 32 KiB, Node 16 KiB); a larger one
    /// gets `431 request_header_fields_too_large` (RFC 6585 §5), then the connection closes.
    package var maxHeaderBytes = 64 * 1024
    /// Whether `/ws` agrees to permessage-deflate (RFC 7692) when a client offers it
    /// (`CAIRN_WS_DEFLATE`, default off): less bandwidth for notifications of 256 bytes or
    /// more, at the price of a zlib compressor and decompressor per connection that takes it.
    package var webSocketDeflate = false
    /// Time the server's drain may take on shutdown, from the signal (`CAIRN_HTTP_DRAIN_TIMEOUT`,
    /// default 25 s: inside the 30 s Kubernetes gives a pod before SIGKILL). It stops
    /// accepting connections at once, closes those that have sent no request, and finishes
    /// the requests under way, their responses saying `Connection: close`; connections still
    /// open at the deadline are closed and the requests on them cancelled (an upload cut so
    /// stores nothing, a queued password hash is not run), so a slow client cannot hold the
    /// node up.
    package var drainTimeout: Duration = .seconds(25)
    /// Connections served at once (`CAIRN_HTTP_MAX_CONNECTIONS`, 16–1,000,000; by default the
    /// open-file limit less an eighth of it, at least 256, kept for files, databases and
    /// pipelines: 768 with the common 1,024). At the maximum the server stops accepting and the
    /// kernel queues new connections until one closes, so a flood of idle connections cannot
    /// exhaust the process's descriptors.
    package var maxConnections = FileDescriptorLimit.defaultMaxConnections(limit: FileDescriptorLimit.current)

    /// The defaults.
    package init() {}

    /// Reads `CAIRN_HTTP_HEAD_TIMEOUT`, `CAIRN_HTTP_IDLE_TIMEOUT`, `CAIRN_HTTP_BODY_TIMEOUT` and
    /// `CAIRN_HTTP_DRAIN_TIMEOUT` (durations, 1 s–10 years: `30`, `30s`, `2m`, `1500ms`), `CAIRN_WS_DEFLATE` (true or
    /// false) and `CAIRN_HTTP_MAX_CONNECTIONS` (16–1,000,000).
    /// - Throws: `ConfigurationError` naming the first bad setting.
    package mutating func read(from settings: SettingsReader) throws {
        headTimeout = try settings.duration("http.head.timeout", default: headTimeout)
        idleTimeout = try settings.duration("http.idle.timeout", default: idleTimeout)
        bodyTimeout = try settings.duration("http.body.timeout", default: bodyTimeout)
        drainTimeout = try settings.duration("http.drain.timeout", default: drainTimeout)
        webSocketDeflate = try settings.boolean("ws.deflate", default: false)
        maxConnections = try settings.integer("http.max.connections", in: 16...1_000_000, default: maxConnections)
    }
}

extension HTTPServerBuilder {
    /// HTTP/1.1 with WebSocket upgrade, every connection watched by a ``ConnectionGuard`` that
    /// applies `settings`. Upgrades are served from the channel pipeline
    /// (``PipelineUpgradeChannel``), with no task per open socket; with permessage-deflate on
    /// they go through Hummingbird's `http1WebSocketUpgrade` instead, whose WebSocket layer
    /// does the compression (and keeps a task per connection). Only `GET` on one of
    /// `webSocketPaths` is offered to the upgrade; an `Upgrade` header on any other request
    /// (`h2c`, or `websocket` to a route that is not a WebSocket endpoint) is ignored and the
    /// request served as plain HTTP/1.1 (see ``ConnectionGuard``).
    /// Every connection is added to `connections` when given (so a drain past its deadline
    /// can close them and cancel their handlers).
    package static func cairn(
        router: Router<CairnRequestContext>, settings: HTTPTransportSettings,
        webSocketPaths: Set<String> = [NotificationSocketController.path], connections: OpenConnections? = nil
    ) -> HTTPServerBuilder {
        let webSocketResponder = router.buildResponder()
        let decoder = HTTP1Channel.Configuration.DecoderConfiguration(
            maxHeaderFieldSize: settings.maxHeaderBytes, maxHeaderListSize: settings.maxHeaderBytes)
        // Hummingbird's own idle timer stays off: it would also close SSE streams that write
        // nothing for a while; ConnectionGuard times only the phases where the client owes bytes.
        let http1 = HTTP1Channel.Configuration(idleTimeout: nil, httpDecoderConfiguration: decoder)
        guard settings.webSocketDeflate else {
            return HTTPServerBuilder { responder in
                GuardedHTTPChannel(
                    inner: PipelineUpgradeChannel(responder: responder, webSocketResponder: webSocketResponder, configuration: http1),
                    settings: settings, webSocketPaths: webSocketPaths, connections: connections)
            }
        }
        // No auto-ping: it is a task sleeping beside every WebSocket; the notifications socket
        // pings from its connection's tick instead (NotificationSettings.pingInterval).
        // permessage-deflate applies to what the WebSocket layer writes (replays, resends,
        // answers); the frames the notification hub writes straight to a caught-up socket go
        // uncompressed, as RFC 7692 lets a sender leave any message (RSV1 unset).
        let configuration = HTTP1WebSocketUpgradeChannel.Configuration(
            http1: http1, ws: .init(extensions: [.perMessageDeflate(minFrameSizeToCompress: 256)], autoPing: .disabled))
        return HTTPServerBuilder { responder in
            GuardedHTTPChannel(
                inner: HTTP1WebSocketUpgradeChannel(responder: responder, webSocketResponder: webSocketResponder, configuration: configuration),
                settings: settings, webSocketPaths: webSocketPaths, connections: connections)
        }
    }
}

/// HTTP/1.1 whose WebSocket upgrades are served by channel handlers rather than a task per
/// connection. An upgrade request (the connection's first) runs through the router, middleware
/// and all; when its route answers 200 and set a ``WebSocketPipelineReference`` installer, the
/// handshake is answered and the installer adds its handlers on the event loop before the first
/// frame is read. The server's task for the connection then ends: an open WebSocket holds none.
/// A refused upgrade gets `400 bad_request` and the connection closes, and an upgrade asked for on a later
/// request of a keep-alive connection gets `307` to the same URL with `Connection: close`
/// (both as Hummingbird's WebSocket channel answers). Everything else is Hummingbird's HTTP/1.1.
struct PipelineUpgradeChannel: ServerChildChannel, HTTPChannelHandler {
    /// Ends a connection whose later request asked for an upgrade, once answered.
    private struct LaterUpgrade: Error {}

    /// What became of the connection's first request.
    enum UpgradeResult: Sendable {
        /// A WebSocket now served by its handlers.
        case upgraded
        /// Plain HTTP.
        case notUpgraded(NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>)
        /// An upgrade was asked for and refused; `requestId` is the handshake's `X-Request-Id`.
        case refused(NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>, requestId: String?)
    }

    /// The connection as set up, its first request not yet decided.
    struct Value: ServerChildChannelValue {
        let upgradeResult: EventLoopFuture<UpgradeResult>
        let channel: any Channel
    }

    /// Answers HTTP requests.
    let responder: HTTPChannelHandler.Responder
    /// Decides upgrade requests (the application's router).
    let webSocketResponder: RouterResponder<CairnRequestContext>
    /// Hummingbird's HTTP/1.1 settings for plain requests.
    let configuration: HTTP1Channel.Configuration
    /// The largest WebSocket frame read (Hummingbird's default, 16 KiB).
    let maxFrameSize = 1 << 14

    init(
        responder: @escaping HTTPChannelHandler.Responder, webSocketResponder: RouterResponder<CairnRequestContext>,
        configuration: HTTP1Channel.Configuration
    ) {
        self.webSocketResponder = webSocketResponder
        self.configuration = configuration
        self.responder = { request, writer, channel in
            guard request.headers[.upgrade] == "websocket" else { return try await responder(request, writer, channel) }
            // Only a connection's first request can upgrade: this client is sent to open a new one.
            let location = request.uri.query.map { request.uri.path + "?" + $0 } ?? request.uri.path
            try await writer.writeResponse(HTTPResponse(status: .temporaryRedirect, headerFields: [.connection: "close", .location: location]))
            throw LaterUpgrade()
        }
    }

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            let attempted = NIOLoopBoundBox(false, eventLoop: channel.eventLoop)
            // The handshake's own X-Request-Id, echoed should it be refused.
            let requestId = NIOLoopBoundBox<String?>(nil, eventLoop: channel.eventLoop)
            // Handed from the upgrade's decision to the pipeline's setup.
            let chosen = Mutex<WebSocketPipelineReference.Installer?>(nil)
            let logger = {
                var logger = logger
                logger[metadataKey: "hb.request.id"] = .stringConvertible(RequestID())
                return logger
            }()
            let upgrader = NIOTypedWebSocketServerUpgrader<UpgradeResult>(
                maxFrameSize: maxFrameSize,
                shouldUpgrade: { channel, head in
                    attempted.value = true
                    requestId.value = head.headers.first(name: "x-request-id")
                    return decide(head, channel: channel, logger: logger).map { decision in
                        guard let (headers, installer) = decision else { return nil }
                        chosen.withLock { $0 = installer }
                        return headers
                    }
                },
                upgradePipelineHandler: { channel, _ in
                    channel.eventLoop.makeCompletedFuture {
                        guard let installer = chosen.withLock({ $0 }) else { throw ChannelError.inappropriateOperationForState }
                        try installer(channel)
                        return .upgraded
                    }
                })
            let upgrade = NIOTypedHTTPServerUpgradeConfiguration(
                upgraders: [upgrader],
                notUpgradingCompletionHandler: { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let pipeline = channel.pipeline.syncOperations
                        try pipeline.addHandler(HTTP1ToHTTPServerCodec(secure: false))
                        try pipeline.addHandlers(configuration.additionalChannelHandlers())
                        try pipeline.addHandler(HTTPConnectionStateHandler(idleTimeout: configuration.idleTimeout.map { .init($0) }, logger: logger))
                        let http = try NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>(
                            wrappingChannelSynchronously: channel, configuration: .init(isOutboundHalfClosureEnabled: true))
                        return attempted.value ? .refused(http, requestId: requestId.value) : .notUpgraded(http)
                    }
                })
            var pipelineConfiguration = NIOUpgradableHTTPServerPipelineConfiguration<UpgradeResult>(upgradeConfiguration: upgrade)
            // Hummingbird answers errors and pipelines requests itself; HTTPTypes validates headers.
            pipelineConfiguration.enablePipelining = false
            pipelineConfiguration.enableErrorHandling = false
            pipelineConfiguration.enableResponseHeaderValidation = false
            pipelineConfiguration.decoderConfiguration.maxHeaderFieldSize = configuration.httpDecoder.maxHeaderFieldSize
            pipelineConfiguration.decoderConfiguration.maxHeaderListSize = configuration.httpDecoder.maxHeaderListSize
            pipelineConfiguration.decoderConfiguration.maxHeaderFieldCount = configuration.httpDecoder.maxHeaderFieldCount
            let result = try channel.pipeline.syncOperations.configureUpgradableHTTPServerPipeline(configuration: pipelineConfiguration)
            return Value(upgradeResult: result, channel: channel)
        }
    }

    /// Runs an upgrade request through the router: the response headers and the route's
    /// installer when it answered 200 and set one, else nil (refused).
    private func decide(
        _ head: HTTPRequestHead, channel: any Channel, logger: Logger
    ) -> EventLoopFuture<(HTTPHeaders, WebSocketPipelineReference.Installer)?> {
        let promise = channel.eventLoop.makePromise(of: (HTTPHeaders, WebSocketPipelineReference.Installer)?.self)
        let responder = webSocketResponder
        promise.completeWithTask {
            guard let head = try? HTTPRequest(head, secure: false, splitCookie: false) else { return nil }
            let context = CairnRequestContext(source: .init(channel: channel, logger: logger))
            guard let response = try? await responder.respond(to: Request(head: head, body: .init(buffer: .init())), context: context),
                response.status == .ok, let installer = context.webSocketPipeline.value
            else { return nil }
            return (HTTPHeaders(response.headers), installer)
        }
        return promise.futureResult
    }

    func handle(value: Value, logger: Logger) async {
        do {
            switch try await value.upgradeResult.get() {
            case .upgraded:
                // The socket's handlers serve it from here on; nothing waits for it.
                return
            case .notUpgraded(let http):
                await handleHTTP(asyncChannel: http, logger: logger)
            case .refused(let http, let requestId):
                // The route answered the handshake with no socket. NIO's upgrade handler has
                // consumed the request, so the route's own answer cannot be replayed here: a
                // problem document instead of Hummingbird's empty 400, as every answer has.
                let body = problemJSON(
                    status: .badRequest, code: .badRequest, detail: "This WebSocket handshake was refused; no socket was opened.")
                try await http.executeThenClose { _, outbound in
                    let headers: HTTPFields = [
                        .connection: "close", .contentType: "application/problem+json", .contentLength: String(body.utf8.count),
                        .init("X-Request-Id")!: requestId.flatMap { RequestIDMiddleware.isAcceptable($0) ? $0 : nil }
                            ?? UUID().uuidString.lowercased(),
                        .date: ConnectionGuard.httpDate(Date()),
                    ]
                    try await outbound.write(contentsOf: [
                        .head(HTTPResponse(status: .badRequest, headerFields: headers)), .body(ByteBuffer(string: body)), .end(nil),
                    ])
                }
            }
        } catch let error as ChannelError where error == .inputClosed {
            logger.trace("connection closed before its first request was decided")
        } catch {
            logger.debug("connection ended", metadata: ["error.type": "\(type(of: error))"])
        }
    }
}

/// An HTTP/1.1 + WebSocket child channel with a ``ConnectionGuard`` placed right
/// after the HTTP request decoder, from the connection's first byte (Hummingbird's
/// `additionalChannelHandlers` join only after the first request head, too late for a head
/// timeout or for the decoder's errors).
struct GuardedHTTPChannel<Inner: ServerChildChannel>: ServerChildChannel {
    typealias Value = Inner.Value
    /// The channel that does the HTTP and WebSocket work.
    let inner: Inner
    /// Timeouts and limits.
    let settings: HTTPTransportSettings
    /// The paths whose `GET` may upgrade to a WebSocket.
    let webSocketPaths: Set<String>
    /// Where the connection is tracked until it closes, if anywhere.
    var connections: OpenConnections?

    /// Sets up the inner channel, then adds the guard after its request decoder.
    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        let (settings, webSocketPaths) = (settings, webSocketPaths)
        connections?.add(channel)
        return inner.setup(channel: channel, logger: logger).flatMapThrowing { value in
            let pipeline = channel.pipeline.syncOperations
            let decoder = try pipeline.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self)
            try pipeline.addHandler(ConnectionGuard(settings: settings, webSocketPaths: webSocketPaths, logger: logger), position: .after(decoder))
            return value
        }
    }

    /// Serves the connection as the inner channel does (in a task the drain's deadline can
    /// cancel, when tracked).
    func handle(value: Value, logger: Logger) async {
        guard let connections else { return await inner.handle(value: value, logger: logger) }
        await connections.serve(value.channel) { [inner] in await inner.handle(value: value, logger: logger) }
    }
}

/// Watches one HTTP/1.1 connection between the request decoder and the rest of the pipeline:
///
/// - head: from the connection's opening, or from the first bytes of a later request, the head
///   must be complete within `headTimeout` (else `408 request_timeout` if any of it came, and close);
/// - idle: after a response's end with nothing more asked, the connection closes after `idleTimeout`;
/// - body: while the server waits to read more of a request body, a pause of `bodyTimeout` closes it;
/// - while a response is being written (an SSE stream, a slow report) nothing is timed;
/// - the decoder's errors are answered here, since nothing else would: `431
///   request_header_fields_too_large` for a header block over the limit, `400 bad_request` for
///   anything else that is not HTTP/1.1 (a raw non-ASCII byte in the request line), then the
///   connection closes; when a response is already under way the connection just closes;
/// - so are WebSocket handshakes NIO's upgrader would fail unanswered (``handshakeRefusal(_:)``);
/// - at the server's drain (NIO's quiescing event), the responses still owed say
///   `Connection: close` (Hummingbird closes the connection after them), and a connection that
///   has sent no request yet closes at once;
/// - an `Upgrade` header on anything but a WebSocket handshake to a WebSocket endpoint (`GET`
///   on one of `webSocketPaths`) is removed here, so the request is served as plain HTTP/1.1.
///   RFC 9110 §7.8 lets a server ignore `Upgrade`; NIO's upgrade handler, had it seen one it
///   cannot serve (`h2c` from `curl --http2`, RFC 7540 §3.2, which RFC 9113 dropped; or
///   `websocket` to `/openapi.yaml`), would swallow the request and the client got no answer,
///   or an empty 400. A WebSocket route, not the mere header, decides whether Upgrade
///   applies (RFC 6455 §4.1: the handshake targets a WebSocket endpoint's URI).
///
/// A first request that asks for a WebSocket upgrade takes the guard out of the pipeline: the
/// connection becomes a WebSocket (with its own pings) or Hummingbird answers and closes it.
/// Such a request that announces a body gets `400 bad_request` here instead.
final class ConnectionGuard: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    /// What the connection is waiting for when its timer runs out.
    private enum Wait {
        case head, idle, body
    }

    /// Whether the request decoder must be replaced: not at all, once the current request has
    /// ended, or at the end of the current read (the decoder has then finished with it).
    private enum FreshDecoder {
        case no, afterEnd, now
    }

    /// Timeouts and the header limit (named in answers).
    private let settings: HTTPTransportSettings
    /// The server's logger.
    private let logger: Logger
    /// The paths whose `GET` may upgrade to a WebSocket; `Upgrade` elsewhere is ignored.
    private let webSocketPaths: Set<String>
    /// Whether the connection's first head timer has been started.
    private var started = false
    /// Set once the guard answers or closes: everything after is ignored.
    private var finished = false
    /// Set once a request that ends the connection (`Connection: close`, HTTP/1.0 without
    /// `keep-alive`) has been forwarded: the server processes nothing received after it and
    /// answers none of it (RFC 9112 §9.6); the connection closes after that request's answer.
    private var lastRequestSeen = false
    /// Set once the server began to drain (NIO's quiescing event): the responses still owed
    /// are the connection's last.
    private var draining = false
    /// Set when a request head came after the last request: it and all that follows are dropped.
    private var ignoringRest = false
    /// Request heads forwarded so far (0: the upgrade handler has seen nothing yet).
    private var requestsSeen = 0
    /// Request heads whose response has not ended yet.
    private var pendingResponses = 0
    /// A decoder error that came while earlier requests were still being answered; answered
    /// once they are.
    private var deferredError: HTTPParserError?
    /// A head refused here (no `Host`) while earlier requests were still being answered;
    /// answered once they are, and nothing after it is read.
    private var deferredAnswer: (status: HTTPResponseStatus, code: AppError.Code, detail: String, requestId: String?)?
    /// The `Connection` value owed to each request whose response head has not gone out yet,
    /// in order (nil: none to add).
    private var responseConnection: [String?] = []
    /// Between a request's head and its end.
    private var readingBody = false
    /// When the awaited head started (connection opening or its first bytes); nil when idle.
    private var headStarted: NIODeadline?
    /// Whether any byte of the awaited head has arrived (a 408 is only owed then).
    private var headBytesSeen = false
    /// When the last response ended with nothing more asked.
    private var idleSince = NIODeadline.now()
    /// When the body last moved, or the server last became ready to read it.
    private var lastBodyProgress = NIODeadline.now()
    /// A read was asked for and not yet satisfied: the server is ready for more bytes.
    private var readPending = false
    /// Whether the current read produced any request part.
    private var partsThisRead = false
    /// When bytes last came in after the guard answered (it drains them before closing).
    private var lastBytes = NIODeadline.now()
    /// When the request decoder is to be replaced (see ``replaceDecoder(_:)``).
    private var freshDecoder = FreshDecoder.no
    /// The one scheduled check, if any.
    private var timer: Scheduled<Void>?
    /// When ``timer`` fires.
    private var timerDeadline: NIODeadline?

    /// A guard applying `settings`' timeouts, letting only `GET` on `webSocketPaths` upgrade;
    /// `logger` gets its debug lines.
    init(settings: HTTPTransportSettings, webSocketPaths: Set<String>, logger: Logger) {
        self.settings = settings
        self.webSocketPaths = webSocketPaths
        self.logger = logger
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { start(context) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        cancelTimer()
    }

    func channelActive(context: ChannelHandlerContext) {
        start(context)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        finished = true
        cancelTimer()
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !finished, deferredAnswer == nil, !ignoringRest else { return }
        partsThisRead = true
        var data = data
        switch unwrapInboundIn(data) {
        case .head where lastRequestSeen:
            // A request after the connection's last one: neither processed nor answered.
            ignoringRest = true
            return
        case .head(var head):
            if Self.isHTTP11(head.version), head.headers["host"].count != 1 {
                // RFC 9112 §3.2: an HTTP/1.1 request without exactly one Host is answered 400.
                let refusal = (
                    status: HTTPResponseStatus.badRequest, code: AppError.Code.badRequest,
                    detail: "An HTTP/1.1 request needs exactly one Host header (RFC 9112 §3.2).",
                    requestId: head.headers.first(name: "x-request-id")
                )
                guard pendingResponses == 0 else {
                    // Behind requests still being answered: theirs go first (RFC 9112 §9.3.2).
                    deferredAnswer = refusal
                    return
                }
                answer(context, status: refusal.status, code: refusal.code, detail: refusal.detail, requestId: refusal.requestId)
                return
            }
            // Hummingbird keeps a connection open unless the request says exactly
            // `Connection: close`; HTTP/1.0 is not persistent without `keep-alive`, and the close
            // token may come in a list (RFC 9112 §9.3, §9.6). A handshake keeps its `upgrade`.
            // During a drain, a request is the connection's last.
            let persistent = Self.isPersistent(head) && !draining
            if !persistent, !Self.asksForWebSocket(head) {
                head.headers.replaceOrAdd(name: "connection", value: "close")
                data = wrapInboundOut(.head(head))
                lastRequestSeen = true
            }
            responseConnection.append(persistent ? (Self.isHTTP11(head.version) ? nil : "keep-alive") : "close")
            if head.headers.contains(name: "upgrade"), !(Self.asksForWebSocket(head) && takesWebSocket(head)) {
                // Ignored (RFC 9110 §7.8): served as the plain request it also is, on a
                // connection that stays open (see the type's notes).
                head.headers.remove(name: "upgrade")
                data = wrapInboundOut(.head(head))
                // The decoder (llhttp) stops parsing after a request with `Connection: upgrade`
                // and an `Upgrade` header, leaving the bytes for the new protocol: a fresh one
                // takes over once this request has ended, or the next request would never be read.
                if head.headers[canonicalForm: "connection"].contains(where: { $0.lowercased() == "upgrade" }) { freshDecoder = .afterEnd }
            }
            requestsSeen += 1
            pendingResponses += 1
            readingBody = true
            headStarted = nil
            headBytesSeen = false
            lastBodyProgress = .now()
            if requestsSeen == 1, Self.asksForWebSocket(head) {
                // The upgrade handler waits for the request's end, and would wait forever for a
                // body that never comes, untimed; a handshake is a GET without one (RFC 6455 §4.1).
                guard !Self.declaresBody(head) else {
                    requestsSeen = 0  // never forwarded: the upgrade handler has seen nothing
                    pendingResponses = 0
                    readingBody = false
                    answer(
                        context, status: .badRequest, code: .badRequest, detail: "A WebSocket handshake has no body.",
                        requestId: head.headers.first(name: "x-request-id"))
                    return
                }
                // NIO's upgrader fails such a handshake before any route is asked, and the client
                // got no answer at all; RFC 6455 §4.2.1 wants 400, and §4.2.2 426 naming version 13.
                if let refusal = Self.handshakeRefusal(head) {
                    requestsSeen = 0
                    pendingResponses = 0
                    readingBody = false
                    answer(
                        context, status: refusal.status, code: refusal.code, detail: refusal.detail, errors: refusal.errors,
                        headers: refusal.headers, requestId: head.headers.first(name: "x-request-id"))
                    return
                }
                // Removed before the request's end can start the upgrade: after it, the pipeline
                // carries WebSocket frames, which this handler cannot take.
                cancelTimer()
                context.fireChannelRead(data)
                context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
                return
            }
        case .body:
            lastBodyProgress = .now()
        case .end:
            readingBody = false
            if pendingResponses == 0 { becomeIdle() }
            if freshDecoder == .afterEnd { freshDecoder = .now }
        }
        context.fireChannelRead(data)
        rearm(context)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if freshDecoder == .now {
            freshDecoder = .no
            replaceDecoder(context)
        }
        readPending = false
        if finished { lastBytes = .now() }
        if !finished, !partsThisRead, !readingBody, pendingResponses == 0, headStarted == nil || !headBytesSeen {
            // Bytes came that did not complete a head: a request has started, its head is now timed.
            if headStarted == nil { headStarted = .now() }
            headBytesSeen = true
        }
        partsThisRead = false
        if !finished { rearm(context) }
        context.fireChannelReadComplete()
    }

    func read(context: ChannelHandlerContext) {
        if !readPending {
            readPending = true
            // The time the server was not reading was not the client's to use.
            if readingBody { lastBodyProgress = .now() }
            if !finished { rearm(context) }
        }
        context.read()
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        var data = data
        var answerDeferred = false
        switch unwrapOutboundIn(data) {
        case .head(var head) where head.status.code >= 200 && !responseConnection.isEmpty:
            // The request's persistence, said to the client (RFC 9112 §9.3, §9.6).
            if let connection = responseConnection.removeFirst() {
                head.headers.replaceOrAdd(name: "Connection", value: connection)
                data = wrapOutboundOut(.head(head))
            }
        case .end where pendingResponses > 0:
            pendingResponses -= 1
            if pendingResponses == 0, !readingBody { becomeIdle() }
            answerDeferred = pendingResponses == 0 && (deferredError != nil || deferredAnswer != nil)
            if !finished { rearm(context) }
        default:
            break
        }
        context.write(data, promise: promise)
        if answerDeferred, let error = deferredError {
            // The responses to the requests before the bad one are out, in order: now its answer.
            deferredError = nil
            answer(context, parserError: error)
        } else if answerDeferred, let refusal = deferredAnswer {
            answer(context, status: refusal.status, code: refusal.code, detail: refusal.detail, requestId: refusal.requestId)
        }
    }

    /// Whether `version` is HTTP/1.1 or later.
    static func isHTTP11(_ version: HTTPVersion) -> Bool {
        version.major > 1 || (version.major == 1 && version.minor >= 1)
    }

    /// Whether the connection stays open after answering `head` (RFC 9112 §9.3): HTTP/1.1 unless
    /// `Connection` lists `close`, HTTP/1.0 only when it lists `keep-alive` (and not `close`).
    static func isPersistent(_ head: HTTPRequestHead) -> Bool {
        let tokens = head.headers[canonicalForm: "connection"].map { $0.lowercased() }
        if tokens.contains("close") { return false }
        return isHTTP11(head.version) || tokens.contains("keep-alive")
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent, !draining {
            draining = true
            if pendingResponses > 0 {
                // Hummingbird closes the connection once the responses under way have ended. Each
                // of them not begun yet says so, so a keep-alive client sends its next request
                // elsewhere rather than into a closing node (RFC 9112 §9.6); nothing received
                // after them is served.
                responseConnection = responseConnection.map { _ in "close" }
                lastRequestSeen = true
                logger.debug("connection drains: it closes after the responses under way", metadata: ["responses": "\(pendingResponses)"])
            } else if requestsSeen == 0, !headBytesSeen {
                // Nothing asked yet (a browser's preconnect): Hummingbird's handler that closes
                // idle connections at a drain joins only with the first request, so without this
                // the connection held the drain until its head timeout or the drain's deadline.
                finish(context)
                return
            }
            // Otherwise Hummingbird closes an idle connection at once, and a first request still
            // arriving is served as the connection's last (see `channelRead`).
        }
        context.fireUserInboundEventTriggered(event)
        // The client ended its side while an answer lingers: nothing more to drain (closed
        // after the event has passed, so the upgrade handler sees an end of input, not a removal).
        if finished, let event = event as? ChannelEvent, event == .inputClosed {
            context.close(promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let parserError = error as? HTTPParserError else {
            context.fireErrorCaught(error)
            return
        }
        guard !finished, deferredError == nil else { return }
        // Bytes after the connection's last request (llhttp refuses data after
        // `Connection: close`) are not a request of this connection: no answer (RFC 9112 §9.6).
        guard !lastRequestSeen || readingBody else { return }
        // Inside a body there is no request boundary left to answer at.
        guard !readingBody else {
            finish(context)
            return
        }
        // Pipelined behind requests still being answered (they may already have changed
        // state): their responses go first, then this answer (RFC 9112 §9.3.2).
        guard pendingResponses == 0 else {
            deferredError = parserError
            return
        }
        answer(context, parserError: parserError)
    }

    /// The answer to a head the decoder refused: 431 for a header block over the limit, else 400.
    private func answer(_ context: ChannelHandlerContext, parserError: HTTPParserError) {
        if parserError == .headerOverflow {
            answer(
                context, status: .requestHeaderFieldsTooLarge, code: .requestHeaderFieldsTooLarge,
                detail: "The request's header block is larger than \(settings.maxHeaderBytes / 1024) KiB.")
        } else {
            answer(context, status: .badRequest, code: .badRequest, detail: "The request is not valid HTTP/1.1.")
        }
    }

    /// True for a head asking to become a WebSocket (`Connection: upgrade`, `Upgrade: websocket`,
    /// each a token of its comma-separated list, as NIO's upgrade handler reads them).
    private static func asksForWebSocket(_ head: HTTPRequestHead) -> Bool {
        head.headers[canonicalForm: "connection"].contains { $0.lowercased() == "upgrade" }
            && head.headers[canonicalForm: "upgrade"].contains { $0.lowercased() == "websocket" }
    }

    /// True for a `GET` of a WebSocket endpoint (query and trailing slashes aside, as the
    /// router matches paths).
    private func takesWebSocket(_ head: HTTPRequestHead) -> Bool {
        guard head.method == .GET else { return false }
        var path = head.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        while path.count > 1, path.hasSuffix("/") { path.removeLast() }
        return webSocketPaths.contains(String(path))
    }

    /// Why a WebSocket handshake cannot be served, or nil when it can: HTTP/1.1 or later (else
    /// `400 bad_request`, RFC 6455 §4.1); `Sec-WebSocket-Version`
    /// must be exactly `13` (else `426 invalid_input` with `Sec-WebSocket-Version: 13` and
    /// `Upgrade: websocket`, RFC 6455 §4.2.2 and RFC 9110 §15.5.22, its `errors` naming the
    /// header as every `invalid_input` names its field), and
    /// `Sec-WebSocket-Key` one base64 value of 16 bytes (else `400 bad_request`, RFC 6455 §4.2.1).
    static func handshakeRefusal(
        _ head: HTTPRequestHead
    ) -> (status: HTTPResponseStatus, code: AppError.Code, detail: String, errors: [FieldIssue], headers: [(String, String)])? {
        guard isHTTP11(head.version) else {
            return (.badRequest, .badRequest, "A WebSocket handshake needs HTTP/1.1 or later (RFC 6455 §4.1).", [], [])
        }
        let versions = head.headers["sec-websocket-version"]
        guard versions.count == 1, versions[0].trimmingCharacters(in: .whitespaces) == "13" else {
            return (
                .upgradeRequired, .invalidInput, "This server speaks WebSocket version 13 only (RFC 6455): send Sec-WebSocket-Version: 13.",
                [FieldIssue(field: "Sec-WebSocket-Version", issue: versions.isEmpty ? "is required and must be 13" : "must be 13")],
                [("Sec-WebSocket-Version", "13"), ("Upgrade", "websocket")]
            )
        }
        let keys = head.headers["sec-websocket-key"]
        guard keys.count == 1, let key = Data(base64Encoded: keys[0].trimmingCharacters(in: .whitespaces)), key.count == 16 else {
            return (
                .badRequest, .badRequest, "A WebSocket handshake needs one Sec-WebSocket-Key: 16 random bytes in base64 (RFC 6455 §4.1).",
                [], []
            )
        }
        return nil
    }

    /// True for a head whose framing announces a body (`Transfer-Encoding`, or a
    /// `Content-Length` other than 0).
    private static func declaresBody(_ head: HTTPRequestHead) -> Bool {
        head.headers.contains(name: "transfer-encoding") || head.headers["content-length"].contains { $0.trimmingCharacters(in: .whitespaces) != "0" }
    }

    /// Puts a new request decoder in place of the one that stopped parsing after an ignored
    /// upgrade. The new one goes right after the old, so the bytes the old one still holds (a
    /// request sent behind the upgrade one) reach it as it leaves (NIO's upgrade pipeline
    /// forwards them). The old decoder also told the response encoder each request's method
    /// (so a `HEAD` answer has no body); the new one cannot, and Hummingbird writes none anyway.
    private func replaceDecoder(_ context: ChannelHandlerContext) {
        let pipeline = context.pipeline.syncOperations
        do {
            let old = try pipeline.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self)
            var limits = NIOHTTPDecoderLimitConfiguration()
            limits.maxHeaderFieldSize = settings.maxHeaderBytes
            limits.maxHeaderListSize = settings.maxHeaderBytes
            let fresh = ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .forwardBytes, limitConfiguration: limits))
            try pipeline.addHandler(fresh, position: .after(old))
            let removed = context.eventLoop.makePromise(of: Void.self)
            pipeline.removeHandler(old, promise: removed)
            // The old decoder leaves on a later tick of the event loop, handing its leftover
            // bytes to the new one, which decodes the requests in them outside any socket read:
            // without a read-complete after them, Hummingbird's channel (NIOAsyncChannel hands
            // reads on at read-complete) would hold them until the client's next bytes, which a
            // client waiting for its answers never sends.
            removed.futureResult.assumeIsolated().whenSuccess {
                context.pipeline.syncOperations.fireChannelReadComplete()
            }
        } catch {
            // No decoder to replace: the connection is going away.
            finish(context)
        }
    }

    /// Starts timing the connection's first head, once.
    private func start(_ context: ChannelHandlerContext) {
        guard !started else { return }
        started = true
        headStarted = .now()
        rearm(context)
    }

    /// Notes that nothing is in flight: the idle timeout runs from now.
    private func becomeIdle() {
        idleSince = .now()
        headStarted = nil
        headBytesSeen = false
    }

    /// When the connection's current wait runs out, if it is timed at all.
    private func deadline() -> (NIODeadline, Wait)? {
        if readingBody { return readPending ? (lastBodyProgress + TimeAmount(settings.bodyTimeout), .body) : nil }
        if pendingResponses > 0 { return nil }
        if let headStarted { return (headStarted + TimeAmount(settings.headTimeout), .head) }
        return (idleSince + TimeAmount(settings.idleTimeout), .idle)
    }

    /// Keeps one timer, at or before the current deadline; a timer that fires early re-arms,
    /// and one that fires while nothing is timed (a response under way) just ends.
    ///
    /// So a keep-alive connection busy with requests schedules no timer per request: the one
    /// armed for an earlier idle or head deadline stays (each schedule and cancel is an
    /// allocation and a change to the event loop's timer heap, 4 % of a `/health/live`
    /// request's CPU in a profile), and when it fires it re-arms for what is left.
    private func rearm(_ context: ChannelHandlerContext) {
        guard let (when, _) = deadline() else { return }
        if timer != nil, let timerDeadline, timerDeadline <= when { return }
        cancelTimer()
        timerDeadline = when
        timer = context.eventLoop.assumeIsolated().scheduleTask(deadline: when) { [self] in
            timer = nil
            timerDeadline = nil
            expire(context)
        }
    }

    /// Cancels the scheduled check.
    private func cancelTimer() {
        timer?.cancel()
        timer = nil
        timerDeadline = nil
    }

    /// The scheduled check: ends the connection if its current wait is over (with a 408 for a
    /// partly sent head), else re-arms.
    private func expire(_ context: ChannelHandlerContext) {
        guard !finished, let (when, wait) = deadline() else { return }
        guard NIODeadline.now() >= when else {
            rearm(context)
            return
        }
        if wait == .head, headBytesSeen {
            answer(
                context, status: .requestTimeout, code: .requestTimeout,
                detail: "The request head did not arrive within \(settings.headTimeout.components.seconds) s.")
        } else {
            finish(context)
        }
    }

    /// Writes a small problem+json answer with `Connection: close`, `Date` and `X-Request-Id`
    /// (the client's `requestId` when it sent an acceptable one, as the router echoes it), then
    /// closes.
    private func answer(
        _ context: ChannelHandlerContext, status: HTTPResponseStatus, code: AppError.Code, detail: String, errors: [FieldIssue] = [],
        headers: [(String, String)] = [], requestId: String? = nil
    ) {
        finished = true
        cancelTimer()
        var body = context.channel.allocator.buffer(capacity: 256)
        body.writeString(problemJSON(status: status, code: code, detail: detail, errors: errors))
        var head = HTTPResponseHead(version: .http1_1, status: status)
        head.headers.add(name: "Content-Type", value: "application/problem+json")
        head.headers.add(name: "Content-Length", value: String(body.readableBytes))
        head.headers.add(name: "Connection", value: "close")
        // As every other answer (openapi.yaml's conventions; RFC 9110 §6.6.1 for Date).
        head.headers.add(name: "Date", value: Self.httpDate(Date()))
        let echoed = requestId.flatMap { RequestIDMiddleware.isAcceptable($0) ? $0 : nil }
        head.headers.add(name: "X-Request-Id", value: echoed ?? UUID().uuidString.lowercased())
        head.headers.add(contentsOf: headers)
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { [self] _ in
            lastBytes = .now()
            linger(context, until: .now() + .seconds(2))
        }
    }

    /// `date` as an IMF-fixdate (RFC 9110 §5.6.7), for the `Date` of the guard's own answers.
    static func httpDate(_ date: Date) -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss 'GMT'"
        return formatter.string(from: date)
    }

    /// Reads and drops what the client still sends, and closes once it has been quiet for
    /// 200 ms, or at `deadline`: closing with unread request bytes in the socket makes the
    /// kernel send RST, which can destroy the answer before the client reads it. (Not a
    /// half-close: with the output shut, the client's end of input closes the channel under
    /// the upgrade handler, see ``close(_:)``.)
    private func linger(_ context: ChannelHandlerContext, until deadline: NIODeadline) {
        context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(200)) { [self] in
            let now = NIODeadline.now()
            if now >= deadline || now - lastBytes >= .milliseconds(200) {
                close(context)
            } else {
                linger(context, until: deadline)
            }
        }
    }

    /// Closes without an answer.
    private func finish(_ context: ChannelHandlerContext) {
        finished = true
        cancelTimer()
        close(context)
    }

    /// Closes the connection. Before the first head, the close goes through the upgrade
    /// handler as the end of input: closed under it, it would fail its upgrade with an error
    /// Hummingbird logs at error level, once for every connection a timeout ends.
    private func close(_ context: ChannelHandlerContext) {
        if requestsSeen == 0 { context.fireUserInboundEventTriggered(ChannelEvent.inputClosed) }
        context.close(promise: nil)
    }
}

@available(*, unavailable)
extension ConnectionGuard: Sendable {}

/// The problem document (RFC 9457) of an answer written below the router, as
/// ``AppError/response(from:context:)`` writes it.
private func problemJSON(status: HTTPResponseStatus, code: AppError.Code, detail: String, errors: [FieldIssue] = []) -> String {
    String(
        buffer: AppError(HTTPResponse.Status(code: Int(status.code), reasonPhrase: status.reasonPhrase), code: code, detail: detail, errors: errors)
            .document())
}
