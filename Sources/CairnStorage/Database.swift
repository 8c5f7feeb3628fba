import Foundation
package import Logging
import NIOCore
import NIOPosix
import NIOSSL
import PostgresKit
import PostgresNIO
package import SQLKit
import SQLiteKit
import ServiceLifecycle
import Synchronization
import Tracing

/// The SQL dialect in use. Repositories branch on it only where the engines truly differ.
package enum Dialect: String, Sendable {
    case sqlite, postgres
}

/// A coded storage failure that reaches operators (start-up) rather than HTTP clients.
package struct StorageError: Error, Sendable, CustomStringConvertible {
    /// Stable code: `invalid_database_url`, `database_unreachable`, `migration_failed`, `migration_files`.
    package var code: String
    /// What went wrong, without credentials.
    package var message: String
    /// `code: message`.
    package var description: String { "\(code): \(message)" }
}

/// Cairn's one database handle: SQLKit over embedded SQLite or PostgreSQL.
///
/// - SQLite: WAL mode, `synchronous=FULL` (a commit is durable), one writer connection behind
///   an async FIFO lock and a few reader connections; every call runs on a private thread pool,
///   never on an event loop. Single node only.
/// - PostgreSQL: a `PostgresClient` pool; several nodes may share one database.
///
/// It is a `Service`: add it to the `ServiceGroup` first so it is shut down last.
package final class Database: Sendable, Service {
    /// The dialect of the underlying engine.
    package let dialect: Dialect
    /// This node's liveness key (random, positive, one per opened database, so per node): rows
    /// a node leases name it, and the lease dies with the node (see ``livenessPredicate(ofColumn:)``).
    package let instanceKey: Int64
    private let backend: Backend
    private let logger: Logger

    private enum Backend: Sendable {
        case sqlite(SQLiteBackend)
        case postgres(PostgresBackend)
    }

    private init(dialect: Dialect, backend: Backend, instanceKey: Int64, logger: Logger) {
        self.dialect = dialect
        self.backend = backend
        self.instanceKey = instanceKey
        self.logger = logger
    }

    /// SQL true when the node named by the liveness key in `column` (an ``instanceKey``) is
    /// alive, as seen from this node: this node itself, or, on PostgreSQL, a node whose
    /// session advisory lock on its key is held — PostgreSQL drops it the moment that node's
    /// connection closes (a crash, `kill -9`, a lost network), so a dead node's leases are free
    /// at once, not after a wall-clock lease. On SQLite (one node) only this process is alive:
    /// any other key was left by a process that has stopped.
    package func livenessPredicate(ofColumn column: String) -> SQLQueryString {
        precondition(column.allSatisfy { $0.isLetter || $0.isNumber || $0 == "_" || $0 == "." }, "column names are identifiers")
        switch dialect {
        case .sqlite: return "\(unsafeRaw: column) = \(bind: instanceKey)"
        case .postgres:
            // A bigint advisory key shows in pg_locks as classid (high half) and objid (low half), objsubid 1.
            return """
                (\(unsafeRaw: column) = \(bind: instanceKey) OR EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1
                AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
                AND ((classid::bigint << 32) | objid::bigint) = \(unsafeRaw: column)))
                """
        }
    }

    /// Opens the database named by `url`: `postgres://user:pass@host:port/db[?sslmode=…]`
    /// (or `postgresql://`) for PostgreSQL, otherwise a SQLite file at `sqlitePath`.
    ///
    /// PostgreSQL is checked with `SELECT 1` under `startupTimeout`, so a wrong host or password
    /// fails fast with `database_unreachable` instead of retrying forever. The URL's
    /// `connect_timeout` (libpq's parameter, seconds) replaces `startupTimeout` when present.
    /// - Throws: `StorageError` (`invalid_database_url`, `database_unreachable`).
    package static func open(
        url: String?, sqlitePath: String, logger: Logger, startupTimeout: Duration = .seconds(15)
    ) async throws -> Database {
        if let url, !url.isEmpty {
            let backend = try PostgresBackend(url: url, logger: logger)
            let database = Database(dialect: .postgres, backend: .postgres(backend), instanceKey: Self.makeInstanceKey(), logger: logger)
            do {
                try await withDeadline(backend.connectTimeout ?? startupTimeout) {
                    // The liveness connection first: it is opened outside the pool and fails at
                    // the server's first refusal (a database that does not exist, a wrong
                    // password), where the pool would retry it until the deadline.
                    try await backend.holdLiveness(key: database.instanceKey)
                    try await database.read { db in _ = try await db.raw("SELECT 1 AS one").all() }
                }
            } catch {
                await backend.shutdown()
                throw StorageError(
                    code: "database_unreachable",
                    message: "cannot reach PostgreSQL at \(backend.redactedURL): \(Self.describe(error))")
            }
            return database
        }
        let backend = try await SQLiteBackend.open(path: sqlitePath, logger: logger)
        return Database(dialect: .sqlite, backend: .sqlite(backend), instanceKey: Self.makeInstanceKey(), logger: logger)
    }

    /// A random key in `1...Int64.max`.
    private static func makeInstanceKey() -> Int64 { Int64.random(in: 1...Int64.max) }

    private static func describe(_ error: any Error) -> String {
        if let error = error as? PSQLError {
            if let message = error.serverInfo?[.message] {
                // The SQLSTATE tells a missing database (3D000) from a refused login (28P01).
                return error.serverInfo?[.sqlState].map { "\(message) (SQLSTATE \($0))" } ?? message
            }
            return "\(error.code)"
        }
        if error is DeadlineExceeded { return "timed out" }
        return String(describing: error).prefix(200).description
    }

    /// Checks a PostgreSQL URL without connecting (scheme, host, database name, `sslmode`,
    /// `connect_timeout`, no other query parameter),
    /// so a malformed one is a configuration error before anything is written.
    /// - Throws: `StorageError` `invalid_database_url` saying what is wrong.
    package static func checkPostgresURL(_ url: String) throws {
        _ = try PostgresBackend.parse(url: url)
    }

    /// Runs read-only work on a connection. SQLite: the reader connections, each statement on
    /// one that no other statement is using, so it reads the database as last committed when it
    /// starts (a WAL snapshot of its own; see ``SQLiteBackend/withReader(_:)``).
    package func read<R: Sendable>(_ body: @escaping @Sendable (any SQLDatabase) async throws -> R) async throws -> R {
        switch backend {
        case .sqlite(let sqlite): return try await sqlite.readerMetrics.using { try await body(self.traced(sqlite.reader())) }
        case .postgres(let postgres): return try await postgres.withConnection { try await body(self.traced($0.sql())) }
        }
    }

    /// Runs single-statement writes without a transaction. SQLite: on the writer, serialized.
    package func write<R: Sendable>(_ body: @escaping @Sendable (any SQLDatabase) async throws -> R) async throws -> R {
        switch backend {
        case .sqlite(let sqlite): return try await sqlite.withWriter { try await body(self.traced($0)) }
        case .postgres(let postgres): return try await postgres.withConnection { try await body(self.traced($0.sql())) }
        }
    }

    /// Runs `body` in one transaction: committed when it returns, rolled back when it throws.
    /// SQLite uses `BEGIN IMMEDIATE` (the write lock is taken up front, so no upgrade deadlock).
    /// `body` gets the transaction's connection; work it registers with
    /// ``afterCommit(on:_:)`` runs after the commit, before this returns.
    package func transaction<R: Sendable>(_ body: @escaping @Sendable (any SQLDatabase) async throws -> R) async throws -> R {
        switch backend {
        case .sqlite(let sqlite):
            // Each unit of work on the group-commit writer already runs atomically.
            return try await sqlite.withWriter { try await body(self.traced($0)) }
        case .postgres(let postgres):
            return try await postgres.withConnection { connection in
                try await Self.inTransaction(self.traced(connection.sql()), begin: "BEGIN", body)
            }
        }
    }

    private static func inTransaction<R: Sendable>(
        _ db: any SQLDatabase, begin: String, _ body: @escaping @Sendable (any SQLDatabase) async throws -> R
    ) async throws -> R {
        try await db.raw(SQLQueryString(begin)).run()
        do {
            let transaction = Transaction(db)
            let result = try await body(transaction)
            try await db.raw("COMMIT").run()
            transaction.committed()
            return result
        } catch {
            try? await db.raw("ROLLBACK").run()
            throw error
        }
    }

    /// A lock key named by `name` (`files:<tenant>`, `schedules:<tenant>`): FNV-1a of its UTF-8
    /// bytes, folded to the 63 bits of a non-negative `bigint` that `pg_advisory_xact_lock`
    /// takes.
    package static func lockKey(_ name: String) -> Int64 {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in name.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01B3
        }
        return Int64(bitPattern: hash & 0x7FFF_FFFF_FFFF_FFFF)
    }

    /// Runs `body` in a transaction that first takes a database-wide exclusive lock named by
    /// `key`: `pg_advisory_xact_lock` on PostgreSQL, the SQLite write lock otherwise. Used for
    /// migrations, so several nodes starting at once apply each one exactly once.
    package func withExclusiveLock<R: Sendable>(key: Int64, _ body: @escaping @Sendable (any SQLDatabase) async throws -> R) async throws -> R {
        try await transaction { [dialect] db in
            if dialect == .postgres {
                try await db.raw("SELECT pg_advisory_xact_lock(\(bind: key))").run()
            }
            return try await body(db)
        }
    }

    /// Reclaims the dead row versions of a table that churns (a queue), so index scans stop
    /// stepping over them: `VACUUM` on PostgreSQL, run by one node at a time (a session advisory
    /// lock named by `lockKey`; the others skip). Autovacuum wakes a database at most once a
    /// minute by default, far too rarely for a table updated thousands of times a second.
    /// SQLite reuses freed pages by itself: a no-op there.
    /// - Returns: whether this call vacuumed.
    /// - Throws: the driver's error when the statement fails.
    package func vacuum(table: String, lockKey: Int64) async throws -> Bool {
        guard let client = postgresClient else { return false }
        Self.requireIdentifier(table)
        return try await client.withConnection { connection in
            let locked = try await connection.query("SELECT pg_try_advisory_lock(\(lockKey)) AS locked", logger: logger)
            var acquired = false
            for try await (value) in locked.decode(Bool.self) { acquired = value }
            guard acquired else { return false }
            do {
                try await connection.query(PostgresQuery(unsafeSQL: "VACUUM (ANALYZE) \(table)"), logger: logger)
                try await connection.query("SELECT pg_advisory_unlock(\(lockKey))", logger: logger)
            } catch {
                _ = try? await connection.query("SELECT pg_advisory_unlock(\(lockKey))", logger: logger)
                throw error
            }
            return true
        }
    }

    /// Stops on a table name that is not a plain identifier: maintenance statements take it
    /// as SQL text, not as a bound value.
    private static func requireIdentifier(_ table: String) {
        precondition(table.allSatisfy { $0.isLetter || $0.isNumber || $0 == "_" }, "table names are identifiers")
    }

    /// Refreshes the planner's statistics of `table` (`ANALYZE` on PostgreSQL) unless they
    /// already describe at least `unlessCounted` rows (`pg_class.reltuples`, −1 until the
    /// table's first analysis): rows added to a big table move its statistics little, and
    /// autovacuum keeps those. SQLite's planner needs none for Cairn's queries (it prefers the
    /// index matching more equality terms): a no-op there.
    /// - Returns: whether this call analyzed.
    /// - Throws: the driver's error when a statement fails.
    package func analyze(table: String, unlessCounted: Int = .max) async throws -> Bool {
        guard let client = postgresClient else { return false }
        Self.requireIdentifier(table)
        return try await client.withConnection { connection in
            let counted = try await connection.query(
                "SELECT reltuples::bigint AS n FROM pg_class WHERE oid = to_regclass(\(table))", logger: logger)
            for try await n in counted.decode(Int.self) where n >= unlessCounted { return false }
            try await connection.query(PostgresQuery(unsafeSQL: "ANALYZE \(table)"), logger: logger)
            return true
        }
    }

    /// Runs `postgres` or `sqlite` on a reader connection of the engine in use, metered like
    /// `read` (positional reads, which bypass SQLKit).
    func withNativeReader<R: Sendable>(
        postgres: @escaping @Sendable (PostgresConnection) async throws -> R, sqlite: @escaping @Sendable (SQLiteConnection) async throws -> R
    ) async throws -> R {
        switch backend {
        case .sqlite(let backend): return try await backend.readerMetrics.using { try await backend.withReader { try await sqlite($0.connection) } }
        case .postgres(let backend): return try await backend.withConnection(postgres)
        }
    }

    /// Runs `postgres` on a pooled connection, or `sqlite` on the writer connection as one unit
    /// of group commit (so it commits, durably, with its batch), for positional writes.
    func withNativeWriter<R: Sendable>(
        postgres: @escaping @Sendable (PostgresConnection) async throws -> R, sqlite: @escaping @Sendable (SQLiteConnection) async throws -> R
    ) async throws -> R {
        switch backend {
        case .sqlite(let backend): return try await backend.withWriter { _ in try await sqlite(backend.writerConnection) }
        case .postgres(let backend): return try await backend.withConnection(postgres)
        }
    }

    /// The SQLite backend; nil on PostgreSQL.
    var sqliteBackend: SQLiteBackend? {
        if case .sqlite(let sqlite) = backend { return sqlite }
        return nil
    }

    /// How often SQLite's per-connection statement caches prepared and reused a statement,
    /// summed over the connections; nil on PostgreSQL (which keeps its prepared statements
    /// on the server, see ``PreparedRead``).
    package var sqliteStatementCacheCounts: SQLiteStatementCacheCounts? { sqliteBackend?.statementCacheCounts }

    /// The PostgreSQL client, for the event bus's LISTEN connections; nil on SQLite.
    var postgresClient: PostgresClient? {
        if case .postgres(let postgres) = backend { return postgres.client }
        return nil
    }

    /// Waits for graceful shutdown, then closes every connection.
    package func run() async throws {
        try? await gracefulShutdown()
        await close()
    }

    /// Closes every connection. Safe to call more than once, and from a cancelled task: the
    /// closing runs in a task of its own, so cancellation cannot leave connections open.
    package func close() async {
        let backend = self.backend
        await Task {
            switch backend {
            case .sqlite(let sqlite): await sqlite.close()
            case .postgres(let postgres): await postgres.shutdown()
            }
        }.value
    }
}

