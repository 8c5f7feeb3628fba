import CairnAccounts
import CairnPipelines
package import CairnServer
package import CairnStorage
import Foundation
import Logging
import SQLKit
import Synchronization

/// The `cairn` binary `swift build` made (or `CAIRN_BINARY`), which in-process nodes start in
/// sandbox mode for pipeline runs.
package let builtCairnBinary: String = {
    if let path = ProcessInfo.processInfo.environment["CAIRN_BINARY"] { return path }
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    for configuration in ["debug", "release"] {
        let path = root.appendingPathComponent(".build/\(configuration)/cairn").path
        if FileManager.default.isExecutableFile(atPath: path) { return path }
    }
    return root.appendingPathComponent(".build/debug/cairn").path
}()

/// A fresh database for one test: a copy of a migrated template (a SQLite file copied into a
/// new data directory, or a PostgreSQL database created with `CREATE DATABASE … TEMPLATE`),
/// or an empty one. ``remove()`` drops what it created; ``withTestDatabase(_:migrated:_:)``
/// calls it for you.
package struct TestDatabase: Sendable {
    /// The configuration pointing at it (data directory always set, bcrypt cost 4).
    package var configuration: CairnConfiguration
    /// The engine it runs on.
    package let engine: TestEngine
    /// The PostgreSQL database's name, nil on SQLite.
    let postgresName: String?

    /// Creates a database on `engine`: a copy of the migrated template when `migrated`,
    /// otherwise empty (for tests of migrations themselves). Call ``remove()`` when done.
    package static func make(_ engine: TestEngine, migrated: Bool = true) async throws -> TestDatabase {
        var configuration = CairnConfiguration()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("cairn-test-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        configuration.dataDir = directory
        configuration.accounts.bcryptCost = 4
        configuration.accounts.bcryptThreads = 2
        // This process is the test runner, not `cairn`: pipeline runs start the built binary.
        configuration.pipelines.sandboxExecutable = builtCairnBinary
        switch engine {
        case .sqlite:
            if migrated {
                try FileManager.default.copyItem(atPath: try await Templates.shared.sqlite(), toPath: configuration.sqlitePath)
            }
            return TestDatabase(configuration: configuration, engine: engine, postgresName: nil)
        case .postgres:
            let name = "cairn_t_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased().prefix(16)
            let template = migrated ? try await Templates.shared.postgres() : nil
            let admin = try await PostgresAdmin.shared.database()
            try await admin.write { db in
                if let template {
                    // FILE_COPY: with the test cluster's fsync off, copying the files (83 ms
                    // measured) beats the default WAL_LOG (237 ms) and migrating (390 ms).
                    try await db.raw("CREATE DATABASE \(ident: String(name)) TEMPLATE \(ident: template) STRATEGY FILE_COPY").run()
                } else {
                    try await db.raw("CREATE DATABASE \(ident: String(name))").run()
                }
            }
            configuration.databaseURL = try PostgresAdmin.url(database: String(name))
            return TestDatabase(configuration: configuration, engine: engine, postgresName: String(name))
        }
    }

    /// Drops the PostgreSQL database (ending any connection still open to it) and removes the
    /// data directory. Errors are ignored: a leftover must not fail a test that passed.
    package func remove() async {
        if let postgresName, let admin = try? await PostgresAdmin.shared.database() {
            _ = try? await admin.write { db in try await db.raw("DROP DATABASE IF EXISTS \(ident: postgresName) WITH (FORCE)").run() }
        }
        try? FileManager.default.removeItem(atPath: configuration.dataDir)
    }
}

/// Runs `body` with a fresh database of `engine` (see ``TestDatabase/make(_:migrated:)``),
/// its configuration changed by `configure`, removed afterwards whether `body` succeeds or
/// throws. Several nodes may share it; close their connections before `body` returns.
///
/// At most ``TestSlots/limit`` such databases exist at once in a test process; later tests wait
/// for a slot (see ``TestSlots``).
package func withTestDatabase<R: Sendable>(
    _ engine: TestEngine, migrated: Bool = true, configure: (inout CairnConfiguration) -> Void = { _ in },
    _ body: (TestDatabase) async throws -> R
) async throws -> R {
    stallWatch  // starts the opt-in stall log (CAIRN_TEST_STALL_LOG) once
    await TestSlots.shared.acquire()
    defer { TestSlots.shared.release() }
    var database = try await TestDatabase.make(engine, migrated: migrated)
    configure(&database.configuration)
    do {
        let result = try await body(database)
        await database.remove()
        return result
    } catch {
        await database.remove()
        throw error
    }
}

/// Runs `body` with a fresh database of `engine` (empty unless `migrated`) opened as a
/// ``Database`` of its own, not a node's; closed and removed afterwards whether `body` succeeds
/// or throws. `body` opens further pools with ``TestDatabase/open()``.
package func withOpenDatabase<R: Sendable>(
    _ engine: TestEngine, migrated: Bool = false, _ body: (Database, TestDatabase) async throws -> R
) async throws -> R {
    try await withTestDatabase(engine, migrated: migrated) { test in
        let database = try await test.open()
        do {
            let result = try await body(database, test)
            await database.close()
            return result
        } catch {
            await database.close()
            throw error
        }
    }
}

extension TestDatabase {
    /// Opens a connection pool of its own to this database; the caller closes it.
    package func open() async throws -> Database {
        try await Database.open(url: configuration.databaseURL, sqlitePath: configuration.sqlitePath, logger: testLogger)
    }
}

/// A process-wide connection pool to the test server's maintenance database, for creating and
/// dropping test databases. Never closed: it lives as long as the test process.
final class PostgresAdmin: Sendable {
    static let shared = PostgresAdmin()
    private let opening = Mutex<Task<Database, any Error>?>(nil)

    func database() async throws -> Database {
        let task = opening.withLock { opening -> Task<Database, any Error> in
            if let opening { return opening }
            let task = Task { () throws -> Database in
                guard let base = TestEngine.postgresBaseURL else { throw TestSetupError("CAIRN_TEST_POSTGRES_URL is not set") }
                return try await Database.open(url: base, sqlitePath: "", logger: testLogger)
            }
            opening = task
            return task
        }
        return try await task.value
    }

    /// The test server's URL with `database` in place of its path.
    static func url(database: String) throws -> String {
        guard let base = TestEngine.postgresBaseURL, var components = URLComponents(string: base) else {
            throw TestSetupError("CAIRN_TEST_POSTGRES_URL is not set")
        }
        components.path = "/" + database
        guard let url = components.string else { throw TestSetupError("cannot build a URL from CAIRN_TEST_POSTGRES_URL") }
        return url
    }
}

/// The migrated templates test databases are copied from, made once per test process and
/// engine however many tests ask at once.
///
/// Both are named by a digest of every migration's SQL, so a changed migration makes a new
/// template, and a test server or temporary folder shared by several runs of the same code
/// reuses one. They are built under a temporary name and renamed into place once migrated, so
/// a run that dies half way, or two runs building at once, never leave a partial template.
final class Templates: Sendable {
    static let shared = Templates()
    private let tasks = Mutex<[TestEngine: Task<String, any Error>]>([:])

    /// A digest of the migrations (FNV-1a, 64 bits), as 16 hex digits.
    static func migrationsDigest() throws -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for migration in try allMigrations() {
            for text in [migration.module, String(migration.version)] + migration.statements(.sqlite) + migration.statements(.postgres) {
                for byte in text.utf8 + [0] {
                    hash ^= UInt64(byte)
                    hash = hash &* 0x100_0000_01b3
                }
            }
        }
        return String(hash, radix: 16)
    }

    /// Applies every migration to the database at `url` (or the SQLite file at `sqlitePath`),
    /// then closes it, failed or not: a template must have no connection left open.
    private static func migrate(url: String?, sqlitePath: String) async throws {
        let database = try await Database.open(url: url, sqlitePath: sqlitePath, logger: testLogger)
        do {
            try await Migrator(database: database, migrations: allMigrations(), logger: testLogger).migrate()
        } catch {
            await database.close()
            throw error
        }
        await database.close()
    }

    /// The path of the migrated SQLite template.
    func sqlite() async throws -> String {
        try await once(.sqlite) {
            let path = FileManager.default.temporaryDirectory.appendingPathComponent("cairn-template-\(try Self.migrationsDigest()).sqlite").path
            if FileManager.default.fileExists(atPath: path) { return path }
            let building = path + ".building-\(UUID().uuidString)"
            // Closing the last connection checkpoints the write-ahead log into the main file and
            // deletes it, so copying that one file copies the database.
            try await Self.migrate(url: nil, sqlitePath: building)
            for suffix in ["-wal", "-shm"] { try? FileManager.default.removeItem(atPath: building + suffix) }
            if rename(building, path) != 0 { try? FileManager.default.removeItem(atPath: building) }
            return path
        }
    }

    /// The name of the migrated PostgreSQL template database on the test server.
    func postgres() async throws -> String {
        try await once(.postgres) {
            let name = "cairn_tpl_\(try Self.migrationsDigest())"
            let admin = try await PostgresAdmin.shared.database()
            let exists = { () async throws -> Bool in
                try await admin.read { db in
                    try await db.raw("SELECT 1 AS found FROM pg_database WHERE datname = \(bind: name)").first() != nil
                }
            }
            if try await exists() { return name }
            let building = "cairn_tplb_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased().prefix(16)
            try await admin.write { db in try await db.raw("CREATE DATABASE \(ident: String(building))").run() }
            do {
                try await Self.migrate(url: try PostgresAdmin.url(database: String(building)), sqlitePath: "")
                // A clone needs its template free of connections: none may connect to it again.
                try await admin.write { db in
                    try await db.raw("ALTER DATABASE \(ident: String(building)) WITH ALLOW_CONNECTIONS false IS_TEMPLATE true").run()
                    try await db.raw("ALTER DATABASE \(ident: String(building)) RENAME TO \(ident: name)").run()
                }
            } catch {
                // Another run renamed its own template into place first: use that one.
                _ = try? await admin.write { db in
                    try await db.raw("ALTER DATABASE \(ident: String(building)) WITH IS_TEMPLATE false").run()
                    try await db.raw("DROP DATABASE IF EXISTS \(ident: String(building)) WITH (FORCE)").run()
                }
                if try await exists() { return name }
                throw error
            }
            return name
        }
    }

    /// Runs `make` once per process; concurrent callers await the same run. A failed run is
    /// forgotten, so a later test tries again.
    private func once(_ engine: TestEngine, _ make: @escaping @Sendable () async throws -> String) async throws -> String {
        let task = tasks.withLock { tasks -> Task<String, any Error> in
            if let running = tasks[engine] { return running }
            let task = Task { try await make() }
            tasks[engine] = task
            return task
        }
        do {
            return try await task.value
        } catch {
            tasks.withLock { if $0[engine] == task { $0[engine] = nil } }
            throw error
        }
    }
}

