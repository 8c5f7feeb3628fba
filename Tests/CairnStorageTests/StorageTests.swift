import CairnServer
import CairnTestSupport
import Foundation
import NIOPosix
import SQLKit
import Synchronization
import Testing

@testable import CairnStorage

@Suite("Storage on both engines")
struct StorageTests {
    /// A keyed read of the `items` tables the statement tests make.
    enum ItemByID: PreparedRead {
        static let name = "cairn_test_item_by_id"
        static let sql = "SELECT id, n FROM items WHERE id = $1"
    }
    /// A read of a table that does not exist: fails when it runs.
    enum BadRead: PreparedRead {
        static let name = "cairn_test_bad_read"
        static let sql = "SELECT id, n FROM no_such_table WHERE id = $1"
    }

    /// The server ends the liveness connection (as a restart does): the node takes its lock
    /// again on a new connection at once, and closing the database still finishes. The driver
    /// never answers a query written to the dropped connection, so before, the next check hung
    /// the liveness loop: the lock was never taken again and `close()` waited forever.
    @Test(.enabled(if: TestEngine.postgresBaseURL != nil))
    func theLivenessLockIsTakenAgainWhenTheServerDropsItsConnection() async throws {
        try await withTestDatabase(.postgres, migrated: false) { test in
            let database = try await Database.open(
                url: test.configuration.databaseURL, sqlitePath: test.configuration.sqlitePath, logger: testLogger)
            // The liveness lock is the only advisory lock taken in this test's database.
            let holder: @Sendable () async throws -> Int32? = {
                try await database.read { db in
                    try await db.raw(
                        """
                        SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted
                        AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
                        """
                    ).first()?.decode(column: "pid", as: Int32.self)
                }
            }
            let first = try #require(try await holder())
            _ = try await database.read { db in try await db.raw("SELECT pg_terminate_backend(\(bind: first))").run() }
            // Another connection's locks, with no event to wait on: polled.
            let again = try await pollFor("the liveness lock held on a new connection") { () async throws -> Int32? in
                guard let pid = try await holder(), pid != first else { return nil }
                return pid
            }
            #expect(again != first)
            try await withDeadline(.seconds(30), "the database closing") { await database.close() }
        }
    }

    @Test(arguments: TestEngine.available)
    func nodesStartingAtOnceApplyEachMigrationExactlyOnce(engine: TestEngine) async throws {
        try await withOpenDatabase(engine) { first, test in
            let probe = Migration(
                module: "probe", version: 1, name: "counts its own runs",
                sql: [
                    "CREATE TABLE probe_runs (id TEXT PRIMARY KEY)",
                    "INSERT INTO probe_runs (id) VALUES ('ran')",
                ])
            let second = Migration(module: "probe", version: 2, name: "second step", sql: ["INSERT INTO probe_runs (id) VALUES ('ran-2')"])
            // Six "nodes", each with its own connection pool to the same database.
            var nodes = [first]
            for _ in 0..<5 {
                nodes.append(
                    try await test.open())
            }
            let applied: [String]
            do {
                applied = try await withThrowingTaskGroup(of: [String].self) { group in
                    for node in nodes {
                        group.addTask {
                            try await Migrator(database: node, migrations: allMigrations() + [second, probe], logger: testLogger).migrate()
                        }
                    }
                    return try await group.reduce(into: [String]()) { $0 += $1 }
                }
            } catch {
                // Closed before the error is reported: sqlite-nio traps on a connection released open,
                // which would hide the error behind a crash of the whole test run.
                for node in nodes { await node.close() }
                throw error
            }
            #expect(applied.sorted() == (try allMigrations() + [probe, second]).map { "\($0.module)/\($0.version)" }.sorted())
            let rows = try await first.read { db in try await db.raw("SELECT id FROM probe_runs ORDER BY id").all() }
            #expect(try rows.map { try $0.decode(column: "id", as: String.self) } == ["ran", "ran-2"])
            #expect(try await Migrator(database: first, migrations: allMigrations() + [probe, second], logger: testLogger).pending().isEmpty)
            for node in nodes { await node.close() }
        }
    }