/// PostgreSQL through postgres-nio's `PostgresClient`, whose `run()` drives the pool.
final class PostgresBackend: Sendable {
    let client: PostgresClient
    let redactedURL: String
    private let runner: Task<Void, Never>
    /// How to open a connection outside the pool (the liveness lock's).
    private let connectionConfiguration: PostgresConnection.Configuration
    /// The URL's `connect_timeout`, when it has one: how long opening a connection, and the
    /// start-up check, may take.
    let connectTimeout: Duration?

    /// The parts of a PostgreSQL URL Cairn reads, checked.
    struct URLParts {
        let components: URLComponents
        let scheme: String
        let host: String
        let sslmode: String
        let connectTimeout: Duration?
    }

    /// The URL's query parameters Cairn reads (libpq's names); any other is refused.
    static let acceptedParameters = ["sslmode", "connect_timeout"]

    /// Parses `url` without connecting: scheme, host, a database name in the path, and the
    /// query's `sslmode` and `connect_timeout` (no other parameter).
    /// - Throws: `invalid_database_url` naming what is wrong, its message always
    ///   `CAIRN_DATABASE_URL <problem>` (the configuration names the flag instead when the URL
    ///   came from `--database-url`).
    static func parse(url: String) throws -> URLParts {
        // Schemes compare in any case (RFC 3986 §3.1): `POSTGRESQL://` is `postgresql://`.
        guard let components = URLComponents(string: url),
            let scheme = components.scheme?.lowercased(), scheme == "postgres" || scheme == "postgresql",
            let host = components.host, !host.isEmpty
        else {
            throw StorageError(code: "invalid_database_url", message: "CAIRN_DATABASE_URL must look like postgres://user:password@host:5432/database")
        }
        // libpq would take the user name as the database's (PostgreSQL docs, §32.1.2): Cairn
        // would then migrate whatever database that names, often `postgres` itself.
        guard components.path.contains(where: { $0 != "/" }) else {
            throw StorageError(
                code: "invalid_database_url",
                message: "CAIRN_DATABASE_URL names no database: put the database name in the URL's path, as in postgres://user@\(host):5432/cairn")
        }
        // A parameter Cairn does not read would be ignored: a typo such as `sslmod=require`
        // would connect without TLS.
        for item in components.queryItems ?? [] where !Self.acceptedParameters.contains(item.name) {
            throw StorageError(
                code: "invalid_database_url",
                message: "CAIRN_DATABASE_URL has an unknown parameter '\(item.name)' (accepted: \(Self.acceptedParameters.joined(separator: ", ")))")
        }
        let sslmode = components.queryItems?.first(where: { $0.name == "sslmode" })?.value ?? "prefer"
        guard ["disable", "prefer", "allow", "require", "verify-ca", "verify-full"].contains(sslmode) else {
            throw StorageError(code: "invalid_database_url", message: "CAIRN_DATABASE_URL has an unsupported sslmode '\(sslmode)'")
        }
        let connectTimeout = try Self.connectTimeout(components.queryItems?.first(where: { $0.name == "connect_timeout" })?.value)
        return URLParts(components: components, scheme: scheme, host: host, sslmode: sslmode, connectTimeout: connectTimeout)
    }

