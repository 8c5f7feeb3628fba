import CairnAccounts
import CairnHTTP
import CairnServer
import CairnStorage
import CairnTestSupport
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Testing

@Suite("Profile and admin user management")
struct UserManagementTests {
    @Test(arguments: TestEngine.available)
    func profileEditAndPasswordChangeRevokesOtherSessions(engine: TestEngine) async throws {
        try await withTestApp(engine) { client, _ in
            let (_, session1) = try await client.registerAndLogin(email: "pat@example.com")
            let session2 = try await client.login(email: "pat@example.com", password: "correct horse battery")
            let token1 = session1.accessToken
            let me = try await client.json(.get, "/users/me", token: token1)
            let etag = try #require(me.headers[.eTag])
            #expect(try await client.json(.get, "/users/me", token: token1, headers: [.ifNoneMatch: etag]).status == .notModified)
            let patched = try await client.json(
                .patch, "/users/me", ["name": "Patricia", "email": "Pat.New@Example.com", "currentPassword": "correct horse battery"], token: token1)
            #expect(patched.status == .ok)
            #expect(patched.object["name"] as? String == "Patricia")
            #expect(try await client.json(.patch, "/users/me", ["name": NSNull()], token: token1).status == .badRequest)
            #expect(try await client.json(.patch, "/users/me", ["role": "admin"], token: token1).status == .badRequest)

            let wrong = try await client.json(
                .put, "/users/me/password", ["currentPassword": "nope nope", "newPassword": "another long one"], token: token1)
            #expect(wrong.status == .badRequest)
            #expect((wrong.object["errors"] as? [[String: Any]])?.first?["field"] as? String == "currentPassword")
            let changed = try await client.json(
                .put, "/users/me/password", ["currentPassword": "correct horse battery", "newPassword": "another long one"], token: token1)
            #expect(changed.status == .ok)
            let newToken = changed.object["accessToken"] as! String
            #expect(try await client.json(.get, "/users/me", token: newToken).status == .ok)
            #expect(try await client.json(.get, "/users/me", token: session2.accessToken).status == .unauthorized)
            #expect(
                try await client.json(.post, "/auth/refresh-token", ["refreshToken": session2.refreshToken]).status == .unauthorized)
            #expect(
                try await client.json(.post, "/auth/login", ["email": "pat.new@example.com", "password": "correct horse battery"]).status
                    == .unauthorized)
            #expect(try await client.json(.post, "/auth/login", ["email": "pat.new@example.com", "password": "another long one"]).status == .ok)
        }
    }

    @Test(arguments: TestEngine.available)
    func adminsManageUsersOfTheirTenantOnly(engine: TestEngine) async throws {
        try await withTestApp(engine) { client, _ in
            let (owner, ownerTokens) = try await client.registerAndLogin(email: "owner@a.example")
            let ownerToken = ownerTokens.accessToken
            let created = try await client.json(
                .post, "/users", ["email": "member@a.example", "name": "Mem", "role": "member", "password": "member password"], token: ownerToken)
            #expect(created.status == .created)
            let memberId = created.object["id"] as! String
            #expect(created.headers[.location] == "/users/\(memberId)")
            #expect(created.object["tenantId"] as? String == owner.tenantId)
            let bad = try await client.json(
                .post, "/users", ["email": "x@a.example", "name": "X", "role": "superuser", "password": "member password"], token: ownerToken)
            #expect(bad.status == .badRequest)

            // A member may not manage users.
            let memberToken = try await client.login(email: "member@a.example", password: "member password").accessToken
            let forbidden = try await client.json(.get, "/users", token: memberToken)
            #expect(forbidden.status == .forbidden)
            #expect(forbidden.code == "forbidden")
            #expect(try await client.json(.delete, "/users/\(owner.id)", token: memberToken).status == .forbidden)

            // Listing pages through the tenant's users.
            let list = try await client.json(.get, "/users?limit=1", token: ownerToken)
            #expect((list.object["items"] as? [Any])?.count == 1)
            let cursor = try #require(list.object["nextCursor"] as? String)
            let next = try await client.json(.get, "/users?limit=1&cursor=\(cursor)", token: ownerToken)
            #expect((next.object["items"] as? [[String: Any]])?.first?["id"] as? String == memberId)

            // Another tenant's admin sees 404, never 403.
            let (_, otherTokens) = try await client.registerAndLogin(email: "owner@b.example")
            let otherToken = otherTokens.accessToken
            for method in [HTTPRequest.Method.get, .delete] {
                let response = try await client.json(method, "/users/\(memberId)", token: otherToken)
                #expect(response.status == .notFound)
            }
            #expect(try await client.json(.patch, "/users/\(memberId)", ["name": "Hijack"], token: otherToken).status == .notFound)
            let otherList = try await client.json(.get, "/users", token: otherToken)
            #expect((otherList.object["items"] as? [Any])?.count == 1)

            // Promotion with ETag preconditions; a role change takes effect on the member's token.
            let current = try await client.json(.get, "/users/\(memberId)", token: ownerToken)
            let etag = try #require(current.headers[.eTag])
            let stale = try await client.json(.patch, "/users/\(memberId)", ["role": "admin"], token: ownerToken, headers: [.ifMatch: "\"999\""])
            #expect(stale.status == .preconditionFailed)
            let promoted = try await client.json(.patch, "/users/\(memberId)", ["role": "admin"], token: ownerToken, headers: [.ifMatch: etag])
            #expect(promoted.status == .ok)
            #expect(promoted.object["role"] as? String == "admin")
            #expect(try await client.json(.get, "/users", token: memberToken).status == .ok)

            // Admins cannot touch owners; the last owner cannot be demoted; self-delete refused.
            #expect(try await client.json(.patch, "/users/\(owner.id)", ["role": "member"], token: memberToken).status == .forbidden)
            let demoteSelf = try await client.json(.patch, "/users/\(owner.id)", ["role": "member"], token: ownerToken)
            #expect(demoteSelf.status == .conflict)
            #expect(try await client.json(.delete, "/users/\(owner.id)", token: ownerToken).status == .conflict)

            // Deleting a user ends their sessions at once.
            #expect(try await client.json(.delete, "/users/\(memberId)", token: ownerToken).status == .noContent)
            #expect(try await client.json(.get, "/users/\(memberId)", token: ownerToken).status == .notFound)
            #expect(try await client.json(.get, "/users/me", token: memberToken).status == .unauthorized)
            #expect(
                try await client.json(.post, "/auth/login", ["email": "member@a.example", "password": "member password"]).status == .unauthorized)
        }
    }

    /// Node B caches the session state it read; the revocation on node A reaches it once 5 s
    /// have passed on the nodes' clock (the guard re-reads entries older than 2 s, and within
    /// 2 × 2 s while another request re-reads).
    @Test func logoutAllReachesEveryNodeWithinFiveSeconds() async throws {
        guard TestEngine.available.contains(.postgres) else { return }
        let clock = TestClock()
        // Two nodes on one PostgreSQL database, sharing the signing key ring and the clock.
        try await withTwoNodes(clock: clock) { nodeA, nodeB in
            let (_, tokens) = try await nodeA.client.registerAndLogin(email: "multi@example.com")
            let token = tokens.accessToken
            #expect(try await nodeB.client.json(.get, "/users/me", token: token).status == .ok)
            #expect(try await nodeA.client.json(.post, "/auth/logout-all", token: token).status == .noContent)
            clock.advance(by: .seconds(5))
            #expect(try await nodeB.client.json(.get, "/users/me", token: token).status == .unauthorized)
        }
    }

    /// Logging out one session ends that session's access tokens (their `sid`) at once on the
    /// node that took the logout and within 5 s on another; the user's other session lives on.
    @Test func logoutEndsThatSessionsAccessTokensOnEveryNode() async throws {
        guard TestEngine.available.contains(.postgres) else { return }
        let clock = TestClock()
        try await withTwoNodes(clock: clock) { nodeA, nodeB in
            let (_, phone) = try await nodeA.client.registerAndLogin(email: "sid@example.com")
            let laptop = try await nodeA.client.login(email: "sid@example.com", password: "correct horse battery")
            for token in [phone.accessToken, laptop.accessToken] {
                #expect(try await nodeA.client.json(.get, "/users/me", token: token).status == .ok)
                #expect(try await nodeB.client.json(.get, "/users/me", token: token).status == .ok)
            }
            let logout = try await nodeA.client.json(.post, "/auth/logout", ["refreshToken": phone.refreshToken])
            #expect(logout.status == .noContent)
            #expect(try await nodeA.client.json(.get, "/users/me", token: phone.accessToken).status == .unauthorized)
            clock.advance(by: .seconds(5))
            let ended = try await nodeB.client.json(.get, "/users/me", token: phone.accessToken)
            #expect(ended.status == .unauthorized)
            #expect(ended.code == "invalid_token")
            #expect(try await nodeA.client.json(.get, "/users/me", token: laptop.accessToken).status == .ok)
            #expect(try await nodeB.client.json(.get, "/users/me", token: laptop.accessToken).status == .ok)
        }
    }
}
