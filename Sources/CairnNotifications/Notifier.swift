package import CairnAccounts
import CairnHTTP
package import CairnStorage
import Foundation
package import Logging
import Metrics
package import SQLKit
import Synchronization
import Tracing

/// Settings of the notifications module (`CAIRN_NOTIFICATIONS_*`).
package struct NotificationSettings: Sendable {
    /// Read notifications older than this many seconds are pruned (default 90 days).
    package var retentionSeconds = 90 * 86_400
    /// How often the retention pruner runs.
    package var pruneInterval: Duration = .seconds(3600)
    /// SSE heartbeat comment interval (default 15 s).
    package var heartbeat: Duration = .seconds(15)
    /// Granularity of every connection's periodic checks (heartbeats, token checks, ack timeouts).
    package var tick: Duration = .seconds(1)
    /// How often a live connection re-checks its access token's revocation state, in case the
    /// announcement of its session's end was missed. The announcement (`AccountService.sessionChanges`,
    /// heard on every node) is what ends a connection at once; every connection also
    /// re-checks when the node starts listening again, so this is a backstop, like
    /// ``resyncInterval``. At 2 s, 10,000 idle sockets made 5,000 session reads a second.
    package var authCheckInterval: Duration = .seconds(30)
    /// How often a live connection re-reads its user's inbox after its cursor, whatever was
    /// announced: the EventBus is at most once (a LISTEN connection that reconnects misses what
    /// was sent meanwhile), so this bounds the delay of a lost announcement.
    package var resyncInterval: Duration = .seconds(30)
    /// Live rows buffered per connection before it falls back to re-reading (SSE) or is closed
    /// as a slow consumer (WebSocket, close code 1013).
    package var mailboxCapacity = 1000
    /// WebSocket and SSE: a write to the client still waiting after this long (the client
    /// stopped reading, and the kernel's and NIO's send buffers are full) ends the connection:
    /// a WebSocket is closed as a slow consumer (1013), a stream is cut. Checked on each tick.
    package var writeTimeout: Duration = .seconds(10)
    /// WebSocket: how often an authenticated connection sends a WebSocket ping.
    package var pingInterval: Duration = .seconds(30)
    /// WebSocket: notifications not acknowledged after this long are sent again.
    package var ackTimeout: Duration = .seconds(10)
    /// WebSocket: at most this many unacknowledged notifications in flight; more wait.
    package var maxUnacked = 500
    /// WebSocket: time allowed for the `auth` message (close 4401 after it).
    package var authTimeout: Duration = .seconds(10)
    /// WebSocket: a socket with no client message (including pongs and acks) for this long is
    /// closed with 4408.
    package var idleTimeout: Duration = .seconds(60)
    /// Recipients per transaction when publishing to many users (tenant broadcasts).
    package var batchSize = 500
    /// Rows (recipients) per transaction when concurrent publishes to a few users each are
    /// stored together (``PublishBatcher``); 0 stores each publish in its own transaction.
    package var publishBatchRows = 500
    /// Publish batches stored at once on this node (tests use 1, so that the publishes arriving
    /// behind a batch held open are all in the next one).
    package var publishBatchesInFlight = 1
    /// Live connections (SSE and WebSocket together) one user may hold on a node; one more is
    /// refused (429 `rate_limited`, WebSocket close 4429).
    package var maxUserConnections = 100
    /// Creates the defaults.
    package init() {}
}