    init(url: String, logger: Logger) throws {
        let parts = try Self.parse(url: url)
        let (components, scheme, host, sslmode) = (parts.components, parts.scheme, parts.host, parts.sslmode)
        let user = components.user.flatMap { $0.removingPercentEncoding } ?? "postgres"
        let password = components.password.flatMap { $0.removingPercentEncoding }
        let database = String(components.path.drop(while: { $0 == "/" }))
        let tls: PostgresClient.Configuration.TLS
        let connectionTLS: PostgresConnection.Configuration.TLS
        switch sslmode {
        case "disable": (tls, connectionTLS) = (.disable, .disable)
        case "prefer", "allow":
            let tlsConfiguration = try NIOSSLContext(configuration: .makeClientConfiguration())
            (tls, connectionTLS) = (.prefer(.makeClientConfiguration()), .prefer(tlsConfiguration))
        case "require", "verify-ca", "verify-full":
            let tlsConfiguration = try NIOSSLContext(configuration: .makeClientConfiguration())
            (tls, connectionTLS) = (.require(.makeClientConfiguration()), .require(tlsConfiguration))
        default:
            throw StorageError(code: "invalid_database_url", message: "CAIRN_DATABASE_URL has an unsupported sslmode '\(sslmode)'")
        }
        let connectTimeout = parts.connectTimeout
        self.connectTimeout = connectTimeout
        var configuration = PostgresClient.Configuration(
            host: host, port: components.port ?? 5432, username: user, password: password,
            database: database.isEmpty ? nil : database, tls: tls)
        configuration.options.maximumConnections = Self.maximumConnections
        var connectionConfiguration = PostgresConnection.Configuration(
            host: host, port: components.port ?? 5432, username: user, password: password,
            database: database.isEmpty ? nil : database, tls: connectionTLS)
        connectionConfiguration.options.connectTimeout = .seconds(connectTimeout?.components.seconds ?? 5)
        self.connectionConfiguration = connectionConfiguration
        configuration.options.connectTimeout = .seconds(connectTimeout?.components.seconds ?? 5)
        self.redactedURL = "\(scheme)://\(user)@\(host):\(components.port ?? 5432)/\(database)"
        let client = PostgresClient(configuration: configuration, backgroundLogger: logger)
        self.client = client
        self.runner = Task { await client.run() }
    }

