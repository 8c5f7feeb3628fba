import CairnHTTP
package import CairnStorage
import Synchronization

/// Honours revocations for access tokens, which are otherwise valid until they expire.
///
/// Per user it caches the current role and the instant before which access tokens are void
/// (set by logout-all, password change, role change or deletion), and re-reads the database
/// when the entry is older than `maxAge` (2 s). So a revocation on any node takes effect on
/// every node within seconds, at the cost of one indexed read per active user per `maxAge`.
package final class SessionGuard: Sendable {
    struct Entry {
        var state: (role: Role, tenantId: String, validAfter: Int64, revokedSessions: Set<String>)?
        var fetchedAt: ContinuousClock.Instant
        var refreshing = false
        /// When the last re-read failed (database unreachable); nil after a success.
        var failedAt: ContinuousClock.Instant?
    }
    private let store: AccountStore
    private let maxAge: Duration
    private let clock: any CairnClock
    /// Access-token lifetime in ms: a session revoked longer ago has no live access tokens.
    private let tokenLifetimeMs: Int64
    private let cache = Mutex<[String: Entry]>([:])
    /// Bumped by every ``invalidate(userId:)``: a re-read that started before an invalidation
    /// may have read the state from before the revocation, so its result is not cached.
    private let generation = Atomic<UInt64>(0)

    /// Creates a guard. Entries are re-read after `maxAge`; while one request re-reads, the
    /// others keep using the entry for up to another `maxAge`, so revocations apply within
    /// 2 × `maxAge` (4 s by default) and a burst of requests causes one read, not one each.
    /// Entry ages are measured on `clock`'s monotonic instant.
    /// `accessTokenTTL` (seconds) bounds how far back revoked sessions (`sid`) are read.
    package init(store: AccountStore, maxAge: Duration = .seconds(2), clock: any CairnClock = SystemClock(), accessTokenTTL: Int = 900) {
        self.store = store
        self.tokenLifetimeMs = Int64(accessTokenTTL) * 1000
        self.maxAge = maxAge
        self.clock = clock
    }

    private enum Decision {
        case use(Entry)
        /// Read the session state; `hasFallback` when a stale entry could serve if the read fails.
        case fetch(hasFallback: Bool)
    }

    /// The identity for verified claims, or nil when the user is gone, moved tenant, or the
    /// token was issued before the user's sessions were revoked.
    func identity(for claims: AccessTokenClaims) async throws -> Identity? {
        let now = clock.instant
        let maxAge = self.maxAge
        let decision = cache.withLock { cache -> Decision in
            guard var entry = cache[claims.sub] else { return .fetch(hasFallback: false) }
            let age = now - entry.fetchedAt
            if age <= maxAge || (entry.refreshing && age <= maxAge * 2) { return .use(entry) }
            // After a failed re-read, try the database again at most once a second.
            if let failed = entry.failedAt, now - failed < .seconds(1), age <= Self.outageGrace { return .use(entry) }
            entry.refreshing = true
            cache[claims.sub] = entry
            return .fetch(hasFallback: age <= Self.outageGrace)
        }
        let entry: Entry
        switch decision {
        case .use(let cached):
            entry = cached
        case .fetch(let hasFallback):
            // The short deadline is there to serve the stale entry during an outage; with none
            // to serve, a slow database (a loaded node) is worth waiting for, up to a bound
            // that still ends a query the driver never answers.
            let deadline: Duration = hasFallback ? .seconds(2) : .seconds(15)
            let startedAt = generation.load(ordering: .acquiring)
            do {
                let store = self.store
                // Margin of a minute for clock skew between the nodes that issued the tokens.
                let revokedSince = clock.milliseconds - tokenLifetimeMs - 60_000
                entry = Entry(
                    state: try await withDeadline(deadline) { try await store.sessionState(userId: claims.sub, revokedSince: revokedSince) },
                    fetchedAt: now)
            } catch {
                // The database cannot answer. No revocation can be committed while it is down,
                // so an entry younger than `outageGrace` stays good: requests that other caches
                // can serve (the catalog's stale reads) keep working through a short outage.
                let fallback = cache.withLock { cache -> Entry? in
                    cache[claims.sub]?.refreshing = false
                    cache[claims.sub]?.failedAt = now
                    guard let old = cache[claims.sub], now - old.fetchedAt <= Self.outageGrace else { return nil }
                    return old
                }
                guard let fallback else { throw error }
                entry = fallback
            }
            cache.withLock { cache in
                guard self.generation.load(ordering: .acquiring) == startedAt else {
                    cache[claims.sub]?.refreshing = false
                    return
                }
                if cache.count > 100_000 { cache.removeAll(keepingCapacity: true) }
                cache[claims.sub] = entry
            }
        }
        guard let state = entry.state, state.tenantId == claims.tid else { return nil }
        // Millisecond resolution: a token issued in the same millisecond as a revocation is void.
        guard Int64((claims.iat * 1000).rounded(.down)) > state.validAfter else { return nil }
        // A logged-out session's access tokens end with it (`POST /auth/logout`).
        guard !state.revokedSessions.contains(claims.sid) else { return nil }
        return Identity(userId: claims.sub, tenantId: claims.tid, role: state.role, tokenId: claims.jti)
    }

    /// Drops every cached entry (announcements of changes may have been missed).
    func invalidateAll() {
        cache.withLock { cache in
            self.generation.add(1, ordering: .releasing)
            cache.removeAll()
        }
    }

    /// How long a cached entry is trusted when the database cannot be read.
    static let outageGrace: Duration = .seconds(60)

    /// Drops a user's cached entry, so this node applies a change at once; re-reads already
    /// under way when it is called do not put their (possibly older) result back.
    func invalidate(userId: String) {
        cache.withLock { cache in
            self.generation.add(1, ordering: .releasing)
            cache.removeValue(forKey: userId)
        }
    }
}
