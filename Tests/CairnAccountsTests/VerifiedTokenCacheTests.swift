import CairnAccounts
import CairnHTTP
import CairnServer
import CairnStorage
import CairnTestSupport
import Crypto
import Foundation
import HTTPTypes
import HummingbirdTesting
import SQLKit
import Synchronization
import Testing

/// The verified-token cache (issue 19) skips the signature check and the JSON decode for a
/// token seen before, and nothing else: expiry, logout, logout-all, announcements from other
/// nodes and the key ring still decide on every request.
@Suite("Accounts: verified-token cache")
struct VerifiedTokenCacheTests {
    /// A cached token is refused once its `exp` (plus the 60 s leeway) has passed on the clock.
    @Test(arguments: TestEngine.available)
    func aCachedTokenStopsAtItsExpiry(engine: TestEngine) async throws {
        let clock = TestClock()
        try await withTestApp(engine, owner: "exp@example.com", clock: clock) { app, token in
            #expect(try await app.client.json(.get, "/users/me", token: token).status == .ok)
            #expect(app.components.accounts.tokens.isCached(token))
            clock.advance(by: .seconds(900 + 59))
            #expect(try await app.client.json(.get, "/users/me", token: token).status == .ok, "within the leeway")
            clock.advance(by: .seconds(2))
            let expired = try await app.client.json(.get, "/users/me", token: token)
            #expect(expired.status == .unauthorized)
            #expect(expired.code == "token_expired")
        }
    }

    /// Logout ends that session's cached tokens at once, logout-all the others', on the node
    /// that took it (no clock advance: the session guard is consulted on every request), over
    /// real HTTP.
    @Test(arguments: TestEngine.available)
    func cachedTokensStopAtLogoutAndLogoutAll(engine: TestEngine) async throws {
        try await withTestApp(engine, mode: .live, clock: TestClock()) { app in
            let client = app.client
            let phone = try await client.registerAndLogin(email: "cached-logout@example.com").tokens
            let laptop = try await client.login(email: "cached-logout@example.com", password: "correct horse battery")
            let tablet = try await client.login(email: "cached-logout@example.com", password: "correct horse battery")
            for token in [phone.accessToken, laptop.accessToken, tablet.accessToken] {
                #expect(try await client.json(.get, "/users/me", token: token).status == .ok)
                #expect(app.components.accounts.tokens.isCached(token))
            }
            #expect(try await client.json(.post, "/auth/logout", ["refreshToken": phone.refreshToken]).status == .noContent)
            let ended = try await client.json(.get, "/users/me", token: phone.accessToken)
            #expect(ended.status == .unauthorized)
            #expect(ended.code == "invalid_token")
            #expect(try await client.json(.get, "/users/me", token: laptop.accessToken).status == .ok)
            #expect(try await client.json(.post, "/auth/logout-all", token: laptop.accessToken).status == .noContent)
            #expect(try await client.json(.get, "/users/me", token: laptop.accessToken).status == .unauthorized)
            #expect(try await client.json(.get, "/users/me", token: tablet.accessToken).status == .unauthorized)
        }
    }

