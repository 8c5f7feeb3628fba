import Logging
import NIOCore
import PostgresNIO
package import SQLKit
import SQLiteNIO
import Synchronization

/// A value bound to a numbered placeholder (`$1`, `$2`, …) of a positional query.
package enum SQLBindValue: Sendable, Equatable {
    /// Text (PostgreSQL `text`, SQLite TEXT).
    case text(String)
    /// A 64-bit integer (PostgreSQL `int8`, SQLite INTEGER).
    case integer(Int64)
    /// A boolean (PostgreSQL `bool`, SQLite INTEGER 0/1, as SQLKit stores it).
    case bool(Bool)
    /// SQL NULL.
    case null
    /// A list of text values: a PostgreSQL `text[]` (read it with `= ANY($n)` or `<> ALL($n)`);
    /// on SQLite, a JSON array as text (read it with `json_each($n)`).
    case textArray([String])

    /// The values as PostgreSQL bindings.
    static func postgresBindings(_ binds: [SQLBindValue]) -> PostgresBindings {
        var bindings = PostgresBindings(capacity: binds.count)
        for bind in binds {
            switch bind {
            case .text(let text): bindings.append(text)
            case .integer(let value): bindings.append(value)
            case .bool(let value): bindings.append(value)
            case .null: bindings.appendNull()
            case .textArray(let values): bindings.append(values)
            }
        }
        return bindings
    }
}

/// Thrown when a column of a positional row does not hold the type asked for.
package struct PositionalRowError: Error, Sendable, CustomStringConvertible {
    /// The zero-based column index.
    package var column: Int
    /// The type asked for.
    package var expected: String

    /// The column at the zero-based index `column` was asked for before the columns ahead of
    /// it were read (row views read their columns in order).
    package static func outOfOrder(column: Int) -> Self { Self(column: column, expected: "read after the columns before it") }

    /// A short diagnosis for logs (no values: they may be user data).
    package var description: String { "column \(column) is not \(expected)" }
}

/// One result row read by column position, in `SELECT` order, without Codable.
///
/// Hot reads use it instead of SQLKit's `decode(column:as:)`, whose per-cell Codable machinery
/// (a decoder, a coding path and a name lookup per cell) cost a fifth of the server's CPU on
/// `GET /tasks` on PostgreSQL. Rows from SQLKit (writes with `RETURNING`) are read through the
/// same accessors by column name, so each model keeps one row decoder.
package struct PositionalRow {
    private enum Storage {
        case postgres(PostgresRandomAccessRow)
        /// The values, taken once: `SQLiteRow.columns` builds a new array on every access.
        case sqlite([SQLiteData])
        case sqlKit(any SQLRow, columns: [String])
    }

    private let storage: Storage

    private init(_ storage: Storage) {
        self.storage = storage
    }

    /// Wraps a SQLKit row whose columns are named, in order, by `columns` (a SQLite row is read
    /// by position straight away: its columns are in the statement's order).
    package init(_ row: any SQLRow, columns: [String]) {
        if let sqlite = row as? SQLiteRow {
            self.storage = .sqlite(sqlite.columns.map(\.data))
        } else {
            self.storage = .sqlKit(row, columns: columns)
        }
    }

    fileprivate static func postgres(_ row: PostgresRow) -> PositionalRow { PositionalRow(.postgres(row.makeRandomAccess())) }
    fileprivate static func sqlite(_ row: SQLiteRow) -> PositionalRow { PositionalRow(.sqlite(row.columns.map(\.data))) }

    /// A row of SQLite values in `SELECT` order (the statement cache's rows).
    init(sqliteValues: [SQLiteData]) {
        self.storage = .sqlite(sqliteValues)
    }

    /// The text in column `index`.
    /// - Throws: `PositionalRowError` when it is NULL or not text.
    package func string(_ index: Int) throws -> String {
        guard let value = try optionalString(index) else { throw PositionalRowError(column: index, expected: "text") }
        return value
    }

    /// The text in column `index`, nil for NULL.
    /// - Throws: `PositionalRowError` when it is not text.
    package func optionalString(_ index: Int) throws -> String? {
        try column(index, "text") { value in
            switch value {
            case .text(let text): text
            case .null: nil
            default: throw SQLiteTypeMismatch()
            }
        }
    }

    /// The integer in column `index` (any integer width on PostgreSQL).
    /// - Throws: `PositionalRowError` when it is NULL or not an integer.
    package func int64(_ index: Int) throws -> Int64 {
        try column(index, "an integer") { value in
            guard case .integer(let integer) = value else { throw SQLiteTypeMismatch() }
            return Int64(integer)
        }
    }

    /// The integer in column `index`, nil for NULL.
    /// - Throws: `PositionalRowError` when it is not an integer.
    package func optionalInt64(_ index: Int) throws -> Int64? {
        try column(index, "an integer") { value in
            switch value {
            case .integer(let integer): Int64(integer)
            case .null: nil
            default: throw SQLiteTypeMismatch()
            }
        }
    }

    /// The integer in column `index` as `Int`.
    /// - Throws: `PositionalRowError` when it is NULL or not an integer.
    package func int(_ index: Int) throws -> Int {
        Int(try int64(index))
    }

    /// The boolean in column `index` (SQLite: an integer, 0 is false).
    /// - Throws: `PositionalRowError` when it is NULL or not a boolean.
    package func bool(_ index: Int) throws -> Bool {
        try column(index, "a boolean") { value in
            guard case .integer(let integer) = value else { throw SQLiteTypeMismatch() }
            return integer != 0
        }
    }

    /// Column `index` as `T`: decoded by type from a PostgreSQL or SQLKit row, read by `sqlite`
    /// from a SQLite value (SQLite's values carry their storage class, not a column type). Any
    /// failure is a `PositionalRowError` saying the column is not `expected`.
    private func column<T: PostgresDecodable & Decodable>(_ index: Int, _ expected: String, sqlite: (SQLiteData) throws -> T) throws -> T {
        do {
            switch storage {
            case .postgres(let row): return try row[index].decode(T.self)
            case .sqlite(let row): return try sqlite(row[index])
            case .sqlKit(let row, let columns): return try row.decode(column: columns[index], as: T.self)
            }
        } catch {
            throw PositionalRowError(column: index, expected: expected)
        }
    }
}

