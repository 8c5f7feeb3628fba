import CSQLite3
import Foundation
import Synchronization

/// Why the sandbox stopped a pipeline's SQL or its load.
package struct SandboxError: Error, CustomStringConvertible, Sendable, Equatable {
    /// A stable code for clients.
    package enum Kind: String, Sendable {
        /// The query is not a single read-only `SELECT` (or `WITH … SELECT`).
        case notAQuery = "not_a_query"
        /// The authorizer refused an action (ATTACH, PRAGMA, a write, another table, …).
        case refused
        /// The query ran past the pipeline time limit.
        case timeout
        /// The run was cancelled (job cancellation, lost lease, shutdown).
        case cancelled
        /// SQLite reported an error (syntax, unknown column, a limit).
        case sql
        /// A file of the sandbox could not be read or written.
        case io
        /// SQLite could not allocate memory: the sandbox's heap limit (see
        /// ``SandboxDatabase/limitMemory(heapBytes:)``) was reached.
        case memory
    }

    /// The kind of problem.
    package var kind: Kind
    /// What happened, in words safe to show the tenant (no server paths).
    package var message: String

    /// Creates an error.
    package init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    /// The message.
    package var description: String { message }
}

/// A job-private SQLite database in which one tenant's pipeline SQL runs, on the system SQLite
/// library (not the server's own database engine, and never the server's database file).
///
/// Two phases. While Cairn loads the `input` table its own statements run unchecked. Then
/// `lockDown()` installs the guards before the tenant's query is compiled:
/// - an authorizer (`sqlite3_set_authorizer`) that allows only reading the `input` table (and
///   the query's own common table expressions) and calling functions other than
///   `load_extension` and `fts3_tokenizer`: ATTACH, DETACH, PRAGMA, table-valued functions,
///   every write, schema change, transaction control and virtual-table creation are refused
///   when the query is compiled;
/// - extension loading off, `SQLITE_DBCONFIG_DEFENSIVE` and untrusted schema;
/// - `sqlite3_limit` bounds on string and SQL length, columns, expression depth, compound
///   selects, function arguments, attached databases (0) and trigger depth;
/// - a progress handler that interrupts the statement every 10,000 virtual-machine steps once
///   the deadline has passed or `cancel()` was called.
///
/// Not thread-safe: one thread uses it at a time (a pipeline run hands it from one thread-pool
/// call to the next, each finishing before the next starts).
package final class SandboxDatabase {
    let handle: OpaquePointer
    let guardState: Guard

    /// What the C callbacks see: the run's control, whether the guards are on, and what the
    /// authorizer refused (for the error message).
    final class Guard: Sendable {
        let control: SandboxControl
        let refusal = Mutex<String?>(nil)
        let lockedDown = Atomic<Bool>(false)
        /// Set while `columnsRead(by:)` compiles the tenant's query during the load phase.
        let checking = Atomic<Bool>(false)
        let columnsRead = Mutex<Set<String>>([])
        init(control: SandboxControl) { self.control = control }
    }

    /// Longest string or blob value, bytes (a CSV record may be 64 MiB).
    package static let maxValueBytes: Int32 = 80 << 20
    /// Longest tenant SQL text, bytes.
    package static let maxSQLBytes: Int32 = 64 << 10

    /// Opens (creating if needed) the database file at `path`.
    /// - Parameters:
    ///   - control: the run's deadline and cancellation, shared with other tasks.
    ///   - cacheBytes: the page cache of this connection, bytes.
    /// - Throws: `SandboxError` (`io`) when the file cannot be opened.
    package init(path: String, control: SandboxControl, cacheBytes: Int = 32 << 20) throws {
        Self.configureLibrary()
        var db: OpaquePointer?
        let flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE
        let status = sqlite3_open_v2(path, &db, flags, nil)
        guard status == SQLITE_OK, let db else {
            if let db { sqlite3_close_v2(db) }
            throw SandboxError(.io, "the pipeline's work database could not be opened (SQLite code \(status))")
        }
        handle = db
        guardState = Guard(control: control)
        _ = cairn_sqlite_db_config(db, SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION, 0)
        _ = cairn_sqlite_db_config(db, SQLITE_DBCONFIG_DEFENSIVE, 1)
        _ = cairn_sqlite_db_config(db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0)
        sqlite3_limit(db, SQLITE_LIMIT_LENGTH, Self.maxValueBytes)
        sqlite3_limit(db, SQLITE_LIMIT_ATTACHED, 0)
        sqlite3_limit(db, SQLITE_LIMIT_TRIGGER_DEPTH, 1)
        sqlite3_limit(db, SQLITE_LIMIT_WORKER_THREADS, 0)
        let context = Unmanaged.passUnretained(guardState).toOpaque()
        sqlite3_progress_handler(db, 10_000, sandboxProgress, context)
        sqlite3_set_authorizer(db, sandboxAuthorizer, context)
        // WAL with synchronous=OFF survives a killed process (the OS still has the pages), which
        // is what checkpoints need; a power loss is caught by the row count check on resume.
        try execute("PRAGMA journal_mode=WAL")
        try execute("PRAGMA synchronous=OFF")
        try execute("PRAGMA temp_store=FILE")
        try execute("PRAGMA cache_size=-\(max(1024, cacheBytes >> 10))")
    }

    deinit {
        sqlite3_close_v2(handle)
    }

    /// Process-wide settings of the system SQLite, which only sandboxes use: a soft heap
    /// limit so caches shrink under pressure before anything fails. In a process whose memory
    /// is limited (``limitMemory(heapBytes:)``) the limits set there stay.
    private static let configured: Bool = {
        if memoryLimited.load(ordering: .sequentiallyConsistent) { return true }
        _ = cairn_sqlite_disable_memstatus()
        sqlite3_soft_heap_limit64(256 << 20)
        return true
    }()

    private static let memoryLimited = Atomic<Bool>(false)

    private static func configureLibrary() { _ = configured }

    /// Bounds what the system SQLite may allocate in this whole process to `heapBytes`: past
    /// it an allocation fails and the statement with it (``SandboxError/Kind/memory``), while
    /// the process itself carries on and can report why. Caches start shrinking at half of
    /// it. For the pipeline sandbox process, which is limited as a whole; call it once,
    /// before any database is opened.
    /// - Parameter heapBytes: bytes; at least 16 MiB.
    package static func limitMemory(heapBytes: Int64) {
        memoryLimited.store(true, ordering: .sequentiallyConsistent)
        // Statistics must be switched on before SQLite initialises, or the limits do nothing.
        _ = cairn_sqlite_enable_memstatus()
        _ = sqlite3_initialize()
        let bytes = max(16 << 20, heapBytes)
        sqlite3_hard_heap_limit64(bytes)
        sqlite3_soft_heap_limit64(bytes / 2)
    }

    /// Bytes the system SQLite holds in this process (0 unless ``limitMemory(heapBytes:)``
    /// switched its statistics on).
    package static var memoryUsed: Int64 { sqlite3_memory_used() }

    /// Installs the tenant-phase guards (see the type's documentation). Cairn's own statements
    /// after this point are checked as the tenant's are.
    package func lockDown() {
        sqlite3_limit(handle, SQLITE_LIMIT_SQL_LENGTH, Self.maxSQLBytes)
        sqlite3_limit(handle, SQLITE_LIMIT_COLUMN, 2000)
        sqlite3_limit(handle, SQLITE_LIMIT_EXPR_DEPTH, 200)
        sqlite3_limit(handle, SQLITE_LIMIT_COMPOUND_SELECT, 100)
        sqlite3_limit(handle, SQLITE_LIMIT_FUNCTION_ARG, 100)
        sqlite3_limit(handle, SQLITE_LIMIT_LIKE_PATTERN_LENGTH, 10_000)
        sqlite3_limit(handle, SQLITE_LIMIT_VDBE_OP, 1_000_000)
        guardState.lockedDown.store(true, ordering: .sequentiallyConsistent)
    }

    /// Runs Cairn's own SQL (one or more statements, no results).
    /// - Throws: `SandboxError`.
    package func execute(_ sql: String) throws {
        var message: UnsafeMutablePointer<CChar>?
        let status = sqlite3_exec(handle, sql, nil, nil, &message)
        let text = message.map { String(cString: $0) }
        sqlite3_free(message)
        if status != SQLITE_OK { throw error(status, text) }
    }

    /// Appends every row of `table` in the database file at `path` to this database's table of
    /// the same name, in that table's row order, in one transaction: how the chunks of a
    /// chunked run meet in one `input`. Cairn's own step, before ``lockDown()``; the other file
    /// is attached only while it is read.
    /// - Throws: `SandboxError`.
    package func appendRows(of table: String, fromDatabaseAt path: String) throws {
        precondition(!guardState.lockedDown.load(ordering: .sequentiallyConsistent), "before lockDown()")
        sqlite3_limit(handle, SQLITE_LIMIT_ATTACHED, 1)
        defer { sqlite3_limit(handle, SQLITE_LIMIT_ATTACHED, 0) }
        do {
            let attach = try prepare("ATTACH DATABASE ? AS piece")
            attach.bind(1, path)
            _ = try attach.step()
        }
        let name = SQLText.quoted(table)
        do {
            // A bare `INSERT … SELECT *` between tables of one shape takes SQLite's transfer
            // optimisation (records copied without being decoded; an ORDER BY would turn it off).
            // It scans the source in rowid order and gives each record the destination's next
            // rowid, so the pieces keep their rows' order.
            try execute("BEGIN; INSERT INTO main.\(name) SELECT * FROM piece.\(name); COMMIT")
        } catch {
            try? execute("ROLLBACK")
            try? execute("DETACH DATABASE piece")
            throw error
        }
        try execute("DETACH DATABASE piece")
    }

    /// Compiles one statement of Cairn's own.
    /// - Throws: `SandboxError`.
    package func prepare(_ sql: String) throws -> SandboxStatement {
        var statement: OpaquePointer?
        let status = sqlite3_prepare_v3(handle, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &statement, nil)
        guard status == SQLITE_OK, let statement else { throw error(status, nil) }
        return SandboxStatement(statement, database: self)
    }

    /// Compiles the tenant's query: exactly one statement, read-only, starting with `SELECT`
    /// or `WITH`, every action it takes allowed by the authorizer.
    /// - Throws: `SandboxError` (`notAQuery`, `refused`, `sql`).
    package func prepareQuery(_ sql: String) throws -> SandboxStatement {
        precondition(guardState.lockedDown.load(ordering: .sequentiallyConsistent), "lockDown() first")
        guard SQLText.startsWithQueryKeyword(sql) else {
            throw SandboxError(.notAQuery, "the pipeline's sql must be one SELECT (or WITH … SELECT) statement")
        }
        guardState.refusal.withLock { $0 = nil }
        var statement: OpaquePointer?
        var tail: UnsafePointer<CChar>?
        let utf8 = Array(sql.utf8CString)
        let status = utf8.withUnsafeBufferPointer { buffer in
            sqlite3_prepare_v3(handle, buffer.baseAddress, Int32(buffer.count - 1), 0, &statement, &tail)
        }
        guard status == SQLITE_OK, let statement else {
            if let refused = guardState.refusal.withLock({ $0 }) { throw SandboxError(.refused, refused) }
            throw error(status, nil)
        }
        let rest = tail.map { String(cString: $0) } ?? ""
        let prepared = SandboxStatement(statement, database: self)
        guard SQLText.isBlank(rest) else {
            throw SandboxError(.notAQuery, "the pipeline's sql must be a single statement (found more after the first)")
        }
        guard sqlite3_stmt_readonly(statement) != 0 else {
            throw SandboxError(.refused, "the pipeline's sql must be a read-only query")
        }
        return prepared
    }

    /// Compiles the tenant's query under the tenant-phase policy (so a refused or broken query
    /// fails before anything is loaded) and returns the lower-cased names of the `input`
    /// columns it reads, from the authorizer's reports, or nil when that cannot be told (then
    /// every column must be loaded). Columns it never reads need not be loaded.
    ///
    /// SQLite builds the comparisons of a `NATURAL` join and of `USING (…)` from column
    /// references it never reports to the authorizer: `input x NATURAL JOIN input y` reports no
    /// column at all, yet compares every one. A query with either keyword therefore gets nil.
    /// - Throws: `SandboxError` (`notAQuery`, `refused`, `sql`).
    package func columnsRead(by sql: String) throws -> Set<String>? {
        guardState.columnsRead.withLock { $0 = [] }
        guardState.checking.store(true, ordering: .sequentiallyConsistent)
        defer { guardState.checking.store(false, ordering: .sequentiallyConsistent) }
        guard SQLText.startsWithQueryKeyword(sql) else {
            throw SandboxError(.notAQuery, "the pipeline's sql must be one SELECT (or WITH … SELECT) statement")
        }
        guardState.refusal.withLock { $0 = nil }
        var statement: OpaquePointer?
        let status = sqlite3_prepare_v3(handle, sql, -1, 0, &statement, nil)
        sqlite3_finalize(statement)
        guard status == SQLITE_OK else {
            if let refused = guardState.refusal.withLock({ $0 }) { throw SandboxError(.refused, refused) }
            throw error(status, nil)
        }
        if SQLText.containsKeyword(sql, anyOf: ["NATURAL", "USING"]) { return nil }
        return guardState.columnsRead.withLock { $0 }
    }

    /// Maps an SQLite status (and message) to a `SandboxError`.
    func error(_ status: Int32, _ message: String?) -> SandboxError {
        let primary = status & 0xFF
        if primary == SQLITE_INTERRUPT {
            if guardState.control.isCancelled { return SandboxError(.cancelled, "the run was cancelled") }
            return SandboxError(.timeout, "the query ran past the pipeline time limit")
        }
        if primary == SQLITE_NOMEM { return SandboxError(.memory, "SQLite ran out of memory") }
        if primary == SQLITE_AUTH, let refused = guardState.refusal.withLock({ $0 }) { return SandboxError(.refused, refused) }
        let text = message ?? String(cString: sqlite3_errmsg(handle))
        if primary == SQLITE_IOERR || primary == SQLITE_FULL || primary == SQLITE_CANTOPEN {
            return SandboxError(.io, "the pipeline's work database failed: \(text)")
        }
        return SandboxError(.sql, text)
    }

    /// Rows changed by the last statement.
    package var changes: Int { Int(sqlite3_changes64(handle)) }
}

