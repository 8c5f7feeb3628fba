package import CairnHTTP
package import CairnStorage

/// One notification in a user's inbox, as stored and as clients see it.
package struct StoredNotification: Sendable, Equatable, JSONWritable {
    /// UUIDv7.
    package var id: String
    /// The owning tenant (never shown to clients: it is always the caller's).
    package var tenantId: String
    /// The recipient.
    package var userId: String
    /// The recipient's sequence number: grows by one per notification, the catch-up cursor of
    /// `GET /notifications/stream` (`Last-Event-ID`) and of the WebSocket `subscribe {since}`.
    package var seq: Int64
    /// `message`, `friend_request`, `system_alert`, `job_status` or a tenant-defined type.
    package var type: String
    /// Short title.
    package var title: String
    /// Text body.
    package var body: String
    /// JSON object text, at most 16 KiB.
    package var data: String
    /// Epoch milliseconds.
    package var createdAt: Int64
    /// Epoch milliseconds, nil while unread.
    package var readAt: Int64?

    /// `{id, seq, type, title, body, data, createdAt, readAt}`.
    package func writeJSON(to writer: inout JSONWriter) {
        writer.objectStart()
        writer.field("id", id)
        writer.field("seq", seq)
        writer.field("type", type)
        writer.field("title", title)
        writer.field("body", body)
        writer.field("data", json: data)
        writer.field("createdAt", timestamp: createdAt)
        writer.field("readAt", timestamp: readAt)
        writer.objectEnd()
    }
}

/// What to publish: the content of a notification, before it has recipients and sequence numbers.
package struct NotificationDraft: Sendable, Equatable {
    /// `[a-z][a-z0-9_.]{0,63}`; the built-in types are `message`, `friend_request`,
    /// `system_alert` and `job_status`.
    package var type: String
    /// 1 to 200 characters.
    package var title: String
    /// Up to 10,000 characters.
    package var body: String
    /// A JSON object of at most 16 KiB.
    package var data: JSONValue
    /// When set, a second publish with the same key to the same user is a no-op (per tenant
    /// and user; 1 to 200 characters). Used for job status and retried broadcasts.
    package var dedupeKey: String?

    /// Creates a draft.
    package init(type: String, title: String, body: String = "", data: JSONValue = .object([:]), dedupeKey: String? = nil) {
        self.type = type
        self.title = title
        self.body = body
        self.data = data
        self.dedupeKey = dedupeKey
    }

    /// The built-in notification types.
    package static let builtInTypes: Set<String> = ["message", "friend_request", "system_alert", "job_status"]

    /// The types only the server publishes: `job_status` (the job system's own status) and
    /// `system_alert` (which users cannot mute). `POST /notifications` refuses them, so no
    /// publisher can pass for the server.
    package static let serverTypes: Set<String> = ["job_status", "system_alert"]

    /// True when `type` matches `[a-z][a-z0-9_.]{0,63}`.
    package static func isValidType(_ type: String) -> Bool {
        let bytes = Array(type.utf8)
        guard let first = bytes.first, bytes.count <= 64, first >= 0x61 && first <= 0x7A else { return false }
        return bytes.dropFirst().allSatisfy { ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x5F || $0 == 0x2E }
    }

    /// Checks every field.
    /// - Throws: 400 `invalid_input` naming each bad field.
    package func validate() throws {
        var issues: [FieldIssue] = []
        if !Self.isValidType(type) { issues.append(FieldIssue(field: "type", issue: "must match [a-z][a-z0-9_.]{0,63}")) }
        let titleLength = title.unicodeScalars.count
        if title.trimmingWhitespace().isEmpty || titleLength > 200 { issues.append(FieldIssue(field: "title", issue: "must be 1 to 200 characters")) }
        if body.unicodeScalars.count > 10_000 { issues.append(FieldIssue(field: "body", issue: "must be at most 10,000 characters")) }
        if case .object = data {
            if data.text.utf8.count > 16 * 1024 { issues.append(FieldIssue(field: "data", issue: "must be at most 16 KiB of JSON")) }
        } else {
            issues.append(FieldIssue(field: "data", issue: "must be a JSON object"))
        }
        if let key = dedupeKey, key.isEmpty || key.utf8.count > 200 {
            issues.append(FieldIssue(field: "dedupeKey", issue: "must be 1 to 200 characters"))
        }
        if !issues.isEmpty { throw AppError.invalidInput(issues) }
    }
}