/// A SQLite value of another storage class than an accessor reads.
private struct SQLiteTypeMismatch: Error {}

extension Database {
    /// Runs one read-only statement and decodes its rows by position, without SQLKit's Codable
    /// decoding (for hot reads: lists, lookups, report batches).
    ///
    /// - Parameters:
    ///   - sql: one statement whose placeholders are `$1`…`$n` (PostgreSQL's form; SQLite reads
    ///     them as its numbered `?NNN` parameters). A `$` followed by a digit must not appear in
    ///     a string literal of the statement: pass such text as a bound value.
    ///   - binds: the values of `$1`…`$n`, in order.
    ///   - decode: builds a value from one row; runs once per row, in order.
    /// - Returns: the decoded rows, in the order the statement returned them.
    /// - Throws: the engine's errors, or what `decode` throws.
    package func readRows<R: Sendable>(
        _ sql: String, _ binds: [SQLBindValue], _ decode: @escaping @Sendable (PositionalRow) throws -> R
    ) async throws -> [R] {
        let system = dialect == .postgres ? "postgresql" : "sqlite"
        return try await TracedSQLDatabase.withStatementSpan(TraceContext.statementName(sql), system: system) {
            try await self.withNativeReader(
                postgres: { connection in
                    var results: [R] = []
                    let rows = try await connection.query(
                        PostgresQuery(unsafeSQL: sql, binds: SQLBindValue.postgresBindings(binds)), logger: Self.quiet)
                    for try await row in rows { results.append(try decode(.postgres(row))) }
                    return results
                },
                sqlite: { connection in try await Self.sqliteRows(connection, sql, binds, decode) })
        }
    }

    /// `sql` run on a SQLite connection, rows decoded by position.
    private static func sqliteRows<R: Sendable>(
        _ connection: SQLiteConnection, _ sql: String, _ binds: [SQLBindValue], _ decode: @escaping @Sendable (PositionalRow) throws -> R
    ) async throws -> [R] {
        try await connection.query(sqliteParameters(sql), sqliteValues(binds)).map { try decode(.sqlite($0)) }
    }

