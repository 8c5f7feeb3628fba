package import CairnHTTP
package import CairnStorage
package import Crypto
package import Foundation
package import JWTKit
package import SQLKit
import Synchronization

/// The claims of a Cairn access token (RFC 7519 §4): `iss`, `aud`, `sub`, `tid` (tenant),
/// `role`, `sid` (the refresh-token family, i.e. the session), `iat`, `exp`, `jti`.
package struct AccessTokenClaims: JWTPayload, Equatable {
    /// Issuer.
    package var iss: String
    /// Audience.
    package var aud: String
    /// Subject: the user id.
    package var sub: String
    /// Tenant id.
    package var tid: String
    /// Role at issue time (authorization uses the current role from the database).
    package var role: String
    /// Session id: the refresh-token family this token was issued with.
    package var sid: String
    /// Issued at, seconds since the epoch (fractional).
    package var iat: Double
    /// Expiry, seconds since the epoch.
    package var exp: Double
    /// Token id (UUIDv7).
    package var jti: String

    /// Creates claims.
    package init(iss: String, aud: String, sub: String, tid: String, role: String, sid: String, iat: Double, exp: Double, jti: String) {
        self.iss = iss
        self.aud = aud
        self.sub = sub
        self.tid = tid
        self.role = role
        self.sid = sid
        self.iat = iat
        self.exp = exp
        self.jti = jti
    }

    /// Claim checks run by jwt-kit after the signature is verified; `TokenService` checks
    /// issuer, audience and expiry itself (with leeway) so it can tell them apart.
    package func verify(using algorithm: some JWTAlgorithm) async throws {}
}

/// Why a token was refused; mapped to 401 `invalid_token` or `token_expired` (RFC 6750 §3.1).
package enum TokenError: Error, Equatable, Sendable {
    /// Malformed, bad signature, unknown key, wrong issuer or audience, disallowed algorithm.
    case invalid(String)
    /// Past `exp` plus the leeway.
    case expired
}

/// Configuration of the token service.
package struct TokenSettings: Sendable {
    /// `iss` claim and expected issuer.
    package var issuer: String = "cairn"
    /// `aud` claim and expected audience.
    package var audience: String = "cairn-api"
    /// Access token lifetime in seconds (default 15 min).
    package var accessTokenTTL: Int = 900
    /// Refresh token lifetime in seconds (default 30 days).
    package var refreshTokenTTL: Int = 30 * 86_400
    /// Seconds after a rotation during which the rotated refresh token still returns the same
    /// successor (default 10; 0: none), so two tabs or a retried request do not look like theft.
    package var refreshReuseInterval: Int = 10
    /// Clock skew tolerated on `exp`, in seconds (RFC 8725 §3.10 does not fix one; 60 s is usual).
    package var leeway: Double = 60
    /// When set (≥ 32 bytes), tokens are HS256 with this secret instead of EdDSA.
    package var hmacSecret: String?
    /// The Ed25519 key ring file (mode 0600), used when `hmacSecret` is nil and `keyDatabase`
    /// is not set; on the database, a ring file left from before is imported once.
    package var keyFile: String
    /// When set (PostgreSQL, several nodes), the key ring lives in the `signing_keys` table,
    /// private keys sealed with the box: no node needs a copied file.
    package var keyDatabase: (database: Database, secrets: SecretBox)?
    /// When set, the private keys in `keyFile` are sealed under this box, so the data directory
    /// holds no signing key in plain text; a file written in plain text before sealing existed
    /// is rewritten sealed when the ring is loaded at start-up.
    package var keyFileSecrets: SecretBox?

    /// Creates settings with the key ring at `keyFile`.
    package init(keyFile: String) {
        self.keyFile = keyFile
    }
}

