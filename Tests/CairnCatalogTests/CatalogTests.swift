import CairnCatalog
import CairnHTTP
import CairnServer
import CairnStorage
import CairnTestSupport
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import SQLKit
import Testing

// MARK: - Helpers

let xCache = HTTPField.Name("X-Cache")!

/// An owner's token and tenant id.
func owner(_ client: any TestClientProtocol, _ email: String) async throws -> (token: String, tenantId: String) {
    let (user, tokens) = try await client.registerAndLogin(email: email)
    return (tokens.accessToken, user.tenantId)
}

/// Creates a product as `token`; fails unless 201.
@discardableResult
func createProduct(
    _ client: any TestClientProtocol, token: String, _ body: [String: Any], sourceLocation: SourceLocation = #_sourceLocation
) async throws -> [String: Any] {
    var full: [String: Any] = ["sku": "SKU-\(UUID().uuidString.prefix(8))", "name": "Widget", "priceMinor": 1000, "currency": "EUR"]
    full.merge(body) { $1 }
    let response = try await client.json(.post, "/products", full, token: token)
    try #require(response.status == .created, "create failed: \(response.status) \(response.text)", sourceLocation: sourceLocation)
    return response.object
}

func items(_ response: TestResponse) -> [[String: Any]] { response.object["items"] as? [[String: Any]] ?? [] }
func skus(_ response: TestResponse) -> [String] { items(response).compactMap { $0["sku"] as? String } }
func fields(_ response: TestResponse) -> Set<String> {
    Set((response.object["errors"] as? [[String: Any]] ?? []).compactMap { $0["field"] as? String })
}

// MARK: - CRUD

@Suite("Catalog: products API")
struct ProductsAPITests {
    /// The SKU in `GET /products/by-sku/{sku}` is percent-decoded as path ids are (RFC 3986
    /// §2.1; found by a fresh-user trial: `CHAIR%2D1` was 404); escapes that are malformed or
    /// decode to invalid UTF-8 or a control character are 400 `invalid_input` on `sku`.
    @Test(arguments: TestEngine.available)
    func skusInPathsArePercentDecoded(engine: TestEngine) async throws {
        try await withTestApp(engine, owner: "sku-escapes@example.com") { client, _, token in
            let id = try #require(try await createProduct(client, token: token, ["sku": "Oak.Chair_1-B"])["id"] as? String)
            for path in ["Oak.Chair_1-B", "Oak.Chair_1%2DB", "%4Fak%2eChair%5F1%2dB", "%4F%61%6B%2E%43%68%61%69%72%5F%31%2D%42"] {
                let found = try await client.json(.get, "/products/by-sku/\(path)", token: token)
                #expect(found.status == .ok, "\(path): \(found.text)")
                #expect(found.object["id"] as? String == id, "\(path)")
            }
            // Decoded, but no SKU could be it (or no product has it): still 404.
            for path in ["Oak%20Chair", "%C3%A9t%C3%A9", "Oak.Chair_1-C"] {
                #expect(try await client.json(.get, "/products/by-sku/\(path)", token: token).status == .notFound, "\(path)")
            }
            for (path, issue) in [
                ("Oak%FF", PathParameter.malformedIssue), ("Oak%C3", PathParameter.malformedIssue), ("Oak%G1", PathParameter.malformedIssue),
                ("Oak%", PathParameter.malformedIssue), ("Oak%00", PathParameter.controlIssue), ("Oak%0A1", PathParameter.controlIssue),
                ("Oak%7F", PathParameter.controlIssue), ("Oak%C2%85", PathParameter.controlIssue),
            ] {
                let refused = try await client.json(.get, "/products/by-sku/\(path)", token: token)
                #expect(refused.status == .badRequest, "\(path): \(refused.text)")
                #expect(refused.code == "invalid_input", "\(path)")
                let problem = try refused.decode(ProblemBody.self)
                #expect(problem.fields == ["sku"], "\(path)")
                #expect(problem.errors?.first?.issue == issue, "\(path)")
            }
        }
    }

