import CairnHTTP
package import CairnStorage
import Foundation
import SQLKit

/// How a product list is ordered: a column, ascending or descending, with `id` as tie-breaker.
package enum ProductSort: String, Sendable, CaseIterable {
    case name, price, updatedAt

    var column: String {
        switch self {
        case .name: "name"
        case .price: "price_minor"
        case .updatedAt: "updated_at"
        }
    }
}

/// Filters shared by `GET /products` and `GET /reports/products.csv`.
package struct ProductFilter: Sendable, Equatable {
    /// Exact category.
    package var category: String?
    /// Lowest price in minor units, inclusive.
    package var minPrice: Int64?
    /// Highest price in minor units, inclusive.
    package var maxPrice: Int64?
    /// Full-text query over name and description: every word must occur.
    package var query: String?

    /// Creates a filter (nil fields do not filter).
    package init(category: String? = nil, minPrice: Int64? = nil, maxPrice: Int64? = nil, query: String? = nil) {
        self.category = category
        self.minPrice = minPrice
        self.maxPrice = maxPrice
        self.query = query
    }

    /// A stable text form, for cache keys.
    var cacheKey: String {
        "\(category ?? "")\u{1F}\(minPrice.map(String.init) ?? "")\u{1F}\(maxPrice.map(String.init) ?? "")\u{1F}\(query ?? "")"
    }
}

