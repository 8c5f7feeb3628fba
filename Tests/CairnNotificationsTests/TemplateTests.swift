import CairnHTTP
import CairnNotifications
import CairnServer
import CairnStorage
import CairnTestSupport
import Foundation
import HTTPTypes
import HummingbirdTesting
import Testing

private func fields(_ answer: TestResponse) -> [String: String] {
    var result: [String: String] = [:]
    for issue in answer.object["errors"] as? [[String: Any]] ?? [] {
        if let field = issue["field"] as? String { result[field] = issue["issue"] as? String ?? "" }
    }
    return result
}

@Suite("Notifications: Mustache templates per type, channel and locale")
struct TemplateTests {
    @Test(arguments: TestEngine.available)
    func templatesAreValidatedPreviewedAndScoped(engine: TestEngine) async throws {
        try await withTenant(engine, "templates", configure: fastNotifications) { client, owner, member, other in

            // Save-time checks: syntax (with the position), raw output outside email html,
            // variables outside the declared list, unknown channels and parts, bad tags.
            let syntax = try await client.json(
                .put, "/notification-templates/order", ["default": ["email": ["subject": "Order {{#items}}open"]]], token: owner.token)
            #expect(syntax.status == .badRequest)
            #expect(fields(syntax)["default.email.subject"]?.contains("line 1") == true, "\(syntax.text)")
            let undeclared = try await client.json(
                .put, "/notification-templates/order",
                ["variables": ["orderId"], "default": ["sms": ["text": "{{orderId}} for {{customer.name}}"]]], token: owner.token)
            #expect(undeclared.status == .badRequest)
            #expect(fields(undeclared)["default.sms.text"]?.contains("customer") == true, "\(undeclared.text)")
            let misc = try await client.json(
                .put, "/notification-templates/order",
                [
                    "default": ["sms": ["text": "{{{orderId}}}"], "fax": ["text": "x"], "push": ["subject": "x"]],
                    "locales": ["not a tag": ["sms": ["text": "x"]]],
                ], token: owner.token)
            #expect(
                Set(fields(misc).keys) == ["default.sms.text", "default.fax", "default.push.subject", "locales.not a tag"], "\(misc.text)")

            let template: [String: Any] = [
                "variables": ["orderId", "customer", "items"],
                "default": [
                    "email": ["subject": "Order {{orderId}}", "html": "<p>Hi {{customer}}</p>{{{title}}}", "text": "Hi {{customer}}"],
                    "sms": ["text": "Order {{orderId}} shipped"],
                    "push": ["title": "{{title}}", "body": "{{#items}}{{name}} {{/items}}for {{customer}}"],
                ],
                "locales": ["de": ["sms": ["text": "Bestellung {{orderId}}"]], "de-AT": ["email": ["subject": "Servus {{orderId}}"]]],
            ]
            #expect(try await client.json(.put, "/notification-templates/order", template, token: member.token).status == .forbidden)
            let saved = try await client.json(.put, "/notification-templates/order", template, token: owner.token)
            #expect(saved.status == .ok, "\(saved.text)")
            let fetched = try await client.json(.get, "/notification-templates/order", token: owner.token)
            #expect(fetched.object["type"] as? String == "order")
            #expect((fetched.object["locales"] as? [String: Any])?.keys.sorted() == ["de", "de-AT"])
            #expect(try await client.json(.get, "/notification-templates/order", token: other.token).status == .notFound)
            #expect(try await client.json(.get, "/notification-templates/order", token: member.token).status == .forbidden)

            func preview(_ body: [String: Any]) async throws -> TestResponse {
                try await client.json(.post, "/notification-templates/order/preview", body, token: owner.token)
            }
            let data: [String: Any] = ["orderId": 42, "customer": "<b>Ann</b>", "items": [["name": "tea"], ["name": "cake"]]]
            // de-AT has no SMS: falls back to de.
            let sms = try await preview(["channel": "sms", "locale": "de-AT", "data": data])
            #expect(sms.object["locale"] as? String == "de")
            #expect((sms.object["parts"] as? [String: Any])?["text"] as? String == "Bestellung 42")
            let email = try await preview(["channel": "email", "locale": "de-AT", "title": "<i>T</i>", "data": data])
            #expect(email.object["locale"] as? String == "de-AT")
            let parts = try #require(email.object["parts"] as? [String: Any])
            #expect(parts["subject"] as? String == "Servus 42")
            // HTML escaped by default in html, raw with triple braces; plain text parts are not escaped.
            #expect(parts["html"] as? String == "<p>Hi &lt;b&gt;Ann&lt;/b&gt;</p><i>T</i>")
            #expect(parts["text"] as? String == "Hi <b>Ann</b>")
            let push = try await preview(["channel": "push", "locale": "fr", "title": "Shipped", "data": data])
            #expect(push.object["locale"] as? String == "default")
            #expect((push.object["parts"] as? [String: Any])?["body"] as? String == "tea cake for <b>Ann</b>")
            let missing = try await preview(["channel": "sms", "data": ["customer": "Ann"]])
            #expect(missing.status == .badRequest)
            #expect(fields(missing)["data.orderId"]?.contains("template_variable_missing") == true, "\(missing.text)")
            #expect(try await preview(["channel": "fax"]).status == .badRequest)

            #expect(try await client.json(.delete, "/notification-templates/order", token: other.token).status == .notFound)
            #expect(try await client.json(.delete, "/notification-templates/order", token: owner.token).status == .noContent)
            #expect(try await client.json(.delete, "/notification-templates/order", token: owner.token).status == .notFound)
        }
    }

    /// Session 30's trial: swift-mustache's parser works in proportion to tags times length,
    /// so a megabyte of `{{s}}` held a node's CPU for minutes while it was checked. A part is
    /// refused on its size or its number of tags before it is parsed: each gets that one issue
    /// (parsed, the declared variables' check would add "uses the variable s"), and 500 tags
    /// are still a template.
    @Test(arguments: TestEngine.available)
    func partsPastTheSizeOrTagBoundsAreRefusedUnparsed(engine: TestEngine) async throws {
        try await withTenant(engine, "template-size", configure: fastNotifications) { client, owner, _, _ in
            let refused = try await client.json(
                .put, "/notification-templates/big",
                [
                    "variables": ["v"],
                    "default": [
                        "sms": ["text": String(repeating: "{{s}}", count: 20_001)], "push": ["title": String(repeating: "{{s}}", count: 501)],
                    ],
                ], token: owner.token)
            #expect(refused.status == .badRequest)
            let errors = (refused.object["errors"] as? [[String: Any]]) ?? []
            #expect(errors.filter { $0["field"] as? String == "default.sms.text" }.count == 1, "\(refused.text.prefix(500))")
            #expect(errors.filter { $0["field"] as? String == "default.push.title" }.count == 1, "\(refused.text.prefix(500))")
            #expect(fields(refused)["default.sms.text"] == "must be at most 100,000 bytes")
            #expect(fields(refused)["default.push.title"] == "must have at most 500 tags ({{…}}), has 501")
            let bounded = try await client.json(
                .put, "/notification-templates/big", ["default": ["push": ["title": String(repeating: "{{s}}", count: 500)]]], token: owner.token)
            #expect(bounded.status == .ok, "\(bounded.text.prefix(300))")
        }
    }

    /// The fresh-user trial's template bomb: sections nested four deep over a list of 60 wrote
    /// 130 MB in 7 s and held the node's memory. A render is bounded: past 8 MiB the preview is a
    /// 400 naming `template_output_too_large`, while two levels over the same list still render.
    @Test(arguments: TestEngine.available)
    func aRenderThatWouldGrowWithoutBoundIsRefused(engine: TestEngine) async throws {
        try await withTenant(engine, "template-bomb", configure: fastNotifications) { client, owner, _, _ in
            let bomb = "{{#a}}{{#a}}{{#a}}{{#a}}xxxxxxxxxx{{/a}}{{/a}}{{/a}}{{/a}}"
            let saved = try await client.json(
                .put, "/notification-templates/bomb", ["default": ["sms": ["text": bomb], "push": ["title": "{{#a}}{{#a}}ab{{/a}}{{/a}}"]]],
                token: owner.token)
            #expect(saved.status == .ok, "\(saved.text)")
            let list = Array(repeating: 0, count: 60)
            let refused = try await client.json(
                .post, "/notification-templates/bomb/preview", ["channel": "sms", "data": ["a": list]], token: owner.token)
            #expect(refused.status == .badRequest)
            #expect(fields(refused)["data"]?.contains("template_output_too_large") == true, "\(refused.text.prefix(300))")
            let nested = try await client.json(
                .post, "/notification-templates/bomb/preview", ["channel": "push", "data": ["a": list]], token: owner.token)
            #expect(nested.status == .ok)
            #expect(((nested.object["parts"] as? [String: Any])?["title"] as? String)?.count == 60 * 60 * 2)
        }
    }

    @Test(arguments: TestEngine.available)
    func deliveriesAreRenderedAndAMissingVariableDeadLetters(engine: TestEngine) async throws {
        try await withFakeProviders(engine, owner: "templates-live@example.com") { app, fake, owner in
            let (client, components) = (app.client, app.components)
            let twilio = try #require(fake.setup["twilio"] as? [String: Any])
            #expect(try await client.json(.put, "/notification-providers/twilio", twilio, token: owner.token).status == .ok)
            let sendgrid: [String: Any] = ["apiKey": try #require(fake.setup["sendgridKey"] as? String), "fromEmail": "noreply@example.com"]
            #expect(try await client.json(.put, "/notification-providers/sendgrid", sendgrid, token: owner.token).status == .ok)
            let member = try await addMember(client, owner: owner, email: "templates-reader@example.com")
            #expect(
                try await client.json(.patch, "/users/me", ["phone": "+4915112345678", "locale": "de-AT"], token: member.token).status == .ok)
            #expect(
                try await client.json(
                    .put, "/users/me/notification-preferences", ["types": ["*": ["sms": true, "email": true]]], token: member.token
                ).status == .ok)
            let template: [String: Any] = [
                "default": [
                    "email": ["subject": "Order {{orderId}}", "html": "<p>{{customer}}</p>", "text": "For {{customer}}"],
                    "sms": ["text": "Order {{orderId}} for {{customer}}"],
                ],
                // The member's locale is de-AT: SMS from de, email from default.
                "locales": ["de": ["sms": ["text": "Bestellung {{orderId}} für {{customer}}"]]],
            ]
            #expect(try await client.json(.put, "/notification-templates/order", template, token: owner.token).status == .ok)

            let good = try #require(
                try await components.notifications.publish(
                    NotificationDraft(type: "order", title: "Shipped", data: .object(["orderId": .number(42), "customer": .string("<Ann>")])),
                    to: [member.userId], tenantId: owner.tenantId
                ).first)
            try await components.jobs.waitUntil("the rendered SMS and email sent") {
                let items = try await deliveries(client, good.id, member)
                return items.count == 2 && items.allSatisfy { $0["state"] as? String == "sent" }
            }
            let sms = try #require(fake.requests(to: "/2010-04-01/").last)
            #expect((sms["body"] as? String)?.contains("Body=Bestellung%2042%20f%C3%BCr%20%3CAnn%3E") == true, "\(sms["body"] ?? "")")
            let mail = try #require(fake.requests(to: "/v3/mail/send").last)
            let mailBody = try #require(try JSONSerialization.jsonObject(with: Data((mail["body"] as? String ?? "").utf8)) as? [String: Any])
            #expect(mailBody["subject"] as? String == "Order 42")
            let content = mailBody["content"] as? [[String: Any]] ?? []
            #expect(content.map { $0["type"] as? String } == ["text/plain", "text/html"])
            #expect(content.last?["value"] as? String == "<p>&lt;Ann&gt;</p>")
            #expect(content.first?["value"] as? String == "For <Ann>")

            // No customer in the data: both deliveries fail at once, clearly, and nothing is sent.
            let sentBefore = fake.requests.count
            let bad = try #require(
                try await components.notifications.publish(
                    NotificationDraft(type: "order", title: "Shipped", data: .object(["orderId": .number(43)])), to: [member.userId],
                    tenantId: owner.tenantId
                ).first)
            try await components.jobs.waitUntil("both deliveries failed") {
                let items = try await deliveries(client, bad.id, member)
                return items.count == 2 && items.allSatisfy { $0["state"] as? String == "failed" }
            }
            for item in try await deliveries(client, bad.id, member) {
                #expect(item["lastError"] as? String == "template_variable_missing: customer", "\(item)")
                #expect(item["attempts"] as? Int == 1)
            }
            #expect(fake.requests.count == sentBefore, "no half message went out")
        }
    }
}
