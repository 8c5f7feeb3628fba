package import CairnHTTP
package import CairnStorage
import Foundation
import SQLKit

/// A to-do item of a tenant.
///
/// As JSON: `{id, title, description, completed, createdBy, createdAt, updatedAt}`.
@MemberwiseInit
@JSONObject
package struct TaskItem: Sendable, Equatable, Versioned, JSONWritable {
    /// UUIDv7.
    package var id: String
    /// Owning tenant (never shown to clients: it is always the caller's).
    @JSONSkip package var tenantId: String
    /// Trimmed, 1–200 characters.
    package var title: String
    /// Up to 10,000 characters, or nil.
    package var description: String?
    /// Done or not.
    package var completed: Bool
    /// Id of the user who created it.
    package var createdBy: String
    /// Row version, the `ETag`.
    @JSONSkip package var version: Int
    /// Epoch milliseconds.
    @JSONTimestamp package var createdAt: Int64
    /// Epoch milliseconds.
    @JSONTimestamp package var updatedAt: Int64
}

/// The tasks module's tables: `Migrations/tasks/*.sql` among its resources.
package enum TasksMigrations {
    /// All migrations of the module, in order.
    package static func all() throws -> [Migration] { try Migration.files(in: .module) }
}

/// A validated change to a task; nil fields stay as they are.
package struct TaskChange: Sendable {
    /// New title.
    package var title: String?
    /// New description; `.some(nil)` clears it.
    package var description: String??
    /// New completion state.
    package var completed: Bool?

    /// Creates a change.
    package init(title: String? = nil, description: String?? = nil, completed: Bool? = nil) {
        self.title = title
        self.description = description
        self.completed = completed
    }

    /// True when the change sets nothing (an empty PATCH `{}`).
    package var isEmpty: Bool { title == nil && description == nil && completed == nil }
}

