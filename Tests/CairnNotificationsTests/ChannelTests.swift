import CairnHTTP
import CairnNotifications
import CairnOutbound
import CairnServer
import CairnStorage
import CairnTestSupport
import Foundation
import HTTPTypes
import HummingbirdTesting
import SQLKit
import Synchronization
import Testing

/// The Python webhook receiver (tests' independent signature check), on a loopback port.
final class WebhookReceiver: Sendable {
    private let process: LineProcess
    let port: Int

    /// Where the test writes the endpoint's secret once it knows it.
    let secretFile: String

    init(failFirst: Int) async throws {
        secretFile = FileManager.default.temporaryDirectory.appendingPathComponent("whsec-\(UUID().uuidString)").path
        _ = FileManager.default.createFile(atPath: secretFile, contents: Data("whsec_".utf8))
        let process = try await LineProcess(script: "webhook_receiver.py", arguments: [secretFile, String(failFirst)])
        self.process = process
        let lines = try? await process.wait("the webhook receiver starting") { $0.first?.hasPrefix("port ") == true }
        guard let port = lines?.first.flatMap({ Int($0.dropFirst(5)) }), port != 0 else {
            process.stop()
            throw TestSetupError("webhook receiver did not start")
        }
        self.port = port
    }

    /// The requests received: status answered, signature verified, webhook-id, body.
    var requests: [[String: Any]] { process.objects }

    /// Returns the requests received once `predicate` holds for them, re-checked on each request.
    /// - Throws: `WaitTimeout` after `timeout`.
    @discardableResult
    func wait(_ what: String, timeout: Duration = .seconds(30), until predicate: @escaping @Sendable ([[String: Any]]) -> Bool) async throws
        -> [[String: Any]]
    {
        LineProcess.objects(try await process.wait(what, timeout: timeout) { predicate(LineProcess.objects($0)) })
    }

    func setSecret(_ secret: String) {
        _ = FileManager.default.createFile(atPath: secretFile, contents: Data(secret.utf8))
    }

