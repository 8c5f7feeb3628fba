package import CairnHTTP
import CairnStorage
import Foundation
import HTTPTypes
package import Hummingbird
package import HummingbirdCore
import NIOCore

/// `/products`: reads for every member of the tenant (through the cache), writes for admins.
@MemberwiseInit
package struct ProductsController: Sendable {
    let catalog: CatalogService
    let importer: ProductImporter

    static let xCache = HTTPField.Name("X-Cache")!
    static let warning = HTTPField.Name("Warning")!
    /// Clients may keep a copy but must revalidate it (cheap: `If-None-Match` answers 304).
    static let cacheControl = "private, max-age=0, must-revalidate"

    struct CreateBody: Decodable {
        var sku: String
        var name: String
        var description: String?
        var priceMinor: Int64
        var currency: String
        var category: String?
        var stock: Int64?
        var attributes: JSONValue?
    }

    struct PatchBody: Decodable {
        var sku: PatchField<String>
        var name: PatchField<String>
        var description: PatchField<String>
        var priceMinor: PatchField<Int64>
        var currency: PatchField<String>
        var category: PatchField<String>
        var stock: PatchField<Int64>
        var attributes: PatchField<JSONValue>
    }

    static func headers(status: CacheStatus, etag: String? = nil) -> HTTPFields {
        var headers: HTTPFields = [xCache: status.rawValue, .cacheControl: cacheControl]
        if let etag { headers[.eTag] = etag }
        // RFC 7234 §5.5.1 warn-code 110; the field is obsolete in RFC 9111 but still the known
        // way to say "stale", next to X-Cache.
        if status == .stale { headers[warning] = "110 - \"Response is Stale\"" }
        return headers
    }

    static func answer(_ read: CatalogRead<Product?>, request: Request) throws -> Response {
        guard let product = read.value else { throw AppError.notFound("No such product.") }
        return ETag.conditional(request, product, etag: ETag.of(version: product.version), headers: headers(status: read.status))
    }

    /// Parses the list filters shared with `/reports/products.csv`.
    /// - Throws: 400 `invalid_input` naming each bad parameter.
    package static func parseFilter(_ uri: URI, issues: inout [FieldIssue]) -> ProductFilter {
        let query = uri.queryParameters
        var filter = ProductFilter()
        if let category = query.get("category") {
            // Control characters never name a category (and NUL would reach PostgreSQL).
            if ProductRules.isValidCategory(category) {
                filter.category = category
            } else {
                issues.append(FieldIssue(field: "category", issue: "must be 1 to \(ProductRules.maxCategory) characters without control characters"))
            }
        }
        for (name, path) in [("minPrice", \ProductFilter.minPrice), ("maxPrice", \ProductFilter.maxPrice)] {
            guard let raw = query.get(name) else { continue }
            if let value = Int64(raw), (0...ProductRules.maxPrice).contains(value) {
                filter[keyPath: path] = value
            } else {
                issues.append(FieldIssue(field: name, issue: "must be an integer from 0 to \(ProductRules.maxPrice) (minor units)"))
            }
        }
        if let min = filter.minPrice, let max = filter.maxPrice, min > max {
            issues.append(FieldIssue(field: "maxPrice", issue: "must not be below minPrice"))
        }
        if let text = query.get("q") {
            if TextSafety.length(text) > 200 {
                issues.append(FieldIssue(field: "q", issue: "must be at most 200 characters"))
            } else if !text.trimmingCharacters(in: .whitespaces).isEmpty {
                filter.query = text
            }
        }
        return filter
    }

    /// Adds the routes to the authenticated group: reads for everyone, writes for owners and admins.
    package func addRoutes(to group: RouterGroup<AuthenticatedContext>) {
        group.group("products")
            .resource(list: list, show: show)
            .get("by-sku/:sku", use: showBySKU)
        group.group("products").add(middleware: RequireAdmin())
            .resource(create: create, update: update, delete: delete)
        group.group().add(middleware: RequireAdmin())
            .post("products:import", use: startImport)
    }

    /// The query of `GET /products`.
    struct ListQuery {
        var filter: ProductFilter
        var limit = 20
        var sort = ProductSort.name
        var descending = false
        var after: ProductCursor?
    }

    /// Parses `GET /products`' query: the filters, `limit`, `sort` (`-` for descending) and a
    /// `cursor` issued for the same sort.
    /// - Throws: 400 `invalid_input` naming each bad parameter.
    static func listQuery(_ uri: URI) throws -> ListQuery {
        var issues: [FieldIssue] = []
        var list = ListQuery(filter: parseFilter(uri, issues: &issues))
        if let limit = PageRequest.parseLimit(uri, issues: &issues) { list.limit = limit }
        let query = uri.queryParameters
        if var raw = query.get("sort").map({ String($0) }) {
            if raw.hasPrefix("-") {
                list.descending = true
                raw.removeFirst()
            }
            if let value = ProductSort(rawValue: raw) {
                list.sort = value
            } else {
                issues.append(FieldIssue(field: "sort", issue: "must be name, price or updatedAt, optionally prefixed with - for descending"))
            }
        }
        if let raw = PageRequest.single("cursor", of: uri, issues: &issues) {
            if let cursor = ProductCursor.decode(raw), cursor.sort == list.sort, cursor.descending == list.descending {
                list.after = cursor
            } else {
                issues.append(FieldIssue(field: "cursor", issue: "is not a cursor this server issued for this sort"))
            }
        }
        if !issues.isEmpty { throw AppError.invalidInput(issues) }
        return list
    }

    /// `GET /products`: a page of the tenant's products, through the cache.
    @Sendable func list(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        let list = try Self.listQuery(request.uri)
        let read = try await catalog.page(
            tenantId: context.identity.tenantId, filter: list.filter, sort: list.sort, descending: list.descending, limit: list.limit,
            after: list.after)
        var headers = Self.headers(status: read.status)
        headers[.contentType] = "application/json"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: read.value))
    }

    /// `GET /products/by-sku/{sku}`; the SKU is percent-decoded (RFC 3986 §2.1) as ids are.
    /// - Throws: 400 `invalid_input` on `sku` for escapes that are malformed or decode to invalid
    ///   UTF-8 or a control character; 404 for a SKU no product has (or none can have).
    @Sendable func showBySKU(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        let sku = try PathParameter.decoded(try context.parameters.require("sku"), field: "sku")
        guard ProductRules.isValidSKU(sku) else { throw AppError.notFound("No such product.") }
        return try Self.answer(try await catalog.product(sku: sku, tenantId: context.identity.tenantId), request: request)
    }

    /// `GET /products/{id}`.
    @Sendable func show(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        let id = try context.parameters.require("id")
        guard UUIDv7.isValid(id) else { throw AppError.notFound("No such product.") }
        return try Self.answer(try await catalog.product(id: id, tenantId: context.identity.tenantId), request: request)
    }

    /// `POST /products` (admins).
    @Sendable func create(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        var request = request
        let body = try await request.decodeJSON(as: CreateBody.self, context: context)
        let (product, issues) = Self.product(from: body, tenantId: context.identity.tenantId)
        if !issues.isEmpty { throw AppError.invalidInput(issues) }
        try await catalog.store.insert(product)
        await catalog.invalidate(tenantId: product.tenantId)
        var headers = Self.headers(status: .miss, etag: ETag.of(version: product.version))
        headers[.xCache] = nil
        headers[.location] = "/products/\(product.id)"
        return .json(product, status: .created, headers: headers)
    }

    /// The product a create body describes, and every issue with it.
    static func product(from body: CreateBody, tenantId: String) -> (Product, [FieldIssue]) {
        var issues: [FieldIssue] = []
        let name = ProductRules.name(body.name, into: &issues)
        let attributes = ProductRules.attributes(body.attributes ?? .object([:]), into: &issues)
        let now = WallClock.milliseconds()
        let product = Product(
            id: UUIDv7.make(), tenantId: tenantId, sku: body.sku, name: name ?? "", description: body.description,
            priceMinor: body.priceMinor, currency: body.currency, category: body.category, stock: body.stock ?? 0,
            attributes: attributes ?? "{}", version: 1, createdAt: now, updatedAt: now)
        ProductRules.check(product, into: &issues)
        return (product, issues)
    }

    /// `PATCH /products/{id}` (admins; `If-Match` optional).
    @Sendable func update(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        let id = try context.parameters.require("id")
        let expected = try ETag.expectedVersion(request)
        var request = request
        let body = try await request.decodeJSON(as: PatchBody.self, context: context)
        let change = try Self.change(from: body)
        let tenantId = context.identity.tenantId
        if let product = try await catalog.store.update(id: id, tenantId: tenantId, expectedVersion: expected, change: change) {
            await catalog.invalidate(tenantId: tenantId)
            var headers = Self.headers(status: .miss, etag: ETag.of(version: product.version))
            headers[.xCache] = nil
            return .json(product, headers: headers)
        }
        throw try await ETag.writeFailure(expected: expected, notFound: "No such product.") {
            try await catalog.store.get(id: id, tenantId: tenantId) != nil
        }
    }

    /// `DELETE /products/{id}` (admins; `If-Match` optional).
    @Sendable func delete(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        let id = try context.parameters.require("id")
        let expected = try ETag.expectedVersion(request)
        let tenantId = context.identity.tenantId
        if try await catalog.store.delete(id: id, tenantId: tenantId, expectedVersion: expected) {
            await catalog.invalidate(tenantId: tenantId)
            return Response(status: .noContent)
        }
        throw try await ETag.writeFailure(expected: expected, notFound: "No such product.") {
            try await catalog.store.get(id: id, tenantId: tenantId) != nil
        }
    }

    /// `POST /products:import` (admins): 202, the import runs as a job.
    @Sendable func startImport(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        try await importer.accept(request: request, context: context)
    }

    /// The change a PATCH body asks for.
    /// - Throws: 400 `invalid_input` listing every bad field, in the body's documented order.
    static func change(from body: PatchBody) throws -> ProductChange {
        var issues: [FieldIssue] = []
        var change = ProductChange()
        describing(&change, from: body, issues: &issues)
        pricing(&change, from: body, issues: &issues)
        if !issues.isEmpty { throw AppError.invalidInput(issues) }
        return change
    }

    /// A field's value; nil when absent, and an issue when null (these fields cannot be cleared).
    static func required<T>(_ field: PatchField<T>, _ name: String, issues: inout [FieldIssue]) -> T? {
        switch field {
        case .absent: return nil
        case .null:
            issues.append(FieldIssue(field: name, issue: "must not be null"))
            return nil
        case .value(let value): return value
        }
    }

    /// `sku`, `name` and `description` of a PATCH body.
    static func describing(_ change: inout ProductChange, from body: PatchBody, issues: inout [FieldIssue]) {
        if let sku = required(body.sku, "sku", issues: &issues), ProductRules.checkSKU(sku, into: &issues) { change.sku = sku }
        if let name = required(body.name, "name", issues: &issues) { change.name = ProductRules.name(name, into: &issues) }
        ProductRules.checkDescription(body.description.value, into: &issues)
        change.description = body.description.nullableChange
    }

    /// `priceMinor`, `currency`, `category`, `stock` and `attributes` of a PATCH body.
    static func pricing(_ change: inout ProductChange, from body: PatchBody, issues: inout [FieldIssue]) {
        if let price = required(body.priceMinor, "priceMinor", issues: &issues), ProductRules.checkPrice(price, into: &issues) {
            change.priceMinor = price
        }
        if let currency = required(body.currency, "currency", issues: &issues), ProductRules.checkCurrency(currency, into: &issues) {
            change.currency = currency
        }
        ProductRules.checkCategory(body.category.value, into: &issues)
        change.category = body.category.nullableChange
        if let stock = required(body.stock, "stock", issues: &issues), ProductRules.checkStock(stock, into: &issues) { change.stock = stock }
        if let attributes = required(body.attributes, "attributes", issues: &issues), let text = ProductRules.attributes(attributes, into: &issues) {
            ProductRules.checkAttributesSize(text, into: &issues)
            change.attributes = text
        }
    }
}

extension HTTPField.Name {
    static let xCache = HTTPField.Name("X-Cache")!
}

// Value checks run by the body decoder, so one answer lists type and value errors together.

extension ProductsController.CreateBody: ValueChecked {
    static var integerRanges: [String: ClosedRange<Int64>] { ProductRules.integerRanges }
    func valueIssues() -> [FieldIssue] { ProductsController.product(from: self, tenantId: "").1 }
}

extension ProductsController.PatchBody: ValueChecked {
    static var integerRanges: [String: ClosedRange<Int64>] { ProductRules.integerRanges }
    func valueIssues() -> [FieldIssue] { issues { _ = try ProductsController.change(from: self) } }
}
