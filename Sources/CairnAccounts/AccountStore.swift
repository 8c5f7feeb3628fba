package import CairnHTTP
package import CairnStorage
import Crypto
import Foundation
package import SQLKit

/// SQL for the accounts module's tables, written once against SQLKit for both engines.
package struct AccountStore: Sendable {
    /// The database.
    package let database: Database
    /// The time rows are stamped with and refresh tokens expire by.
    let clock: any CairnClock

    /// Creates a store; `clock` stamps rows and decides refresh-token expiry.
    package init(database: Database, clock: any CairnClock = SystemClock()) {
        self.database = database
        self.clock = clock
    }

    static let userColumns = "id, tenant_id, email, name, role, version, created_at, updated_at, phone, locale"

    static func user(from row: any SQLRow) throws -> User {
        User(
            id: try row.decode(column: "id", as: String.self),
            tenantId: try row.decode(column: "tenant_id", as: String.self),
            email: try row.decode(column: "email", as: String.self),
            name: try row.decode(column: "name", as: String.self),
            role: Role(rawValue: try row.decode(column: "role", as: String.self)) ?? .member,
            phone: try row.decode(column: "phone", as: String?.self), locale: try row.decode(column: "locale", as: String?.self),
            version: try row.decode(column: "version", as: Int.self),
            createdAt: try row.decode(column: "created_at", as: Int64.self),
            updatedAt: try row.decode(column: "updated_at", as: Int64.self))
    }

    /// A user from a positional row holding `userColumns` in order.
    static func user(from row: PositionalRow) throws -> User {
        User(
            id: try row.string(0), tenantId: try row.string(1), email: try row.string(2), name: try row.string(3),
            role: Role(rawValue: try row.string(4)) ?? .member, phone: try row.optionalString(8), locale: try row.optionalString(9),
            version: try row.int(5), createdAt: try row.int64(6), updatedAt: try row.int64(7))
    }

    // MARK: Tenants and users

    /// Inserts a tenant and its owner in one transaction.
    /// - Throws: 409 `conflict` when the email is taken.
    func createTenant(name: String, owner: User, passwordHash: String, emailKey: String) async throws {
        do {
            try await database.transaction { db in
                try await db.raw(
                    "INSERT INTO tenants (id, name, created_at) VALUES (\(bind: owner.tenantId), \(bind: name), \(bind: owner.createdAt))"
                ).run()
                try await Self.insertUser(db, owner, passwordHash: passwordHash, emailKey: emailKey)
            }
        } catch  where Database.isUniqueViolation(error) {
            throw AppError.conflict("An account with this email already exists.")
        }
    }

    /// Creates a tenant without users (operator command).
    package func createTenant(name: String) async throws -> String {
        let id = UUIDv7.make()
        try await database.write { db in
            try await db.raw("INSERT INTO tenants (id, name, created_at) VALUES (\(bind: id), \(bind: name), \(bind: clock.milliseconds))")
                .run()
        }
        return id
    }

    /// True when the tenant exists.
    package func tenantExists(_ id: String) async throws -> Bool {
        try await database.read { db in
            try await db.raw("SELECT id FROM tenants WHERE id = \(bind: id)").first() != nil
        }
    }

    /// Inserts a user into an existing tenant.
    /// - Throws: 409 `conflict` when the email is taken.
    func insertUser(_ user: User, passwordHash: String, emailKey: String) async throws {
        do {
            try await database.write { db in try await Self.insertUser(db, user, passwordHash: passwordHash, emailKey: emailKey) }
        } catch  where Database.isUniqueViolation(error) {
            throw AppError.conflict("An account with this email already exists.")
        }
    }

    private static func insertUser(_ db: any SQLDatabase, _ user: User, passwordHash: String, emailKey: String) async throws {
        try await db.raw(
            """
            INSERT INTO users (id, tenant_id, email, email_key, name, role, password_hash, sessions_valid_after, version, created_at, updated_at)
            VALUES (\(bind: user.id), \(bind: user.tenantId), \(bind: user.email), \(bind: emailKey), \(bind: user.name),
                    \(bind: user.role.rawValue), \(bind: passwordHash), 0, 1, \(bind: user.createdAt), \(bind: user.updatedAt))
            """
        ).run()
    }

    /// The user with this email key and their password hash, for login.
    func credentials(emailKey: String) async throws -> (user: User, passwordHash: String)? {
        try await database.read { db in
            guard
                let row = try await db.raw("SELECT \(unsafeRaw: Self.userColumns), password_hash FROM users WHERE email_key = \(bind: emailKey)")
                    .first()
            else { return nil }
            return (try Self.user(from: row), try row.decode(column: "password_hash", as: String.self))
        }
    }

    /// The password hash of a user.
    func passwordHash(userId: String) async throws -> String? {
        try await database.read { db in
            try await db.raw("SELECT password_hash FROM users WHERE id = \(bind: userId)").first()?.decode(column: "password_hash", as: String.self)
        }
    }

    /// The tenant of each of `ids` that is a user: one read for many recipients (a batch of
    /// publishes checks all its recipients' membership at once). Ids that are no user's are
    /// absent from the answer. At most a few hundred ids at a time (each is a bound parameter).
    /// - Returns: user id → tenant id.
    package func tenants(ofUsers ids: [String]) async throws -> [String: String] {
        let ids = ids.filter(UUIDv7.isValid)
        guard !ids.isEmpty else { return [:] }
        let rows = try await database.read { db in
            try await db.select().columns("id", "tenant_id").from("users").where("id", .in, ids).all()
        }
        var tenants: [String: String] = [:]
        for row in rows { tenants[try row.decode(column: "id", as: String.self)] = try row.decode(column: "tenant_id", as: String.self) }
        return tenants
    }

    /// The tenant of each of `ids` that is a user, read on `db` (an open transaction) and kept
    /// a user until that transaction ends: on PostgreSQL the rows are locked `FOR KEY SHARE` in
    /// id order, so a deletion of one of them (which locks the user row `FOR UPDATE` first) waits
    /// for the commit and then erases what the transaction stored for the user, and a deletion
    /// committed before the read leaves the id out; on SQLite the transaction holds the only
    /// writer. Rows written for a user in the same transaction can then never outlive them.
    /// At most a few hundred ids at a time (each is a bound parameter).
    /// - Returns: user id → tenant id; ids that are no user's are absent.
    /// - Throws: database errors.
    package static func lockedTenants(ofUsers ids: [String], on db: any SQLDatabase) async throws -> [String: String] {
        let ids = Array(Set(ids.filter(UUIDv7.isValid))).sorted()
        guard !ids.isEmpty else { return [:] }
        let lock = db.dialect.name == "postgresql" ? " FOR KEY SHARE" : ""
        let list = SQLList(ids.map { SQLBind($0) })
        let rows = try await db.raw("SELECT id, tenant_id FROM users WHERE id IN (\(list)) ORDER BY id\(unsafeRaw: lock)").all()
        var tenants: [String: String] = [:]
        for row in rows { tenants[try row.decode(column: "id", as: String.self)] = try row.decode(column: "tenant_id", as: String.self) }
        return tenants
    }

    /// A user of the given tenant, or nil (also for other tenants' users).
    package func user(id: String, tenantId: String) async throws -> User? {
        guard UUIDv7.isValid(id) else { return nil }
        return try await database.readRows(UserByID.self, [.text(id), .text(tenantId)], Self.user(from:)).first
    }

    /// A user by id within a tenant (`GET /users/me` on every call): prepared once per
    /// PostgreSQL connection, read by position.
    enum UserByID: PreparedRead {
        static let name = "cairn_accounts_user_by_id"
        static let sql = "SELECT \(userColumns) FROM users WHERE id = $1 AND tenant_id = $2"
    }

    /// A page of a tenant's users, oldest first (for trusted callers: no role check).
    package func users(tenantId: String, page: PageRequest) async throws -> Page<User> {
        let rows = try await database.read { db in
            let after = page.after ?? ""
            return try await db.raw(
                "SELECT \(unsafeRaw: Self.userColumns) FROM users WHERE tenant_id = \(bind: tenantId) AND id > \(bind: after) ORDER BY id LIMIT \(bind: page.limit + 1)"
            ).all()
        }
        return Page(fetched: try rows.map(Self.user(from:)), page: page, sortKey: \.id)
    }

    /// Applies a change to a user row if its version still matches; returns the new row, or nil
    /// when the row is gone or the version moved on.
    /// - Throws: 409 `conflict` when the new email is taken.
    /// With `keepingAnOwner`, the change runs in a transaction that first locks the tenant row
    /// (PostgreSQL; SQLite's single writer serializes anyway) and refuses, with 409, to leave the
    /// tenant without another owner: two owners demoting each other at once cannot both win.
    /// `phone` and `locale`: nil leaves them, `.some(nil)` clears them.
    func updateUser(
        id: String, tenantId: String, expectedVersion: Int?, name: String?, email: (email: String, key: String)?, role: Role?,
        passwordHash: String? = nil, revokeSessionsAt: Int64? = nil, keepingAnOwner: Bool = false, phone: String?? = nil,
        locale: String?? = nil
    ) async throws -> User? {
        let row = VersionedRow(table: "users", id: id, tenantId: tenantId, expectedVersion: expectedVersion)
        // Nothing to change (PATCH `{}`): no write, so `version`, `ETag` and `updatedAt` stay.
        if name == nil, email == nil, role == nil, phone == nil, locale == nil, passwordHash == nil, revokeSessionsAt == nil {
            return row.unchanged(try await user(id: id, tenantId: tenantId))
        }
        let now = clock.milliseconds
        do {
            return try await withOwnerGuard(tenantId: tenantId, userId: id, enabled: keepingAnOwner) { db in
                // Values equal to the stored ones change nothing: the version and `updatedAt` stay.
                var sets = VersionedAssignments()
                if let name { sets.set("name", name) }
                if let email {
                    sets.set("email", email.email)
                    sets.set("email_key", email.key)
                }
                if let role { sets.set("role", role.rawValue) }
                if let phone { sets.set("phone", phone) }
                if let locale { sets.set("locale", locale) }
                if let passwordHash { sets.set("password_hash", passwordHash) }
                if let revokeSessionsAt { sets.set("sessions_valid_after", revokeSessionsAt) }
                return try await db.raw(row.update(sets, now: now, returning: Self.userColumns)).first().map(Self.user(from:))
            }
        } catch  where Database.isUniqueViolation(error) {
            throw AppError.conflict("An account with this email already exists.")
        }
    }

    /// Runs `body` in a transaction; when `enabled`, the tenant row is locked first and the
    /// call fails with 409 unless an owner other than `userId` remains.
    private func withOwnerGuard<R: Sendable>(
        tenantId: String, userId: String, enabled: Bool, _ body: @escaping @Sendable (any SQLDatabase) async throws -> R
    ) async throws -> R {
        let dialect = database.dialect
        return try await database.transaction { db in
            if enabled {
                if dialect == .postgres {
                    try await db.raw("SELECT id FROM tenants WHERE id = \(bind: tenantId) FOR UPDATE").run()
                }
                let others =
                    try await db.raw(
                        "SELECT COUNT(*) AS n FROM users WHERE tenant_id = \(bind: tenantId) AND role = 'owner' AND id <> \(bind: userId)"
                    ).first()?.decode(column: "n", as: Int.self) ?? 0
                if others == 0 { throw AppError.conflict("A tenant must keep at least one owner.") }
            }
            return try await body(db)
        }
    }

    /// Deletes a user and everything that is theirs alone (``DataErasure/userTables``, refresh
    /// tokens, throttling rows) in one transaction; false when no such user in the tenant.
    /// With `keepingAnOwner`, refuses with 409 to leave the tenant without an owner.
    func deleteUser(
        id: String, tenantId: String, expectedVersion: Int?, keepingAnOwner: Bool = false, erasure: DataErasure = DataErasure()
    ) async throws -> Bool {
        let dialect = database.dialect
        return try await withOwnerGuard(tenantId: tenantId, userId: id, enabled: keepingAnOwner) { db in
            // Rotations lock the user row too: none can commit a successor after this.
            try await Self.lockSessions(db, dialect: dialect, userId: id)
            let target = VersionedRow(table: "users", id: id, tenantId: tenantId, expectedVersion: expectedVersion)
            guard let row = try await db.raw(target.delete(returning: "email_key")).first() else { return false }
            try await Self.erasePersonalRows(
                db, userId: id, emailKey: try row.decode(column: "email_key", as: String.self), tenantId: tenantId, erasure: erasure)
            return true
        }
    }

    /// Deletes the rows that belong to one user: other modules' per-user rows, refresh tokens,
    /// login failures for the email and the password-attempt bucket.
    static func erasePersonalRows(_ db: any SQLDatabase, userId: String, emailKey: String, tenantId: String, erasure: DataErasure) async throws {
        // Table names come from code (``DataErasure``), never from a request.
        for table in erasure.userTables {
            try await db.raw("DELETE FROM \(unsafeRaw: table) WHERE tenant_id = \(bind: tenantId) AND user_id = \(bind: userId)").run()
        }
        try await db.raw("DELETE FROM refresh_tokens WHERE user_id = \(bind: userId)").run()
        try await db.raw("DELETE FROM login_failures WHERE email_key = \(bind: emailKey)").run()
        try await db.raw("DELETE FROM auth_attempts WHERE bucket = \(bind: "password:" + userId)").run()
    }

    /// Deletes a tenant with all its data (every table of ``DataErasure/tenantTables``, its
    /// service tokens, users and their personal rows) in one transaction, when `ownerId` is its
    /// last owner.
    /// - Returns: the ids of the users deleted.
    /// - Throws: 409 `conflict` when another owner remains, 404 when `ownerId` is not an owner of it.
    func deleteTenant(id tenantId: String, ownerId: String, erasure: DataErasure) async throws -> [String] {
        let dialect = database.dialect
        return try await database.transaction { db in
            if dialect == .postgres {
                try await db.raw("SELECT id FROM tenants WHERE id = \(bind: tenantId) FOR UPDATE").run()
            }
            let users = try await db.raw("SELECT id, email_key, role FROM users WHERE tenant_id = \(bind: tenantId) ORDER BY id").all().map {
                (
                    id: try $0.decode(column: "id", as: String.self), emailKey: try $0.decode(column: "email_key", as: String.self),
                    role: try $0.decode(column: "role", as: String.self)
                )
            }
            guard users.contains(where: { $0.id == ownerId && $0.role == Role.owner.rawValue }) else { throw AppError.notFound() }
            if users.contains(where: { $0.id != ownerId && $0.role == Role.owner.rawValue }) {
                throw AppError.conflict("Another owner remains: the tenant is theirs too. Delete your account without tenant=delete.")
            }
            for user in users {
                try await Self.lockSessions(db, dialect: dialect, userId: user.id)
                try await Self.erasePersonalRows(db, userId: user.id, emailKey: user.emailKey, tenantId: tenantId, erasure: erasure)
            }
            for table in erasure.tenantTables {
                try await db.raw("DELETE FROM \(unsafeRaw: table) WHERE tenant_id = \(bind: tenantId)").run()
            }
            try await db.raw("DELETE FROM service_tokens WHERE tenant_id = \(bind: tenantId)").run()
            try await db.raw("DELETE FROM users WHERE tenant_id = \(bind: tenantId)").run()
            try await db.raw("DELETE FROM tenants WHERE id = \(bind: tenantId)").run()
            return users.map(\.id)
        }
    }

    /// How many owners a tenant has.
    func ownerCount(tenantId: String) async throws -> Int {
        try await database.read { db in
            try await db.raw("SELECT COUNT(*) AS n FROM users WHERE tenant_id = \(bind: tenantId) AND role = 'owner'").first()?.decode(
                column: "n", as: Int.self) ?? 0
        }
    }

    /// What the Bearer middleware needs to honour revocations: the current role, the time
    /// before which access tokens are void, and the sessions (refresh-token families, the
    /// tokens' `sid`) revoked after `revokedSince` (epoch ms; older revocations outlive every
    /// access token issued in them). Nil when the user no longer exists.
    func sessionState(userId: String, revokedSince: Int64 = 0) async throws -> (
        role: Role, tenantId: String, validAfter: Int64, revokedSessions: Set<String>
    )? {
        try await database.read { db in
            guard let row = try await db.raw("SELECT role, tenant_id, sessions_valid_after FROM users WHERE id = \(bind: userId)").first() else {
                return nil
            }
            let revoked = try await db.raw(
                "SELECT DISTINCT family_id FROM refresh_tokens WHERE user_id = \(bind: userId) AND revoked_at > \(bind: revokedSince)"
            ).all().map { try $0.decode(column: "family_id", as: String.self) }
            return (
                Role(rawValue: try row.decode(column: "role", as: String.self)) ?? .member,
                try row.decode(column: "tenant_id", as: String.self),
                try row.decode(column: "sessions_valid_after", as: Int64.self),
                Set(revoked)
            )
        }
    }

    // MARK: Refresh tokens

    /// SHA-256 of a refresh token, hex: the only form stored.
    static func hash(_ token: String) -> String {
        SHA256.hash(data: Array(token.utf8)).map { String(format: "%02x", $0) }.joined()
    }

    /// Stores a new refresh token of a family, issued at `now` (epoch ms).
    static func insertRefreshToken(
        _ db: any SQLDatabase, token: String, familyId: String, userId: String, tenantId: String, ttl: Int, now: Int64
    ) async throws {
        try await db.raw(
            """
            INSERT INTO refresh_tokens (id, family_id, user_id, tenant_id, token_hash, created_at, expires_at)
            VALUES (\(bind: UUIDv7.make()), \(bind: familyId), \(bind: userId), \(bind: tenantId), \(bind: Self.hash(token)),
                    \(bind: now), \(bind: now + Int64(ttl) * 1000))
            """
        ).run()
    }

    /// The outcome of presenting a refresh token.
    enum Rotation {
        case rotated(familyId: String, userId: String, tenantId: String, successor: String)
        case reused(userId: String)
        case invalid
    }

    /// The successor of a refresh token rotated with `salt`: HMAC-SHA256 (RFC 2104) keyed by the
    /// token, base64url. Only its SHA-256 is stored, and neither input is, so it can be given
    /// again within the reuse interval without keeping any refresh token in the database.
    static func successor(of token: String, salt: String) -> String {
        let mac = HMAC<SHA256>.authenticationCode(for: Array(salt.utf8), using: SymmetricKey(data: Array(token.utf8)))
        return Base64URL.encode(Array(mac))
    }

    /// Atomically marks the token used (compare-and-set on `used_at IS NULL`), records the
    /// random `salt` its successor is derived from (``successor(of:salt:)``), and stores that
    /// successor in the same transaction.
    ///
    /// A token already used within `reuseIntervalMs` of its rotation (two tabs, a retry after
    /// a lost response) gets the successor its family has now: the chain of successors is
    /// followed, as long as each was rotated within the interval, to the first one not yet
    /// used; when the family was revoked meanwhile (a logout) it is `.invalid`. Any other reuse
    /// revokes the whole family (OAuth 2.0 Security BCP, RFC 9700 §4.14.2).
    func rotate(token: String, salt: String, reuseIntervalMs: Int64, ttl: Int) async throws -> Rotation {
        let hash = Self.hash(token)
        let now = clock.milliseconds
        let dialect = database.dialect
        return try await database.transaction { db in
            // Serialized with the user's logout-all (see ``lockSessions(_:dialect:userId:)``):
            // otherwise, on PostgreSQL, the successor inserted here is not yet visible to a
            // concurrent logout-all's UPDATE, commits after it, and survives as a live session.
            // It also makes a second presentation of the token wait for the first rotation.
            if let owner = try await db.raw("SELECT user_id FROM refresh_tokens WHERE token_hash = \(bind: hash)").first() {
                try await Self.lockSessions(db, dialect: dialect, userId: try owner.decode(column: "user_id", as: String.self))
            }
            if let row = try await db.raw(
                """
                UPDATE refresh_tokens SET used_at = \(bind: now), successor_salt = \(bind: salt)
                WHERE token_hash = \(bind: hash) AND used_at IS NULL AND revoked_at IS NULL AND expires_at > \(bind: now)
                RETURNING family_id, user_id, tenant_id
                """
            ).first() {
                let familyId = try row.decode(column: "family_id", as: String.self)
                let userId = try row.decode(column: "user_id", as: String.self)
                let tenantId = try row.decode(column: "tenant_id", as: String.self)
                let successor = Self.successor(of: token, salt: salt)
                try await Self.insertRefreshToken(
                    db, token: successor, familyId: familyId, userId: userId, tenantId: tenantId, ttl: ttl, now: now)
                return .rotated(familyId: familyId, userId: userId, tenantId: tenantId, successor: successor)
            }
            guard
                let row = try await db.raw(
                    "SELECT family_id, user_id, tenant_id, used_at FROM refresh_tokens WHERE token_hash = \(bind: hash)"
                ).first()
            else {
                return .invalid
            }
            guard let usedAt = try row.decode(column: "used_at", as: Int64?.self) else { return .invalid }
            let familyId = try row.decode(column: "family_id", as: String.self)
            let userId = try row.decode(column: "user_id", as: String.self)
            if reuseIntervalMs > 0, now - usedAt <= reuseIntervalMs {
                guard let successor = try await Self.activeSuccessor(db, of: token, now: now, reuseIntervalMs: reuseIntervalMs) else {
                    // Within the interval the chain can only be broken by a logout (or expiry):
                    // the session ended on purpose, which is no sign of theft.
                    return .invalid
                }
                return .rotated(
                    familyId: familyId, userId: userId, tenantId: try row.decode(column: "tenant_id", as: String.self), successor: successor)
            }
            try await db.raw("UPDATE refresh_tokens SET revoked_at = \(bind: now) WHERE family_id = \(bind: familyId) AND revoked_at IS NULL").run()
            return .reused(userId: userId)
        }
    }

    /// The live, unused successor of `token` when `token` and every successor between were
    /// rotated within `reuseIntervalMs` before `now` and nothing of the chain is revoked or
    /// expired; nil otherwise (reuse). Follows at most 16 links.
    static func activeSuccessor(_ db: any SQLDatabase, of token: String, now: Int64, reuseIntervalMs: Int64) async throws -> String? {
        guard reuseIntervalMs > 0 else { return nil }
        var current = token
        for _ in 0..<16 {
            guard
                let row = try await db.raw(
                    "SELECT used_at, revoked_at, expires_at, successor_salt FROM refresh_tokens WHERE token_hash = \(bind: Self.hash(current))"
                ).first(),
                try row.decodeNil(column: "revoked_at"), try row.decode(column: "expires_at", as: Int64.self) > now
            else { return nil }
            guard let usedAt = try row.decode(column: "used_at", as: Int64?.self) else {
                return current == token ? nil : current
            }
            guard now - usedAt <= reuseIntervalMs, let salt = try row.decode(column: "successor_salt", as: String?.self) else { return nil }
            current = Self.successor(of: current, salt: salt)
        }
        return nil
    }

    /// Revokes the family of a refresh token; returns the family's user, if any.
    func revokeFamily(ofToken token: String) async throws -> String? {
        let hash = Self.hash(token)
        let now = clock.milliseconds
        let dialect = database.dialect
        return try await database.transaction { db in
            guard let row = try await db.raw("SELECT family_id, user_id FROM refresh_tokens WHERE token_hash = \(bind: hash)").first() else {
                return nil
            }
            // A rotation of this family committing after this UPDATE would add a live successor.
            try await Self.lockSessions(db, dialect: dialect, userId: try row.decode(column: "user_id", as: String.self))
            let familyId = try row.decode(column: "family_id", as: String.self)
            try await db.raw("UPDATE refresh_tokens SET revoked_at = \(bind: now) WHERE family_id = \(bind: familyId) AND revoked_at IS NULL").run()
            return try row.decode(column: "user_id", as: String.self)
        }
    }

    /// Revokes every refresh token of a user and voids their access tokens issued before now.
    func revokeAllSessions(userId: String, at now: Int64) async throws {
        let dialect = database.dialect
        try await database.transaction { db in
            // The user's row first (as rotations lock it), then the tokens: no rotation can
            // commit a successor this UPDATE does not see.
            try await Self.lockSessions(db, dialect: dialect, userId: userId)
            try await db.raw("UPDATE users SET sessions_valid_after = \(bind: now) WHERE id = \(bind: userId)").run()
            try await db.raw("UPDATE refresh_tokens SET revoked_at = \(bind: now) WHERE user_id = \(bind: userId) AND revoked_at IS NULL").run()
        }
    }

    /// Serializes, within a transaction, every change to a user's refresh tokens (rotation,
    /// logout, logout-all): on PostgreSQL a row lock on the user (`SELECT … FOR UPDATE`),
    /// always taken before any token row so two of them never wait on each other in a cycle;
    /// under READ COMMITTED each later statement then sees what the previous holder committed.
    /// SQLite needs nothing: `BEGIN IMMEDIATE` already holds the one write lock.
    static func lockSessions(_ db: any SQLDatabase, dialect: Dialect, userId: String) async throws {
        guard dialect == .postgres else { return }
        try await db.raw("SELECT id FROM users WHERE id = \(bind: userId) FOR UPDATE").run()
    }

    /// Starts a session (a new refresh-token family) in the database.
    func startSession(token: String, userId: String, tenantId: String, ttl: Int) async throws -> String {
        let familyId = UUIDv7.make()
        let now = clock.milliseconds
        try await database.write { db in
            try await Self.insertRefreshToken(db, token: token, familyId: familyId, userId: userId, tenantId: tenantId, ttl: ttl, now: now)
        }
        return familyId
    }

    // MARK: Login failures (rate limiting, shared by all nodes)

    /// The outcome of asking to evaluate one more password guess.
    enum Admission: Sendable, Equatable {
        /// The guess may be checked; its row (already counted as a failure) has this id.
        case admitted(attemptId: String)
        /// Too many recent failures: `retryAfter` seconds until the oldest leaves the window,
        /// and the limit that was reached.
        case limited(retryAfter: Int, limit: Int)
    }

    /// Serializes throttling decisions on `keys` within a transaction: PostgreSQL transaction
    /// advisory locks, taken in sorted order so two callers never wait on each other in a
    /// cycle; SQLite needs nothing, as `BEGIN IMMEDIATE` already holds the one write lock.
    static func lockThrottleKeys(_ db: any SQLDatabase, dialect: Dialect, _ keys: [String]) async throws {
        guard dialect == .postgres else { return }
        for key in keys.sorted() {
            try await db.raw("SELECT pg_advisory_xact_lock(hashtextextended(\(bind: key), 0))").run()
        }
    }

    /// Atomically checks the recent failures of an email key from this client address, and of
    /// the client address over every email, and, when both are below their limits, records this
    /// attempt as a failure before any bcrypt work. The email's counter is per client (OWASP
    /// Authentication Cheat Sheet, account lockout): failures from one address never lock the
    /// account for another address that has not failed, so nobody can lock anybody out.
    /// Concurrent guesses are counted one by one: the check and the insert hold a lock per key
    /// (see ``lockThrottleKeys(_:dialect:_:)``), so exactly `perEmail` guesses for one email
    /// from one client get evaluated in a window however many arrive at once. A correct password
    /// later clears that client's rows for the email; an attempt that could not be evaluated is
    /// released. An admitted attempt is in flight until its password is found wrong
    /// (``settleLoginFailure(_:now:)``) or 30 s pass: a burst refused only because of attempts in
    /// flight (concurrent logins with the right password, say) is told to retry after 1 s, not
    /// after the window.
    func admitLoginAttempt(emailKey: String, client: String, now: Int64, windowMs: Int64, perEmail: Int, perClient: Int) async throws
        -> Admission
    {
        let dialect = database.dialect
        let since = now - windowMs
        // An attempt not settled after this long was left by a node that stopped: a failure.
        let stranded = now - Self.attemptInFlightMs
        return try await database.transaction { db in
            try await Self.lockThrottleKeys(db, dialect: dialect, ["login-email:" + emailKey, "login-client:" + client])
            // Failures are attempts settled as wrong, or stranded; the rest are still in flight.
            func attempts(_ scope: SQLQueryString) async throws -> (any SQLRow)? {
                try await db.raw(
                    """
                    SELECT COUNT(*) AS n, SUM(CASE WHEN settled_at IS NOT NULL OR at <= \(bind: stranded) THEN 1 ELSE 0 END) AS failed,
                    MIN(CASE WHEN settled_at IS NOT NULL OR at <= \(bind: stranded) THEN at END) AS oldest FROM login_failures
                    WHERE \(scope) AND at > \(bind: since)
                    """
                ).first()
            }
            let byEmail = try await attempts("email_key = \(bind: emailKey) AND client = \(bind: client)")
            let byClient = try await attempts("client = \(bind: client)")
            let checks = [(byEmail, perEmail), (byClient, perClient)]
            for (row, limit) in checks where try row?.decode(column: "failed", as: Int?.self) ?? 0 >= limit {
                let oldest = try row?.decode(column: "oldest", as: Int64?.self) ?? now
                return .limited(retryAfter: Int((oldest + windowMs - now + 999) / 1000), limit: limit)
            }
            // Full only with attempts still being checked: a second is enough to know.
            for (row, limit) in checks where try row?.decode(column: "n", as: Int.self) ?? 0 >= limit {
                return .limited(retryAfter: 1, limit: limit)
            }
            let id = UUIDv7.make()
            try await db.raw(
                "INSERT INTO login_failures (id, email_key, client, at) VALUES (\(bind: id), \(bind: emailKey), \(bind: client), \(bind: now))"
            ).run()
            try await db.raw("DELETE FROM login_failures WHERE at <= \(bind: since)").run()
            return .admitted(attemptId: id)
        }
    }

    /// How long an admitted login attempt counts as in flight (30 s, far above a bcrypt check):
    /// one not settled by then is taken for a failure.
    static let attemptInFlightMs: Int64 = 30_000

    /// Records that the admitted attempt `attemptId` had a wrong password (at `now`, epoch ms):
    /// from then on it counts as a failure, not as an attempt in flight.
    func settleLoginFailure(_ attemptId: String, now: Int64) async throws {
        try await database.write { db in
            try await db.raw("UPDATE login_failures SET settled_at = \(bind: now) WHERE id = \(bind: attemptId)").run()
        }
    }

    /// Forgets one admitted login attempt that was never evaluated (the hashing queue was full
    /// or the database failed), so it does not count as a failure.
    func releaseLoginAttempt(_ attemptId: String) async throws {
        try await database.write { db in
            try await db.raw("DELETE FROM login_failures WHERE id = \(bind: attemptId)").run()
        }
    }

    /// Atomically counts one attempt in `bucket` (for example `register:<address>` or
    /// `password:<user id>`) unless `limit` attempts are already within the window; the same
    /// locking as ``admitLoginAttempt(emailKey:client:now:windowMs:perEmail:perClient:)``.
    func admitAttempt(bucket: String, now: Int64, windowMs: Int64, limit: Int) async throws -> Admission {
        let dialect = database.dialect
        let since = now - windowMs
        return try await database.transaction { db in
            try await Self.lockThrottleKeys(db, dialect: dialect, ["attempts:" + bucket])
            let row = try await db.raw(
                "SELECT COUNT(*) AS n, MIN(at) AS oldest FROM auth_attempts WHERE bucket = \(bind: bucket) AND at > \(bind: since)"
            ).first()
            if try row?.decode(column: "n", as: Int.self) ?? 0 >= limit {
                let oldest = try row?.decode(column: "oldest", as: Int64?.self) ?? now
                return .limited(retryAfter: Int((oldest + windowMs - now + 999) / 1000), limit: limit)
            }
            let id = UUIDv7.make()
            try await db.raw("INSERT INTO auth_attempts (id, bucket, at) VALUES (\(bind: id), \(bind: bucket), \(bind: now))").run()
            try await db.raw("DELETE FROM auth_attempts WHERE at <= \(bind: since)").run()
            return .admitted(attemptId: id)
        }
    }

    /// Forgets one counted attempt (a correct current password, or one never evaluated).
    func releaseAttempt(_ attemptId: String) async throws {
        try await database.write { db in
            try await db.raw("DELETE FROM auth_attempts WHERE id = \(bind: attemptId)").run()
        }
    }

    /// Forgets an email's failures from `client` after a successful login from it (other
    /// clients' failures stand: a login by the real user must not reset a guesser's count).
    func clearFailures(emailKey: String, client: String) async throws {
        try await database.write { db in
            try await db.raw("DELETE FROM login_failures WHERE email_key = \(bind: emailKey) AND client = \(bind: client)").run()
        }
    }
}