    /// Node B has the tokens cached; node A takes the logout and the logout-all. B applies
    /// each as soon as it hears the `cairn_sessions` announcement, with its clock standing
    /// still (so not through the session guard's periodic re-read). Both nodes serve real HTTP
    /// and run their services.
    @Test func logoutsAnnouncedByAnotherNodeEndCachedTokensAtOnce() async throws {
        guard TestEngine.available.contains(.postgres) else { return }
        let clock = TestClock()
        try await withTwoNodes(mode: .live, clock: clock) { nodeA, nodeB in
            let listening = ChangeSignal()
            let isListening = Atomic<Bool>(false)
            let heard = Mutex<[String]>([])
            let heardSignal = ChangeSignal()
            let changes = nodeB.components.accounts.sessionChanges {
                isListening.store(true, ordering: .releasing)
                listening.notify()
            }
            let watcher = Task {
                for await userId in changes {
                    heard.withLock { $0.append(userId) }
                    heardSignal.notify()
                }
            }
            defer { watcher.cancel() }
            try await listening.wait("node B listening on cairn_sessions", timeout: .seconds(20)) {
                isListening.load(ordering: .acquiring)
            }

            let (user, phone) = try await nodeA.client.registerAndLogin(email: "cached-nodes@example.com")
            let laptop = try await nodeA.client.login(email: "cached-nodes@example.com", password: "correct horse battery")
            for token in [phone.accessToken, laptop.accessToken] {
                #expect(try await nodeB.client.json(.get, "/users/me", token: token).status == .ok)
                #expect(nodeB.components.accounts.tokens.isCached(token))
            }

            #expect(try await nodeA.client.json(.post, "/auth/logout", ["refreshToken": phone.refreshToken]).status == .noContent)
            try await heardSignal.wait("node B hearing the logout", timeout: .seconds(20)) {
                heard.withLock { $0.count } >= 1
            }
            #expect(heard.withLock { $0 } == [user.id])
            #expect(try await nodeB.client.json(.get, "/users/me", token: phone.accessToken).status == .unauthorized)
            #expect(try await nodeB.client.json(.get, "/users/me", token: laptop.accessToken).status == .ok)

            #expect(try await nodeA.client.json(.post, "/auth/logout-all", token: laptop.accessToken).status == .noContent)
            try await heardSignal.wait("node B hearing the logout-all", timeout: .seconds(20)) {
                heard.withLock { $0.count } >= 2
            }
            #expect(try await nodeB.client.json(.get, "/users/me", token: laptop.accessToken).status == .unauthorized)
        }
    }

