import CairnHTTP
import CairnNotifications
import CairnOutbound
import CairnServer
import CairnStorage
import CairnTestSupport
import Foundation
import HTTPTypes
import HummingbirdTesting
import Synchronization
import Testing

/// A Python test peer printing one line per event on its standard output, collected as they
/// arrive; tests await the lines they expect.
final class LineProcess: Sendable {
    private let lines: Observed<[String]>
    private let child: ChildProcess

    /// Starts `python3 script arguments…` from this folder's Resources.
    init(script: String, arguments: [String]) async throws {
        let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Resources/\(script)").path
        let lines = Observed<[String]>([])
        let partial = Mutex(Data())
        self.lines = lines
        child = try await ChildProcess("/usr/bin/env", ["python3", path] + arguments) { data in
            guard let data else { return }
            let complete = partial.withLock { buffer -> [String] in
                buffer.append(data)
                var out: [String] = []
                while let newline = buffer.firstIndex(of: 0x0A) {
                    out.append(String(decoding: buffer[buffer.startIndex..<newline], as: UTF8.self))
                    buffer.removeSubrange(buffer.startIndex...newline)
                }
                return out
            }
            if !complete.isEmpty { lines.update { $0 += complete } }
        }
    }

    /// The lines printed so far.
    var printed: [String] { lines.value }

    /// The lines that are JSON objects.
    var objects: [[String: Any]] { Self.objects(lines.value) }

    static func objects(_ lines: [String]) -> [[String: Any]] {
        lines.compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
    }

    /// Returns the lines printed once `predicate` holds for them, re-checked on each new line.
    /// - Throws: `WaitTimeout` after `timeout`.
    @discardableResult
    func wait(_ what: String, timeout: Duration = .seconds(30), until predicate: @escaping @Sendable ([String]) -> Bool) async throws -> [String] {
        try await lines.wait(what, timeout: timeout, until: predicate)
    }

    /// Stops the peer (SIGKILL).
    func stop() {
        child.signal(SIGKILL)
    }
}

/// Runs `body` on a live node reading `clock` whose email, SMS and push providers are a
/// ``FakeProviders``, with a tenant owner signed up as `email`; the fakes stop afterwards.
func withFakeProviders(
    _ engine: TestEngine, owner email: String, clock: any CairnClock = SystemClock(),
    _ body: @Sendable (TestApp, FakeProviders, Member) async throws -> Void
) async throws {
    let fake = try await FakeProviders()
    defer { fake.stop() }
    try await withLiveOwner(engine, email, clock: clock, configure: fake.configure) { app, owner in try await body(app, fake, owner) }
}

/// The fake SendGrid, FCM (with its OAuth token endpoint), APNs and Twilio of
/// `Resources/fake_providers.py`, over TLS with HTTP/2, checking credentials with PyJWT.
final class FakeProviders: Sendable {
    let process: LineProcess
    /// `setup.json`: port, CA file, the credentials a tenant configures.
    nonisolated(unsafe) let setup: [String: Any]
    let base: String
    let caFile: String
    /// The fake's certificates and setup, removed by ``stop()``.
    let folder: URL

    init() async throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("fake-providers-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        self.folder = folder
        let process = try await LineProcess(script: "fake_providers.py", arguments: [folder.path])
        self.process = process
        do {
            try await process.wait("the fake providers starting", timeout: .seconds(60)) { $0.contains("ready") }
        } catch {
            process.stop()
            throw TestSetupError("the fake providers did not start (pip install hypercorn trustme pyjwt cryptography): \(error)")
        }
        let setup = try #require(
            try JSONSerialization.jsonObject(with: Data(contentsOf: folder.appendingPathComponent("setup.json"))) as? [String: Any])
        self.setup = setup
        base = try #require(setup["base"] as? String)
        caFile = try #require(setup["caFile"] as? String)
    }

    /// Requests received, in order: path, httpVersion, headers, body, status answered, verified.
    var requests: [[String: Any]] { process.objects }

    func requests(to prefix: String) -> [[String: Any]] {
        requests.filter { ($0["path"] as? String)?.hasPrefix(prefix) == true }
    }

    /// Points a node's provider endpoints at the fake.
    func configure(_ configuration: inout CairnConfiguration) {
        fastNotifications(&configuration)
        configuration.outbound.providers.sendGrid = base
        configuration.outbound.providers.fcm = base
        configuration.outbound.providers.fcmToken = base + "/token"
        configuration.outbound.providers.apns = base
        configuration.outbound.providers.apnsSandbox = base
        configuration.outbound.providers.twilio = base
        configuration.outbound.providers.caFile = caFile
        configuration.outbound.providerMaxAttempts = 3
    }

    func stop() {
        process.stop()
        try? FileManager.default.removeItem(at: folder)
    }
}

