import CSQLiteNIOConfig
import NIOCore
import NIOPosix
import SQLiteNIO
import Synchronization
import VaporCSQLite

/// A statement SQLite reported an error for, from the statement cache's own executions
/// (SQLiteNIO's `SQLiteError` cannot be made outside SQLiteNIO).
package struct SQLiteStatementError: Error, Sendable, CustomStringConvertible {
    /// SQLite's extended result code.
    package var code: Int32
    /// SQLite's message (`sqlite3_errmsg`), e.g. `UNIQUE constraint failed: tasks.id`.
    package var message: String

    /// `message (code)`.
    package var description: String { "\(message) (SQLite code \(code))" }
}

/// How often the SQLite statement caches prepared a statement and reused one, summed over a
/// database's connections (see ``Database/sqliteStatementCacheCounts``).
package struct SQLiteStatementCacheCounts: Sendable, Equatable {
    /// Statements compiled by `sqlite3_prepare_v3`.
    package var prepared: Int
    /// Executions that took an already prepared statement from a cache.
    package var reused: Int
    /// Prepared statements the caches hold right now (0 once the database is closed).
    package var held: Int
    /// Times SQLite compiled a cached statement again by itself (after a schema change, or
    /// when a bound value its plan used changed: `SQLITE_STMTSTATUS_REPREPARE`).
    package var recompiled: Int = 0
    /// Executions run on the caller's thread, without the hop to the thread pool.
    package var onCallingThread: Int = 0
    /// Hops to the thread pool (each a thread switch there and one back).
    package var poolHops: Int = 0
}

/// Prepared statements of one SQLite connection, kept between executions and keyed by their
/// SQL text, so a hot statement is compiled once per connection instead of on every request
/// (SQLiteNIO prepares and finalizes a statement per query: `sqlite3LockAndPrepare` was ~5% of
/// the CPU of `GET /tasks` on SQLite).
///
/// A statement is checked out for one execution and returned reset with its bindings cleared,
/// so two executions on one connection never share one; at most ``perKey`` idle copies of a
/// statement and ``capacity`` in all are kept, the rest finalized. A schema change needs
/// nothing here: statements from `sqlite3_prepare_v3` recompile themselves on `SQLITE_SCHEMA`.
/// ``close()`` finalizes every idle statement; call it before closing the connection
/// (`sqlite3_close` refuses a connection with unfinalized statements).
///
/// Every call that touches SQLite runs on `threadPool` (SQLite calls block), and the
/// connection is opened in serialized mode (`SQLITE_OPEN_FULLMUTEX`), so using the handle
/// beside SQLiteNIO's own calls on it is safe.
final class SQLiteStatementCache: Sendable {
    /// A `sqlite3*` or `sqlite3_stmt*`; only touched under the rules above.
    private struct Pointer: @unchecked Sendable {
        let raw: OpaquePointer
    }
    private struct State {
        var idle: [String: [Pointer]] = [:]
        var held = 0
        var closed = false
    }

    private let handle: Pointer
    private let threadPool: NIOThreadPool
    private let state = Mutex(State())
    private let preparedCount = Atomic<Int>(0)
    private let reusedCount = Atomic<Int>(0)
    private let recompiledCount = Atomic<Int>(0)
    private let callingThreadCount = Atomic<Int>(0)
    private let poolHopCount = Atomic<Int>(0)
    /// Idle statements kept in all; hot statements are a few dozen fixed texts.
    let capacity: Int
    /// Idle copies kept of one statement (one per thread that may run it at once).
    let perKey: Int

    /// A cache for `connection`, or nil when its `sqlite3*` handle cannot be reached (then the
    /// connection's statements go through SQLiteNIO, prepared on every run, as before).
    init?(connection: SQLiteConnection, threadPool: NIOThreadPool, capacity: Int = 64, perKey: Int = 4) {
        guard let raw = Self.rawHandle(of: connection) else { return nil }
        // Query planner stability (SQLITE_DBCONFIG_ENABLE_QPSG): without it SQLite plans some
        // statements with their bound values (a term it can compare with a bound parameter, a
        // bound LIMIT, a LIKE pattern) and marks them to be compiled again whenever that
        // parameter is bound anew, which clearing the bindings after each run also does: the
        // task list was parsed and planned again on every request (7 % of `GET /tasks`'s CPU).
        // A cached statement is compiled once. Failing leaves the connection as it was: slower.
        _ = cairn_sqlite_nio_db_config(UnsafeMutableRawPointer(raw), SQLITE_DBCONFIG_ENABLE_QPSG, 1)
        self.handle = Pointer(raw: raw)
        self.threadPool = threadPool
        self.capacity = capacity
        self.perKey = perKey
    }