    /// Registers a webhook endpoint (for `types`, or every type) that delivers here, and keeps
    /// its secret so each request's signature is checked with it; returns the 201 answer.
    @discardableResult
    func register(on client: any TestClientProtocol, types: [String]? = nil, token: String) async throws -> TestResponse {
        var body: [String: Any] = ["url": "http://127.0.0.1:\(port)/hook"]
        if let types { body["types"] = types }
        let created = try await client.json(.post, "/webhooks", body, token: token)
        try #require(created.status == .created, "register a webhook: \(created.status) \(created.text)")
        setSecret(try #require(created.object["secret"] as? String))
        return created
    }

    func stop() {
        process.stop()
        try? FileManager.default.removeItem(atPath: secretFile)
    }
}

private func webhookSettings(_ configuration: inout CairnConfiguration) {
    fastNotifications(&configuration)
    configuration.outbound.allowPrivateWebhookTargets = true
    configuration.outbound.webhookRetrySchedule = [.seconds(2)]
    configuration.outbound.webhookDisableAfter = 1
}

@Suite("Notifications: preferences and outbound channels")
struct ChannelTests {
    @Test(arguments: TestEngine.available)
    func preferencesValidateAndRoundTrip(engine: TestEngine) async throws {
        try await withOwner(engine, "prefs@example.com") { client, components, owner in
            let initial = try await client.json(.get, "/users/me/notification-preferences", token: owner.token)
            #expect(initial.status == .ok)
            #expect(initial.object["types"] as? [String: Any] != nil)
            let locked = try await client.json(
                .put, "/users/me/notification-preferences", ["types": ["system_alert": ["in_app": false]]], token: owner.token)
            #expect(locked.status == .badRequest)
            let badZone = try await client.json(
                .put, "/users/me/notification-preferences",
                ["types": [:], "quietHours": ["start": "22:00", "end": "07:00", "timeZone": "Mars/Olympus"]], token: owner.token)
            #expect(badZone.status == .badRequest)
            // `sms` is a channel since SMS went in; `fax` is not.
            let badChannel = try await client.json(
                .put, "/users/me/notification-preferences", ["types": ["message": ["fax": true]]], token: owner.token)
            #expect(badChannel.status == .badRequest)
            let saved = try await client.json(
                .put, "/users/me/notification-preferences",
                [
                    "types": ["message": ["in_app": false], "*": ["email": true]],
                    "quietHours": ["start": "22:00", "end": "07:00", "timeZone": "Europe/Paris"],
                ],
                token: owner.token)
            #expect(saved.status == .ok)
            let read = try await client.json(.get, "/users/me/notification-preferences", token: owner.token)
            #expect((read.object["quietHours"] as? [String: Any])?["timeZone"] as? String == "Europe/Paris")
            // In-app off for `message`: not stored; other types still are.
            let center = components.notifications
            #expect(
                try await center.publish(NotificationDraft(type: "message", title: "muted"), to: [owner.userId], tenantId: owner.tenantId).isEmpty)
            #expect(
                try await center.publish(NotificationDraft(type: "system_alert", title: "loud"), to: [owner.userId], tenantId: owner.tenantId).count
                    == 1)
        }
    }

    @Test func quietHoursEndAtTheNextLocalEnd() throws {
        let preferences = NotificationPreferences(types: [:], quietHours: .init(start: "22:00", end: "07:00", timeZone: "Europe/Paris"))
        // 2026-01-15 23:30 in Paris is 22:30 UTC.
        let inside = Int64(Date(timeIntervalSince1970: 1_768_516_200).timeIntervalSince1970 * 1000)
        let until = try #require(preferences.quietUntil(now: inside))
        // 07:00 Paris on the 16th = 06:00 UTC.
        #expect(until == 1_768_543_200_000)
        #expect(preferences.quietUntil(now: until) == nil)
    }

    @Test(arguments: TestEngine.available)
    func webhooksAreSignedRetriedAndDeadLettered(engine: TestEngine) async throws {
        try await withLiveOwner(engine, "hooks@example.com", configure: webhookSettings) { app, owner in
            let (client, components) = (app.client, app.components)
            let member = try await addMember(client, owner: owner, email: "hooks-m@example.com")
            let flaky = try await WebhookReceiver(failFirst: 1)
            defer { flaky.stop() }
            let created = try await flaky.register(on: client, types: ["message"], token: owner.token)
            let secret = try #require(created.object["secret"] as? String)
            #expect(secret.hasPrefix("whsec_"))
            // The secret is shown once only.
            #expect(try await client.json(.get, "/webhooks", token: owner.token).text.contains(secret) == false)
            #expect(try await client.json(.get, "/webhooks", token: member.token).status == .forbidden)

            let published = try await client.json(
                .post, "/notifications", ["userIds": [member.userId], "type": "message", "title": "hooked"], token: owner.token)
            let notificationId = try #require((published.object["ids"] as? [String])?.first)
            // The second request is the delivery job's retry, after its backoff (about 2 s).
            let requests = try await flaky.wait("the webhook and its retry") { $0.count >= 2 }
            #expect(requests.map { $0["status"] as? Int } == [500, 200])
            #expect(requests.allSatisfy { $0["verified"] as? Bool == true })
            #expect(Set(requests.compactMap { $0["id"] as? String }).count == 1, "a retry keeps its webhook-id")
            let body = try #require(requests.last?["body"] as? [String: Any])
            #expect(body["type"] as? String == "notification.message")
            #expect(((body["data"] as? [String: Any])?["notification"] as? [String: Any])?["id"] as? String == notificationId)
            // The record is updated just after the receiver answered.
            let deliveryPath = "/notifications/\(notificationId)/deliveries"
            try await components.jobs.waitUntil("the delivery recorded as sent") {
                try await client.json(.get, deliveryPath, token: member.token).decode(PageBody<DeliveryBody>.self).items.first?.state == "sent"
            }
            let delivery = try #require(
                try await client.json(.get, deliveryPath, token: member.token).decode(PageBody<DeliveryBody>.self).items.first)
            #expect(delivery.state == "sent")
            #expect(delivery.attempts == 2)
            #expect(delivery.lastError == "HTTP 500")
            #expect(try await client.json(.get, "/notifications/\(notificationId)/deliveries", token: owner.token).status == .notFound)

            // An endpoint that keeps failing: the delivery dead-letters and the endpoint is disabled.
            let broken = try await WebhookReceiver(failFirst: 1000)
            defer { broken.stop() }
            let second = try await broken.register(on: client, types: ["friend_request"], token: owner.token)
            let failing = try await components.notifications.publish(
                NotificationDraft(type: "friend_request", title: "doomed"), to: [member.userId], tenantId: member.tenantId)
            let failingId = try #require(failing.first?.id)
            try await components.jobs.waitUntil("the doomed delivery failed") {
                let page = try await client.json(.get, "/notifications/\(failingId)/deliveries", token: member.token).decode(
                    PageBody<DeliveryBody>.self)
                return page.items.first?.state == "failed"
            }
            #expect(broken.requests.count == 2)
            let endpoints = try await client.json(.get, "/webhooks", token: owner.token).object["items"] as? [[String: Any]] ?? []
            #expect(endpoints.first { $0["id"] as? String == second.object["id"] as? String }?["enabled"] as? Bool == false)
        }
    }

    /// A repeated publish with one dedupe key (a retried broadcast page, the job-status bridge
    /// of every node) plans no second delivery, also for a user with in-app off, whom the inbox
    /// row's unique key cannot protect.
    @Test(arguments: TestEngine.available)
    func aRepeatedDedupeKeyPlansNoSecondDelivery(engine: TestEngine) async throws {
        try await withLiveOwner(engine, "dedupe-hooks@example.com", configure: webhookSettings) { app, owner in
            let (client, components) = (app.client, app.components)
            let member = try await addMember(client, owner: owner, email: "dedupe-hooks-m@example.com")
            let receiver = try await WebhookReceiver(failFirst: 0)
            defer { receiver.stop() }
            try await receiver.register(on: client, token: owner.token)
            _ = try await client.json(
                .put, "/users/me/notification-preferences", ["types": ["message": ["in_app": false, "webhook": true]]], token: member.token)
            for _ in 0..<3 {
                try await components.notifications.publish(
                    NotificationDraft(type: "message", title: "once", dedupeKey: "broadcast:b1"), to: [member.userId, owner.userId],
                    tenantId: owner.tenantId)
            }
            try await components.notifications.publish(
                NotificationDraft(type: "message", title: "no key"), to: [member.userId], tenantId: owner.tenantId)
            let counts = try await components.database.read { db in
                try await db.raw(
                    """
                    SELECT user_id, COUNT(*) AS n FROM notification_deliveries WHERE tenant_id = \(bind: owner.tenantId) GROUP BY user_id
                    """
                ).all().reduce(into: [String: Int]()) {
                    $0[try $1.decode(column: "user_id", as: String.self)] = try $1.decode(column: "n", as: Int.self)
                }
            }
            #expect(counts[member.userId] == 2, "one for the keyed notification, one for the unkeyed")
            #expect(counts[owner.userId] == 1)
            try await receiver.wait("three webhook requests") { $0.count >= 3 }
            // Every delivery job has ended, so no fourth request is on its way.
            try await components.jobs.waitUntil("every delivery job finished") {
                try await components.database.rowCount("jobs WHERE state NOT IN ('succeeded', 'discarded', 'cancelled')") == 0
            }
            #expect(receiver.requests.count == 3)
        }
    }

    @Test(arguments: TestEngine.available)
    func webhookURLsOnPrivateAddressesAreRefused(engine: TestEngine) async throws {
        try await withOwner(engine, "ssrf@example.com") { client, _, owner in
            for url in [
                "http://127.0.0.1:8080/x", "http://localhost/x", "http://169.254.169.254/latest/meta-data", "http://10.1.2.3/",
                "http://[::1]/x", "http://192.168.0.1/", "ftp://example.com/", "http://user:pw@example.com/",
            ] {
                let response = try await client.json(.post, "/webhooks", ["url": url], token: owner.token)
                #expect(response.status == .badRequest, "\(url) was accepted")
            }
        }
    }

    /// A host that does not resolve is said to be one (`.invalid` never resolves, RFC 6761),
    /// with the same code and field as a private address; before, it
    /// was told to use public addresses, as though it had resolved to a private one.
    @Test(arguments: TestEngine.available)
    func aWebhookHostThatDoesNotResolveIsSaidToBeOne(engine: TestEngine) async throws {
        try await withTestApp(engine) { client, _ in
            let owner = try await signUp(client, "unresolved@example.com")
            let created = try await client.json(.post, "/webhooks", ["url": "https://no-such-host.invalid/hook"], token: owner.token)
            #expect(created.status == .badRequest)
            #expect(created.code == "invalid_input")
            let issues = try created.decode(ProblemBody.self).errors ?? []
            #expect(issues.map(\.field) == ["url"])
            #expect(issues.first?.issue.contains("no-such-host.invalid") == true, "\(created.text)")
            #expect(issues.first?.issue.contains("could not be resolved") == true, "\(created.text)")
            #expect(issues.first?.issue.contains("public") == false, "\(created.text)")
            let loopback = try await client.json(.post, "/webhooks", ["url": "http://127.0.0.1:8080/x"], token: owner.token)
            #expect(loopback.code == "invalid_input")
            #expect(try loopback.decode(ProblemBody.self).errors?.first?.issue.contains("public addresses") == true)
        }
    }
}
