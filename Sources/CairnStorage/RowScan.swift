import NIOCore
import PostgresNIO
import SQLiteNIO

/// One row of ``Database/scanRows(_:_:into:_:)``, read column after column in `SELECT`
/// order, in place: on PostgreSQL a column is a slice of the received message, so reading it
/// builds no `String` and allocates nothing.
package struct RowCursor {
    private var postgres: PostgresRow.Iterator?
    private let sqlite: [SQLiteColumn]
    private var index = 0

    fileprivate init(_ row: PostgresRow) {
        postgres = row.makeIterator()
        sqlite = []
    }

    fileprivate init(_ row: SQLiteRow) {
        postgres = nil
        sqlite = row.columns
    }

    /// The next column.
    /// - Throws: `PositionalRowError` when the row has no more columns.
    package mutating func next() throws -> RowCell {
        defer { index += 1 }
        if postgres != nil {
            guard let cell = postgres?.next() else { throw PositionalRowError(column: index, expected: "present") }
            return RowCell(column: index, value: .postgres(cell))
        }
        guard index < sqlite.count else { throw PositionalRowError(column: index, expected: "present") }
        return RowCell(column: index, value: .sqlite(sqlite[index].data))
    }
}

/// One column of a ``RowCursor``'s row. It keeps the engine's own cell as it came (on
/// PostgreSQL a slice of the received message), so making one copies no bytes and takes no
/// extra reference: reports read millions of them.
package struct RowCell {
    fileprivate enum Value {
        case postgres(PostgresCell)
        case sqlite(SQLiteData)
    }

    /// The zero-based column index, for errors.
    let column: Int
    fileprivate let value: Value

    /// Lends the UTF-8 bytes of the text to `body`, nil for NULL.
    /// - Throws: `PositionalRowError` when it is not text, or what `body` throws.
    package consuming func withOptionalText<T>(_ body: (UnsafeBufferPointer<UInt8>?) throws -> T) throws -> T {
        switch value {
        case .sqlite(let data):
            switch data {
            case .text(var text): return try text.withUTF8 { try body($0) }
            case .null: return try body(nil)
            default: throw PositionalRowError(column: column, expected: "text")
            }
        case .postgres(let cell):
            guard let bytes = cell.bytes else { return try body(nil) }
            switch cell.dataType {
            case .text, .varchar, .bpchar, .name:
                // Text is the same UTF-8 bytes in PostgreSQL's binary and text formats.
                return try bytes.withUnsafeReadableBytes { try body($0.assumingMemoryBound(to: UInt8.self)) }
            default:
                guard var text = try? cell.decode(String.self) else { throw PositionalRowError(column: column, expected: "text") }
                return try text.withUTF8 { try body($0) }
            }
        }
    }

    /// Lends the UTF-8 bytes of the text to `body`.
    /// - Throws: `PositionalRowError` when it is NULL or not text, or what `body` throws.
    package consuming func withText<T>(_ body: (UnsafeBufferPointer<UInt8>) throws -> T) throws -> T {
        let column = column
        return try withOptionalText { bytes in
            guard let bytes else { throw PositionalRowError(column: column, expected: "text") }
            return try body(bytes)
        }
    }

    /// The integer (any integer width on PostgreSQL).
    /// - Throws: `PositionalRowError` when it is NULL or not an integer.
    package consuming func int64() throws -> Int64 {
        switch value {
        case .sqlite(let data):
            guard case .integer(let value) = data else { throw PositionalRowError(column: column, expected: "an integer") }
            return Int64(value)
        case .postgres(let cell):
            if cell.dataType == .int8, cell.format == .binary, let bytes = cell.bytes, bytes.readableBytes == 8,
                let value = bytes.getInteger(at: bytes.readerIndex, as: Int64.self)
            {
                return value
            }
            guard cell.bytes != nil, let value = try? cell.decode(Int64.self) else {
                throw PositionalRowError(column: column, expected: "an integer")
            }
            return value
        }
    }

    /// The boolean (SQLite: an integer, 0 is false).
    /// - Throws: `PositionalRowError` when it is NULL or not a boolean.
    package consuming func bool() throws -> Bool {
        switch value {
        case .sqlite(let data):
            guard case .integer(let value) = data else { throw PositionalRowError(column: column, expected: "a boolean") }
            return value != 0
        case .postgres(let cell):
            if cell.dataType == .bool, cell.format == .binary, let bytes = cell.bytes, bytes.readableBytes == 1,
                let value = bytes.getInteger(at: bytes.readerIndex, as: UInt8.self)
            {
                return value != 0
            }
            guard cell.bytes != nil, let value = try? cell.decode(Bool.self) else { throw PositionalRowError(column: column, expected: "a boolean") }
            return value
        }
    }
}

/// The state of a scan, touched by one row callback at a time: postgres-nio calls them one
/// after another on the connection's event loop, SQLiteNIO on its one thread for the
/// statement, and the state is read only after the query has completed.
private final class ScanState<State>: @unchecked Sendable {
    var state: State
    var failure: (any Error)?

    init(_ state: State) {
        self.state = state
    }
}

extension Database {
    /// Runs one read-only statement and folds its rows, in order, into `state` with `body`,
    /// which reads each row in place as it arrives: nothing is built per row unless `body`
    /// builds it. For long reads whose rows are copied straight out (report batches written
    /// as CSV): on PostgreSQL the rows are handed over on the connection's event loop as
    /// they are decoded, with no hop between tasks per row, and the statement is planned on
    /// each run (its planning is a small part of a long read).
    ///
    /// - Parameters:
    ///   - sql: one statement whose placeholders are `$1`…`$n` (see ``readRows(_:_:_:)``).
    ///   - binds: the values of `$1`…`$n`, in order.
    ///   - state: the value `body` starts from.
    ///   - body: called once per row with the state so far; keep it short (it runs on an event
    ///     loop). The row is valid only during the call.
    /// - Returns: the state after the last row.
    /// - Throws: the engine's errors, or the first error `body` throws (no row is read after it).
    package func scanRows<State: Sendable>(
        _ sql: String, _ binds: [SQLBindValue], into state: State, _ body: @escaping @Sendable (inout State, inout RowCursor) throws -> Void
    ) async throws -> State {
        let system = dialect == .postgres ? "postgresql" : "sqlite"
        return try await TracedSQLDatabase.withStatementSpan(TraceContext.statementName(sql), system: system) {
            try await self.withNativeReader(
                postgres: { connection in
                    let scan = ScanState(state)
                    let query = PostgresQuery(unsafeSQL: sql, binds: SQLBindValue.postgresBindings(binds))
                    _ = try await connection.query(query, logger: Self.quiet) { row in
                        var cursor = RowCursor(row)
                        try body(&scan.state, &cursor)
                    }.get()
                    return scan.state
                },
                sqlite: { connection in
                    let scan = ScanState(state)
                    try await connection.query(Self.sqliteParameters(sql), Self.sqliteValues(binds)) { row in
                        // SQLiteNIO's row callback cannot throw: the first error is kept and
                        // the remaining rows are skipped.
                        guard scan.failure == nil else { return }
                        var cursor = RowCursor(row)
                        do { try body(&scan.state, &cursor) } catch { scan.failure = error }
                    }
                    if let failure = scan.failure { throw failure }
                    return scan.state
                })
        }
    }
}