    @Test(arguments: TestEngine.available)
    func aFailingMigrationLeavesNothingHalfApplied(engine: TestEngine) async throws {
        try await withOpenDatabase(engine) { database, _ in
            let broken = Migration(
                module: "broken", version: 1, name: "fails halfway",
                sql: [
                    "CREATE TABLE half_done (id TEXT PRIMARY KEY)",
                    "INSERT INTO no_such_table (id) VALUES ('x')",
                ])
            await #expect(throws: StorageError.self) {
                try await Migrator(database: database, migrations: [broken], logger: testLogger).migrate()
            }
            let table = try await database.read { db in
                try? await db.raw("SELECT COUNT(*) AS n FROM half_done").first()
            }
            #expect(table == nil)
            #expect(try await Migrator(database: database, migrations: [broken], logger: testLogger).pending() == ["broken/1"])
        }
    }

    @Test(arguments: TestEngine.available)
    func transactionsCommitOrRollBackAsAWhole(engine: TestEngine) async throws {
        try await withOpenDatabase(engine) { database, _ in
            try await database.write { db in try await db.raw("CREATE TABLE items (id TEXT PRIMARY KEY, n BIGINT NOT NULL)").run() }
            struct Boom: Error {}
            await #expect(throws: Boom.self) {
                try await database.transaction { db in
                    try await db.raw("INSERT INTO items (id, n) VALUES ('a', 1)").run()
                    throw Boom()
                }
            }
            try await database.transaction { db in
                try await db.raw("INSERT INTO items (id, n) VALUES ('b', 2)").run()
            }
            let ids = try await database.read { db in
                try await db.raw("SELECT id FROM items").all().map { try $0.decode(column: "id", as: String.self) }
            }
            #expect(ids == ["b"])
            // Unique violations are recognised on both engines.
            do {
                try await database.write { db in try await db.raw("INSERT INTO items (id, n) VALUES ('b', 3)").run() }
                Issue.record("duplicate insert succeeded")
            } catch {
                #expect(Database.isUniqueViolation(error))
            }
        }
    }

    /// Positional reads bind each value type and decode each column type the same way on both
    /// engines, as SQLKit wrote them (booleans are integers on SQLite), with `$n` reused and out
    /// of order, and read SQLKit rows of `RETURNING` through the same accessors.
    @Test(arguments: TestEngine.available)
    func positionalReadsBindAndDecodeEveryTypeAlike(engine: TestEngine) async throws {
        try await withOpenDatabase(engine) { database, _ in
            try await database.write { db in
                try await db.raw("CREATE TABLE items (id TEXT PRIMARY KEY, label TEXT, done BOOLEAN NOT NULL, n BIGINT NOT NULL, v INTEGER NOT NULL)")
                    .run()
                try await db.raw("INSERT INTO items VALUES (\(bind: "a"), \(bind: "x$1y"), \(bind: true), \(bind: Int64(1) << 40), \(bind: 7))").run()
                try await db.raw("INSERT INTO items VALUES (\(bind: "b"), NULL, \(bind: false), \(bind: Int64(-3)), \(bind: 8))").run()
            }
            struct Item: Equatable, Sendable {
                var id: String, label: String?, done: Bool, n: Int64, v: Int
            }
            let decode: @Sendable (PositionalRow) throws -> Item = { row in
                Item(id: try row.string(0), label: try row.optionalString(1), done: try row.bool(2), n: try row.int64(3), v: try row.int(4))
            }
            let a = Item(id: "a", label: "x$1y", done: true, n: 1 << 40, v: 7)
            let b = Item(id: "b", label: nil, done: false, n: -3, v: 8)
            let all = try await database.readRows("SELECT id, label, done, n, v FROM items ORDER BY id", [], decode)
            #expect(all == [a, b])
            // $2 before $1, and $1 twice: numbered, not positional, on both engines.
            let picked = try await database.readRows(
                "SELECT id, label, done, n, v FROM items WHERE done = $2 AND (id = $1 OR label = $1) AND n > $3",
                [.text("a"), .bool(true), .integer(0)],
                decode)
            #expect(picked == [a])
            let none = try await database.readRows("SELECT id, label, done, n, v FROM items WHERE label = $1", [.null], decode)
            #expect(none.isEmpty)
            // A column read as the wrong type is a clear error, not a crash or a wrong value.
            await #expect(throws: PositionalRowError.self) {
                _ = try await database.readRows("SELECT label FROM items WHERE id = $1", [.text("b")]) { try $0.string(0) }
            }
            let returned = try await database.write { db in
                try await db.raw("UPDATE items SET v = v + 1 WHERE id = 'b' RETURNING id, label, done, n, v").first().map {
                    try decode(PositionalRow($0, columns: ["id", "label", "done", "n", "v"]))
                }
            }
            #expect(returned == Item(id: "b", label: nil, done: false, n: -3, v: 9))
        }
    }

    /// A scan folds the rows, in order, read column after column in place, as positional
    /// reads decode them (text lent as UTF-8 bytes, NULL as nil, integers, booleans) on both
    /// engines; a wrong type or a missing column is a `PositionalRowError`, and the first error
    /// the fold throws ends the scan with that error.
    @Test(arguments: TestEngine.available)
    func scannedRowsFoldInOrderAndReadEveryTypeAlike(engine: TestEngine) async throws {
        struct Stop: Error {}
        try await withOpenDatabase(engine) { database, _ in
            try await database.write { db in
                try await db.raw("CREATE TABLE items (id TEXT PRIMARY KEY, label TEXT, done BOOLEAN NOT NULL, n BIGINT NOT NULL)").run()
                for (index, label) in ["Zürich, \"東京\" 🚀", nil, ""].enumerated() {
                    try await db.raw(
                        "INSERT INTO items VALUES (\(bind: "i\(index)"), \(bind: label), \(bind: index != 1), \(bind: (Int64(1) << 40) - Int64(index)))"
                    )
                    .run()
                }
            }
            let sql = "SELECT id, label, done, n FROM items WHERE n > $1 ORDER BY id"
            let lines = try await database.scanRows(sql, [.integer(0)], into: [String]()) { lines, row in
                let id = try row.next().withText { String(decoding: $0, as: UTF8.self) }
                let label = try row.next().withOptionalText { $0.map { String(decoding: $0, as: UTF8.self) } ?? "NULL" }
                lines.append("\(id)|\(label)|\(try row.next().bool())|\(try row.next().int64())")
            }
            #expect(lines == ["i0|Zürich, \"東京\" 🚀|true|1099511627776", "i1|NULL|false|1099511627775", "i2||true|1099511627774"])
            let none = try await database.scanRows(sql, [.integer(Int64.max)], into: 0) { count, _ in count += 1 }
            #expect(none == 0)
            await #expect(throws: PositionalRowError.self) {
                _ = try await database.scanRows(sql, [.integer(0)], into: 0) { _, row in _ = try row.next().int64() }
            }
            await #expect(throws: PositionalRowError.self) {
                _ = try await database.scanRows("SELECT label FROM items WHERE id = 'i1'", [], into: 0) { _, row in try row.next().withText { _ in } }
            }
            await #expect(throws: PositionalRowError.self) {
                _ = try await database.scanRows("SELECT id FROM items", [], into: 0) { _, row in
                    _ = try row.next()
                    _ = try row.next()
                }
            }
            let counted = Mutex(0)
            await #expect(throws: Stop.self) {
                _ = try await database.scanRows(sql, [.integer(0)], into: 0) { _, _ in
                    counted.withLock { $0 += 1 }
                    throw Stop()
                }
            }
            #expect(counted.withLock { $0 } == 1)
        }
    }

    /// A hot read declared as a ``PreparedRead`` answers as the same SQL run unprepared, on
    /// both engines, every time; on PostgreSQL the connection holds it prepared under its name
    /// afterwards (`pg_prepared_statements`), so later runs skip parsing and planning.
    @Test(arguments: TestEngine.available)
    func preparedReadsAnswerAsUnpreparedOnesAndStayPreparedOnPostgres(engine: TestEngine) async throws {
        enum ItemsAbove: PreparedRead {
            static let name = "cairn_test_items_above"
            static let sql = "SELECT id, n FROM items WHERE n > $1 AND label = $2 ORDER BY id LIMIT $3"
        }
        try await withOpenDatabase(engine) { database, _ in
            try await database.write { db in
                try await db.raw("CREATE TABLE items (id TEXT PRIMARY KEY, label TEXT, n BIGINT NOT NULL)").run()
                for index in 0..<6 {
                    try await db.raw("INSERT INTO items VALUES (\(bind: "i\(index)"), \(bind: index % 2 == 0 ? "even" : "odd"), \(bind: index))")
                        .run()
                }
            }
            let decode: @Sendable (PositionalRow) throws -> String = { row in "\(try row.string(0)):\(try row.int64(1))" }
            for (above, label, limit) in [(Int64(0), "even", Int64(10)), (1, "odd", 1), (4, "odd", 10), (9, "even", 10), (0, "even", 10)] {
                let binds: [SQLBindValue] = [.integer(above), .text(label), .integer(limit)]
                let prepared = try await database.readRows(ItemsAbove.self, binds, decode)
                #expect(prepared == (try await database.readRows(ItemsAbove.sql, binds, decode)))
            }
            #expect(try await database.readRows(ItemsAbove.self, [.integer(0), .text("even"), .integer(10)], decode) == ["i2:2", "i4:4"])
            guard engine == .postgres else { return }
            // Used one at a time, the pool keeps a single connection: the one that prepared it.
            let names = try await database.readRows("SELECT name FROM pg_prepared_statements", []) { try $0.string(0) }
            #expect(names.contains(ItemsAbove.name))
        }
    }

    /// A prepared write (``Database/writeRows(_:_:_:)``) changes rows and returns what its
    /// `RETURNING` gives, committed when it returns (a read on another connection sees it), on
    /// both engines; a `textArray` bind carries any text, quotes, backslashes and control
    /// characters included, as `text[]` on PostgreSQL and as JSON for `json_each` on SQLite.
    @Test(arguments: TestEngine.available)
    func preparedWritesCommitAndTextArraysBindAnyText(engine: TestEngine) async throws {
        enum BumpPostgres: PreparedRead {
            static let name = "cairn_test_items_bump"
            static let sql = "UPDATE items SET n = n + $2 WHERE id = ANY($1::text[]) RETURNING id"
        }
        enum BumpSQLite: PreparedRead {
            static let name = "cairn_test_items_bump"
            static let sql = "UPDATE items SET n = n + $2 WHERE id IN (SELECT value FROM json_each($1)) RETURNING id"
        }
        try await withOpenDatabase(engine) { database, _ in
            let awkward = ["plain", "quote\"d", "back\\slash", "line\nbreak\u{1}", "ünï €", "comma,[]"]
            try await database.write { db in
                try await db.raw("CREATE TABLE items (id TEXT PRIMARY KEY, n BIGINT NOT NULL)").run()
                for id in awkward + ["other"] { try await db.raw("INSERT INTO items VALUES (\(bind: id), 0)").run() }
            }
            func bump(_ ids: [String], by step: Int64) async throws -> [String] {
                let binds: [SQLBindValue] = [.textArray(ids), .integer(step)]
                let ids =
                    engine == .postgres
                    ? try await database.writeRows(BumpPostgres.self, binds) { try $0.string(0) }
                    : try await database.writeRows(BumpSQLite.self, binds) { try $0.string(0) }
                return ids.sorted()
            }
            #expect(try await bump(awkward, by: 5) == awkward.sorted())
            #expect(try await bump([], by: 1).isEmpty)
            #expect(try await bump(["other", "missing"], by: 2) == ["other"])
            let rows = try await database.readRows("SELECT id, n FROM items", []) { row in "\(try row.string(0))=\(try row.int64(1))" }
            #expect(rows.sorted() == (awkward.map { "\($0)=5" } + ["other=2"]).sorted())
        }
    }

    /// On SQLite every connection keeps its hot statements prepared between runs (a cache
    /// keyed by SQL text), so reads and writes run many times compile each statement about
    /// once per connection; concurrent runs on one connection never share a statement; a
    /// cached write still reports a unique violation as one; the statements keep answering
    /// after the schema under them changes (SQLite recompiles them itself); and closing the
    /// database finalizes them all. PostgreSQL keeps its prepared statements on the server
    /// (the test above), and has no such cache.
    @Test(arguments: TestEngine.available)
    func sqliteConnectionsKeepHotStatementsPreparedAcrossSchemaChangesUntilClosed(engine: TestEngine) async throws {
        enum ItemsFrom: PreparedRead {
            static let name = "cairn_test_items_from"
            static let sql = "SELECT id, n FROM items WHERE n >= $1 ORDER BY n LIMIT $2"
        }
        enum AddItem: PreparedRead {
            static let name = "cairn_test_item_add"
            static let sql = "INSERT INTO items (id, n) VALUES ($1, $2) RETURNING id"
        }
        try await withTestDatabase(engine, migrated: false) { test in
            let database = try await test.open()
            try await database.write { db in try await db.raw("CREATE TABLE items (id TEXT PRIMARY KEY, n BIGINT NOT NULL)").run() }
            let decode: @Sendable (PositionalRow) throws -> String = { row in "\(try row.string(0)):\(try row.int64(1))" }
            for index in 0..<40 {
                #expect(
                    try await database.writeRows(AddItem.self, [.text("i\(index)"), .integer(Int64(index))]) { try $0.string(0) } == ["i\(index)"])
            }
            // 64 reads at once: more than the readers' threads, so connections run it side by side.
            let answers = try await withThrowingTaskGroup(of: Bool.self) { group in
                for index in 0..<64 {
                    group.addTask {
                        try await database.readRows(ItemByID.self, [.text("i\(index % 40)")], decode) == ["i\(index % 40):\(index % 40)"]
                    }
                }
                return try await group.reduce(into: [Bool]()) { $0.append($1) }
            }
            #expect(answers.count == 64 && answers.allSatisfy { $0 })
            // A list read whose limit changes on every run (as page sizes do).
            for limit in 1...20 {
                let rows = try await database.readRows(ItemsFrom.self, [.integer(Int64(limit)), .integer(Int64(limit))], decode)
                #expect(rows == (limit..<min(2 * limit, 40)).map { "i\($0):\($0)" })
            }
            // Nothing recompiled itself so far: a bound limit does not expire a cached plan.
            #expect(database.sqliteStatementCacheCounts.map(\.recompiled) ?? 0 == 0)
            do {
                _ = try await database.writeRows(AddItem.self, [.text("i0"), .integer(0)]) { _ in () }
                Issue.record("a duplicate id was inserted")
            } catch {
                #expect(Database.isUniqueViolation(error))
            }
            try await database.write { db in
                try await db.raw("ALTER TABLE items ADD COLUMN note TEXT").run()
                try await db.raw("CREATE INDEX items_n ON items (n)").run()
            }
            #expect(try await database.writeRows(AddItem.self, [.text("late"), .integer(99)]) { try $0.string(0) } == ["late"])
            for index in [0, 39] {
                #expect(try await database.readRows(ItemByID.self, [.text("i\(index)")], decode) == ["i\(index):\(index)"])
            }
            #expect(try await database.readRows(ItemByID.self, [.text("late")], decode) == ["late:99"])
            if let counts = database.sqliteStatementCacheCounts {
                #expect(engine == .sqlite)
                // Without the cache every run prepares: 40 + 64 + 20 + 1 + 1 + 3 statement runs,
                // each with its group-commit BEGIN/COMMIT when it writes (and SAVEPOINT/RELEASE
                // when it shares its batch with other writes).
                #expect(counts.prepared <= 28, "\(counts)")
                #expect(counts.reused >= 190, "\(counts)")
                #expect(counts.held > 0, "\(counts)")
                // The schema change made SQLite recompile the statements it outdated, by itself.
                #expect(counts.recompiled > 0, "\(counts)")
            } else {
                #expect(engine == .postgres)
            }
            await database.close()
            #expect(database.sqliteStatementCacheCounts.map(\.held) ?? 0 == 0)
        }
    }

    /// A hot read on a file-backed SQLite runs on the caller's thread on a lent reader (no hop
    /// to SQLite's thread pool), one read per lent reader at a time: each read in a row finds
    /// one free, even after a read that failed, and many at once still all answer right.
    @Test(arguments: TestEngine.available)
    func hotSQLiteReadsRunOnTheCallingThreadAndGiveTheirReaderBack(engine: TestEngine) async throws {
        try await withOpenDatabase(engine) { database, _ in
            try await database.write { db in
                try await db.raw("CREATE TABLE items (id TEXT PRIMARY KEY, n BIGINT NOT NULL)").run()
                try await db.raw("INSERT INTO items (id, n) VALUES ('a', 1), ('b', 2)").run()
            }
            let decode: @Sendable (PositionalRow) throws -> String = { row in "\(try row.string(0)):\(try row.int64(1))" }
            func onCallingThread() -> Int { database.sqliteStatementCacheCounts?.onCallingThread ?? 0 }
            let before = onCallingThread()
            for _ in 0..<10 {
                #expect(try await database.readRows(ItemByID.self, [.text("a")], decode) == ["a:1"])
                await #expect(throws: (any Error).self) { try await database.readRows(BadRead.self, [.text("a")], decode) }
            }
            #expect(try await database.readRows(ItemByID.self, [.text("b")], decode) == ["b:2"])
            let answers = try await withThrowingTaskGroup(of: Bool.self) { group in
                for index in 0..<50 {
                    let id = index % 2 == 0 ? "a" : "b"
                    group.addTask { try await database.readRows(ItemByID.self, [.text(id)], decode) == [id == "a" ? "a:1" : "b:2"] }
                }
                return try await group.reduce(into: [Bool]()) { $0.append($1) }
            }
            #expect(answers.count == 50 && answers.allSatisfy { $0 })
            if engine == .sqlite {
                // The 21 reads in a row each found a lent reader free (a failed one gave its back).
                #expect(onCallingThread() - before >= 21)
            } else {
                #expect(database.sqliteStatementCacheCounts == nil)
            }
        }
    }

    @Test(arguments: TestEngine.available)
    func concurrentWritersDoNotLoseUpdates(engine: TestEngine) async throws {
        try await withOpenDatabase(engine) { database, _ in
            try await database.write { db in
                try await db.raw("CREATE TABLE counter (id INTEGER PRIMARY KEY, n BIGINT NOT NULL)").run()
                try await db.raw("INSERT INTO counter (id, n) VALUES (1, 0)").run()
            }
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<50 {
                    group.addTask {
                        try await database.write { db in try await db.raw("UPDATE counter SET n = n + 1 WHERE id = 1").run() }
                    }
                }
                try await group.waitForAll()
            }
            let value = try await database.read { db in try await db.raw("SELECT n FROM counter").first()?.decode(column: "n", as: Int.self) }
            #expect(value == 50)
        }
    }

    @Test(arguments: TestEngine.available)
    func aFailingUnitInABusyBatchRollsBackAloneAndTheOthersCommit(engine: TestEngine) async throws {
        try await withOpenDatabase(engine) { database, _ in
            try await database.write { db in try await db.raw("CREATE TABLE units (id TEXT PRIMARY KEY, part INTEGER NOT NULL)").run() }
            struct Refused: Error {}
            // 60 concurrent transactions of two inserts each; every third throws after its first
            // insert. On SQLite they share group commits; each must still be all-or-nothing.
            let outcomes = await withTaskGroup(of: Bool.self) { group in
                for index in 0..<60 {
                    group.addTask {
                        do {
                            try await database.transaction { db in
                                try await db.raw("INSERT INTO units (id, part) VALUES (\(bind: "u\(index)"), 1)").run()
                                if index % 3 == 0 { throw Refused() }
                                try await db.raw("INSERT INTO units (id, part) VALUES (\(bind: "u\(index)-b"), 2)").run()
                            }
                            return true
                        } catch {
                            return false
                        }
                    }
                }
                return await group.reduce(into: [Bool]()) { $0.append($1) }
            }
            #expect(outcomes.filter { $0 }.count == 40)
            let ids = try await database.read { db in
                try await db.raw("SELECT id FROM units").all().map { try $0.decode(column: "id", as: String.self) }
            }
            #expect(ids.count == 80)
            #expect(!ids.contains("u0") && !ids.contains("u3") && ids.contains("u1") && ids.contains("u1-b"))
        }
    }

    /// A write alone in its group commit runs in a transaction of its own, with no savepoint:
    /// BEGIN IMMEDIATE and COMMIT are its only statements besides its own, and when it throws
    /// nothing of it stays and the writer goes on. (PostgreSQL has no group commit.)
    @Test(arguments: TestEngine.available)
    func aLoneWriteRunsWithoutASavepointAndRollsBackWhole(engine: TestEngine) async throws {
        try await withOpenDatabase(engine) { database, _ in
            try await database.write { db in try await db.raw("CREATE TABLE lone (id TEXT PRIMARY KEY)").run() }
            struct Refused: Error {}
            func executions() -> Int { database.sqliteStatementCacheCounts.map { $0.prepared + $0.reused } ?? 0 }
            let before = executions()
            try await database.write { db in try await db.raw("INSERT INTO lone (id) VALUES ('kept')").run() }
            if engine == .sqlite {
                // SQLKit's own statement does not go through the cache; the batch's do.
                #expect(executions() - before == 2)
            }
            await #expect(throws: Refused.self) {
                try await database.transaction { db in
                    try await db.raw("INSERT INTO lone (id) VALUES ('dropped')").run()
                    throw Refused()
                }
            }
            try await database.write { db in try await db.raw("INSERT INTO lone (id) VALUES ('after')").run() }
            let ids = try await database.read { db in
                try await db.raw("SELECT id FROM lone ORDER BY id").all().map { try $0.decode(column: "id", as: String.self) }
            }
            #expect(ids == ["after", "kept"])
        }
    }

    /// Cached single-statement writes (`writeRows`) run in place on the SQLite writer: a batch
    /// of them, BEGIN and COMMIT included, takes one hop to the thread pool, where it took two
    /// per write and one more (three for a write alone). A write that fails in a batch (a
    /// duplicate id) reports its own error and is rolled back alone; the others commit.
    @Test(arguments: TestEngine.available)
    func cachedWritesRunInPlaceOnTheWriterOneHopPerBatch(engine: TestEngine) async throws {
        enum AddItem: PreparedRead {
            static let name = "cairn_test_in_place_add"
            static let sql = "INSERT INTO items (id, n) VALUES ($1, $2) RETURNING id"
        }
        try await withOpenDatabase(engine) { database, _ in
            try await database.write { db in try await db.raw("CREATE TABLE items (id TEXT PRIMARY KEY, n BIGINT NOT NULL)").run() }
            func hops() -> Int { database.sqliteStatementCacheCounts?.poolHops ?? 0 }
            let alone = hops()
            for index in 0..<5 {
                let ids = try await database.writeRows(AddItem.self, [.text("a\(index)"), .integer(Int64(index))]) { try $0.string(0) }
                #expect(ids == ["a\(index)"])
            }
            if engine == .sqlite { #expect(hops() - alone == 5) }
            let together = hops()
            let failed = try await withThrowingTaskGroup(of: Int?.self) { group in
                for index in 0..<64 {
                    group.addTask {
                        do {
                            _ = try await database.writeRows(AddItem.self, [.text(index == 31 ? "a0" : "b\(index)"), .integer(1000)]) {
                                try $0.string(0)
                            }
                            return nil
                        } catch {
                            #expect(Database.isUniqueViolation(error), "\(error)")
                            return index
                        }
                    }
                }
                return try await group.reduce(into: [Int]()) { if let index = $1 { $0.append(index) } }
            }
            #expect(failed == [31])
            if engine == .sqlite { #expect(hops() - together <= 64, "\(hops() - together) hops for 64 writes") }
            let rows = try await database.read { db in
                try await db.raw("SELECT CAST(count(*) AS BIGINT) AS n, CAST(sum(CASE WHEN id = 'a0' THEN n ELSE 0 END) AS BIGINT) AS a0 FROM items")
                    .first().map {
                        (try $0.decode(column: "n", as: Int.self), try $0.decode(column: "a0", as: Int.self))
                    }
            }
            #expect(rows?.0 == 68)
            #expect(rows?.1 == 0)
        }
    }

    /// A churned table is vacuumed (its dead row versions gone), by one node at a time.
    @Test func vacuumReclaimsDeadRowsAndOnlyOneNodeRunsIt() async throws {
        guard TestEngine.available.contains(.postgres) else { return }
        try await withOpenDatabase(.postgres) { database, test in
            let other = try await test.open()
            try await database.write { db in
                try await db.raw("CREATE TABLE churn (id INTEGER PRIMARY KEY, state TEXT NOT NULL)").run()
                try await db.raw("INSERT INTO churn SELECT g, 'available' FROM generate_series(1, 5000) g").run()
                try await db.raw("UPDATE churn SET state = 'running'").run()
            }
            // While another node holds the lock, this one skips.
            let key: Int64 = 42_4242
            try await other.write { db in try await db.raw("SELECT pg_advisory_lock(\(bind: key))").run() }
            let skipped = try await database.vacuum(table: "churn", lockKey: key)
            #expect(!skipped)
            #expect(try await other.vacuum(table: "churn", lockKey: key + 1))
            // VACUUM sets the visibility map: an index-only count then visits no heap page (before
            // it, every one of the 10,000 versions needs a heap check).
            let plan = try await database.transaction { db in
                try await db.raw("SET LOCAL enable_seqscan = off").run()
                return try await db.raw("EXPLAIN (ANALYZE) SELECT COUNT(*) FROM churn WHERE id > 0").all().map {
                    try $0.decode(column: "QUERY PLAN", as: String.self)
                }.joined(separator: "\n")
            }
            #expect(plan.contains("Index Only Scan"), "\(plan)")
            #expect(plan.contains("Heap Fetches: 0"), "\(plan)")
            await other.close()
        }
    }

    /// The URL's `connect_timeout` (libpq's, seconds) bounds the start-up check in place of
    /// the caller's default: with a default of ten minutes, an unreachable server still fails
    /// within the URL's 2 s (the deadline below only turns a hang into a failure). A value
    /// that is not a whole number is refused.
    @Test func theURLsConnectTimeoutBoundsTheStartUpCheck() async throws {
        _ = try await withDeadline(.seconds(60), "open with connect_timeout=2") {
            await #expect(throws: StorageError.self) {
                _ = try await Database.open(
                    url: "postgres://nobody@127.0.0.1:1/none?sslmode=disable&connect_timeout=2", sqlitePath: "", logger: testLogger,
                    startupTimeout: .seconds(600))
            }
        }
        do {
            _ = try await Database.open(url: "postgres://nobody@127.0.0.1:1/none?connect_timeout=soon", sqlitePath: "", logger: testLogger)
            Issue.record("open succeeded")
        } catch let error as StorageError {
            #expect(error.code == "invalid_database_url")
        }
    }

    /// A database the server does not have fails at the server's first answer, naming the
    /// database and SQLSTATE 3D000, instead of the pool retrying until the start-up deadline
    /// and saying "timed out" (found by a fresh-user trial: 15 s, then "timed out").
    @Test func aMissingDatabaseFailsAtOnceNamingIt() async throws {
        guard let base = TestEngine.postgresBaseURL, var components = URLComponents(string: base) else { return }
        components.path = "/cairn_no_such_database"
        let url = try #require(components.string)
        do {
            _ = try await Database.open(url: url, sqlitePath: "", logger: testLogger, startupTimeout: .seconds(300))
            Issue.record("open succeeded")
        } catch let error as StorageError {
            #expect(error.code == "database_unreachable")
            #expect(error.message.contains("cairn_no_such_database"), "\(error)")
            #expect(error.message.contains("3D000"), "\(error)")
        }
    }

    /// A malformed URL is a configuration error (exit 2, before the data directory is made),
    /// naming the setting (before: exit 1 from the database's opening, after an empty
    /// `./cairn-data` was created).
    @Test func aMalformedDatabaseURLIsAConfigurationError() async throws {
        for url in ["postgres://host:notaport/db", "postgres:///db", "postgres://h/db?sslmode=sometimes", "postgres://h/db?connect_timeout=x"] {
            do {
                _ = try await CairnConfiguration.load(flags: [:], environment: ["CAIRN_DATABASE_URL": url])
                Issue.record("\(url) was taken")
            } catch let error as ConfigurationError {
                #expect(error.description.contains("CAIRN_DATABASE_URL"), "\(url): \(error)")
            }
        }
    }

    /// A bad database URL names the setting it came from once: `CAIRN_DATABASE_URL` from the
    /// environment, `--database-url` from the command line (which wins over the variable). A
    /// fresh-user trial got `CAIRN_DATABASE_URL` twice, for a URL given with the flag.
    @Test func aDatabaseURLErrorNamesWhereTheURLCameFromOnce() async throws {
        let urls = [
            "mysql://localhost/x", "postgres://host:notaport/db", "postgres://h", "postgres://h/db?sslmod=require",
            "postgres://h/db?sslmode=sometimes", "postgres://h/db?connect_timeout=x",
        ]
        for url in urls {
            for (flags, environment, named) in [
                ([:], ["CAIRN_DATABASE_URL": url], "CAIRN_DATABASE_URL"),
                (["database.url": url], [:], "--database-url"),
                (["database.url": url], ["CAIRN_DATABASE_URL": "postgres://h/fine"], "--database-url"),
            ] {
                do {
                    _ = try await CairnConfiguration.load(flags: flags, environment: environment)
                    Issue.record("\(url) was taken")
                } catch let error as ConfigurationError {
                    let text = error.description
                    #expect(error.setting == named, "\(url): \(text)")
                    #expect(text.hasPrefix("invalid configuration: \(named) "), "\(url): \(text)")
                    #expect(text.components(separatedBy: "CAIRN_DATABASE_URL").count == (named == "CAIRN_DATABASE_URL" ? 2 : 1), "\(url): \(text)")
                    #expect(text.components(separatedBy: "--database-url").count == (named == "--database-url" ? 2 : 1), "\(url): \(text)")
                }
            }
        }
    }

    /// The configuration error that `url` as `CAIRN_DATABASE_URL` gives; a loaded
    /// configuration is recorded as a failure (nil).
    private func databaseURLError(_ url: String) async throws -> ConfigurationError? {
        do {
            _ = try await CairnConfiguration.load(flags: [:], environment: ["CAIRN_DATABASE_URL": url])
            Issue.record("\(url) was taken")
            return nil
        } catch let error as ConfigurationError {
            return error
        }
    }

    /// A URL without a database name is refused: libpq would take the user name as the
    /// database's, so Cairn migrated the `postgres` database (found by a fresh-user trial). The
    /// message says to put the name in the path. A URL with a database name still loads,
    /// whatever its query.
    @Test func aURLWithoutADatabaseNameIsAConfigurationError() async throws {
        for url in ["postgres://postgres@127.0.0.1:55432", "postgres://postgres@127.0.0.1:55432/", "postgresql://h:5432?sslmode=disable"] {
            guard let error = try await databaseURLError(url) else { continue }
            #expect(error.description.contains("CAIRN_DATABASE_URL"), "\(url): \(error)")
            #expect(error.description.contains("database name in the URL's path"), "\(url): \(error)")
        }
        for url in ["postgres://postgres@127.0.0.1:55432/cairn", "postgresql://u:p@h/db?sslmode=require&connect_timeout=5", "postgres://h//db"] {
            let configuration = try await CairnConfiguration.load(flags: [:], environment: ["CAIRN_DATABASE_URL": url])
            #expect(configuration.databaseURL == url)
        }
    }

    /// The URL's scheme is read in any case (RFC 3986 §3.1): `POSTGRESQL://` and `Postgres://`
    /// load as `postgresql://` does, and open the database (before: refused, "must start with
    /// postgres://"). Other schemes are still refused, in any case.
    @Test func theDatabaseURLsSchemeIsReadInAnyCase() async throws {
        for url in ["POSTGRESQL://u@h:5432/cairn", "Postgres://u@h/cairn?sslmode=disable", "PostgreSQL://u:p@h/db", "POSTGRES://h/db"] {
            let configuration = try await CairnConfiguration.load(flags: [:], environment: ["CAIRN_DATABASE_URL": url])
            #expect(configuration.databaseURL == url)
            let flagged = try await CairnConfiguration.load(flags: ["database.url": url], environment: [:])
            #expect(flagged.databaseURL == url)
        }
        for url in ["MYSQL://h/db", "POSTGRESQLX://h/db", "Postgres:/h/db"] {
            #expect(try await databaseURLError(url)?.setting == "CAIRN_DATABASE_URL", "\(url)")
        }
        guard let base = TestEngine.postgresBaseURL, let colon = base.firstIndex(of: ":") else { return }
        let upper = base[..<colon].uppercased() + base[colon...]
        let database = try await Database.open(url: upper, sqlitePath: "", logger: testLogger)
        let one = try await database.read { db in try await db.raw("SELECT 1 AS one").first()?.decode(column: "one", as: Int.self) }
        #expect(one == 1)
        await database.close()
    }

    /// A query parameter Cairn does not read is refused, naming it and the accepted ones: it
    /// was ignored, so a typo such as `sslmod=require` connected without TLS (found by a
    /// fresh-user trial).
    @Test func anUnknownDatabaseURLParameterIsAConfigurationError() async throws {
        for (url, name) in [
            ("postgres://h/cairn?sslmod=require", "sslmod"), ("postgres://h/cairn?sslmode=require&application_name=x", "application_name"),
            ("postgres://h/cairn?connect_timeout=5&SSLMODE=disable", "SSLMODE"),
        ] {
            guard let error = try await databaseURLError(url) else { continue }
            #expect(error.description.contains("CAIRN_DATABASE_URL"), "\(url): \(error)")
            #expect(error.description.contains("'\(name)'"), "\(url): \(error)")
            #expect(error.description.contains("sslmode, connect_timeout"), "\(url): \(error)")
        }
    }

    @Test func unreachablePostgresFailsFastWithAClearError() async throws {
        let started = ContinuousClock.now
        do {
            _ = try await Database.open(
                url: "postgres://nobody:secret@127.0.0.1:1/none", sqlitePath: "", logger: testLogger, startupTimeout: .seconds(3))
            Issue.record("open succeeded")
        } catch let error as StorageError {
            #expect(error.code == "database_unreachable")
            #expect(!error.description.contains("secret"))
        }
        // Without the start-up timeout PostgresClient retries forever; the bound only tells
        // "gives up" from "hangs" (generous: a loaded machine took 39 s to tear the client down).
        #expect(ContinuousClock.now - started < .seconds(120))
        await #expect(throws: StorageError.self) {
            _ = try await Database.open(url: "mysql://x", sqlitePath: "", logger: testLogger)
        }
    }

    /// A read sees every commit that returned before it started, even while another read on
    /// SQLite is between two rows of its statement. SQLite's read transaction belongs to the
    /// connection: a statement started on a reader while another one there is unfinished joins
    /// that one's snapshot. Before, reads went round robin to the readers, shared: the third
    /// read after one that held its reader mid-statement ran on that reader and missed the
    /// commit, as a node's re-check of a deleted user's sessions missed the deletion during a
    /// publish burst (found by a fresh-user trial). The statement is held between two rows by
    /// its row decoder, on a thread pool of the test's own; no timing is involved.
    @Test func aSQLiteReadSeesWhatCommittedBeforeItWhileAnotherReadIsMidStatement() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("cairn-reads-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let database = try await Database.open(url: nil, sqlitePath: directory + "/reads.sqlite", logger: testLogger)
        try await database.write { db in
            try await db.raw("CREATE TABLE counter (x INTEGER NOT NULL)").run()
            try await db.raw("INSERT INTO counter (x) VALUES (0)").run()
        }
        let value: @Sendable () async throws -> Int? = {
            try await database.read { db in try await db.raw("SELECT x FROM counter").first()?.decode(column: "x", as: Int.self) }
        }
        let pool = NIOThreadPool(numberOfThreads: 1)
        pool.start()
        let (held, holding) = AsyncStream<Void>.makeStream()
        let release = DispatchSemaphore(value: 0)
        let holder = Task {
            try await database.withNativeReader(
                postgres: { _ in 0 },
                sqlite: { connection in
                    let statements = try #require(SQLiteStatementCache(connection: connection, threadPool: pool))
                    defer { statements.close() }
                    // The first row (the counter's) stops the statement, stepped once and
                    // unfinished, until released; the second (-1) ends it.
                    return try await statements.rows("SELECT x FROM counter UNION ALL SELECT -1", []) { row in
                        let x = try row.int(0)
                        if x >= 0 {
                            holding.yield()
                            release.wait()
                        }
                        return x
                    }.count
                })
        }
        for await _ in held { break }
        // Two reads in between: round robin, the next read went to the held reader again.
        for _ in 0..<2 { #expect(try await value() == 0) }
        try await database.write { db in try await db.raw("UPDATE counter SET x = 1").run() }
        let seen = try await value()
        release.signal()
        #expect(try await holder.value == 2)
        #expect(seen == 1, "a read that started after the commit missed it")
        await database.close()
        try await pool.shutdownGracefully()
    }
}

