import Logging
import NIOCore
import NIOWebSocket

/// A `/ws` connection served from its channel pipeline, with no Swift task while it sleeps.
///
/// A task per connection kept every stack slab its deepest call ever took for the socket's
/// whole life (about 30 KB per connection in heaptrack, Benchmarks/notifications/README.md).
/// Here a ``SocketFrameHandler`` on the event loop parses client frames into the
/// ``Mailbox``, and the ``SocketLoop`` runs in a short task only while the mailbox holds work:
/// the task handles batches until the mailbox is empty, registers a wake-up callback with it
/// and ends; the next producer (the hub, its ticker, the frame handler) starts the next task.
/// The mailbox hands a batch to one consumer at a time, so the loop's state is never touched
/// by two tasks at once.
final class PipelineSocket: @unchecked Sendable {
    let session: SocketSession
    let mailbox: Mailbox
    private let output: ChannelOutput
    private let headerToken: String?
    private let writer: DirectWriter
    /// The authentication deadline's timer (the hub ticks registered mailboxes).
    private let authDeadline: Scheduled<Void>
    /// Touched only by the task that holds the mailbox's current batch (see the type's notes).
    private var loop: SocketLoop

    private init(session: SocketSession, mailbox: Mailbox, output: ChannelOutput, headerToken: String?) {
        self.session = session
        self.mailbox = mailbox
        self.output = output
        self.headerToken = headerToken
        self.writer = session.directWriter
        // Taken before the timer is set, so the timer never fires before the deadline is due
        // (a tick before it would leave the loop asleep for good).
        let started = ContinuousClock.now
        self.loop = SocketLoop(session: session, mailbox: mailbox, started: started)
        self.authDeadline = session.channel.eventLoop.scheduleTask(in: TimeAmount(session.center.settings.authTimeout)) { [mailbox] in
            mailbox.tick()
        }
    }

    /// Adds the connection's frame handler to `channel`'s pipeline (on its event loop, right at
    /// the upgrade, so the first frame reaches it) and starts its loop with `headerToken`,
    /// the token of a `bearer.<token>` subprotocol.
    static func install(on channel: any Channel, center: Notifier, headerToken: String?) throws {
        let handler = SocketFrameHandler()
        try channel.pipeline.syncOperations.addHandler(handler)
        let output = ChannelOutput(channel: channel, handler: NIOLoopBound(handler, eventLoop: channel.eventLoop))
        let session = SocketSession(center: center, outbound: output, channel: channel)
        let mailbox = session.makeMailbox()
        handler.mailbox = mailbox
        let socket = PipelineSocket(session: session, mailbox: mailbox, output: output, headerToken: headerToken)
        Task { await socket.begin() }
    }

    /// Authenticates with the subprotocol's token, if any, then serves the mailbox.
    private func begin() async {
        if let headerToken {
            do {
                if let close = try await loop.authenticate(headerToken) { return await finish(close) }
            } catch {
                return await fail(error)
            }
        }
        await run(from: nil)
    }

    /// Handles `first` and whatever else is waiting, then registers for the next wake-up and ends.
    private func run(from first: MailboxBatch?) async {
        var batch = first
        while true {
            if let current = batch {
                do {
                    if let close = try await loop.handle(current) { return await finish(close) }
                } catch {
                    return await fail(error)
                }
            }
            loop.prepareToSleep(writer: writer)
            batch = mailbox.next { [self] batch in Task { await self.run(from: batch) } }
            if batch == nil { return }
        }
    }

    /// Ends the connection with the close code its loop chose (0: the client left, and the
    /// frame handler already ends the channel).
    private func finish(_ close: SocketLoop.Close) async {
        release()
        guard close.0 != 0 else { return }
        try? await mailbox.writing { try await output.close(code: close.0, reason: close.1) }
    }

    /// Ends the connection after an error of the loop (a database failure): 1011, as
    /// Hummingbird's WebSocket layer closed it; nothing when the watchdog already closes it.
    private func fail(_ error: any Error) async {
        release()
        if mailbox.hasStalled { return }
        session.center.logger.warning("notification socket failed", metadata: ["error.type": "\(type(of: error))"])
        try? await output.close(code: 1011, reason: "")
    }

    /// Stops the deadline and leaves the hub.
    private func release() {
        authDeadline.cancel()
        if let registered = loop.registered {
            session.center.hub.unregister(mailbox, tenantId: registered.tenantId, userId: registered.userId, transport: .websocket)
        }
    }
}

/// The output of a pipeline-served socket: frames go straight to the channel (from any thread,
/// in the order written); a write waits only while the peer is not reading.
struct ChannelOutput: SocketOutput {
    let channel: any Channel
    let handler: NIOLoopBound<SocketFrameHandler>

    func write(_ frame: WebSocketFrame) async throws {
        let written = channel.eventLoop.makePromise(of: Void.self)
        channel.writeAndFlush(frame, promise: written)
        // Under the mailbox's watchdog: a peer that stops reading parks the loop here until
        // the write goes out or the watchdog closes the channel.
        if !channel.isWritable { try await written.futureResult.get() }
    }

    func close(code: UInt16, reason: String) async throws {
        let handler = self.handler
        try await channel.eventLoop.submit { handler.value.close(code: code, reason: reason) }.get()
    }
}

