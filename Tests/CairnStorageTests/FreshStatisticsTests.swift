import CairnStorage
import CairnTestSupport
import SQLKit
import Synchronization
import Testing

@Suite("Planner statistics of a table that fills fast")
struct FreshStatisticsTests {
    /// On PostgreSQL the table is analyzed when the rows added pass the first threshold and
    /// each doubling after it, up to the last, and never again; `reltuples` (−1 until a table's
    /// first ANALYZE) shows each one. SQLite needs none: nothing is started there.
    @Test(arguments: TestEngine.available)
    func aFillingTableIsAnalyzedAtEachDoublingUpToTheLast(engine: TestEngine) async throws {
        try await withOpenDatabase(engine) { database, _ in
            // Autovacuum kept off the table: the analyses seen are this type's alone.
            let options = engine == .postgres ? " WITH (autovacuum_enabled = false)" : ""
            try await database.write { db in try await db.raw("CREATE TABLE filling (id INTEGER PRIMARY KEY)\(unsafeRaw: options)").run() }
            let statistics = FreshStatistics(database: database, table: "filling", first: 10, last: 40)
            let inserted = Counter()
            func add(_ count: Int) async throws -> Bool {
                for _ in 0..<count {
                    let id = inserted.next()
                    try await database.write { db in try await db.raw("INSERT INTO filling (id) VALUES (\(bind: id))").run() }
                }
                return statistics.added(count)
            }
            func analyzedRows() async throws -> Int {
                try await database.read { db in
                    try await db.raw("SELECT reltuples::bigint AS n FROM pg_class WHERE relname = 'filling'").first()!.decode(
                        column: "n", as: Int.self)
                }
            }
            guard engine == .postgres else {
                #expect(try await add(50) == false)
                return
            }
            #expect(try await analyzedRows() == -1)
            #expect(try await add(9) == false)
            #expect(try await analyzedRows() == -1)
            #expect(try await add(1))
            await statistics.settled()
            #expect(try await analyzedRows() == 10)
            #expect(try await add(9) == false)
            #expect(try await add(1))
            await statistics.settled()
            #expect(try await analyzedRows() == 20)
            #expect(try await add(25))
            await statistics.settled()
            #expect(try await analyzedRows() == 45)
            // 45 rows: the next doubling (80) is past the last (40).
            #expect(try await add(100) == false)
            #expect(try await analyzedRows() == 45)
        }
    }
}

extension FreshStatisticsTests {
    /// A table whose statistics already count twice the rows this process added is left to
    /// autovacuum (a node restarted on a big inbox): `reltuples` stays put until the rows added
    /// reach half of it.
    @Test(.enabled(if: TestEngine.postgresBaseURL != nil))
    func aTableAnalyzedAlreadyIsLeftAloneUntilTheRowsAddedAreHalfItsCount() async throws {
        try await withOpenDatabase(.postgres) { database, _ in
            try await database.write { db in
                try await db.raw("CREATE TABLE filled (id INTEGER PRIMARY KEY) WITH (autovacuum_enabled = false)").run()
                try await db.raw("INSERT INTO filled (id) SELECT generate_series(1, 100)").run()
            }
            #expect(try await database.analyze(table: "filled"))
            let statistics = FreshStatistics(database: database, table: "filled", first: 10, last: 1_000)
            var next = 101
            func add(_ count: Int) async throws -> Bool {
                try await database.write { [next] db in
                    try await db.raw("INSERT INTO filled (id) SELECT generate_series(\(bind: next), \(bind: next + count - 1))").run()
                }
                next += count
                return statistics.added(count)
            }
            func analyzedRows() async throws -> Int {
                try await database.read { db in
                    try await db.raw("SELECT reltuples::bigint AS n FROM pg_class WHERE relname = 'filled'").first()!.decode(
                        column: "n", as: Int.self)
                }
            }
            #expect(try await analyzedRows() == 100)
            // 10, 20 and 40 rows added: 100 counted is at least twice each.
            for count in [10, 10, 20] {
                #expect(try await add(count))
                await statistics.settled()
                #expect(try await analyzedRows() == 100)
            }
            // 80 added: 100 is less than twice that.
            #expect(try await add(40))
            await statistics.settled()
            #expect(try await analyzedRows() == 180)
        }
    }
}

/// Consecutive ids for the test's rows.
private final class Counter: Sendable {
    private let value = Mutex(0)
    func next() -> Int {
        value.withLock {
            $0 += 1; return $0
        }
    }
}