/// A compiled statement of a `SandboxDatabase`: bind, step, read columns.
package final class SandboxStatement {
    let statement: OpaquePointer
    let database: SandboxDatabase

    init(_ statement: OpaquePointer, database: SandboxDatabase) {
        self.statement = statement
        self.database = database
    }

    deinit {
        sqlite3_finalize(statement)
    }

    /// Parameters the statement takes.
    package var parameterCount: Int { Int(sqlite3_bind_parameter_count(statement)) }

    /// Binds NULL to parameter `index` (1-based).
    package func bindNull(_ index: Int32) { sqlite3_bind_null(statement, index) }
    /// Binds an integer.
    package func bind(_ index: Int32, _ value: Int64) { sqlite3_bind_int64(statement, index, value) }
    /// Binds a real.
    package func bind(_ index: Int32, _ value: Double) { sqlite3_bind_double(statement, index, value) }
    /// Binds text (copied).
    package func bind(_ index: Int32, _ value: String) {
        var value = value
        value.withUTF8 { bytes in
            _ = sqlite3_bind_text64(
                statement, index, UnsafeRawPointer(bytes.baseAddress ?? UnsafePointer(bitPattern: 1)!).assumingMemoryBound(to: CChar.self),
                UInt64(bytes.count), cairn_sqlite_transient(), UInt8(SQLITE_UTF8))
        }
    }

    /// Binds UTF-8 text given as bytes (copied).
    package func bind(_ index: Int32, utf8 bytes: UnsafeBufferPointer<UInt8>) {
        let pointer = UnsafeRawPointer(bytes.baseAddress ?? UnsafePointer(bitPattern: 1)!).assumingMemoryBound(to: CChar.self)
        _ = sqlite3_bind_text64(statement, index, pointer, UInt64(bytes.count), cairn_sqlite_transient(), UInt8(SQLITE_UTF8))
    }

    /// Binds UTF-8 text given as bytes without copying them (`SQLITE_STATIC`): they must stay
    /// valid and unchanged until the statement has stepped and been reset, and the parameter
    /// is bound again (or cleared with ``reset()``) before they go away.
    package func bind(_ index: Int32, borrowing bytes: UnsafeBufferPointer<UInt8>) {
        let pointer = UnsafeRawPointer(bytes.baseAddress ?? UnsafePointer(bitPattern: 1)!).assumingMemoryBound(to: CChar.self)
        _ = sqlite3_bind_text64(statement, index, pointer, UInt64(bytes.count), nil, UInt8(SQLITE_UTF8))
    }

    /// Runs one step: true when a row is ready, false when the statement is done.
    /// - Throws: `SandboxError` (timeouts and cancellation included).
    package func step() throws -> Bool {
        let status = sqlite3_step(statement)
        if status == SQLITE_ROW { return true }
        if status == SQLITE_DONE { return false }
        throw database.error(status, nil)
    }

    /// Resets the statement for another execution and clears its bindings.
    package func reset() {
        sqlite3_reset(statement)
        sqlite3_clear_bindings(statement)
    }

    /// Resets the statement for another execution, keeping its bindings: for a caller that
    /// binds every parameter of every execution (SQLite then reuses its value buffers).
    package func resetKeepingBindings() {
        sqlite3_reset(statement)
    }

    /// Result columns.
    package var columnCount: Int { Int(sqlite3_column_count(statement)) }
    /// A result column's name.
    package func columnName(_ index: Int32) -> String { sqlite3_column_name(statement, index).map { String(cString: $0) } ?? "" }
    /// The declared type of the table column a result column comes from (nil for expressions).
    package func declaredType(_ index: Int32) -> String? { sqlite3_column_decltype(statement, index).map { String(cString: $0) } }

    /// The storage class of a column of the current row.
    package func kind(_ index: Int32) -> SandboxValueKind {
        switch sqlite3_column_type(statement, index) {
        case SQLITE_INTEGER: return .integer
        case SQLITE_FLOAT: return .real
        case SQLITE_TEXT: return .text
        case SQLITE_BLOB: return .blob
        default: return .null
        }
    }

    /// The column as an integer.
    package func int64(_ index: Int32) -> Int64 { sqlite3_column_int64(statement, index) }
    /// The column as a real.
    package func double(_ index: Int32) -> Double { sqlite3_column_double(statement, index) }
    /// The column's bytes (text as UTF-8, or a blob), valid until the next step.
    package func bytes(_ index: Int32) -> UnsafeRawBufferPointer {
        let kind = sqlite3_column_type(statement, index)
        let pointer = kind == SQLITE_BLOB ? sqlite3_column_blob(statement, index) : UnsafeRawPointer(sqlite3_column_text(statement, index))
        let count = Int(sqlite3_column_bytes(statement, index))
        guard let pointer, count > 0 else { return UnsafeRawBufferPointer(start: nil, count: 0) }
        return UnsafeRawBufferPointer(start: pointer, count: count)
    }
    /// The column as text.
    package func text(_ index: Int32) -> String { String(decoding: bytes(index), as: UTF8.self) }

    /// Bytes of the current row's text and blob values (numbers count 8), without copying or
    /// expanding them.
    package var rowBytes: Int {
        var total = 0
        for index in 0..<sqlite3_column_count(statement) {
            switch sqlite3_column_type(statement, index) {
            case SQLITE_TEXT, SQLITE_BLOB: total += Int(sqlite3_column_bytes(statement, index))
            default: total += 8
            }
        }
        return total
    }

    /// Whether reading a column of the current row failed for lack of memory (SQLite then
    /// hands out an empty value rather than the real one).
    package var ranOutOfMemory: Bool { sqlite3_errcode(database.handle) & 0xFF == SQLITE_NOMEM }
}

