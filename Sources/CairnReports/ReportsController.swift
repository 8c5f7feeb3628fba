package import CairnCatalog
import CairnFormats
package import CairnHTTP
package import CairnNotifications
import CairnStorage
package import CairnTasks
import Foundation
import HTTPTypes
package import Hummingbird
import HummingbirdCore
package import Logging
import Metrics
import NIOCore

/// `/reports/*.csv`: every row of the caller's tenant as CSV, for admins, streamed.
///
/// Rows are read in keyset batches of `batchSize` (one short read each, never a long-lived
/// cursor), encoded, and written through the response body writer, whose `write` returns only
/// when the connection can take more: a slow client slows the reader, and at most two batches
/// (the one being written, the one read ahead) are in memory. When the client goes away, the
/// next write throws, the read-ahead is cancelled and no further batch is read.
package struct ReportsController: Sendable {
    let tasks: TaskStore
    let products: ProductStore
    let notifications: NotificationStore?
    let logger: Logger
    let batchSize: Int

    /// Creates the controller; `batchSize` rows are read per database round trip.
    package init(tasks: TaskStore, products: ProductStore, notifications: NotificationStore? = nil, logger: Logger, batchSize: Int = 2000) {
        self.tasks = tasks
        self.products = products
        self.notifications = notifications
        self.logger = logger
        self.batchSize = max(1, batchSize)
    }

    /// Adds the routes to the authenticated group, all for owners and admins.
    package func addRoutes(to group: RouterGroup<AuthenticatedContext>) {
        let reports = group.group("reports").add(middleware: RequireAdmin())
        reports.get("tasks.csv", use: tasksReport)
        reports.get("products.csv", use: productsReport)
        if notifications != nil { reports.get("notifications.csv", use: notificationsReport) }
    }

    /// `GET /reports/tasks.csv[?completed=&raw=]`: every task of the tenant.
    @Sendable func tasksReport(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        var query = try ReportQuery(request, context: context)
        var completed: Bool?
        if let value = request.uri.queryParameters.get("completed") {
            completed = Bool(String(value))
            if completed == nil { query.issues.append(FieldIssue(field: "completed", issue: "must be true or false")) }
        }
        try query.validate()
        let store = tasks
        let wanted = completed
        return stream(Self.tasksCSV, query: query, request: request, context: context) { tenantId, after, limit, batch in
            try await store.scanBatch(tenantId: tenantId, completed: wanted, after: after, limit: limit, into: batch, Self.writeTask)
        }
    }

    /// `GET /reports/products.csv[?raw=]` with the filters of `GET /products`.
    @Sendable func productsReport(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        var query = try ReportQuery(request, context: context)
        let filter = ProductsController.parseFilter(request.uri, issues: &query.issues)
        try query.validate()
        let store = products
        let fetch = CSVReportStream.encoding(
            { tenantId, after, limit in try await store.batch(tenantId: tenantId, filter: filter, after: after, limit: limit) },
            key: { $0.id }, encode: Self.writeProduct)
        return stream(Self.productsCSV, query: query, request: request, context: context, fetch: fetch)
    }

    /// `GET /reports/notifications.csv[?type=&raw=]`: every notification of the tenant, all users.
    @Sendable func notificationsReport(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        guard let store = notifications else { throw AppError.notFound("No such report.") }
        var query = try ReportQuery(request, context: context)
        let type = request.uri.queryParameters.get("type").map { String($0) }
        if let type, type.isEmpty || type.utf8.count > 64 || !type.utf8.allSatisfy({ $0 >= 0x21 && $0 <= 0x7E }) {
            query.issues.append(FieldIssue(field: "type", issue: "must be 1 to 64 visible ASCII characters"))
        }
        try query.validate()
        let fetch = CSVReportStream.encoding(
            { tenantId, after, limit in try await store.batch(tenantId: tenantId, type: type, after: after, limit: limit) },
            key: { $0.id }, encode: Self.writeNotification)
        return stream(Self.notificationsCSV, query: query, request: request, context: context, fetch: fetch)
    }

    // MARK: Columns

    static let tasksCSV = CSVReport(name: "tasks", header: ["id", "title", "description", "completed", "createdBy", "createdAt", "updatedAt"])

    /// One task's record, its fields copied from the database row into the CSV as they are read.
    @Sendable static func writeTask(_ batch: inout CSVBatch, _ task: inout TaskRowView) throws {
        try task.withID { id in
            batch.csv.plain(utf8: id)
            batch.key(id)
        }
        try task.withTitle { batch.csv.text(utf8: $0) }
        try task.withDescription { description in
            if let description { batch.csv.text(utf8: description) } else { batch.csv.null() }
        }
        batch.csv.bool(try task.completed())
        try task.withCreatedBy { batch.csv.plain(utf8: $0) }
        batch.csv.timestamp(milliseconds: try task.createdAt())
        batch.csv.timestamp(milliseconds: try task.updatedAt())
        batch.csv.endRecord()
        batch.rows += 1
    }

    static let productsCSV = CSVReport(
        name: "products",
        header: ["id", "sku", "name", "description", "priceMinor", "currency", "category", "stock", "attributes", "createdAt", "updatedAt"])

    @Sendable static func writeProduct(_ product: Product, _ csv: inout CSVWriter) {
        csv.plain(product.id)
        csv.text(product.sku)
        csv.text(product.name)
        csv.text(product.description)
        csv.integer(product.priceMinor)
        csv.text(product.currency)
        csv.text(product.category)
        csv.integer(product.stock)
        csv.text(product.attributes)
        csv.timestamp(milliseconds: product.createdAt)
        csv.timestamp(milliseconds: product.updatedAt)
    }

    static let notificationsCSV = CSVReport(
        name: "notifications", header: ["id", "userId", "seq", "type", "title", "body", "data", "createdAt", "readAt"])

    @Sendable static func writeNotification(_ notification: StoredNotification, _ csv: inout CSVWriter) {
        csv.plain(notification.id)
        csv.plain(notification.userId)
        csv.integer(notification.seq)
        csv.text(notification.type)
        csv.text(notification.title)
        csv.text(notification.body)
        csv.text(notification.data)
        csv.timestamp(milliseconds: notification.createdAt)
        if let readAt = notification.readAt { csv.timestamp(milliseconds: readAt) } else { csv.null() }
    }

    // MARK: Streaming

    /// True when `Accept-Encoding` accepts gzip (a q-value of 0 refuses it, RFC 9110 §12.5.3).
    static func acceptsGzip(_ request: Request) -> Bool {
        guard let header = request.headers[.acceptEncoding] else { return false }
        for part in header.split(separator: ",") {
            let pieces = part.split(separator: ";").map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
            guard let coding = pieces.first, coding == "gzip" || coding == "x-gzip" || coding == "*" else { continue }
            let q = pieces.dropFirst().first { $0.hasPrefix("q=") }.flatMap { Double($0.dropFirst(2)) } ?? 1
            if q > 0 { return true }
        }
        return false
    }

    /// The streamed response of `report`. `fetch(tenantId, after, limit, batch)` reads at most
    /// `limit` rows after the key `after` (from the first row when nil) and writes them into `batch`.
    func stream(
        _ report: CSVReport, query: ReportQuery, request: Request, context: AuthenticatedContext, fetch: @escaping CSVReportStream.Fetch
    ) -> Response {
        let gzip = Self.acceptsGzip(request)
        let run = CSVReportStream(
            report: report, raw: query.raw, gzip: gzip, batchSize: batchSize, tenantId: context.identity.tenantId, requestId: context.requestId,
            logger: logger, fetch: fetch)
        return Response(status: .ok, headers: Self.headers(report, gzip: gzip), body: ResponseBody { writer in try await run.write(to: &writer) })
    }

    /// A report's response headers: a CSV attachment named after it, never cached.
    static func headers(_ report: CSVReport, gzip: Bool) -> HTTPFields {
        var headers: HTTPFields = [
            .contentType: "text/csv; charset=utf-8; header=present",
            .contentDisposition: "attachment; filename=\"\(report.name).csv\"",
            .cacheControl: "no-store",
            .vary: "Accept-Encoding",
        ]
        if gzip { headers[.contentEncoding] = "gzip" }
        return headers
    }
}

