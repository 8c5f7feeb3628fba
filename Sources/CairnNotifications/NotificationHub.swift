import CairnAccounts
import CairnHTTP
import CairnStorage
import Logging
import Metrics
import NIOCore
import SQLKit
import Synchronization
import Tracing

/// A live notification as the hub hands it to every connection of its recipient on this node:
/// the row, and its WebSocket message encoded once here rather than once per socket (a user
/// with ten sockets shares one buffer; NIO writes it without copying).
final class LiveRow: Sendable {
    /// The stored notification.
    let row: StoredNotification
    /// `{"type":"notification","seq":n,"notification":{…}}`, the `/ws` text frame's payload.
    let webSocketMessage: ByteBuffer

    /// Encodes `row`'s WebSocket message.
    init(_ row: StoredNotification) {
        self.row = row
        self.webSocketMessage = Self.webSocketMessage(row)
    }

    /// The row's sequence number.
    var seq: Int64 { row.seq }

    /// The `/ws` message delivering `row`.
    static func webSocketMessage(_ row: StoredNotification) -> ByteBuffer {
        var json = JSONWriter(capacity: 300 + row.data.utf8.count + row.body.utf8.count)
        json.objectStart()
        json.key("type")
        json.string("notification")
        json.key("seq")
        json.int(row.seq)
        json.key("notification")
        row.writeJSON(to: &json)
        json.objectEnd()
        return json.buffer
    }
}

/// A notification the hub wrote to a WebSocket while the connection's loop slept (see
/// ``Mailbox/armDirect(after:room:ackTimeout:writer:)``): the loop takes it into its in-flight
/// window when it next wakes.
struct DirectSend: Sendable {
    /// The row's seq.
    let seq: Int64
    /// The message written, kept for a resend.
    let message: ByteBuffer
    /// When it was handed to the connection.
    let sentAt: ContinuousClock.Instant
}

/// How the hub writes to a WebSocket without waking its loop.
struct DirectWriter: Sendable {
    /// False while the peer is not reading: the loop's own write then parks under the watchdog.
    let isWritable: @Sendable () -> Bool
    /// Queues text messages on the connection behind everything the loop queued before.
    let write: @Sendable ([ByteBuffer]) -> Void
}

/// What a live connection's mailbox holds when its consumer wakes.
struct MailboxBatch: Sendable {
    /// Live notifications, in arrival order (not necessarily seq order).
    var rows: [LiveRow] = []
    /// Notifications the hub wrote directly while the consumer slept, in seq order; they do not
    /// wake it (``isEmpty`` ignores them).
    var sent: [DirectSend] = []
    /// Rows were dropped because the mailbox was full: re-read from the database.
    var overflowed = false
    /// The hub's ticker fired (heartbeats, token checks, ack timeouts).
    var ticked = false
    /// When the tick fired: the consumer measures its intervals from it, so a check due at a
    /// tick is not put off to the next one by the time it took to wake.
    var tickedAt: ContinuousClock.Instant?
    /// Messages from the client (WebSocket), in order.
    var client: [ClientMessage] = []
    /// The highest cumulative ack taken aside (see ``Mailbox/takeAcksAside(wake:)``), and when
    /// the last of them arrived. They ride along with whatever wakes the consumer next.
    var acked: Int64?
    var ackedAt: ContinuousClock.Instant?
    /// An ack arrived while the consumer asked to be woken by one.
    var ackWake = false
    /// The mailbox was closed (server shutdown or the socket ended).
    var closed = false
    /// More client messages arrived than the mailbox holds.
    var clientFlood = false
    /// The node's subscription (re)started listening: announcements may have been missed
    /// before it, so the connection re-reads its inbox after its cursor.
    var resync = false
    /// The user's sessions changed (a logout on any node): re-check the token now.
    var authCheck = false

    /// Nothing that needs the consumer: acks taken aside alone do not count.
    var isEmpty: Bool {
        rows.isEmpty && !overflowed && !ticked && client.isEmpty && !closed && !clientFlood && !resync && !ackWake && !authCheck
    }
}

