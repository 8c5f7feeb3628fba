package import CairnCatalog
package import CairnHTTP
package import CairnStorage
package import CairnTasks
import Foundation

@testable package import CairnAccounts
@testable package import CairnFiles
@testable package import CairnJobs
@testable package import CairnNotifications
@testable package import CairnPipelines

/// A tenant made by ``Factory/tenant(on:name:)``.
package struct TenantRow: Sendable, Hashable {
    /// The tenant's id.
    package let id: String
    /// Its name.
    package let name: String

    /// Names an existing tenant (one registered through the API, say).
    package init(id: String, name: String) {
        self.id = id
        self.name = name
    }
}

/// Typed row builders for store-level tests (the role of River's `testfactory`): each inserts a
/// valid row through its module's store with sensible defaults, so a test states only the
/// fields it is about. Every default that must be unique (emails, SKUs, ids) is made unique.
package enum Factory {
    /// A fresh suffix for unique defaults.
    static func unique() -> String { UUIDv7.make() }

    // MARK: Accounts

    /// Inserts a tenant without users.
    package static func tenant(on database: Database, name: String = "Factory tenant") async throws -> TenantRow {
        let id = try await AccountStore(database: database).createTenant(name: name)
        return TenantRow(id: id, name: name)
    }

    /// Inserts a user into `tenant`. `email` defaults to a unique address; its lower-cased form
    /// is the uniqueness key, as the service computes it.
    /// - Throws: 409 `conflict` when the email is taken (in any tenant).
    package static func user(
        on database: Database, tenant: TenantRow, email: String? = nil, name: String = "Factory user", role: Role = .member,
        passwordHash: String = "not-a-real-hash", createdAt: Int64 = WallClock.milliseconds()
    ) async throws -> User {
        let email = email ?? "user-\(unique())@example.com"
        let user = User(
            id: UUIDv7.make(), tenantId: tenant.id, email: email, name: name, role: role, version: 1, createdAt: createdAt, updatedAt: createdAt)
        try await AccountStore(database: database).insertUser(user, passwordHash: passwordHash, emailKey: email.lowercased())
        return user
    }

    // MARK: Tasks

    /// Inserts a task of `tenant`.
    package static func task(
        on database: Database, tenant: TenantRow, title: String = "Factory task", description: String? = nil, completed: Bool = false,
        createdBy: String = "01900000-0000-7000-8000-000000000000", createdAt: Int64 = WallClock.milliseconds()
    ) async throws -> TaskItem {
        let task = TaskItem(
            id: UUIDv7.make(), tenantId: tenant.id, title: title, description: description, completed: completed, createdBy: createdBy,
            version: 1, createdAt: createdAt, updatedAt: createdAt)
        try await TaskStore(database: database).insert(task)
        return task
    }

    // MARK: Jobs

    /// The job a factory would insert (not inserted): waiting, `scheduled` when `runAt` is
    /// after `now`, else `available`, as the queue makes them.
    package static func jobRow(
        tenant: TenantRow, kind: String = "noop", args: String = "{}", queue: String = "default", priority: Int = 1,
        runAt: Int64? = nil, now: Int64 = WallClock.milliseconds(), uniqueKey: String? = nil, maxAttempts: Int = 20, createdBy: String? = nil
    ) -> Job {
        let runAt = runAt ?? now
        return Job(
            id: UUIDv7.make(), tenantId: tenant.id, queue: queue, kind: kind, args: args, priority: priority,
            state: runAt > now ? .scheduled : .available, attempt: 0, maxAttempts: maxAttempts, runAt: runAt, progress: nil, checkpoint: nil,
            errors: "[]", uniqueKey: uniqueKey, createdBy: createdBy, createdAt: now, attemptedAt: nil, finishedAt: nil, leaseOwner: nil,
            leaseExpiresAt: nil, cancelRequestedAt: nil, version: 1)
    }

    /// Inserts a waiting job of `tenant` through the store's insert (unique keys apply: the
    /// answer is then the unfinished job holding the key).
    package static func job(
        on database: Database, tenant: TenantRow, kind: String = "noop", args: String = "{}", queue: String = "default", priority: Int = 1,
        runAt: Int64? = nil, now: Int64 = WallClock.milliseconds(), uniqueKey: String? = nil, maxAttempts: Int = 20, createdBy: String? = nil
    ) async throws -> Job {
        let row = jobRow(
            tenant: tenant, kind: kind, args: args, queue: queue, priority: priority, runAt: runAt, now: now, uniqueKey: uniqueKey,
            maxAttempts: maxAttempts, createdBy: createdBy)
        return try await database.write { db in try await JobStore.insert(row, on: db).job }
    }

    /// Inserts a job and claims it for `node` (state `running`, attempt 1, leased until
    /// `now + leaseMs`). It waits on a queue of its own unless `queue` is given, so the claim
    /// takes this job and no other.
    /// - Throws: `TestSetupError` when the claim took another job or none.
    package static func runningJob(
        on database: Database, tenant: TenantRow, node: String = "factory-node", kind: String = "noop", queue: String? = nil,
        uniqueKey: String? = nil, maxAttempts: Int = 20, now: Int64 = WallClock.milliseconds(), leaseMs: Int64 = 30_000
    ) async throws -> Job {
        let queue = queue ?? "factory-\(unique())"
        let job = try await Self.job(
            on: database, tenant: tenant, kind: kind, queue: queue, now: now, uniqueKey: uniqueKey, maxAttempts: maxAttempts)
        let claimed = try await JobStore(database: database).claim(
            node: node, limit: 1, excludedTenants: [], queues: [queue], now: now, leaseMs: leaseMs)
        guard claimed.count == 1, let running = claimed.first, running.id == job.id else {
            throw TestSetupError("claiming the factory job \(job.id) took \(claimed.map(\.id))")
        }
        return running
    }

    /// Inserts a job and runs it to the final `state` (`succeeded`, `cancelled` or
    /// `discarded`) finished at `finishedAt`, through claim and finish.
    package static func finishedJob(
        on database: Database, tenant: TenantRow, state: JobState = .succeeded, kind: String = "noop", uniqueKey: String? = nil,
        finishedAt: Int64 = WallClock.milliseconds()
    ) async throws -> Job {
        precondition(state.isFinal, "a finished job ends in a final state")
        let running = try await runningJob(on: database, tenant: tenant, kind: kind, uniqueKey: uniqueKey, now: finishedAt)
        let store = JobStore(database: database)
        guard try await store.finish(id: running.id, node: running.leaseOwner ?? "", state: state, now: finishedAt),
            let finished = try await store.job(id: running.id, tenantId: tenant.id)
        else { throw TestSetupError("finishing the factory job \(running.id) failed") }
        return finished
    }

    // MARK: Catalog

    /// Inserts a product of `tenant`. `sku` defaults to a unique one.
    /// - Throws: 409 `conflict` when the SKU is taken in the tenant.
    package static func product(
        on database: Database, tenant: TenantRow, sku: String? = nil, name: String = "Factory product", description: String? = nil,
        priceMinor: Int64 = 1_000, currency: String = "EUR", category: String? = nil, stock: Int64 = 10, attributes: String = "{}",
        createdAt: Int64 = WallClock.milliseconds(), updatedAt: Int64? = nil
    ) async throws -> Product {
        let product = productRow(
            tenant: tenant, sku: sku, name: name, description: description, priceMinor: priceMinor, currency: currency, category: category,
            stock: stock, attributes: attributes, createdAt: createdAt, updatedAt: updatedAt)
        try await ProductStore(database: database).insert(product)
        return product
    }

    /// The product ``product(on:tenant:sku:name:description:priceMinor:currency:category:stock:attributes:createdAt:updatedAt:)``
    /// would insert, not inserted (for upserts).
    package static func productRow(
        tenant: TenantRow, sku: String? = nil, name: String = "Factory product", description: String? = nil, priceMinor: Int64 = 1_000,
        currency: String = "EUR", category: String? = nil, stock: Int64 = 10, attributes: String = "{}",
        createdAt: Int64 = WallClock.milliseconds(), updatedAt: Int64? = nil
    ) -> Product {
        Product(
            id: UUIDv7.make(), tenantId: tenant.id, sku: sku ?? "SKU-\(unique())", name: name, description: description, priceMinor: priceMinor,
            currency: currency, category: category, stock: stock, attributes: attributes, version: 1, createdAt: createdAt,
            updatedAt: updatedAt ?? createdAt)
    }

    // MARK: Files

    /// Records a file of `tenant` through the quota-checking insert (default quotas, so it
    /// counts towards the tenant's total and the upload hour `hour`).
    /// - Throws: `FileStore.QuotaExceeded` when `quotas` refuse it.
    package static func file(
        on database: Database, tenant: TenantRow, name: String = "factory.csv", size: Int64 = 100, format: String = "csv",
        contentType: String = "text/csv", createdBy: String? = nil, quotas: FileQuotas = FileQuotas(), hour: Int64 = 0,
        countsAsUpload: Bool = true, createdAt: Int64 = WallClock.milliseconds()
    ) async throws -> StoredFile {
        let file = StoredFile(
            id: UUIDv7.make(), tenantId: tenant.id, name: name, size: size, sha256: String(repeating: "0", count: 64), contentType: contentType,
            format: format, createdBy: createdBy, createdAt: createdAt)
        try await FileStore(database: database).insert(file, quotas: quotas, hour: hour, countsAsUpload: countsAsUpload)
        return file
    }

    /// Records a new tus upload of `tenant` at offset 0.
    package static func upload(
        on database: Database, tenant: TenantRow, length: Int64 = 1_000, name: String = "factory.csv", contentType: String = "text/csv",
        format: String = "csv", createdBy: String? = nil, createdAt: Int64 = WallClock.milliseconds(), expiresAt: Int64? = nil
    ) async throws -> TusUpload {
        let upload = TusUpload(
            id: UUIDv7.make(), tenantId: tenant.id, createdBy: createdBy, length: length, offset: 0, name: name, contentType: contentType,
            format: format, fileId: nil, expiresAt: expiresAt ?? createdAt + 86_400_000, createdAt: createdAt)
        try await UploadStore(database: database).create(upload)
        return upload
    }

    // MARK: Pipelines

    /// A CSV-to-CSV specification running `sql` over `input`.
    package static func pipelineSpec(sql: String = "SELECT * FROM input", cron: String? = nil) -> PipelineSpec {
        PipelineSpec(
            input: .init(format: .csv, options: nil, recordPath: nil, columns: nil), sql: sql, output: .init(format: .csv), onRowError: .fail,
            schedule: cron.map { .init(cron: $0, timeZone: nil, source: nil, namePattern: nil) })
    }

    /// Inserts a pipeline of `tenant` through the store's insert, in a transaction of its own.
    package static func pipeline(
        on database: Database, tenant: TenantRow, name: String = "Factory pipeline", spec: PipelineSpec = pipelineSpec(),
        scheduleId: String? = nil, createdBy: String? = nil, createdAt: Int64 = WallClock.milliseconds()
    ) async throws -> Pipeline {
        let pipeline = Pipeline(
            id: UUIDv7.make(), tenantId: tenant.id, name: name, spec: spec, scheduleId: scheduleId, lastScheduledFileId: nil, createdBy: createdBy,
            createdAt: createdAt, updatedAt: createdAt, version: 1)
        try await database.transaction { db in try await PipelineStore.insert(pipeline, on: db) }
        return pipeline
    }

    // MARK: Notifications

    /// Publishes one notification to each of `users` of `tenant` through the store's write path
    /// (``PublishStore``), in a transaction of its own (preferences, sequence numbers and dedupe
    /// keys apply; no outbound observer).
    /// - Returns: the stored notifications, in `users` order (users holding `dedupeKey` skipped).
    package static func notifications(
        on database: Database, tenant: TenantRow, users: [String], type: String = "message", title: String = "Factory notification",
        body: String = "", data: JSONValue = .object([:]), dedupeKey: String? = nil, now: Int64 = WallClock.milliseconds()
    ) async throws -> [StoredNotification] {
        let draft = NotificationDraft(type: type, title: title, body: body, data: data, dedupeKey: dedupeKey)
        let userIds = Array(Set(users)).sorted()
        let stored = try await database.transaction { db in
            try await PublishStore.store(draft, tenantId: tenant.id, userIds: userIds, now: now, on: db)
        }
        let byUser = Dictionary(uniqueKeysWithValues: stored.map { ($0.userId, $0) })
        return users.compactMap { byUser[$0] }
    }

    /// Publishes one notification to `user` of `tenant`.
    /// - Throws: `TestSetupError` when the user already holds `dedupeKey` (nothing stored).
    package static func notification(
        on database: Database, tenant: TenantRow, user: String, type: String = "message", title: String = "Factory notification",
        body: String = "", data: JSONValue = .object([:]), dedupeKey: String? = nil, now: Int64 = WallClock.milliseconds()
    ) async throws -> StoredNotification {
        let stored = try await notifications(
            on: database, tenant: tenant, users: [user], type: type, title: title, body: body, data: data, dedupeKey: dedupeKey, now: now)
        guard let first = stored.first else { throw TestSetupError("the user already holds the dedupe key \(dedupeKey ?? "")") }
        return first
    }

    /// Saves `preferences` as the user's.
    package static func preferences(
        on database: Database, tenant: TenantRow, user: String,
        _ preferences: NotificationPreferences = NotificationPreferences(types: ["*": ["email": true]], quietHours: nil)
    ) async throws -> NotificationPreferences {
        try await PreferenceStore(database: database).save(preferences, tenantId: tenant.id, userId: user)
        return preferences
    }
}
