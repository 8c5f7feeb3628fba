import CairnHTTP
import CairnStorage
import CairnTestSupport
import Foundation
import HTTPTypes
import SQLKit
import Testing

@testable import CairnAccounts

@Suite("AccountStore on both engines")
struct AccountStoreTests {
    /// Which answer a rotation gave, without its payload.
    enum Outcome { case rotated, reused, invalid }

    /// Expects rotating `token` (its successor valid for an hour, no reuse interval) to give
    /// `expected`; returns the successor when it rotated.
    @discardableResult
    func expectRotation(
        _ store: AccountStore, _ token: String, gives expected: Outcome, _ comment: Comment, sourceLocation: SourceLocation = #_sourceLocation
    ) async throws -> String? {
        var successor: String?
        let outcome: Outcome
        switch try await store.rotate(token: token, salt: UUIDv7.make(), reuseIntervalMs: 0, ttl: 3600) {
        case .rotated(_, _, _, let next):
            successor = next
            outcome = .rotated
        case .reused: outcome = .reused
        case .invalid: outcome = .invalid
        }
        #expect(outcome == expected, comment, sourceLocation: sourceLocation)
        return successor
    }

    func owner(tenantId: String, email: String) -> User {
        let now = WallClock.milliseconds()
        return User(id: UUIDv7.make(), tenantId: tenantId, email: email, name: "Owner", role: .owner, version: 1, createdAt: now, updatedAt: now)
    }

    @Test(arguments: TestEngine.available)
    func aTenantExistsOnceCreated(engine: TestEngine) async throws {
        try await withStoreDatabase(engine) { database in
            let store = AccountStore(database: database)
            let tenant = try await Factory.tenant(on: database, name: "Acme")
            #expect(try await store.tenantExists(tenant.id))
            #expect(try await !store.tenantExists(UUIDv7.make()))
        }
    }

    @Test(arguments: TestEngine.available)
    func aTenantAndItsOwnerAreCreatedTogetherOrNotAtAll(engine: TestEngine) async throws {
        try await withStoreDatabase(engine) { database in
            let store = AccountStore(database: database)
            let first = owner(tenantId: UUIDv7.make(), email: "Owner@Example.com")
            try await store.createTenant(name: "First", owner: first, passwordHash: "hash-1", emailKey: "owner@example.com")
            #expect(try await store.tenantExists(first.tenantId))
            #expect(try await store.user(id: first.id, tenantId: first.tenantId) == first)

            // The same email key for a new tenant: 409, and the new tenant's row is rolled back too.
            let second = owner(tenantId: UUIDv7.make(), email: "OWNER@example.com")
            await expectAppError(.conflict) {
                try await store.createTenant(name: "Second", owner: second, passwordHash: "hash-2", emailKey: "owner@example.com")
            }
            #expect(try await !store.tenantExists(second.tenantId))
            let credentials = try await store.credentials(emailKey: "owner@example.com")
            #expect(credentials?.user == first)
            #expect(credentials?.passwordHash == "hash-1")
            #expect(try await store.credentials(emailKey: "nobody@example.com") == nil)
        }
    }

    @Test(arguments: TestEngine.available)
    func emailsAreUniqueAcrossTenantsIgnoringCase(engine: TestEngine) async throws {
        try await withStore(engine, { AccountStore(database: $0) }) { store, a, b, database in
            let taken = try await Factory.user(on: database, tenant: a, email: "Same@Example.com")
            await expectAppError(.conflict) { try await Factory.user(on: database, tenant: b, email: "same@EXAMPLE.com") }
            let users = try await store.users(tenantId: b.id, page: PageRequest(limit: 10))
            #expect(users.items.isEmpty)
            #expect(try await store.passwordHash(userId: taken.id) == "not-a-real-hash")
        }
    }

    @Test(arguments: TestEngine.available)
    func anotherTenantsUserIsInvisibleAndUntouchable(engine: TestEngine) async throws {
        try await withStore(engine, { AccountStore(database: $0) }) { store, mine, theirs, database in
            let user = try await Factory.user(on: database, tenant: theirs, name: "Theirs")

            #expect(try await store.user(id: user.id, tenantId: mine.id) == nil)
            #expect(try await store.user(id: "not-a-uuid", tenantId: theirs.id) == nil)
            #expect(try await store.users(tenantId: mine.id, page: PageRequest()).items.isEmpty)
            let renamed = try await store.updateUser(
                id: user.id, tenantId: mine.id, expectedVersion: nil, name: "Mine now", email: nil, role: .owner)
            #expect(renamed == nil)
            #expect(try await !store.deleteUser(id: user.id, tenantId: mine.id, expectedVersion: nil))
            #expect(try await store.user(id: user.id, tenantId: theirs.id) == user)
        }
    }