    /// `connect_timeout` as libpq reads it (PostgreSQL docs, §34.1.2): whole seconds; zero,
    /// negative or absent means none is set (Cairn's defaults apply), and 1 counts as 2.
    /// - Throws: `invalid_database_url` when the value is not an integer.
    static func connectTimeout(_ text: String?) throws -> Duration? {
        guard let text else { return nil }
        guard let seconds = Int(text.trimmingCharacters(in: .whitespaces)) else {
            throw StorageError(
                code: "invalid_database_url", message: "CAIRN_DATABASE_URL has a connect_timeout that is not a whole number of seconds")
        }
        return seconds <= 0 ? nil : .seconds(max(seconds, 2))
    }

    /// Connections the pool opens at most.
    static let maximumConnections = 16
    /// The pool's use and wait time.
    let metrics = PoolMetrics(pool: "postgres", capacity: maximumConnections)

    /// `PostgresClient.withConnection`, with the wait for a connection and its use measured.
    func withConnection<R: Sendable>(_ body: @escaping @Sendable (PostgresConnection) async throws -> R) async throws -> R {
        let asked = ContinuousClock.now
        return try await client.withConnection { connection in
            metrics.waited(since: asked)
            return try await metrics.using { try await body(connection) }
        }
    }

    func shutdown() async {
        let holder = liveness.withLock { $0 }
        holder?.cancel()
        _ = await holder?.value
        runner.cancel()
        _ = await runner.value
    }

    /// How long a query of the liveness connection may take before the connection is
    /// given up and a new one opened.
    static let livenessQueryLimit: Duration = .seconds(10)

    /// The task holding this node's liveness lock.
    private let liveness = Mutex<Task<Void, Never>?>(nil)