/// Issues and verifies access tokens: EdDSA (Ed25519) with `kid` by default, or HS256 with a
/// configured secret. Follows RFC 7519 and the JWT BCP (RFC 8725): the algorithm is fixed by
/// configuration, never taken from the token (no `alg: none`, no HS256/EdDSA confusion), and
/// `kid` must name a key we hold.
package final class TokenService: Sendable {
    /// The algorithm tokens are signed with: `EdDSA` or `HS256`.
    package let algorithm: String
    /// Settings.
    package let settings: TokenSettings
    /// The time tokens are issued at and checked against.
    package let clock: any CairnClock
    private struct KeyState: Sendable {
        var keys: JWTKeyCollection
        var signingKid: String
        var knownKids: Set<String>
        var publicJWKs: [[String: String]]
        var loadedAt: ContinuousClock.Instant
    }
    private let state: Mutex<KeyState>
    /// Verified tokens by the SHA-256 of their text, so a client reusing its token costs a hash
    /// and a dictionary lookup instead of an Ed25519 verification and a JSON decode. Only tokens
    /// that passed every check enter; expiry is re-checked on each hit; the key ring is re-read
    /// (at most every 5 s) on hits too, and the cache is emptied when the ring changes.
    private let verified: Mutex<VerifiedTokenCache>

    /// Loads (or, on first start, creates) the key ring. `clock` gives the time tokens are
    /// issued at and checked against, and paces re-reads of the ring file.
    /// - Throws: `KeyRingError` when the secret is too short or the key file is unreadable.
    /// `cacheCapacity` bounds the verified-token cache (entries; see ``VerifiedTokenCache``).
    package init(settings: TokenSettings, clock: any CairnClock = SystemClock(), cacheCapacity: Int = 10_000) async throws {
        self.settings = settings
        self.clock = clock
        self.verified = Mutex(VerifiedTokenCache(capacity: cacheCapacity))
        if let secret = settings.hmacSecret {
            guard secret.utf8.count >= 32 else {
                throw KeyRingError("CAIRN_JWT_SECRET must be at least 32 bytes (RFC 7518 §3.2)")
            }
            self.algorithm = "HS256"
            let kid = "hs256-" + SHA256.hash(data: Array(secret.utf8)).prefix(4).map { String(format: "%02x", $0) }.joined()
            let keys = await JWTKeyCollection().add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256, kid: JWKIdentifier(string: kid))
            state = Mutex(KeyState(keys: keys, signingKid: kid, knownKids: [kid], publicJWKs: [], loadedAt: clock.instant))
        } else {
            self.algorithm = "EdDSA"
            let ring = try await KeyRing.loadOrCreate(settings)
            state = Mutex(try await Self.keyState(from: ring, loadedAt: clock.instant))
        }
    }

    private static func keyState(from ring: KeyRing, loadedAt: ContinuousClock.Instant) async throws -> KeyState {
        let keys = JWTKeyCollection()
        var jwks: [[String: String]] = []
        for entry in ring.keys {
            let privateKey = try Curve25519.Signing.PrivateKey(rawRepresentation: entry.privateKeyBytes)
            await keys.add(eddsa: EdDSA.PrivateKey(backing: privateKey), kid: JWKIdentifier(string: entry.kid))
            jwks.append([
                "kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA", "kid": entry.kid,
                "x": Base64URL.encode(privateKey.publicKey.rawRepresentation),
            ])
        }
        guard let newest = ring.keys.max(by: { $0.createdAt < $1.createdAt }) else {
            throw KeyRingError("the key ring is empty")
        }
        return KeyState(keys: keys, signingKid: newest.kid, knownKids: Set(ring.keys.map(\.kid)), publicJWKs: jwks, loadedAt: loadedAt)
    }

    /// The JSON Web Key Set (RFC 7517 §5) of the public verification keys. Empty with HS256:
    /// a symmetric secret is never published.
    package var jwks: [[String: String]] {
        state.withLock { $0.publicJWKs }
    }

    /// The JWKS after picking up a rotation made by `cairn keys rotate` (re-read at most every 5 s).
    package func currentJWKS() async -> [[String: String]] {
        await reloadIfStale()
        return jwks
    }

    /// Signs an access token for a user's session, issued at `now` (the clock's time when nil).
    /// - Returns: the compact JWS and its claims.
    package func issueAccessToken(userId: String, tenantId: String, role: Role, sessionId: String, now: Date? = nil) async throws -> (
        token: String, claims: AccessTokenClaims
    ) {
        let iat = (now ?? clock.now).timeIntervalSince1970
        let claims = AccessTokenClaims(
            iss: settings.issuer, aud: settings.audience, sub: userId, tid: tenantId, role: role.rawValue, sid: sessionId,
            iat: iat, exp: iat + Double(settings.accessTokenTTL), jti: UUIDv7.make())
        await reloadIfStale()
        let (keys, kid) = state.withLock { ($0.keys, $0.signingKid) }
        var header = JWTHeader()
        header.typ = "JWT"
        let token = try await keys.sign(claims, kid: JWKIdentifier(string: kid), header: header)
        return (token, claims)
    }

    /// Verifies a compact JWS access token, as of `now` (the clock's time when nil).
    /// - Throws: `TokenError.invalid` or `TokenError.expired`.
    package func verify(_ token: String, now: Date? = nil) async throws -> AccessTokenClaims {
        let now = now ?? clock.now
        // A key removed from the ring (by hand, or by `cairn keys rotate` once it is old
        // enough) must stop verifying on this node too, cached tokens included.
        await reloadIfStale()
        let key = VerifiedTokenCache.key(token)
        if let claims = verified.withLock({ $0.claims(for: key) }) {
            guard now.timeIntervalSince1970 < claims.exp + settings.leeway else { throw TokenError.expired }
            return claims
        }
        let claims = try await verifyUncached(token, now: now)
        verified.withLock { $0.insert(claims, for: key) }
        return claims
    }

    /// How many verified tokens are cached (for tests and metrics).
    package var cachedTokenCount: Int {
        verified.withLock { $0.count }
    }

    /// True when `token` is in the verified-token cache (for tests).
    package func isCached(_ token: String) -> Bool {
        verified.withLock { $0.claims(for: VerifiedTokenCache.key(token)) != nil }
    }

    private func verifyUncached(_ token: String, now: Date) async throws -> AccessTokenClaims {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, token.utf8.count <= 4096, parts.allSatisfy(Self.isCanonicalBase64URL),
            let headerBytes = Base64URL.decode(String(parts[0])),
            let header = try? JSONSerialization.jsonObject(with: Data(headerBytes)) as? [String: Any]
        else { throw TokenError.invalid("malformed token") }
        guard let alg = header["alg"] as? String, alg == algorithm else {
            throw TokenError.invalid("algorithm not accepted")
        }
        guard let kid = header["kid"] as? String else { throw TokenError.invalid("missing kid") }
        if header["crit"] != nil { throw TokenError.invalid("unsupported critical header") }
        var known = state.withLock { $0.knownKids.contains(kid) }
        if !known {
            // Another node may have rotated a moment ago and signs with the new key already:
            // an unknown key id re-reads the ring sooner than the periodic 5 s (at most once a
            // second, so tokens with made-up key ids cannot turn into a read per request).
            await reloadIfStale(after: .seconds(1))
            known = state.withLock { $0.knownKids.contains(kid) }
        }
        guard known else { throw TokenError.invalid("unknown key id") }
        let keys = state.withLock { $0.keys }
        let claims: AccessTokenClaims
        do {
            claims = try await keys.verify(token, as: AccessTokenClaims.self)
        } catch {
            throw TokenError.invalid("signature or payload rejected")
        }
        guard claims.iss == settings.issuer else { throw TokenError.invalid("wrong issuer") }
        guard claims.aud == settings.audience else { throw TokenError.invalid("wrong audience") }
        guard Role(rawValue: claims.role) != nil, UUIDv7.isValid(claims.sub), UUIDv7.isValid(claims.tid) else {
            throw TokenError.invalid("malformed claims")
        }
        guard now.timeIntervalSince1970 < claims.exp + settings.leeway else { throw TokenError.expired }
        return claims
    }

    /// Whether `part` is base64url without padding, in its only spelling (RFC 7515 §2, RFC
    /// 4648 §3.5 and §3.1). A decoder that takes `=` padding or ignores the unused low bits of
    /// the last character accepts dozens of spellings of one signature, each a token of its own
    /// to anything that compares or caches tokens.
    private static func isCanonicalBase64URL(_ part: Substring) -> Bool {
        let text = String(part)
        guard let bytes = Base64URL.decode(text) else { return false }
        return Base64URL.encode(bytes) == text
    }

    /// A node started before `cairn keys rotate` learns the new keys by re-reading the ring
    /// (file or database), at most every 5 seconds (`age`; 1 s for a token of a key id it does
    /// not know): it then signs with the newest key, publishes all of them, and verifies tokens
    /// signed by any of them.
    private func reloadIfStale(after age: Duration = .seconds(5)) async {
        guard settings.hmacSecret == nil else { return }
        let now = clock.instant
        let due = state.withLock { state -> Bool in
            guard now - state.loadedAt > age else { return false }
            state.loadedAt = now  // one reload at a time
            return true
        }
        guard due, let ring = try? await KeyRing.load(settings) else { return }
        let changed = state.withLock { Set(ring.keys.map(\.kid)) != $0.knownKids }
        guard changed, let fresh = try? await Self.keyState(from: ring, loadedAt: now) else { return }
        state.withLock { $0 = fresh }
        verified.withLock { $0.removeAll() }
    }

    /// Adds a new signing key to the ring (the file, or the database when `settings` names
    /// one); keys superseded longer ago than the access token lifetime plus leeway are dropped
    /// (no token they signed can still be valid).
    /// - Returns: the new key id.
    /// - Throws: `KeyRingError`, `MasterKeyError` or a database error.
    package static func rotate(_ settings: TokenSettings, leeway: Int = 60) async throws -> String {
        let accessTokenTTL = settings.accessTokenTTL
        let retire = { @Sendable (ring: KeyRing, now: Int64) -> [KeyRing.Entry] in
            let sorted = ring.keys.sorted { $0.createdAt < $1.createdAt }
            var kept: [KeyRing.Entry] = []
            for (index, key) in sorted.enumerated() {
                let supersededAt = index + 1 < sorted.count ? sorted[index + 1].createdAt : now
                if now - supersededAt <= Int64(accessTokenTTL + leeway) * 1000 { kept.append(key) }
            }
            return kept
        }
        if let (database, secrets) = settings.keyDatabase {
            _ = try await KeyRing.loadOrCreate(settings)
            return try await database.withExclusiveLock(key: KeyRing.lockKey) { db in
                let ring = try await KeyRing.read(on: db, secrets: secrets)
                let now = WallClock.milliseconds()
                let kept = Set(retire(ring, now).map(\.kid))
                for entry in ring.keys where !kept.contains(entry.kid) {
                    try await db.raw("DELETE FROM signing_keys WHERE kid = \(bind: entry.kid)").run()
                }
                let entry = KeyRing.Entry.generate(now: now)
                try await KeyRing.insert(entry, secrets: secrets, on: db)
                return entry.kid
            }
        }
        var ring = try KeyRing.loadOrCreate(at: settings.keyFile, secrets: settings.keyFileSecrets)
        let now = WallClock.milliseconds()
        let entry = KeyRing.Entry.generate(now: now)
        ring.keys = retire(ring, now) + [entry]
        try ring.save(to: settings.keyFile, secrets: settings.keyFileSecrets)
        return entry.kid
    }

    /// Re-seals the private keys of the ring file (when there is one) from `old` to `new`, for
    /// `cairn keys rotate-master`; a file still in plain text is sealed. The file is replaced
    /// whole (written beside it and renamed).
    /// - Returns: how many keys it re-sealed.
    /// - Throws: `MasterKeyError` when a key does not open under `old`; `KeyRingError`.
    @discardableResult
    package static func resealKeyFile(_ settings: TokenSettings, from old: SecretBox, to new: SecretBox) throws -> Int {
        guard FileManager.default.fileExists(atPath: settings.keyFile) else { return 0 }
        let ring = try KeyRing.read(at: settings.keyFile, secrets: old).ring
        try ring.save(to: settings.keyFile, secrets: new)
        return ring.keys.count
    }

    /// Re-seals the private keys of the database key ring from `old` to `new` on `db` (inside
    /// `cairn keys rotate-master`'s transaction).
    /// - Returns: how many keys it re-sealed.
    /// - Throws: `MasterKeyError` when a key does not open under `old`.
    @discardableResult
    package static func resealKeys(from old: SecretBox, to new: SecretBox, on db: any SQLDatabase) async throws -> Int {
        let rows = try await db.raw("SELECT kid, private_key FROM signing_keys").all()
        for row in rows {
            let kid = try row.decode(column: "kid", as: String.self)
            let sealed = try new.reseal(try row.decode(column: "private_key", as: String.self), purpose: KeyRing.purpose, from: old)
            try await db.raw("UPDATE signing_keys SET private_key = \(bind: sealed) WHERE kid = \(bind: kid)").run()
        }
        return rows.count
    }
}