    @Test(arguments: TestEngine.available)
    func createReadUpdateDeleteWithETags(engine: TestEngine) async throws {
        try await withTestApp(engine, owner: "ann@example.com") { client, _, token in
            let created = try await client.json(
                .post, "/products",
                [
                    "sku": "CHAIR-1", "name": "  Oak Chair ", "description": "Solid oak", "priceMinor": 12_999, "currency": "EUR",
                    "category": "furniture", "stock": 5, "attributes": ["color": "natural", "legs": 4],
                ], token: token)
            #expect(created.status == .created)
            let id = try #require(created.object["id"] as? String)
            #expect(created.headers[.location] == "/products/\(id)")
            #expect(created.headers[.eTag] == "\"1\"")
            #expect(created.object["name"] as? String == "Oak Chair")
            #expect(created.object["tenantId"] == nil)
            #expect((created.object["attributes"] as? [String: Any])?["legs"] as? Int == 4)

            let read = try await client.json(.get, "/products/\(id)", token: token)
            #expect(read.status == .ok)
            #expect(read.headers[.eTag] == "\"1\"")
            #expect(read.headers[.cacheControl]?.contains("private") == true)
            #expect(read.headers[xCache] == "miss")
            let again = try await client.json(.get, "/products/\(id)", token: token)
            #expect(again.headers[xCache] == "hit")
            let notModified = try await client.json(.get, "/products/\(id)", token: token, headers: [.ifNoneMatch: "\"1\""])
            #expect(notModified.status == .notModified)
            let bySKU = try await client.json(.get, "/products/by-sku/CHAIR-1", token: token)
            #expect(bySKU.object["id"] as? String == id)

            let stalePatch = try await client.json(.patch, "/products/\(id)", ["stock": 4], token: token, headers: [.ifMatch: "\"7\""])
            #expect(stalePatch.status == .preconditionFailed)
            let patched = try await client.json(
                .patch, "/products/\(id)", ["stock": 4, "category": NSNull()], token: token, headers: [.ifMatch: "\"1\""])
            #expect(patched.status == .ok)
            #expect(patched.object["stock"] as? Int == 4)
            #expect(patched.object["category"] is NSNull)
            #expect(patched.headers[.eTag] == "\"2\"")
            // The write invalidated the cached copy.
            let afterPatch = try await client.json(.get, "/products/\(id)", token: token)
            #expect(afterPatch.object["stock"] as? Int == 4)
            #expect(afterPatch.headers[xCache] == "miss")

            let duplicate = try await client.json(
                .post, "/products", ["sku": "CHAIR-1", "name": "x", "priceMinor": 1, "currency": "EUR"], token: token)
            #expect(duplicate.status == .conflict)
            #expect(duplicate.code == "conflict")

            #expect(try await client.json(.delete, "/products/\(id)", token: token, headers: [.ifMatch: "\"1\""]).status == .preconditionFailed)
            #expect(try await client.json(.delete, "/products/\(id)", token: token).status == .noContent)
            #expect(try await client.json(.get, "/products/\(id)", token: token).status == .notFound)
            #expect(try await client.json(.delete, "/products/\(id)", token: token).status == .notFound)
        }
    }