/// One CSV report: its name (the file's and the metrics' label) and its header. Its rows are
/// written by the fetch the controller gives its stream.
struct CSVReport: Sendable {
    let name: String
    let header: [String]
}

/// What every report checks first (the group's `RequireAdmin` has let only admins in): `raw`
/// (true: text cells are not neutralised) is a boolean. A report's own parameters add their issues before `validate()`.
struct ReportQuery: Sendable {
    var raw = false
    var issues: [FieldIssue] = []

    init(_ request: Request, context: AuthenticatedContext) throws {
        if let value = request.uri.queryParameters.get("raw") {
            if let parsed = Bool(String(value)) {
                raw = parsed
            } else {
                issues.append(FieldIssue(field: "raw", issue: "must be true or false"))
            }
        }
    }

    /// Throws `invalid_input` with every issue found.
    func validate() throws {
        if !issues.isEmpty { throw AppError.invalidInput(issues) }
    }
}

/// Report counters at `/metrics`: rows, bytes, batches read, aborted and active reports.
struct ReportMetrics: Sendable {
    let rowCounter: Counter
    let byteCounter: Counter
    let batchCounter: Counter
    let abortCounter: Counter
    static let active = Meter(label: "cairn_reports_active")

    init(report: String) {
        let dimensions = [("report", report)]
        rowCounter = Counter(label: "cairn_report_rows_total", dimensions: dimensions)
        byteCounter = Counter(label: "cairn_report_bytes_total", dimensions: dimensions)
        batchCounter = Counter(label: "cairn_report_batches_read_total", dimensions: dimensions)
        abortCounter = Counter(label: "cairn_reports_aborted_total", dimensions: dimensions)
    }

    func started() { Self.active.increment() }
    func ended() { Self.active.decrement() }
    func rows(_ count: Int) { rowCounter.increment(by: count) }
    func bytes(_ count: Int) { byteCounter.increment(by: count) }
    func batchRead() { batchCounter.increment() }
    func aborted() { abortCounter.increment() }
}