private func body(_ request: [String: Any]) -> [String: Any] {
    (try? JSONSerialization.jsonObject(with: Data((request["body"] as? String ?? "").utf8)) as? [String: Any]) ?? [:]
}

func deliveries(_ client: any TestClientProtocol, _ notificationId: String, _ member: Member) async throws -> [[String: Any]] {
    try await client.json(.get, "/notifications/\(notificationId)/deliveries", token: member.token).object["items"] as? [[String: Any]] ?? []
}

@Suite("Notifications: email and push providers")
struct ProviderTests {
    /// Configures all three providers for the owner's tenant with the fake's credentials.
    private func configureProviders(_ client: any TestClientProtocol, _ owner: Member, _ fake: FakeProviders) async throws {
        let sendgrid = try await client.json(
            .put, "/notification-providers/sendgrid",
            ["apiKey": try #require(fake.setup["sendgridKey"] as? String), "fromEmail": "noreply@example.com", "fromName": "Cairn"],
            token: owner.token)
        #expect(sendgrid.status == .ok, "\(sendgrid.text)")
        let fcm = try await client.json(.put, "/notification-providers/fcm", ["serviceAccount": fake.setup["serviceAccount"]!], token: owner.token)
        #expect(fcm.status == .ok, "\(fcm.text)")
        var apns = try #require(fake.setup["apns"] as? [String: Any])
        apns["environment"] = "sandbox"
        let apnsAnswer = try await client.json(.put, "/notification-providers/apns", apns, token: owner.token)
        #expect(apnsAnswer.status == .ok, "\(apnsAnswer.text)")
    }

    @Test(arguments: TestEngine.available)
    func emailAndPushGoThroughTheTenantsProviders(engine: TestEngine) async throws {
        try await withFakeProviders(engine, owner: "providers@example.com") { app, fake, owner in
            let client = app.client
            let member = try await addMember(client, owner: owner, email: "reader@example.com")
            try await configureProviders(client, owner, fake)
            // Secrets never come back.
            let listed = try await client.json(.get, "/notification-providers", token: owner.token)
            #expect((listed.object["items"] as? [[String: Any]])?.count == 3)
            let privateKey = try #require((fake.setup["apns"] as? [String: Any])?["privateKey"] as? String)
            for secret in ["SG.test-key", "BEGIN PRIVATE KEY", String(privateKey.dropFirst(40).prefix(40))] {
                #expect(!listed.text.contains(secret), "\(secret.prefix(10))… returned")
            }
            #expect(try await client.json(.get, "/notification-providers", token: member.token).status == .forbidden)

            // Email is opt-in; push reaches registered devices.
            let prefs = try await client.json(
                .put, "/users/me/notification-preferences", ["types": ["*": ["email": true]]], token: member.token)
            #expect(prefs.status == .ok)
            let apnsToken = String(repeating: "ab12", count: 16)
            let deadToken = "dead" + String(repeating: "0", count: 60)
            var deviceIds: [String: String] = [:]
            for (platform, token) in [("fcm", "fcm-token-1"), ("fcm", "unregistered-1"), ("apns", apnsToken), ("apns", deadToken)] {
                let registered = try await client.json(.post, "/users/me/devices", ["platform": platform, "token": token], token: member.token)
                #expect(registered.status == .created, "\(registered.text)")
                #expect(!registered.text.contains(token) || token.count <= 8)
                deviceIds[token] = registered.object["id"] as? String
            }
            // Registering a known token again keeps its registration.
            let again = try await client.json(.post, "/users/me/devices", ["platform": "fcm", "token": "fcm-token-1"], token: member.token)
            #expect(again.status == .ok)
            #expect(again.object["id"] as? String == deviceIds["fcm-token-1"])

            let published = try await client.json(
                .post, "/notifications",
                ["userIds": [member.userId], "type": "message", "title": "Hello there", "body": "A body", "data": ["orderId": 42]],
                token: owner.token)
            let notificationId = try #require((published.object["ids"] as? [String])?.first)
            // Each delivery is a job: its row is final before the job's outcome is announced.
            try await app.components.jobs.waitUntil("five deliveries done") {
                let items = try await deliveries(client, notificationId, member)
                return items.count == 5 && items.allSatisfy { $0["state"] as? String != "pending" }
            }
            let items = try await deliveries(client, notificationId, member)
            let email = try #require(items.first { $0["channel"] as? String == "email" })
            #expect(email["state"] as? String == "sent")
            #expect((email["providerMessageId"] as? String)?.isEmpty == false)
            let push = items.filter { $0["channel"] as? String == "push" }
            let byDevice = Dictionary(uniqueKeysWithValues: push.map { ($0["endpointId"] as? String ?? "", $0) })
            #expect(byDevice[deviceIds["fcm-token-1"]!]?["state"] as? String == "sent")
            #expect(byDevice[deviceIds[apnsToken]!]?["state"] as? String == "sent")
            #expect(byDevice[deviceIds["unregistered-1"]!]?["state"] as? String == "failed")
            #expect((byDevice[deviceIds["unregistered-1"]!]?["lastError"] as? String)?.contains("UNREGISTERED") == true)
            #expect(byDevice[deviceIds[deadToken]!]?["state"] as? String == "failed")
            // The devices their provider no longer knows are forgotten.
            let devices = try await client.json(.get, "/users/me/devices", token: member.token).object["items"] as? [[String: Any]] ?? []
            #expect(Set(devices.compactMap { $0["id"] as? String }) == [deviceIds["fcm-token-1"]!, deviceIds[apnsToken]!])

            // What the providers received, checked by the fake with PyJWT.
            let mail = try #require(fake.requests(to: "/v3/mail/send").last)
            #expect(mail["verified"] as? Bool == true)
            let mailBody = body(mail)
            #expect(mailBody["subject"] as? String == "Hello there")
            #expect(
                ((mailBody["personalizations"] as? [[String: Any]])?.first?["to"] as? [[String: Any]])?.first?["email"] as? String
                    == "reader@example.com")
            #expect((mailBody["from"] as? [String: Any])?["email"] as? String == "noreply@example.com")
            let tokenRequests = fake.requests(to: "/token")
            #expect(tokenRequests.count == 1, "one OAuth token serves both FCM sends")
            #expect(tokenRequests.allSatisfy { $0["verified"] as? Bool == true })
            let fcmSends = fake.requests(to: "/v1/projects/cairn-test/messages:send")
            #expect(fcmSends.count == 2)
            #expect(fcmSends.allSatisfy { $0["verified"] as? Bool == true })
            let firstSend = try #require(fcmSends.first)
            let fcmMessage = try #require(body(firstSend)["message"] as? [String: Any])
            #expect((fcmMessage["notification"] as? [String: Any])?["title"] as? String == "Hello there")
            #expect((fcmMessage["data"] as? [String: Any])?["notificationId"] as? String == notificationId)
            let apnsSends = fake.requests(to: "/3/device/")
            #expect(apnsSends.count == 2)
            #expect(apnsSends.allSatisfy { $0["httpVersion"] as? String == "2" && $0["verified"] as? Bool == true })
            let apnsSent = try #require(apnsSends.first { ($0["path"] as? String)?.hasSuffix(apnsToken) == true })
            let headers = try #require(apnsSent["headers"] as? [String: String])
            #expect(headers["apns-topic"] == "com.example.app")
            #expect(headers["apns-push-type"] == "alert")
            let aps = body(apnsSent)
            #expect(((aps["aps"] as? [String: Any])?["alert"] as? [String: Any])?["body"] as? String == "A body")
            #expect((aps["data"] as? [String: Any])?["orderId"] as? Int == 42)
        }
    }

