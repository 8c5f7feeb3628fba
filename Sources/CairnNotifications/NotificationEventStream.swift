import CairnAccounts
import CairnHTTP
import CairnStorage
import Foundation
import Hummingbird
import NIOCore

/// One open `GET /notifications/stream` response: the replay from the client's cursor, then
/// the live loop, which delivers the hub's batches gap-free and duplicate-free (see
/// ``LiveCursor``) and, on the mailbox's ticks, ends the stream at the token's expiry or its
/// revocation, re-reads from the database, and sends heartbeats. A session change announced
/// by any node (a logout) makes it re-check its token at once.
struct NotificationEventStream {
    let center: Notifier
    let token: String
    let expiresAt: Date
    let mailbox: Mailbox
    private var cursor: LiveCursor
    private var lastWrite = ContinuousClock.now
    private var lastAuthCheck = ContinuousClock.now
    private var lastResync = ContinuousClock.now
    /// Sending stopped for a session check (see ``send(_:writer:)``): rows after the cursor may
    /// not have been sent, so the stream catches up once the session is found to go on.
    private var interrupted = false

    /// Thrown by ``send(_:writer:)`` when a session check waits in the mailbox.
    private struct SessionCheckPending: Error {}

    /// A stream for `identity`'s inbox, fed by `mailbox` (registered with the hub by the caller).
    init(center: Notifier, identity: Identity, token: String, expiresAt: Date, mailbox: Mailbox) {
        self.center = center
        self.token = token
        self.expiresAt = expiresAt
        self.mailbox = mailbox
        self.cursor = LiveCursor(store: center.store, tenantId: identity.tenantId, userId: identity.userId)
    }

    /// Fixes the starting point (`since`, else the user's newest seq), opens the stream with
    /// its `retry:` advice, and replays every stored notification after the starting point.
    mutating func open(since: Int64?, writer: inout any ResponseBodyWriter) async throws {
        // The starting point is fixed before the client sees the stream open: a row stored
        // after the first bytes reach it is after the cursor, so it is delivered (read later,
        // the cursor could pass a row the client expects, and drop it).
        // A cursor past the newest seq (a client that kept one across a restore of the
        // database, or made one up) starts at the newest: kept as sent, every later row would
        // look already delivered and the stream would stay silent (Centrifugo's recovery from
        // a position it does not hold goes on from the present, too).
        let newest = try await center.store.currentSeq(tenantId: cursor.tenantId, userId: cursor.userId)
        cursor.last = since.map { min($0, newest) } ?? newest
        try await mailbox.writing { try await writer.write(ByteBuffer(string: "retry: 3000\n\n")) }
        let now = ContinuousClock.now
        (lastWrite, lastAuthCheck, lastResync) = (now, now, now)
        try await sending { try await $0.catchUp(writer: &writer) }
    }

    /// Runs `delivery`; one that stops for a session check is taken up again after the check.
    private mutating func sending(_ delivery: (inout Self) async throws -> Void) async throws {
        do {
            try await delivery(&self)
        } catch is SessionCheckPending {
            interrupted = true
        }
    }

    /// Delivers the hub's batches until the mailbox closes (shutdown, a stalled client), the
    /// task is cancelled, or a tick ends the stream.
    mutating func runLive(writer: inout any ResponseBodyWriter) async throws {
        while !Task.isCancelled {
            // Ticks wake the stream only when one of the checks below is due.
            mailbox.nextCheck(at: nextDue())
            let batch = await mailbox.next()
            if batch.closed { return }
            if batch.authCheck {
                // The user's sessions changed on some node (a logout, a deletion): checked
                // before anything more is sent, and the stream ended now if this one's did.
                lastAuthCheck = .now
                guard try await isStillAuthorized() else { return }
            }
            if batch.overflowed || batch.resync || interrupted {
                interrupted = false
                try await sending { try await $0.catchUp(writer: &writer) }
            } else if !batch.rows.isEmpty {
                try await sending { try await $0.deliver(batch.rows.map(\.row), writer: &writer) }
            }
            if batch.ticked {
                guard try await tick(at: batch.tickedAt ?? .now, writer: &writer) else { return }
            }
        }
    }

    /// The soonest of the next heartbeat, authorization check, resync and, within a day, the
    /// token's expiry.
    func nextDue() -> ContinuousClock.Instant {
        let settings = center.settings
        var due = min(lastWrite + settings.heartbeat, lastAuthCheck + settings.authCheckInterval)
        due = min(due, lastResync + settings.resyncInterval)
        let left = expiresAt.timeIntervalSince(center.clock.now)
        if left < 86_400 { due = min(due, .now + .milliseconds(Int64(max(0, left) * 1000))) }
        return due
    }

    /// Makes the checks that are due at `now`: expiry, authorization, resync, heartbeat.
    /// - Returns: false when the stream must end (the token expired, or was revoked).
    mutating func tick(at now: ContinuousClock.Instant, writer: inout any ResponseBodyWriter) async throws -> Bool {
        if center.clock.now >= expiresAt { return false }
        if now - lastAuthCheck >= center.settings.authCheckInterval {
            lastAuthCheck = now
            guard try await isStillAuthorized() else { return false }
        }
        if now - lastResync >= center.settings.resyncInterval {
            lastResync = now
            try await sending { try await $0.catchUp(writer: &writer) }
        }
        if now - lastWrite >= center.settings.heartbeat {
            try await mailbox.writing { try await writer.write(ByteBuffer(string: ": heartbeat\n\n")) }
            lastWrite = now
        }
        return true
    }

    /// Whether the token still authenticates (the user's sessions may have been revoked).
    /// - Throws: errors other than 401 (the database's, say).
    func isStillAuthorized() async throws -> Bool {
        do {
            _ = try await center.accounts.authenticate(bearer: token)
            return true
        } catch let error as AppError where error.status == .unauthorized {
            return false
        }
    }

    /// Sends everything stored after the cursor.
    private mutating func catchUp(writer: inout any ResponseBodyWriter) async throws {
        // A copy, so sending (which notes the write) does not overlap the cursor's own access.
        var cursor = self.cursor
        defer { self.cursor = cursor }
        try await cursor.catchUp { rows in try await send(rows, writer: &writer) }
    }

    /// Sends live rows in seq order, filling gaps from the database.
    private mutating func deliver(_ rows: [StoredNotification], writer: inout any ResponseBodyWriter) async throws {
        var cursor = self.cursor
        defer { self.cursor = cursor }
        try await cursor.deliver(rows) { rows in try await send(rows, writer: &writer) }
    }

    /// Writes `rows` as one buffer of events; nothing while a session check waits in the
    /// mailbox (the user may be logged out or deleted): it throws ``SessionCheckPending`` then,
    /// before the cursor passes the rows.
    private mutating func send(_ rows: [StoredNotification], writer: inout any ResponseBodyWriter) async throws {
        guard !rows.isEmpty else { return }
        if mailbox.authCheckPending { throw SessionCheckPending() }
        var buffer = ByteBuffer()
        for row in rows { NotificationsController.writeEvent(row, to: &buffer) }
        try await mailbox.writing { try await writer.write(buffer) }
        lastWrite = .now
    }
}
