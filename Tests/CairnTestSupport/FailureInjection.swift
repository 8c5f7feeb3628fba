package import CairnStorage
import SQLKit

/// A database error on demand: a trigger named `name` that makes every `event` (`INSERT`,
/// `UPDATE`) on `table` fail, on rows where the SQL `condition` holds (over `OLD`/`NEW`), as a
/// failing database or a crash at that statement would. Same SQL meaning on both engines.
package func injectDatabaseFailure(
    _ database: Database, engine: TestEngine, name: String, on event: String, of table: String, when condition: String = "TRUE"
) async throws {
    try await database.write { db in
        if engine == .postgres {
            try await db.raw(
                """
                CREATE OR REPLACE FUNCTION cairn_test_refuse() RETURNS trigger AS $$
                BEGIN RAISE EXCEPTION 'injected failure'; END $$ LANGUAGE plpgsql
                """
            ).run()
            try await db.raw(
                """
                CREATE TRIGGER \(unsafeRaw: name) BEFORE \(unsafeRaw: event) ON \(unsafeRaw: table) FOR EACH ROW
                WHEN (\(unsafeRaw: condition)) EXECUTE FUNCTION cairn_test_refuse()
                """
            ).run()
        } else {
            try await db.raw(
                """
                CREATE TRIGGER \(unsafeRaw: name) BEFORE \(unsafeRaw: event) ON \(unsafeRaw: table) FOR EACH ROW
                WHEN \(unsafeRaw: condition) BEGIN SELECT RAISE(ABORT, 'injected failure'); END
                """
            ).run()
        }
    }
}

/// Removes a failure made by ``injectDatabaseFailure(_:engine:name:on:of:when:)``.
package func removeDatabaseFailure(_ database: Database, engine: TestEngine, name: String, of table: String) async throws {
    try await database.write { db in
        try await db.raw(engine == .postgres ? "DROP TRIGGER \(unsafeRaw: name) ON \(unsafeRaw: table)" : "DROP TRIGGER \(unsafeRaw: name)").run()
    }
}