/// The single-consumer queue of one live connection (SSE stream or WebSocket). Producers (the
/// hub, the ticker, the socket's frame reader) push without waiting; the connection's consumer
/// (one task at a time) takes everything at once. Bounded: past `capacity` rows it drops them
/// and flags an overflow, so a slow consumer costs at most `capacity` rows of memory and
/// nothing is lost (it re-reads).
///
/// It is also the connection's write watchdog. Writes wait for the peer (NIO's outbound
/// writers suspend while the channel is not writable), so a client that stops reading parks
/// its consumer inside a write, where it sees neither overflows nor ticks. The consumer wraps
/// each write in ``writing(_:)``; the hub's ticker (``tick()``) and, if asked, an overflow
/// during a write call `onStall` from outside, which closes the channel and so fails the write.
final class Mailbox: Sendable {
    private struct State {
        var batch = MailboxBatch()
        var waiter: Waiter?
        var isClosed = false
        /// When the write in progress started (nil: none).
        var writingSince: ContinuousClock.Instant?
        /// `onStall` ran (it runs once).
        var stalled = false
        /// The consumer's next periodic check; ticks before it do not wake it (nil: every tick does).
        var checkAt: ContinuousClock.Instant?
        /// Acks are kept aside rather than queued; `wakeOnAck` says whether one wakes the consumer.
        var acksAside = false
        var wakeOnAck = true
        /// Set while the consumer sleeps caught up: live rows that continue `last` are written
        /// by the producer itself (see ``Mailbox/armDirect(after:room:ackTimeout:writer:)``).
        var direct: Direct?

        struct Direct {
            /// The last seq written to the socket.
            var last: Int64
            /// How many more rows the in-flight window holds.
            var room: Int
            let ackTimeout: Duration
            let writer: DirectWriter
        }

        /// Hands the batch to the consumer, which is awake from then on: direct writes stop.
        mutating func takeBatch() -> MailboxBatch {
            let taken = batch
            batch = MailboxBatch()
            direct = nil
            return taken
        }

        /// The sleeping consumer and what to wake it with, if it sleeps.
        mutating func wake() -> (Waiter, MailboxBatch)? {
            guard let waiter else { return nil }
            self.waiter = nil
            return (waiter, takeBatch())
        }

        /// Writes `rows` to the socket if they continue what it was last sent, in order, and fit
        /// its window; false (and direct writes end) when the consumer must handle them.
        mutating func writeDirectly(_ rows: [LiveRow]) -> Bool {
            // A pending session check goes first: nothing more is written before it.
            guard var direct, !isClosed, !stalled, batch.rows.isEmpty, !batch.overflowed, !batch.authCheck else { return false }
            let fresh = rows.filter { $0.seq > direct.last }.sorted { $0.seq < $1.seq }
            guard !fresh.isEmpty else { return true }
            var expected = direct.last + 1
            for row in fresh {
                guard row.seq == expected else {
                    self.direct = nil
                    return false
                }
                expected += 1
            }
            guard fresh.count <= direct.room, direct.writer.isWritable() else {
                self.direct = nil
                return false
            }
            let now = ContinuousClock.now
            // Written under the lock: two producers cannot reorder one socket's frames.
            direct.writer.write(fresh.map(\.webSocketMessage))
            for row in fresh { batch.sent.append(DirectSend(seq: row.seq, message: row.webSocketMessage, sentAt: now)) }
            direct.last = expected - 1
            direct.room -= fresh.count
            // The ack timeout of what was just sent is a check the consumer did not know of.
            checkAt = min(checkAt ?? now + direct.ackTimeout, now + direct.ackTimeout)
            self.direct = direct
            return true
        }
    }
    /// How the sleeping consumer is woken: a task waiting in ``next()``, or a callback
    /// registered by ``next(orWake:)`` (a consumer with no task of its own while it sleeps).
    enum Waiter: Sendable {
        case task(CheckedContinuation<MailboxBatch, Never>)
        case callback(@Sendable (MailboxBatch) -> Void)

        /// Hands `batch` to the consumer (outside the lock).
        func resume(_ batch: MailboxBatch) {
            switch self {
            case .task(let continuation): continuation.resume(returning: batch)
            case .callback(let wake): wake(batch)
            }
        }
    }
    /// Why the watchdog gave up on a connection.
    enum Stall: Sendable {
        /// A write did not complete within the write timeout.
        case writeTimeout
        /// The mailbox overflowed while a write was waiting.
        case overflow
    }
    private let state = Mutex(State())
    let capacity: Int
    private let writeTimeout: Duration
    private let stallOnOverflow: Bool
    private let onStall: (@Sendable (Stall) -> Void)?

