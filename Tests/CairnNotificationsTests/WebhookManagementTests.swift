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
import Testing

/// Live notifications, webhooks to loopback allowed.
private func hookSettings(_ configuration: inout CairnConfiguration) {
    fastNotifications(&configuration)
    configuration.outbound.allowPrivateWebhookTargets = true
}

/// A live app with `hookSettings` whose webhooks retry once, `retryAfter` after a failure, and
/// whose endpoints are disabled after `disableAfter` dead letters.
private func withQuickDeadLetters(
    _ engine: TestEngine, retryAfter: Duration, disableAfter: Int, _ body: @Sendable (TestApp) async throws -> Void
) async throws {
    try await withTestApp(
        engine, mode: .live,
        configure: {
            hookSettings(&$0)
            $0.outbound.webhookRetrySchedule = [retryAfter]
            $0.outbound.webhookDisableAfter = disableAfter
        }, body)
}

/// The first delivery `path` (`/notifications/{id}/deliveries`) lists for `token`.
private func firstDelivery(_ client: any TestClientProtocol, _ path: String, token: String) async throws -> DeliveryBody? {
    try await client.json(.get, path, token: token).decode(PageBody<DeliveryBody>.self).items.first
}

/// The webhook delivery jobs' `(state, attempt, run_at)`, oldest first.
private func webhookJobs(_ database: Database) async throws -> [(state: String, attempt: Int, runAt: Int64)] {
    try await database.read { db in
        try await db.raw("SELECT state, attempt, run_at FROM jobs WHERE kind = 'notifications.webhook' ORDER BY id").all().map {
            (
                try $0.decode(column: "state", as: String.self), try $0.decode(column: "attempt", as: Int.self),
                try $0.decode(column: "run_at", as: Int64.self)
            )
        }
    }
}

/// A JSON array of booleans (Foundation on Linux reads them as `NSNumber`s, which `as? [Bool]` refuses).
private func bools(_ value: Any?) -> [Bool]? {
    (value as? [Any])?.map { ($0 as? Bool) ?? (($0 as? NSNumber)?.boolValue ?? false) }
}

@Suite("Notifications: webhook retries, endpoint management, rotation, redelivery")
struct WebhookManagementTests {
    /// The default schedule retries for about a day (8 attempts), each wait as configured and
    /// counted on the node's clock, which the test moves: no real waiting.
    @Test(arguments: TestEngine.available)
    func retriesFollowTheScheduleForAboutADay(engine: TestEngine) async throws {
        let clock = TestClock()
        try await withTestApp(engine, mode: .live, clock: clock, configure: hookSettings) { app in
            let (client, components) = (app.client, app.components)
            let schedule = components.configuration.outbound.webhookRetrySchedule
            #expect(schedule.count == 7)
            let total = schedule.reduce(Duration.zero, +)
            #expect(total >= .seconds(23 * 3600) && total <= .seconds(25 * 3600), "the schedule spans \(total)")
            let owner = try await signUp(client, "schedule@example.com")
            let down = try await WebhookReceiver(failFirst: 1000)
            defer { down.stop() }
            try await down.register(on: client, token: owner.token)
            let stored = try await components.notifications.publish(
                NotificationDraft(type: "message", title: "persistent"), to: [owner.userId], tenantId: owner.tenantId)
            let notificationId = try #require(stored.first?.id)
            var waited = Duration.zero
            for (index, wait) in schedule.enumerated() {
                let attempt = index + 1
                try await down.wait("webhook attempt \(attempt)") { $0.count >= attempt }
                try await components.jobs.waitUntil("attempt \(attempt) recorded as retryable") {
                    try await webhookJobs(components.database).first.map { $0.state == "retryable" && $0.attempt == attempt } ?? false
                }
                let job = try #require(try await webhookJobs(components.database).first)
                // The clock stands still between moves: the wait is exact.
                #expect(job.runAt - clock.milliseconds == Int64(wait.components.seconds) * 1000, "wait after attempt \(attempt)")
                clock.advance(by: wait)
                waited += wait
            }
            try await down.wait("the eighth and last attempt") { $0.count >= 8 }
            try await components.jobs.waitUntil("the delivery dead-lettered") {
                try await webhookJobs(components.database).first?.state == "discarded"
            }
            // Read from the table: a day later on the node's clock, the owner's access token has expired.
            let delivery = try await components.database.read { db in
                try await db.raw("SELECT state, attempts FROM notification_deliveries WHERE notification_id = \(bind: notificationId)").first().map {
                    (try $0.decode(column: "state", as: String.self), try $0.decode(column: "attempts", as: Int.self))
                }
            }
            #expect(delivery?.0 == "failed")
            #expect(delivery?.1 == 8)
            #expect(waited == total)
            #expect(down.requests.count == 8)
        }
    }