extension String {
    func trimmingWhitespace() -> Substring {
        var slice = Substring(self)
        while let first = slice.first, first.isWhitespace { slice.removeFirst() }
        while let last = slice.last, last.isWhitespace { slice.removeLast() }
        return slice
    }
}

/// The notifications module's tables.
package enum NotificationsMigrations {
    /// All migrations of the module, in order.
    package static let all: [Migration] = [
        Migration(
            module: "notifications", version: 1, name: "notifications inbox",
            sql: [
                """
                CREATE TABLE notifications (
                    id TEXT PRIMARY KEY,
                    tenant_id TEXT NOT NULL,
                    user_id TEXT NOT NULL,
                    seq BIGINT NOT NULL,
                    type TEXT NOT NULL,
                    title TEXT NOT NULL,
                    body TEXT NOT NULL,
                    data TEXT NOT NULL,
                    dedupe_key TEXT,
                    created_at BIGINT NOT NULL,
                    read_at BIGINT)
                """,
                // The inbox and the catch-up cursor: one user's notifications by seq.
                "CREATE UNIQUE INDEX notifications_user_seq ON notifications (tenant_id, user_id, seq)",
                "CREATE INDEX notifications_unread ON notifications (tenant_id, user_id, seq) WHERE read_at IS NULL",
                "CREATE INDEX notifications_read_at ON notifications (read_at) WHERE read_at IS NOT NULL",
                "CREATE UNIQUE INDEX notifications_dedupe ON notifications (tenant_id, user_id, dedupe_key) WHERE dedupe_key IS NOT NULL",
                // Per-user sequence: incremented in the publishing transaction, so the row lock
                // orders concurrent publishers and seq order is commit order for each user.
                """
                CREATE TABLE notification_counters (
                    tenant_id TEXT NOT NULL,
                    user_id TEXT NOT NULL,
                    seq BIGINT NOT NULL,
                    PRIMARY KEY (tenant_id, user_id))
                """,
            ]),
        Migration(
            module: "notifications", version: 2, name: "preferences, webhook endpoints and deliveries",
            sql: [
                """
                CREATE TABLE notification_preferences (
                    tenant_id TEXT NOT NULL,
                    user_id TEXT NOT NULL,
                    prefs TEXT NOT NULL,
                    updated_at BIGINT NOT NULL,
                    PRIMARY KEY (tenant_id, user_id))
                """,
                """
                CREATE TABLE webhook_endpoints (
                    id TEXT PRIMARY KEY,
                    tenant_id TEXT NOT NULL,
                    url TEXT NOT NULL,
                    types TEXT NOT NULL,
                    secret TEXT NOT NULL,
                    enabled BOOLEAN NOT NULL,
                    dead_letters INTEGER NOT NULL,
                    created_at BIGINT NOT NULL,
                    disabled_at BIGINT)
                """,
                "CREATE INDEX webhook_endpoints_tenant ON webhook_endpoints (tenant_id, id)",
                """
                CREATE TABLE notification_deliveries (
                    id TEXT PRIMARY KEY,
                    tenant_id TEXT NOT NULL,
                    user_id TEXT NOT NULL,
                    notification_id TEXT NOT NULL,
                    channel TEXT NOT NULL,
                    endpoint_id TEXT,
                    state TEXT NOT NULL,
                    attempts INTEGER NOT NULL,
                    last_error TEXT,
                    payload TEXT NOT NULL,
                    created_at BIGINT NOT NULL,
                    updated_at BIGINT NOT NULL)
                """,
                "CREATE INDEX notification_deliveries_notification ON notification_deliveries (tenant_id, notification_id, id)",
            ]),
        Migration(
            module: "notifications", version: 3, name: "email and push providers, push devices",
            sql: [
                // A tenant's provider settings (sendgrid, fcm, apns), secrets included: never returned.
                """
                CREATE TABLE notification_providers (
                    tenant_id TEXT NOT NULL,
                    provider TEXT NOT NULL,
                    config TEXT NOT NULL,
                    created_at BIGINT NOT NULL,
                    updated_at BIGINT NOT NULL,
                    PRIMARY KEY (tenant_id, provider))
                """,
                """
                CREATE TABLE notification_devices (
                    id TEXT PRIMARY KEY,
                    tenant_id TEXT NOT NULL,
                    user_id TEXT NOT NULL,
                    platform TEXT NOT NULL,
                    token TEXT NOT NULL,
                    created_at BIGINT NOT NULL,
                    last_seen_at BIGINT NOT NULL)
                """,
                // A token identifies one app install: one account of the tenant has it at a time.
                "CREATE UNIQUE INDEX notification_devices_token ON notification_devices (tenant_id, platform, token)",
                "CREATE INDEX notification_devices_user ON notification_devices (tenant_id, user_id)",
                "ALTER TABLE notification_deliveries ADD COLUMN provider_message_id TEXT",
                "ALTER TABLE notification_deliveries ADD COLUMN dedupe_key TEXT",
                """
                CREATE UNIQUE INDEX notification_deliveries_dedupe
                ON notification_deliveries (tenant_id, user_id, channel, COALESCE(endpoint_id, ''), dedupe_key) WHERE dedupe_key IS NOT NULL
                """,
            ]),
        Migration(
            module: "notifications", version: 4, name: "notification templates",
            sql: [
                // One document per tenant and type: per locale, per channel Mustache templates (Outbound renders them).
                """
                CREATE TABLE notification_templates (
                    tenant_id TEXT NOT NULL,
                    type TEXT NOT NULL,
                    document TEXT NOT NULL,
                    created_at BIGINT NOT NULL,
                    updated_at BIGINT NOT NULL,
                    PRIMARY KEY (tenant_id, type))
                """
            ]),
        Migration(
            module: "notifications", version: 5, name: "webhook secret rotation and endpoint versions",
            sql: [
                // The secret before the last rotation (sealed like `secret`), still signing until it expires.
                "ALTER TABLE webhook_endpoints ADD COLUMN previous_secret TEXT",
                "ALTER TABLE webhook_endpoints ADD COLUMN previous_secret_expires_at BIGINT",
                // Grows with every change: the endpoint's `ETag`.
                "ALTER TABLE webhook_endpoints ADD COLUMN version INTEGER NOT NULL DEFAULT 1",
            ]),
        Migration(
            module: "notifications", version: 6, name: "digests",
            sql: [
                // One row per digest window (user, type, channel, device, window end): `open`
                // while notifications join it, `pending` once its job closed it, then `sent` or
                // `failed`. The unique key makes every node's publishers share one window.
                """
                CREATE TABLE notification_digests (
                    id TEXT PRIMARY KEY,
                    tenant_id TEXT NOT NULL,
                    user_id TEXT NOT NULL,
                    type TEXT NOT NULL,
                    channel TEXT NOT NULL,
                    endpoint_id TEXT,
                    period TEXT NOT NULL,
                    window_key TEXT NOT NULL,
                    window_end BIGINT NOT NULL,
                    state TEXT NOT NULL,
                    attempts INTEGER NOT NULL,
                    last_error TEXT,
                    provider_message_id TEXT,
                    created_at BIGINT NOT NULL,
                    updated_at BIGINT NOT NULL)
                """,
                "CREATE UNIQUE INDEX notification_digests_window ON notification_digests (tenant_id, window_key)",
                "CREATE INDEX notification_digests_user ON notification_digests (tenant_id, user_id)",
                // The digest that carries a delivery (state `batched` until it is sent).
                "ALTER TABLE notification_deliveries ADD COLUMN digest_id TEXT",
                "CREATE INDEX notification_deliveries_digest ON notification_deliveries (tenant_id, digest_id) WHERE digest_id IS NOT NULL",
            ]),
        Migration(
            module: "notifications", version: 7, name: "a delivery counts one dead letter",
            sql: [
                // When the delivery first counted as a dead letter of its webhook endpoint; a
                // redelivery failing again does not count another.
                "ALTER TABLE notification_deliveries ADD COLUMN dead_lettered_at BIGINT"
            ]),
    ]
}