    /// Takes the session advisory lock `key` on a connection of its own, outside the pool, and
    /// keeps it for as long as the backend runs (taken again on a new connection as soon as the
    /// server drops this one, or a check every 10 s fails), so other nodes see this node alive exactly while its
    /// connection is (see ``Database/livenessPredicate(ofColumn:)``). Returns once the lock is
    /// first held. Outside the pool: a lease held for the node's life, and retried while the
    /// server is down, kept the pool from reconnecting after a database restart.
    /// - Throws: the driver's error when the first attempt fails.
    func holdLiveness(key: Int64) async throws {
        // Every attempt reports; the caller reads only the first (later ones replace each other).
        let (held, attempts) = AsyncStream<Result<Void, any Error>>.makeStream(bufferingPolicy: .bufferingNewest(1))
        let (configuration, logger) = (connectionConfiguration, Logger(label: "cairn.liveness"))
        let task = Task {
            var nextId = 0
            while !Task.isCancelled {
                var opened: PostgresConnection?
                do {
                    nextId += 1
                    let connection = try await PostgresConnection.connect(
                        on: MultiThreadedEventLoopGroup.singleton.any(), configuration: configuration, id: nextId, logger: logger)
                    opened = connection
                    // postgres-nio never answers a query written to a connection the server
                    // has closed (a restart), and ignores cancellation while it waits: every
                    // query and the close here have a deadline, so the loop goes on and
                    // `shutdown()` is never held.
                    try await withDeadline(Self.livenessQueryLimit) {
                        _ = try await connection.query("SELECT pg_advisory_lock(\(key))", logger: logger)
                    }
                    attempts.yield(.success(()))
                    while !Task.isCancelled {
                        // Back at once when the server drops the connection, else checked every 10 s.
                        _ = try? await withDeadline(.seconds(10)) { try await connection.closeFuture.get() }
                        try Task.checkCancellation()
                        guard !connection.isClosed else { break }
                        try await withDeadline(Self.livenessQueryLimit) { _ = try await connection.query("SELECT 1", logger: logger) }
                    }
                } catch {
                    attempts.yield(.failure(error))
                }
                if let opened { _ = try? await withDeadline(Self.livenessQueryLimit) { try await opened.close() } }
                // A lost connection took the lock with it: take it again on a new one.
                if !Task.isCancelled { try? await Task.sleep(for: .seconds(1)) }
            }
        }
        liveness.withLock { $0 = task }
        for await result in held {
            try result.get()
            return
        }
    }
}

/// Embedded SQLite: one writer with group commit, several readers, a private thread pool.
final class SQLiteBackend: Sendable {
    private let writer: SQLiteConnection
    private let readers: [SQLiteConnection]
    /// Each connection's prepared statements (nil when SQLiteNIO's handle is out of reach),
    /// `readers`' in the same order.
    private let writerStatements: SQLiteStatementCache?
    private let readerStatements: [SQLiteStatementCache?]
    private let groupCommit: GroupCommitWriter
    /// Which of `readers` are free: each runs one statement at a time (see ``withReader(_:)``).
    private let readerSlots: ReaderSlots
    private let threadPool: NIOThreadPool
    /// Reader connections lent to one hot read at a time, run on the caller's thread (see
    /// ``cachedRead(_:_:_:fallback:)``); never used by anything else, so such a read never waits
    /// for a connection another thread holds.
    private let lentReaders: [LentReader]
    /// Every lent connection, for closing (one without a statement cache is never lent).
    private let lentConnections: [SQLiteConnection]
    /// The reader connections' use (the writer's is kept by its group commit).
    let readerMetrics: PoolMetrics

    /// A reader connection's statement cache, lent to one read at a time.
    private final class LentReader: Sendable {
        let statements: SQLiteStatementCache
        private let busy = Atomic<Bool>(false)

        init(statements: SQLiteStatementCache) {
            self.statements = statements
        }

        func tryLend() -> Bool { busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged }
        func giveBack() { busy.store(false, ordering: .releasing) }
    }

    private init(writer: SQLiteConnection, readers: [SQLiteConnection], lent: [SQLiteConnection], threadPool: NIOThreadPool) {
        self.writer = writer
        self.readers = readers
        self.threadPool = threadPool
        let writerStatements = SQLiteStatementCache(connection: writer, threadPool: threadPool)
        self.writerStatements = writerStatements
        self.readerStatements = readers.map { SQLiteStatementCache(connection: $0, threadPool: threadPool) }
        self.readerSlots = ReaderSlots(count: readers.count)
        self.lentConnections = lent
        self.lentReaders = lent.compactMap { connection in
            SQLiteStatementCache(connection: connection, threadPool: threadPool).map { LentReader(statements: $0) }
        }
        self.groupCommit = GroupCommitWriter(database: writer.sql(), statements: writerStatements)
        // Without readers (an in-memory database) reads go to the writer connection.
        self.readerMetrics = PoolMetrics(pool: "sqlite_reader", capacity: max(readers.count + lentReaders.count, 1))
    }

    static func open(path: String, logger: Logger) async throws -> SQLiteBackend {
        let pool = NIOThreadPool(numberOfThreads: 4)
        pool.start()
        let eventLoop = MultiThreadedEventLoopGroup.singleton.any()
        let storage: SQLiteConnection.Storage = path == ":memory:" ? .memory : .file(path: path)
        let writer = try await SQLiteConnection.open(storage: storage, threadPool: pool, logger: logger, on: eventLoop)
        let writerSQL = writer.sql()
        if path != ":memory:" {
            _ = try await writerSQL.raw("PRAGMA journal_mode=WAL").all()
        }
        for pragma in ["PRAGMA synchronous=FULL", "PRAGMA busy_timeout=30000", "PRAGMA foreign_keys=ON"] {
            _ = try await writerSQL.raw(SQLQueryString(pragma)).all()
        }
        var readers: [SQLiteConnection] = []
        var lent: [SQLiteConnection] = []
        if path != ":memory:" {
            // Three shared readers, and one lent reader per event loop: each loop can then run a
            // hot read on its own thread while the others do theirs.
            for index in 0..<(3 + NIOSingletons.groupLoopCountSuggestion) {
                let reader = try await SQLiteConnection.open(
                    storage: storage, threadPool: pool, logger: logger, on: MultiThreadedEventLoopGroup.singleton.any())
                _ = try await reader.sql().raw("PRAGMA busy_timeout=30000").all()
                if index < 3 { readers.append(reader) } else { lent.append(reader) }
            }
        }
        return SQLiteBackend(writer: writer, readers: readers, lent: lent, threadPool: pool)
    }

