import CairnServer
import CairnStorage
import Foundation
import Testing

/// The migrations kept as SQL files in the modules' resource bundles.
@Suite("Migration files")
struct MigrationFilesTests {
    /// Every module's migrations, keyed as databases recorded them before they moved into files:
    /// a changed module, version or lost file would run a migration again, or never.
    @Test func theLoadedMigrationsAreEveryModulesInOrder() throws {
        let migrations = try allMigrations()
        var versions: [String: [Int]] = [:]
        for migration in migrations {
            versions[migration.module, default: []].append(migration.version)
            for dialect in [Dialect.sqlite, .postgres] where migration.module != "catalog" {
                #expect(!migration.statements(dialect).isEmpty, "\(migration.module)/\(migration.version) has no SQL")
                #expect(migration.statements(dialect).allSatisfy { !$0.isEmpty && !$0.hasSuffix(";") && !$0.contains("--") })
            }
        }
        #expect(
            versions == [
                "storage": [1], "accounts": Array(1...8), "tasks": [1, 2], "jobs": Array(1...7), "schedules": [1], "idempotency": [1, 2],
                "catalog": Array(1...4), "notifications": Array(1...7), "ingest": Array(1...6), "pipelines": [1],
            ])
        let names = Dictionary(uniqueKeysWithValues: migrations.map { ("\($0.module)/\($0.version)", $0.name) })
        #expect(names["accounts/1"] == "tenants, users, refresh tokens, login failures")
        #expect(names["ingest/3"] == "upload_lock_node")
        #expect(names["notifications/7"] == "a delivery counts one dead letter")
        // Comments and `;` are gone; the text between is the statement, as the Swift literals held it.
        let tasks = try #require(migrations.first { $0.module == "tasks" })
        #expect(tasks.statements(.sqlite).count == 3)
        #expect(tasks.statements(.sqlite).first?.hasPrefix("CREATE TABLE tasks (\n    id TEXT PRIMARY KEY,\n") == true)
        #expect(tasks.statements(.sqlite).last == "CREATE INDEX tasks_tenant_completed ON tasks (tenant_id, completed, id)")
    }

    @Test func aScriptSplitsAtSemicolonsOutsideQuotesCommentsAndTriggerBodies() {
        let script = """
            -- name: ignored
            CREATE TABLE a (x TEXT DEFAULT 'a;b', "odd;name" TEXT); -- a trailing comment; with a semicolon
            /* a block; comment */ INSERT INTO a (x) VALUES ('it''s; fine');
            CREATE TRIGGER t AFTER INSERT ON a BEGIN
                UPDATE a SET x = 'y';
                DELETE FROM a WHERE x = 'z';
            END;
            SELECT 1
            """
        #expect(
            SQLScript.statements(in: script) == [
                #"CREATE TABLE a (x TEXT DEFAULT 'a;b', "odd;name" TEXT)"#,
                "INSERT INTO a (x) VALUES ('it''s; fine')",
                "CREATE TRIGGER t AFTER INSERT ON a BEGIN\n    UPDATE a SET x = 'y';\n    DELETE FROM a WHERE x = 'z';\nEND",
                "SELECT 1",
            ])
        #expect(SQLScript.statements(in: "-- only a comment\n;\n") == [])
    }

    @Test func aMisnamedIncompleteOrGappedFolderIsRefusedNamingTheFile() throws {
        let cases: [(files: [String: String], message: String)] = [
            (
                ["0001_a.sql": "-- name: a\nSELECT 1;", "0003_c.sql": "-- name: c\nSELECT 3;"],
                "m: version 3 where 2 was expected (versions run 1, 2, 3, …)"
            ),
            (
                ["0001_a.sql": "-- name: a\nSELECT 1;", "0001_again.sql": "-- name: b\nSELECT 2;"],
                "m: version 1 where 2 was expected (versions run 1, 2, 3, …)"
            ),
            (["1a.sql": "-- name: a\nSELECT 1;"], "m/1a.sql: the name must be <version>_<slug>.sql"),
            (["0001_a.sql": "SELECT 1;"], "m/0001_a.sql: the first line must be `-- name: <description>`"),
            (["0001_a.sql": "-- name: a\n-- nothing else\n"], "m/0001_a.sql: no SQL statement"),
        ]
        for (files, message) in cases {
            let root = FileManager.default.temporaryDirectory.appendingPathComponent("cairn-migrations-\(UUID().uuidString)")
            defer { try? FileManager.default.removeItem(at: root) }
            let folder = root.appendingPathComponent("Migrations/m")
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            for (name, text) in files { try text.write(to: folder.appendingPathComponent(name), atomically: true, encoding: .utf8) }
            let bundle = try #require(Bundle(path: root.path))
            let error = #expect(throws: StorageError.self) { try Migration.files(in: bundle) }
            #expect(error?.code == "migration_files")
            #expect(error?.message == message)
        }
    }

    /// `cairn` refuses to start without a bundle it reads (instead of trapping in SwiftPM's
    /// accessor when first used), so the list must name every bundle the build writes for it.
    @Test func theResourceBundleListNamesEveryBundleTheServerReads() throws {
        #expect(ResourceBundles.missing(in: Bundle.main.bundleURL) == [])
        let empty = FileManager.default.temporaryDirectory.appendingPathComponent("cairn-no-bundles-\(UUID().uuidString)")
        #expect(ResourceBundles.missing(in: empty) == ResourceBundles.names)
        let sources = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Sources")
        for target in try FileManager.default.contentsOfDirectory(atPath: sources.path) {
            let folder = sources.appendingPathComponent(target)
            let hasResources = ["Migrations", "Resources"].contains { FileManager.default.fileExists(atPath: folder.appendingPathComponent($0).path) }
            #expect(hasResources == ResourceBundles.targets.contains(target), "\(target)")
        }
    }
}
