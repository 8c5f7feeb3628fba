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

/// The JSON body of a request a fake provider received.
private func jsonBody(_ request: [String: Any]) -> [String: Any] {
    (try? JSONSerialization.jsonObject(with: Data((request["body"] as? String ?? "").utf8)) as? [String: Any]) ?? [:]
}

/// The text/plain content of a SendGrid request.
private func mailText(_ request: [String: Any]) -> String {
    ((jsonBody(request)["content"] as? [[String: Any]])?.first { $0["type"] as? String == "text/plain" })?["value"] as? String ?? ""
}

/// The `Body` of a Twilio request.
private func smsText(_ request: [String: Any]) -> String {
    URLComponents(string: "?" + (request["body"] as? String ?? ""))?.queryItems?.first { $0.name == "Body" }?.value ?? ""
}

/// The next UTC hour boundary after `date`, in epoch ms.
private func nextHour(after date: Date) -> Int64 {
    let now = Int64(date.timeIntervalSince1970 * 1000)
    return (now / 3_600_000 + 1) * 3_600_000
}

/// `HH:MM` of `milliseconds` in UTC.
private func utcClock(_ milliseconds: Int64) -> String {
    let minutes = (milliseconds / 60_000) % 1440
    return String(format: "%02d:%02d", minutes / 60, minutes % 60)
}