    /// The shared readers as one connection: each statement runs on a free one (see
    /// ``withReader(_:)``); the writer when there are none (in memory).
    func reader() -> any SQLDatabase {
        if readers.isEmpty { return writer.sql() }
        return SharedReaders(backend: self, base: readers[0].sql())
    }

    /// Runs `body` on a shared reader connection (with its statement cache) that no other
    /// statement is using, waiting for one to be free; the writer when there are none (in memory).
    ///
    /// SQLite's read transaction belongs to the connection: a statement that starts while
    /// another one on the same connection is still stepping (on another thread of the pool)
    /// joins that one's implicit transaction, and so reads the database as it was when that one
    /// began, before commits that returned since. Under load, reads overlapping one after
    /// another kept a reader on one snapshot for seconds: a deleted user's session state was
    /// read, after the deletion had committed and this node had dropped its cached state, as
    /// before it, and cached again. One statement per connection at a time gives each its own
    /// snapshot, taken when it starts. SQLite runs one call per connection at a time anyway
    /// (serialized mode), so this costs no parallelism; `body` must be one statement.
    func withReader<R: Sendable>(_ body: (_ reader: (connection: SQLiteConnection, statements: SQLiteStatementCache?)) async throws -> R)
        async throws -> R
    {
        if readers.isEmpty { return try await body((writer, writerStatements)) }
        let index = await readerSlots.acquire()
        defer { readerSlots.release(index) }
        return try await body((readers[index], readerStatements[index]))
    }

    func withWriter<R: Sendable>(_ body: @escaping @Sendable (any SQLDatabase) async throws -> R) async throws -> R {
        try await groupCommit.submit(body)
    }

    /// The writer connection, for positional statements run inside a group-commit unit only.
    var writerConnection: SQLiteConnection { writer }

    /// Runs the fixed statement `sql` on a reader (metered) with the reader's prepared copy,
    /// or `fallback` on the connection when it has no statement cache.
    ///
    /// A free lent reader runs it on the calling thread (an event loop when the server runs on
    /// NIO's executor): the callers are short keyed reads (a task, a page of tasks, a user), and
    /// the hop to SQLite's thread pool and back cost more than the read itself. With every lent
    /// reader busy it goes to a shared reader on the thread pool, as before.
    func cachedRead<R: Sendable>(
        _ sql: String, _ binds: [SQLBindValue], _ decode: @escaping @Sendable (PositionalRow) throws -> R,
        fallback: @escaping @Sendable (SQLiteConnection) async throws -> [R]
    ) async throws -> [R] {
        try await readerMetrics.using {
            if let lent = self.lentReaders.first(where: { $0.tryLend() }) {
                defer { lent.giveBack() }
                return try lent.statements.rowsOnCallingThread(sql, binds, decode)
            }
            return try await self.withReader { reader in
                guard let statements = reader.statements else { return try await fallback(reader.connection) }
                return try await statements.rows(sql, binds, decode)
            }
        }
    }

    /// Runs the fixed statement `sql` as one group-commit unit on the writer with its prepared
    /// copy (a unit the writer can run in place, see `GroupCommitWriter.submit(inPlace:)`), or
    /// `fallback` on the writer connection when it has no statement cache.
    func cachedWrite<R: Sendable>(
        _ sql: String, _ binds: [SQLBindValue], _ decode: @escaping @Sendable (PositionalRow) throws -> R,
        fallback: @escaping @Sendable (SQLiteConnection) async throws -> [R]
    ) async throws -> [R] {
        guard writerStatements != nil else { return try await withWriter { _ in try await fallback(self.writer) } }
        return try await groupCommit.submit(inPlace: { statements in try statements.rowsInPlace(sql, binds, decode) })
    }

    /// The statement caches' counts, summed over the connections.
    var statementCacheCounts: SQLiteStatementCacheCounts {
        var total = SQLiteStatementCacheCounts(prepared: 0, reused: 0, held: 0)
        for cache in [writerStatements] + readerStatements + lentReaders.map(\.statements) {
            guard let counts = cache?.counts else { continue }
            total.prepared += counts.prepared
            total.reused += counts.reused
            total.held += counts.held
            total.recompiled += counts.recompiled
            total.onCallingThread += counts.onCallingThread
            total.poolHops += counts.poolHops
        }
        return total
    }

    private let closed = Atomic<Bool>(false)

    func close() async {
        guard !closed.exchange(true, ordering: .acquiring) else { return }
        // Prepared statements first: SQLite does not close a connection that still has some.
        for cache in [writerStatements] + readerStatements + lentReaders.map(\.statements) { cache?.close() }
        for connection in readers + lentConnections + [writer] where !connection.isClosed {
            try? await connection.close()
        }
        try? await threadPool.shutdownGracefully()
    }
}

extension Database {
    /// True when `error` is a unique-constraint violation on either engine (SQLite
    /// `SQLITE_CONSTRAINT_UNIQUE`/primary key, PostgreSQL SQLSTATE 23505).
    package static func isUniqueViolation(_ error: any Error) -> Bool {
        if let error = error as? PSQLError {
            return error.serverInfo?[.sqlState] == "23505"
        }
        // SQLiteNIO's error, or the statement cache's own (SQLiteStatementCache).
        guard let message = (error as? SQLiteError)?.message ?? (error as? SQLiteStatementError)?.message else { return false }
        return message.contains("UNIQUE constraint failed") || message.contains("PRIMARY KEY")
    }

