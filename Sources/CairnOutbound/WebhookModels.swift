import CairnHTTP
import CairnNotifications
import CairnStorage
import Foundation
import SQLKit

/// A tenant's webhook endpoint.
struct WebhookEndpoint: Sendable, Versioned, JSONWritable {
    var id: String
    var tenantId: String
    var url: String
    var types: [String]
    var secret: String
    var enabled: Bool
    var deadLetters: Int
    var createdAt: Int64
    /// When the endpoint was disabled (epoch ms; nil while enabled).
    var disabledAt: Int64?
    /// The secret before the last rotation: it signs too until ``previousSecretExpiresAt``.
    var previousSecret: String?
    /// When the previous secret stops signing (epoch ms, the jobs' clock).
    var previousSecretExpiresAt: Int64?
    /// Grows with every change: the `ETag`.
    var version: Int
    /// Shown once, in the creation response and the response of a rotation.
    var showSecret = false

    /// `{id, url, types, enabled, deadLetters, createdAt, disabledAt, previousSecretExpiresAt}`,
    /// and `secret` when ``showSecret``.
    func writeJSON(to writer: inout JSONWriter) {
        writer.objectStart()
        writer.field("id", id)
        writer.field("url", url)
        writer.field("types", strings: types)
        writer.field("enabled", enabled)
        writer.field("deadLetters", deadLetters)
        writer.field("createdAt", timestamp: createdAt)
        writer.field("disabledAt", timestamp: disabledAt)
        writer.field("previousSecretExpiresAt", timestamp: previousSecret != nil ? previousSecretExpiresAt : nil)
        if showSecret {
            writer.field("secret", secret)
        }
        writer.objectEnd()
    }

    func accepts(_ type: String) -> Bool { types.contains("*") || types.contains(type) }

    /// The secrets that sign a message sent at `now` (epoch ms): the current one first, then
    /// the previous one while its overlap lasts (Standard Webhooks' rotation: a receiver
    /// holding either verifies).
    func signingSecrets(now: Int64) -> [String] {
        guard let previousSecret, let until = previousSecretExpiresAt, now < until else { return [secret] }
        return [secret, previousSecret]
    }

    static let columns =
        "id, tenant_id, url, types, secret, enabled, dead_letters, created_at, disabled_at, previous_secret, previous_secret_expires_at, version"

    /// What the signing secret is sealed for (``SecretBox``'s additional data).
    static let secretPurpose = "webhook.secret"

    /// The endpoint in `row`, its signing secrets opened with `secrets` (a plaintext secret the
    /// start-up sealing step has not reached yet reads as it is).
    /// - Throws: a decoding error, or `MasterKeyError` when a secret does not open.
    static func from(_ row: any SQLRow, secrets: SecretBox) throws -> WebhookEndpoint {
        let typesText = try row.decode(column: "types", as: String.self)
        return WebhookEndpoint(
            id: try row.decode(column: "id", as: String.self), tenantId: try row.decode(column: "tenant_id", as: String.self),
            url: try row.decode(column: "url", as: String.self),
            types: (try? JSONDecoder().decode([String].self, from: Data(typesText.utf8))) ?? [],
            secret: try secrets.openOrPlain(try row.decode(column: "secret", as: String.self), purpose: secretPurpose),
            enabled: try row.decode(column: "enabled", as: Bool.self),
            deadLetters: try row.decode(column: "dead_letters", as: Int.self), createdAt: try row.decode(column: "created_at", as: Int64.self),
            disabledAt: try row.decode(column: "disabled_at", as: Int64?.self),
            previousSecret: try row.decode(column: "previous_secret", as: String?.self).map { try secrets.openOrPlain($0, purpose: secretPurpose) },
            previousSecretExpiresAt: try row.decode(column: "previous_secret_expires_at", as: Int64?.self),
            version: try row.decode(column: "version", as: Int.self))
    }
}

/// A delivery of one notification on one outbound channel (and endpoint).
@JSONObject
struct Delivery: Sendable, JSONWritable {
    var id: String
    var notificationId: String
    var channel: String
    var endpointId: String?
    var state: String
    var attempts: Int
    var lastError: String?
    var providerMessageId: String?
    /// The digest that carries (or carried) it; its state is `batched` until the digest is sent.
    var digestId: String?
    @JSONTimestamp var createdAt: Int64
    @JSONTimestamp var updatedAt: Int64

    static let columns =
        "id, notification_id, channel, endpoint_id, state, attempts, last_error, provider_message_id, digest_id, created_at, updated_at"

    static func from(_ row: any SQLRow) throws -> Delivery {
        Delivery(
            id: try row.decode(column: "id", as: String.self), notificationId: try row.decode(column: "notification_id", as: String.self),
            channel: try row.decode(column: "channel", as: String.self), endpointId: try row.decode(column: "endpoint_id", as: String?.self),
            state: try row.decode(column: "state", as: String.self), attempts: try row.decode(column: "attempts", as: Int.self),
            lastError: try row.decode(column: "last_error", as: String?.self),
            providerMessageId: try row.decode(column: "provider_message_id", as: String?.self),
            digestId: try row.decode(column: "digest_id", as: String?.self), createdAt: try row.decode(column: "created_at", as: Int64.self),
            updatedAt: try row.decode(column: "updated_at", as: Int64.self))
    }
}

/// `{"items": [...]}` without a cursor.
struct ItemList<Item: JSONWritable>: JSONWritable {
    var items: [Item]

    func writeJSON(to writer: inout JSONWriter) {
        writer.objectStart()
        writer.key("items")
        writer.arrayStart()
        for item in items { item.writeJSON(to: &writer) }
        writer.arrayEnd()
        writer.objectEnd()
    }
}