/// A run's deadline and cancellation, shared by the task that awaits the run and the thread
/// that runs its SQL (the progress handler reads it every 10,000 steps).
package final class SandboxControl: Sendable {
    private let cancelled = Atomic<Bool>(false)
    private let deadline = Atomic<UInt64>(UInt64.max)  // DispatchTime uptime nanoseconds

    /// A control with no deadline.
    package init() {}

    /// Statements stop at their next progress check after `seconds` from now.
    package func setDeadline(seconds: Double) {
        deadline.store(DispatchTime.now().uptimeNanoseconds &+ UInt64(max(0, min(seconds, 1e9)) * 1e9), ordering: .relaxed)
    }

    /// Stops running statements at their next progress check (callable from any thread).
    package func cancel() { cancelled.store(true, ordering: .relaxed) }

    /// Whether `cancel()` was called.
    package var isCancelled: Bool { cancelled.load(ordering: .relaxed) }

    /// Whether the deadline has passed.
    package var isPastDeadline: Bool { DispatchTime.now().uptimeNanoseconds > deadline.load(ordering: .relaxed) }
}

/// SQLite's storage classes.
package enum SandboxValueKind: Sendable {
    /// NULL.
    case null
    /// A 64-bit integer.
    case integer
    /// An 8-byte float.
    case real
    /// UTF-8 text.
    case text
    /// Bytes.
    case blob
}

