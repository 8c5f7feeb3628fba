import CairnAccounts
import CairnHTTP
import CairnServer
import CairnStorage
import CairnTestSupport
import Foundation
import HTTPTypes
import HummingbirdTesting
import SQLKit
import Testing

@Suite("Findings of the fresh-user trial")
struct FreshUserFindingsTests {
    @Test(arguments: TestEngine.available)
    func twoOwnersDemotingEachOtherAtOnceLeaveOneOwner(engine: TestEngine) async throws {
        try await withTestApp(engine) { client, _ in
            for round in 0..<4 {
                let (first, tokens) = try await client.registerAndLogin(email: "o\(round)@race.example")
                let firstToken = tokens.accessToken
                let second = try await client.json(
                    .post, "/users", ["email": "p\(round)@race.example", "name": "P", "role": "owner", "password": "second owner pw"],
                    token: firstToken)
                let secondToken = try await client.login(email: "p\(round)@race.example", password: "second owner pw").accessToken
                let firstId = first.id
                let secondId = second.object["id"] as! String
                async let a = client.json(.patch, "/users/\(secondId)", ["role": "member"], token: firstToken)
                async let b = client.json(.patch, "/users/\(firstId)", ["role": "member"], token: secondToken)
                let statuses = [try await a.status, try await b.status]
                #expect(statuses.filter { $0 == .ok }.count == 1, "\(statuses)")
                #expect(statuses.contains(.conflict) || statuses.contains(.forbidden), "\(statuses)")
            }
        }
    }

    @Test func refreshReuseAlsoVoidsTheSessionsAccessTokens() async throws {
        let clock = TestClock()
        try await withTestApp(.sqlite, clock: clock) { app in
            let client = app.client
            let (_, tokens) = try await client.registerAndLogin(email: "reuse@example.com")
            let refresh = tokens.refreshToken
            let rotated = try await client.json(.post, "/auth/refresh-token", ["refreshToken": refresh]).object
            clock.advance(by: .seconds(11))  // past the reuse interval (10 s)
            #expect(try await client.json(.post, "/auth/refresh-token", ["refreshToken": refresh]).code == "refresh_token_reused")
            #expect(try await client.json(.get, "/users/me", token: rotated["accessToken"] as? String).status == .unauthorized)
        }
    }

    @Test func readinessReportsPendingMigrations() async throws {
        try await withTestApp(.sqlite) { client, components in
            try await components.database.write { try await $0.raw("DELETE FROM cairn_migrations WHERE module = 'tasks' AND version = 1").run() }
            let ready = try await client.execute(uri: "/health/ready", method: .get)
            #expect(ready.status == .serviceUnavailable)
            #expect(ready.object["detail"] as? String == "1 database migrations are pending; run `cairn migrate`.")
        }
    }

    @Test func lengthLimitsCountUnicodeScalarsNotGraphemes() async throws {
        try await withTestApp(.sqlite, owner: "zalgo@example.com") { client, _, token in
            let zalgo = "a" + String(repeating: "\u{301}", count: 300)
            let task = try await client.json(.post, "/tasks", ["title": zalgo], token: token)
            #expect(task.status == .badRequest)
            #expect(try await client.json(.patch, "/users/me", ["name": zalgo], token: token).status == .badRequest)
        }
    }

    /// Right after a rotation, a node that started after it (or re-read its ring sooner)
    /// signs with the new key; another node accepts those tokens at once, not only at its next
    /// periodic re-read (a fresh user saw one 401 two seconds after `cairn keys rotate`).
    @Test func aTokenOfAKeyRotatedAMomentAgoIsAcceptedByAnotherNode() async throws {
        let clock = TestClock()
        try await withTestApp(.sqlite, clock: clock) { app in
            let nodeB = app.components.accounts.tokens
            _ = try await app.client.registerAndLogin(email: "rotated@example.com")
            clock.advance(by: .seconds(6))
            _ = await nodeB.currentJWKS()  // B has just re-read its ring
            let newKid = try await TokenService.rotate(nodeB.settings)
            let nodeA = try await TokenService(settings: nodeB.settings, clock: clock)
            let (token, _) = try await nodeA.issueAccessToken(
                userId: UUIDv7.make(), tenantId: UUIDv7.make(), role: .member, sessionId: UUIDv7.make())
            let header = try JSONSerialization.jsonObject(with: Data(Base64URL.decode(String(token.split(separator: ".")[0]))!)) as? [String: Any]
            #expect(header?["kid"] as? String == newKid)
            clock.advance(by: .seconds(2))
            #expect(try await nodeB.verify(token).sub.isEmpty == false)
        }
    }

    @Test func aRunningNodeSignsWithARotatedKey() async throws {
        let clock = TestClock()
        try await withTestApp(.sqlite, clock: clock) { app in
            let (client, components) = (app.client, app.components)
            _ = try await client.registerAndLogin(email: "rotate@example.com")
            let newKid = try await TokenService.rotate(components.accounts.tokens.settings)
            // The node re-reads the ring file at most every 5 s of its clock.
            clock.advance(by: .seconds(6))
            let token = try await client.login(email: "rotate@example.com", password: "correct horse battery").accessToken
            let header = String(token.split(separator: ".")[0])
            let json = try JSONSerialization.jsonObject(with: Data(Base64URL.decode(header)!)) as? [String: Any]
            #expect(json?["kid"] as? String == newKid)
            let jwks = try await client.execute(uri: "/.well-known/jwks.json", method: .get).object["keys"] as? [Any]
            #expect(jwks?.count == 2)
        }
    }
}