    /// `binds` as SQLite values.
    static func sqliteValues(_ binds: [SQLBindValue]) -> [SQLiteData] {
        binds.map { bind in
            switch bind {
            case .text(let text): .text(text)
            case .integer(let value): .integer(Int(value))
            case .bool(let value): .integer(value ? 1 : 0)
            case .null: .null
            case .textArray(let values): .text(JSONArrayText.of(values))
            }
        }
    }

    /// Runs the hot read `Statement` and decodes its rows by position, as
    /// ``readRows(_:_:_:)`` does, with its statement prepared once per connection: on
    /// PostgreSQL postgres-nio's `PostgresPreparedStatement` (the server parses and plans it on
    /// a connection's first use only, then binds and executes), on SQLite the connection's
    /// statement cache (``SQLiteStatementCache``).
    ///
    /// - Parameters:
    ///   - statement: the statement's type: its fixed SQL and its server-side name.
    ///   - binds: the values of `$1`…`$n`, in order, each always of the same type for a
    ///     statement (the first execution on a connection fixes the parameter types).
    ///   - decode: builds a value from one row; runs once per row, in order.
    /// - Returns: the decoded rows, in the order the statement returned them.
    /// - Throws: the engine's errors, or what `decode` throws.
    package func readRows<Statement: PreparedRead, R: Sendable>(
        _ statement: Statement.Type, _ binds: [SQLBindValue], _ decode: @escaping @Sendable (PositionalRow) throws -> R
    ) async throws -> [R] {
        try await preparedRows(statement, binds, decode, writing: false)
    }

    /// Runs the write `Statement` (an `INSERT`, `UPDATE` or `DELETE`, with `RETURNING` when it
    /// has rows to give back) and decodes its rows by position: prepared once per connection on
    /// PostgreSQL, on a pooled connection in autocommit; on SQLite as one unit of the group-commit
    /// writer, so it is durable when this returns on both engines.
    ///
    /// - Parameters:
    ///   - statement: the statement's type: its fixed SQL and its server-side name.
    ///   - binds: the values of `$1`…`$n`, in order, each always of the same type for a statement.
    ///   - decode: builds a value from one returned row; runs once per row, in order.
    /// - Returns: the decoded rows, in the order the statement returned them.
    /// - Throws: the engine's errors, or what `decode` throws.
    package func writeRows<Statement: PreparedRead, R: Sendable>(
        _ statement: Statement.Type, _ binds: [SQLBindValue], _ decode: @escaping @Sendable (PositionalRow) throws -> R
    ) async throws -> [R] {
        try await preparedRows(statement, binds, decode, writing: true)
    }

    /// ``readRows(_:_:_:)`` and ``writeRows(_:_:_:)``: the statement on a reader, or through the
    /// writer when `writing`, in a statement span.
    private func preparedRows<Statement: PreparedRead, R: Sendable>(
        _ statement: Statement.Type, _ binds: [SQLBindValue], _ decode: @escaping @Sendable (PositionalRow) throws -> R, writing: Bool
    ) async throws -> [R] {
        let system = dialect == .postgres ? "postgresql" : "sqlite"
        let postgres: @Sendable (PostgresConnection) async throws -> [R] = { connection in
            var results: [R] = []
            let rows = try await connection.execute(PostgresPreparedRead<Statement, R>(binds: binds, decode: decode), logger: Self.quiet)
            for try await row in rows { results.append(row) }
            return results
        }
        let sqlite: @Sendable (SQLiteConnection) async throws -> [R] = { connection in
            try await Self.sqliteRows(connection, Statement.sql, binds, decode)
        }
        return try await TracedSQLDatabase.withStatementSpan(Statement.spanName, system: system) {
            if let backend = self.sqliteBackend {
                // The connection's prepared copy of the statement (its text rewritten once).
                let sql = Statement.sqliteSQL
                return writing
                    ? try await backend.cachedWrite(sql, binds, decode, fallback: sqlite)
                    : try await backend.cachedRead(sql, binds, decode, fallback: sqlite)
            }
            return writing
                ? try await self.withNativeWriter(postgres: postgres, sqlite: sqlite)
                : try await self.withNativeReader(postgres: postgres, sqlite: sqlite)
        }
    }

    /// postgres-nio logs each query at debug level; positional reads log nothing of their own.
    static let quiet = Logger(label: "cairn.storage.rows", factory: { _ in SwiftLogNoOpLogHandler() })

