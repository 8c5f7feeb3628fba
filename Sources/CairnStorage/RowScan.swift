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
            return RowCell(column: index, bytes: cell.bytes, type: cell.dataType, format: cell.format, sqlite: nil)
        }
        guard index < sqlite.count else { throw PositionalRowError(column: index, expected: "present") }
        return RowCell(column: index, bytes: nil, type: .null, format: .binary, sqlite: sqlite[index].data)
    }
}

/// One column of a ``RowCursor``'s row.
package struct RowCell {
    /// The zero-based column index, for errors.
    let column: Int
    /// PostgreSQL: the value's bytes, nil for NULL.
    let bytes: ByteBuffer?
    let type: PostgresDataType
    let format: PostgresFormat
    /// SQLite: the value (nil on PostgreSQL).
    let sqlite: SQLiteData?

    /// Lends the UTF-8 bytes of the text to `body`, nil for NULL.
    /// - Throws: `PositionalRowError` when it is not text, or what `body` throws.
    package func withOptionalText<T>(_ body: (UnsafeBufferPointer<UInt8>?) throws -> T) throws -> T {
        if let sqlite {
            switch sqlite {
            case .text(var text): return try text.withUTF8 { try body($0) }
            case .null: return try body(nil)
            default: throw PositionalRowError(column: column, expected: "text")
            }
        }
        guard let bytes else { return try body(nil) }
        switch type {
        case .text, .varchar, .bpchar, .name:
            // Text is the same UTF-8 bytes in PostgreSQL's binary and text formats.
            return try bytes.withUnsafeReadableBytes { try body($0.assumingMemoryBound(to: UInt8.self)) }
        default:
            guard var text = try? postgresCell.decode(String.self) else { throw PositionalRowError(column: column, expected: "text") }
            return try text.withUTF8 { try body($0) }
        }
    }

    /// Lends the UTF-8 bytes of the text to `body`.
    /// - Throws: `PositionalRowError` when it is NULL or not text, or what `body` throws.
    package func withText<T>(_ body: (UnsafeBufferPointer<UInt8>) throws -> T) throws -> T {
        try withOptionalText { bytes in
            guard let bytes else { throw PositionalRowError(column: column, expected: "text") }
            return try body(bytes)
        }
    }

    /// The integer (any integer width on PostgreSQL).
    /// - Throws: `PositionalRowError` when it is NULL or not an integer.
    package func int64() throws -> Int64 {
        if let sqlite {
            guard case .integer(let value) = sqlite else { throw PositionalRowError(column: column, expected: "an integer") }
            return Int64(value)
        }
        if type == .int8, format == .binary, let bytes, bytes.readableBytes == 8, let value = bytes.getInteger(at: bytes.readerIndex, as: Int64.self)
        {
            return value
        }
        guard bytes != nil, let value = try? postgresCell.decode(Int64.self) else { throw PositionalRowError(column: column, expected: "an integer") }
        return value
    }

    /// The boolean (SQLite: an integer, 0 is false).
    /// - Throws: `PositionalRowError` when it is NULL or not a boolean.
    package func bool() throws -> Bool {
        if let sqlite {
            guard case .integer(let value) = sqlite else { throw PositionalRowError(column: column, expected: "a boolean") }
            return value != 0
        }
        if type == .bool, format == .binary, let bytes, bytes.readableBytes == 1, let value = bytes.getInteger(at: bytes.readerIndex, as: UInt8.self)
        {
            return value != 0
        }
        guard bytes != nil, let value = try? postgresCell.decode(Bool.self) else { throw PositionalRowError(column: column, expected: "a boolean") }
        return value
    }

    /// The column as postgres-nio's cell, for the types read through its decoders.
    private var postgresCell: PostgresCell {
        PostgresCell(bytes: bytes, dataType: type, format: format, columnName: "", columnIndex: column)
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
