import CairnHTTP
import CairnJobs
import CairnNotifications
import CairnServer
import CairnStorage
import CairnTestSupport
import Foundation
import HTTPTypes
import HummingbirdTesting
import SQLKit
import Testing

/// The form fields of a request the fake Twilio received.
private func form(_ request: [String: Any]) -> [String: String] {
    var fields: [String: String] = [:]
    for item in URLComponents(string: "?" + (request["body"] as? String ?? ""))?.queryItems ?? [] {
        // URLComponents leaves `+` (a space in forms) alone; Cairn encodes it as %2B, so none is expected.
        fields[item.name] = item.value
    }
    return fields
}

@Suite("Notifications: SMS through a Twilio-compatible provider")
struct SMSTests {
    /// Configures the fake's Twilio credentials for the owner's tenant; returns the answer's settings.
    private func configureTwilio(_ client: any TestClientProtocol, _ owner: Member, _ fake: FakeProviders) async throws -> [String: Any] {
        let twilio = try #require(fake.setup["twilio"] as? [String: Any])
        let answer = try await client.json(.put, "/notification-providers/twilio", twilio, token: owner.token)
        try #require(answer.status == .ok, "\(answer.text)")
        return answer.object
    }

    /// A member with a phone number and SMS turned on (unless `optIn` is false).
    private func smsMember(
        _ client: any TestClientProtocol, owner: Member, email: String, phone: String?, optIn: Bool = true
    ) async throws -> Member {
        let member = try await addMember(client, owner: owner, email: email)
        if let phone {
            let patched = try await client.json(.patch, "/users/me", ["phone": phone], token: member.token)
            try #require(patched.status == .ok, "\(patched.text)")
            #expect(patched.object["phone"] as? String == phone)
        }
        if optIn {
            let prefs = try await client.json(.put, "/users/me/notification-preferences", ["types": ["*": ["sms": true]]], token: member.token)
            try #require(prefs.status == .ok, "\(prefs.text)")
        }
        return member
    }

    @Test(arguments: TestEngine.available)
    func smsIsSentRetriedOrRefusedAsTwilioAnswers(engine: TestEngine) async throws {
        try await withFakeProviders(engine, owner: "sms-owner@example.com") { app, fake, owner in
            let (client, components) = (app.client, app.components)
            let settings = try await configureTwilio(client, owner, fake)
            let twilio = try #require(fake.setup["twilio"] as? [String: Any])
            let authToken = try #require(twilio["authToken"] as? String)
            #expect(settings["channel"] as? String == "sms")
            #expect((settings["settings"] as? [String: Any])?["authToken"] as? String == "…" + authToken.suffix(4))
            #expect((settings["settings"] as? [String: Any])?["accountSid"] as? String == twilio["accountSid"] as? String)
            let listed = try await client.json(.get, "/notification-providers", token: owner.token)
            #expect(!listed.text.contains(authToken) && !settings.description.contains(authToken), "the auth token came back")

            let fine = try await smsMember(client, owner: owner, email: "sms-fine@example.com", phone: "+4915112345678")
            let throttled = try await smsMember(client, owner: owner, email: "sms-throttled@example.com", phone: "+14155554290")
            let flaky = try await smsMember(client, owner: owner, email: "sms-flaky@example.com", phone: "+14155555030")
            let invalid = try await smsMember(client, owner: owner, email: "sms-invalid@example.com", phone: "+15005550001")
            let landline = try await smsMember(client, owner: owner, email: "sms-landline@example.com", phone: "+15005550009")
            let notOptedIn = try await smsMember(client, owner: owner, email: "sms-off@example.com", phone: "+4915100000001", optIn: false)
            let noPhone = try await smsMember(client, owner: owner, email: "sms-nophone@example.com", phone: nil)
            let everyone = [fine, throttled, flaky, invalid, landline, notOptedIn, noPhone]

            let stored = try await components.notifications.publish(
                NotificationDraft(type: "message", title: "Order shipped", body: "Parcel 42 is on its way", dedupeKey: "order-42"),
                to: everyone.map(\.userId), tenantId: owner.tenantId)
            let ids = Dictionary(uniqueKeysWithValues: stored.map { ($0.userId, $0.id) })
            // A repeated publish with the same dedupe key plans nothing more.
            _ = try await components.notifications.publish(
                NotificationDraft(type: "message", title: "Order shipped", body: "Parcel 42 is on its way", dedupeKey: "order-42"),
                to: everyone.map(\.userId), tenantId: owner.tenantId)
            let finals: [(Member, String)] = [
                (fine, "sent"), (throttled, "sent"), (flaky, "sent"), (invalid, "failed"), (landline, "failed"), (noPhone, "failed"),
            ]
            // 429 and 503 are retried after the jobs' backoff (about 2 s): waited for on job events.
            try await components.jobs.waitUntil("every SMS delivery final") {
                for (member, state) in finals {
                    let items = try await deliveries(client, ids[member.userId]!, member)
                    guard items.count == 1, items[0]["state"] as? String == state else { return false }
                }
                return true
            }
            func only(_ member: Member) async throws -> [String: Any] {
                let items = try await deliveries(client, ids[member.userId]!, member)
                #expect(items.count == 1, "one SMS delivery despite the repeated publish: \(items)")
                #expect(items.first?["channel"] as? String == "sms")
                return try #require(items.first)
            }
            let sent = try await only(fine)
            #expect(sent["attempts"] as? Int == 1)
            #expect((sent["providerMessageId"] as? String)?.hasPrefix("SM") == true, "Twilio's message sid is recorded")
            for member in [throttled, flaky] {
                let retried = try await only(member)
                #expect(retried["attempts"] as? Int == 2, "429 and 503 are retried once, then sent: \(retried)")
            }
            for (member, code) in [(invalid, "21211"), (landline, "21614")] {
                let refused = try await only(member)
                #expect(refused["attempts"] as? Int == 1, "an invalid number is not retried")
                #expect((refused["lastError"] as? String)?.contains(code) == true, "\(refused)")
            }
            let missing = try await only(noPhone)
            #expect(missing["attempts"] as? Int == 0)
            #expect((missing["lastError"] as? String)?.contains("no phone number") == true)
            #expect(try await deliveries(client, ids[notOptedIn.userId]!, notOptedIn).isEmpty, "SMS is opt-in")

            // What Twilio received: every request well formed and authenticated (the fake checks).
            let requests = fake.requests(to: "/2010-04-01/Accounts/")
            #expect(requests.count == 7, "1 + 2 + 2 + 1 + 1")
            #expect(requests.allSatisfy { $0["verified"] as? Bool == true && $0["method"] as? String == "POST" })
            let fineRequest = try #require(requests.first { form($0)["To"] == "+4915112345678" })
            #expect(fineRequest["path"] as? String == "/2010-04-01/Accounts/\(twilio["accountSid"] as? String ?? "")/Messages.json")
            #expect(form(fineRequest) == ["To": "+4915112345678", "From": "+15005550006", "Body": "Order shipped\nParcel 42 is on its way"])
            #expect(!requests.contains { form($0)["To"] == "+4915100000001" })
        }
    }