    /// - Parameters:
    ///   - writeTimeout: a write still waiting after this long is a stall.
    ///   - stallOnOverflow: an overflow while a write waits is a stall at once (WebSocket: an
    ///     overflow closes the socket anyway; SSE re-reads instead, so it passes false).
    ///   - onStall: closes the connection; runs at most once, on a producer's task.
    init(
        capacity: Int, writeTimeout: Duration = .seconds(10), stallOnOverflow: Bool = false,
        onStall: (@Sendable (Stall) -> Void)? = nil
    ) {
        self.capacity = capacity
        self.writeTimeout = writeTimeout
        self.stallOnOverflow = stallOnOverflow
        self.onStall = onStall
    }

    /// Runs one write of the consumer under the watchdog.
    func writing<T>(_ write: () async throws -> T) async throws -> T {
        state.withLock { $0.writingSince = .now }
        defer { state.withLock { $0.writingSince = nil } }
        return try await write()
    }

    /// True once `onStall` has run: the connection is being closed.
    var hasStalled: Bool { state.withLock { $0.stalled } }

    private func stall(_ reason: Stall) {
        guard let onStall else { return }
        let first = state.withLock { state -> Bool in
            if state.stalled { return false }
            state.stalled = true
            return true
        }
        if first { onStall(reason) }
    }

    private func mutate(_ change: (inout MailboxBatch) -> Void) {
        let resume = state.withLock { state -> (Waiter, MailboxBatch)? in
            change(&state.batch)
            return state.wake()
        }
        if let (waiter, batch) = resume { waiter.resume(batch) }
    }

    /// Lets producers write live rows that continue seq `last` straight to the socket while the
    /// consumer sleeps, at most `room` of them, instead of waking it: a tenant broadcast then
    /// costs each socket one queued write on its event loop, not a task switch. It ends when
    /// the consumer is next handed a batch (which carries what was written, in
    /// ``MailboxBatch/sent``), or at the first row that does not continue `last`, would
    /// overflow `room`, or meets an unwritable socket: that row wakes the consumer as before.
    /// The first resend of a row written so is due `ackTimeout` after it, and wakes the consumer.
    func armDirect(after last: Int64, room: Int, ackTimeout: Duration, writer: DirectWriter) {
        guard room > 0 else { return }
        state.withLock { $0.direct = .init(last: last, room: room, ackTimeout: ackTimeout, writer: writer) }
    }

    /// Adds live rows (or writes them, see ``armDirect(after:room:ackTimeout:writer:)``).
    func push(_ rows: [LiveRow]) {
        let capacity = self.capacity
        var overflowedNow = false
        let resume = state.withLock { state -> (Waiter, MailboxBatch)? in
            if state.direct != nil, state.writeDirectly(rows) { return nil }
            if state.batch.overflowed { return state.wake() }
            if state.batch.rows.count + rows.count > capacity {
                state.batch.rows.removeAll()
                state.batch.overflowed = true
                overflowedNow = true
            } else {
                state.batch.rows.append(contentsOf: rows)
            }
            return state.wake()
        }
        if let (waiter, batch) = resume { waiter.resume(batch) }
        if overflowedNow, stallOnOverflow, state.withLock({ $0.writingSince != nil }) { stall(.overflow) }
    }

    /// Adds a client message; more than 64 waiting is a flood. Acks are cumulative, so an ack
    /// following another waiting ack replaces it with the higher seq: a client that acks every
    /// frame of a long replay (as the protocol invites) is never taken for a flood.
    func push(client message: ClientMessage) {
        if case .ack(let seq) = message {
            // An ack only frees room in the in-flight window: it wakes the consumer when that
            // window is full, and otherwise rides along with the next wake (one task switch
            // saved per delivered notification).
            let now = ContinuousClock.now
            let outcome = state.withLock { state -> (aside: Bool, resume: (Waiter, MailboxBatch)?) in
                guard state.acksAside else { return (false, nil) }
                state.batch.acked = max(state.batch.acked ?? seq, seq)
                state.batch.ackedAt = now
                guard state.wakeOnAck else { return (true, nil) }
                state.batch.ackWake = true
                return (true, state.wake())
            }
            if let (waiter, batch) = outcome.resume { waiter.resume(batch) }
            if outcome.aside { return }
        }
        mutate { batch in
            if case .ack(let seq) = message, case .ack(let previous)? = batch.client.last {
                batch.client[batch.client.count - 1] = .ack(seq: max(seq, previous))
            } else if batch.client.count >= 64 {
                batch.clientFlood = true
            } else {
                batch.client.append(message)
            }
        }
    }