    /// The connection's `sqlite3*`. SQLiteNIO keeps it internal (`handle.raw`) and offers no
    /// statement reuse, so it is read by reflection once, when the connection opens; a SQLiteNIO
    /// that renames it yields nil here, and the statement-cache test then fails.
    private static func rawHandle(of connection: SQLiteConnection) -> OpaquePointer? {
        guard let value = Mirror(reflecting: connection).descendant("handle", "raw") else { return nil }
        return (value as? OpaquePointer?) ?? nil
    }

    /// How many statements this cache prepared, reused and holds.
    var counts: SQLiteStatementCacheCounts {
        SQLiteStatementCacheCounts(
            prepared: preparedCount.load(ordering: .relaxed), reused: reusedCount.load(ordering: .relaxed),
            held: state.withLock { $0.held }, recompiled: recompiledCount.load(ordering: .relaxed),
            onCallingThread: callingThreadCount.load(ordering: .relaxed), poolHops: poolHopCount.load(ordering: .relaxed))
    }

    /// Runs `sql` with `binds` on the thread pool, with a cached statement, and decodes its rows
    /// by position.
    /// - Throws: ``SQLiteStatementError`` for SQLite's errors, or what `decode` throws.
    func rows<R: Sendable>(_ sql: String, _ binds: [SQLBindValue], _ decode: @escaping @Sendable (PositionalRow) throws -> R) async throws -> [R] {
        try await onThreadPool { try self.run(sql, binds, decode) }
    }

    /// Runs `body` on the thread pool, in one hop; `body` may call ``rowsInPlace(_:_:_:)`` and
    /// ``executeInPlace(_:)`` any number of times.
    /// - Throws: what `body` throws, or the thread pool's error when it is shut down.
    func onThreadPool<R: Sendable>(_ body: @escaping @Sendable () throws -> R) async throws -> R {
        poolHopCount.add(1, ordering: .relaxed)
        return try await threadPool.runIfActive(body)
    }

    /// Runs `sql` like ``rows(_:_:_:)`` on the current thread, which must be the thread pool's:
    /// inside ``onThreadPool(_:)``.
    /// - Throws: ``SQLiteStatementError`` for SQLite's errors, or what `decode` throws.
    func rowsInPlace<R>(_ sql: String, _ binds: [SQLBindValue], _ decode: (PositionalRow) throws -> R) throws -> [R] {
        try run(sql, binds, decode)
    }

    /// Runs statements without bindings or rows one after another on the current thread, which
    /// must be the thread pool's (inside ``onThreadPool(_:)``); stops at the first error.
    /// - Throws: ``SQLiteStatementError``.
    func executeInPlace(_ statements: [String]) throws {
        for sql in statements { _ = try run(sql, [], { _ in () }) }
    }

    /// Runs `sql` like ``rows(_:_:_:)`` but on the calling thread, without the hop to the thread
    /// pool and back (two thread switches). For short reads on a connection no other thread is
    /// using (see `SQLiteBackend.cachedRead`): SQLite blocks the caller while it runs.
    /// - Throws: ``SQLiteStatementError`` for SQLite's errors, or what `decode` throws.
    func rowsOnCallingThread<R>(_ sql: String, _ binds: [SQLBindValue], _ decode: (PositionalRow) throws -> R) throws -> [R] {
        callingThreadCount.add(1, ordering: .relaxed)
        return try run(sql, binds, decode)
    }

    /// Runs statements without bindings or rows (`BEGIN`, `SAVEPOINT`, `COMMIT`, …) one after
    /// another in one hop to the thread pool; stops at the first error.
    /// - Throws: ``SQLiteStatementError``.
    func execute(_ statements: [String]) async throws {
        try await onThreadPool { try self.executeInPlace(statements) }
    }

    /// Finalizes every idle statement; statements still running are finalized when they come
    /// back. Call before the connection closes. Idempotent.
    func close() {
        let statements = state.withLock { state -> [Pointer] in
            state.closed = true
            let all = state.idle.values.flatMap { $0 }
            state.idle = [:]
            state.held = 0
            return all
        }
        for statement in statements { sqlite_nio_sqlite3_finalize(statement.raw) }
    }

    // MARK: On the thread pool