    /// A send cut by the node's shutdown is no attempt (as for webhooks): the provider never
    /// answered, so the job goes back with the delivery untouched, not recorded as a failed
    /// attempt ("connection failed") that a later successful send would still show.
    @Test(arguments: TestEngine.available)
    func anSMSCutByShutdownIsHandedBackWithoutAnAttempt(engine: TestEngine) async throws {
        let fake = try await FakeProviders()
        defer { fake.stop() }
        try await withLiveOwner(
            engine, "sms-held@example.com",
            configure: {
                fake.configure(&$0)
                fastNotifications(&$0)
                $0.jobs.shutdownGrace = .zero
            }
        ) { app, owner in
            let client = app.client
            _ = try await configureTwilio(client, owner, fake)
            let member = try await smsMember(client, owner: owner, email: "sms-held-m@example.com", phone: "+14155557770")
            let stored = try await app.components.notifications.publish(
                NotificationDraft(type: "message", title: "held"), to: [member.userId], tenantId: owner.tenantId)
            let id = try #require(stored.first?.id)
            try await fake.process.wait("the SMS send held by the provider") { LineProcess.objects($0).contains { $0["stalled"] != nil } }
            // The signal, with no grace: the send is cancelled and its job handed back.
            try #require(app.worker).beginShutdown()
            let database = app.database
            try await pollUntil("the SMS job handed back") {
                try await database.read { db in
                    try await db.raw("SELECT COUNT(*) AS n FROM jobs WHERE kind = 'notifications.sms' AND state = 'available'").first()?
                        .decode(column: "n", as: Int.self)
                } == 1
            }
            let items = try await deliveries(client, id, member).filter { $0["channel"] as? String == "sms" }
            let held = try #require(items.first, "\(items)")
            #expect(held["state"] as? String == "pending")
            #expect(held["attempts"] as? Int == 0, "\(held)")
            #expect((held["lastError"] as? String) == nil, "\(held)")
        }
    }