    /// True when `error` is a foreign-key violation on either engine: a row naming a parent
    /// row that does not exist (or no longer does). SQLite `SQLITE_CONSTRAINT_FOREIGNKEY`
    /// (extended code 787, message `FOREIGN KEY constraint failed`), PostgreSQL SQLSTATE 23503.
    package static func isForeignKeyViolation(_ error: any Error) -> Bool {
        if let error = error as? PSQLError {
            return error.serverInfo?[.sqlState] == "23503"
        }
        if let error = error as? SQLiteStatementError {
            return error.code == 787 || error.message.contains("FOREIGN KEY constraint failed")
        }
        return (error as? SQLiteError)?.message.contains("FOREIGN KEY constraint failed") == true
    }
}

/// Group commit for SQLite's single writer: units of work that arrive while a commit is being
/// made durable are run together in the next transaction, each inside its own SAVEPOINT (so
/// one that throws is rolled back alone), and committed with one fsync. No unit's caller is
/// resumed before the COMMIT that contains it has succeeded; if it fails, every unit of the
/// batch fails. Under no load a batch holds one unit, so there is no added latency.
final class GroupCommitWriter: Sendable {
    private struct Unit: Sendable {
        let body: @Sendable (any SQLDatabase) async throws -> any Sendable
        /// The same work as one synchronous call on the writer's thread, for a unit that is a
        /// cached statement: a batch of only such units runs whole in one hop to the thread pool.
        let inPlace: (@Sendable (SQLiteStatementCache) throws -> any Sendable)?
        let continuation: CheckedContinuation<any Sendable, any Error>
        /// The unit's view of the batch's transaction, holding its after-commit work.
        let transaction: Transaction
        /// When the unit was submitted (its wait for the writer ends when its body starts).
        let submitted: ContinuousClock.Instant
        /// The submitter's service context, so its statements join the submitter's trace.
        let context: ServiceContext?
    }
    private let database: any SQLDatabase
    /// The writer's statement cache, for the batch's own statements (BEGIN, SAVEPOINT, …),
    /// which otherwise are compiled again for every unit.
    private let statements: SQLiteStatementCache?
    private let pending = Mutex(PendingBatches<Unit>())
    /// Upper bound on units per transaction, so one batch cannot grow without limit.
    private let maximumBatch = 256
    /// The writer's use and the units' wait for it.
    private let metrics = PoolMetrics(pool: "sqlite_writer", capacity: 1)

    init(database: any SQLDatabase, statements: SQLiteStatementCache?) {
        self.database = database
        self.statements = statements
    }

    /// Runs one of the batch's own statements, prepared once when the writer has a cache.
    private func control(_ sql: String) async throws {
        try await control([sql])
    }

    /// Runs some of the batch's own statements in order, in one hop to the thread pool when
    /// the writer has a statement cache; stops at the first error.
    private func control(_ sql: [String]) async throws {
        if let statements {
            try await statements.execute(sql)
        } else {
            for statement in sql { try await database.raw(SQLQueryString(statement)).run() }
        }
    }

    func submit<R: Sendable>(_ body: @escaping @Sendable (any SQLDatabase) async throws -> R) async throws -> R {
        try await enqueue(body: { try await body($0) }, inPlace: nil)
    }

    /// Submits a unit that is synchronous work on the writer's statement cache (one cached
    /// statement): alone or in a batch of such units, BEGIN, the units (each in its savepoint)
    /// and COMMIT run in one hop to the thread pool, where an asynchronous unit costs two hops
    /// of its own (its savepoint, then its body) and a batch of one three (BEGIN, body, COMMIT).
    /// The writer is serial, so those hops were what bounded its commits per second. Same
    /// outcome as ``submit(_:)`` otherwise. Needs the writer's statement cache.
    /// - Throws: what `inPlace` throws, or the batch's BEGIN/COMMIT error.
    func submit<R: Sendable>(inPlace: @escaping @Sendable (SQLiteStatementCache) throws -> R) async throws -> R {
        guard let statements else { preconditionFailure("submit(inPlace:) needs the writer's statement cache") }
        return try await enqueue(body: { _ in try await statements.onThreadPool { try inPlace(statements) } }, inPlace: { try inPlace($0) })
    }