/// The notifications module's Swift API for other modules: publish to users (alone or inside
/// the caller's transaction), broadcast to a tenant, and the node's live hub.
package final class Notifier: Sendable {
    /// Inbox persistence.
    package let store: NotificationStore
    /// This node's live fan-out.
    package let hub: NotificationHub
    /// Settings.
    package let settings: NotificationSettings
    /// Account lookups (tenant membership, token checks of live connections).
    package let accounts: AccountService
    /// The time notifications are stamped with, quiet hours and retention are judged by, and
    /// live connections compare their token's expiry with.
    package let clock: any CairnClock
    let logger: Logger
    let observers: [any PublishObserver]
    /// Publishes to a few users outside a caller's transaction, stored in batches.
    let batcher: PublishBatcher
    /// The inbox table's planner statistics while it fills (see ``FreshStatistics``).
    package let inboxStatistics: FreshStatistics

    /// Creates the center. `observers` (the outbound channels) see every batch of stored
    /// notifications inside the publishing transaction, in order; `clock` gives the time (see
    /// ``clock``).
    package init(
        store: NotificationStore, bus: EventBus, accounts: AccountService, settings: NotificationSettings, observers: [any PublishObserver] = [],
        logger: Logger, clock: any CairnClock = SystemClock()
    ) {
        self.store = store
        self.settings = settings
        self.clock = clock
        self.accounts = accounts
        self.logger = logger
        self.hub = NotificationHub(
            bus: bus, store: store, accounts: accounts, tickInterval: settings.tick, maxUserConnections: settings.maxUserConnections, logger: logger)
        self.observers = observers
        self.batcher = PublishBatcher(
            database: store.database, hub: hub, observers: observers, maximumRows: settings.publishBatchRows,
            maximumInFlight: settings.publishBatchesInFlight)
        self.inboxStatistics = FreshStatistics(database: store.database, table: "notifications")
    }

    /// Counts `count` inbox rows stored (and committed, unless in a caller's transaction), for
    /// the metric and the table's planner statistics.
    func noteStored(_ count: Int) {
        Counter(label: "cairn_notifications_stored_total").increment(by: count)
        inboxStatistics.added(count)
    }

    /// How many transactions this node opened to publish (a caller's own transaction, joined,
    /// is not counted): several concurrent publishes share one when batched.
    package var publishTransactions: Int { batcher.transactions.load(ordering: .relaxed) }

    /// Returns once at least `count` publishes on this node wait for their batch to start.
    /// Tests hold a batch open with it (from a ``PublishObserver``) to see the publishes
    /// arriving meanwhile stored together.
    package func waitUntilPending(_ count: Int) async {
        await batcher.waitUntilPending(count)
    }

    /// Publishes `draft` to `userIds` of `tenantId` (duplicates ignored). Without `db`, each
    /// batch of `settings.batchSize` recipients is its own transaction, and a publish to at
    /// most that many users without a `dedupeKey` shares its transaction with the other
    /// publishes waiting at the time (``PublishBatcher``); with `db` (the caller's
    /// open transaction), every row commits or rolls back with the caller's own changes and
    /// live delivery happens after the commit (no dual write). The caller vouches that the
    /// users belong to the tenant, or asks for it to be checked (`checkingMembership`, a
    /// publisher's request): a batched publish is checked in its batch's transaction, by the
    /// locked read of the recipients that the store uses.
    /// - Returns: the stored notifications (users skipped by `dedupeKey` are left out).
    /// - Throws: 400 `invalid_input` for a bad draft or user id; ``NotTenantMembers`` (nothing
    ///   stored) when a checked id is no user of the tenant; database errors.
    @discardableResult
    package func publish(
        _ draft: NotificationDraft, to userIds: [String], tenantId: String, checkingMembership: Bool = false, on db: (any SQLDatabase)? = nil
    ) async throws -> [StoredNotification] {
        try draft.validate()
        if let bad = userIds.firstIndex(where: { !UUIDv7.isValid($0) }) {
            throw AppError.invalidField("userIds[\(bad)]", "must be a user id")
        }
        return try await TraceContext.withSpan("notification publish", ofKind: .producer) { span in
            span.attributes["cairn.tenant_id"] = tenantId
            span.attributes["cairn.notification.type"] = draft.type
            span.attributes["cairn.notification.recipients"] = userIds.count
            return try await storeAll(draft, to: userIds, tenantId: tenantId, checkingMembership: checkingMembership, on: db)
        }
    }

    /// Publishes many drafts, each to users of its tenant whom the caller vouches for, stored
    /// together: one transaction (one counter upsert, one multi-row INSERT, one announcement)
    /// per ``NotificationSettings/publishBatchRows`` rows, in order, so each user's seqs follow
    /// the order of `publishes` (the job-status bridge: a job's `running` before its outcome).
    /// A draft's `dedupeKey` stores it at most once per user, however often it is published,
    /// here or by other nodes.
    /// - Parameter publishes: the drafts, each with its recipients (duplicates ignored) and tenant.
    /// - Returns: each publish's stored rows, in order (users skipped by `dedupeKey` left out).
    /// - Throws: 400 `invalid_input` for a bad draft or user id (nothing stored); database
    ///   errors, in which case the transactions before the failing one stay committed.
    @discardableResult
    package func publishAll(_ publishes: [(draft: NotificationDraft, userIds: [String], tenantId: String)]) async throws -> [[StoredNotification]] {
        for (draft, userIds, _) in publishes {
            try draft.validate()
            if let bad = userIds.firstIndex(where: { !UUIDv7.isValid($0) }) { throw AppError.invalidField("userIds[\(bad)]", "must be a user id") }
        }
        let now = clock.milliseconds
        let units = publishes.map { Publish(draft: $0.draft, tenantId: $0.tenantId, userIds: Array(Set($0.userIds)).sorted(), now: now) }
        // Consecutive publishes, up to the row bound (a publish larger than it alone).
        var batches: [[Publish]] = []
        var rows = 0
        for unit in units {
            if batches.isEmpty || rows + unit.userIds.count > max(1, settings.publishBatchRows) {
                batches.append([])
                rows = 0
            }
            batches[batches.count - 1].append(unit)
            rows += unit.userIds.count
        }
        let database = store.database
        let hub = self.hub
        let observers = self.observers
        var stored: [[StoredNotification]] = []
        stored.reserveCapacity(units.count)
        for batch in batches {
            batcher.transactions.add(1, ordering: .relaxed)
            stored += try await TraceContext.withSpan("notification publish batch", ofKind: .producer) { span in
                span.attributes["cairn.notification.publishes"] = batch.count
                return try await database.transaction { db in
                    // Vouched for (no publish asks for the check): none is refused. Delivered
                    // after the commit on both engines (no dual write).
                    try await PublishStore.storeAndAnnounce(batch, observers: observers, hub: hub, on: db).map { try $0.get() }
                }
            }
        }
        noteStored(stored.reduce(0) { $0 + $1.count })
        return stored
    }

    /// ``publish(_:to:tenantId:checkingMembership:on:)`` once validated, inside its span.
    private func storeAll(_ draft: NotificationDraft, to userIds: [String], tenantId: String, checkingMembership: Bool, on db: (any SQLDatabase)?)
        async throws -> [StoredNotification]
    {
        let recipients = Array(Set(userIds)).sorted()
        let now = clock.milliseconds
        // Dedupe keys need a look at existing rows before the counters move: those publishes
        // keep their own transaction (the job-status bridge batches its own: publishAll).
        if db == nil, draft.dedupeKey == nil, !recipients.isEmpty, recipients.count <= settings.publishBatchRows {
            let stored = try await batcher.submit(draft, tenantId: tenantId, userIds: recipients, now: now, checkingMembership: checkingMembership)
            noteStored(stored.count)
            return stored
        }
        if checkingMembership {
            var outsiders: Set<String> = []
            for chunk in recipients.chunks(of: max(1, settings.batchSize)) {
                let tenants = try await accounts.store.tenants(ofUsers: Array(chunk))
                outsiders.formUnion(chunk.filter { tenants[$0] != tenantId })
            }
            if !outsiders.isEmpty { throw NotTenantMembers(userIds: outsiders) }
            for observer in observers { await observer.willStoreCheckedPublish(to: recipients, tenantId: tenantId) }
        }
        let batchSize = max(1, settings.batchSize)
        var stored: [StoredNotification] = []
        stored.reserveCapacity(recipients.count)
        let database = store.database
        let hub = self.hub
        let observers = self.observers
        for batch in recipients.chunks(of: batchSize).map(Array.init) {
            if db == nil { batcher.transactions.add(1, ordering: .relaxed) }
            // The announcement is delivered after the commit on both engines (no dual write).
            let rows = try await database.transaction(joining: db) { db in
                let publish = Publish(draft: draft, tenantId: tenantId, userIds: batch, now: now)
                // Vouched for or checked above: not refused.
                return try await PublishStore.storeAndAnnounce([publish], observers: observers, hub: hub, on: db)[0].get()
            }
            stored += rows
        }
        noteStored(stored.count)
        return stored
    }
}

