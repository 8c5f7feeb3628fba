package import CairnStorage
package import SQLKit

extension OutboundChannels {
    /// Seals the webhook secrets and provider settings still stored in plain text (rows written
    /// before secrets were sealed at rest), in one transaction. Run at every start after the
    /// migrations: it is idempotent and reads only rows not yet in the sealed form. A Swift step
    /// rather than a migration, because migrations are SQL and never see the master key.
    /// - Returns: how many values it sealed.
    @discardableResult
    package func sealPlaintextSecrets() async throws -> Int {
        let secrets = secrets
        return try await database.transaction { db in
            try await Self.reseal(on: db, onlyPlaintext: true) { text, purpose in secrets.seal(text, purpose: purpose) }
        }
    }

    /// Re-seals every webhook secret and provider setting from `old` to `new` on `db` (inside
    /// `cairn keys rotate-master`'s transaction); plaintext rows are sealed under `new`.
    /// - Returns: how many values it re-sealed.
    /// - Throws: `MasterKeyError` when a value does not open under `old`.
    @discardableResult
    package static func resealSecrets(from old: SecretBox, to new: SecretBox, on db: any SQLDatabase) async throws -> Int {
        try await reseal(on: db, onlyPlaintext: false) { text, purpose in try new.reseal(text, purpose: purpose, from: old) }
    }

    private static func reseal(
        on db: any SQLDatabase, onlyPlaintext: Bool, _ transform: (String, String) throws -> String
    ) async throws -> Int {
        let filter = onlyPlaintext ? " WHERE secret NOT LIKE 'v1:%'" : ""
        var count = 0
        for row in try await db.raw("SELECT id, secret FROM webhook_endpoints\(unsafeRaw: filter)").all() {
            let id = try row.decode(column: "id", as: String.self)
            let sealed = try transform(try row.decode(column: "secret", as: String.self), WebhookEndpoint.secretPurpose)
            try await db.raw("UPDATE webhook_endpoints SET secret = \(bind: sealed) WHERE id = \(bind: id)").run()
            count += 1
        }
        // The secret before a rotation signs during its overlap: sealed the same way.
        let previousFilter = " WHERE previous_secret IS NOT NULL" + (onlyPlaintext ? " AND previous_secret NOT LIKE 'v1:%'" : "")
        for row in try await db.raw("SELECT id, previous_secret FROM webhook_endpoints\(unsafeRaw: previousFilter)").all() {
            let id = try row.decode(column: "id", as: String.self)
            let sealed = try transform(try row.decode(column: "previous_secret", as: String.self), WebhookEndpoint.secretPurpose)
            try await db.raw("UPDATE webhook_endpoints SET previous_secret = \(bind: sealed) WHERE id = \(bind: id)").run()
            count += 1
        }
        let configFilter = onlyPlaintext ? " WHERE config NOT LIKE 'v1:%'" : ""
        for row in try await db.raw("SELECT tenant_id, provider, config FROM notification_providers\(unsafeRaw: configFilter)").all() {
            let tenantId = try row.decode(column: "tenant_id", as: String.self)
            let provider = try row.decode(column: "provider", as: String.self)
            let sealed = try transform(try row.decode(column: "config", as: String.self), ProviderSettingsRecord.configPurpose)
            try await db.raw(
                "UPDATE notification_providers SET config = \(bind: sealed) WHERE tenant_id = \(bind: tenantId) AND provider = \(bind: provider)"
            ).run()
            count += 1
        }
        return count
    }
}
