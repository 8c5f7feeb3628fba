import CairnHTTP
package import CairnStorage
import Foundation
import SQLKit

/// SQL for the inbox tables, written once for both engines.
///
/// Sequence numbers come from `notification_counters`: one upsert per publish increments the
/// recipient's counter in the publishing transaction. The row lock it takes on PostgreSQL (and
/// the single writer on SQLite) means that for each user, seq order is commit order: when a
/// reader sees seq n, every lower seq is committed (or was deleted).
@MemberwiseInit
package struct NotificationStore: Sendable {
    /// The database.
    package let database: Database

    /// `a, b, c`.
    static func joined(_ items: [SQLQueryString]) -> SQLQueryString {
        var query: SQLQueryString = ""
        for (index, item) in items.enumerated() {
            if index > 0 { query = query + ", " }
            query = query + item
        }
        return query
    }

    /// `(a, b, c)`.
    static func list(_ items: [SQLQueryString]) -> SQLQueryString {
        "(" + joined(items) + ")"
    }

    /// How many of `userIds` hold a notification with `dedupeKey` (one per user at most: the
    /// key is unique per tenant and user).
    func count(dedupeKey: String, tenantId: String, userIds: [String]) async throws -> Int {
        guard !userIds.isEmpty else { return 0 }
        return try await database.read { db in
            try await db.raw(
                """
                SELECT COUNT(*) AS n FROM notifications WHERE tenant_id = \(bind: tenantId) AND dedupe_key = \(bind: dedupeKey)
                AND user_id IN \(Self.list(userIds.map { "\(bind: $0)" }))
                """
            ).first()?.decode(column: "n", as: Int.self) ?? 0
        }
    }

    /// Notifications by id, across tenants (for this node's live delivery only).
    func notifications(ids: [String]) async throws -> [StoredNotification] {
        let valid = ids.filter { UUIDv7.isValid($0) }
        guard !valid.isEmpty else { return [] }
        return try await database.read { db in
            try await db.raw(
                "SELECT \(unsafeRaw: StoredNotification.sqlColumns) FROM notifications WHERE id IN \(Self.list(valid.map { "\(bind: $0)" }))"
            )
            .all().map(StoredNotification.init(row:))
        }
    }

    /// A user's notifications after `seq`, oldest first (catch-up).
    package func after(seq: Int64, tenantId: String, userId: String, limit: Int) async throws -> [StoredNotification] {
        try await database.read { db in
            try await db.raw(
                """
                SELECT \(unsafeRaw: StoredNotification.sqlColumns) FROM notifications WHERE tenant_id = \(bind: tenantId) AND user_id = \(bind: userId)
                AND seq > \(bind: seq) ORDER BY seq LIMIT \(bind: limit)
                """
            ).all().map(StoredNotification.init(row:))
        }
    }

    /// The user's current (highest allocated) sequence number, 0 before the first notification.
    package func currentSeq(tenantId: String, userId: String) async throws -> Int64 {
        try await database.read { db in
            try await db.raw("SELECT seq FROM notification_counters WHERE tenant_id = \(bind: tenantId) AND user_id = \(bind: userId)")
                .first()?.decode(column: "seq", as: Int64.self) ?? 0
        }
    }

    /// A page of a user's inbox, newest first; the cursor is the last seq shown.
    func list(tenantId: String, userId: String, unreadOnly: Bool, type: String?, page: PageRequest) async throws -> Page<StoredNotification> {
        let rows = try await database.read { db in
            var query: SQLQueryString =
                "SELECT \(unsafeRaw: StoredNotification.sqlColumns) FROM notifications WHERE tenant_id = \(bind: tenantId) AND user_id = \(bind: userId)"
            if unreadOnly { query = query + " AND read_at IS NULL" }
            if let type { query = query + " AND type = \(bind: type)" }
            if let after = page.after, let seq = Int64(after) { query = query + " AND seq < \(bind: seq)" }
            return try await db.raw(query + " ORDER BY seq DESC LIMIT \(bind: page.limit + 1)").all()
        }
        return Page(fetched: try rows.map(StoredNotification.init(row:)), page: page, sortKey: { String($0.seq) })
    }

    /// One notification of a user.
    package func notification(id: String, tenantId: String, userId: String) async throws -> StoredNotification? {
        guard UUIDv7.isValid(id) else { return nil }
        return try await database.read { db in
            try await db.raw(
                "SELECT \(unsafeRaw: StoredNotification.sqlColumns) FROM notifications WHERE id = \(bind: id) AND tenant_id = \(bind: tenantId) AND user_id = \(bind: userId)"
            ).first().map(StoredNotification.init(row:))
        }
    }

    /// Unread notifications of a user.
    func unreadCount(tenantId: String, userId: String) async throws -> Int {
        try await database.read { db in
            try await db.raw(
                "SELECT COUNT(*) AS n FROM notifications WHERE tenant_id = \(bind: tenantId) AND user_id = \(bind: userId) AND read_at IS NULL"
            ).first()?.decode(column: "n", as: Int.self) ?? 0
        }
    }

    /// Marks one notification read (keeping the first read time); nil when it is not the user's.
    func markRead(id: String, tenantId: String, userId: String, now: Int64) async throws -> StoredNotification? {
        guard UUIDv7.isValid(id) else { return nil }
        return try await database.write { db in
            try await db.raw(
                """
                UPDATE notifications SET read_at = COALESCE(read_at, \(bind: now))
                WHERE id = \(bind: id) AND tenant_id = \(bind: tenantId) AND user_id = \(bind: userId)
                RETURNING \(unsafeRaw: StoredNotification.sqlColumns)
                """
            ).first().map(StoredNotification.init(row:))
        }
    }

    /// Marks every unread notification (up to `upToSeq` when given) read; returns how many.
    func markAllRead(tenantId: String, userId: String, upToSeq: Int64?, now: Int64) async throws -> Int {
        try await database.write { db in
            var query: SQLQueryString = """
                UPDATE notifications SET read_at = \(bind: now)
                WHERE tenant_id = \(bind: tenantId) AND user_id = \(bind: userId) AND read_at IS NULL
                """
            if let upToSeq { query = query + " AND seq <= \(bind: upToSeq)" }
            return try await db.raw(query + " RETURNING id").all().count
        }
    }

    /// Deletes one notification of a user; false when it is not the user's.
    func delete(id: String, tenantId: String, userId: String) async throws -> Bool {
        guard UUIDv7.isValid(id) else { return false }
        return try await database.write { db in
            try await db.raw(
                "DELETE FROM notifications WHERE id = \(bind: id) AND tenant_id = \(bind: tenantId) AND user_id = \(bind: userId) RETURNING id"
            ).first() != nil
        }
    }

    /// Deletes read notifications read before `before` (epoch ms), at most `limit`; returns how many.
    func pruneRead(before: Int64, limit: Int = 1000) async throws -> Int {
        try await database.write { db in
            try await db.raw(
                """
                DELETE FROM notifications WHERE id IN (
                    SELECT id FROM notifications WHERE read_at IS NOT NULL AND read_at < \(bind: before) LIMIT \(bind: limit))
                RETURNING id
                """
            ).all().count
        }
    }
}
