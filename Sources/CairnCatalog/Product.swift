package import CairnHTTP
package import CairnStorage
import Foundation

/// A product of a tenant's catalog. Money is integer minor units plus an ISO 4217 code.
///
/// As JSON: `{id, sku, name, description, priceMinor, currency, category, stock, attributes, version, createdAt, updatedAt}`.
@MemberwiseInit
@JSONObject
package struct Product: Sendable, Equatable, Versioned, JSONWritable {
    /// UUIDv7.
    package var id: String
    /// Owning tenant (never shown to clients).
    @JSONSkip package var tenantId: String
    /// Stock keeping unit, unique per tenant: 1–64 of `A-Z a-z 0-9 . _ -`, starting alphanumeric.
    package var sku: String
    /// Trimmed, 1–200 characters.
    package var name: String
    /// Up to 10,000 characters, or nil.
    package var description: String?
    /// Price in minor units of `currency` (cents for EUR), 0...10^15.
    package var priceMinor: Int64
    /// ISO 4217 alphabetic code, upper case.
    package var currency: String
    /// Up to 100 characters, or nil.
    package var category: String?
    /// Units in stock, 0...10^12.
    package var stock: Int64
    /// A JSON object as compact text (at most 16 KiB).
    @JSONText package var attributes: String
    /// Row version, the `ETag`.
    package var version: Int
    /// Epoch milliseconds.
    @JSONTimestamp package var createdAt: Int64
    /// Epoch milliseconds.
    @JSONTimestamp package var updatedAt: Int64
}