    @Test(arguments: TestEngine.available)
    func usersPageOldestFirstWithinTheirTenant(engine: TestEngine) async throws {
        try await withStore(engine, { AccountStore(database: $0) }) { store, tenant, other, database in
            let made = try await rows(5, in: tenant, beside: other) { owner, index in
                try await Factory.user(on: database, tenant: owner, name: "User \(index)")
            }
            try await expectListing(limit: 2, made.map(\.id), id: \.id) { try await store.users(tenantId: tenant.id, page: $0) }
            // A listing that ends exactly at a page boundary has no empty last page.
            let exact = try await allPages(limit: 5) { try await store.users(tenantId: tenant.id, page: $0) }
            #expect(exact.count == 1)
            #expect(exact.first == made)
        }
    }

    @Test(arguments: TestEngine.available)
    func updatesApplyOnlyAtTheExpectedVersion(engine: TestEngine) async throws {
        try await withStore(engine, { AccountStore(database: $0) }) { store, tenant, _, database in
            let user = try await Factory.user(on: database, tenant: tenant, name: "Before")
            let other = try await Factory.user(on: database, tenant: tenant, email: "taken@example.com")

            let stale = try await store.updateUser(id: user.id, tenantId: tenant.id, expectedVersion: 7, name: "Stale", email: nil, role: nil)
            #expect(stale == nil)
            #expect(try await store.user(id: user.id, tenantId: tenant.id)?.name == "Before")

            let updated = try await store.updateUser(
                id: user.id, tenantId: tenant.id, expectedVersion: 1, name: "After", email: ("New@Example.com", "new@example.com"), role: .admin)
            #expect(updated?.version == 2)
            #expect(updated?.name == "After")
            #expect(updated?.email == "New@Example.com")
            #expect(updated?.role == .admin)
            #expect(updated?.createdAt == user.createdAt)
            #expect(try await store.user(id: user.id, tenantId: tenant.id) == updated)
            #expect(try await store.credentials(emailKey: "new@example.com")?.user.id == user.id)

            await expectAppError(.conflict) {
                try await store.updateUser(
                    id: user.id, tenantId: tenant.id, expectedVersion: nil, name: nil, email: ("TAKEN@example.com", "taken@example.com"), role: nil)
            }
            #expect(try await store.user(id: user.id, tenantId: tenant.id) == updated)
            #expect(try await store.credentials(emailKey: "taken@example.com")?.user.id == other.id)
        }
    }

    @Test(arguments: TestEngine.available)
    func aTenantKeepsAtLeastOneOwner(engine: TestEngine) async throws {
        try await withStore(engine, { AccountStore(database: $0) }) { store, tenant, _, database in
            let first = try await Factory.user(on: database, tenant: tenant, role: .owner)
            let second = try await Factory.user(on: database, tenant: tenant, role: .member)
            // Another tenant's owner does not count.
            _ = try await Factory.user(on: database, tenant: try await Factory.tenant(on: database), role: .owner)

            await expectAppError(.conflict) {
                try await store.updateUser(
                    id: first.id, tenantId: tenant.id, expectedVersion: nil, name: nil, email: nil, role: .member, keepingAnOwner: true)
            }
            await expectAppError(.conflict) {
                try await store.deleteUser(id: first.id, tenantId: tenant.id, expectedVersion: nil, keepingAnOwner: true)
            }
            #expect(try await store.user(id: first.id, tenantId: tenant.id)?.role == .owner)

            _ = try await store.updateUser(id: second.id, tenantId: tenant.id, expectedVersion: nil, name: nil, email: nil, role: .owner)
            let demoted = try await store.updateUser(
                id: first.id, tenantId: tenant.id, expectedVersion: nil, name: nil, email: nil, role: .member, keepingAnOwner: true)
            #expect(demoted?.role == .member)
            await expectAppError(.conflict) {
                try await store.updateUser(
                    id: second.id, tenantId: tenant.id, expectedVersion: nil, name: nil, email: nil, role: .admin, keepingAnOwner: true)
            }
            #expect(try await store.user(id: second.id, tenantId: tenant.id)?.role == .owner)
        }
    }

