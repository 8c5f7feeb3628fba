import CairnHTTP
import CairnStorage
import CairnTestSupport
import Foundation
import HTTPTypes
import Testing

@testable import CairnCatalog

@Suite("ProductStore on both engines")
struct ProductStoreTests {
    /// Every page of a product listing, following the store's own cursors.
    func walk(
        _ store: ProductStore, tenant: TenantRow, filter: ProductFilter = ProductFilter(), sort: ProductSort = .name,
        descending: Bool = false, limit: Int
    ) async throws -> [[Product]] {
        var pages: [[Product]] = []
        var after: ProductCursor?
        for _ in 0..<50 {
            let page = try await store.list(tenantId: tenant.id, filter: filter, sort: sort, descending: descending, limit: limit, after: after)
            pages.append(page.items)
            guard let next = page.nextCursor else { return pages }
            #expect(page.items.count == limit)
            let cursor = try #require(ProductCursor.decode(next))
            after = cursor
        }
        Issue.record("the listing did not end")
        return pages
    }

    /// Names of the products a search finds in the tenant, sorted.
    func search(_ store: ProductStore, _ tenant: TenantRow, _ query: String) async throws -> [String] {
        let page = try await store.list(
            tenantId: tenant.id, filter: ProductFilter(query: query), sort: .name, descending: false, limit: 100, after: nil)
        return page.items.map(\.name)
    }