/// Configures the fake's SendGrid (and Twilio, with `sms`) for the owner's tenant.
private func configureMail(_ client: any TestClientProtocol, _ owner: Member, _ fake: FakeProviders, sms: Bool = false) async throws {
    let sendgrid = try await client.json(
        .put, "/notification-providers/sendgrid",
        ["apiKey": try #require(fake.setup["sendgridKey"] as? String), "fromEmail": "noreply@example.com"], token: owner.token)
    try #require(sendgrid.status == .ok, "\(sendgrid.text)")
    if sms {
        let twilio = try await client.json(
            .put, "/notification-providers/twilio", try #require(fake.setup["twilio"] as? [String: Any]), token: owner.token)
        try #require(twilio.status == .ok, "\(twilio.text)")
    }
}

/// `member` signed in again: access tokens expire while a test clock moves on by hours.
private func signedInAgain(_ client: any TestClientProtocol, _ member: Member, email: String) async throws -> Member {
    var member = member
    member.token = try await client.login(email: email, password: "correct horse battery").accessToken
    return member
}

/// The owner's digest jobs.
private func digestJobs(_ client: any TestClientProtocol, _ owner: Member) async throws -> [JobBody] {
    try await client.json(.get, "/jobs?kind=notifications.digest&limit=100", token: owner.token).decode(PageBody<JobBody>.self).items
}

@Suite("Notifications: hourly and daily digests")
struct DigestTests {
    @Test(arguments: TestEngine.available)
    func notificationsAreBatchedIntoOneMessageAtTheWindowEndAndNeverSentTwice(engine: TestEngine) async throws {
        let clock = TestClock()
        let windowEnd = nextHour(after: clock.now)
        try await withFakeProviders(engine, owner: "digest-owner@example.com", clock: clock) { app, fake, owner in
            let (client, components) = (app.client, app.components)
            try await configureMail(client, owner, fake, sms: true)
            // The type's template has digest parts for email; SMS has none: the default listing.
            let template = try await client.json(
                .put, "/notification-templates/message",
                [
                    "default": [
                        "email": [
                            "subject": "{{title}}", "digestSubject": "{{count}} messages this hour ({{period}})",
                            "digestText": "{{#notifications}}* {{title}} — {{body}}\n{{/notifications}}",
                        ]
                    ]
                ], token: owner.token)
            try #require(template.status == .ok, "\(template.text)")

            let reader = try await addMember(client, owner: owner, email: "digest-reader@example.com")
            #expect(try await client.json(.patch, "/users/me", ["phone": "+4915112345678"], token: reader.token).status == .ok)
            let prefs = try await client.json(
                .put, "/users/me/notification-preferences",
                ["types": ["*": ["email": true, "sms": true]], "digests": ["message": ["email": "hourly", "sms": "hourly"]]], token: reader.token)
            try #require(prefs.status == .ok, "\(prefs.text)")
            #expect((prefs.object["digests"] as? [String: [String: String]]) == ["message": ["email": "hourly", "sms": "hourly"]])
            // Quiet hours (in UTC, so its windows are UTC hours too) over the window's end hold its digest until they end.
            let sleeper = try await addMember(client, owner: owner, email: "digest-sleeper@example.com")
            let quiet = try await client.json(
                .put, "/users/me/notification-preferences",
                [
                    "types": ["*": ["email": true]], "digests": ["*": ["email": "hourly"]],
                    "quietHours": ["start": utcClock(windowEnd - 1_800_000), "end": utcClock(windowEnd + 3_600_000), "timeZone": "UTC"],
                ] as [String: Any], token: sleeper.token)
            try #require(quiet.status == .ok, "\(quiet.text)")

            var published: [String] = []
            for n in 1...3 {
                let stored = try await components.notifications.publish(
                    NotificationDraft(type: "message", title: "Message \(n)", body: "Body \(n)"), to: [reader.userId, sleeper.userId],
                    tenantId: owner.tenantId)
                published.append(try #require(stored.first { $0.userId == reader.userId }).id)
            }
            let ids = published
            // Another type stays immediate; in-app is untouched (the inbox has all four).
            let alert = try #require(
                try await components.notifications.publish(
                    NotificationDraft(type: "alert", title: "Now"), to: [reader.userId], tenantId: owner.tenantId
                )
                .first)
            try await components.jobs.waitUntil("the immediate email and SMS sent") {
                let items = try await deliveries(client, alert.id, reader)
                return items.count == 2 && items.allSatisfy { $0["state"] as? String == "sent" }
            }
            let inbox = try await client.json(.get, "/notifications?limit=10", token: reader.token).object["items"] as? [[String: Any]] ?? []
            #expect(inbox.count == 4)
            var digestIds: Set<String> = []
            for id in ids {
                let items = try await deliveries(client, id, reader)
                #expect(items.count == 2 && items.allSatisfy { $0["state"] as? String == "batched" }, "\(items)")
                digestIds.formUnion(items.compactMap { $0["digestId"] as? String })
            }
            #expect(digestIds.count == 2, "one email digest and one SMS digest: \(digestIds)")
            #expect(fake.requests(to: "/v3/mail/send").count == 1 && fake.requests(to: "/2010-04-01/").count == 1, "only the alert so far")
            let jobs = try await digestJobs(client, owner)
            #expect(jobs.count == 3, "one job per window: the reader's email and SMS, the sleeper's email")
            #expect(
                jobs.map { Int64(($0.runAt.timeIntervalSince1970 * 1000).rounded()) }.sorted() == [windowEnd, windowEnd, windowEnd + 3_600_000],
                "the sleeper's digest waits for the end of their quiet hours")

            // The window ends: one email and one SMS carry the three.
            clock.advance(to: Date(timeIntervalSince1970: Double(windowEnd) / 1000))
            let readerNow = try await signedInAgain(client, reader, email: "digest-reader@example.com")
            let owner = try await signedInAgain(client, owner, email: "digest-owner@example.com")
            try await components.jobs.waitUntil("the reader's digests sent") {
                for id in ids {
                    let items = try await deliveries(client, id, readerNow)
                    guard items.count == 2, items.allSatisfy({ $0["state"] as? String == "sent" }) else { return false }
                }
                return true
            }
            let mails = fake.requests(to: "/v3/mail/send")
            #expect(mails.count == 2)
            let digest = try #require(mails.last)
            #expect(jsonBody(digest)["subject"] as? String == "3 messages this hour (hourly)")
            #expect(mailText(digest) == "* Message 1 — Body 1\n* Message 2 — Body 2\n* Message 3 — Body 3\n")
            let texts = fake.requests(to: "/2010-04-01/").map(smsText)
            #expect(texts.count == 2)
            #expect(texts.last == "3 new notifications:\n- Message 1\n- Message 2\n- Message 3")
            for id in ids {
                let email = try #require(try await deliveries(client, id, readerNow).first { $0["channel"] as? String == "email" })
                #expect(email["attempts"] as? Int == 1)
                #expect((email["providerMessageId"] as? String)?.isEmpty == false)
            }

            // A retried (or rescued) job finds its digest sent and sends nothing again.
            let emailDigestJob = try #require(try await digestJobs(client, owner).first { $0.state == "succeeded" })
            let retried = try await components.database.write { db in
                try await db.raw(
                    """
                    UPDATE jobs SET state = 'available', finished_at = NULL, run_at = \(bind: clock.milliseconds)
                    WHERE id = \(bind: emailDigestJob.id) AND state = 'succeeded' RETURNING id
                    """
                ).first() != nil
            }
            #expect(retried)
            try await components.jobs.waitForJob(emailDigestJob.id, "the digest job's second run") { $0.state == .succeeded && $0.attempt == 2 }
            #expect(fake.requests(to: "/v3/mail/send").count == 2, "no second email")
            #expect(fake.requests(to: "/2010-04-01/").count == 2, "no second SMS")

            // The sleeper's digest goes out when their quiet hours end.
            clock.advance(by: .seconds(3600))
            try await components.jobs.waitUntil("the sleeper's digest sent") {
                fake.requests(to: "/v3/mail/send").count == 3
            }
            let late = try #require(fake.requests(to: "/v3/mail/send").last)
            #expect(
                ((jsonBody(late)["personalizations"] as? [[String: Any]])?.first?["to"] as? [[String: Any]])?.first?["email"] as? String
                    == "digest-sleeper@example.com")
        }
    }

    @Test func twoNodesSendOneDigest() async throws {
        guard TestEngine.available.contains(.postgres) else { return }
        let clock = TestClock()
        let windowEnd = nextHour(after: clock.now)
        let fake = try await FakeProviders()
        defer { fake.stop() }
        try await withTwoNodes(mode: .live, clock: clock, configure: fake.configure) { nodeA, nodeB in
            let owner = try await signUp(nodeA.client, "digest-two-nodes@example.com")
            try await configureMail(nodeA.client, owner, fake)
            let reader = try await addMember(nodeA.client, owner: owner, email: "digest-two-reader@example.com")
            let prefs = try await nodeB.client.json(
                .put, "/users/me/notification-preferences", ["types": ["*": ["email": true]], "digests": ["*": ["email": "daily"]]],
                token: reader.token)
            try #require(prefs.status == .ok, "\(prefs.text)")
            // Both nodes publish at once into the same window.
            let ids = try await withThrowingTaskGroup(of: [String].self) { group in
                for (index, node) in [nodeA, nodeB].enumerated() {
                    group.addTask {
                        var ids: [String] = []
                        for n in 1...5 {
                            let stored = try await node.components.notifications.publish(
                                NotificationDraft(type: "message", title: "Node \(index) #\(n)"), to: [reader.userId], tenantId: owner.tenantId)
                            ids += stored.map(\.id)
                        }
                        return ids
                    }
                }
                return try await group.reduce(into: [String]()) { $0 += $1 }
            }
            #expect(ids.count == 10)
            // A daily window in UTC: advance to the end of the day.
            let dayEnd = (windowEnd / 86_400_000 + (windowEnd % 86_400_000 == 0 ? 0 : 1)) * 86_400_000
            clock.advance(to: Date(timeIntervalSince1970: Double(dayEnd) / 1000))
            let readerNow = try await signedInAgain(nodeA.client, reader, email: "digest-two-reader@example.com")
            try await nodeA.components.jobs.waitUntil("the digest sent") {
                for id in ids {
                    guard try await deliveries(nodeA.client, id, readerNow).first?["state"] as? String == "sent" else { return false }
                }
                return true
            }
            let mails = fake.requests(to: "/v3/mail/send")
            #expect(mails.count == 1, "one digest across both nodes")
            #expect(jsonBody(try #require(mails.first))["subject"] as? String == "10 new notifications")
            #expect(mailText(try #require(mails.first)).split(separator: "\n").count == 10)
            let digests = Set(try await ids.asyncMap { try await deliveries(nodeB.client, $0, readerNow).first?["digestId"] as? String ?? "" })
            #expect(digests.count == 1 && !digests.contains(""))
        }
    }

    @Test(arguments: TestEngine.available)
    func digestPreferencesAndTemplatePartsAreValidated(engine: TestEngine) async throws {
        try await withOwner(engine, "digest-validate@example.com", configure: fastNotifications) { client, _, owner in
            let defaults = try await client.json(.get, "/users/me/notification-preferences", token: owner.token)
            #expect((defaults.object["digests"] as? [String: Any])?.isEmpty == true, "immediate by default: \(defaults.text)")
            func refused(_ digests: [String: Any]) async throws -> [[String: Any]] {
                let answer = try await client.json(
                    .put, "/users/me/notification-preferences", ["types": [:], "digests": digests], token: owner.token)
                #expect(answer.status == .badRequest, "\(digests)")
                #expect(answer.object["code"] as? String == "invalid_input")
                return answer.object["errors"] as? [[String: Any]] ?? []
            }
            let weekly = try await refused(["message": ["email": "weekly"]])
            #expect(weekly.first?["field"] as? String == "digests.message.email")
            #expect(weekly.first?["issue"] as? String == "must be one of: immediate, hourly, daily")
            #expect((try await refused(["message": ["sms": 3]])).first?["field"] as? String == "digests.message.sms")
            let channels = try await refused(["*": ["webhook": "daily", "in_app": "hourly", "fax": "daily"]])
            #expect(Set(channels.compactMap { $0["field"] as? String }) == ["digests.*.webhook", "digests.*.in_app", "digests.*.fax"])
            #expect(channels.allSatisfy { ($0["issue"] as? String)?.hasPrefix("must be one of email, sms, push") == true })
            #expect((try await refused(["Bad Type": ["email": "daily"]])).first?["field"] as? String == "digests.Bad Type")
            let saved = try await client.json(
                .put, "/users/me/notification-preferences", ["types": [:], "digests": ["*": ["push": "daily"], "security": ["push": "immediate"]]],
                token: owner.token)
            #expect(saved.status == .ok, "\(saved.text)")
            let read = try await client.json(.get, "/users/me/notification-preferences", token: owner.token)
            #expect((read.object["digests"] as? [String: [String: String]]) == ["*": ["push": "daily"], "security": ["push": "immediate"]])

            // Digest template parts: known at save time, so an unknown variable is refused now.
            let bad = try await client.json(
                .put, "/notification-templates/message",
                [
                    "default": [
                        "email": ["digestSubject": "{{count}} for {{userName}}"], "push": ["digestBody": "{{{count}}}"], "sms": ["digest": "x"],
                    ]
                ],
                token: owner.token)
            #expect(bad.status == .badRequest)
            let fields = Set((bad.object["errors"] as? [[String: Any]] ?? []).compactMap { $0["field"] as? String })
            #expect(fields == ["default.email.digestSubject", "default.push.digestBody", "default.sms.digest"], "\(bad.text)")
            let good = try await client.json(
                .put, "/notification-templates/message",
                [
                    "variables": ["orderId"],
                    "default": [
                        "email": [
                            "digestHtml": "<ul>{{#notifications}}<li>{{title}} {{orderId}}</li>{{/notifications}}</ul>", "subject": "{{orderId}}",
                        ],
                        "sms": ["digestText": "{{count}} at {{windowEnd}} ({{type}})"],
                    ],
                ], token: owner.token)
            #expect(good.status == .ok, "\(good.text)")
        }
    }

    @Test func digestWindowsEndOnTheHourOrDayOfTheUsersZone() throws {
        let utc = NotificationPreferences(types: [:], quietHours: nil)
        let at = Int64(1_773_140_400_000) + 25 * 60_000 + 123  // 2026-03-10T11:25:00.123Z
        #expect(utc.digestWindowEnd(.hourly, now: at) == 1_773_144_000_000)  // 12:00Z
        #expect(utc.digestWindowEnd(.daily, now: at) == 1_773_187_200_000)  // 2026-03-11T00:00Z
        #expect(utc.digestWindowEnd(.hourly, now: 1_773_144_000_000) == 1_773_147_600_000, "a boundary opens the next window")
        // Paris: days end at local midnight (23:00Z in winter); the DST night (29 March) is 23 hours long.
        let paris = NotificationPreferences(types: [:], quietHours: .init(start: "22:00", end: "07:00", timeZone: "Europe/Paris"))
        #expect(paris.digestWindowEnd(.daily, now: at) == 1_773_183_600_000)  // 2026-03-10T23:00Z
        let beforeShift = Int64(1_774_738_800_000)  // 2026-03-28T23:00Z, Paris midnight
        #expect(paris.digestWindowEnd(.daily, now: beforeShift + 1) == beforeShift + 23 * 3_600_000)
        // Kolkata is UTC+5:30: its hours end at half past UTC hours.
        let kolkata = NotificationPreferences(types: [:], quietHours: .init(start: "22:00", end: "07:00", timeZone: "Asia/Kolkata"))
        #expect(kolkata.digestWindowEnd(.hourly, now: at) == 1_773_142_200_000)  // 11:30Z
        // Only email, SMS and push are digested; `*` fills in; the default is immediate.
        let prefs = NotificationPreferences(
            types: [:], digests: ["*": ["email": .daily], "alert": ["email": .immediate, "sms": .hourly]], quietHours: nil)
        #expect(prefs.digest("message", on: .email) == .daily)
        #expect(prefs.digest("alert", on: .email) == .immediate)
        #expect(prefs.digest("alert", on: .sms) == .hourly)
        #expect(prefs.digest("message", on: .push) == .immediate)
        #expect(prefs.digest("message", on: .webhook) == .immediate)
    }
}

extension Array {
    fileprivate func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var result: [T] = []
        for element in self { result.append(try await transform(element)) }
        return result
    }
}