    @Test(arguments: TestEngine.available)
    func deletingAUserEndsTheirSessions(engine: TestEngine) async throws {
        try await withStore(engine, { AccountStore(database: $0) }) { store, tenant, _, database in
            let user = try await Factory.user(on: database, tenant: tenant)
            let bystander = try await Factory.user(on: database, tenant: tenant)
            _ = try await store.startSession(token: "user-token", userId: user.id, tenantId: tenant.id, ttl: 3600)
            _ = try await store.startSession(token: "bystander-token", userId: bystander.id, tenantId: tenant.id, ttl: 3600)

            #expect(try await !store.deleteUser(id: user.id, tenantId: tenant.id, expectedVersion: 2))
            #expect(try await store.user(id: user.id, tenantId: tenant.id) != nil)
            #expect(try await store.deleteUser(id: user.id, tenantId: tenant.id, expectedVersion: 1))
            #expect(try await store.user(id: user.id, tenantId: tenant.id) == nil)
            #expect(try await store.sessionState(userId: user.id)?.tenantId == nil)
            #expect(try await !store.deleteUser(id: user.id, tenantId: tenant.id, expectedVersion: nil))

            try await expectRotation(store, "user-token", gives: .invalid, "a deleted user's refresh token still rotates")
            try await expectRotation(store, "bystander-token", gives: .rotated, "another user's session was ended")
        }
    }

    @Test(arguments: TestEngine.available)
    func refreshTokensRotateOnceAndReuseRevokesTheFamily(engine: TestEngine) async throws {
        try await withStore(engine, { AccountStore(database: $0) }) { store, tenant, _, database in
            let user = try await Factory.user(on: database, tenant: tenant)
            let family = try await store.startSession(token: "first", userId: user.id, tenantId: tenant.id, ttl: 3600)

            guard
                case .rotated(let rotatedFamily, let userId, let tenantId, let second) = try await store.rotate(
                    token: "first", salt: "salt-1", reuseIntervalMs: 0, ttl: 3600)
            else {
                Issue.record("a fresh refresh token did not rotate")
                return
            }
            #expect(rotatedFamily == family)
            #expect(userId == user.id)
            #expect(tenantId == tenant.id)

            // Presenting "first" again is reuse: the whole family, "second" included, is revoked.
            guard case .reused(let reuser) = try await store.rotate(token: "first", salt: "salt-2", reuseIntervalMs: 0, ttl: 3600) else {
                Issue.record("a used refresh token was not treated as reuse")
                return
            }
            #expect(reuser == user.id)
            try await expectRotation(store, second, gives: .invalid, "the successor of a reused token still rotates")
            try await expectRotation(store, "never-issued", gives: .invalid, "an unknown token rotated")
        }
    }

    @Test(arguments: TestEngine.available)
    func anExpiredRefreshTokenIsInvalidNotReuse(engine: TestEngine) async throws {
        try await withStore(engine, { AccountStore(database: $0) }) { store, tenant, _, database in
            let user = try await Factory.user(on: database, tenant: tenant)
            _ = try await store.startSession(token: "expired", userId: user.id, tenantId: tenant.id, ttl: -1)
            _ = try await store.startSession(token: "sibling", userId: user.id, tenantId: tenant.id, ttl: 3600)
            try await expectRotation(store, "expired", gives: .invalid, "an expired refresh token rotated or counted as reuse")
            // Not reuse: the user's other sessions live on.
            try await expectRotation(store, "sibling", gives: .rotated, "an expired token revoked another session")
        }
    }

    @Test(arguments: TestEngine.available)
    func revokingAFamilyOrEverySessionEndsThem(engine: TestEngine) async throws {
        try await withStore(engine, { AccountStore(database: $0) }) { store, tenant, _, database in
            let user = try await Factory.user(on: database, tenant: tenant, role: .admin)
            _ = try await store.startSession(token: "laptop", userId: user.id, tenantId: tenant.id, ttl: 3600)
            _ = try await store.startSession(token: "phone", userId: user.id, tenantId: tenant.id, ttl: 3600)
            _ = try await store.startSession(token: "tablet", userId: user.id, tenantId: tenant.id, ttl: 3600)

            #expect(try await store.revokeFamily(ofToken: "laptop") == user.id)
            #expect(try await store.revokeFamily(ofToken: "never-issued") == nil)
            try await expectRotation(store, "laptop", gives: .invalid, "a revoked family still rotates")
            let phone = try await expectRotation(store, "phone", gives: .rotated, "revoking one family revoked another")

            let state = try await store.sessionState(userId: user.id)
            #expect(state?.role == .admin)
            #expect(state?.tenantId == tenant.id)
            #expect(state?.validAfter == 0)
            try await store.revokeAllSessions(userId: user.id, at: 1_234_567)
            #expect(try await store.sessionState(userId: user.id)?.validAfter == 1_234_567)
            for token in [phone ?? "phone", "tablet"] {
                try await expectRotation(store, token, gives: .invalid, "\(token) survived revoking every session")
            }
        }
    }