/// Task persistence, tenant-scoped in every query: another tenant's task is simply absent.
@MemberwiseInit
package struct TaskStore: Sendable {
    let database: Database

    static let columns = "id, tenant_id, title, description, completed, created_by, version, created_at, updated_at"

    /// `columns`, in order, for rows read by name (SQLKit rows of `RETURNING`).
    static let columnNames = columns.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }

    /// A task from a row holding `columns` in order.
    static func task(from row: PositionalRow) throws -> TaskItem {
        TaskItem(
            id: try row.string(0), tenantId: try row.string(1), title: try row.string(2), description: try row.optionalString(3),
            completed: try row.bool(4), createdBy: try row.string(5), version: try row.int(6), createdAt: try row.int64(7),
            updatedAt: try row.int64(8))
    }

    /// A task from a SQLKit row holding `columns`.
    static func task(from row: any SQLRow) throws -> TaskItem {
        try task(from: PositionalRow(row, columns: columnNames))
    }

    /// Tasks of `tenantId` (only done or open ones when `completed` is set), after the id
    /// `after` (before it when `descending`), at most `limit`, in id order: one positional read
    /// of a statement prepared once per connection.
    private func read(tenantId: String, completed: Bool?, after: String?, descending: Bool, limit: Int) async throws -> [TaskItem] {
        var binds: [SQLBindValue] = [.text(tenantId)]
        if let completed { binds.append(.bool(completed)) }
        if let after { binds.append(.text(after)) }
        binds.append(.integer(Int64(limit)))
        let statement: any PreparedRead.Type =
            switch (completed != nil, after != nil, descending) {
            case (false, false, true): ListDesc.self
            case (false, true, true): ListAfterDesc.self
            case (true, false, true): ListCompletedDesc.self
            case (true, true, true): ListCompletedAfterDesc.self
            case (false, false, false): ListAsc.self
            case (false, true, false): ListAfterAsc.self
            case (true, false, false): ListCompletedAsc.self
            case (true, true, false): ListCompletedAfterAsc.self
            }
        return try await database.readRows(statement, binds, Self.task(from:))
    }

    /// A page of a tenant's tasks, newest first (UUIDv7 ids sort by creation time).
    package func list(tenantId: String, completed: Bool?, page: PageRequest) async throws -> Page<TaskItem> {
        let items = try await read(tenantId: tenantId, completed: completed, after: page.after, descending: true, limit: page.limit + 1)
        return Page(fetched: items, page: page, sortKey: \.id)
    }

    /// One task of the tenant, or nil.
    package func get(id: String, tenantId: String) async throws -> TaskItem? {
        guard UUIDv7.isValid(id) else { return nil }
        return try await database.readRows(ByID.self, [.text(id), .text(tenantId)], Self.task(from:)).first
    }

    /// Inserts a new task: one prepared write (planned once per connection on PostgreSQL,
    /// compiled once per connection on SQLite), durable when it returns.
    ///
    /// `tasks.tenant_id` is a foreign key to `tenants`, so an insert racing its tenant's deletion
    /// (`DELETE /users/me?tenant=delete`) either commits first, and the deletion removes the
    /// row, or finds the tenant gone and fails: no task outlives its tenant.
    /// - Throws: 401 `invalid_token` when the tenant no longer exists (deleting a tenant ends
    ///   every session of it, so the caller's token was revoked while the request ran).
    package func insert(_ task: TaskItem) async throws {
        let binds: [SQLBindValue] = [
            .text(task.id), .text(task.tenantId), .text(task.title), task.description.map(SQLBindValue.text) ?? .null, .bool(task.completed),
            .text(task.createdBy), .integer(Int64(task.version)), .integer(task.createdAt), .integer(task.updatedAt),
        ]
        do {
            _ = try await database.writeRows(Insert.self, binds) { _ in () }
        } catch  where Database.isForeignKeyViolation(error) {
            throw Self.tenantDeleted
        }
    }

    /// What a write into a deleted tenant answers: what the caller's token answers from now on.
    static let tenantDeleted = AppError.unauthorized(
        code: .invalidToken, detail: "The access token has been revoked: its tenant was deleted.", invalidToken: true)

    /// Applies a change when the version matches (any version when nil); nil when the task is
    /// missing or its version moved on.
    package func update(id: String, tenantId: String, expectedVersion: Int?, change: TaskChange) async throws -> TaskItem? {
        guard UUIDv7.isValid(id) else { return nil }
        let row = VersionedRow(table: "tasks", id: id, tenantId: tenantId, expectedVersion: expectedVersion)
        // Nothing to change (PATCH `{}`): no write, so `version`, `ETag` and `updatedAt` stay
        // (as Stripe answers an update without parameters); `If-Match` still applies.
        if change.isEmpty { return row.unchanged(try await get(id: id, tenantId: tenantId)) }
        let now = WallClock.milliseconds()
        return try await database.write { db in
            // Values equal to the stored ones change nothing: the version and `updatedAt` stay.
            var sets = VersionedAssignments()
            if let title = change.title { sets.set("title", title) }
            if let description = change.description { sets.set("description", description) }
            if let completed = change.completed { sets.set("completed", completed) }
            return try await db.raw(row.update(sets, now: now, returning: Self.columns)).first().map(Self.task(from:))
        }
    }

    /// Deletes a task when the version matches (any when nil); false when nothing was deleted.
    package func delete(id: String, tenantId: String, expectedVersion: Int?) async throws -> Bool {
        guard UUIDv7.isValid(id) else { return false }
        let row = VersionedRow(table: "tasks", id: id, tenantId: tenantId, expectedVersion: expectedVersion)
        return try await database.write { db in try await db.raw(row.delete()).first() != nil }
    }

    /// Up to `limit` of a tenant's tasks (only done or only open ones when `completed` is set)
    /// in ascending id (creation) order, starting after the id `after` (nil: from the first).
    /// Keyset batches for streaming readers such as reports: each call is one short read, so no
    /// cursor or transaction stays open between batches.
    package func batch(tenantId: String, completed: Bool? = nil, after: String?, limit: Int) async throws -> [TaskItem] {
        try await read(tenantId: tenantId, completed: completed, after: after, descending: false, limit: limit)
    }

    /// ``batch(tenantId:completed:after:limit:)`` read in place: each row is lent to `body`,
    /// which folds it into `state`, instead of becoming a ``TaskItem`` (reports copy the
    /// fields straight into their CSV). `body` runs where the rows arrive (an event loop on
    /// PostgreSQL): keep it short.
    /// - Returns: the state after the last row.
    package func scanBatch<State: Sendable>(
        tenantId: String, completed: Bool? = nil, after: String?, limit: Int, into state: State,
        _ body: @escaping @Sendable (inout State, inout TaskRowView) throws -> Void
    ) async throws -> State {
        var binds: [SQLBindValue] = [.text(tenantId)]
        if let completed { binds.append(.bool(completed)) }
        if let after { binds.append(.text(after)) }
        binds.append(.integer(Int64(limit)))
        let sql =
            switch (completed != nil, after != nil) {
            case (false, false): Self.scanSQL
            case (false, true): Self.scanAfterSQL
            case (true, false): Self.scanCompletedSQL
            case (true, true): Self.scanCompletedAfterSQL
            }
        return try await database.scanRows(sql, binds, into: state) { state, row in
            var view = TaskRowView(row)
            try body(&state, &view)
        }
    }

    /// Inserts many tasks in multi-row statements of at most 1,000 rows, all in one transaction
    /// (for seeding demo data fast).
    package func insertBatch(_ tasks: [TaskItem]) async throws {
        guard !tasks.isEmpty else { return }
        try await database.transaction { db in
            for chunk in tasks.chunks(of: 1000) {
                let rows = chunk.map { task in
                    SQLQueryString(
                        """
                        (\(bind: task.id), \(bind: task.tenantId), \(bind: task.title), \(bind: task.description), \(bind: task.completed),
                        \(bind: task.createdBy), \(bind: task.version), \(bind: task.createdAt), \(bind: task.updatedAt))
                        """)
                }
                try await db.raw("INSERT INTO tasks (\(unsafeRaw: Self.columns)) VALUES \(SQLList(rows))").run()
            }
        }
    }
}

