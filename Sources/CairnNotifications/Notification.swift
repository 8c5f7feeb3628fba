package import CairnHTTP
package import CairnStorage
import Foundation
import SQLKit

/// One notification in a user's inbox, as stored and as clients see it.
///
/// As JSON: `{id, seq, type, title, body, data, createdAt, readAt}`.
@JSONObject
@SQLRow
package struct StoredNotification: Sendable, Equatable, JSONWritable {
    /// UUIDv7.
    package var id: String
    /// The owning tenant (never shown to clients: it is always the caller's).
    @JSONSkip package var tenantId: String
    /// The recipient.
    @JSONSkip package var userId: String
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
    @JSONText package var data: String
    /// Epoch milliseconds.
    @JSONTimestamp package var createdAt: Int64
    /// Epoch milliseconds, nil while unread.
    @JSONTimestamp package var readAt: Int64?
}

/// What to publish: the content of a notification, before it has recipients and sequence numbers.
/// Its init is written out, not generated: it derives ``dataText``.
package struct NotificationDraft: Sendable, Equatable {
    /// `[a-z][a-z0-9_.]{0,63}`; the built-in types are `message`, `friend_request`,
    /// `system_alert` and `job_status`.
    package var type: String
    /// 1 to 200 characters.
    package var title: String
    /// Up to 10,000 characters.
    package var body: String
    /// A JSON object of at most 16 KiB.
    package var data: JSONValue {
        didSet { dataText = data.text }
    }
    /// `data` as its stored JSON text (``JSONValue/text``), made once per value: a publish
    /// checks its size and writes it to every row and channel, and Foundation's encoder took
    /// about a tenth of the server's CPU per publish when each of those made it again.
    package private(set) var dataText: String
    /// When set, a second publish with the same key to the same user is a no-op (per tenant
    /// and user; 1 to 200 characters). Used for job status and retried broadcasts.
    package var dedupeKey: String?

    /// Creates a draft.
    package init(type: String, title: String, body: String = "", data: JSONValue = .object([:]), dedupeKey: String? = nil) {
        self.type = type
        self.title = title
        self.body = body
        self.data = data
        self.dataText = data.text
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
        let titleLength = TextSafety.length(title)
        if title.trimmingWhitespace().isEmpty {
            issues.append(FieldIssue(field: "title", issue: "must not be blank"))
        } else if titleLength > 200 {
            issues.append(FieldIssue(field: "title", issue: "must be 1 to 200 characters"))
        }
        if TextSafety.length(body) > 10_000 { issues.append(FieldIssue(field: "body", issue: "must be at most 10,000 characters")) }
        if case .object = data {
            if dataText.utf8.count > 16 * 1024 { issues.append(FieldIssue(field: "data", issue: "must be at most 16 KiB of JSON")) }
        } else {
            issues.append(FieldIssue(field: "data", issue: "must be a JSON object"))
        }
        if let key = dedupeKey, key.isEmpty || TextSafety.length(key) > 200 {
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

/// The notifications module's tables: `Migrations/notifications/*.sql` among its resources.
package enum NotificationsMigrations {
    /// All migrations of the module, in order.
    package static func all() throws -> [Migration] { try Migration.files(in: .module) }
}