    /// From now on acks are kept aside instead of queued in order (the consumer has subscribed,
    /// so their order among other messages no longer matters); `wake` says whether an ack
    /// wakes the consumer (its in-flight window is full) or waits for the next wake.
    func takeAcksAside(wake: Bool) {
        state.withLock {
            $0.acksAside = true
            $0.wakeOnAck = wake
            // An ack set aside before the window filled must not leave the consumer waiting.
            if wake, $0.batch.acked != nil { $0.batch.ackWake = true }
        }
    }

    /// True once acks are kept aside (the consumer subscribed): from then on their order among
    /// other client messages no longer matters.
    var setsAcksAside: Bool { state.withLock { $0.acksAside } }

    /// Asks the consumer to re-read its inbox after its cursor.
    func requestResync() {
        mutate { $0.resync = true }
    }

    /// Asks the consumer to re-check its token at once (its user's sessions changed). Until it
    /// takes the request, live rows wait in the mailbox rather than being written directly,
    /// and ``authCheckPending`` tells the consumer to stop sending.
    func requestAuthCheck() {
        let resume = state.withLock { state -> (Waiter, MailboxBatch)? in
            state.batch.authCheck = true
            state.direct = nil
            return state.wake()
        }
        if let (waiter, batch) = resume { waiter.resume(batch) }
    }

    /// True while a session check asked for by ``requestAuthCheck()`` waits for the consumer:
    /// it sends no notification before making it (the user may be logged out or deleted).
    var authCheckPending: Bool { state.withLock { $0.batch.authCheck } }

    /// Tells when the consumer's next periodic check is due: until then ticks leave it asleep
    /// (10,000 idle sockets woken every second cost a tenth of a core and delayed broadcasts).
    func nextCheck(at instant: ContinuousClock.Instant) {
        state.withLock { $0.checkAt = instant }
    }

    /// Wakes the consumer for its periodic checks if one is due at `now`, and checks the write in progress.
    func tick(now: ContinuousClock.Instant = .now) {
        let (due, since) = state.withLock { state in (state.checkAt.map { now >= $0 } ?? true, state.writingSince) }
        if due {
            mutate {
                $0.ticked = true
                $0.tickedAt = now
            }
        }
        if let since, now - since >= writeTimeout { stall(.writeTimeout) }
    }

    /// Ends the consumer's loop.
    func close() {
        state.withLock { $0.isClosed = true }
        mutate { $0.closed = true }
    }

    /// Everything that arrived since the last call, or nil when nothing did: then `wake` is
    /// called with the next batch, once, from the producer that brings it (it must not block).
    /// The consumer thus holds no task while it sleeps.
    func next(orWake wake: @escaping @Sendable (MailboxBatch) -> Void) -> MailboxBatch? {
        state.withLock { state -> MailboxBatch? in
            if state.isClosed { state.batch.closed = true }
            if state.batch.isEmpty {
                state.waiter = .callback(wake)
                return nil
            }
            return state.takeBatch()
        }
    }

    /// Everything that arrived since the last call; waits while there is nothing.
    func next() async -> MailboxBatch {
        await withCheckedContinuation { continuation in
            let ready = state.withLock { state -> MailboxBatch? in
                if state.isClosed { state.batch.closed = true }
                if state.batch.isEmpty {
                    state.waiter = .task(continuation)
                    return nil
                }
                return state.takeBatch()
            }
            if let ready { continuation.resume(returning: ready) }
        }
    }
}