    @Test(arguments: TestEngine.available)
    func loginAttemptsAreAdmittedPerEmailAndClientWithinTheWindow(engine: TestEngine) async throws {
        try await withStoreDatabase(engine) { database in
            let store = AccountStore(database: database)
            func admit(_ email: String, _ client: String, at now: Int64, window: Int64 = 10_000) async throws -> AccountStore.Admission {
                try await store.admitLoginAttempt(emailKey: email, client: client, now: now, windowMs: window, perEmail: 2, perClient: 3)
            }
            guard case .admitted(let first) = try await admit("a@example.com", "192.0.2.1", at: 1_000) else { Issue.record("first refused"); return }
            guard case .admitted(let second) = try await admit("a@example.com", "192.0.2.1", at: 1_100) else {
                Issue.record("second refused")
                return
            }
            // Both still being checked: the limit is reached for a moment only.
            #expect(try await admit("a@example.com", "192.0.2.1", at: 1_200) == .limited(retryAfter: 1, limit: 2))
            try await store.settleLoginFailure(first, now: 1_300)
            try await store.settleLoginFailure(second, now: 1_300)
            // Found wrong, they are failures: the email's limit from this client is reached, and
            // Retry-After runs to when its oldest attempt leaves the window.
            #expect(try await admit("a@example.com", "192.0.2.1", at: 2_000) == .limited(retryAfter: 9, limit: 2))
            // Another client that has not failed for this email is not locked out by them.
            guard case .admitted = try await admit("a@example.com", "192.0.2.2", at: 2_000) else { Issue.record("lockout"); return }
            guard case .admitted(let third) = try await admit("b@example.com", "192.0.2.3", at: 1_500) else {
                Issue.record("other email refused")
                return
            }
            guard case .admitted(let fourth) = try await admit("c@example.com", "192.0.2.3", at: 1_600) else { Issue.record("refused"); return }
            guard case .admitted(let fifth) = try await admit("e@example.com", "192.0.2.3", at: 1_650) else { Issue.record("refused"); return }
            for attempt in [third, fourth, fifth] { try await store.settleLoginFailure(attempt, now: 1_660) }
            // 192.0.2.3 has three failures: its limit, whatever the email.
            #expect(try await admit("d@example.com", "192.0.2.3", at: 1_700) == .limited(retryAfter: 10, limit: 3))
            // A released attempt no longer counts.
            try await store.releaseLoginAttempt(third)
            guard case .admitted = try await admit("d@example.com", "192.0.2.3", at: 1_800) else { Issue.record("release ignored"); return }
            // The window is open at its start: attempts at or before now − window are outside (and pruned).
            guard case .admitted = try await admit("a@example.com", "192.0.2.1", at: 11_000) else { Issue.record("window ignored"); return }
            // A success clears only that client's failures for the email.
            try await store.clearFailures(emailKey: "a@example.com", client: "192.0.2.1")
            let left = try await database.read { db in
                try await db.raw("SELECT email_key, client FROM login_failures ORDER BY at").all().map {
                    (try $0.decode(column: "email_key", as: String.self), try $0.decode(column: "client", as: String.self))
                }
            }
            #expect(left.map(\.0) == ["c@example.com", "e@example.com", "d@example.com", "a@example.com"])
            #expect(left.last?.1 == "192.0.2.2")
        }
    }

    @Test(arguments: TestEngine.available)
    func attemptsAreAdmittedPerBucketWithinTheWindow(engine: TestEngine) async throws {
        try await withStoreDatabase(engine) { database in
            let store = AccountStore(database: database)
            guard case .admitted(let first) = try await store.admitAttempt(bucket: "register:192.0.2.1", now: 1_000, windowMs: 5_000, limit: 1)
            else {
                Issue.record("first refused")
                return
            }
            #expect(
                try await store.admitAttempt(bucket: "register:192.0.2.1", now: 2_000, windowMs: 5_000, limit: 1) == .limited(retryAfter: 4, limit: 1)
            )
            guard case .admitted = try await store.admitAttempt(bucket: "register:192.0.2.2", now: 2_000, windowMs: 5_000, limit: 1) else {
                Issue.record("other bucket refused")
                return
            }
            try await store.releaseAttempt(first)
            guard case .admitted = try await store.admitAttempt(bucket: "register:192.0.2.1", now: 2_000, windowMs: 5_000, limit: 1) else {
                Issue.record("release ignored")
                return
            }
        }
    }
}