/// The position after which a keyset page starts: the sort value and id of the last row shown.
package struct ProductCursor: Sendable, Equatable {
    /// The sort the cursor belongs to (a cursor of another sort is rejected).
    package var sort: ProductSort
    /// Descending or not.
    package var descending: Bool
    /// The sort column's value in the last row: text for names, digits for numbers.
    package var value: String
    /// The id of the last row.
    package var id: String

    private static let prefix = "p1"

    /// Opaque base64url text.
    package var encoded: String {
        Base64URL.encode(Array("\(Self.prefix)\n\(sort.rawValue)\n\(descending ? "d" : "a")\n\(id)\n\(value)".utf8))
    }

    /// Decodes a cursor this server issued, or nil.
    package static func decode(_ text: String) -> ProductCursor? {
        guard text.utf8.count <= 2048, let bytes = Base64URL.decode(text), let plain = String(validating: bytes, as: UTF8.self) else {
            return nil
        }
        let parts = plain.split(separator: "\n", maxSplits: 4, omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 5, parts[0] == prefix, let sort = ProductSort(rawValue: parts[1]), parts[2] == "a" || parts[2] == "d",
            UUIDv7.isValid(parts[3])
        else { return nil }
        if sort != .name, Int64(parts[4]) == nil { return nil }
        return ProductCursor(sort: sort, descending: parts[2] == "d", value: parts[4], id: parts[3])
    }

    /// The cursor after `product` in a list ordered by `sort`.
    static func after(_ product: Product, sort: ProductSort, descending: Bool) -> ProductCursor {
        let value: String
        switch sort {
        case .name: value = product.name
        case .price: value = String(product.priceMinor)
        case .updatedAt: value = String(product.updatedAt)
        }
        return ProductCursor(sort: sort, descending: descending, value: value, id: product.id)
    }
}

/// Dialect-specific full-text search: turns a user's query into a SQL condition on `products`.
protocol ProductSearch: Sendable {
    /// A condition that holds for rows matching every word of `query`, or nil when the query
    /// has no searchable word (such a query matches nothing).
    func condition(for query: String) -> SQLQueryString?
}

/// Words of a query: runs of letters and digits (what both engines' tokenizers index).
func searchWords(_ query: String) -> [String] {
    query.split(whereSeparator: { !($0.isLetter || $0.isNumber) }).map { $0.lowercased() }.filter { !$0.isEmpty }.prefix(16).map { $0 }
}

/// SQLite: FTS5 MATCH with every word as a quoted phrase, so no word is read as FTS5 syntax.
struct SQLiteProductSearch: ProductSearch {
    func condition(for query: String) -> SQLQueryString? {
        let words = searchWords(query)
        guard !words.isEmpty else { return nil }
        let match = words.map { "\"" + $0.replacingOccurrences(of: "\"", with: "\"\"") + "\"" }.joined(separator: " ")
        return "rowid IN (SELECT rowid FROM products_fts WHERE products_fts MATCH \(bind: match))"
    }
}

/// PostgreSQL: the generated `search` tsvector (GIN index) against the words' AND-ed lexemes,
/// folded as the column is (``SearchFolding``), so accents are ignored both ways.
struct PostgresProductSearch: ProductSearch {
    func condition(for query: String) -> SQLQueryString? {
        let words = searchWords(query).map(SearchFolding.fold)
        guard !words.isEmpty else { return nil }
        return "search @@ plainto_tsquery('simple', \(bind: words.joined(separator: " ")))"
    }
}

/// Accent folding for full-text search, the same on both engines: a Latin letter with
/// diacritics becomes its base letter (`é` → `e`, `Ǻ` → `A`) and combining marks
/// (U+0300–U+036F, from decomposed text) are dropped. SQLite's FTS5 tokenizer
/// `unicode61 remove_diacritics 2` does this itself; PostgreSQL gets this map as a
/// `translate()` in its generated search column and queries are folded in Swift, which needs
/// no extension (`unaccent` is not `IMMUTABLE`, so it cannot feed a generated column, and is
/// not installed everywhere).
enum SearchFolding {
    /// Accented letters of U+00C0–U+024F and U+1E00–U+1EFF with their base letters: those whose
    /// canonical decomposition is an ASCII letter followed by combining marks, adjusted to
    /// FTS5's own table (which keeps `Ǡ ǡ` and folds the long s `ſ ẛ` to `s`).
    static let pairs: [(accented: Unicode.Scalar, base: Unicode.Scalar)] = {
        var pairs: [(Unicode.Scalar, Unicode.Scalar)] = []
        for value in Array(0xC0...0x24F) + Array(0x1E00...0x1EFF) where value != 0x1E0 && value != 0x1E1 {
            guard let scalar = Unicode.Scalar(value) else { continue }
            let parts = Array(String(Character(scalar)).decomposedStringWithCanonicalMapping.unicodeScalars)
            guard parts.count > 1, parts[0].isASCII, parts[0].properties.isAlphabetic,
                parts.dropFirst().allSatisfy({ combiningMarks.contains($0.value) })
            else { continue }
            pairs.append((scalar, parts[0]))
        }
        return pairs + [("\u{17F}", "s"), ("\u{1E9B}", "s")]
    }()

    /// The combining diacritical marks, dropped.
    static let combiningMarks: ClosedRange<UInt32> = 0x300...0x36F

    private static let bases: [Unicode.Scalar: Unicode.Scalar] = Dictionary(pairs.map { ($0.accented, $0.base) }) { first, _ in first }

    /// `word` with accents folded (see the type).
    static func fold(_ word: String) -> String {
        var folded = String.UnicodeScalarView()
        for scalar in word.unicodeScalars where !combiningMarks.contains(scalar.value) { folded.append(bases[scalar] ?? scalar) }
        return String(folded)
    }

    /// `translate(text, from, to)` of PostgreSQL doing ``fold(_:)``: the accented letters then
    /// the combining marks in `from`, their bases in `to` (characters of `from` past the end
    /// of `to` are deleted). Neither holds a quote, so both go into SQL as literals.
    static func translateSQL(_ text: String) -> String {
        var from = String.UnicodeScalarView(pairs.map(\.accented))
        from.append(contentsOf: combiningMarks.compactMap(Unicode.Scalar.init))
        let to = String.UnicodeScalarView(pairs.map(\.base))
        return "translate(\(text), '\(String(from))', '\(String(to))')"
    }
}

/// A validated change to a product; nil fields stay as they are.
package struct ProductChange: Sendable {
    /// New SKU.
    package var sku: String?
    /// New name.
    package var name: String?
    /// New description; `.some(nil)` clears it.
    package var description: String??
    /// New price.
    package var priceMinor: Int64?
    /// New currency.
    package var currency: String?
    /// New category; `.some(nil)` clears it.
    package var category: String??
    /// New stock.
    package var stock: Int64?
    /// New attributes (compact JSON object text).
    package var attributes: String?

    /// Creates an empty change.
    package init() {}

    /// True when the change sets nothing (an empty PATCH `{}`).
    package var isEmpty: Bool {
        sku == nil && name == nil && description == nil && priceMinor == nil && currency == nil && category == nil && stock == nil
            && attributes == nil
    }
}

/// A product column an import may set, besides `sku` (raw values are the JSON field names).
enum ProductColumn: String, CaseIterable, Sendable {
    case name, description, priceMinor, currency, category, stock, attributes

    /// The columns a new product cannot do without.
    static let required: [ProductColumn] = [.name, .priceMinor, .currency]

    /// The SQL column name.
    var sql: String {
        switch self {
        case .priceMinor: "price_minor"
        default: rawValue
        }
    }
}

/// One import row for ``ProductStore/upsert(imported:)``: a product whose `columns` hold the
/// row's values (the others hold defaults or placeholders), and whether it may only update.
struct ProductUpsert: Sendable {
    /// The values; only `sku` and `columns` come from the row.
    var product: Product
    /// The columns the row gives.
    var columns: Set<ProductColumn>
    /// True when the row lacks a required column: it updates an existing product or nothing.
    var updateOnly: Bool
}

/// Product persistence, tenant-scoped in every query.
package struct ProductStore: Sendable {
    let database: Database
    let search: any ProductSearch

    /// Creates a store; full-text search follows the database's dialect.
    package init(database: Database) {
        self.database = database
        self.search = database.dialect == .postgres ? PostgresProductSearch() : SQLiteProductSearch()
    }

    static let columns =
        "id, tenant_id, sku, name, description, price_minor, currency, category, stock, attributes, version, created_at, updated_at"

    static func product(from row: any SQLRow) throws -> Product {
        Product(
            id: try row.decode(column: "id", as: String.self),
            tenantId: try row.decode(column: "tenant_id", as: String.self),
            sku: try row.decode(column: "sku", as: String.self),
            name: try row.decode(column: "name", as: String.self),
            description: try row.decode(column: "description", as: String?.self),
            priceMinor: try row.decode(column: "price_minor", as: Int64.self),
            currency: try row.decode(column: "currency", as: String.self),
            category: try row.decode(column: "category", as: String?.self),
            stock: try row.decode(column: "stock", as: Int64.self),
            attributes: try row.decode(column: "attributes", as: String.self),
            version: try row.decode(column: "version", as: Int.self),
            createdAt: try row.decode(column: "created_at", as: Int64.self),
            updatedAt: try row.decode(column: "updated_at", as: Int64.self))
    }

    /// One product by id, or nil.
    package func get(id: String, tenantId: String) async throws -> Product? {
        guard UUIDv7.isValid(id) else { return nil }
        return try await database.read { db in
            try await db.raw("SELECT \(unsafeRaw: Self.columns) FROM products WHERE id = \(bind: id) AND tenant_id = \(bind: tenantId)")
                .first().map(Self.product(from:))
        }
    }

    /// One product by SKU, or nil.
    package func get(sku: String, tenantId: String) async throws -> Product? {
        guard ProductRules.isValidSKU(sku) else { return nil }
        return try await database.read { db in
            try await db.raw("SELECT \(unsafeRaw: Self.columns) FROM products WHERE sku = \(bind: sku) AND tenant_id = \(bind: tenantId)")
                .first().map(Self.product(from:))
        }
    }

    func filterSQL(tenantId: String, filter: ProductFilter) -> SQLQueryString? {
        var query: SQLQueryString = "tenant_id = \(bind: tenantId)"
        if let category = filter.category { query = query + " AND category = \(bind: category)" }
        if let minPrice = filter.minPrice { query = query + " AND price_minor >= \(bind: minPrice)" }
        if let maxPrice = filter.maxPrice { query = query + " AND price_minor <= \(bind: maxPrice)" }
        if let text = filter.query {
            guard let condition = search.condition(for: text) else { return nil }
            query = query + " AND " + condition
        }
        return query
    }

    /// A keyset page ordered by `sort` then id. The cursor is the last row's (value, id), so a
    /// row inserted before the cursor position never shifts later pages.
    package func list(
        tenantId: String, filter: ProductFilter, sort: ProductSort, descending: Bool, limit: Int, after: ProductCursor?
    ) async throws -> (items: [Product], nextCursor: String?) {
        guard var query = filterSQL(tenantId: tenantId, filter: filter) else { return ([], nil) }
        let column = sort.column
        let direction = descending ? "DESC" : "ASC"
        if let after {
            let comparison = descending ? "<" : ">"
            let value: any Encodable & Sendable = sort == .name ? after.value : (Int64(after.value) ?? 0)
            query = query + " AND (\(unsafeRaw: column), id) \(unsafeRaw: comparison) (\(bind: value), \(bind: after.id))"
        }
        let statement: SQLQueryString =
            "SELECT \(unsafeRaw: Self.columns) FROM products WHERE " + query
            + " ORDER BY \(unsafeRaw: column) \(unsafeRaw: direction), id \(unsafeRaw: direction) LIMIT \(bind: limit + 1)"
        let rows = try await database.read { db in try await db.raw(statement).all() }
        var items = try rows.map(Self.product(from:))
        var next: String?
        if items.count > limit {
            items.removeLast(items.count - limit)
            next = items.last.map { ProductCursor.after($0, sort: sort, descending: descending).encoded }
        }
        return (items, next)
    }

    /// Up to `limit` products matching `filter`, in ascending id order after `after`: keyset
    /// batches for streaming readers (reports); every call is one short read.
    package func batch(tenantId: String, filter: ProductFilter, after: String?, limit: Int) async throws -> [Product] {
        guard var query = filterSQL(tenantId: tenantId, filter: filter) else { return [] }
        if let after { query = query + " AND id > \(bind: after)" }
        let statement: SQLQueryString = "SELECT \(unsafeRaw: Self.columns) FROM products WHERE " + query + " ORDER BY id ASC LIMIT \(bind: limit)"
        let rows = try await database.read { db in try await db.raw(statement).all() }
        return try rows.map(Self.product(from:))
    }

    static func values(_ product: Product) -> SQLQueryString {
        """
        (\(bind: product.id), \(bind: product.tenantId), \(bind: product.sku), \(bind: product.name), \(bind: product.description),
        \(bind: product.priceMinor), \(bind: product.currency), \(bind: product.category), \(bind: product.stock),
        \(bind: product.attributes), \(bind: product.version), \(bind: product.createdAt), \(bind: product.updatedAt))
        """
    }

    /// Inserts a product.
    /// - Throws: 409 `conflict` when the SKU is taken in the tenant.
    package func insert(_ product: Product) async throws {
        do {
            try await database.write { db in
                try await db.raw("INSERT INTO products (\(unsafeRaw: Self.columns)) VALUES \(Self.values(product))").run()
            }
        } catch  where Database.isUniqueViolation(error) {
            throw AppError.conflict("A product with SKU \(product.sku) already exists.")
        }
    }

    /// Applies a change when the version matches (any when nil); nil when the product is
    /// missing or its version moved on.
    /// - Throws: 409 `conflict` when a new SKU is taken.
    package func update(id: String, tenantId: String, expectedVersion: Int?, change: ProductChange) async throws -> Product? {
        guard UUIDv7.isValid(id) else { return nil }
        let row = VersionedRow(table: "products", id: id, tenantId: tenantId, expectedVersion: expectedVersion)
        // Nothing to change (PATCH `{}`): no write, so `version`, `ETag` and `updatedAt` stay;
        // `If-Match` still applies.
        if change.isEmpty { return row.unchanged(try await get(id: id, tenantId: tenantId)) }
        let now = WallClock.milliseconds()
        do {
            return try await database.write { db in
                // Values equal to the stored ones change nothing: the version and `updatedAt` stay.
                var sets = VersionedAssignments()
                if let sku = change.sku { sets.set("sku", sku) }
                if let name = change.name { sets.set("name", name) }
                if let description = change.description { sets.set("description", description) }
                if let price = change.priceMinor { sets.set("price_minor", price) }
                if let currency = change.currency { sets.set("currency", currency) }
                if let category = change.category { sets.set("category", category) }
                if let stock = change.stock { sets.set("stock", stock) }
                if let attributes = change.attributes { sets.set("attributes", attributes) }
                return try await db.raw(row.update(sets, now: now, returning: Self.columns)).first().map(Self.product(from:))
            }
        } catch  where Database.isUniqueViolation(error) {
            throw AppError.conflict("Another product already has that SKU.")
        }
    }

    /// Deletes a product when the version matches (any when nil); false when nothing was deleted.
    package func delete(id: String, tenantId: String, expectedVersion: Int?) async throws -> Bool {
        guard UUIDv7.isValid(id) else { return false }
        let row = VersionedRow(table: "products", id: id, tenantId: tenantId, expectedVersion: expectedVersion)
        return try await database.write { db in try await db.raw(row.delete()).first() != nil }
    }

    /// Inserts or updates products by (tenant, SKU) in one transaction, multi-row statements of
    /// at most 500 rows: a changed row keeps its id and creation time and gets a new version (an
    /// unchanged one is left as it is).
    /// Used by imports and `cairn seed`.
    package func upsert(_ products: [Product]) async throws {
        guard !products.isEmpty else { return }
        try await database.transaction { db in
            for chunk in products.chunks(of: 500) {
                try await db.raw(
                    """
                    INSERT INTO products (\(unsafeRaw: Self.columns)) VALUES \(SQLList(chunk.map(Self.values)))
                    ON CONFLICT (tenant_id, sku) DO UPDATE SET name = excluded.name, description = excluded.description,
                        price_minor = excluded.price_minor, currency = excluded.currency, category = excluded.category,
                        stock = excluded.stock, attributes = excluded.attributes, updated_at = excluded.updated_at,
                        version = products.version + 1
                    WHERE \(unsafeRaw: Self.differs(ProductColumn.allCases))
                    """
                ).run()
            }
        }
    }

    /// The `DO UPDATE ... WHERE` condition of an upsert writing `columns`: true when one of them
    /// differs from the stored product, so a row equal to it writes nothing and its version and
    /// `updatedAt` stay.
    static func differs(_ columns: [ProductColumn]) -> String {
        // A row of only a SKU changes nothing.
        guard !columns.isEmpty else { return "(1 = 0)" }
        return "(" + columns.map { "products.\($0.sql) IS DISTINCT FROM excluded.\($0.sql)" }.joined(separator: " OR ") + ")"
    }

    /// Upserts import rows by (tenant, SKU) in one transaction, setting on an existing product
    /// only the columns each row gives (a new product takes the defaults for the others: no
    /// description or category, stock 0, attributes `{}`). Rows with the same set of columns
    /// share multi-row statements of at most 500 rows; no SKU may occur twice in `rows`.
    /// - Returns: the SKUs of update-only rows that match no product: nothing was written for
    ///   them (a row without a required column cannot create one).
    func upsert(imported rows: [ProductUpsert]) async throws -> Set<String> {
        guard !rows.isEmpty else { return [] }
        let dialect = database.dialect
        return try await database.transaction { db in
            var missing = Set<String>()
            let updateOnly = rows.filter(\.updateOnly)
            if let tenantId = updateOnly.first?.product.tenantId {
                // Locked on PostgreSQL so that no product found here is deleted before the
                // statements below update it (which would insert the row's placeholders).
                let lock = dialect == .postgres ? " FOR UPDATE" : ""
                let found = try await db.raw(
                    """
                    SELECT sku FROM products WHERE tenant_id = \(bind: tenantId)
                        AND sku IN (\(SQLList(updateOnly.map { SQLBind($0.product.sku) })))\(unsafeRaw: lock)
                    """
                ).all().map { try $0.decode(column: "sku", as: String.self) }
                missing = Set(updateOnly.map(\.product.sku)).subtracting(found)
            }
            let writable = rows.filter { !($0.updateOnly && missing.contains($0.product.sku)) }
            let groups = Dictionary(grouping: writable) { $0.columns.map(\.rawValue).sorted() }
            for (_, group) in groups.sorted(by: { $0.key.lexicographicallyPrecedes($1.key) }) {
                let sets = ProductColumn.allCases.filter(group[0].columns.contains).map { "\($0.sql) = excluded.\($0.sql)" }
                let updates =
                    (sets + ["updated_at = excluded.updated_at", "version = products.version + 1"]).joined(separator: ", ")
                    + " WHERE " + Self.differs(ProductColumn.allCases.filter(group[0].columns.contains))
                for chunk in group.chunks(of: 500) {
                    try await db.raw(
                        """
                        INSERT INTO products (\(unsafeRaw: Self.columns)) VALUES \(SQLList(chunk.map { Self.values($0.product) }))
                        ON CONFLICT (tenant_id, sku) DO UPDATE SET \(unsafeRaw: updates)
                        """
                    ).run()
                }
            }
            return missing
        }
    }

    /// Stores an import's body until its job has run; returns its id.
    func saveImport(tenantId: String, format: String, body: String) async throws -> String {
        let id = UUIDv7.make()
        try await database.write { db in
            try await db.raw(
                """
                INSERT INTO product_imports (id, tenant_id, format, body, created_at)
                VALUES (\(bind: id), \(bind: tenantId), \(bind: format), \(bind: body), \(bind: WallClock.milliseconds()))
                """
            ).run()
        }
        return id
    }

    /// An import's format and body, or nil when gone.
    func loadImport(id: String, tenantId: String) async throws -> (format: String, body: String)? {
        try await database.read { db in
            guard
                let row = try await db.raw(
                    "SELECT format, body FROM product_imports WHERE id = \(bind: id) AND tenant_id = \(bind: tenantId)"
                ).first()
            else { return nil }
            return (try row.decode(column: "format", as: String.self), try row.decode(column: "body", as: String.self))
        }
    }

    /// Forgets an import's body once it has been applied.
    func deleteImport(id: String) async throws {
        try await database.write { db in try await db.raw("DELETE FROM product_imports WHERE id = \(bind: id)").run() }
    }
}