    @Test(arguments: TestEngine.available)
    func aProductReadsBackByIdAndSKUOnlyInItsTenant(engine: TestEngine) async throws {
        try await withStore(engine, ProductStore.init) { store, tenant, other, database in
            let product = try await Factory.product(
                on: database, tenant: tenant, sku: "MUG-1", name: "Mug", description: "Blue", priceMinor: 1_250, currency: "USD",
                category: "kitchen", stock: 3, attributes: #"{"color":"blue"}"#)
            #expect(try await store.get(id: product.id, tenantId: tenant.id) == product)
            #expect(try await store.get(sku: "MUG-1", tenantId: tenant.id) == product)
            #expect(try await store.get(id: product.id, tenantId: other.id) == nil)
            #expect(try await store.get(sku: "MUG-1", tenantId: other.id) == nil)
            #expect(try await store.get(id: "not-a-uuid", tenantId: tenant.id) == nil)
            #expect(try await store.get(sku: "-not a sku", tenantId: tenant.id) == nil)
            #expect(try await store.batch(tenantId: other.id, filter: ProductFilter(), after: nil, limit: 10).isEmpty)
        }
    }

    @Test(arguments: TestEngine.available)
    func skusAreUniqueWithinATenantOnly(engine: TestEngine) async throws {
        try await withStore(engine, ProductStore.init) { store, tenant, other, database in
            let first = try await Factory.product(on: database, tenant: tenant, sku: "SKU-1", name: "First")
            let second = try await Factory.product(on: database, tenant: tenant, sku: "SKU-2", name: "Second")
            await expectAppError(.conflict) { try await Factory.product(on: database, tenant: tenant, sku: "SKU-1", name: "Copy") }
            #expect(try await store.get(sku: "SKU-1", tenantId: tenant.id) == first)
            #expect(try await Factory.product(on: database, tenant: other, sku: "SKU-1").tenantId == other.id)

            var change = ProductChange()
            change.sku = "SKU-1"
            await expectAppError(.conflict) { try await store.update(id: second.id, tenantId: tenant.id, expectedVersion: nil, change: change) }
            #expect(try await store.get(id: second.id, tenantId: tenant.id) == second)
        }
    }

    @Test(arguments: TestEngine.available)
    func everySortPagesInBothDirectionsThroughTies(engine: TestEngine) async throws {
        try await withStore(engine, ProductStore.init) { store, tenant, other, database in
            // Ties on every sort column, so the id tie-breaker and the cursor's (value, id) matter.
            let names = ["pear", "apple", "pear", "fig", "apple", "pear", "date", "kiwi"]
            let prices: [Int64] = [300, 100, 300, 200, 100, 300, 50, 200]
            let updated: [Int64] = [5, 3, 5, 1, 3, 5, 9, 1]
            let made = try await rows(names.count, in: tenant, beside: other) { owner, index in
                try await Factory.product(on: database, tenant: owner, name: names[index], priceMinor: prices[index], createdAt: updated[index])
            }
            for sort in ProductSort.allCases {
                for descending in [false, true] {
                    func key(_ product: Product) -> String {
                        switch sort {
                        case .name: product.name
                        case .price: String(format: "%020lld", product.priceMinor)
                        case .updatedAt: String(format: "%020lld", product.updatedAt)
                        }
                    }
                    var expected = made.sorted { (key($0), $0.id) < (key($1), $1.id) }.map(\.id)
                    if descending { expected.reverse() }
                    let pages = try await walk(store, tenant: tenant, sort: sort, descending: descending, limit: 3)
                    #expect(pages.map(\.count) == [3, 3, 2], "\(sort) descending: \(descending)")
                    #expect(pages.flatMap { $0.map(\.id) } == expected, "\(sort) descending: \(descending)")
                }
            }
        }
    }

    @Test(arguments: TestEngine.available)
    func filtersCombineCategoryAndInclusivePriceBounds(engine: TestEngine) async throws {
        try await withStore(engine, ProductStore.init) { store, tenant, _, database in
            _ = try await Factory.product(on: database, tenant: tenant, name: "a", priceMinor: 100, category: "tools")
            _ = try await Factory.product(on: database, tenant: tenant, name: "b", priceMinor: 200, category: "tools")
            _ = try await Factory.product(on: database, tenant: tenant, name: "c", priceMinor: 300, category: "tools")
            _ = try await Factory.product(on: database, tenant: tenant, name: "d", priceMinor: 200, category: "toys")
            _ = try await Factory.product(on: database, tenant: tenant, name: "e", priceMinor: 200, category: nil)
            func names(_ filter: ProductFilter) async throws -> [String] {
                try await walk(store, tenant: tenant, filter: filter, limit: 2).flatMap { $0.map(\.name) }
            }
            #expect(try await names(ProductFilter(category: "tools")) == ["a", "b", "c"])
            #expect(try await names(ProductFilter(minPrice: 200, maxPrice: 200)) == ["b", "d", "e"])
            #expect(try await names(ProductFilter(category: "tools", minPrice: 150)) == ["b", "c"])
            #expect(try await names(ProductFilter(category: "tools", maxPrice: 200)) == ["a", "b"])
            #expect(try await names(ProductFilter(category: "garden")).isEmpty)
            let batch = try await store.batch(tenantId: tenant.id, filter: ProductFilter(category: "tools", minPrice: 200), after: nil, limit: 10)
            #expect(batch.map(\.name) == ["b", "c"])
        }
    }

    @Test(arguments: TestEngine.available)
    func searchFindsProductsHoldingEveryWord(engine: TestEngine) async throws {
        try await withStore(engine, ProductStore.init) { store, tenant, other, database in
            _ = try await Factory.product(on: database, tenant: tenant, name: "Red apple", description: "Fresh fruit")
            _ = try await Factory.product(on: database, tenant: tenant, name: "Green apple", description: nil)
            _ = try await Factory.product(on: database, tenant: tenant, name: "Red car", description: "Fast, shiny")
            _ = try await Factory.product(on: database, tenant: other, name: "Red apple", description: "Another tenant's")

            #expect(try await search(store, tenant, "apple") == ["Green apple", "Red apple"])
            #expect(try await search(store, tenant, "RED Apple") == ["Red apple"])
            #expect(try await search(store, tenant, "fruit") == ["Red apple"])
            #expect(try await search(store, tenant, "car red") == ["Red car"])
            #expect(try await search(store, tenant, "red banana").isEmpty)
            // No prefix matching and no stemming, on either engine.
            #expect(try await search(store, tenant, "app").isEmpty)
            #expect(try await search(store, tenant, "apples").isEmpty)
            // Query syntax of either engine is read as plain words.
            #expect(try await search(store, tenant, #"apple" OR -car*"#).isEmpty)
            #expect(try await search(store, tenant, #"-shiny ("car")"#) == ["Red car"])
            #expect(try await search(store, tenant, "red & car:*") == ["Red car"])
            // A query without a word matches nothing.
            #expect(try await search(store, tenant, "!!! ***").isEmpty)
            let batch = try await store.batch(tenantId: tenant.id, filter: ProductFilter(query: "red"), after: nil, limit: 10)
            #expect(batch.map(\.name) == ["Red apple", "Red car"])
        }
    }

    @Test(arguments: TestEngine.available)
    func searchSplitsWordsAtPunctuationOnBothEngines(engine: TestEngine) async throws {
        try await withStore(engine, ProductStore.init) { store, tenant, _, database in
            _ = try await Factory.product(
                on: database, tenant: tenant, name: "USB 3.0 hub", description: "See example.com/hubs or mail help@example.com")
            _ = try await Factory.product(on: database, tenant: tenant, name: "Cable v2.1", description: "e-mail, café_crème")
            // The query is split into words at every character that is not a letter or digit;
            // the indexed text must be split the same way on both engines.
            #expect(try await search(store, tenant, "3.0") == ["USB 3.0 hub"])
            #expect(try await search(store, tenant, "usb 3") == ["USB 3.0 hub"])
            #expect(try await search(store, tenant, "example.com") == ["USB 3.0 hub"])
            #expect(try await search(store, tenant, "hubs") == ["USB 3.0 hub"])
            #expect(try await search(store, tenant, "help") == ["USB 3.0 hub"])
            #expect(try await search(store, tenant, "v2") == ["Cable v2.1"])
            #expect(try await search(store, tenant, "mail") == ["Cable v2.1", "USB 3.0 hub"])
            #expect(try await search(store, tenant, "crème café") == ["Cable v2.1"])
        }
    }

    @Test(arguments: TestEngine.available)
    func searchFollowsUpdatesUpsertsAndDeletes(engine: TestEngine) async throws {
        try await withStore(engine, ProductStore.init) { store, tenant, _, database in
            let car = try await Factory.product(on: database, tenant: tenant, sku: "CAR", name: "Red car")
            let apple = try await Factory.product(on: database, tenant: tenant, sku: "APPLE", name: "Green apple")

            var change = ProductChange()
            change.name = "Blue car"
            change.description = .some("Electric")
            _ = try await store.update(id: car.id, tenantId: tenant.id, expectedVersion: nil, change: change)
            #expect(try await search(store, tenant, "red").isEmpty)
            #expect(try await search(store, tenant, "blue electric") == ["Blue car"])

            try await store.upsert([Factory.productRow(tenant: tenant, sku: "APPLE", name: "Yellow apple")])
            #expect(try await search(store, tenant, "green").isEmpty)
            #expect(try await search(store, tenant, "yellow") == ["Yellow apple"])

            #expect(try await store.delete(id: apple.id, tenantId: tenant.id, expectedVersion: nil))
            #expect(try await search(store, tenant, "apple").isEmpty)
            #expect(try await search(store, tenant, "car") == ["Blue car"])
        }
    }

    @Test(arguments: TestEngine.available)
    func updatesAndDeletesApplyAtTheExpectedVersionInTheTenant(engine: TestEngine) async throws {
        try await withStore(engine, ProductStore.init) { store, tenant, other, database in
            let product = try await Factory.product(
                on: database, tenant: tenant, name: "Lamp", description: "Warm", priceMinor: 4_000, category: "home")

            var change = ProductChange()
            change.priceMinor = 3_500
            change.category = .some(nil)
            change.description = .some(nil)
            change.attributes = #"{"watts":40}"#
            #expect(try await store.update(id: product.id, tenantId: other.id, expectedVersion: nil, change: change) == nil)
            #expect(try await store.update(id: product.id, tenantId: tenant.id, expectedVersion: 9, change: change) == nil)
            #expect(try await store.get(id: product.id, tenantId: tenant.id) == product)

            let updated = try #require(try await store.update(id: product.id, tenantId: tenant.id, expectedVersion: 1, change: change))
            #expect(updated.version == 2)
            #expect(updated.priceMinor == 3_500)
            #expect(updated.category == nil)
            #expect(updated.description == nil)
            #expect(updated.attributes == #"{"watts":40}"#)
            #expect(updated.name == "Lamp")
            #expect(updated.createdAt == product.createdAt)

            #expect(try await !store.delete(id: product.id, tenantId: other.id, expectedVersion: nil))
            #expect(try await !store.delete(id: product.id, tenantId: tenant.id, expectedVersion: 1))
            #expect(try await !store.delete(id: "not-a-uuid", tenantId: tenant.id, expectedVersion: nil))
            #expect(try await store.delete(id: product.id, tenantId: tenant.id, expectedVersion: 2))
            #expect(try await store.get(id: product.id, tenantId: tenant.id) == nil)
        }
    }

    @Test(arguments: TestEngine.available)
    func upsertsMatchBySKUKeepingIdAndCreation(engine: TestEngine) async throws {
        try await withStore(engine, ProductStore.init) { store, tenant, other, database in
            let existing = try await Factory.product(on: database, tenant: tenant, sku: "SKU-0", name: "Old", createdAt: 1_000)
            let theirs = try await Factory.product(on: database, tenant: other, sku: "SKU-0", name: "Theirs")

            // 501 rows: two statements (500 rows each at most); the first row updates SKU-0.
            let rows = (0..<501).map { index in
                Factory.productRow(tenant: tenant, sku: "SKU-\(index)", name: "New \(index)", priceMinor: Int64(index), createdAt: 2_000)
            }
            try await store.upsert(rows)
            let updated = try #require(try await store.get(sku: "SKU-0", tenantId: tenant.id))
            #expect(updated.id == existing.id)
            #expect(updated.createdAt == 1_000)
            #expect(updated.updatedAt == 2_000)
            #expect(updated.name == "New 0")
            #expect(updated.version == 2)
            #expect(try await store.get(sku: "SKU-500", tenantId: tenant.id)?.id == rows[500].id)
            #expect(try await store.batch(tenantId: tenant.id, filter: ProductFilter(), after: nil, limit: 1_000).count == 501)
            #expect(try await store.get(sku: "SKU-0", tenantId: other.id) == theirs)

            try await store.upsert([])
        }
    }

    @Test(arguments: TestEngine.available)
    func batchesWalkAscendingIdsAfterAnId(engine: TestEngine) async throws {
        try await withStore(engine, ProductStore.init) { store, tenant, _, database in
            var made: [Product] = []
            for _ in 0..<5 { made.append(try await Factory.product(on: database, tenant: tenant)) }
            let first = try await store.batch(tenantId: tenant.id, filter: ProductFilter(), after: nil, limit: 3)
            #expect(first.map(\.id) == made[0..<3].map(\.id))
            let rest = try await store.batch(tenantId: tenant.id, filter: ProductFilter(), after: first.last?.id, limit: 3)
            #expect(rest.map(\.id) == made[3..<5].map(\.id))
        }
    }

    @Test(arguments: TestEngine.available)
    func importBodiesAreKeptPerTenantUntilDeleted(engine: TestEngine) async throws {
        try await withStore(engine, ProductStore.init) { store, tenant, other, database in
            let id = try await store.saveImport(tenantId: tenant.id, format: "csv", body: "sku,name\nA,Apple\n")
            let loaded = try await store.loadImport(id: id, tenantId: tenant.id)
            #expect(loaded?.format == "csv")
            #expect(loaded?.body == "sku,name\nA,Apple\n")
            #expect(try await store.loadImport(id: id, tenantId: other.id)?.body == nil)
            try await store.deleteImport(id: id)
            #expect(try await store.loadImport(id: id, tenantId: tenant.id)?.body == nil)
        }
    }
}
