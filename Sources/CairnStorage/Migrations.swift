package import Logging
import SQLKit

/// One schema change owned by a module. Applied once, in `(module, version)` order, recorded
/// in `cairn_migrations`. Statements may differ per dialect, but must leave both engines with
/// the same tables, columns and meaning.
package struct Migration: Sendable {
    /// The owning module, e.g. `accounts`.
    package var module: String
    /// Increasing number within the module, starting at 1.
    package var version: Int
    /// Short description, recorded for operators.
    package var name: String
    /// The SQL statements for a dialect, run in order inside the migration transaction.
    package var statements: @Sendable (Dialect) -> [String]

    /// Creates a migration.
    package init(module: String, version: Int, name: String, statements: @escaping @Sendable (Dialect) -> [String]) {
        self.module = module
        self.version = version
        self.name = name
        self.statements = statements
    }

    /// Creates a migration whose statements are the same on both engines.
    package init(module: String, version: Int, name: String, sql: [String]) {
        self.init(module: module, version: version, name: name, statements: { _ in sql })
    }
}

/// Applies pending migrations under a database-wide lock (advisory lock on PostgreSQL,
/// write lock on SQLite), all in one transaction: several nodes starting at once apply each
/// migration exactly once, and a failing migration leaves nothing half-applied.
package struct Migrator: Sendable {
    /// `pg_advisory_xact_lock` key: "cairn-migrations" folded into 63 bits.
    static let lockKey: Int64 = 0x6361_6972_6E6D_6967

    let database: Database
    let migrations: [Migration]
    let logger: Logger

    /// Creates a migrator for the given migrations (order does not matter).
    package init(database: Database, migrations: [Migration], logger: Logger) {
        self.database = database
        self.migrations = migrations.sorted { ($0.module, $0.version) < ($1.module, $1.version) }
        self.logger = logger
    }

    /// Applies every pending migration; returns the `module/version` names it applied.
    /// - Throws: `StorageError` with code `migration_failed` naming the migration.
    @discardableResult
    package func migrate() async throws -> [String] {
        let migrations = self.migrations
        let dialect = database.dialect
        let logger = self.logger
        return try await database.withExclusiveLock(key: Self.lockKey) { db in
            try await db.raw(
                """
                CREATE TABLE IF NOT EXISTS cairn_migrations (
                    module TEXT NOT NULL, version INTEGER NOT NULL, name TEXT NOT NULL,
                    applied_at BIGINT NOT NULL, PRIMARY KEY (module, version))
                """
            ).run()
            let rows = try await db.raw("SELECT module, version FROM cairn_migrations").all()
            var applied = Set<String>()
            for row in rows {
                applied.insert("\(try row.decode(column: "module", as: String.self))/\(try row.decode(column: "version", as: Int.self))")
            }
            var done: [String] = []
            for migration in migrations where !applied.contains("\(migration.module)/\(migration.version)") {
                let name = "\(migration.module)/\(migration.version)"
                do {
                    for statement in migration.statements(dialect) {
                        try await db.raw(SQLQueryString(statement)).run()
                    }
                    try await db.raw(
                        "INSERT INTO cairn_migrations (module, version, name, applied_at) VALUES (\(bind: migration.module), \(bind: migration.version), \(bind: migration.name), \(bind: WallClock.milliseconds()))"
                    ).run()
                } catch {
                    throw StorageError(
                        code: "migration_failed", message: "migration \(name) (\(migration.name)) failed: \(String(describing: error).prefix(300))")
                }
                logger.info("applied migration", metadata: ["migration": .string(name), "name": .string(migration.name)])
                done.append(name)
            }
            return done
        }
    }

    /// The migrations not yet applied, as `module/version` names.
    package func pending() async throws -> [String] {
        let migrations = self.migrations
        return try await database.read { db in
            let rows = (try? await db.raw("SELECT module, version FROM cairn_migrations").all()) ?? []
            var applied = Set<String>()
            for row in rows {
                applied.insert("\(try row.decode(column: "module", as: String.self))/\(try row.decode(column: "version", as: Int.self))")
            }
            return migrations.map { "\($0.module)/\($0.version)" }.filter { !applied.contains($0) }
        }
    }
}