/// Interrupts the statement once the deadline passed or the run was cancelled.
private let sandboxProgress: @convention(c) (UnsafeMutableRawPointer?) -> Int32 = { context in
    guard let context else { return 0 }
    let control = Unmanaged<SandboxDatabase.Guard>.fromOpaque(context).takeUnretainedValue().control
    return control.isCancelled || control.isPastDeadline ? 1 : 0
}

/// The tenant-phase policy (see `SandboxDatabase`); before `lockDown()` everything is allowed.
private let sandboxAuthorizer:
    @convention(c) (
        UnsafeMutableRawPointer?, Int32, UnsafePointer<CChar>?, UnsafePointer<CChar>?, UnsafePointer<CChar>?, UnsafePointer<CChar>?
    ) -> Int32 = { context, action, first, second, database, _ in
        guard let context else { return SQLITE_DENY }
        let state = Unmanaged<SandboxDatabase.Guard>.fromOpaque(context).takeUnretainedValue()
        let checking = state.checking.load(ordering: .relaxed)
        guard checking || state.lockedDown.load(ordering: .relaxed) else { return SQLITE_OK }
        func refuse(_ reason: String) -> Int32 {
            state.refusal.withLock { if $0 == nil { $0 = reason } }
            return SQLITE_DENY
        }
        switch action {
        case SQLITE_SELECT, SQLITE_RECURSIVE:
            return SQLITE_OK
        case SQLITE_READ:
            let table = first.map { String(cString: $0) } ?? ""
            // A common table expression (recursive ones are reported as reads) has no schema;
            // every real table has one.
            guard let database else { return SQLITE_OK }
            let schema = String(cString: database)
            if schema == "main" && table.lowercased() == "input" {
                if checking, let column = second { state.columnsRead.withLock { _ = $0.insert(String(cString: column).lowercased()) } }
                return SQLITE_OK
            }
            return refuse("the pipeline's sql may read only the table input (it reads \(table.isEmpty ? "another table" : table))")
        case SQLITE_FUNCTION:
            let name = (second.map { String(cString: $0) } ?? "").lowercased()
            if name == "load_extension" || name == "fts3_tokenizer" { return refuse("the function \(name) is not allowed") }
            return SQLITE_OK
        case SQLITE_ATTACH: return refuse("ATTACH is not allowed")
        case SQLITE_DETACH: return refuse("DETACH is not allowed")
        case SQLITE_PRAGMA: return refuse("PRAGMA is not allowed")
        case SQLITE_TRANSACTION, SQLITE_SAVEPOINT: return refuse("transaction control is not allowed")
        case SQLITE_UPDATE where first.map({ String(cString: $0) }) == "sqlite_master":
            // How SQLite reports the first use of an eponymous virtual table (json_each,
            // pragma_table_info, dbstat, …): none is needed over one table, so none is allowed.
            return refuse("table-valued functions (json_each, pragma_…) are not allowed")
        case SQLITE_INSERT, SQLITE_UPDATE, SQLITE_DELETE: return refuse("the pipeline's sql must not write")
        default: return refuse("the pipeline's sql may only read (schema changes and other statements are not allowed)")
        }
    }