/// This node's live fan-out. Publishers announce new notification ids on the EventBus
/// (`LISTEN/NOTIFY` on PostgreSQL, so every node hears them; in-process on SQLite); the hub
/// holds one subscription per node, reads the announced rows once per announcement, and hands
/// each row to the mailboxes of its recipient's connections on this node.
///
/// Announcements are hints: a connection that sees a gap in seq re-reads from the database,
/// and announced ids not yet visible (announced inside a caller's transaction on SQLite, before
/// its commit) are re-read a few times.
package final class NotificationHub: Sendable {
    /// The EventBus channel carrying ids of new notifications, comma-separated.
    static let channel = "cairn_notifications"

    private struct State {
        var mailboxes: [String: [ObjectIdentifier: Mailbox]] = [:]
        var subscription: Task<Void, Never>?
        var ticker: Task<Void, Never>?
        var sessionWatch: Task<Void, Never>?
        var count = 0
        /// Announced ids not read yet, and whether a drain is running: under load, many
        /// announcements are read with one query instead of one query each.
        var pendingIds = PendingBatches<String>()
        /// Observers of ``connectionCount`` (see ``connectionCounts()``).
        var countObservers: [UInt64: AsyncStream<Int>.Continuation] = [:]
        var nextObserver: UInt64 = 0
        /// Live connections held per user on this node (``reserve(tenantId:userId:)``).
        var slots: [String: Int] = [:]
    }
    private let bus: EventBus
    private let store: NotificationStore
    private let accounts: AccountService
    private let logger: Logger
    private let tickInterval: Duration
    private let state = Mutex(State())

    /// A hub announcing on `bus`, reading rows from `store`; it hears `accounts`' session
    /// changes so a logout on any node ends the user's live connections at once. Those made on
    /// this node reach its connections before the request that made them is answered.
    init(
        bus: EventBus, store: NotificationStore, accounts: AccountService, tickInterval: Duration, maxUserConnections: Int, logger: Logger
    ) {
        self.bus = bus
        self.store = store
        self.accounts = accounts
        self.tickInterval = tickInterval
        self.maxUserConnections = max(1, maxUserConnections)
        self.logger = logger
        LiveTransport.publishAll()
        accounts.onSessionChange { [weak self] userId in self?.requestAuthCheck(userId: userId) }
    }

    /// Makes every live connection of `userId` on this node re-check its token before it
    /// delivers anything more (their user's sessions changed: a logout, a deletion).
    private func requestAuthCheck(userId: String) {
        let suffix = "/" + userId
        let targets = state.withLock { state in
            state.mailboxes.filter { $0.key.hasSuffix(suffix) }.values.flatMap(\.values)
        }
        for mailbox in targets { mailbox.requestAuthCheck() }
    }

    /// Live connections on this node.
    package var connectionCount: Int { state.withLock { $0.count } }

    /// Most live connections (SSE and WebSocket together) one user may hold on this node
    /// (`CAIRN_NOTIFICATIONS_MAX_USER_CONNECTIONS`), so that one user's streams cannot take
    /// every connection the node serves (`CAIRN_HTTP_MAX_CONNECTIONS`) from the others.
    let maxUserConnections: Int

    /// Takes one of `userId`'s live-connection slots on this node, held until the returned
    /// slot is released or dropped; nil when the user already holds ``maxUserConnections``.
    func reserve(tenantId: String, userId: String) -> LiveSlot? {
        let key = Self.key(tenantId, userId)
        let taken = state.withLock { state -> Bool in
            guard state.slots[key, default: 0] < maxUserConnections else { return false }
            state.slots[key, default: 0] += 1
            return true
        }
        guard taken else {
            Counter(label: "cairn_live_connections_refused_total").increment()
            return nil
        }
        return LiveSlot { [weak self] in
            self?.state.withLock { state in
                state.slots[key, default: 1] -= 1
                if state.slots[key] == 0 { state.slots[key] = nil }
            }
        }
    }

    /// ``connectionCount`` now and after each change, until the consuming task is cancelled:
    /// for callers that wait for connections to come and go (the newest count is kept when the
    /// consumer falls behind).
    package func connectionCounts() -> AsyncStream<Int> {
        let (stream, continuation) = AsyncStream<Int>.makeStream(bufferingPolicy: .bufferingNewest(1))
        let id = state.withLock { state -> UInt64 in
            state.nextObserver += 1
            state.countObservers[state.nextObserver] = continuation
            continuation.yield(state.count)
            return state.nextObserver
        }
        continuation.onTermination = { [weak self] _ in
            _ = self?.state.withLock { $0.countObservers.removeValue(forKey: id) }
        }
        return stream
    }

    static func key(_ tenantId: String, _ userId: String) -> String { tenantId + "/" + userId }

    /// Announces stored notifications to every node, 100 ids per message (PostgreSQL caps a
    /// payload at 8000 bytes). With `db` in a transaction, delivery happens on commit (both engines).
    func announce(_ ids: [String], on db: (any SQLDatabase)?) async throws {
        var start = 0
        while start < ids.count {
            let end = min(start + 100, ids.count)
            try await bus.publish(channel: Self.channel, payload: ids[start..<end].joined(separator: ","), on: db)
            start = end
        }
    }

    /// Registers a connection's mailbox, reached over `transport`; the subscription exists
    /// before the caller reads its backlog, so nothing committed after that read can be missed.
    func register(_ mailbox: Mailbox, tenantId: String, userId: String, transport: LiveTransport) {
        let start = state.withLock { state -> Bool in
            state.mailboxes[Self.key(tenantId, userId), default: [:]][ObjectIdentifier(mailbox)] = mailbox
            state.count += 1
            for observer in state.countObservers.values { observer.yield(state.count) }
            return state.subscription == nil
        }
        transport.connectionOpened()
        if start { startSubscription() }
    }

    /// Removes a connection's mailbox, registered over `transport`.
    func unregister(_ mailbox: Mailbox, tenantId: String, userId: String, transport: LiveTransport) {
        let removed = state.withLock { state -> Bool in
            let key = Self.key(tenantId, userId)
            let removed = state.mailboxes[key]?.removeValue(forKey: ObjectIdentifier(mailbox)) != nil
            if removed { state.count -= 1 }
            if state.mailboxes[key]?.isEmpty == true { state.mailboxes[key] = nil }
            for observer in state.countObservers.values { observer.yield(state.count) }
            return removed
        }
        if removed { transport.connectionClosed() }
    }

    /// Every connection's mailbox on this node, at this moment.
    private var allMailboxes: [Mailbox] {
        state.withLock { state in state.mailboxes.values.flatMap(\.values) }
    }

    /// Closes every connection's mailbox (server shutdown).
    func closeAll() {
        for mailbox in allMailboxes { mailbox.close() }
    }

    /// Closes every live connection (WebSockets with 1001 "going away", RFC 6455 §7.4.1; SSE
    /// streams end) and waits until all have gone or `timeout` passed: run on SIGTERM before
    /// the HTTP server's own shutdown, whose WebSocket layer would otherwise close them first,
    /// with 1000.
    package func closeAllAndWait(timeout: Duration) async {
        let deadline = ContinuousClock.now + timeout
        closeAll()
        while state.withLock({ !$0.mailboxes.isEmpty }), ContinuousClock.now < deadline {
            // Connections unregister as their handlers return; polled, as there is no event for "none left".
            try? await Task.sleep(for: .milliseconds(20))
        }
    }

    /// Stops the subscription and the ticker.
    func stop() {
        let tasks = state.withLock { state -> [Task<Void, Never>] in
            defer {
                state.subscription = nil
                state.ticker = nil
                state.sessionWatch = nil
            }
            return [state.subscription, state.ticker, state.sessionWatch].compactMap { $0 }
        }
        for task in tasks { task.cancel() }
    }

    private func startSubscription() {
        // Until LISTEN is in effect (and again after it reconnects) announcements are lost; a
        // connection that read its backlog before that moment would otherwise wait for its
        // periodic resync for what was committed in between. So every connection re-reads then.
        let stream = bus.subscribe(channel: Self.channel) { [weak self] in
            guard let self else { return }
            for mailbox in self.allMailboxes { mailbox.requestResync() }
        }
        let subscription = Task { [weak self] in
            for await payload in stream {
                guard let self else { return }
                self.enqueue(payload.split(separator: ",").map(String.init))
            }
        }
        // A logout on any node: the user's connections re-check their tokens now, not at their
        // next periodic check. Announcements missed while not listening are covered by a
        // re-check of every connection once listening (again).
        let changes = accounts.sessionChanges { [weak self] in
            guard let self else { return }
            for mailbox in self.allMailboxes { mailbox.requestAuthCheck() }
        }
        let sessionWatch = Task { [weak self] in
            for await userId in changes {
                guard let self else { return }
                self.requestAuthCheck(userId: userId)
            }
        }
        let interval = tickInterval
        let ticker = Task { [weak self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                guard let self else { return }
                let now = ContinuousClock.now
                for mailbox in self.allMailboxes { mailbox.tick(now: now) }
            }
        }
        let keep = state.withLock { state -> Bool in
            guard state.subscription == nil else { return false }
            state.subscription = subscription
            state.ticker = ticker
            state.sessionWatch = sessionWatch
            return true
        }
        if !keep {
            subscription.cancel()
            ticker.cancel()
            sessionWatch.cancel()
        }
    }

    private func enqueue(_ ids: [String]) {
        if state.withLock({ $0.pendingIds.add(contentsOf: ids) }) { Task { await self.drain() } }
    }

    /// Reads everything announced so far, 500 ids per query, until nothing is pending.
    private func drain() async {
        while true {
            let batch = state.withLock { $0.pendingIds.next(upTo: 500) }
            if batch.isEmpty { return }
            await deliver(ids: batch, attempt: 0)
        }
    }

    /// Reads announced rows and hands them to local mailboxes. Ids not visible yet are retried
    /// after 20 ms, 100 ms, 500 ms and 2 s, off the subscription's task so later
    /// announcements are not held up.
    private func deliver(ids: [String], attempt: Int) async {
        guard state.withLock({ !$0.mailboxes.isEmpty }) else { return }
        // A trace of its own: the announcement crossed the database's NOTIFY, which carries ids only.
        let read = await TraceContext.withSpan("notification live delivery", ofKind: .consumer) { span -> [StoredNotification]? in
            let rows: [StoredNotification]
            do {
                rows = try await store.notifications(ids: ids)
            } catch {
                logger.warning("notification hub read failed; connections catch up on their next gap")
                return nil
            }
            // Each row's frame is encoded once here, for all of its recipient's connections.
            let grouped = Dictionary(grouping: rows.map(LiveRow.init)) { Self.key($0.row.tenantId, $0.row.userId) }
            let targets = state.withLock { state in
                grouped.compactMap { key, rows in state.mailboxes[key].map { (Array($0.values), rows) } }
            }
            var connections = 0
            for (mailboxes, rows) in targets {
                for mailbox in mailboxes { mailbox.push(rows) }
                connections += mailboxes.count
            }
            span.attributes["cairn.notification.count"] = rows.count
            span.attributes["cairn.notification.connections"] = connections
            return rows
        }
        guard let rows = read else { return }
        if rows.count < ids.count, attempt < 4 {
            let found = Set(rows.map(\.id))
            let missing = ids.filter { !found.contains($0) }
            let delays: [Duration] = [.milliseconds(20), .milliseconds(100), .milliseconds(500), .seconds(2)]
            Task { [weak self] in
                try? await Task.sleep(for: delays[attempt])
                await self?.deliver(ids: missing, attempt: attempt + 1)
            }
        }
    }
}

