import CairnHTTP
import CairnServer
import CairnStorage
import CairnTestSupport
import Foundation
import HTTPTypes
import SQLKit
import Testing

/// A migrated, empty database for one store test (a copy of the migrated template), removed
/// afterwards: the SQLite file's folder, or the PostgreSQL database (dropped).
///
/// Store tests need no application: they open the database, apply every module's migrations
/// and call the stores directly, as River's driver suite calls its driver.
func withStoreDatabase<R: Sendable>(_ engine: TestEngine, _ body: @Sendable (Database) async throws -> R) async throws -> R {
    try await withTestDatabase(engine) { test in
        let configuration = test.configuration
        let database = try await Database.open(url: configuration.databaseURL, sqlitePath: configuration.sqlitePath, logger: testLogger)
        let result: Result<R, any Error>
        do {
            try await Migrator(database: database, migrations: allMigrations(), logger: testLogger).migrate()
            result = .success(try await body(database))
        } catch {
            result = .failure(error)
        }
        // Closed before anything is reported: sqlite-nio traps on a connection released open.
        await database.close()
        return try result.get()
    }
}

/// The start most store tests share: a migrated, empty database (as ``withStoreDatabase(_:_:)``),
/// the store under test on it, the tenant the test acts as, and another tenant whose rows a
/// tenant-scoped read must never return. `body` receives the store, the two tenants and the
/// database (for factories and other stores).
func withStore<Store: Sendable, R: Sendable>(
    _ engine: TestEngine, _ makeStore: @Sendable (Database) -> Store,
    _ body: @Sendable (Store, TenantRow, TenantRow, Database) async throws -> R
) async throws -> R {
    try await withStoreDatabase(engine) { database in
        try await body(makeStore(database), try await Factory.tenant(on: database), try await Factory.tenant(on: database), database)
    }
}

/// `count` rows made by `make` in `tenant`, each followed by one made the same way in `other`
/// (a bystander that `tenant`'s listings must skip); answers `tenant`'s rows in the order made.
/// `make` receives the tenant to make the row in and the row's index.
func rows<Item>(
    _ count: Int, in tenant: TenantRow, beside other: TenantRow, _ make: (TenantRow, Int) async throws -> Item
) async rethrows -> [Item] {
    var made: [Item] = []
    for index in 0..<count {
        made.append(try await make(tenant, index))
        _ = try await make(other, index)
    }
    return made
}

/// Expects `body` to throw the coded `AppError` with `status` (409 `conflict`, ...).
func expectAppError<R>(
    _ status: HTTPResponse.Status, sourceLocation: SourceLocation = #_sourceLocation, _ body: () async throws -> R
) async {
    do {
        _ = try await body()
        Issue.record("expected an error with status \(status.code), got none", sourceLocation: sourceLocation)
    } catch let error as AppError {
        #expect(error.status == status, "got \(error.status.code) \(error.code)", sourceLocation: sourceLocation)
    } catch {
        Issue.record("expected an AppError with status \(status.code), got \(error)", sourceLocation: sourceLocation)
    }
}

/// Every page of a keyset-paged listing, following `nextCursor` until it is nil; fails the test
/// when a page is over `limit` or the walk does not end within `maxPages`.
func allPages<Item: JSONWritable & Sendable>(
    limit: Int, maxPages: Int = 100, sourceLocation: SourceLocation = #_sourceLocation,
    _ fetch: (PageRequest) async throws -> Page<Item>
) async throws -> [[Item]] {
    var pages: [[Item]] = []
    var after: String?
    for _ in 0..<maxPages {
        let page = try await fetch(PageRequest(limit: limit, after: after))
        #expect(page.items.count <= limit, sourceLocation: sourceLocation)
        pages.append(page.items)
        guard let cursor = page.nextCursor else { return pages }
        #expect(page.items.count == limit, "a page with a next cursor is full", sourceLocation: sourceLocation)
        after = Cursor.decode(cursor)
        #expect(after != nil, "the next cursor is one of ours", sourceLocation: sourceLocation)
    }
    Issue.record("the listing did not end within \(maxPages) pages", sourceLocation: sourceLocation)
    return pages
}

/// Expects a keyset-paged listing, walked `limit` rows at a time, to list exactly the rows
/// `expected` names, in order, on full pages but the last (which is never empty unless the
/// listing is).
func expectListing<Item: JSONWritable & Sendable>(
    limit: Int, _ expected: [String], id: (Item) -> String, sourceLocation: SourceLocation = #_sourceLocation,
    _ fetch: (PageRequest) async throws -> Page<Item>
) async throws {
    let pages = try await allPages(limit: limit, sourceLocation: sourceLocation, fetch)
    #expect(pages.flatMap { $0.map(id) } == expected, sourceLocation: sourceLocation)
    let counts = stride(from: 0, to: max(expected.count, 1), by: limit).map { min(limit, expected.count - $0) }
    #expect(pages.map(\.count) == counts, sourceLocation: sourceLocation)
}

/// Expects a bulk read by ids (one across tenants, for event fan-out) to answer exactly the
/// rows `known` names, skipping ids that are not UUIDs or name no row.
func expectBulkRead<Item>(
    of known: [String], id: (Item) -> String, sourceLocation: SourceLocation = #_sourceLocation, _ read: ([String]) async throws -> [Item]
) async throws {
    let found = try await read(known + ["not-a-uuid", UUIDv7.make()])
    #expect(Set(found.map(id)) == Set(known), sourceLocation: sourceLocation)
    #expect(try await read(["not-a-uuid"]).isEmpty, sourceLocation: sourceLocation)
}