    /// `$n` placeholders rewritten as SQLite's numbered `?n` (same numbering, so reuse and
    /// order match PostgreSQL's meaning).
    static func sqliteParameters(_ sql: String) -> String {
        var out = [UInt8]()
        out.reserveCapacity(sql.utf8.count)
        var previous: UInt8 = 0
        for byte in sql.utf8 {
            if previous == UInt8(ascii: "$"), (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) { out[out.count - 1] = UInt8(ascii: "?") }
            out.append(byte)
            previous = byte
        }
        return String(decoding: out, as: UTF8.self)
    }
}

/// A hot statement with fixed SQL, run through ``Database/readRows(_:_:_:)-(Statement.Type,_,_)``
/// (reads) or ``Database/writeRows(_:_:_:)`` (writes) so PostgreSQL plans it once per
/// connection instead of on every execution.
///
/// Conform a caseless enum per statement; the SQL must not depend on the request (pass every
/// value as a bound `$n`), so that one server-side plan serves every execution.
package protocol PreparedRead: Sendable {
    /// The statement's name on the server: unique in the process, `cairn_<module>_…` in
    /// `[a-z0-9_]`, at most 63 bytes (PostgreSQL's identifier length).
    static var name: String { get }
    /// One statement whose placeholders are `$1`…`$n` (see ``Database/readRows(_:_:_:)``).
    static var sql: String { get }
}

extension PreparedRead {
    /// The tracing span name: the statement's verb and table, as unprepared reads show it.
    /// Worked out once per statement: its SQL is fixed, and reading it on every traced
    /// execution cost more than the rest of the statement's span bookkeeping.
    static var spanName: (operation: String, collection: String?) {
        once(preparedSpanNames) { TraceContext.statementName(sql) }
    }

    /// What `make` gives for this statement type, worked out on first use and kept in `cache`
    /// (one entry per conforming type), so hot paths only look it up.
    fileprivate static func once<Value: Sendable>(_ cache: borrowing Mutex<[ObjectIdentifier: Value]>, _ make: () -> Value) -> Value {
        let key = ObjectIdentifier(Self.self)
        if let value = cache.withLock({ $0[key] }) { return value }
        let value = make()
        cache.withLock { $0[key] = value }
        return value
    }
}

extension PreparedRead {
    /// ``sql`` with SQLite's `?n` placeholders, worked out once per statement (the key of its
    /// prepared copies in each SQLite connection's statement cache, whose connections plan a
    /// statement without its bound values: see `SQLiteStatementCache`).
    static var sqliteSQL: String {
        once(preparedSQLiteSQL) { Database.sqliteParameters(sql) }
    }
}

/// ``PreparedRead/spanName`` of each statement type seen so far (a few dozen at most: one per
/// conforming type).
private let preparedSpanNames = Mutex<[ObjectIdentifier: (operation: String, collection: String?)]>([:])

/// ``PreparedRead/sqliteSQL`` of each statement type seen so far.
private let preparedSQLiteSQL = Mutex<[ObjectIdentifier: String]>([:])

/// One execution of a ``PreparedRead`` in postgres-nio's terms: its name and SQL come from
/// `Statement`, so the connection prepares it the first time and reuses it after.
private struct PostgresPreparedRead<Statement: PreparedRead, R: Sendable>: PostgresPreparedStatement {
    typealias Row = R
    static var name: String { Statement.name }
    static var sql: String { Statement.sql }
    let binds: [SQLBindValue]
    let decode: @Sendable (PositionalRow) throws -> R

    func makeBindings() throws -> PostgresBindings { SQLBindValue.postgresBindings(binds) }
    func decodeRow(_ row: PostgresRow) throws -> R { try decode(.postgres(row)) }
}

/// A JSON array of strings as text (the SQLite form of ``SQLBindValue/textArray(_:)``).
enum JSONArrayText {
    /// `values` as a JSON array, each string escaped per RFC 8259.
    static func of(_ values: [String]) -> String {
        var out = "["
        for (index, value) in values.enumerated() {
            if index > 0 { out += "," }
            out += "\""
            for scalar in value.unicodeScalars {
                switch scalar {
                case "\"": out += "\\\""
                case "\\": out += "\\\\"
                case _ where scalar.value < 0x20:
                    let hex = String(scalar.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                default: out.unicodeScalars.append(scalar)
                }
            }
            out += "\""
        }
        return out + "]"
    }
}