/// Field rules shared by the HTTP API and the importer.
package enum ProductRules {
    /// Longest name, in Unicode scalars.
    package static let maxName = 200
    /// Longest description, in Unicode scalars.
    package static let maxDescription = 10_000
    /// Longest category, in Unicode scalars.
    package static let maxCategory = 100
    /// Highest price in minor units.
    package static let maxPrice: Int64 = 1_000_000_000_000_000
    /// Highest stock.
    package static let maxStock: Int64 = 1_000_000_000_000
    /// The ranges of a product's integer fields, for the body decoder's messages.
    static let integerRanges: [String: ClosedRange<Int64>] = ["priceMinor": 0...maxPrice, "stock": 0...maxStock]
    /// Largest attributes object, in UTF-8 bytes of its compact JSON text.
    package static let maxAttributesBytes = 16 * 1024

    /// True for 1–64 of `A-Z a-z 0-9 . _ -` starting with a letter or digit.
    package static func isValidSKU(_ sku: String) -> Bool {
        let bytes = Array(sku.utf8)
        guard (1...64).contains(bytes.count) else { return false }
        func alphanumeric(_ byte: UInt8) -> Bool {
            (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
        }
        guard alphanumeric(bytes[0]) else { return false }
        return bytes.allSatisfy { alphanumeric($0) || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: "-") }
    }

    /// The trimmed name, or nil (with an issue) when empty or too long.
    package static func name(_ raw: String, into issues: inout [FieldIssue]) -> String? {
        let name = raw.trimmingCharacters(in: .whitespacesAndNewlines)
        guard (1...maxName).contains(TextSafety.length(name)) else {
            issues.append(FieldIssue(field: "name", issue: "must be 1 to \(maxName) characters after trimming"))
            return nil
        }
        return name
    }

    /// Checks every field of a complete product, appending issues.
    package static func check(_ product: Product, into issues: inout [FieldIssue]) {
        checkSKU(product.sku, into: &issues)
        checkDescription(product.description, into: &issues)
        checkPrice(product.priceMinor, into: &issues)
        checkCurrency(product.currency, into: &issues)
        checkCategory(product.category, into: &issues)
        checkStock(product.stock, into: &issues)
        checkAttributesSize(product.attributes, into: &issues)
    }

    // One check per field, shared by creation, PATCH and imports: each appends its issue when
    // the value breaks the rule and answers whether it holds.

    /// `sku`: see ``isValidSKU(_:)``.
    @discardableResult package static func checkSKU(_ sku: String, into issues: inout [FieldIssue]) -> Bool {
        rule(isValidSKU(sku), "sku", "must be 1 to 64 of A-Z a-z 0-9 . _ - starting with a letter or digit", &issues)
    }

    /// `description`: at most ``maxDescription`` characters, or nil.
    @discardableResult package static func checkDescription(_ description: String?, into issues: inout [FieldIssue]) -> Bool {
        rule(TextSafety.length(description ?? "") <= maxDescription, "description", "must be at most \(maxDescription) characters", &issues)
    }

    /// `priceMinor`: 0 to ``maxPrice``.
    @discardableResult package static func checkPrice(_ price: Int64, into issues: inout [FieldIssue]) -> Bool {
        rule((0...maxPrice).contains(price), "priceMinor", "must be an integer from 0 to \(maxPrice)", &issues)
    }

    /// `currency`: an ISO 4217 code.
    @discardableResult package static func checkCurrency(_ currency: String, into issues: inout [FieldIssue]) -> Bool {
        rule(ISO4217.codes.contains(currency), "currency", "must be an ISO 4217 currency code such as EUR or USD", &issues)
    }

    /// `category`: 1 to ``maxCategory`` characters without control characters (Unicode Cc), or
    /// nil. The `?category=` filter refuses control characters, so a category holding one
    /// could be stored but never found: it is refused here too.
    @discardableResult package static func checkCategory(_ category: String?, into issues: inout [FieldIssue]) -> Bool {
        rule(
            category.map { isValidCategory($0) } ?? true, "category",
            "must be 1 to \(maxCategory) characters without control characters, or null", &issues)
    }

    /// Whether `category` is 1 to ``maxCategory`` characters without control characters: the
    /// one rule of stored categories and of the `?category=` filter.
    package static func isValidCategory(_ category: String) -> Bool {
        (1...maxCategory).contains(TextSafety.length(category))
            && !category.unicodeScalars.contains(where: { $0.properties.generalCategory == .control })
    }

    /// `stock`: 0 to ``maxStock``.
    @discardableResult package static func checkStock(_ stock: Int64, into issues: inout [FieldIssue]) -> Bool {
        rule((0...maxStock).contains(stock), "stock", "must be an integer from 0 to \(maxStock)", &issues)
    }

    /// `attributes`: at most ``maxAttributesBytes`` bytes of compact JSON text.
    @discardableResult package static func checkAttributesSize(_ attributes: String, into issues: inout [FieldIssue]) -> Bool {
        rule(attributes.utf8.count <= maxAttributesBytes, "attributes", "must be at most \(maxAttributesBytes) bytes of JSON", &issues)
    }

    private static func rule(_ holds: Bool, _ field: String, _ issue: String, _ issues: inout [FieldIssue]) -> Bool {
        if !holds { issues.append(FieldIssue(field: field, issue: issue)) }
        return holds
    }

    /// Compact JSON text of an attributes value, or nil (with an issue) unless it is an object.
    package static func attributes(_ value: JSONValue, into issues: inout [FieldIssue]) -> String? {
        guard case .object = value else {
            issues.append(FieldIssue(field: "attributes", issue: "must be a JSON object"))
            return nil
        }
        return value.text
    }
}