/// Sees every batch of notifications stored by a publish, inside the publishing transaction,
/// so that work planned there (outbound deliveries) commits or rolls back with the rows.
/// Recipients who turned in-app off appear under a notification id that has no inbox row.
package protocol PublishObserver: Sendable {
    /// Called once per stored batch (never with an empty one), on the transaction's connection.
    /// - Throws: any error, which rolls the batch back.
    func didStore(_ rows: [StoredNotification], draft: NotificationDraft, preferences: [String: NotificationPreferences], on db: any SQLDatabase)
        async throws

    /// Called once for the publishes stored together in one transaction (``PublishBatcher``),
    /// in their order, none empty; an observer that reads per tenant reads once here instead of
    /// once per publish. By default, ``didStore(_:draft:preferences:on:)`` for each.
    /// - Throws: any error, which rolls every publish of the batch back.
    func didStore(_ publishes: [StoredPublish], on db: any SQLDatabase) async throws

    /// Called for a publisher's request (`checkingMembership`) to `userIds` of `tenantId`
    /// before the transaction that stores it opens. A publish stored in a batch
    /// (``PublishBatcher``) is checked inside that transaction, in the same locked read of its
    /// recipients that the store uses, so a user deleted from here on makes it refused
    /// (``NotTenantMembers``); a publish to more users than a batch holds was checked by a read
    /// of its own before this call, and a user deleted from here on is left out inside its
    /// transaction. By default nothing; tests delete a user here to order a deletion before
    /// the store.
    func willStoreCheckedPublish(to userIds: [String], tenantId: String) async
}

extension PublishObserver {
    /// ``didStore(_:draft:preferences:on:)`` for each publish, in order.
    package func didStore(_ publishes: [StoredPublish], on db: any SQLDatabase) async throws {
        for publish in publishes { try await didStore(publish.rows, draft: publish.draft, preferences: publish.preferences, on: db) }
    }

    /// Nothing.
    package func willStoreCheckedPublish(to userIds: [String], tenantId: String) async {}
}

/// One publish's share of a batch, as a ``PublishObserver`` sees it: the rows as
/// ``PublishObserver/didStore(_:draft:preferences:on:)`` gets them.
package struct StoredPublish: Sendable {
    /// The stored rows, and those of recipients who turned in-app off (no inbox row).
    package let rows: [StoredNotification]
    /// The draft published.
    package let draft: NotificationDraft
    /// The preferences of the recipients who set any.
    package let preferences: [String: NotificationPreferences]
}