    @Test(arguments: TestEngine.available)
    func validationNamesEveryBadField(engine: TestEngine) async throws {
        try await withTestApp(engine, owner: "val@example.com") { client, _, token in
            let bad = try await client.json(
                .post, "/products",
                [
                    "sku": "has space", "name": " ", "priceMinor": -1, "currency": "EURO", "category": "", "stock": -5,
                    "attributes": [1, 2],
                ], token: token)
            #expect(bad.status == .badRequest)
            #expect(bad.code == "invalid_input")
            #expect(fields(bad) == ["sku", "name", "priceMinor", "currency", "category", "stock", "attributes"])
            let unknownCurrency = try await client.json(
                .post, "/products", ["sku": "A1", "name": "n", "priceMinor": 1, "currency": "XYZ"], token: token)
            #expect(fields(unknownCurrency) == ["currency"])
            let fractional = try await client.json(
                .post, "/products", ["sku": "A1", "name": "n", "priceMinor": 1.5, "currency": "USD"], token: token)
            #expect(fractional.status == .badRequest)
            // Below the range or beyond 64 bits, a price and a stock are told their own range.
            let range = "must be an integer from 0 to \(ProductRules.maxPrice)"
            for price in ["-1", "1e20", "-1e20", "9223372036854775808"] {
                let body = #"{"sku":"A1","name":"n","priceMinor":\#(price),"currency":"USD"}"#
                let answer = try await client.execute(
                    uri: "/products", method: .post, headers: [.contentType: "application/json", .authorization: "Bearer \(token)"],
                    body: ByteBuffer(string: body))
                #expect(try answer.decode(ProblemBody.self).errors?.map { [$0.field, $0.issue] } == [["priceMinor", range]], "\(price)")
                let stock = try await client.execute(
                    uri: "/products", method: .post, headers: [.contentType: "application/json", .authorization: "Bearer \(token)"],
                    body: ByteBuffer(string: #"{"sku":"A1","name":"n","priceMinor":1,"currency":"USD","stock":\#(price)0}"#))
                #expect(
                    try stock.decode(ProblemBody.self).errors?.map { [$0.field, $0.issue] }
                        == [["stock", "must be an integer from 0 to \(ProductRules.maxStock)"]], "stock \(price)0")
                let patched = try await client.execute(
                    uri: "/products/\(UUIDv7.make())", method: .patch,
                    headers: [.contentType: "application/json", .authorization: "Bearer \(token)"],
                    body: ByteBuffer(string: #"{"priceMinor":\#(price)}"#))
                #expect(try patched.decode(ProblemBody.self).errors?.map { [$0.field, $0.issue] } == [["priceMinor", range]], "PATCH \(price)")
            }
            for currency in ["JPY", "CHF", "USD", "XAU"] {
                try await createProduct(client, token: token, ["currency": currency])
            }
            let list = try await client.json(.get, "/products?limit=0&sort=colour&minPrice=x&cursor=zzz", token: token)
            #expect(fields(list) == ["limit", "sort", "minPrice", "cursor"])
            // A category with a control character was stored, yet `?category=` refuses it, so
            // the product could never be found by it: refused at write, by POST and PATCH.
            for category in ["tab\there", "bell\u{7}", "line\nbreak", "del\u{7F}"] {
                let created = try await client.json(
                    .post, "/products", ["sku": "CC-1", "name": "n", "priceMinor": 1, "currency": "EUR", "category": category], token: token)
                #expect(created.status == .badRequest, "\(category.debugDescription): \(created.text)")
                #expect(fields(created) == ["category"], "\(category.debugDescription)")
            }
            let plain = try #require(try await createProduct(client, token: token, ["sku": "CC-2", "category": "plain"])["id"] as? String)
            let patched = try await client.json(.patch, "/products/\(plain)", ["category": "a\u{1B}b"], token: token)
            #expect(patched.status == .badRequest, "\(patched.text)")
            #expect(fields(patched) == ["category"])
        }
    }

    @Test(arguments: TestEngine.available)
    func writesAreForAdminsAndTenantsAreIsolated(engine: TestEngine) async throws {
        try await withTestApp(engine, owner: "own@example.com") { client, _, token in
            let product = try await createProduct(client, token: token, ["sku": "MINE"])
            let id = try #require(product["id"] as? String)
            let member = try await client.addUser(email: "mem@example.com", token: token).tokens.accessToken
            #expect(try await client.json(.get, "/products/\(id)", token: member).status == .ok)
            #expect(
                try await client.json(.post, "/products", ["sku": "X", "name": "x", "priceMinor": 1, "currency": "EUR"], token: member).status
                    == .forbidden)
            #expect(try await client.json(.patch, "/products/\(id)", ["stock": 1], token: member).status == .forbidden)
            #expect(try await client.json(.delete, "/products/\(id)", token: member).status == .forbidden)

            let (other, _) = try await owner(client, "other@example.com")
            #expect(try await client.json(.get, "/products/\(id)", token: other).status == .notFound)
            #expect(try await client.json(.get, "/products/by-sku/MINE", token: other).status == .notFound)
            #expect(try await client.json(.patch, "/products/\(id)", ["stock": 1], token: other).status == .notFound)
            #expect(try await client.json(.delete, "/products/\(id)", token: other).status == .notFound)
            #expect(skus(try await client.json(.get, "/products", token: other)).isEmpty)
            // The same SKU in another tenant is fine.
            try await createProduct(client, token: other, ["sku": "MINE"])
        }
    }

    /// `priceMinor: 1.5` names the field (it used to be `invalid_json` with none), and an
    /// empty PATCH moves neither the version nor `updatedAt`.
    @Test(arguments: TestEngine.available)
    func fractionalPriceNamesTheFieldAndEmptyPatchKeepsTheVersion(engine: TestEngine) async throws {
        try await withTestApp(engine, owner: "frac@example.com") { client, _, token in
            let fraction = try await client.json(
                .post, "/products", ["sku": "F-1", "name": "F", "priceMinor": 1.5, "currency": "EUR"], token: token)
            #expect(fraction.status == .badRequest)
            let problem = try fraction.decode(ProblemBody.self)
            #expect(problem.code == "invalid_input")
            #expect(problem.errors?.map { [$0.field, $0.issue] } == [["priceMinor", "must be an integer"]])
            let created = try await client.json(.post, "/products", ["sku": "F-2", "name": "F", "priceMinor": 150, "currency": "EUR"], token: token)
            #expect(created.status == .created)
            let id = try #require(created.object["id"] as? String)
            let empty = try await client.json(.patch, "/products/\(id)", [String: Any](), token: token, headers: [.ifMatch: "\"1\""])
            #expect(empty.status == .ok)
            #expect(empty.headers[.eTag] == "\"1\"")
            #expect(empty.object["updatedAt"] as? String == created.object["updatedAt"] as? String)
            #expect(try await client.json(.get, "/products/\(id)", token: token).headers[.eTag] == "\"1\"")
        }
    }
}

// MARK: - Lists

@Suite("Catalog: lists, filters, search")
struct ProductListTests {
    @Test(arguments: TestEngine.available)
    func filtersSortAndFullTextSearch(engine: TestEngine) async throws {
        try await withTestApp(engine, owner: "list@example.com") { client, _, token in
            try await createProduct(
                client, token: token, ["sku": "A", "name": "Oak Chair", "description": "sturdy seat", "priceMinor": 5000, "category": "furniture"])
            try await createProduct(
                client, token: token,
                ["sku": "B", "name": "Steel Lamp", "description": "bright light for a desk", "priceMinor": 2000, "category": "lighting"])
            try await createProduct(
                client, token: token,
                ["sku": "C", "name": "Bamboo Desk", "description": "a desk of bamboo", "priceMinor": 9000, "category": "furniture"])
            try await createProduct(
                client, token: token, ["sku": "D", "name": "Café Mug", "description": "Zürich edition", "priceMinor": 800, "category": "kitchen"])

            #expect(skus(try await client.json(.get, "/products", token: token)) == ["C", "D", "A", "B"])
            #expect(skus(try await client.json(.get, "/products?sort=-name", token: token)) == ["B", "A", "D", "C"])
            #expect(skus(try await client.json(.get, "/products?sort=price", token: token)) == ["D", "B", "A", "C"])
            #expect(skus(try await client.json(.get, "/products?sort=-price", token: token)) == ["C", "A", "B", "D"])
            #expect(skus(try await client.json(.get, "/products?category=furniture&sort=price", token: token)) == ["A", "C"])
            #expect(skus(try await client.json(.get, "/products?minPrice=2000&maxPrice=5000&sort=price", token: token)) == ["B", "A"])
            #expect(Set(skus(try await client.json(.get, "/products?q=desk", token: token))) == ["B", "C"])
            #expect(skus(try await client.json(.get, "/products?q=DESK%20bamboo", token: token)) == ["C"])
            #expect(skus(try await client.json(.get, "/products?q=z%C3%BCrich", token: token)) == ["D"])
            #expect(skus(try await client.json(.get, "/products?q=desk&category=lighting", token: token)) == ["B"])
            // FTS syntax in the query is only text.
            #expect(skus(try await client.json(.get, "/products?q=%22desk%22%20OR%20*", token: token)).count <= 2)
            #expect(skus(try await client.json(.get, "/products?q=%2B%2B%2B", token: token)).isEmpty)
            #expect(skus(try await client.json(.get, "/products?q=nothing", token: token)).isEmpty)
        }
    }

    /// Issue 20: search ignores accents both ways (`q=creme` finds "Café crème", `q=crème`
    /// finds "Creme brulee"), in any case, and in decomposed text (`e` + U+0301) too.
    @Test(arguments: TestEngine.available)
    func fullTextSearchIgnoresAccentsBothWays(engine: TestEngine) async throws {
        try await withTestApp(engine, owner: "accents@example.com") { client, _, token in
            try await createProduct(client, token: token, ["sku": "CAFE", "name": "Café crème", "description": "Douce et légère"])
            try await createProduct(client, token: token, ["sku": "PLAIN", "name": "Creme brulee", "description": "Naive recipe"])
            try await createProduct(client, token: token, ["sku": "NFD", "name": "Nai\u{0308}ve Tee", "description": "Ångström blend"])
            try await createProduct(client, token: token, ["sku": "OTHER", "name": "Oak chair"])
            func search(_ query: String) async throws -> Set<String> {
                let encoded = try #require(query.addingPercentEncoding(withAllowedCharacters: .alphanumerics))
                return Set(skus(try await client.json(.get, "/products?q=\(encoded)", token: token)))
            }
            #expect(try await search("creme") == ["CAFE", "PLAIN"])
            #expect(try await search("crème") == ["CAFE", "PLAIN"])
            #expect(try await search("CRÈME") == ["CAFE", "PLAIN"])
            #expect(try await search("cafe creme") == ["CAFE"])
            #expect(try await search("legere") == ["CAFE"])
            #expect(try await search("brûlée") == ["PLAIN"])
            #expect(try await search("naïve") == ["PLAIN", "NFD"])
            #expect(try await search("nai\u{0308}ve") == ["PLAIN", "NFD"])
            #expect(try await search("angstrom") == ["NFD"])
        }
    }

    /// Products written before the accent-folding migration are found by it too: SQLite's
    /// index is rebuilt, PostgreSQL's generated column recomputed.
    @Test(arguments: TestEngine.available)
    func theAccentMigrationReindexesExistingProducts(engine: TestEngine) async throws {
        try await withOpenDatabase(engine) { database, _ in
            let before = CatalogMigrations.all.filter { $0.version < 4 }
            try await Migrator(database: database, migrations: before, logger: testLogger).migrate()
            let store = ProductStore(database: database)
            let tenantId = UUIDv7.make()
            try await store.insert(
                Product(
                    id: UUIDv7.make(), tenantId: tenantId, sku: "OLD", name: "Café crème", description: nil, priceMinor: 1, currency: "EUR",
                    category: nil, stock: 0, attributes: "{}", version: 1, createdAt: 0, updatedAt: 0))
            func found(_ query: String) async throws -> [String] {
                try await store.list(
                    tenantId: tenantId, filter: ProductFilter(query: query), sort: .name, descending: false, limit: 10, after: nil
                ).items.map(\.sku)
            }
            #expect(try await found("creme").isEmpty, "accents mattered before the migration")
            try await Migrator(database: database, migrations: CatalogMigrations.all, logger: testLogger).migrate()
            #expect(try await found("creme") == ["OLD"])
            #expect(try await found("café") == ["OLD"])
        }
    }

    @Test(arguments: TestEngine.available)
    func keysetCursorIsStableUnderInserts(engine: TestEngine) async throws {
        try await withTestApp(engine, owner: "pages@example.com") { client, _, token in
            for index in 0..<10 {
                try await createProduct(client, token: token, ["sku": "P\(index)", "name": "Item \(index)", "priceMinor": 100 * (index % 4)])
            }
            for sort in ["name", "-name", "price", "-price", "updatedAt", "-updatedAt"] {
                var seen: [String] = []
                var cursor: String?
                var inserted = false
                repeat {
                    let path = "/products?limit=3&sort=\(sort)" + (cursor.map { "&cursor=\($0)" } ?? "")
                    let page = try await client.json(.get, path, token: token)
                    #expect(page.status == .ok)
                    seen += skus(page)
                    cursor = page.object["nextCursor"] as? String
                    if !inserted {
                        // A row sorting before the cursor must not shift or repeat later rows.
                        try await createProduct(client, token: token, ["sku": "NEW-\(sort)", "name": "AAA first", "priceMinor": 0])
                        inserted = true
                    }
                } while cursor != nil
                #expect(Set(seen).count == seen.count, "repeated rows for \(sort)")
                #expect(Set(seen).isSuperset(of: (0..<10).map { "P\($0)" }), "missing rows for \(sort)")
            }
            let mismatched = try await client.json(.get, "/products?limit=3&sort=name", token: token)
            let cursor = try #require(mismatched.object["nextCursor"] as? String)
            #expect(try await client.json(.get, "/products?sort=price&cursor=\(cursor)", token: token).status == .badRequest)
        }
    }
}

// MARK: - Cache

@Suite("Catalog: cache and single-flight")
struct CatalogCacheTests {
    @Test(arguments: TestEngine.available)
    func hundredConcurrentMissesMakeOneDatabaseRead(engine: TestEngine) async throws {
        // The one read all 100 requests share must fit in the read budget (2 s by default),
        // which a loaded machine can exceed: this test is about single flight, not the budget.
        try await withTestApp(engine, owner: "flight@example.com", configure: { $0.catalog.readTimeout = .seconds(60) }) {
            client, components, token in
            let id = try #require(try await createProduct(client, token: token, [:])["id"] as? String)
            // Every read now takes 300 ms, so all 100 requests miss while the first read runs.
            components.catalog.setReadDelayForTesting(.milliseconds(300))
            let before = components.catalog.databaseReads
            let statuses = try await withThrowingTaskGroup(of: (HTTPResponse.Status, String?).self) { group in
                for _ in 0..<100 {
                    group.addTask {
                        let response = try await client.json(.get, "/products/\(id)", token: token)
                        return (response.status, response.headers[xCache])
                    }
                }
                var all: [(HTTPResponse.Status, String?)] = []
                for try await result in group { all.append(result) }
                return all
            }
            #expect(statuses.allSatisfy { $0.0 == .ok }, "\(Set(statuses.map { "\($0.0)" }))")
            #expect(components.catalog.databaseReads - before == 1)
            #expect(statuses.filter { $0.1 == "miss" }.count > 1)
            let metrics = try await client.json(.get, "/metrics").text
            #expect(metrics.contains("cairn_catalog_db_reads_total"))
            #expect(metrics.contains("cairn_catalog_cache_requests_total"))
            #expect(metrics.contains("cairn_catalog_cache_hit_ratio"))
            #expect(metrics.contains("cairn_catalog_circuits_open"))
        }
    }

    @Test(arguments: TestEngine.available)
    func listPagesAreCachedAndInvalidatedByWrites(engine: TestEngine) async throws {
        try await withTestApp(engine, owner: "lists@example.com") { client, _, token in
            try await createProduct(client, token: token, ["sku": "L1"])
            let first = try await client.json(.get, "/products", token: token)
            #expect(first.headers[xCache] == "miss")
            let second = try await client.json(.get, "/products", token: token)
            #expect(second.headers[xCache] == "hit")
            #expect(second.text == first.text)
            try await createProduct(client, token: token, ["sku": "L2"])
            let third = try await client.json(.get, "/products", token: token)
            #expect(third.headers[xCache] == "miss")
            #expect(Set(skus(third)) == ["L1", "L2"])
        }
    }

    /// Node B caches a product and a list; a write on node A reaches B as an invalidation
    /// (LISTEN/NOTIFY), awaited as it is applied, after which B reads the new value.
    @Test(.enabled(if: TestEngine.postgresBaseURL != nil))
    func writesOnOneNodeInvalidateTheOtherNodesCache() async throws {
        try await withTestDatabase(.postgres, configure: { $0.catalog.cacheTTL = .seconds(3600) }) { database in
            try await withTestApp(on: database) { a in
                try await withTestApp(on: database) { b in
                    let listening = Observed(false)
                    let invalidated = Observed<[String]>([])
                    let listenerA = Task { await a.components.catalog.listenForInvalidations() }
                    let listenerB = Task {
                        await b.components.catalog.listenForInvalidations(
                            onListening: { listening.update { $0 = true } }, onInvalidation: { tenant in invalidated.update { $0.append(tenant) } })
                    }
                    defer {
                        listenerA.cancel()
                        listenerB.cancel()
                    }
                    // B's LISTEN connection comes up asynchronously: the writes start once it is in effect.
                    try await listening.wait("node B listening for invalidations") { $0 }
                    let (token, tenantId) = try await owner(a.client, "nodes@example.com")
                    let heard = { @Sendable (tenants: [String]) in tenants.filter { $0 == tenantId }.count }
                    let id = try #require(try await createProduct(a.client, token: token, ["stock": 1])["id"] as? String)
                    // The create's own invalidation reaches B before B caches anything.
                    try await invalidated.wait("the create reaching node B") { heard($0) >= 1 }
                    // B's pool opens its connections before the reads measured below: a cold
                    // connection on a loaded machine can outlast the 2 s a session check may take.
                    _ = try await b.database.read { db in try await db.raw("SELECT 1 AS one").all() }
                    let first = try await b.client.json(.get, "/products/\(id)", token: token)
                    #expect(first.headers[xCache] == "miss", "\(first.status) \(first.text)")
                    let second = try await b.client.json(.get, "/products/\(id)", token: token)
                    #expect(second.headers[xCache] == "hit", "\(second.status) \(second.text)")
                    #expect(try await b.client.json(.get, "/products", token: token).headers[xCache] == "miss")
                    let patched = try await a.client.json(.patch, "/products/\(id)", ["stock": 2], token: token)
                    #expect(patched.status == .ok)
                    try await invalidated.wait("node A's write reaching node B") { heard($0) >= 2 }
                    let read = try await b.client.json(.get, "/products/\(id)", token: token)
                    #expect(read.object["stock"] as? Int == 2)
                    #expect(read.headers[xCache] == "miss")
                    let list = try await b.client.json(.get, "/products", token: token)
                    #expect(items(list).first?["stock"] as? Int == 2)
                }
            }
        }
    }
}
