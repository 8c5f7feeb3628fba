import CairnServer
import CairnStorage
import CairnTestSupport
import Crypto
import Foundation
import HTTPTypes
import HummingbirdTesting
import NIOCore
import SQLKit
import Testing

@Suite("Notifications: service tokens with scope notifications:publish")
struct ServiceTokenTests {
    @Test(arguments: TestEngine.available)
    func aServiceTokenPublishesOnlyWhereItsScopeAllowsUntilRevoked(engine: TestEngine) async throws {
        try await withLiveOwner(engine, "st-owner@example.com") { app, owner in
            let (client, components) = (app.client, app.components)
            let member = try await addMember(client, owner: owner, email: "st-member@example.com")
            let stranger = try await signUp(client, "st-stranger@example.com")

            // Members cannot create tokens; unknown scopes and empty names are listed.
            let denied = try await client.json(.post, "/service-tokens", ["name": "ci", "scopes": ["notifications:publish"]], token: member.token)
            #expect(denied.status == .forbidden)
            let bad = try await client.json(.post, "/service-tokens", ["name": "", "scopes": ["root"]], token: owner.token)
            #expect(bad.status == .badRequest)
            #expect(bad.code == "invalid_input")
            let fields = (bad.object["errors"] as? [[String: Any]])?.compactMap { $0["field"] as? String }
            #expect(fields == ["name", "scopes[0]"])

            let created = try await client.json(
                .post, "/service-tokens", ["name": "billing service", "scopes": ["notifications:publish"]], token: owner.token)
            #expect(created.status == .created)
            #expect(created.headers[.cacheControl] == "no-store")
            let secret = try #require(created.object["token"] as? String)
            let id = try #require(created.object["id"] as? String)
            #expect(created.headers[.location] == "/service-tokens/\(id)")
            #expect(secret.hasPrefix("cairn_st_") && secret.count == 9 + 43)
            #expect(created.object["scopes"] as? [String] == ["notifications:publish"])

            // Listed without the secret; stored only as its SHA-256.
            let listed = try await client.json(.get, "/service-tokens", token: owner.token)
            #expect(listed.status == .ok)
            #expect(!listed.text.contains(secret))
            let items = try #require(listed.object["items"] as? [[String: Any]])
            #expect(items.count == 1 && items[0]["id"] as? String == id && items[0]["token"] == nil)
            #expect((items[0]["hint"] as? String).map { secret.hasPrefix($0) } == true)
            let stored = try await components.database.read { db in
                try await db.raw("SELECT token_hash FROM service_tokens WHERE id = \(bind: id)").first()?.decode(
                    column: "token_hash", as: String.self)
            }
            #expect(stored == SHA256.hash(data: Array(secret.utf8)).map { String(format: "%02x", $0) }.joined())
            let strangers = try await client.json(.get, "/service-tokens", token: stranger.token)
            #expect((strangers.object["items"] as? [Any])?.isEmpty == true)

            // The token publishes to its tenant's users.
            let published = try await client.json(
                .post, "/notifications", ["userIds": [member.userId], "type": "message", "title": "from a service"], token: secret)
            #expect(published.status == .accepted)
            let unread = try await client.json(.get, "/notifications/unread-count", token: member.token)
            #expect(unread.object["unread"] as? Int == 1)
            let outside = try await client.json(
                .post, "/notifications", ["userIds": [stranger.userId], "type": "message", "title": "x"], token: secret)
            #expect(outside.status == .badRequest)

            // Any other route: 403 insufficient_scope (RFC 6750 §3.1), even the admin ones.
            for (method, path) in [(HTTPRequest.Method.get, "/notifications"), (.get, "/service-tokens"), (.get, "/users"), (.get, "/users/me")] {
                let refused = try await client.json(method, path, token: secret)
                #expect(refused.status == .forbidden, "\(path)")
                #expect(refused.code == "forbidden")
                // RFC 6750 §3: the challenge names what the route needs (a user's access token).
                #expect(refused.headers[.wwwAuthenticate] == #"Bearer realm="cairn", error="insufficient_scope", scope="user""#, "\(path)")
            }

            // A token without the scope gets told which scope the route needs.
            try await components.database.write { db in
                try await db.raw("UPDATE service_tokens SET scopes = 'other:scope' WHERE id = \(bind: id)").run()
            }
            let unscoped = try await client.json(
                .post, "/notifications", ["userIds": [member.userId], "type": "message", "title": "x"], token: secret)
            #expect(unscoped.status == .forbidden)
            #expect(unscoped.headers[.wwwAuthenticate] == #"Bearer realm="cairn", error="insufficient_scope", scope="notifications:publish""#)

            // Another tenant's token is 404; revocation holds from the next request.
            #expect(try await client.json(.delete, "/service-tokens/\(id)", token: stranger.token).status == .notFound)
            #expect(try await client.json(.delete, "/service-tokens/\(id)", token: owner.token).status == .noContent)
            let revoked = try await client.json(
                .post, "/notifications", ["userIds": [member.userId], "type": "message", "title": "x"], token: secret)
            #expect(revoked.status == .unauthorized)
            #expect(revoked.code == "invalid_token")
            #expect(try await client.json(.delete, "/service-tokens/\(id)", token: owner.token).status == .notFound)
        }
    }
}

@Suite("Notifications: Idempotency-Key per caller")
struct PublishIdempotencyTests {
    /// The owner and the tenant's service token send the same `Idempotency-Key` with the same
    /// publish (issue 13): each publish is stored, neither caller is answered the other's reply.
    @Test(arguments: TestEngine.available)
    func aServiceTokenAndAUserOfOneTenantHaveTheirOwnKeys(engine: TestEngine) async throws {
        try await withOwner(engine, "idem-st@example.com") { client, _, owner in
            let created = try await client.json(
                .post, "/service-tokens", ["name": "billing", "scopes": ["notifications:publish"]], token: owner.token)
            let secret = try #require(created.object["token"] as? String)
            // The same bytes every time: the key's fingerprint is over the exact body.
            let body = #"{"userIds":["\#(owner.userId)"],"type":"message","title":"same key"}"#
            func publish(_ token: String) async throws -> TestResponse {
                try await client.execute(
                    uri: "/notifications", method: .post,
                    headers: [.authorization: "Bearer \(token)", .contentType: "application/json", HTTPField.Name("Idempotency-Key")!: "publish-1"],
                    body: ByteBuffer(string: body))
            }
            let byUser = try await publish(owner.token)
            #expect(byUser.status == .accepted)
            let byService = try await publish(secret)
            #expect(byService.status == .accepted)
            #expect(byService.headers[HTTPField.Name("Idempotent-Replayed")!] == nil)
            #expect(byService.text != byUser.text)
            let replayed = try await publish(secret)
            #expect(replayed.headers[HTTPField.Name("Idempotent-Replayed")!] == "true")
            #expect(replayed.text == byService.text)
            let unread = try await client.json(.get, "/notifications/unread-count", token: owner.token)
            #expect(unread.object["unread"] as? Int == 2)
        }
    }
}
