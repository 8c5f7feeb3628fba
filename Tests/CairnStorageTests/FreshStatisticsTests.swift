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
            func add(_ count: Int) async throws -> Task<Void, Never>? {
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
                #expect(try await add(50) == nil)
                return
            }
            #expect(try await analyzedRows() == -1)
            #expect(try await add(9) == nil)
            #expect(try await analyzedRows() == -1)
            let first = try await add(1)
            #expect(first != nil)
            await first?.value
            #expect(try await analyzedRows() == 10)
            #expect(try await add(9) == nil)
            try await #require(try await add(1)).value
            #expect(try await analyzedRows() == 20)
            try await #require(try await add(25)).value
            #expect(try await analyzedRows() == 45)
            // 45 rows: the next doubling (80) is past the last (40).
            #expect(try await add(100) == nil)
            #expect(try await analyzedRows() == 45)
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