    /// `CAIRN_WEBHOOKS_RETRY_SCHEDULE` sets the waits (and so the attempts); bad lists stop start-up.
    @Test func theRetryScheduleIsASetting() async throws {
        let configured = try await CairnConfiguration.load(flags: [:], environment: ["CAIRN_WEBHOOKS_RETRY_SCHEDULE": "10s, 1m,2h,1d"])
        #expect(configured.outbound.webhookRetrySchedule == [.seconds(10), .seconds(60), .seconds(7200), .seconds(86_400)])
        #expect(configured.outbound.webhookMaxAttempts == 5)
        let defaults = try await CairnConfiguration.load(flags: [:], environment: [:])
        #expect(defaults.outbound.webhookMaxAttempts == 8)
        for bad in ["", "0s", "5x", "1s,,2s", "8d", Array(repeating: "1s", count: 100).joined(separator: ",")] {
            await #expect(throws: ConfigurationError.self, "\(bad)") {
                _ = try await CairnConfiguration.load(flags: [:], environment: ["CAIRN_WEBHOOKS_RETRY_SCHEDULE": bad])
            }
        }
    }

    /// A rotation answers the new secret once; during the overlap every message carries a
    /// signature for each secret, so Standard Webhooks' own verifier accepts it with the old
    /// secret and with the new one; after the overlap only the new one signs. `ETag` and
    /// `If-Match` guard the change; both secrets are sealed at rest.
    @Test(arguments: TestEngine.available)
    func aRotatedSecretSignsBesideTheOldOneDuringItsOverlap(engine: TestEngine) async throws {
        let clock = TestClock()
        try await withTestApp(engine, mode: .live, clock: clock, configure: hookSettings) { app in
            let (client, components) = (app.client, app.components)
            let owner = try await signUp(client, "rotate@example.com")
            let stranger = try await signUp(client, "rotate-other@example.com")
            let receiver = try await WebhookReceiver(failFirst: 0)
            defer { receiver.stop() }
            let created = try await receiver.register(on: client, types: ["message"], token: owner.token)
            let old = try #require(created.object["secret"] as? String)
            let id = try #require(created.object["id"] as? String)
            let shown = try await client.json(.get, "/webhooks/\(id)", token: owner.token)
            #expect(shown.status == .ok)
            #expect(shown.headers[.eTag] == "\"1\"")
            #expect(shown.object["secret"] == nil && !shown.text.contains(old))
            #expect(try await client.json(.get, "/webhooks/\(id)", token: stranger.token).status == .notFound)
            #expect(try await client.json(.patch, "/webhooks/\(id)", ["rotateSecret": true], token: stranger.token).status == .notFound)
            let overlapWithoutRotation = try await client.json(.patch, "/webhooks/\(id)", ["secretOverlapSeconds": 60], token: owner.token)
            #expect(overlapWithoutRotation.status == .badRequest)

            let rotated = try await client.json(
                .patch, "/webhooks/\(id)", ["rotateSecret": true, "secretOverlapSeconds": 3600], token: owner.token,
                headers: [.ifMatch: "\"1\""])
            #expect(rotated.status == .ok)
            #expect(rotated.headers[.eTag] == "\"2\"")
            #expect(rotated.headers[.cacheControl] == "no-store")
            let new = try #require(rotated.object["secret"] as? String)
            #expect(new != old && new.hasPrefix("whsec_"))
            #expect(rotated.object["previousSecretExpiresAt"] as? String != nil)
            let stale = try await client.json(.patch, "/webhooks/\(id)", ["rotateSecret": true], token: owner.token, headers: [.ifMatch: "\"1\""])
            #expect(stale.status == .preconditionFailed)
            #expect(!(try await client.json(.get, "/webhooks/\(id)", token: owner.token).text.contains(new)))
            let sealed = try await components.database.read { db in
                try await db.raw("SELECT secret, previous_secret FROM webhook_endpoints WHERE id = \(bind: id)").first().map {
                    [try $0.decode(column: "secret", as: String.self), try $0.decode(column: "previous_secret", as: String.self)]
                }
            }
            #expect(sealed?.allSatisfy { $0.hasPrefix("v1:") } == true)
            #expect(sealed?.contains { $0.contains(old) || $0.contains(new) } == false)

            receiver.setSecret(new + "\n" + old)
            try await components.notifications.publish(
                NotificationDraft(type: "message", title: "during"), to: [owner.userId], tenantId: owner.tenantId)
            let during = try await receiver.wait("the webhook during the overlap") { $0.count >= 1 }
            #expect(bools(during[0]["verifiedBy"]) == [true, true], "\(during[0])")
            #expect((during[0]["signature"] as? String)?.split(separator: " ").count ?? 2 == 2)

            clock.advance(by: .seconds(3601))
            try await components.notifications.publish(
                NotificationDraft(type: "message", title: "after"), to: [owner.userId], tenantId: owner.tenantId)
            let after = try await receiver.wait("the webhook after the overlap") { $0.count >= 2 }
            #expect(bools(after[1]["verifiedBy"]) == [true, false], "\(after[1])")
        }
    }

    /// A dead-lettered delivery to an endpoint that was disabled: redelivery waits for the
    /// endpoint to be re-enabled (PATCH), then makes one new attempt with the same
    /// `webhook-id`. Only the tenant's admins and the recipient may ask; another tenant gets 404.
    @Test(arguments: TestEngine.available)
    func aReEnabledEndpointGetsAFailedDeliveryRedelivered(engine: TestEngine) async throws {
        try await withQuickDeadLetters(engine, retryAfter: .milliseconds(200), disableAfter: 1) { app in
            let (client, components) = (app.client, app.components)
            let (owner, members, stranger) = try await makeTenant(client, prefix: "redeliver", members: 2)
            let (member, bystander) = (members[0], members[1])
            let receiver = try await WebhookReceiver(failFirst: 2)
            defer { receiver.stop() }
            let created = try await receiver.register(on: client, types: ["friend_request"], token: owner.token)
            let id = try #require(created.object["id"] as? String)
            let stored = try await components.notifications.publish(
                NotificationDraft(type: "friend_request", title: "again"), to: [member.userId], tenantId: owner.tenantId)
            let notificationId = try #require(stored.first?.id)
            let deliveriesPath = "/notifications/\(notificationId)/deliveries"
            try await components.jobs.waitUntil("the delivery dead-lettered") {
                try await firstDelivery(client, deliveriesPath, token: member.token)?.state == "failed"
            }
            let delivery = try #require(
                try await firstDelivery(client, deliveriesPath, token: member.token))
            let disabled = try await client.json(.get, "/webhooks/\(id)", token: owner.token)
            #expect(disabled.object["enabled"] as? Bool == false)
            #expect(disabled.object["disabledAt"] as? String != nil)

            let redeliverPath = "\(deliveriesPath)/\(delivery.id)/redeliver"
            let whileDisabled = try await client.json(.post, redeliverPath, token: owner.token)
            #expect(whileDisabled.status == .conflict)
            #expect(try await client.json(.post, redeliverPath, token: stranger.token).status == .notFound)
            #expect(try await client.json(.post, redeliverPath, token: bystander.token).status == .notFound)
            let strangerPatch = try await client.json(.patch, "/webhooks/\(id)", ["enabled": true], token: stranger.token)
            #expect(strangerPatch.status == .notFound)
            #expect(try await client.json(.patch, "/webhooks/\(id)", ["enabled": true], token: member.token).status == .forbidden)

            let enabled = try await client.json(
                .patch, "/webhooks/\(id)", ["enabled": true, "types": ["friend_request", "message"]], token: owner.token)
            #expect(enabled.status == .ok)
            #expect(enabled.object["enabled"] as? Bool == true)
            #expect(enabled.object["deadLetters"] as? Int == 0)
            #expect(enabled.object["disabledAt"] is NSNull)
            #expect(enabled.object["types"] as? [String] == ["friend_request", "message"])
            #expect(enabled.object["secret"] == nil)

            let accepted = try await client.json(.post, redeliverPath, token: owner.token)
            #expect(accepted.status == .accepted)
            #expect(accepted.object["state"] as? String == "pending")
            let requests = try await receiver.wait("the redelivery") { $0.count >= 3 }
            #expect(requests[2]["status"] as? Int == 200)
            #expect(Set(requests.compactMap { $0["id"] as? String }) == [delivery.id], "a redelivery keeps its webhook-id")
            try await components.jobs.waitUntil("the redelivery recorded") {
                try await firstDelivery(client, deliveriesPath, token: member.token)?.state == "sent"
            }
            let sent = try #require(try await firstDelivery(client, deliveriesPath, token: member.token))
            #expect(sent.attempts == 3)
            // Sent: nothing to redeliver, for the recipient as for admins.
            #expect(try await client.json(.post, redeliverPath, token: member.token).status == .conflict)
        }
    }

    /// A delivery whose job is cancelled before it ran becomes `failed` (`cancelled`) in the
    /// cancelling transaction, so it stays so after a restart and can be redelivered.
    @Test(arguments: TestEngine.available)
    func aCancelledDeliveryJobFailsTheDeliverySoItCanBeRedelivered(engine: TestEngine) async throws {
        try await withTestApp(engine, configure: hookSettings) { app in
            let (client, components) = (app.client, app.components)
            let owner = try await signUp(client, "cancelled-delivery@example.com")
            let created = try await client.json(.post, "/webhooks", ["url": "http://127.0.0.1:9/hook"], token: owner.token)
            #expect(created.status == .created)
            let stored = try await components.notifications.publish(
                NotificationDraft(type: "message", title: "never sent"), to: [owner.userId], tenantId: owner.tenantId)
            let deliveriesPath = "/notifications/\(try #require(stored.first?.id))/deliveries"
            let jobId = try #require(
                try await components.database.read { db in
                    try await db.raw("SELECT id FROM jobs WHERE kind = 'notifications.webhook'").first()?.decode(column: "id", as: String.self)
                })
            #expect(try await client.json(.post, "/jobs/\(jobId)/cancel", token: owner.token).status == .ok)
            let delivery = try #require(
                try await firstDelivery(client, deliveriesPath, token: owner.token))
            #expect(delivery.state == "failed")
            #expect(delivery.lastError == "cancelled")
            #expect(delivery.attempts == 0)
            let endpoint = try await client.json(.get, "/webhooks/\(try #require(created.object["id"] as? String))", token: owner.token)
            #expect(endpoint.object["deadLetters"] as? Int == 0, "a cancelled delivery is no dead letter")
            let redelivered = try await client.json(.post, "\(deliveriesPath)/\(delivery.id)/redeliver", token: owner.token)
            #expect(redelivered.status == .accepted, "\(redelivered.text)")
            #expect(redelivered.object["state"] as? String == "pending")
        }
    }

    /// Redeliveries of one failed delivery that fail again count one dead letter between them:
    /// with the endpoint disabled after two, one event retried by hand three times leaves it on.
    @Test(arguments: TestEngine.available)
    func redeliveriesOfOneFailureCountOneDeadLetter(engine: TestEngine) async throws {
        try await withQuickDeadLetters(engine, retryAfter: .milliseconds(50), disableAfter: 2) { app in
            let (client, components) = (app.client, app.components)
            let owner = try await signUp(client, "dead-letters-once@example.com")
            let down = try await WebhookReceiver(failFirst: 1000)
            defer { down.stop() }
            let created = try await down.register(on: client, token: owner.token)
            let endpointPath = "/webhooks/\(try #require(created.object["id"] as? String))"
            let stored = try await components.notifications.publish(
                NotificationDraft(type: "message", title: "unlucky"), to: [owner.userId], tenantId: owner.tenantId)
            let deliveriesPath = "/notifications/\(try #require(stored.first?.id))/deliveries"
            @Sendable func delivery() async throws -> DeliveryBody? { try await firstDelivery(client, deliveriesPath, token: owner.token) }
            try await components.jobs.waitUntil("the delivery dead-lettered") { try await delivery()?.state == "failed" }
            let id = try #require(try await delivery()?.id)
            for round in 1...3 {
                let accepted = try await client.json(.post, "\(deliveriesPath)/\(id)/redeliver", token: owner.token)
                #expect(accepted.status == .accepted, "redelivery \(round): \(accepted.text)")
                try await components.jobs.waitUntil("redelivery \(round) failed") {
                    let current = try await delivery()
                    return current?.state == "failed" && current?.attempts == 2 + round
                }
            }
            let endpoint = try await client.json(.get, endpointPath, token: owner.token)
            #expect(endpoint.object["deadLetters"] as? Int == 1)
            #expect(endpoint.object["enabled"] as? Bool == true)
        }
    }
}
