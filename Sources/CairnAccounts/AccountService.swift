package import CairnHTTP
package import CairnStorage
import Crypto
import Foundation
import HTTPTypes
package import Logging
import Synchronization

/// Login rate limits (OWASP Authentication Cheat Sheet), counted in the database so they hold
/// across nodes. Their defaults are ``AccountSettings``'.
package struct LoginLimits: Sendable {
    /// Failures allowed per email from one client address within the window before that
    /// address gets 429 for that email (other addresses are not affected).
    package var perEmail: Int
    /// Failures allowed per client address within the window before 429.
    package var perClient: Int
    /// The sliding window, in seconds.
    package var window: Int
    /// Registrations per client address within `registerWindow` before 429.
    package var registerPerClient: Int
    /// The registration window, in seconds.
    package var registerWindow: Int
    /// Wrong current passwords per user within `passwordWindow` before 429.
    package var passwordFailures: Int
    /// The window of wrong current passwords, in seconds.
    package var passwordWindow: Int

    /// Creates the default limits.
    package init() { self.init(AccountSettings()) }

    /// The limits configured in `settings`.
    package init(_ settings: AccountSettings) {
        perEmail = settings.loginMaxPerEmail
        perClient = settings.loginMaxPerClient
        window = settings.loginWindow
        registerPerClient = settings.registerMaxPerClient
        registerWindow = settings.registerWindow
        passwordFailures = settings.passwordChangeMaxFailures
        passwordWindow = settings.passwordChangeWindow
    }
}