/// A bounded map from the SHA-256 of an access token (never the token itself, so a memory dump
/// holds no usable bearer credential) to the claims verified for it.
///
/// Holds at most `capacity` entries; when full, the oldest insertion is evicted (a ring of
/// slots), so a burst of new tokens costs their own verifications, not every client's. Entries
/// are not dropped at expiry: the caller re-checks `exp` on every hit.
package struct VerifiedTokenCache: Sendable {
    private var entries: [SHA256Digest: AccessTokenClaims] = [:]
    /// Keys in insertion order, as a ring; `next` is the slot the next insertion takes.
    private var slots: [SHA256Digest?]
    private var next = 0
    /// The most entries held at once.
    package let capacity: Int

    /// Creates an empty cache holding at most `capacity` (at least 1) entries.
    package init(capacity: Int) {
        self.capacity = max(1, capacity)
        self.slots = Array(repeating: nil, count: self.capacity)
    }

    /// The cache key of a token: SHA-256 (FIPS 180-4) of its UTF-8 text.
    package static func key(_ token: String) -> SHA256Digest {
        var hasher = SHA256()
        let hashed = token.utf8.withContiguousStorageIfAvailable { bytes -> Bool in
            hasher.update(bufferPointer: UnsafeRawBufferPointer(bytes))
            return true
        }
        if hashed == nil { hasher.update(data: Array(token.utf8)) }  // a bridged, non-contiguous string
        return hasher.finalize()
    }

    /// The number of entries.
    package var count: Int { entries.count }

    /// The claims cached under `key`, if any.
    package func claims(for key: SHA256Digest) -> AccessTokenClaims? {
        entries[key]
    }

    /// Caches `claims` under `key`, evicting the oldest entry when full.
    package mutating func insert(_ claims: AccessTokenClaims, for key: SHA256Digest) {
        if entries.updateValue(claims, forKey: key) != nil { return }  // two requests verified it at once
        if let evicted = slots[next] { entries.removeValue(forKey: evicted) }
        slots[next] = key
        next = (next + 1) % capacity
    }

    /// Drops every entry (the key ring changed).
    package mutating func removeAll() {
        entries.removeAll(keepingCapacity: true)
        slots = Array(repeating: nil, count: capacity)
        next = 0
    }
}

