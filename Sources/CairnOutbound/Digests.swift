import CairnAccounts
import CairnFormats
import CairnHTTP
import CairnJobs
import CairnNotifications
import CairnStorage
import Foundation
import SQLKit

// Digests: a user who chose `hourly` or `daily` for a type on email, SMS or push gets one
// message per window instead of one per notification.
//
// Exactly once, across nodes and retries:
// - A window is one `notification_digests` row, unique per (tenant, user, type, channel,
//   device, window end): every node's publishers add to the same row, and only the publisher
//   that created it schedules its job (also unique by key), at the window's end.
// - Publishers join a window with a write on its row (`open` only) in their publishing
//   transaction; the job closes it (`open` → `pending`) with a write on the same row. The row
//   lock orders them on PostgreSQL (SQLite has one writer): a publisher that commits first is
//   in the digest, one that comes after the close finds it closed and sends at once.
// - The digest's outcome and its notifications' delivery rows are recorded in one transaction;
//   a retried or rescued job finds the digest `sent` (or `failed`) and sends nothing again.

/// A notification carried by a digest.
struct DigestItem: Sendable {
    var notificationId: String
    var title: String
    var body: String
    var data: JSONValue
    var createdAt: Int64
}

extension OutboundChannels {
    /// Adds the delivery of `row` on `channel` (and device `endpointId`) to the user's open
    /// `mode` window, opening it (and scheduling its job) when it is the first. Returns false,
    /// planning nothing, when the window has already been closed by its job: the caller then
    /// delivers at once.
    func planDigested(
        _ row: StoredNotification, channel: NotificationChannel, endpointId: String?, payload: String, mode: DigestMode,
        preferences: NotificationPreferences, dedupeKey: String?, now: Int64, on db: any SQLDatabase
    ) async throws -> Bool {
        let windowEnd = preferences.digestWindowEnd(mode, now: now)
        let windowKey = [row.userId, row.type, channel.rawValue, endpointId ?? "", String(windowEnd)].joined(separator: "|")
        let newId = UUIDv7.make()
        let created =
            try await db.raw(
                """
                INSERT INTO notification_digests (id, tenant_id, user_id, type, channel, endpoint_id, period, window_key, window_end, state, attempts,
                    created_at, updated_at)
                VALUES (\(bind: newId), \(bind: row.tenantId), \(bind: row.userId), \(bind: row.type), \(bind: channel.rawValue), \(bind: endpointId),
                    \(bind: mode.rawValue), \(bind: windowKey), \(bind: windowEnd), 'open', 0, \(bind: now), \(bind: now))
                ON CONFLICT DO NOTHING RETURNING id
                """
            ).first() != nil
        let digestId: String
        if created {
            digestId = newId
        } else {
            // Joining takes the row's lock until this transaction ends, so the job's close waits for it.
            guard
                let joined = try await db.raw(
                    """
                    UPDATE notification_digests SET updated_at = \(bind: now)
                    WHERE tenant_id = \(bind: row.tenantId) AND window_key = \(bind: windowKey) AND state = 'open' RETURNING id
                    """
                ).first()
            else { return false }
            digestId = try joined.decode(column: "id", as: String.self)
        }
        try await db.raw(
            """
            INSERT INTO notification_deliveries (id, tenant_id, user_id, notification_id, channel, endpoint_id, state, attempts, last_error,
                payload, dedupe_key, digest_id, created_at, updated_at)
            VALUES (\(bind: UUIDv7.make()), \(bind: row.tenantId), \(bind: row.userId), \(bind: row.id), \(bind: channel.rawValue), \(bind: endpointId),
                'batched', 0, NULL, \(bind: payload), \(bind: dedupeKey), \(bind: digestId), \(bind: now), \(bind: now))
            ON CONFLICT DO NOTHING
            """
        ).run()
        if created {
            var request = try JobRequest(SendDigest(digestId: digestId))
            request.maxAttempts = max(1, min(100, settings.providerMaxAttempts))
            // Quiet hours hold the digest too, judged at the window's end.
            request.runAt = preferences.quietUntil(now: windowEnd) ?? windowEnd
            request.uniqueKey = "digest:" + digestId
            _ = try await jobs.enqueue(request, tenantId: row.tenantId, createdBy: nil, on: db)
        }
        return true
    }