/// How a live connection reaches its client: the label of
/// `cairn_notifications_connections{transport}` (live connections of this process, a gauge).
package enum LiveTransport: String, Sendable, CaseIterable {
    /// The notifications WebSocket (RFC 6455).
    case websocket
    /// `GET /notifications/stream` (Server-Sent Events).
    case sse

    /// Open connections per transport, across the process's hubs.
    private static let open = Mutex([LiveTransport: Int]())

    /// Counts a connection opened over this transport.
    func connectionOpened() { change(by: 1) }

    /// Counts a connection of this transport closed.
    func connectionClosed() { change(by: -1) }

    private func change(by delta: Int) {
        let count = Self.open.withLock { open in
            open[self, default: 0] += delta
            return open[self, default: 0]
        }
        // Made per use: metrics made before the Prometheus bootstrap would stay no-ops.
        Gauge(label: "cairn_notifications_connections", dimensions: [("transport", rawValue)]).record(count)
    }

    /// Publishes every transport's count (0 before any connection) and slow-consumer closes, so
    /// the series exist from start-up.
    static func publishAll() {
        for transport in allCases {
            transport.change(by: 0)
            Counter(label: "cairn_notifications_slow_consumers_total", dimensions: [("transport", transport.rawValue)]).increment(by: 0)
        }
    }
}

/// One live connection's place in its user's allowance on a node (see
/// ``NotificationHub/reserve(tenantId:userId:)``): given back once, when the connection ends
/// (``release()``) or when the slot is dropped without it, so a response that never started
/// does not keep it.
final class LiveSlot: Sendable {
    private let giveBack: Mutex<(@Sendable () -> Void)?>

    init(_ giveBack: @escaping @Sendable () -> Void) {
        self.giveBack = Mutex(giveBack)
    }

    /// Gives the slot back (once; later calls do nothing).
    func release() {
        giveBack.withLock { action in
            defer { action = nil }
            return action
        }?()
    }

    deinit { release() }
}