/// Account use cases: registration, login, refresh-token rotation, logout, profile and admin
/// user management. Controllers translate HTTP to these calls; all rules live here.
package final class AccountService: Sendable {
    /// The table access.
    package let store: AccountStore
    /// Token signing and verification.
    package let tokens: TokenService
    /// bcrypt.
    package let hasher: PasswordHasher
    /// Revocation checks for access tokens.
    package let sessions: SessionGuard
    /// Announces session changes to every node (``sessionChanges(onListening:)``); nil: this node only.
    let bus: EventBus?
    let limits: LoginLimits
    /// Other modules' tables deleted with a user or a tenant.
    let erasure: DataErasure
    let logger: Logger
    /// See ``onSessionChange(_:)``.
    private let localObservers = Mutex<[@Sendable (String) -> Void]>([])
    /// The time of revocations and login-failure windows; the token service's clock.
    var clock: any CairnClock { tokens.clock }

    /// Creates the service. Times (token issue and expiry, revocations, login windows, the
    /// session guard's cache ages) are read from the token service's clock. With `bus`, session
    /// changes are announced to every node (see ``sessionChanges(onListening:)``). `erasure`
    /// names the other modules' tables deleted with a user or a tenant.
    package init(
        store: AccountStore, tokens: TokenService, hasher: PasswordHasher, limits: LoginLimits = LoginLimits(), bus: EventBus? = nil,
        erasure: DataErasure = DataErasure(), logger: Logger
    ) {
        self.store = store
        self.erasure = erasure
        self.bus = bus
        self.tokens = tokens
        self.hasher = hasher
        self.sessions = SessionGuard(store: store, clock: tokens.clock, accessTokenTTL: tokens.settings.accessTokenTTL)
        self.limits = limits
        self.logger = logger
    }

    // MARK: Registration and login

    /// Creates a tenant and its first user (role `owner`). Registration is open, so each client
    /// address may register `registerPerClient` times per `registerWindow`: every valid attempt
    /// costs a bcrypt hash and creates a tenant.
    /// - Throws: 400 `invalid_input` listing bad fields; 409 `conflict` for a taken email;
    ///   429 `rate_limited` with `Retry-After` when the address is over its limit.
    /// - Parameter client: the caller's address; nil for an operator (`cairn`), who is not limited.
    package func register(email: String, password: String, name: String, tenantName: String?, client: String? = nil) async throws -> User {
        var issues: [FieldIssue] = []
        let normalized = AccountRules.normalizeEmail(email)
        if normalized == nil { issues.append(FieldIssue(field: "email", issue: "must be a valid email address")) }
        if let issue = AccountRules.passwordIssue(password) { issues.append(FieldIssue(field: "password", issue: issue)) }
        let cleanName = AccountRules.normalizeName(name)
        if cleanName == nil { issues.append(FieldIssue(field: "name", issue: AccountRules.nameIssue)) }
        var cleanTenant: String?
        if let tenantName {
            cleanTenant = AccountRules.normalizeName(tenantName)
            if cleanTenant == nil { issues.append(FieldIssue(field: "tenantName", issue: AccountRules.nameIssue)) }
        }
        guard issues.isEmpty, let normalized, let cleanName else { throw AppError.invalidInput(issues) }
        var attemptId: String?
        if let client {
            let admission = try await store.admitAttempt(
                bucket: "register:" + client, now: clock.milliseconds, windowMs: Int64(limits.registerWindow) * 1000,
                limit: limits.registerPerClient)
            attemptId = try Self.admitted(
                admission, window: limits.registerWindow, detail: "Too many registrations from this address. Try again later.")
        }
        let hash: String
        do {
            hash = try await hasher.hash(password)
        } catch {
            // Not attempted (hashing queue full): the address keeps its allowance.
            if let attemptId { try? await store.releaseAttempt(attemptId) }
            throw error
        }
        let now = clock.milliseconds
        let user = User(
            id: UUIDv7.make(), tenantId: UUIDv7.make(), email: normalized.email, name: cleanName, role: .owner, version: 1,
            createdAt: now, updatedAt: now)
        try await store.createTenant(name: cleanTenant ?? "\(cleanName)'s workspace", owner: user, passwordHash: hash, emailKey: normalized.key)
        logger.info("registered tenant", metadata: ["tenant_id": .string(user.tenantId), "user_id": .string(user.id)])
        return user
    }

    /// Checks credentials and starts a session. Failures are counted per email and client
    /// address, and per client address: a client that has not failed for this email is never
    /// refused, so wrong passwords from elsewhere cannot lock the real user out.
    /// - Throws: 401 `invalid_credentials` (same answer for unknown email and wrong password,
    ///   after the same bcrypt work); 429 `rate_limited` after too many recent failures from
    ///   this client.
    package func login(email: String, password: String, client: String) async throws -> TokenPair {
        let key = AccountRules.normalizeEmail(email)?.key ?? email.lowercased()
        let now = clock.milliseconds
        // The attempt is counted as a failure before bcrypt runs, in one atomic step, so a burst
        // of concurrent guesses cannot all pass the check before any of them is recorded.
        let admission = try await store.admitLoginAttempt(
            emailKey: key, client: client, now: now, windowMs: Int64(limits.window) * 1000, perEmail: limits.perEmail,
            perClient: limits.perClient)
        let attemptId = try Self.admitted(admission, window: limits.window, detail: "Too many failed logins. Try again later.")
        let record: (user: User, passwordHash: String)?
        let valid: Bool
        do {
            record = try await store.credentials(emailKey: key)
            valid = try await hasher.verify(password, against: record?.passwordHash)
        } catch {
            // Not evaluated (hashing queue full, database error): not a failure.
            try? await store.releaseLoginAttempt(attemptId)
            throw error
        }
        guard valid, let user = record?.user else {
            // Unsettled, it would still count as a failure once 30 s old.
            try? await store.settleLoginFailure(attemptId, now: clock.milliseconds)
            throw AppError(.unauthorized, code: .invalidCredentials, detail: "The email or password is incorrect.")
        }
        try await store.clearFailures(emailKey: key, client: client)
        return try await startSession(for: user)
    }

    /// The admitted attempt's id.
    /// - Throws: 429 `rate_limited` with `Retry-After` and `RateLimit-Policy` for a refusal.
    static func admitted(_ admission: AccountStore.Admission, window: Int, detail: String) throws -> String {
        switch admission {
        case .admitted(let attemptId):
            return attemptId
        case .limited(let retryAfter, let limit):
            throw AppError.rateLimited(retryAfter: retryAfter, policy: "\(limit);w=\(window)", detail: detail)
        }
    }

    /// Issues an access token and a new refresh-token family.
    func startSession(for user: User, now: Date? = nil) async throws -> TokenPair {
        let refresh = Self.newRefreshToken()
        let familyId = try await store.startSession(token: refresh, userId: user.id, tenantId: user.tenantId, ttl: tokens.settings.refreshTokenTTL)
        let access = try await tokens.issueAccessToken(userId: user.id, tenantId: user.tenantId, role: user.role, sessionId: familyId, now: now)
        return TokenPair(accessToken: access.token, refreshToken: refresh, expiresIn: tokens.settings.accessTokenTTL)
    }

    /// 256 random bits, base64url: the refresh token given to the client (only its SHA-256 is stored).
    static func newRefreshToken() -> String {
        var generator = SystemRandomNumberGenerator()
        return Base64URL.encode((0..<32).map { _ in UInt8.random(in: .min ... .max, using: &generator) })
    }

    /// Rotates a refresh token. Presented again within `refreshReuseInterval` seconds of its
    /// rotation, it answers the session's current successor instead (Supabase's
    /// `refresh_token_reuse_interval`): concurrent tabs and retried requests stay logged in.
    /// - Throws: 401 `refresh_token_reused` (used before that interval; the family is now revoked) or
    ///   `invalid_refresh_token` (unknown, expired or revoked).
    package func refresh(token: String) async throws -> TokenPair {
        guard token.utf8.count <= 256 else { throw Self.invalidRefresh }
        let rotation = try await store.rotate(
            token: token, salt: Self.newRefreshToken(), reuseIntervalMs: Int64(tokens.settings.refreshReuseInterval) * 1000,
            ttl: tokens.settings.refreshTokenTTL)
        switch rotation {
        case .invalid:
            throw Self.invalidRefresh
        case .reused(let userId):
            // A replayed refresh token means it leaked: end every session of the user, including
            // access tokens already issued (they are checked against the revocation time).
            try await store.revokeAllSessions(userId: userId, at: clock.milliseconds)
            await sessionsChanged(userId: userId)
            logger.warning("refresh token reuse detected; all sessions of the user revoked")
            throw AppError(.unauthorized, code: .refreshTokenReused, detail: "This refresh token was already used; the session is revoked.")
        case .rotated(let familyId, let userId, let tenantId, let successor):
            guard let state = try await store.sessionState(userId: userId), state.tenantId == tenantId else {
                throw Self.invalidRefresh
            }
            let access = try await tokens.issueAccessToken(userId: userId, tenantId: tenantId, role: state.role, sessionId: familyId)
            return TokenPair(accessToken: access.token, refreshToken: successor, expiresIn: tokens.settings.accessTokenTTL)
        }
    }

    static let invalidRefresh = AppError(.unauthorized, code: .invalidRefreshToken, detail: "The refresh token is not valid.")

    /// Revokes the session (refresh-token family) of a token, and with it the access tokens
    /// carrying its `sid`: at once on this node, within the session guard's refresh interval
    /// (at most 4 s) on every other. Unknown tokens are ignored (RFC 7009 §2.2: revocation
    /// answers success either way).
    package func logout(refreshToken: String) async throws {
        guard refreshToken.utf8.count <= 256 else { return }
        if let userId = try await store.revokeFamily(ofToken: refreshToken) {
            await sessionsChanged(userId: userId)
        }
    }

    /// Revokes every session of the user; their access tokens stop working on every node
    /// within the session guard's refresh interval.
    package func logoutAll(_ identity: Identity) async throws {
        try await store.revokeAllSessions(userId: identity.userId, at: clock.milliseconds)
        await sessionsChanged(userId: identity.userId)
    }

    // MARK: Access tokens

    /// Verifies a Bearer token and returns the caller's identity.
    /// - Throws: 401 `invalid_token` or `token_expired`.
    package func authenticate(bearer token: String) async throws -> Identity {
        try await authenticateWithExpiry(bearer: token).identity
    }

    /// Verifies a Bearer token and returns the caller's identity and the token's `exp`
    /// (seconds since the epoch), for callers that re-check a credential until it expires.
    /// - Throws: 401 `invalid_token` or `token_expired`.
    package func authenticateWithExpiry(bearer token: String) async throws -> (identity: Identity, expiresAt: Double) {
        let claims: AccessTokenClaims
        do {
            claims = try await tokens.verify(token)
        } catch TokenError.expired {
            throw AppError.unauthorized(code: .tokenExpired, detail: "The access token has expired.", invalidToken: true)
        } catch {
            throw AppError.unauthorized(code: .invalidToken, detail: "The access token is not valid.", invalidToken: true)
        }
        guard let identity = try await sessions.identity(for: claims) else {
            throw AppError.unauthorized(code: .invalidToken, detail: "The access token has been revoked.", invalidToken: true)
        }
        return (identity, claims.exp)
    }

    // MARK: The caller's own account

    /// The caller's account.
    package func me(_ identity: Identity) async throws -> User {
        guard let user = try await store.user(id: identity.userId, tenantId: identity.tenantId) else { throw AppError.notFound() }
        return user
    }

    /// Changes the caller's name, email, phone or locale. A new email needs the current password
    /// (a stolen access token must not take the account over through a password reset to
    /// another address), with the same throttle as ``changePassword(_:current:new:)``.
    /// - Throws: 400 `invalid_input` (bad fields; `currentPassword` missing or wrong for a new
    ///   email); 409 `conflict` for a taken email; 429 `rate_limited` after too many wrong passwords.
    package func updateMe(
        _ identity: Identity, name: String?, email: String?, phone: String?? = nil, locale: String?? = nil, currentPassword: String? = nil
    ) async throws -> User {
        let (cleanName, cleanEmail) = try Self.validateProfile(name: name, email: email)
        if case .some(.some(let number)) = phone, !AccountRules.isE164(number) {
            throw AppError.invalidField("phone", AccountRules.phoneIssue)
        }
        if case .some(.some(let tag)) = locale, !AccountRules.isLanguageTag(tag) {
            throw AppError.invalidField("locale", AccountRules.localeIssue)
        }
        if let cleanEmail {
            guard let current = try await store.user(id: identity.userId, tenantId: identity.tenantId) else { throw AppError.notFound() }
            if AccountRules.normalizeEmail(current.email)?.key != cleanEmail.key {
                guard let currentPassword else {
                    throw AppError.invalidField("currentPassword", "is required to change the email")
                }
                try await verifyCurrentPassword(identity, currentPassword)
            }
        }
        guard
            let user = try await store.updateUser(
                id: identity.userId, tenantId: identity.tenantId, expectedVersion: nil, name: cleanName, email: cleanEmail, role: nil, phone: phone,
                locale: locale)
        else { throw AppError.notFound() }
        return user
    }

    /// Checks the caller's current password. A stolen access token must not become a password
    /// oracle: each user may give a wrong one `passwordFailures` times per `passwordWindow`
    /// (counted before bcrypt in one atomic step, as logins; released when it is right).
    /// - Throws: 400 `invalid_input` (`currentPassword` is incorrect); 429 `rate_limited` with
    ///   `Retry-After` after too many wrong ones.
    func verifyCurrentPassword(_ identity: Identity, _ current: String) async throws {
        let admission = try await store.admitAttempt(
            bucket: "password:" + identity.userId, now: clock.milliseconds, windowMs: Int64(limits.passwordWindow) * 1000,
            limit: limits.passwordFailures)
        let attemptId = try Self.admitted(admission, window: limits.passwordWindow, detail: "Too many wrong passwords. Try again later.")
        let matches: Bool
        do {
            let hash = try await store.passwordHash(userId: identity.userId)
            matches = try await hasher.verify(current, against: hash)
        } catch {
            try? await store.releaseAttempt(attemptId)
            throw error
        }
        guard matches else { throw AppError.invalidField("currentPassword", "is incorrect") }
        try await store.releaseAttempt(attemptId)
    }

    /// Deletes the caller's account after checking the current password: their sessions (at
    /// once on every node), inbox, devices, preferences and throttling rows. Content they made in
    /// the tenant (tasks, files, pipelines, jobs) stays the tenant's. The tenant's last owner
    /// must pass `deleteTenant`, which deletes the tenant with every user and all its data.
    /// - Throws: 400 `invalid_input` (wrong `currentPassword`); 403 `forbidden` (`deleteTenant`
    ///   by a non-owner); 409 `conflict` (last owner without `deleteTenant`, or `deleteTenant`
    ///   while another owner remains); 429 `rate_limited`.
    package func deleteMe(_ identity: Identity, currentPassword: String, deleteTenant: Bool) async throws {
        guard let me = try await store.user(id: identity.userId, tenantId: identity.tenantId) else { throw AppError.notFound() }
        try await verifyCurrentPassword(identity, currentPassword)
        if deleteTenant {
            guard me.role == .owner else { throw AppError.forbidden("Only the tenant's last owner can delete it.") }
            let userIds = try await store.deleteTenant(id: me.tenantId, ownerId: me.id, erasure: erasure)
            for userId in userIds { await sessionsChanged(userId: userId) }
            logger.info("deleted tenant", metadata: ["tenant_id": .string(me.tenantId), "users": .stringConvertible(userIds.count)])
            return
        }
        do {
            guard
                try await store.deleteUser(
                    id: me.id, tenantId: me.tenantId, expectedVersion: nil, keepingAnOwner: me.role == .owner, erasure: erasure)
            else { throw AppError.notFound() }
        } catch let error as AppError where error.status == .conflict {
            throw AppError.conflict(
                "You are the tenant's last owner: make another user an owner first, or delete the tenant and all its data with ?tenant=delete.")
        }
        await sessionsChanged(userId: me.id)
        logger.info("deleted own account", metadata: ["tenant_id": .string(me.tenantId), "user_id": .string(me.id)])
    }

    /// Changes the caller's password, revokes all their sessions, and starts a new one.
    /// A stolen access token must not become a password oracle: each user may give a wrong
    /// current password `passwordFailures` times per `passwordWindow`.
    /// - Throws: 400 `invalid_input` when the current password is wrong or the new one too short;
    ///   429 `rate_limited` with `Retry-After` after too many wrong current passwords.
    package func changePassword(_ identity: Identity, current: String, new: String) async throws -> TokenPair {
        if let issue = AccountRules.passwordIssue(new) { throw AppError.invalidField("newPassword", issue) }
        try await verifyCurrentPassword(identity, current)
        let newHash = try await hasher.hash(new)
        let now = clock.milliseconds
        guard
            let user = try await store.updateUser(
                id: identity.userId, tenantId: identity.tenantId, expectedVersion: nil, name: nil, email: nil, role: nil, passwordHash: newHash)
        else { throw AppError.notFound() }
        try await store.revokeAllSessions(userId: user.id, at: now)
        await sessionsChanged(userId: user.id)
        return try await startSession(for: user, now: Date(timeIntervalSince1970: Double(now + 1) / 1000))
    }

    static func validateProfile(name: String?, email: String?) throws -> (String?, (email: String, key: String)?) {
        var issues: [FieldIssue] = []
        var cleanName: String?
        var cleanEmail: (email: String, key: String)?
        if let name {
            cleanName = AccountRules.normalizeName(name)
            if cleanName == nil { issues.append(FieldIssue(field: "name", issue: AccountRules.nameIssue)) }
        }
        if let email {
            cleanEmail = AccountRules.normalizeEmail(email)
            if cleanEmail == nil { issues.append(FieldIssue(field: "email", issue: "must be a valid email address")) }
        }
        if !issues.isEmpty { throw AppError.invalidInput(issues) }
        return (cleanName, cleanEmail)
    }

    // MARK: Admin user management (owner, admin)

    /// A page of the tenant's users.
    package func listUsers(_ identity: Identity, page: PageRequest) async throws -> Page<User> {
        try identity.requireAdmin()
        return try await store.users(tenantId: identity.tenantId, page: page)
    }

    /// A user of the caller's tenant.
    package func user(_ identity: Identity, id: String) async throws -> User {
        try identity.requireAdmin()
        guard let user = try await store.user(id: id, tenantId: identity.tenantId) else { throw AppError.notFound() }
        return user
    }

    /// Creates a user in the caller's tenant. Only an owner may create another owner.
    package func createUser(_ identity: Identity, email: String, name: String, role: String, password: String) async throws -> User {
        try identity.requireAdmin()
        var issues: [FieldIssue] = []
        let normalized = AccountRules.normalizeEmail(email)
        if normalized == nil { issues.append(FieldIssue(field: "email", issue: "must be a valid email address")) }
        let cleanName = AccountRules.normalizeName(name)
        if cleanName == nil { issues.append(FieldIssue(field: "name", issue: AccountRules.nameIssue)) }
        let parsedRole = Role(rawValue: role)
        if parsedRole == nil { issues.append(FieldIssue(field: "role", issue: AccountRules.roleIssue)) }
        if let issue = AccountRules.passwordIssue(password) { issues.append(FieldIssue(field: "password", issue: issue)) }
        guard issues.isEmpty, let normalized, let cleanName, let parsedRole else { throw AppError.invalidInput(issues) }
        if parsedRole == .owner && identity.role != .owner { throw AppError.forbidden("Only an owner can create an owner.") }
        return try await insertUser(tenantId: identity.tenantId, email: normalized, name: cleanName, role: parsedRole, password: password)
    }

    /// Creates a user for an operator (`cairn user create`), without a calling identity.
    /// - Throws: `invalid_input`, `not_found` (no such tenant), `conflict`.
    package func createUser(operatorTenantId tenantId: String, email: String, name: String, role: Role, password: String) async throws -> User {
        var issues: [FieldIssue] = []
        let normalized = AccountRules.normalizeEmail(email)
        if normalized == nil { issues.append(FieldIssue(field: "email", issue: "must be a valid email address")) }
        let cleanName = AccountRules.normalizeName(name)
        if cleanName == nil { issues.append(FieldIssue(field: "name", issue: AccountRules.nameIssue)) }
        if let issue = AccountRules.passwordIssue(password) { issues.append(FieldIssue(field: "password", issue: issue)) }
        guard issues.isEmpty, let normalized, let cleanName else { throw AppError.invalidInput(issues) }
        guard try await store.tenantExists(tenantId) else { throw AppError.notFound("No such tenant.") }
        return try await insertUser(tenantId: tenantId, email: normalized, name: cleanName, role: role, password: password)
    }

    private func insertUser(tenantId: String, email: (email: String, key: String), name: String, role: Role, password: String) async throws -> User {
        let hash = try await hasher.hash(password)
        let now = clock.milliseconds
        let user = User(
            id: UUIDv7.make(), tenantId: tenantId, email: email.email, name: name, role: role, version: 1, createdAt: now, updatedAt: now)
        try await store.insertUser(user, passwordHash: hash, emailKey: email.key)
        return user
    }

    /// Updates a user of the caller's tenant. A role change voids the user's access tokens.
    /// - Throws: 404, 403 (admins cannot change owners or grant ownership), 409 (last owner),
    ///   412 (`If-Match` mismatch).
    package func updateUser(_ identity: Identity, id: String, expectedVersion: Int?, name: String?, email: String?, role: String?) async throws
        -> User
    {
        try identity.requireAdmin()
        let (cleanName, cleanEmail) = try Self.validateProfile(name: name, email: email)
        var newRole: Role?
        if let role {
            guard let parsed = Role(rawValue: role) else { throw AppError.invalidField("role", AccountRules.roleIssue) }
            newRole = parsed
        }
        guard let target = try await store.user(id: id, tenantId: identity.tenantId) else { throw AppError.notFound() }
        if identity.role != .owner && (target.role == .owner || newRole == .owner) {
            throw AppError.forbidden("Only an owner can change an owner or grant ownership.")
        }
        if let expectedVersion, expectedVersion != target.version { throw AppError.preconditionFailed() }
        let demotesOwner = target.role == .owner && newRole != nil && newRole != .owner
        guard
            let user = try await store.updateUser(
                id: id, tenantId: identity.tenantId, expectedVersion: target.version, name: cleanName, email: cleanEmail, role: newRole,
                keepingAnOwner: demotesOwner)
        else { throw AppError.preconditionFailed() }
        await sessionsChanged(userId: id)
        return user
    }

    /// Deletes a user of the caller's tenant with their own data (as ``deleteMe(_:currentPassword:deleteTenant:)``)
    /// and ends their sessions.
    package func deleteUser(_ identity: Identity, id: String, expectedVersion: Int?) async throws {
        try identity.requireAdmin()
        guard let target = try await store.user(id: id, tenantId: identity.tenantId) else { throw AppError.notFound() }
        if target.id == identity.userId { throw AppError.conflict("You cannot delete your own account here.") }
        if identity.role != .owner && target.role == .owner { throw AppError.forbidden("Only an owner can delete an owner.") }
        if let expectedVersion, expectedVersion != target.version { throw AppError.preconditionFailed() }
        guard
            try await store.deleteUser(
                id: id, tenantId: identity.tenantId, expectedVersion: target.version, keepingAnOwner: target.role == .owner, erasure: erasure)
        else {
            throw AppError.preconditionFailed()
        }
        await sessionsChanged(userId: id)
    }

    // MARK: Revocation announcements

    /// The EventBus channel carrying the id of a user whose sessions or role changed.
    static let sessionsChannel = "cairn_sessions"

    /// Applies a committed change of `userId`'s sessions (logout, logout-all, password or role
    /// change, deletion) at once on this node, and announces it to every node (best effort: a
    /// node that misses it still applies it within the session guard's refresh interval).
    func sessionsChanged(userId: String) async {
        sessions.invalidate(userId: userId)
        for observer in localObservers.withLock({ $0 }) { observer(userId) }
        guard let bus else { return }
        do {
            try await bus.publish(channel: Self.sessionsChannel, payload: userId)
        } catch {
            logger.warning("could not announce a session revocation; other nodes apply it within seconds")
        }
    }

    /// Registers `observer`, called with the user's id whenever a change of that user's sessions
    /// (logout, logout-all, password or role change, deletion) is committed on this node: after
    /// this node's cached session state is dropped, before the change is announced and before
    /// the call that made it returns. So this node's live connections of the user stop
    /// delivering before the client that made the change is answered, where the announcement
    /// (``sessionChanges(onListening:)``) reaches them a few task switches later. `observer`
    /// must not block.
    package func onSessionChange(_ observer: @escaping @Sendable (String) -> Void) {
        localObservers.withLock { $0.append(observer) }
    }

    /// Ids of users whose sessions changed, as any node announces them, until the consuming
    /// task is cancelled. Each is first dropped from this node's session cache, so a token
    /// check made after receiving an id reads the change. For live connections (event streams,
    /// WebSockets) that must end promptly when their session ends.
    ///
    /// `onListening` runs each time the subscription starts receiving (see
    /// `EventBus.subscribe(channel:onListening:)`): what was announced before is not delivered,
    /// so this node's session cache is emptied first, and a consumer re-checks its connections then. Without a bus the stream stays empty.
    package func sessionChanges(onListening: (@Sendable () -> Void)? = nil) -> AsyncStream<String> {
        guard let bus else {
            onListening?()
            return AsyncStream { _ in }
        }
        let sessions = self.sessions
        // Announcements missed before listening are unknown: forget every cached session state.
        let source = bus.subscribe(channel: Self.sessionsChannel) {
            sessions.invalidateAll()
            onListening?()
        }
        return AsyncStream { continuation in
            let task = Task {
                for await userId in source {
                    sessions.invalidate(userId: userId)
                    continuation.yield(userId)
                }
                continuation.finish()
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }
}