    @Test(arguments: TestEngine.available)
    func transientFailuresAreRetriedAndRefusalsAreNot(engine: TestEngine) async throws {
        try await withFakeProviders(engine, owner: "retries@example.com") { app, fake, owner in
            let (client, components) = (app.client, app.components)
            try await configureProviders(client, owner, fake)
            let throttled = try await addMember(client, owner: owner, email: "throttle@example.com")
            let bouncing = try await addMember(client, owner: owner, email: "bounce@example.com")
            let quiet = try await addMember(client, owner: owner, email: "no-email@example.com")
            for member in [throttled, bouncing] {
                _ = try await client.json(.put, "/users/me/notification-preferences", ["types": ["*": ["email": true]]], token: member.token)
            }
            let flaky = try await client.json(.post, "/users/me/devices", ["platform": "fcm", "token": "flaky-1"], token: throttled.token)
            let stored = try await components.notifications.publish(
                NotificationDraft(type: "message", title: "Retry me"), to: [throttled.userId, bouncing.userId, quiet.userId], tenantId: owner.tenantId
            )
            let ids = Dictionary(uniqueKeysWithValues: stored.map { ($0.userId, $0.id) })
            // Retried after the jobs' backoff (about 2 s): waited for on job events.
            try await components.jobs.waitUntil("the throttled deliveries sent and the bounce failed") {
                let a = try await deliveries(client, ids[throttled.userId]!, throttled)
                let b = try await deliveries(client, ids[bouncing.userId]!, bouncing)
                return a.count == 2 && a.allSatisfy { $0["state"] as? String == "sent" } && b.first?["state"] as? String == "failed"
            }
            for item in try await deliveries(client, ids[throttled.userId]!, throttled) {
                #expect(item["attempts"] as? Int == 2, "429 and 503 are retried once, then sent: \(item)")
            }
            #expect(
                try await deliveries(client, ids[throttled.userId]!, throttled).first { $0["channel"] as? String == "push" }?["endpointId"] as? String
                    == flaky.object["id"] as? String)
            let bounced = try #require(try await deliveries(client, ids[bouncing.userId]!, bouncing).first)
            #expect(bounced["attempts"] as? Int == 1, "a 400 is not retried")
            #expect((bounced["lastError"] as? String)?.contains("HTTP 400") == true)
            // Email stays off for a user who did not opt in, and no push without a device.
            #expect(try await deliveries(client, ids[quiet.userId]!, quiet).isEmpty)
            #expect(fake.requests(to: "/v3/mail/send").count == 3)
        }
    }

    @Test(arguments: TestEngine.available)
    func settingsAndDevicesAreValidatedAndScoped(engine: TestEngine) async throws {
        try await withTenant(engine, "validate-providers", configure: fastNotifications) { client, owner, member, other in

            let bad = try await client.json(
                .put, "/notification-providers/apns",
                ["teamId": "short", "keyId": "KEY1234567", "privateKey": "not a key", "topic": "com.example.app", "environment": "staging"],
                token: owner.token)
            #expect(bad.status == .badRequest)
            let fields = Set((bad.object["errors"] as? [[String: Any]] ?? []).compactMap { $0["field"] as? String })
            #expect(fields == ["teamId", "privateKey", "environment"])
            let badFCM = try await client.json(
                .put, "/notification-providers/fcm",
                [
                    "serviceAccount": [
                        "project_id": "p", "client_email": "nope", "private_key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----",
                    ]
                ],
                token: owner.token)
            #expect(badFCM.status == .badRequest)
            #expect(badFCM.text.contains("serviceAccount.private_key") && badFCM.text.contains("serviceAccount.client_email"))
            #expect(
                try await client.json(.put, "/notification-providers/smtp", ["apiKey": "x", "fromEmail": "a@b.co"], token: owner.token).status
                    == .notFound)
            #expect(
                try await client.json(.put, "/notification-providers/sendgrid", ["apiKey": "x", "fromEmail": "a@b.co"], token: member.token).status
                    == .forbidden)
            #expect(try await client.json(.delete, "/notification-providers/sendgrid", token: owner.token).status == .notFound)
            // Wrong types: every field named in one answer.
            let wrongTypes = try await client.json(
                .put, "/notification-providers/sendgrid", ["apiKey": 123, "fromEmail": NSNull(), "fromName": ["x"]], token: owner.token)
            #expect(wrongTypes.status == .badRequest)
            #expect(
                Set((wrongTypes.object["errors"] as? [[String: Any]] ?? []).compactMap { $0["field"] as? String }) == [
                    "apiKey", "fromEmail", "fromName",
                ])
            let saved = try await client.json(
                .put, "/notification-providers/sendgrid", ["apiKey": "SG.abcd1234", "fromEmail": "a@b.co"], token: owner.token)
            #expect(saved.status == .ok)
            #expect(!saved.text.contains("1234"), "a short key shows none of its characters")
            let longKey = "SG.0123456789abcdefWXYZ"
            let savedLong = try await client.json(
                .put, "/notification-providers/sendgrid", ["apiKey": longKey, "fromEmail": "a@b.co"], token: owner.token)
            #expect((savedLong.object["settings"] as? [String: Any])?["apiKey"] as? String == "…WXYZ")
            #expect((try await client.json(.get, "/notification-providers", token: other.token).object["items"] as? [Any])?.isEmpty == true)
            #expect(try await client.json(.delete, "/notification-providers/sendgrid", token: owner.token).status == .noContent)

            let deviceTypes = try await client.json(.post, "/users/me/devices", ["platform": 1, "token": ["x"]], token: member.token)
            #expect(Set((deviceTypes.object["errors"] as? [[String: Any]] ?? []).compactMap { $0["field"] as? String }) == ["platform", "token"])
            for (platform, token) in [("apns", "not-hex"), ("apns", "abcd"), ("fcm", ""), ("fcm", "bad token with spaces"), ("email", "x")] {
                let refused = try await client.json(.post, "/users/me/devices", ["platform": platform, "token": token], token: member.token)
                #expect(refused.status == .badRequest, "\(platform) \(token)")
                #expect(refused.object["code"] as? String == "invalid_input")
            }
            let device = try await client.json(.post, "/users/me/devices", ["platform": "fcm", "token": "member-device"], token: member.token)
            let deviceId = try #require(device.object["id"] as? String)
            #expect((try await client.json(.get, "/users/me/devices", token: owner.token).object["items"] as? [Any])?.isEmpty == true)
            #expect(try await client.json(.delete, "/users/me/devices/\(deviceId)", token: owner.token).status == .notFound)
            #expect(try await client.json(.delete, "/users/me/devices/\(deviceId)", token: other.token).status == .notFound)
            // Another tenant registering the same token gets a registration of its own, and
            // learns nothing of the first (same answer as for any new token).
            let elsewhere = try await client.json(.post, "/users/me/devices", ["platform": "fcm", "token": "member-device"], token: other.token)
            #expect(elsewhere.status == .created)
            #expect(elsewhere.object["id"] as? String != deviceId)
            #expect((try await client.json(.get, "/users/me/devices", token: member.token).object["items"] as? [[String: Any]])?.count == 1)
            // Within the tenant, the device changed hands: the new holder gets a new registration.
            let moved = try await client.json(.post, "/users/me/devices", ["platform": "fcm", "token": "member-device"], token: owner.token)
            #expect(moved.status == .created)
            #expect(moved.object["id"] as? String != deviceId)
            #expect((try await client.json(.get, "/users/me/devices", token: member.token).object["items"] as? [Any])?.isEmpty == true)
            let again = try await client.json(.post, "/users/me/devices", ["platform": "fcm", "token": "member-device"], token: owner.token)
            #expect(again.status == .ok)
            #expect(again.object["id"] as? String == moved.object["id"] as? String)
        }
    }
}