    /// One attempt of the digest `digestId`: closes its window, composes one message of its
    /// notifications (the type's digest template parts, or a listing), sends it through the
    /// tenant's provider and records the outcome on the digest and on every delivery it carries.
    /// Transient failures throw (retried with backoff); a digest already sent or failed is left alone.
    func deliverDigest(_ digestId: String, context: JobContext) async throws {
        let tenantId = context.job.tenantId
        let now = jobs.clock.milliseconds
        let database = database
        let loaded = try await database.transaction { db -> (any SQLRow, [DigestItem])? in
            try await db.raw(
                """
                UPDATE notification_digests SET state = 'pending', updated_at = \(bind: now)
                WHERE id = \(bind: digestId) AND tenant_id = \(bind: tenantId) AND state = 'open'
                """
            ).run()
            guard
                let digest = try await db.raw(
                    """
                    SELECT user_id, type, channel, endpoint_id, period, window_end, state FROM notification_digests
                    WHERE id = \(bind: digestId) AND tenant_id = \(bind: tenantId)
                    """
                ).first()
            else { return nil }
            let items = try await db.raw(
                """
                SELECT notification_id, payload, created_at FROM notification_deliveries
                WHERE tenant_id = \(bind: tenantId) AND digest_id = \(bind: digestId) AND state = 'batched' ORDER BY created_at, id
                """
            ).all().map { row in
                let payload = JSONValue(text: try row.decode(column: "payload", as: String.self)) ?? .object([:])
                return DigestItem(
                    notificationId: try row.decode(column: "notification_id", as: String.self), title: payload["title"]?.string ?? "",
                    body: payload["body"]?.string ?? "", data: payload["data"] ?? .object([:]),
                    createdAt: try row.decode(column: "created_at", as: Int64.self))
            }
            return (digest, items)
        }
        // Deleted with its user, or already sent or failed by an earlier attempt: nothing to send.
        guard let (digest, items) = loaded, try digest.decode(column: "state", as: String.self) == "pending" else { return }
        guard !items.isEmpty else {
            // Every notification it was opened for was a repeat (a dedupe key): no message.
            try await database.write { db in
                try await db.raw(
                    "DELETE FROM notification_digests WHERE id = \(bind: digestId) AND tenant_id = \(bind: tenantId) AND state = 'pending'"
                )
                .run()
            }
            return
        }
        let userId = try digest.decode(column: "user_id", as: String.self)
        let channel = try digest.decode(column: "channel", as: String.self)
        let type = try digest.decode(column: "type", as: String.self)
        let period = try digest.decode(column: "period", as: String.self)
        let windowEnd = try digest.decode(column: "window_end", as: Int64.self)

        let message: OutboundMessage
        do {
            message = try await digestMessage(
                items, digestId: digestId, type: type, channel: channel, period: period, windowEnd: windowEnd, tenantId: tenantId, userId: userId)
        } catch let failure as any TemplateRenderError {
            let why = failure.reason
            try await finishDigest(digestId, tenantId: tenantId, state: "failed", error: why, providerMessageId: nil)
            throw PermanentJobError(why)
        }
        let recipient = try await recipient(
            channel: channel, userId: userId, endpointId: try digest.decode(column: "endpoint_id", as: String?.self), tenantId: tenantId)
        guard case .found(let providerName, let address, let deviceId) = recipient else {
            if case .unreachable(let why) = recipient {
                try await finishDigest(digestId, tenantId: tenantId, state: "failed", error: why, providerMessageId: nil, countAttempt: false)
            }
            return
        }
        guard let provider = try await provider(providerName, tenantId: tenantId) else {
            try await finishDigest(
                digestId, tenantId: tenantId, state: "failed", error: "\(providerName.rawValue) is not configured", providerMessageId: nil,
                countAttempt: false)
            return
        }
        switch try await provider.send(message, to: address).unlessCancelled() {
        case .sent(let messageId):
            try await finishDigest(digestId, tenantId: tenantId, state: "sent", error: nil, providerMessageId: messageId)
        case .rejected(let why):
            try await finishDigest(digestId, tenantId: tenantId, state: "failed", error: why, providerMessageId: nil)
            throw PermanentJobError("\(providerName.rawValue) refused the digest: \(why)")
        case .recipientGone(let why):
            try await finishDigest(digestId, tenantId: tenantId, state: "failed", error: "device unregistered: \(why)", providerMessageId: nil) {
                db in
                if let deviceId { try await ProviderStore.deleteDevice(id: deviceId, tenantId: tenantId, userId: nil, on: db) }
            }
        case .retry(let why):
            if context.job.attempt >= context.job.maxAttempts {
                try await finishDigest(digestId, tenantId: tenantId, state: "failed", error: why, providerMessageId: nil)
            } else {
                try await database.write { db in
                    try await db.raw(
                        """
                        UPDATE notification_digests SET attempts = attempts + 1, last_error = \(bind: why), updated_at = \(bind: WallClock.milliseconds())
                        WHERE id = \(bind: digestId) AND tenant_id = \(bind: tenantId)
                        """
                    ).run()
                }
            }
            throw DeliveryFailure(description: "\(providerName.rawValue) digest delivery failed: \(why)")
        }
    }