    /// The bound when node B misses the announcement (it runs no services, so it listens to
    /// nothing): B keeps accepting a cached token of a session node A logged out only until
    /// its session guard's entry for the user is older than its 2 s refresh interval, on B's
    /// clock; the first request after that re-reads the session and is refused. README's
    /// "Access-token checks" states this bound.
    @Test func withoutTheAnnouncementAnotherNodeRefusesALoggedOutTokenAfterTwoSeconds() async throws {
        guard TestEngine.available.contains(.postgres) else { return }
        let clock = TestClock()
        try await withTestDatabase(.postgres) { database in
            try await withTestApp(on: database, mode: .live, clock: clock, runServices: false) { nodeA in
                try await withTestApp(on: database, mode: .live, clock: clock, runServices: false) { nodeB in
                    let tokens = try await nodeA.client.registerAndLogin(email: "missed-logout@example.com").tokens
                    #expect(try await nodeB.client.json(.get, "/users/me", token: tokens.accessToken).status == .ok)
                    #expect(nodeB.components.accounts.tokens.isCached(tokens.accessToken))
                    #expect(try await nodeA.client.json(.post, "/auth/logout", ["refreshToken": tokens.refreshToken]).status == .noContent)
                    #expect(try await nodeA.client.json(.get, "/users/me", token: tokens.accessToken).status == .unauthorized)
                    clock.advance(by: .milliseconds(1_999))
                    #expect(
                        try await nodeB.client.json(.get, "/users/me", token: tokens.accessToken).status == .ok,
                        "within the bound, B has not heard of the logout")
                    clock.advance(by: .milliseconds(2))
                    let refused = try await nodeB.client.json(.get, "/users/me", token: tokens.accessToken)
                    #expect(refused.status == .unauthorized)
                    #expect(refused.code == "invalid_token")
                }
            }
        }
    }

    /// After `cairn keys rotate` a cached token signed by the previous key still works (the
    /// key stays in the ring); once that key is removed from the ring file, the node refuses
    /// the token within the 5 s re-read interval, though it was cached.
    @Test(arguments: TestEngine.available)
    func aCachedTokenStopsWhenItsKeyIsRemovedFromTheRing(engine: TestEngine) async throws {
        let clock = TestClock()
        try await withTestApp(engine, owner: "cached-key@example.com", clock: clock) { app, token in
            let client = app.client
            #expect(try await client.json(.get, "/users/me", token: token).status == .ok)
            #expect(app.components.accounts.tokens.isCached(token))
            let keyFile = app.components.accounts.tokens.settings.keyFile
            let oldKid = try #require(Forge.parts(token).header["kid"] as? String)

            let newKid = try await TokenService.rotate(app.components.accounts.tokens.settings)
            clock.advance(by: .seconds(6))
            #expect(try await client.json(.get, "/users/me", token: token).status == .ok, "the old key is still in the ring")

            // Remove the old key by hand (what an operator does with a leaked key): from the
            // database's ring on PostgreSQL, from the key file on SQLite.
            if engine == .postgres {
                try await app.components.database.write { db in
                    try await db.raw("DELETE FROM signing_keys WHERE kid = \(bind: oldKid)").run()
                }
            } else {
                var ring = try #require(
                    try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: keyFile))) as? [String: Any])
                let keys = try #require(ring["keys"] as? [[String: Any]])
                ring["keys"] = keys.filter { $0["kid"] as? String != oldKid }
                try JSONSerialization.data(withJSONObject: ring).write(to: URL(fileURLWithPath: keyFile))
            }
            clock.advance(by: .seconds(6))

            let refused = try await client.json(.get, "/users/me", token: token)
            #expect(refused.status == .unauthorized)
            #expect(refused.code == "invalid_token")
            let fresh = try await client.login(email: "cached-key@example.com", password: "correct horse battery").accessToken
            #expect(Forge.parts(fresh).header["kid"] as? String == newKid)
            #expect(try await client.json(.get, "/users/me", token: fresh).status == .ok)
        }
    }

    /// A token whose signature differs from a cached token's (same header and claims) is
    /// verified on its own, and refused.
    @Test(arguments: TestEngine.available)
    func aTamperedSignatureIsRefusedWhileTheGenuineTokenIsCached(engine: TestEngine) async throws {
        try await withTestApp(engine, owner: "cached-forge@example.com") { client, components, token in
            #expect(try await client.json(.get, "/users/me", token: token).status == .ok)
            #expect(components.accounts.tokens.isCached(token))
            var bytes = Array(token.utf8)
            let index = bytes.count - 20  // mid-signature: every bit of that character counts
            bytes[index] = bytes[index] == UInt8(ascii: "A") ? UInt8(ascii: "B") : UInt8(ascii: "A")
            let forged = String(decoding: bytes, as: UTF8.self)
            let refused = try await client.json(.get, "/users/me", token: forged)
            #expect(refused.status == .unauthorized)
            #expect(refused.code == "invalid_token")
            #expect(!components.accounts.tokens.isCached(forged))
            #expect(try await client.json(.get, "/users/me", token: token).status == .ok)
        }
    }

    /// The cache holds at most its capacity, evicting the oldest insertion, and is keyed by
    /// the token's SHA-256, not its text.
    @Test func theCacheIsBoundedAndEvictsTheOldestEntry() {
        var cache = VerifiedTokenCache(capacity: 3)
        let claims = (0..<5).map { index in
            AccessTokenClaims(
                iss: "cairn", aud: "cairn-api", sub: UUIDv7.make(), tid: UUIDv7.make(), role: "member", sid: UUIDv7.make(), iat: 0,
                exp: 900, jti: "token-\(index)")
        }
        let keys = claims.map { VerifiedTokenCache.key($0.jti) }
        #expect(keys[0] == SHA256.hash(data: Array("token-0".utf8)))
        for index in 0..<3 { cache.insert(claims[index], for: keys[index]) }
        cache.insert(claims[1], for: keys[1])  // already there: takes no slot, evicts nothing
        #expect(cache.count == 3)
        cache.insert(claims[3], for: keys[3])
        #expect(cache.count == 3)
        #expect(cache.claims(for: keys[0]) == nil, "the oldest entry was evicted")
        #expect(cache.claims(for: keys[1]) == claims[1])
        #expect(cache.claims(for: keys[3]) == claims[3])
        cache.insert(claims[4], for: keys[4])
        #expect(cache.count == 3)
        #expect(cache.claims(for: keys[1]) == nil)
        cache.removeAll()
        #expect(cache.count == 0)
        cache.insert(claims[0], for: keys[0])
        #expect(cache.claims(for: keys[0]) == claims[0])
    }
}