/// The catalog module's tables. Full-text search is FTS5 on SQLite (an external-content index
/// kept by triggers) and a generated `tsvector` with a GIN index on PostgreSQL; both use plain
/// word tokens without stemming, with Latin diacritics folded (`SearchFolding`), so a query finds
/// the same rows on either engine.
package enum CatalogMigrations {
    /// All migrations of the module, in order.
    package static let all: [Migration] = [
        Migration(module: "catalog", version: 1, name: "products") { dialect in
            var statements = [
                """
                CREATE TABLE products (
                    id TEXT PRIMARY KEY,
                    tenant_id TEXT NOT NULL,
                    sku TEXT NOT NULL,
                    name TEXT NOT NULL,
                    description TEXT,
                    price_minor BIGINT NOT NULL,
                    currency TEXT NOT NULL,
                    category TEXT,
                    stock BIGINT NOT NULL,
                    attributes TEXT NOT NULL,
                    version INTEGER NOT NULL,
                    created_at BIGINT NOT NULL,
                    updated_at BIGINT NOT NULL)
                """,
                "CREATE UNIQUE INDEX products_tenant_sku ON products (tenant_id, sku)",
                "CREATE INDEX products_tenant_id ON products (tenant_id, id)",
                "CREATE INDEX products_tenant_name ON products (tenant_id, name, id)",
                "CREATE INDEX products_tenant_price ON products (tenant_id, price_minor, id)",
                "CREATE INDEX products_tenant_updated ON products (tenant_id, updated_at, id)",
                "CREATE INDEX products_tenant_category ON products (tenant_id, category, name, id)",
            ]
            switch dialect {
            case .sqlite:
                // External content: the index holds tokens only and points at products.rowid.
                // (Rowids of a table without INTEGER PRIMARY KEY may change on VACUUM; run
                // `INSERT INTO products_fts(products_fts) VALUES('rebuild')` after one.)
                statements += [
                    """
                    CREATE VIRTUAL TABLE products_fts USING fts5(name, description, content='products', content_rowid='rowid',
                        tokenize='unicode61 remove_diacritics 0')
                    """,
                    """
                    CREATE TRIGGER products_fts_insert AFTER INSERT ON products BEGIN
                        INSERT INTO products_fts(rowid, name, description) VALUES (new.rowid, new.name, new.description);
                    END
                    """,
                    """
                    CREATE TRIGGER products_fts_delete AFTER DELETE ON products BEGIN
                        INSERT INTO products_fts(products_fts, rowid, name, description) VALUES ('delete', old.rowid, old.name, old.description);
                    END
                    """,
                    """
                    CREATE TRIGGER products_fts_update AFTER UPDATE OF name, description ON products BEGIN
                        INSERT INTO products_fts(products_fts, rowid, name, description) VALUES ('delete', old.rowid, old.name, old.description);
                        INSERT INTO products_fts(rowid, name, description) VALUES (new.rowid, new.name, new.description);
                    END
                    """,
                ]
            case .postgres:
                statements += [
                    """
                    ALTER TABLE products ADD COLUMN search tsvector
                        GENERATED ALWAYS AS (to_tsvector('simple', name || ' ' || coalesce(description, ''))) STORED
                    """,
                    "CREATE INDEX products_search ON products USING GIN (search)",
                ]
            }
            return statements
        },
        Migration(
            module: "catalog", version: 2, name: "product imports",
            sql: [
                """
                CREATE TABLE product_imports (
                    id TEXT PRIMARY KEY,
                    tenant_id TEXT NOT NULL,
                    format TEXT NOT NULL,
                    body TEXT NOT NULL,
                    created_at BIGINT NOT NULL)
                """
            ]),
        // PostgreSQL's parser keeps `3.0`, `example.com`, `a@b.org` and `/a/b` as single tokens
        // where FTS5 (and the query side, `searchWords`) split them into words, so a search for
        // `3.0` found a product on SQLite and not on PostgreSQL. ASCII punctuation becomes a
        // space before parsing, so both engines index the same words. SQLite has nothing to do.
        Migration(module: "catalog", version: 3, name: "search splits words at punctuation on PostgreSQL") { dialect in
            guard dialect == .postgres else { return [] }
            return [
                "ALTER TABLE products DROP COLUMN search",
                """
                ALTER TABLE products ADD COLUMN search tsvector GENERATED ALWAYS AS (to_tsvector('simple',
                    regexp_replace(name || ' ' || coalesce(description, ''), '[!-/:-@[-`{-~]+', ' ', 'g'))) STORED
                """,
                "CREATE INDEX products_search ON products USING GIN (search)",
            ]
        },
        // Issue 20: `q=creme` must find "Café crème", and `q=crème` "Creme brulee". SQLite's
        // tokenizer folds diacritics itself (the index is rebuilt from the table); PostgreSQL
        // folds them with `translate()` in the generated column (see `SearchFolding`).
        Migration(module: "catalog", version: 4, name: "search ignores accents") { dialect in
            switch dialect {
            case .sqlite:
                return [
                    "DROP TABLE products_fts",
                    """
                    CREATE VIRTUAL TABLE products_fts USING fts5(name, description, content='products', content_rowid='rowid',
                        tokenize='unicode61 remove_diacritics 2')
                    """,
                    "INSERT INTO products_fts(products_fts) VALUES ('rebuild')",
                ]
            case .postgres:
                let text = SearchFolding.translateSQL(
                    "regexp_replace(name || ' ' || coalesce(description, ''), '[!-/:-@[-`{-~]+', ' ', 'g')")
                return [
                    "ALTER TABLE products DROP COLUMN search",
                    "ALTER TABLE products ADD COLUMN search tsvector GENERATED ALWAYS AS (to_tsvector('simple', \(text))) STORED",
                    "CREATE INDEX products_search ON products USING GIN (search)",
                ]
            }
        },
    ]
}