    /// Records a digest's final outcome and, in the same transaction, that of every delivery it
    /// carries (they take its state, attempts, error and provider message id).
    func finishDigest(
        _ digestId: String, tenantId: String, state: String, error: String?, providerMessageId: String?, countAttempt: Bool = true,
        also: (@Sendable (any SQLDatabase) async throws -> Void)? = nil
    ) async throws {
        let now = WallClock.milliseconds()
        try await database.transaction { db in
            guard
                let row = try await db.raw(
                    """
                    UPDATE notification_digests SET state = \(bind: state), attempts = attempts + \(bind: countAttempt ? 1 : 0),
                        last_error = COALESCE(\(bind: error), last_error), provider_message_id = \(bind: providerMessageId), updated_at = \(bind: now)
                    WHERE id = \(bind: digestId) AND tenant_id = \(bind: tenantId) AND state = 'pending'
                    RETURNING attempts, last_error
                    """
                ).first()
            else { return }
            try await db.raw(
                """
                UPDATE notification_deliveries SET state = \(bind: state), attempts = \(bind: try row.decode(column: "attempts", as: Int.self)),
                    last_error = \(bind: try row.decode(column: "last_error", as: String?.self)), provider_message_id = \(bind: providerMessageId),
                    updated_at = \(bind: now)
                WHERE tenant_id = \(bind: tenantId) AND digest_id = \(bind: digestId) AND state = 'batched'
                """
            ).run()
            try await also?(db)
        }
    }

    /// The digest's message: the type's digest template parts for the channel where it has
    /// them, a listing (the count and the titles) for the others.
    /// - Throws: ``TemplateRenderError``.
    func digestMessage(
        _ items: [DigestItem], digestId: String, type: String, channel: String, period: String, windowEnd: Int64, tenantId: String,
        userId: String
    ) async throws -> OutboundMessage {
        let message = Self.digestListing(items, digestId: digestId, type: type, channel: channel)
        guard let templateChannel = TemplateChannel(rawValue: channel),
            let parts = try await renderTemplate(
                type: type, channel: templateChannel, digest: true, tenantId: tenantId, userId: userId,
                context: {
                    [
                        "count": items.count, "period": period, "type": type, "windowEnd": Timestamp.format(milliseconds: windowEnd),
                        "notifications": items.map { item -> [String: Any] in
                            var context = TemplateRenderer.context(title: item.title, body: item.body, data: item.data)
                            context["createdAt"] = Timestamp.format(milliseconds: item.createdAt)
                            return context
                        },
                    ]
                })
        else { return message }
        // The listing of an SMS has no title already, so the template's text replaces its body alone.
        return message.applying(parts, channel: templateChannel, digest: true)
    }

    /// The default digest: "3 new notifications" and the titles, one a line (email: all of
    /// them up to 100; SMS and push, which are short: up to 10), then how many more there are.
    static func digestListing(_ items: [DigestItem], digestId: String, type: String, channel: String) -> OutboundMessage {
        let heading = items.count == 1 ? "1 new notification" : "\(items.count) new notifications"
        let shown = channel == NotificationChannel.email.rawValue ? 100 : 10
        var lines = items.prefix(shown).map { "- " + $0.title }
        if items.count > shown { lines.append("and \(items.count - shown) more") }
        let data = JSONValue.object([
            "digestId": .string(digestId), "count": .number(Double(items.count)),
            "notificationIds": .array(items.map { .string($0.notificationId) }),
        ])
        var message = OutboundMessage(
            notificationId: digestId, deliveryId: digestId, type: type, title: heading, body: lines.joined(separator: "\n"), data: data)
        if channel == NotificationChannel.sms.rawValue {
            // An SMS has no subject: the heading leads the text.
            message.body = heading + ":\n" + message.body
            message.title = ""
        }
        return message
    }
}