    private func enqueue<R: Sendable>(
        body: @escaping @Sendable (any SQLDatabase) async throws -> any Sendable, inPlace: (@Sendable (SQLiteStatementCache) throws -> any Sendable)?
    ) async throws -> R {
        let result = try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<any Sendable, any Error>) in
            let startDrain = pending.withLock { pending in
                pending.add(
                    Unit(
                        body: body, inPlace: inPlace, continuation: continuation, transaction: Transaction(database), submitted: .now,
                        context: ServiceContext.current))
            }
            if startDrain { Task { await self.drain() } }
        }
        // Safe: the unit stored above returns exactly `R`.
        return result as! R
    }

    private func drain() async {
        while true {
            let batch = pending.withLock { $0.next(upTo: maximumBatch) }
            if batch.isEmpty { return }
            await metrics.using { await run(batch) }
        }
    }

    private func run(_ batch: [Unit]) async {
        if let statements, batch.allSatisfy({ $0.inPlace != nil }) {
            await runInPlace(batch, on: statements)
            return
        }
        if batch.count == 1 {
            await runAlone(batch[0])
            return
        }
        var results: [Result<any Sendable, any Error>] = []
        results.reserveCapacity(batch.count)
        // Control statements that can go together go in one hop to the thread pool: BEGIN with
        // the first SAVEPOINT, each RELEASE with the next SAVEPOINT, the last with COMMIT. If
        // one of those fails, which of them failed is not known, so the whole batch is rolled
        // back and fails with it.
        var controls = ["BEGIN IMMEDIATE"]
        do {
            for unit in batch {
                controls.append("SAVEPOINT unit")
                try await control(controls)
                metrics.waited(since: unit.submitted)
                do {
                    let value = try await ServiceContext.$current.withValue(unit.context) { try await unit.body(unit.transaction) }
                    results.append(.success(value))
                    controls = ["RELEASE unit"]
                } catch {
                    results.append(.failure(error))
                    try await control(["ROLLBACK TO unit", "RELEASE unit"])
                    controls = []
                }
            }
            controls.append("COMMIT")
            try await control(controls)
        } catch {
            // Harmless when BEGIN itself failed and no transaction is open.
            try? await control("ROLLBACK")
            for unit in batch { unit.continuation.resume(throwing: error) }
            return
        }
        for (unit, result) in zip(batch, results) {
            // A unit rolled back to its savepoint has nothing to announce.
            if case .success = result { unit.transaction.committed() }
            unit.continuation.resume(with: result)
        }
    }

    /// A batch of units that all run in place: the whole transaction in one hop to the thread
    /// pool, with the outcome of ``run(_:)`` (one unit alone needs no savepoint, as in
    /// ``runAlone(_:)``; a failing unit of several is rolled back to its savepoint; a failing
    /// BEGIN, savepoint statement or COMMIT fails the whole batch).
    private func runInPlace(_ batch: [Unit], on statements: SQLiteStatementCache) async {
        for unit in batch { metrics.waited(since: unit.submitted) }
        let results: [Result<any Sendable, any Error>]
        do {
            results = try await statements.onThreadPool {
                try statements.executeInPlace(["BEGIN IMMEDIATE"])
                do {
                    let alone = batch.count == 1
                    var results: [Result<any Sendable, any Error>] = []
                    results.reserveCapacity(batch.count)
                    for unit in batch {
                        if !alone { try statements.executeInPlace(["SAVEPOINT unit"]) }
                        // Safe: `run` sends only batches whose units all run in place.
                        let result = Result { try unit.inPlace!(statements) }
                        results.append(result)
                        switch (result, alone) {
                        case (.success, false): try statements.executeInPlace(["RELEASE unit"])
                        case (.failure, false): try statements.executeInPlace(["ROLLBACK TO unit", "RELEASE unit"])
                        case (.failure(let error), true): throw error
                        case (.success, true): break
                        }
                    }
                    try statements.executeInPlace(["COMMIT"])
                    return results
                } catch {
                    // Harmless when COMMIT itself failed after rolling back.
                    try? statements.executeInPlace(["ROLLBACK"])
                    throw error
                }
            }
        } catch {
            for unit in batch { unit.continuation.resume(throwing: error) }
            return
        }
        for (unit, result) in zip(batch, results) {
            if case .success = result { unit.transaction.committed() }
            unit.continuation.resume(with: result)
        }
    }

    /// A batch of one, the common case under light load: the transaction is the unit's own,
    /// so it needs no savepoint (a failing unit rolls the transaction back). Two statements
    /// and two hops to the thread pool fewer per write.
    private func runAlone(_ unit: Unit) async {
        do {
            try await control("BEGIN IMMEDIATE")
        } catch {
            unit.continuation.resume(throwing: error)
            return
        }
        let value: any Sendable
        do {
            metrics.waited(since: unit.submitted)
            value = try await ServiceContext.$current.withValue(unit.context) { try await unit.body(unit.transaction) }
            try await control("COMMIT")
        } catch {
            try? await control("ROLLBACK")
            unit.continuation.resume(throwing: error)
            return
        }
        unit.transaction.committed()
        unit.continuation.resume(returning: value)
    }
}

/// The free reader connections of a ``SQLiteBackend``, lent to one statement at a time; the
/// reads waiting for one get them in order of arrival.
final class ReaderSlots: Sendable {
    private struct State {
        var free: [Int]
        var waiting: [CheckedContinuation<Int, Never>] = []
    }
    private let state: Mutex<State>

    /// Slots `0..<count`, all free.
    init(count: Int) {
        state = Mutex(State(free: Array((0..<count).reversed())))
    }

    /// A free slot, once there is one. The most recently freed goes first (its pages are warm).
    func acquire() async -> Int {
        if let index = state.withLock({ $0.free.popLast() }) { return index }
        return await withCheckedContinuation { continuation in
            let index = state.withLock { state -> Int? in
                if let index = state.free.popLast() { return index }
                state.waiting.append(continuation)
                return nil
            }
            if let index { continuation.resume(returning: index) }
        }
    }

    /// Frees `index`: to the longest waiting read, if any.
    func release(_ index: Int) {
        let waiter = state.withLock { state -> CheckedContinuation<Int, Never>? in
            guard !state.waiting.isEmpty else {
                state.free.append(index)
                return nil
            }
            return state.waiting.removeFirst()
        }
        waiter?.resume(returning: index)
    }
}

/// ``SQLiteBackend``'s shared readers as one `SQLDatabase` (what ``Database/read(_:)`` hands
/// its body): each statement runs on a reader no other statement is using (see
/// ``SQLiteBackend/withReader(_:)``).
struct SharedReaders: SQLDatabaseWrapper {
    let backend: SQLiteBackend
    /// One of the readers, for what every reader shares (dialect, logger, event loop); no
    /// statement runs on it directly.
    let base: any SQLDatabase

    func execute(sql query: any SQLExpression, _ onRow: @escaping @Sendable (any SQLRow) -> Void) -> EventLoopFuture<Void> {
        eventLoop.makeFutureWithTask { try await self.execute(sql: query, onRow) }
    }

    func execute(sql query: any SQLExpression, _ onRow: @escaping @Sendable (any SQLRow) -> Void) async throws {
        try await backend.withReader { reader in try await reader.connection.sql().execute(sql: query, onRow) }
    }
}