/// The event-loop side of a pipeline-served `/ws` connection (RFC 6455 §5–7, as Hummingbird's
/// WebSocket layer answered before): assembles text messages (64 KiB at most, else 1009) and
/// hands them, parsed, to the connection's mailbox; a binary message is a protocol violation
/// its loop answers; answers pings with pongs; answers a client's close frame with one (1000,
/// or 1002 for a code outside those a peer may send) and ends the connection; closes with 1002
/// on reserved bits, unknown opcodes or broken fragmentation. After the server's own close
/// frame the output is shut and the connection ends at the client's close, or after 15 s.
/// A server shutdown (the HTTP server's quiescing) closes the mailbox: the loop answers 1001.
final class SocketFrameHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    /// The largest message assembled from fragments.
    static let maxMessageSize = 64 * 1024
    /// How long the server waits for the client's close frame after sending its own.
    static let closeTimeout = TimeAmount.seconds(15)

    /// Set right after the handler is added, before any frame can arrive (same event loop tick).
    var mailbox: Mailbox?
    private var context: ChannelHandlerContext?
    /// The text message being assembled from fragments, and whether it is binary.
    private var fragments: ByteBuffer?
    private var fragmentsBinary = false
    private var closeSent = false
    private var ended = false

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !ended else { return }
        let frame = unwrapInboundIn(data)
        // RFC 6455 §5.1: every frame from a client is masked; the server closes the connection
        // on one that is not (with 1002, as §7.4.1 allows).
        guard frame.maskKey != nil else { return protocolError(context, 1002) }
        switch frame.opcode {
        case .connectionClose:
            receivedClose(context, frame)
        case .ping:
            guard !closeSent else { return }
            context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .pong, data: frame.unmaskedData)), promise: nil)
        case .pong:
            return
        case .text, .binary, .continuation:
            guard !frame.rsv1, !frame.rsv2, !frame.rsv3 else { return protocolError(context, 1002) }
            received(context, frame)
        default:
            protocolError(context, 1002)
        }
    }

    /// A data frame: a whole message goes to the mailbox, a fragment is kept.
    private func received(_ context: ChannelHandlerContext, _ frame: WebSocketFrame) {
        var payload = frame.unmaskedData
        if frame.opcode == .continuation {
            guard var message = fragments else { return protocolError(context, 1002) }
            guard message.readableBytes + payload.readableBytes <= Self.maxMessageSize else { return protocolError(context, 1009) }
            message.writeBuffer(&payload)
            guard frame.fin else {
                fragments = message
                return
            }
            fragments = nil
            deliver(message, binary: fragmentsBinary)
        } else {
            guard fragments == nil else { return protocolError(context, 1002) }
            guard frame.fin else {
                fragments = payload
                fragmentsBinary = frame.opcode == .binary
                return
            }
            deliver(payload, binary: frame.opcode == .binary)
        }
    }

    private func deliver(_ payload: ByteBuffer, binary: Bool) {
        guard !closeSent else { return }
        // Text is decoded as Hummingbird's layer did (invalid UTF-8 repaired, not refused).
        mailbox?.push(client: binary ? .violation("binary frames are not part of the protocol") : ClientMessage.parse(String(buffer: payload)))
    }

    /// The client's close frame: answered (when the server has not closed first), then the end.
    private func receivedClose(_ context: ChannelHandlerContext, _ frame: WebSocketFrame) {
        if !closeSent {
            var data = frame.unmaskedData
            let code = data.readInteger(as: UInt16.self)
            // RFC 6455 §7.4: a peer may send 1000–1003, 1007–1011 and 3000–4999 (Hummingbird's
            // rule: below 3000 or above 4999 is refused unless it is a known code).
            let known: Set<UInt16> = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011]
            let valid = frame.unmaskedData.readableBytes == 0 || (code.map { known.contains($0) || (3000...4999).contains($0) } ?? false)
            sendClose(context, code: valid ? 1000 : 1002, reason: "")
        }
        end(context)
    }

    /// Closes the connection for a protocol error: close frame, and the loop is told the client left.
    private func protocolError(_ context: ChannelHandlerContext, _ code: UInt16) {
        fragments = nil
        mailbox?.push(client: .disconnected)
        sendClose(context, code: code, reason: "")
    }

    /// The server's close frame (once), then its side of the connection is shut; the client's
    /// close frame or the timeout ends the connection.
    func close(code: UInt16, reason: String) {
        guard let context, !ended else { return }
        sendClose(context, code: code, reason: reason)
    }

    private func sendClose(_ context: ChannelHandlerContext, code: UInt16, reason: String) {
        guard !closeSent else { return }
        closeSent = true
        var data = context.channel.allocator.buffer(capacity: 2 + reason.utf8.count)
        data.writeInteger(code)
        data.writeString(reason)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .connectionClose, data: data))).whenComplete { _ in
            channel.close(mode: .output, promise: nil)
        }
        channel.eventLoop.scheduleTask(in: Self.closeTimeout) { channel.close(promise: nil) }
    }

    /// The client is done: the loop is told, and the connection closes.
    private func end(_ context: ChannelHandlerContext) {
        guard !ended else { return }
        ended = true
        mailbox?.push(client: .disconnected)
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !ended {
            ended = true
            mailbox?.push(client: .disconnected)
        }
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent {
            // Server shutdown: the loop closes with 1001.
            mailbox?.close()
        } else if let event = event as? ChannelEvent, event == .inputClosed {
            end(context)
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard error is NIOWebSocketError else { return end(context) }
        // A broken frame: the protocol error handler before this one sends its close frame and
        // closes the connection once it is written; closing here could cut that frame off.
        guard !ended else { return }
        ended = true
        closeSent = true
        mailbox?.push(client: .disconnected)
    }
}

@available(*, unavailable)
extension SocketFrameHandler: Sendable {}