// The hot reads' statements, each prepared once per PostgreSQL connection. A list read has
// eight shapes (completed filter or not, keyset position or not, direction), each its own
// statement, so every plan can use the index that fits it. Stored constants: a request builds
// no SQL text.

extension TaskStore {
    /// A new task. `version` is an INTEGER column, so its bigint parameter is cast: a
    /// prepared statement's parameter types come from the first planning.
    enum Insert: PreparedRead {
        static let name = "cairn_tasks_insert"
        static let sql = "INSERT INTO tasks (\(columns)) VALUES ($1, $2, $3, $4, $5, $6, CAST($7 AS BIGINT), $8, $9)"
    }

    /// One task by id, within a tenant.
    enum ByID: PreparedRead {
        static let name = "cairn_tasks_by_id"
        static let sql = "SELECT \(columns) FROM tasks WHERE id = $1 AND tenant_id = $2"
    }

    /// A list read of `columns`: `$1` the tenant, then `completed` and the keyset id when
    /// present, then the limit.
    static func listSQL(completed: Bool, after: Bool, descending: Bool, columns: String = columns) -> String {
        var sql = "SELECT \(columns) FROM tasks WHERE tenant_id = $1"
        var count = 1
        if completed {
            count += 1
            sql += " AND completed = $\(count)"
        }
        if after {
            count += 1
            sql += descending ? " AND id < $\(count)" : " AND id > $\(count)"
        }
        return sql + (descending ? " ORDER BY id DESC" : " ORDER BY id ASC") + " LIMIT $\(count + 1)"
    }