/// Lexical checks of SQL text (strings, quoted identifiers and comments skipped), for
/// validating a pipeline before any database sees its SQL.
package enum SQLText {
    /// Whether `sql` is one statement starting with `SELECT` or `WITH`: nothing but blanks,
    /// comments and semicolons after the first semicolon outside quotes and comments.
    package static func isSingleQuery(_ sql: String) -> Bool {
        guard startsWithQueryKeyword(sql) else { return false }
        let bytes = Array(sql.utf8)
        var index = 0
        while index < bytes.count {
            if let next = skipQuotedOrComment(bytes, at: index) {
                index = next
            } else if bytes[index] == UInt8(ascii: ";") {
                return isBlank(String(decoding: bytes[(index + 1)...], as: UTF8.self))
            } else {
                index += 1
            }
        }
        return true
    }

    /// The index just past the string literal, quoted identifier or comment that starts at
    /// `index`, or nil when none starts there. A doubled quote inside ends one quoted run and
    /// starts the next: the same outcome for a scan that only skips them.
    private static func skipQuotedOrComment(_ bytes: [UInt8], at index: Int) -> Int? {
        let byte = bytes[index]
        switch byte {
        case UInt8(ascii: "'"), UInt8(ascii: "\""), UInt8(ascii: "`"), UInt8(ascii: "["):
            let close = byte == UInt8(ascii: "[") ? UInt8(ascii: "]") : byte
            var end = index + 1
            while end < bytes.count && bytes[end] != close { end += 1 }
            return end + 1
        case UInt8(ascii: "-"), UInt8(ascii: "/"):
            let next = skipBlank(bytes, from: index)
            return next > index ? next : nil
        default:
            return nil
        }
    }

    /// Whether one of `keywords` (upper case) appears in `sql` as a word of its own, outside
    /// string literals, quoted identifiers and comments, in any letter case.
    package static func containsKeyword(_ sql: String, anyOf keywords: Set<String>) -> Bool {
        let bytes = Array(sql.utf8)
        func isWordByte(_ byte: UInt8) -> Bool {
            (0x41...0x5A).contains(byte & 0xDF) || (0x30...0x39).contains(byte) || byte == UInt8(ascii: "_") || byte == UInt8(ascii: "$")
                || byte >= 0x80
        }
        var index = 0
        while index < bytes.count {
            if let next = skipQuotedOrComment(bytes, at: index) {
                index = next
            } else if isWordByte(bytes[index]) {
                let start = index
                while index < bytes.count && isWordByte(bytes[index]) { index += 1 }
                let word = String(decoding: bytes[start..<index], as: UTF8.self).uppercased()
                if keywords.contains(word) { return true }
            } else {
                index += 1
            }
        }
        return false
    }

    /// Whether the first keyword, after comments and blanks, is `SELECT` or `WITH`.
    static func startsWithQueryKeyword(_ sql: String) -> Bool {
        let bytes = Array(sql.utf8)
        var index = skipBlank(bytes, from: 0)
        var word: [UInt8] = []
        while index < bytes.count, (0x41...0x5A).contains(bytes[index] & 0xDF) {
            word.append(bytes[index] & 0xDF)
            index += 1
        }
        return word == Array("SELECT".utf8) || word == Array("WITH".utf8)
    }

    /// Whether the text holds nothing but blanks, comments and semicolons.
    static func isBlank(_ text: String) -> Bool {
        let bytes = Array(text.utf8)
        var index = 0
        while true {
            index = skipBlank(bytes, from: index)
            if index < bytes.count && bytes[index] == UInt8(ascii: ";") {
                index += 1
                continue
            }
            return index >= bytes.count
        }
    }

    /// Skips white space, `-- line` and `/* block */` comments.
    static func skipBlank(_ bytes: [UInt8], from start: Int) -> Int {
        var index = start
        while index < bytes.count {
            let byte = bytes[index]
            if byte == 0x20 || (0x09...0x0D).contains(byte) {
                index += 1
            } else if byte == UInt8(ascii: "-") && index + 1 < bytes.count && bytes[index + 1] == UInt8(ascii: "-") {
                while index < bytes.count && bytes[index] != 0x0A { index += 1 }
            } else if byte == UInt8(ascii: "/") && index + 1 < bytes.count && bytes[index + 1] == UInt8(ascii: "*") {
                index += 2
                while index + 1 < bytes.count && !(bytes[index] == UInt8(ascii: "*") && bytes[index + 1] == UInt8(ascii: "/")) { index += 1 }
                index = min(bytes.count, index + 2)
            } else {
                break
            }
        }
        return index
    }

    /// `name` as an SQL identifier in double quotes.
    package static func quoted(_ name: String) -> String {
        "\"" + name.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }
}