extension SQLQueryString {
    /// Appends a quoted SQL identifier (a database name made by the tests).
    mutating func appendInterpolation(ident name: String) {
        precondition(name.allSatisfy { $0.isLetter || $0.isNumber || $0 == "_" }, "test database names are plain identifiers")
        appendInterpolation(unsafeRaw: "\"\(name)\"")
    }
}

/// Bounds how many test databases (and the nodes on them) exist at once.
///
/// Swift Testing starts every test at once; each node holds a pool of connections and threads
/// (SQLite's, bcrypt's), and a full run peaked at 1,700 descriptors and 1,500 threads. Past 1,024
/// descriptors, Foundation's `Process` (whose termination monitor is a `select()`-based loop
/// with a fixed 1,024-descriptor set) corrupts memory: a run crashed in `Process.run`. Tests
/// beyond the limit wait, suspended, for a slot; a test holds one slot however many nodes share
/// its database, so a test never waits for itself.
package final class TestSlots: Sendable {
    /// The process-wide slots.
    package static let shared = TestSlots(limit: 12)

    /// Databases that may exist at once.
    package let limit: Int
    private let state: Mutex<(free: Int, waiters: [CheckedContinuation<Void, Never>])>

    init(limit: Int) {
        self.limit = limit
        state = Mutex((limit, []))
    }

    /// Waits for a free slot and takes it.
    package func acquire() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let granted = state.withLock { state -> Bool in
                if state.free > 0 {
                    state.free -= 1
                    return true
                }
                state.waiters.append(continuation)
                return false
            }
            if granted { continuation.resume() }
        }
    }

    /// Gives a slot back (to the longest waiter, if any).
    package func release() {
        let next = state.withLock { state -> CheckedContinuation<Void, Never>? in
            if state.waiters.isEmpty {
                state.free += 1
                return nil
            }
            return state.waiters.removeFirst()
        }
        next?.resume()
    }
}
