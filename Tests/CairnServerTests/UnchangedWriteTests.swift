import CairnFormats
import CairnOutbound
import CairnServer
import CairnStorage
import CairnTestSupport
import Foundation
import HTTPTypes
import HummingbirdTesting
import SQLKit
import Testing

/// Returns once the wall clock, which stamps `updatedAt`, has moved past `milliseconds`: a
/// write after this would carry a later `updatedAt`, so an equal one proves no write.
private func wallClockPassed(_ milliseconds: Int64) async throws {
    try await withDeadline(.seconds(5), "the wall clock to move on") {
        while WallClock.milliseconds() <= milliseconds { await Task.yield() }
    }
}

@Suite("Writes that change nothing")
struct UnchangedWriteTests {
    /// A PATCH of the values already stored, on every PATCH route of the contract, answers 200
    /// with the resource as it is: the same `ETag` (version) and `updatedAt`, also on a later
    /// GET; `PATCH /webhooks/{id} {}` too. A value that does differ still moves them.
    @Test(arguments: TestEngine.available)
    func patchingTheStoredValuesKeepsVersionAndUpdatedAt(engine: TestEngine) async throws {
        try await withTestApp(engine, configure: { $0.outbound.allowPrivateWebhookTargets = true }) { client, _ in
            let (user, tokens) = try await client.registerAndLogin(email: "unchanged@example.com", name: "Ann")
            let token = tokens.accessToken
            let task = try await client.json(.post, "/tasks", ["title": "Same", "description": "d"], token: token)
            let product = try await client.json(
                .post, "/products", ["sku": "SAME-1", "name": "Same", "priceMinor": 100, "currency": "EUR", "attributes": ["a": 1]],
                token: token)
            let schedule = try await client.json(
                .post, "/schedules", ["name": "n", "cron": "@daily", "kind": "noop", "args": ["sleepMs": 1, "checkpointEvery": 100]], token: token)
            let pipeline = try await client.json(
                .post, "/pipelines", ["name": "p", "input": ["format": "csv"], "sql": "SELECT * FROM input", "output": ["format": "csv"]],
                token: token)
            let webhook = try await client.json(.post, "/webhooks", ["url": "http://127.0.0.1:9/hook", "types": ["message"]], token: token)
            let id = { (response: TestResponse) in response.object["id"] as? String ?? "" }
            let cases: [(path: String, body: [String: Any])] = [
                ("/tasks/\(id(task))", ["title": "Same", "description": "d", "completed": false]),
                ("/products/\(id(product))", ["name": "Same", "priceMinor": 100, "currency": "EUR", "attributes": ["a": 1], "stock": 0]),
                ("/schedules/\(id(schedule))", ["name": "n", "cron": "@daily", "args": ["checkpointEvery": 100, "sleepMs": 1], "enabled": true]),
                ("/pipelines/\(id(pipeline))", ["name": "p", "sql": "SELECT * FROM input", "output": ["format": "csv"]]),
                ("/webhooks/\(id(webhook))", ["url": "http://127.0.0.1:9/hook", "types": ["message"], "enabled": true]),
                ("/webhooks/\(id(webhook))", [:]),
                ("/users/me", ["name": "Ann"]),
                ("/users/\(user.id)", ["name": "Ann", "role": "owner"]),
            ]
            for (path, body) in cases {
                let before = try await client.json(.get, path, token: token)
                let etag = try #require(before.headers[.eTag], "\(path): \(before.text)")
                // Webhooks show no `updatedAt`: their ETag alone tells.
                if let stamped = Timestamp.parseMilliseconds(before.object["updatedAt"] as? String ?? "") { try await wallClockPassed(stamped) }
                let patched = try await client.json(.patch, path, body, token: token)
                #expect(patched.status == .ok, "\(path): \(patched.text)")
                #expect(patched.headers[.eTag] == etag, "\(path)")
                #expect(patched.object["updatedAt"] as? String == before.object["updatedAt"] as? String, "\(path)")
                #expect(try await client.json(.get, path, token: token).headers[.eTag] == etag, "\(path)")
            }
            // One differing value among equal ones is a change.
            let changed = try await client.json(.patch, "/tasks/\(id(task))", ["title": "Same", "completed": true], token: token)
            #expect(changed.headers[.eTag] == "\"2\"")
            let renamed = try await client.json(.patch, "/webhooks/\(id(webhook))", ["types": ["message", "order"]], token: token)
            #expect(renamed.headers[.eTag] == "\"2\"")
        }
    }

    /// `PUT` of the stored document again (provider settings, templates, notification
    /// preferences) writes nothing: `updatedAt` stays.
    @Test(arguments: TestEngine.available)
    func puttingTheStoredDocumentKeepsUpdatedAt(engine: TestEngine) async throws {
        try await withTestApp(engine) { client, components in
            let (user, tokens) = try await client.registerAndLogin(email: "unchanged-put@example.com")
            let token = tokens.accessToken
            let documents: [(path: String, body: [String: Any])] = [
                ("/notification-providers/sendgrid", ["apiKey": "SG.same-key-for-a-test", "fromEmail": "noreply@example.com"]),
                ("/notification-templates/order", ["default": ["email": ["subject": "Order {{orderId}}"]], "variables": ["orderId"]]),
            ]
            for (path, body) in documents {
                let first = try await client.json(.put, path, body, token: token)
                #expect(first.status == .ok, "\(path): \(first.text)")
                let stamped = try #require(first.object["updatedAt"] as? String, "\(path)")
                try await wallClockPassed(try #require(Timestamp.parseMilliseconds(stamped)))
                let again = try await client.json(.put, path, body, token: token)
                #expect(again.status == .ok, "\(path): \(again.text)")
                #expect(again.object["updatedAt"] as? String == stamped, "\(path)")
            }
            let preferences = ["types": ["message": ["email": false]]]
            let storedAt = { @Sendable in
                try await components.database.read { db in
                    try await db.raw("SELECT updated_at FROM notification_preferences WHERE user_id = \(bind: user.id)").first()?
                        .decode(column: "updated_at", as: Int64.self)
                }
            }
            #expect(try await client.json(.put, "/users/me/notification-preferences", preferences, token: token).status == .ok)
            let stamped = try #require(try await storedAt())
            try await wallClockPassed(stamped)
            #expect(try await client.json(.put, "/users/me/notification-preferences", preferences, token: token).status == .ok)
            #expect(try await storedAt() == stamped)
        }
    }
}