/// A key ring problem, reported at start-up.
package struct KeyRingError: Error, CustomStringConvertible {
    /// What is wrong.
    package var description: String
    init(_ description: String) { self.description = description }
}

/// The Ed25519 signing keys, stored as JSON in one file with mode 0600 (one node, SQLite), or
/// as rows of `signing_keys` (PostgreSQL); either way private keys are sealed under the master
/// key (the file's only when the settings give a box, as the server always does).
struct KeyRing: Codable, Sendable {
    struct Entry: Codable, Sendable {
        var kid: String
        var privateKey: String
        var createdAt: Int64

        var privateKeyBytes: Data { Data(base64Encoded: privateKey) ?? Data() }

        static func generate(now: Int64) -> Entry {
            let key = Curve25519.Signing.PrivateKey()
            return Entry(kid: "ed25519-" + UUIDv7.make(), privateKey: key.rawRepresentation.base64EncodedString(), createdAt: now)
        }
    }
    var keys: [Entry]

    /// The ring in the file at `path`, private keys opened with `secrets`, and whether any
    /// was in plain text (a file from before sealing).
    /// - Throws: `KeyRingError` when the file is unreadable, not a ring, or sealed while
    ///   `secrets` is nil; `MasterKeyError` when a key is sealed under another master key.
    static func read(at path: String, secrets: SecretBox?) throws -> (ring: KeyRing, plain: Bool) {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw KeyRingError("cannot read the signing key file \(path)")
        }
        guard var ring = try? JSONDecoder().decode(KeyRing.self, from: data), !ring.keys.isEmpty else {
            throw KeyRingError("the signing key file \(path) is not a Cairn key ring")
        }
        var plain = false
        for index in ring.keys.indices {
            let stored = ring.keys[index].privateKey
            guard SecretBox.isSealed(stored) else {
                plain = true
                continue
            }
            guard let secrets else { throw KeyRingError("the signing key file \(path) is sealed, and no master key was given") }
            ring.keys[index].privateKey = try secrets.open(stored, purpose: purpose)
        }
        return (ring, plain)
    }

    static func load(at path: String, secrets: SecretBox?) throws -> KeyRing {
        try read(at: path, secrets: secrets).ring
    }

    /// `pg_advisory_xact_lock` key for creating and rotating the database ring: "cairn-keyring".
    static let lockKey: Int64 = 0x6361_6972_6E6B_6579
    /// What private keys are sealed for (``SecretBox``'s additional data).
    static let purpose = "signing.key"

    /// The ring from where `settings` keep it.
    static func load(_ settings: TokenSettings) async throws -> KeyRing {
        guard let (database, secrets) = settings.keyDatabase else { return try load(at: settings.keyFile, secrets: settings.keyFileSecrets) }
        let ring = try await database.read { db in try await read(on: db, secrets: secrets) }
        guard !ring.keys.isEmpty else { throw KeyRingError("the signing key ring in the database is empty") }
        return ring
    }

    /// The ring from where `settings` keep it, created on first start: in the database, from
    /// the node's old `jwt-keys.json` when there is one (tokens it signed stay valid), or a
    /// new key. Creation runs under a lock, so nodes starting together make one ring.
    static func loadOrCreate(_ settings: TokenSettings) async throws -> KeyRing {
        guard let (database, secrets) = settings.keyDatabase else {
            return try loadOrCreate(at: settings.keyFile, secrets: settings.keyFileSecrets)
        }
        if let ring = try? await load(settings) { return ring }
        let imported =
            FileManager.default.fileExists(atPath: settings.keyFile)
            ? try load(at: settings.keyFile, secrets: settings.keyFileSecrets ?? secrets) : nil
        return try await database.withExclusiveLock(key: lockKey) { db in
            let existing = try await read(on: db, secrets: secrets)
            guard existing.keys.isEmpty else { return existing }
            let ring = imported ?? KeyRing(keys: [.generate(now: WallClock.milliseconds())])
            for entry in ring.keys { try await insert(entry, secrets: secrets, on: db) }
            return ring
        }
    }

    /// The rows of `signing_keys`, private keys opened.
    static func read(on db: any SQLDatabase, secrets: SecretBox) async throws -> KeyRing {
        KeyRing(
            keys: try await db.raw("SELECT kid, private_key, created_at FROM signing_keys ORDER BY created_at").all().map { row in
                Entry(
                    kid: try row.decode(column: "kid", as: String.self),
                    privateKey: try secrets.open(try row.decode(column: "private_key", as: String.self), purpose: purpose),
                    createdAt: try row.decode(column: "created_at", as: Int64.self))
            })
    }

    /// Stores one key, its private key sealed.
    static func insert(_ entry: Entry, secrets: SecretBox, on db: any SQLDatabase) async throws {
        try await db.raw(
            """
            INSERT INTO signing_keys (kid, private_key, created_at)
            VALUES (\(bind: entry.kid), \(bind: secrets.seal(entry.privateKey, purpose: purpose)), \(bind: entry.createdAt))
            """
        ).run()
    }

    /// The ring in the file at `path`, created with a new key when there is none; with
    /// `secrets`, a file in plain text is rewritten sealed.
    static func loadOrCreate(at path: String, secrets: SecretBox?) throws -> KeyRing {
        if FileManager.default.fileExists(atPath: path) {
            let (ring, plain) = try read(at: path, secrets: secrets)
            if plain, secrets != nil { try ring.save(to: path, secrets: secrets) }
            return ring
        }
        let ring = KeyRing(keys: [.generate(now: WallClock.milliseconds())])
        try ring.save(to: path, secrets: secrets)
        return ring
    }

    /// Writes the ring, private keys sealed with `secrets` when given, to a temporary file
    /// created with mode 0600, then renames it into place, so the file is never readable by
    /// others nor half-written, not even for a moment.
    func save(to path: String, secrets: SecretBox?) throws {
        var stored = self
        if let secrets {
            for index in stored.keys.indices { stored.keys[index].privateKey = secrets.seal(stored.keys[index].privateKey, purpose: Self.purpose) }
        }
        guard writePrivateFile(try JSONEncoder().encode(stored), to: path) else { throw KeyRingError("cannot write the signing key file \(path)") }
    }
}