@Suite("Identifiers", .dedicatedThreads)
struct IdentifierTests {
    @Test func uuidV7HasVersionVariantTimeAndStrictOrder() throws {
        let before = WallClock.milliseconds()
        let ids = (0..<20_000).map { _ in UUIDv7.make() }
        let after = WallClock.milliseconds()
        #expect(ids == ids.sorted())
        #expect(Set(ids).count == ids.count)
        for id in ids.prefix(100) {
            #expect(UUIDv7.isValid(id))
            let hex = id.replacingOccurrences(of: "-", with: "")
            #expect(Array(hex)[12] == "7")
            #expect("89ab".contains(Array(hex)[16]))
            let ms = Int64(hex.prefix(12), radix: 16)!
            #expect(ms >= before && ms <= after + 10)
            #expect(UUID(uuidString: id) != nil)
        }
        #expect(!UUIDv7.isValid("not-a-uuid"))
        #expect(!UUIDv7.isValid("01a2282d-d301-71ea-99c2-01ee396c88fg"))
    }
}

@Suite("EventBus")
struct EventBusTests {
    /// What is published once `onListening` has run is delivered: consumers re-read their
    /// source of truth at that moment, so nothing falls between their read and the LISTEN.
    @Test(arguments: TestEngine.available)
    func publishesAfterOnListeningAreDelivered(engine: TestEngine) async throws {
        try await withOpenDatabase(engine) { database, _ in
            let bus = EventBus(database: database, logger: testLogger)
            let (listening, listeningContinuation) = AsyncStream<Void>.makeStream()
            let stream = bus.subscribe(channel: "probe") { listeningContinuation.yield() }
            let received = try await withDeadline(.seconds(30), "the message published after LISTEN") {
                var iterator = listening.makeAsyncIterator()
                await iterator.next()
                try await bus.publish(channel: "probe", payload: "after-listen")
                var messages = stream.makeAsyncIterator()
                return await messages.next()
            }
            #expect(received == "after-listen")
        }
    }
}