    private func run<R>(_ sql: String, _ binds: [SQLBindValue], _ decode: (PositionalRow) throws -> R) throws -> [R] {
        let statement = try checkOut(sql)
        var results: [R] = []
        do {
            try bind(binds, to: statement.raw)
            let count = Int(sqlite_nio_sqlite3_column_count(statement.raw))
            while true {
                let step = sqlite_nio_sqlite3_step(statement.raw)
                if step == SQLITE_DONE { break }
                guard step == SQLITE_ROW else { throw error(step) }
                var values: [SQLiteData] = []
                values.reserveCapacity(count)
                for column in 0..<Int32(count) { values.append(value(statement.raw, column)) }
                results.append(try decode(PositionalRow(sqliteValues: values)))
            }
        } catch {
            // A statement that failed is not kept: finalizing it is the simplest state to trust.
            sqlite_nio_sqlite3_finalize(statement.raw)
            throw error
        }
        let recompiled = sqlite_nio_sqlite3_stmt_status(statement.raw, Int32(SQLITE_STMTSTATUS_REPREPARE), 1)
        if recompiled > 0 { recompiledCount.add(Int(recompiled), ordering: .relaxed) }
        checkIn(sql, statement)
        return results
    }

    private func checkOut(_ sql: String) throws -> Pointer {
        let cached = state.withLock { state -> Pointer? in
            guard let statement = state.idle[sql]?.popLast() else { return nil }
            state.held -= 1
            return statement
        }
        if let cached {
            reusedCount.add(1, ordering: .relaxed)
            return cached
        }
        var statement: OpaquePointer?
        let status = sqlite_nio_sqlite3_prepare_v3(handle.raw, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &statement, nil)
        guard status == SQLITE_OK, let statement else {
            if let statement { sqlite_nio_sqlite3_finalize(statement) }
            throw error(status)
        }
        preparedCount.add(1, ordering: .relaxed)
        return Pointer(raw: statement)
    }

    private func checkIn(_ sql: String, _ statement: Pointer) {
        sqlite_nio_sqlite3_reset(statement.raw)
        sqlite_nio_sqlite3_clear_bindings(statement.raw)
        let kept = state.withLock { state -> Bool in
            guard !state.closed, state.held < capacity, state.idle[sql, default: []].count < perKey else { return false }
            state.idle[sql, default: []].append(statement)
            state.held += 1
            return true
        }
        if !kept { sqlite_nio_sqlite3_finalize(statement.raw) }
    }

    private func bind(_ binds: [SQLBindValue], to statement: OpaquePointer) throws {
        for (offset, bind) in binds.enumerated() {
            let index = Int32(offset + 1)
            let status: Int32
            switch bind {
            case .text(let text): status = bindText(text, statement, index)
            case .integer(let value): status = sqlite_nio_sqlite3_bind_int64(statement, index, value)
            case .bool(let value): status = sqlite_nio_sqlite3_bind_int64(statement, index, value ? 1 : 0)
            case .null: status = sqlite_nio_sqlite3_bind_null(statement, index)
            case .textArray(let values): status = bindText(JSONArrayText.of(values), statement, index)
            }
            guard status == SQLITE_OK else { throw error(status) }
        }
    }

    private func bindText(_ text: String, _ statement: OpaquePointer, _ index: Int32) -> Int32 {
        // withCString never lends a null pointer (SQLite would bind NULL for an empty text);
        // SQLITE_TRANSIENT makes SQLite copy the bytes before the pointer goes away.
        text.withCString { sqlite_nio_sqlite3_bind_text64(statement, index, $0, UInt64(text.utf8.count), Self.transient, UInt8(SQLITE_UTF8)) }
    }

    /// `SQLITE_TRANSIENT`, which does not import: SQLite copies the bound bytes.
    private static var transient: sqlite3_destructor_type { unsafeBitCast(-1, to: sqlite3_destructor_type.self) }

    private func value(_ statement: OpaquePointer, _ column: Int32) -> SQLiteData {
        switch sqlite_nio_sqlite3_column_type(statement, column) {
        case SQLITE_INTEGER: return .integer(Int(sqlite_nio_sqlite3_column_int64(statement, column)))
        case SQLITE_FLOAT: return .float(sqlite_nio_sqlite3_column_double(statement, column))
        case SQLITE_TEXT:
            guard let text = sqlite_nio_sqlite3_column_text(statement, column) else { return .null }
            let count = Int(sqlite_nio_sqlite3_column_bytes(statement, column))
            return .text(String(decoding: UnsafeBufferPointer(start: text, count: count), as: UTF8.self))
        case SQLITE_BLOB:
            let count = Int(sqlite_nio_sqlite3_column_bytes(statement, column))
            var buffer = ByteBufferAllocator().buffer(capacity: count)
            if let blob = sqlite_nio_sqlite3_column_blob(statement, column) {
                buffer.writeBytes(UnsafeRawBufferPointer(start: blob, count: count))
            }
            return .blob(buffer)
        default: return .null
        }
    }

    private func error(_ status: Int32) -> SQLiteStatementError {
        let message = sqlite_nio_sqlite3_errmsg(handle.raw).map { String(cString: $0) } ?? "SQLite error"
        return SQLiteStatementError(code: status, message: message)
    }
}
