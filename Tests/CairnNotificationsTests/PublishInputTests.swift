import CairnNotifications
import CairnServer
import CairnTestSupport
import Foundation
import HTTPTypes
import HummingbirdTesting
import NIOCore
import Testing

/// Sends `body` as it is written (JSON a serializer would not produce: integers past 2^53).
private func post(_ client: any TestClientProtocol, _ uri: String, _ body: String, token: String) async throws -> TestResponse {
    try await client.execute(
        uri: uri, method: .post, headers: [.contentType: "application/json", .authorization: "Bearer \(token)"], body: ByteBuffer(string: body))
}

/// The `errors` of a problem, as `field: issue`.
private func issues(_ response: TestResponse) -> [String: String] {
    let errors = response.object["errors"] as? [[String: Any]] ?? []
    return Dictionary(errors.map { ($0["field"] as? String ?? "?", $0["issue"] as? String ?? "?") }) { first, _ in first }
}

/// What `POST /notifications` says about bad input, found by a fresh user's trial: each issue on
/// the field at fault, in words that say what is wrong.
@Suite("Notifications: publish input")
struct PublishInputTests {
    /// An integer past ±(2^53 − 1) in `data` is refused on its path (before: stored rounded,
    /// `9007199254740993` read back as `…992`); the bound itself, and numbers written with a
    /// fraction or exponent, are kept. Every body's free-form JSON has the rule (a product's
    /// `attributes` here).
    @Test(arguments: TestEngine.available)
    func integersADoubleWouldRoundAreRefused(engine: TestEngine) async throws {
        try await withOwner(engine, "bigint@example.com") { client, _, owner in
            let start = #"{"userIds":["\#(owner.userId)"],"type":"message","title":"numbers","data":"#
            let refused: [(data: String, field: String)] = [
                (#"{"n":9007199254740993}"#, "data.n"),
                (#"{"n":-9007199254740993}"#, "data.n"),
                (#"{"list":[1,12345678901234567890]}"#, "data.list[1]"),
                (#"{"deep":{"id":99999999999999999999999}}"#, "data.deep.id"),
            ]
            for (data, field) in refused {
                let response = try await post(client, "/notifications", start + data + "}", token: owner.token)
                #expect(response.status == .badRequest, "\(data) → \(response.status)")
                #expect(response.code == "invalid_input", "\(data)")
                #expect(issues(response)[field]?.contains("9007199254740991") == true, "\(data): \(response.text)")
            }
            let kept = #"{"max":9007199254740991,"min":-9007199254740991,"real":6.02e23,"fraction":0.5}"#
            let stored = try await post(client, "/notifications", start + kept + "}", token: owner.token)
            #expect(stored.status == .accepted, "\(stored.text)")
            let inbox = try await client.json(.get, "/notifications", token: owner.token)
            // Compared as text: Foundation's reader would itself round a large integer.
            #expect(inbox.text.contains(#""max":9007199254740991"#), "\(inbox.text)")
            #expect(inbox.text.contains(#""min":-9007199254740991"#), "\(inbox.text)")

            let product = try await post(
                client, "/products", #"{"sku":"BIG-1","name":"Big","priceMinor":1,"currency":"EUR","attributes":{"id":9007199254740993}}"#,
                token: owner.token)
            #expect(product.status == .badRequest, "\(product.text)")
            #expect(issues(product)["attributes.id"] != nil, "\(product.text)")
        }
    }

    /// A NUL (U+0000) is refused on the field that holds it (before: always on `body`).
    /// A non-zero number too small for a double (`1e-400`) is refused on its path, as one too
    /// large is, and `"data": null` is refused on `data` (leave it out for none), where both
    /// were stored as something else (0, `{}`); a recipient's id in upper case names the same
    /// user (RFC 9562 §4), where it was "not a user of this tenant" (found by a fresh-user trial).
    @Test(arguments: TestEngine.available)
    func underflowsNullDataAndUpperCaseIdsAreTakenAsMeant(engine: TestEngine) async throws {
        try await withOwner(engine, "underflow@example.com") { client, _, owner in
            let start = #"{"userIds":["\#(owner.userId)"],"type":"message","title":"numbers","data":"#
            for (data, field) in [(#"{"tiny":1e-400}"#, "data.tiny"), (#"{"list":[0,-0.5e-330]}"#, "data.list[1]")] {
                let response = try await post(client, "/notifications", start + data + "}", token: owner.token)
                #expect(response.status == .badRequest, "\(data) → \(response.status)")
                #expect(issues(response)[field]?.contains("stored as 0") == true, "\(data): \(response.text)")
            }
            let zeros = try await post(client, "/notifications", start + #"{"a":0,"b":0.0,"c":0e-400,"d":5e-324}"# + "}", token: owner.token)
            #expect(zeros.status == .accepted, "\(zeros.text)")

            let null = try await post(client, "/notifications", start + "null}", token: owner.token)
            #expect(null.status == .badRequest, "\(null.text)")
            #expect(issues(null)["data"] == "must be a JSON object (leave it out for none)", "\(null.text)")
            let without = try await post(
                client, "/notifications", #"{"userIds":["\#(owner.userId)"],"type":"message","title":"no data"}"#, token: owner.token)
            #expect(without.status == .accepted, "\(without.text)")

            let upper = try await post(
                client, "/notifications", #"{"userIds":["\#(owner.userId.uppercased())"],"type":"message","title":"upper"}"#,
                token: owner.token)
            #expect(upper.status == .accepted, "\(upper.text)")
            let inbox = try await client.json(.get, "/notifications?limit=100", token: owner.token)
            #expect(inbox.text.contains(#""title":"upper""#), "\(inbox.text)")
        }
    }

    @Test(arguments: TestEngine.available)
    func aNULIsReportedOnItsField(engine: TestEngine) async throws {
        try await withOwner(engine, "nul-field@example.com") { client, components, owner in
            let cases: [(body: String, fields: [String])] = [
                (#""type":"message","title":"a\u0000b""#, ["title"]),
                (#""type":"mess\u0000age","title":"t""#, ["type"]),
                (#""type":"message","title":"t","body":"\u0000""#, ["body"]),
                (#""type":"message","title":"t","data":{"tags":["ok","x\u0000"]}"#, ["data.tags[1]"]),
                (#""type":"message","title":"\u0000","data":{"a\u0000":1}"#, ["title", "data"]),
            ]
            for (members, fields) in cases {
                let response = try await post(
                    client, "/notifications", #"{"userIds":["\#(owner.userId)"],"# + members + "}", token: owner.token)
                #expect(response.status == .badRequest, "\(members)")
                #expect(response.code == "invalid_input", "\(members)")
                #expect(Set(issues(response).keys) == Set(fields), "\(members): \(response.text)")
                #expect(issues(response).values.allSatisfy { $0.contains("U+0000") }, "\(members): \(response.text)")
            }
            #expect(try await components.notifications.store.currentSeq(tenantId: owner.tenantId, userId: owner.userId) == 0)
        }
    }

    /// A title of spaces only is blank (before: "must be 1 to 200 characters"), and a recipient
    /// that is not a user id at all is malformed (before: "is not a user of this tenant", which
    /// stays the answer for a well-formed id of nobody here).
    @Test(arguments: TestEngine.available)
    func blankTitlesAndMalformedRecipientsAreNamedAsSuch(engine: TestEngine) async throws {
        try await withOwner(engine, "publish-words@example.com") { client, _, owner in
            let blank = try await client.json(
                .post, "/notifications", ["userIds": [owner.userId], "type": "message", "title": "   "], token: owner.token)
            #expect(blank.status == .badRequest)
            #expect(blank.code == "invalid_input")
            #expect(issues(blank) == ["title": "must not be blank"], "\(blank.text)")
            let long = try await client.json(
                .post, "/notifications", ["userIds": [owner.userId], "type": "message", "title": String(repeating: "x", count: 201)],
                token: owner.token)
            #expect(issues(long) == ["title": "must be 1 to 200 characters"], "\(long.text)")

            let malformed = try await client.json(
                .post, "/notifications", ["userIds": [owner.userId, "nope"], "type": "message", "title": "hi"], token: owner.token)
            #expect(malformed.status == .badRequest)
            #expect(malformed.code == "invalid_input")
            #expect(issues(malformed) == ["userIds[1]": "is not a user id (a UUIDv7 string)"], "\(malformed.text)")
            let stranger = try await client.json(
                .post, "/notifications", ["userIds": ["01939b1e-0000-7000-8000-000000000000"], "type": "message", "title": "hi"],
                token: owner.token)
            #expect(issues(stranger) == ["userIds[0]": "is not a user of this tenant"], "\(stranger.text)")
            // The outsider is named at its own index, and nothing is stored for the member beside it.
            let mixed = try await client.json(
                .post, "/notifications", ["userIds": [owner.userId, "01939b1e-0000-7000-8000-000000000000"], "type": "message", "title": "hi"],
                token: owner.token)
            #expect(issues(mixed) == ["userIds[1]": "is not a user of this tenant"], "\(mixed.text)")
            let inbox = try await client.json(.get, "/notifications", token: owner.token)
            #expect(inbox.status == .ok)
            #expect(inbox.text.contains("\"items\":[]"), "\(inbox.text)")
        }
    }

    /// Several recipients that are no users of the tenant are all named, each at every index it
    /// is listed at, in one answer (before: only the first, `userIds[1]`), whether the publish
    /// is stored in a batch or alone; a user of another tenant counts as one of them.
    @Test(arguments: TestEngine.available, [500, 0])
    func everyRecipientThatIsNoUserOfTheTenantIsNamed(engine: TestEngine, batchRows: Int) async throws {
        try await withOwner(engine, "publish-many-bad@example.com", configure: { $0.notifications.publishBatchRows = batchRows }) {
            client, components, owner in
            let stranger = try await signUp(client, "publish-many-bad-stranger@example.com")
            let nobody = "01939b1e-0000-7000-8000-000000000000"
            let nobodyElse = "01939b1e-0000-7000-8000-000000000001"
            let response = try await client.json(
                .post, "/notifications",
                [
                    "userIds": [owner.userId, nobody, stranger.userId, owner.userId, nobodyElse, nobody.uppercased()], "type": "message",
                    "title": "hi",
                ], token: owner.token)
            #expect(response.status == .badRequest)
            #expect(response.code == "invalid_input")
            let named = ["userIds[1]", "userIds[2]", "userIds[4]", "userIds[5]"]
            #expect(issues(response) == Dictionary(uniqueKeysWithValues: named.map { ($0, "is not a user of this tenant") }), "\(response.text)")
            #expect(try await components.notifications.store.currentSeq(tenantId: owner.tenantId, userId: owner.userId) == 0)
        }
    }
}
