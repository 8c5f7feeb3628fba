import CairnAccounts
import CairnHTTP
import CairnStorage
import Foundation
package import SQLKit

/// One publish to store: `draft` for `userIds` (distinct, sorted) of `tenantId`, stamped `now`
/// (milliseconds since the epoch).
struct Publish: Sendable {
    let draft: NotificationDraft
    let tenantId: String
    let userIds: [String]
    let now: Int64
    /// Whether `userIds` must be checked to be users of `tenantId` before anything is stored
    /// (a publisher's request), rather than vouched for by the caller (the server's own).
    var checksMembership = false
}

/// A publish that named ids that are no user of its tenant (checked for publishers'
/// requests); nothing of it was stored.
package struct NotTenantMembers: Error {
    /// The ids that are no user of the tenant.
    package let userIds: Set<String>
}

/// The one way publishes are written: a publish alone, a batch of concurrent ones
/// (``PublishBatcher``), a chunk of a tenant broadcast, a publish inside a caller's
/// transaction and the job-status bridge's batches all go through
/// ``storeAndAnnounce(_:observers:hub:on:)`` (and so ``store(_:observers:on:)``), so the
/// recipients' locked read, preferences, dedupe keys, seqs, the outbound observers and the
/// live announcement are applied the same way everywhere.
package enum PublishStore {
    /// A user of a tenant: a counter's key, ordered so every transaction locks counters in one
    /// order and concurrent publishes, on this node or others, cannot deadlock.
    private struct Recipient: Hashable, Comparable {
        let tenantId: String
        let userId: String

        static func < (a: Recipient, b: Recipient) -> Bool {
            (a.tenantId, a.userId) < (b.tenantId, b.userId)
        }
    }

    /// Stores `publishes` on `db` (a transaction), in order:
    /// 1. the recipients' preferences (`preferences`, read by ``recipients(of:on:)``, or else
    ///    one read per tenant); recipients who turned in-app off for a type get no inbox row;
    /// 2. one counter upsert that gives each recipient as many seqs as the batch holds rows for
    ///    it (the counter's row lock orders each user's seqs by commit);
    /// 3. for publishes with a `dedupeKey`, recipients already holding it (or given it earlier
    ///    in the batch) are skipped and their seqs given back under the same lock, so no seq is
    ///    ever skipped;
    /// 4. one multi-row INSERT of every inbox row;
    /// 5. the outbound observers, once, with every publish (recipients with in-app off appear
    ///    under a notification id that has no inbox row).
    /// - Returns: each publish's stored inbox rows, in `publishes` order, each in its
    ///   `userIds` order.
    /// - Throws: database errors and what an observer throws; the caller rolls back.
    static func store(
        _ publishes: [Publish], preferences known: [String: [String: NotificationPreferences]]? = nil, observers: [any PublishObserver],
        on db: any SQLDatabase
    ) async throws -> [[StoredNotification]] {
        let preferences: [String: [String: NotificationPreferences]]
        if let known { preferences = known } else { preferences = try await self.preferences(of: publishes, on: db) }
        let allowed = publishes.map { publish in
            publish.userIds.filter { (preferences[publish.tenantId]?[$0] ?? .defaults).allows(publish.draft.type, on: .inApp) }
        }
        var inApp = allowed
        var counts: [Recipient: Int64] = [:]
        for (publish, users) in zip(publishes, inApp) {
            for userId in users { counts[Recipient(tenantId: publish.tenantId, userId: userId), default: 0] += 1 }
        }
        var next = try await allocate(counts, on: db)
        try await dropDuplicates(publishes, &inApp, next: &next, on: db)
        var stored: [[StoredNotification]] = []
        stored.reserveCapacity(publishes.count)
        var values: [SQLQueryString] = []
        for (publish, users) in zip(publishes, inApp) {
            let data = publish.draft.dataText
            let rows = users.map { userId in
                let key = Recipient(tenantId: publish.tenantId, userId: userId)
                let seq = next[key] ?? 0
                next[key] = seq + 1
                return StoredNotification(
                    id: UUIDv7.make(), tenantId: publish.tenantId, userId: userId, seq: seq, type: publish.draft.type, title: publish.draft.title,
                    body: publish.draft.body, data: data, createdAt: publish.now, readAt: nil)
            }
            for item in rows {
                values.append(
                    """
                    (\(bind: item.id), \(bind: item.tenantId), \(bind: item.userId), \(bind: item.seq), \(bind: item.type), \(bind: item.title), \
                    \(bind: item.body), \(bind: item.data), \(bind: publish.draft.dedupeKey), \(bind: item.createdAt), NULL)
                    """)
            }
            stored.append(rows)
        }
        if !values.isEmpty {
            try await db.raw(
                """
                INSERT INTO notifications (id, tenant_id, user_id, seq, type, title, body, data, dedupe_key, created_at, read_at) VALUES \
                \(NotificationStore.joined(values))
                """
            ).run()
        }
        try await notify(observers, publishes, allowed: allowed, stored: stored, preferences: preferences, on: db)
        return stored
    }

    /// Publishes `publishes` inside the transaction `db`, in order: reads their recipients
    /// (``recipients(of:on:)``, locked until the commit), stores those of every publish not
    /// refused (``store(_:observers:on:)``, `observers` included), and announces the stored
    /// ids to live connections on every node (delivered after the commit, so never for rows
    /// rolled back).
    /// - Returns: each publish's outcome, in `publishes` order: its stored inbox rows, or the
    ///   refusal of a publish that asked for the membership check (`checksMembership`) and
    ///   named an id that is no user of its tenant (nothing of it stored).
    /// - Throws: database errors and what an observer throws; the caller rolls back.
    static func storeAndAnnounce(
        _ publishes: [Publish], observers: [any PublishObserver], hub: NotificationHub, on db: any SQLDatabase
    ) async throws -> [Result<[StoredNotification], NotTenantMembers>] {
        let read = try await recipients(of: publishes, on: db)
        var kept: [Publish] = []
        for case .success(let publish) in read.publishes { kept.append(publish) }
        var rows = try await store(kept, preferences: read.preferences, observers: observers, on: db).makeIterator()
        let outcomes = read.publishes.map { checked in checked.map { _ in rows.next() ?? [] } }
        try await hub.announce(outcomes.flatMap { (try? $0.get().map(\.id)) ?? [] }, on: db)
        return outcomes
    }

    /// Stores `draft` for `userIds` (distinct, sorted) of `tenantId` on `db` (a transaction),
    /// with no observer: ``store(_:observers:on:)`` for one publish.
    /// - Returns: the stored inbox rows, in `userIds` order (recipients holding the draft's
    ///   `dedupeKey` or with in-app off left out).
    /// - Throws: database errors.
    package static func store(_ draft: NotificationDraft, tenantId: String, userIds: [String], now: Int64, on db: any SQLDatabase) async throws
        -> [StoredNotification]
    {
        try await store([Publish(draft: draft, tenantId: tenantId, userIds: userIds, now: now)], observers: [], on: db)[0]
    }

    /// What ``recipients(of:on:)`` read for a batch of publishes inside its transaction.
    struct Recipients: Sendable {
        /// Each publish in order: with only the recipients that are users of its tenant, or,
        /// for a publish that asked for the check (`checksMembership`) and named any id that is
        /// not one, the refusal naming those ids (nothing of it may be stored).
        let publishes: [Result<Publish, NotTenantMembers>]
        /// The preferences of every recipient who set any, by tenant then user.
        let preferences: [String: [String: NotificationPreferences]]
    }

    /// Reads, inside the transaction `db`, which recipients of `publishes` are users of each
    /// publish's tenant and their preferences, in one statement for the whole batch that also
    /// locks the users against deletion until the commit, as
    /// ``AccountStore/lockedTenants(ofUsers:on:)`` does (PostgreSQL: `FOR KEY SHARE` in id
    /// order; SQLite: the transaction holds the only writer). Every publish of ``Notifier``
    /// stores what this returns in the same transaction, so a user deleted while the publish
    /// was on its way (a broadcast's page of users) gets no row, counter or delivery, one
    /// deleted after the commit has them erased with them, and a publisher's membership check
    /// and the store see the same users. At most a few hundred ids (each a bound parameter).
    /// - Throws: database errors.
    static func recipients(of publishes: [Publish], on db: any SQLDatabase) async throws -> Recipients {
        let ids = Array(Set(publishes.flatMap(\.userIds).filter(UUIDv7.isValid))).sorted()
        var tenants: [String: String] = [:]
        var preferences: [String: [String: NotificationPreferences]] = [:]
        if !ids.isEmpty {
            let lock = db.dialect.name == "postgresql" ? " FOR KEY SHARE OF u" : ""
            let rows = try await db.raw(
                """
                SELECT u.id, u.tenant_id, p.prefs FROM users u
                LEFT JOIN notification_preferences p ON p.tenant_id = u.tenant_id AND p.user_id = u.id
                WHERE u.id IN \(NotificationStore.list(ids.map { "\(bind: $0)" })) ORDER BY u.id\(unsafeRaw: lock)
                """
            ).all()
            for row in rows {
                let userId = try row.decode(column: "id", as: String.self)
                let tenantId = try row.decode(column: "tenant_id", as: String.self)
                tenants[userId] = tenantId
                if let prefs = try row.decode(column: "prefs", as: String?.self) {
                    preferences[tenantId, default: [:]][userId] = PreferenceStore.decode(prefs)
                }
            }
        }
        let checked = publishes.map { publish -> Result<Publish, NotTenantMembers> in
            let users = publish.userIds.filter { tenants[$0] == publish.tenantId }
            if users.count == publish.userIds.count { return .success(publish) }
            if publish.checksMembership { return .failure(NotTenantMembers(userIds: Set(publish.userIds).subtracting(users))) }
            return .success(Publish(draft: publish.draft, tenantId: publish.tenantId, userIds: users, now: publish.now))
        }
        return Recipients(publishes: checked, preferences: preferences)
    }

    /// The preferences of every recipient who set any, by tenant then user: one read per tenant.
    private static func preferences(of publishes: [Publish], on db: any SQLDatabase) async throws
        -> [String: [String: NotificationPreferences]]
    {
        var usersByTenant: [String: Set<String>] = [:]
        for publish in publishes { usersByTenant[publish.tenantId, default: []].formUnion(publish.userIds) }
        var preferences: [String: [String: NotificationPreferences]] = [:]
        for (tenantId, users) in usersByTenant.sorted(by: { $0.key < $1.key }) {
            preferences[tenantId] = try await PreferenceStore.preferences(tenantId: tenantId, userIds: users.sorted(), on: db)
        }
        return preferences
    }

    /// Moves each recipient's counter on by its count, in one upsert (keys locked in order).
    /// - Returns: the first seq each recipient gets in this batch.
    private static func allocate(_ counts: [Recipient: Int64], on db: any SQLDatabase) async throws -> [Recipient: Int64] {
        guard !counts.isEmpty else { return [:] }
        let keys = counts.keys.sorted()
        let rows = try await db.raw(
            """
            INSERT INTO notification_counters (tenant_id, user_id, seq) VALUES \
            \(NotificationStore.joined(keys.map { "(\(bind: $0.tenantId), \(bind: $0.userId), \(bind: counts[$0] ?? 0))" }))
            ON CONFLICT (tenant_id, user_id) DO UPDATE SET seq = notification_counters.seq + excluded.seq
            RETURNING tenant_id, user_id, seq
            """
        ).all()
        var first: [Recipient: Int64] = [:]
        for row in rows {
            let key = Recipient(
                tenantId: try row.decode(column: "tenant_id", as: String.self), userId: try row.decode(column: "user_id", as: String.self))
            first[key] = try row.decode(column: "seq", as: Int64.self) - (counts[key] ?? 0) + 1
        }
        return first
    }

    /// Removes from `inApp` the recipients of a publish with a `dedupeKey` who already hold it
    /// (read after the counters are locked, so a concurrent publish with the same key has
    /// committed or waits) or got it earlier in this batch, and gives their seqs back: each
    /// recipient's counter ends at the last seq stored, `next` unchanged (the skipped rows were
    /// not numbered yet).
    private static func dropDuplicates(
        _ publishes: [Publish], _ inApp: inout [[String]], next: inout [Recipient: Int64], on db: any SQLDatabase
    ) async throws {
        var dropped: [Recipient: Int64] = [:]
        var given: Set<[String]> = []
        let held = try await heldKeys(publishes, inApp, on: db)
        for (index, publish) in publishes.enumerated() {
            guard let key = publish.draft.dedupeKey, !inApp[index].isEmpty else { continue }
            inApp[index].removeAll { userId in
                let duplicate =
                    held[Recipient(tenantId: publish.tenantId, userId: userId)]?.contains(key) == true
                    || !given.insert([publish.tenantId, key, userId]).inserted
                if duplicate { dropped[Recipient(tenantId: publish.tenantId, userId: userId), default: 0] += 1 }
                return duplicate
            }
        }
        // Rare (a retried job's status notification): one statement per recipient given back.
        for (recipient, count) in dropped.sorted(by: { $0.key < $1.key }) {
            try await db.raw(
                """
                UPDATE notification_counters SET seq = seq - \(bind: count)
                WHERE tenant_id = \(bind: recipient.tenantId) AND user_id = \(bind: recipient.userId)
                """
            ).run()
        }
    }

    /// The dedupe keys of `publishes` that each of their recipients (in `inApp`) already holds,
    /// in whichever of two shapes takes fewer reads: one per recipient, of all the keys published
    /// to them (500 a statement: a batch of many keyed publishes to one user, as job status
    /// makes), or one per key, of all the recipients it was published to (500 a statement: a
    /// page of a tenant broadcast, one key to 500 users, read once instead of once per user, which
    /// on PostgreSQL took 500 round trips, about 125 ms of the page).
    private static func heldKeys(_ publishes: [Publish], _ inApp: [[String]], on db: any SQLDatabase) async throws -> [Recipient: Set<String>] {
        var wanted: [Recipient: Set<String>] = [:]
        var recipientsOfKey: [TenantKey: Set<String>] = [:]
        for (index, publish) in publishes.enumerated() {
            guard let key = publish.draft.dedupeKey else { continue }
            for userId in inApp[index] {
                wanted[Recipient(tenantId: publish.tenantId, userId: userId), default: []].insert(key)
                recipientsOfKey[TenantKey(tenantId: publish.tenantId, key: key), default: []].insert(userId)
            }
        }
        let byRecipient = wanted.values.reduce(0) { $0 + ($1.count + 499) / 500 }
        let byKey = recipientsOfKey.values.reduce(0) { $0 + ($1.count + 499) / 500 }
        var held: [Recipient: Set<String>] = [:]
        if byKey < byRecipient {
            for (group, userIds) in recipientsOfKey.sorted(by: { $0.key < $1.key }) {
                let holders = try await present(
                    "user_id", among: userIds, where: "dedupe_key", is: group.key, tenantId: group.tenantId, on: db)
                for userId in holders { held[Recipient(tenantId: group.tenantId, userId: userId), default: []].insert(group.key) }
            }
        } else {
            for (recipient, keys) in wanted.sorted(by: { $0.key < $1.key }) {
                let keys = try await present(
                    "dedupe_key", among: keys, where: "user_id", is: recipient.userId, tenantId: recipient.tenantId, on: db)
                if !keys.isEmpty { held[recipient, default: []].formUnion(keys) }
            }
        }
        return held
    }

    /// The values of `column` among `values` held by inbox rows of `tenantId` whose `fixed`
    /// column is `value`, 500 values a statement (both columns are in `notifications_dedupe`).
    private static func present(
        _ column: String, among values: Set<String>, where fixed: String, is value: String, tenantId: String, on db: any SQLDatabase
    ) async throws -> [String] {
        var found: [String] = []
        for chunk in values.sorted().chunks(of: 500) {
            let rows = try await db.raw(
                """
                SELECT \(ident: column) FROM notifications WHERE tenant_id = \(bind: tenantId) AND \(ident: fixed) = \(bind: value)
                AND \(ident: column) IN \(NotificationStore.list(chunk.map { "\(bind: $0)" }))
                """
            ).all()
            for row in rows { found.append(try row.decode(column: column, as: String.self)) }
        }
        return found
    }

    /// A dedupe key within its tenant.
    private struct TenantKey: Hashable, Comparable {
        let tenantId: String
        let key: String

        static func < (a: TenantKey, b: TenantKey) -> Bool {
            (a.tenantId, a.key) < (b.tenantId, b.key)
        }
    }

    /// Tells every observer of every publish stored, once per batch; `allowed` holds each
    /// publish's recipients with in-app on (before dedupe), the others get no inbox row.
    private static func notify(
        _ observers: [any PublishObserver], _ publishes: [Publish], allowed: [[String]], stored: [[StoredNotification]],
        preferences: [String: [String: NotificationPreferences]], on db: any SQLDatabase
    ) async throws {
        guard !observers.isEmpty else { return }
        var seen: [StoredPublish] = []
        for (index, publish) in publishes.enumerated() {
            let inApp = Set(allowed[index])
            let data = publish.draft.dataText
            // Recipients with in-app off: delivered elsewhere under an id that has no inbox row.
            let outOfInbox = publish.userIds.filter { !inApp.contains($0) }.map { userId in
                StoredNotification(
                    id: UUIDv7.make(), tenantId: publish.tenantId, userId: userId, seq: 0, type: publish.draft.type, title: publish.draft.title,
                    body: publish.draft.body, data: data, createdAt: publish.now, readAt: nil)
            }
            let all = stored[index] + outOfInbox
            guard !all.isEmpty else { continue }
            let recipients = Set(publish.userIds)
            seen.append(
                StoredPublish(
                    rows: all, draft: publish.draft, preferences: (preferences[publish.tenantId] ?? [:]).filter { recipients.contains($0.key) }))
        }
        guard !seen.isEmpty else { return }
        for observer in observers { try await observer.didStore(seen, on: db) }
    }
}