    @Test(arguments: TestEngine.available)
    func phoneNumbersAndTwilioSettingsAreValidatedAndScoped(engine: TestEngine) async throws {
        try await withTenant(engine, "sms-validate", configure: fastNotifications) { client, owner, member, other in

            // E.164 on the profile: + and 8 to 15 digits, the first not 0; null removes it.
            for bad: Any in [
                "4915112345678", "+0123456789", "+1234567", "+1234567890123456", "+49 151 1234567", "+4915112345678\n", "", 4915112345678,
            ] {
                let refused = try await client.json(.patch, "/users/me", ["phone": bad], token: member.token)
                #expect(refused.status == .badRequest, "\(bad)")
                #expect(refused.object["code"] as? String == "invalid_input")
                #expect((refused.object["errors"] as? [[String: Any]])?.first?["field"] as? String == "phone", "\(refused.text)")
            }
            let set = try await client.json(.patch, "/users/me", ["phone": "+12345678"], token: member.token)
            #expect(set.status == .ok)
            #expect(set.object["phone"] as? String == "+12345678")
            #expect(try await client.json(.get, "/users/me", token: member.token).object["phone"] as? String == "+12345678")
            // A locale for templates: BCP 47, or null.
            for bad: Any in ["d", "de_AT", "de-", "toolonglang", 5] {
                let refused = try await client.json(.patch, "/users/me", ["locale": bad], token: member.token)
                #expect(refused.status == .badRequest, "\(bad)")
                #expect((refused.object["errors"] as? [[String: Any]])?.first?["field"] as? String == "locale", "\(refused.text)")
            }
            #expect(try await client.json(.patch, "/users/me", ["locale": "de-AT"], token: member.token).object["locale"] as? String == "de-AT")
            let cleared = try await client.json(.patch, "/users/me", ["phone": NSNull()], token: member.token)
            #expect(cleared.status == .ok)
            #expect(cleared.object["phone"] is NSNull)

            // Settings: every bad field in one answer; owners and admins only; per tenant.
            let bad = try await client.json(
                .put, "/notification-providers/twilio", ["accountSid": "AC bad/sid", "authToken": "", "from": "not a sender!"], token: owner.token)
            #expect(bad.status == .badRequest)
            #expect(
                Set((bad.object["errors"] as? [[String: Any]] ?? []).compactMap { $0["field"] as? String }) == ["accountSid", "authToken", "from"])
            let wrongTypes = try await client.json(.put, "/notification-providers/twilio", ["accountSid": 1, "from": ["x"]], token: owner.token)
            #expect(
                Set((wrongTypes.object["errors"] as? [[String: Any]] ?? []).compactMap { $0["field"] as? String }) == [
                    "accountSid", "authToken", "from",
                ])
            let token = "f0e1d2c3b4a5f6e7d8c9b0a1f2e3WXYZ"
            let body: [String: Any] = ["accountSid": "AC0123456789abcdef0123456789abcdef", "authToken": token, "from": "+15005550006"]
            #expect(try await client.json(.put, "/notification-providers/twilio", body, token: member.token).status == .forbidden)
            let saved = try await client.json(.put, "/notification-providers/twilio", body, token: owner.token)
            #expect(saved.status == .ok)
            #expect((saved.object["settings"] as? [String: Any])?["authToken"] as? String == "…WXYZ")
            #expect(!saved.text.contains("f0e1d2c3"))
            #expect((try await client.json(.get, "/notification-providers", token: other.token).object["items"] as? [Any])?.isEmpty == true)
            #expect(try await client.json(.delete, "/notification-providers/twilio", token: other.token).status == .notFound)
            let listed = try await client.json(.get, "/notification-providers", token: owner.token)
            #expect((listed.object["items"] as? [[String: Any]])?.map { $0["provider"] as? String } == ["twilio"])
            #expect(try await client.json(.delete, "/notification-providers/twilio", token: owner.token).status == .noContent)
            #expect(try await client.json(.delete, "/notification-providers/twilio", token: owner.token).status == .notFound)
            // twilio is not a push platform.
            #expect(
                try await client.json(.post, "/users/me/devices", ["platform": "twilio", "token": "x"], token: member.token).status == .badRequest)

            // The sms channel in preferences.
            let prefs = try await client.json(
                .put, "/users/me/notification-preferences", ["types": ["message": ["sms": true], "*": ["mms": true]]], token: member.token)
            #expect(prefs.status == .badRequest)
            #expect(prefs.text.contains("types.*.mms"))
            #expect(
                try await client.json(.put, "/users/me/notification-preferences", ["types": ["message": ["sms": true]]], token: member.token).status
                    == .ok)
        }
    }
}
