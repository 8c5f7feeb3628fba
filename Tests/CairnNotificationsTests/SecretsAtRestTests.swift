import CairnOutbound
import CairnServer
import CairnStorage
import CairnTestSupport
import Foundation
import HTTPTypes
import HummingbirdTesting
import SQLKit
import Testing

/// Webhook signing secrets and provider API keys sealed at rest under the master key (issue 14).
@Suite("Notifications: secrets sealed at rest")
struct SecretsAtRestTests {
    /// Allows loopback webhook targets (the endpoint is never called here).
    @Sendable static func privateTargets(_ configuration: inout CairnConfiguration) {
        configuration.outbound.allowPrivateWebhookTargets = true
    }

    /// A dump of the whole database (`pg_dump`, or `sqlite3 .dump`): what someone holding a
    /// backup, but not the master key, can read.
    static func dump(_ configuration: CairnConfiguration) async throws -> String {
        if let url = configuration.databaseURL {
            let pgDump =
                (try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql"))?.sorted().last.map {
                    "/usr/lib/postgresql/\($0)/bin/pg_dump"
                } ?? "pg_dump"
            let result = try await runChild(pgDump, ["--dbname", url])
            try #require(result.status == 0, "pg_dump: \(result.errorText)")
            return result.text
        }
        let result = try await runChild("/usr/bin/env", ["sqlite3", configuration.sqlitePath, ".dump"])
        try #require(result.status == 0, "sqlite3: \(result.errorText)")
        return result.text
    }

    @Test(arguments: TestEngine.available)
    func aDatabaseDumpHoldsNeitherTheProviderKeyNorTheWebhookSecret(engine: TestEngine) async throws {
        try await withOwner(engine, "sealed@example.com", configure: Self.privateTargets) { client, components, owner in
            let created = try await client.json(.post, "/webhooks", ["url": "http://127.0.0.1:9/hook"], token: owner.token)
            #expect(created.status == .created)
            let secret = try #require(created.object["secret"] as? String)
            let apiKey = "SG.cairn-sealed-" + UUID().uuidString
            let put = try await client.json(
                .put, "/notification-providers/sendgrid", ["apiKey": apiKey, "fromEmail": "noreply@example.com"], token: owner.token)
            #expect(put.status == .ok)
            // Read back through the master key: the masked ending of the real key.
            let listed = try await client.json(.get, "/notification-providers", token: owner.token).text
            #expect(listed.contains("…" + apiKey.suffix(4)))

            let dump = try await Self.dump(components.configuration)
            #expect(dump.contains("webhook_endpoints"))
            #expect(!dump.contains(secret))
            #expect(!dump.contains(String(secret.dropFirst("whsec_".count))))
            #expect(!dump.contains(apiKey))
            #expect(!dump.contains("noreply@example.com"))
        }
    }

    @Test(arguments: TestEngine.available)
    func plaintextRowsWrittenBeforeSealingAreSealedAtStart(engine: TestEngine) async throws {
        try await withTestDatabase(engine, configure: Self.privateTargets) { database in
            let apiKey = "SG.cairn-plain-" + UUID().uuidString
            let secret = "whsec_" + Data((0..<32).map { _ in UInt8.random(in: 0...255) }).base64EncodedString()
            try await withTestApp(on: database) { app in
                let owner = try await signUp(app.client, "plain@example.com")
                let created = try await app.client.json(.post, "/webhooks", ["url": "http://127.0.0.1:9/hook"], token: owner.token)
                #expect(created.status == .created)
                let put = try await app.client.json(
                    .put, "/notification-providers/sendgrid", ["apiKey": "SG.x", "fromEmail": "a@example.com"], token: owner.token)
                #expect(put.status == .ok)
                // As a node before sealing existed left them: plain text.
                let config = #"{"apiKey":"\#(apiKey)","fromEmail":"a@example.com","fromName":null}"#
                try await app.database.write { db in
                    try await db.raw("UPDATE webhook_endpoints SET secret = \(bind: secret)").run()
                    try await db.raw("UPDATE notification_providers SET config = \(bind: config)").run()
                }
            }
            try await withTestApp(on: database) { app in
                let stored = try await app.database.read { db in
                    (
                        try await db.raw("SELECT secret FROM webhook_endpoints").all().map { try $0.decode(column: "secret", as: String.self) },
                        try await db.raw("SELECT config FROM notification_providers").all().map { try $0.decode(column: "config", as: String.self) }
                    )
                }
                #expect(stored.0.count == 1 && stored.0.allSatisfy { $0.hasPrefix("v1:") && !$0.contains(secret) })
                #expect(stored.1.count == 1 && stored.1.allSatisfy { $0.hasPrefix("v1:") && !$0.contains(apiKey) })
                let tokens = try await app.client.login(email: "plain@example.com", password: "correct horse battery")
                let listed = try await app.client.json(.get, "/notification-providers", token: tokens.accessToken).text
                #expect(listed.contains("…" + apiKey.suffix(4)))
            }
        }
    }
}