@Suite("CI guard")
struct PostgresGuardTests {
    /// CI sets CAIRN_TEST_REQUIRE_POSTGRES=1: then the PostgreSQL suites must not be skipped.
    @Test func postgresSuitesRunWhenRequired() async throws {
        guard ProcessInfo.processInfo.environment["CAIRN_TEST_REQUIRE_POSTGRES"] == "1" else { return }
        #expect(TestEngine.available.contains(.postgres), "CAIRN_TEST_POSTGRES_URL is not set: the PostgreSQL suites were skipped")
        try await withOpenDatabase(.postgres) { database, _ in
            #expect(database.dialect == .postgres)
        }
    }
}

@Suite("Transactions and after-commit work")
struct TransactionTests {
    struct Rollback: Error {}

    /// After-commit work runs once the transaction committed, not inside it, and never for a
    /// transaction (or a group-commit unit) that rolled back.
    @Test(arguments: TestEngine.available)
    func afterCommitWorkRunsOnlyOnCommit(engine: TestEngine) async throws {
        try await withOpenDatabase(engine) { database, _ in
            let ran = Mutex<[String]>([])
            let insideSaw = try await database.transaction { db in
                Database.afterCommit(on: db) { ran.withLock { $0.append("committed") } }
                return ran.withLock { $0 }
            }
            #expect(insideSaw.isEmpty, "the work ran inside the transaction")
            #expect(ran.withLock { $0 } == ["committed"])
            await #expect(throws: Rollback.self) {
                try await database.transaction { db in
                    Database.afterCommit(on: db) { ran.withLock { $0.append("rolled back") } }
                    throw Rollback()
                }
            }
            #expect(ran.withLock { $0 } == ["committed"])
            // Joining: the work waits for the outer transaction's commit.
            try await database.transaction { outer in
                try await database.transaction(joining: outer) { inner in
                    Database.afterCommit(on: inner) { ran.withLock { $0.append("joined") } }
                }
                #expect(ran.withLock { $0 } == ["committed"], "joined work ran before the outer commit")
            }
            #expect(ran.withLock { $0 } == ["committed", "joined"])
        }
    }

    /// A bus message published inside a transaction that rolls back is never delivered; one
    /// published inside a committed transaction is (both engines, so no caller branches on the
    /// dialect).
    @Test(arguments: TestEngine.available)
    func busMessagesFollowTheTransaction(engine: TestEngine) async throws {
        try await withOpenDatabase(engine) { database, _ in
            let bus = EventBus(database: database, logger: testLogger)
            let (listening, listeningContinuation) = AsyncStream<Void>.makeStream()
            let stream = bus.subscribe(channel: "tx-probe") { listeningContinuation.yield() }
            // Deadlines rather than a time limit on the test, which would count the time it waits
            // for a test database slot.
            try await withDeadline(.seconds(60), "the subscription listening") {
                var listened = listening.makeAsyncIterator()
                await listened.next()
            }
            await #expect(throws: Rollback.self) {
                try await database.transaction { db in
                    try await bus.publish(channel: "tx-probe", payload: "rolled-back", on: db)
                    throw Rollback()
                }
            }
            try await database.transaction { db in
                try await bus.publish(channel: "tx-probe", payload: "committed", on: db)
            }
            let received = try await withDeadline(.seconds(60), "the committed message") {
                var messages = stream.makeAsyncIterator()
                return await messages.next()
            }
            #expect(received == "committed")
        }
    }
}
