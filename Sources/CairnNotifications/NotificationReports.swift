import CairnStorage
import SQLKit

extension NotificationStore {
    /// A batch of the tenant's notifications (every user's) in id order after `after`, for
    /// streamed reports: one short keyset read per batch, never a long-lived cursor.
    package func batch(tenantId: String, type: String?, after: String?, limit: Int) async throws -> [StoredNotification] {
        try await database.read { db in
            var query: SQLQueryString = "SELECT \(unsafeRaw: StoredNotification.sqlColumns) FROM notifications WHERE tenant_id = \(bind: tenantId)"
            if let type { query = query + " AND type = \(bind: type)" }
            if let after { query = query + " AND id > \(bind: after)" }
            query = query + " ORDER BY id LIMIT \(bind: limit)"
            return try await db.raw(query).all().map(StoredNotification.init(row:))
        }
    }
}