    /// The columns a ``TaskRowView`` reads, in its order: what a task shows, without the
    /// tenant and the version.
    static let scanColumns = "id, title, description, completed, created_by, created_at, updated_at"
    static let scanSQL = listSQL(completed: false, after: false, descending: false, columns: scanColumns)
    static let scanAfterSQL = listSQL(completed: false, after: true, descending: false, columns: scanColumns)
    static let scanCompletedSQL = listSQL(completed: true, after: false, descending: false, columns: scanColumns)
    static let scanCompletedAfterSQL = listSQL(completed: true, after: true, descending: false, columns: scanColumns)

    enum ListDesc: PreparedRead {
        static let name = "cairn_tasks_list_desc"
        static let sql = listSQL(completed: false, after: false, descending: true)
    }
    enum ListAfterDesc: PreparedRead {
        static let name = "cairn_tasks_list_after_desc"
        static let sql = listSQL(completed: false, after: true, descending: true)
    }
    enum ListCompletedDesc: PreparedRead {
        static let name = "cairn_tasks_list_completed_desc"
        static let sql = listSQL(completed: true, after: false, descending: true)
    }
    enum ListCompletedAfterDesc: PreparedRead {
        static let name = "cairn_tasks_list_completed_after_desc"
        static let sql = listSQL(completed: true, after: true, descending: true)
    }
    enum ListAsc: PreparedRead {
        static let name = "cairn_tasks_list_asc"
        static let sql = listSQL(completed: false, after: false, descending: false)
    }
    enum ListAfterAsc: PreparedRead {
        static let name = "cairn_tasks_list_after_asc"
        static let sql = listSQL(completed: false, after: true, descending: false)
    }
    enum ListCompletedAsc: PreparedRead {
        static let name = "cairn_tasks_list_completed_asc"
        static let sql = listSQL(completed: true, after: false, descending: false)
    }
    enum ListCompletedAfterAsc: PreparedRead {
        static let name = "cairn_tasks_list_completed_after_asc"
        static let sql = listSQL(completed: true, after: true, descending: false)
    }
}

/// One task row of ``TaskStore/scanBatch(tenantId:completed:after:limit:into:_:)``, read in
/// place and in column order: each accessor reads the next column, so call them once each, in
/// the order they are declared (an accessor out of order throws `PositionalRowError`). Text
/// fields are lent as UTF-8 bytes, valid only during the call that lends them. Nothing is kept
/// per column: a report reads millions of rows, and holding their cells cost more than
/// writing them.
package struct TaskRowView {
    private var row: RowCursor
    /// The column the next accessor must be for.
    private var nextField = 0

    /// A view over a row of `TaskStore.scanColumns`.
    init(_ row: RowCursor) {
        self.row = row
    }

    /// The next column, which must be `field`.
    private mutating func cell(_ field: Int) throws -> RowCell {
        guard field == nextField else { throw PositionalRowError.outOfOrder(column: field) }
        nextField += 1
        return try row.next()
    }

    /// Lends the id's bytes to `body`.
    package mutating func withID<T>(_ body: (UnsafeBufferPointer<UInt8>) throws -> T) throws -> T { try cell(0).withText(body) }
    /// Lends the title's bytes to `body`.
    package mutating func withTitle<T>(_ body: (UnsafeBufferPointer<UInt8>) throws -> T) throws -> T { try cell(1).withText(body) }
    /// Lends the description's bytes to `body`, nil when there is none.
    package mutating func withDescription<T>(_ body: (UnsafeBufferPointer<UInt8>?) throws -> T) throws -> T {
        try cell(2).withOptionalText(body)
    }
    /// Done or not.
    package mutating func completed() throws -> Bool { try cell(3).bool() }
    /// Lends the creating user's id's bytes to `body`.
    package mutating func withCreatedBy<T>(_ body: (UnsafeBufferPointer<UInt8>) throws -> T) throws -> T { try cell(4).withText(body) }
    /// Epoch milliseconds.
    package mutating func createdAt() throws -> Int64 { try cell(5).int64() }
    /// Epoch milliseconds.
    package mutating func updatedAt() throws -> Int64 { try cell(6).int64() }
}
