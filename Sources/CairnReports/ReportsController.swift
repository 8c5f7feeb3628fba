public import CairnCatalog
public import CairnHTTP
public import CairnNotifications
import CairnStorage
public import CairnTasks
import Foundation
import HTTPTypes
public import Hummingbird
import HummingbirdCore
public import Logging
import Metrics
import NIOCore

/// `/reports/*.csv`: every row of the caller's tenant as CSV, for admins, streamed.
///
/// Rows are read in keyset batches of `batchSize` (one short read each, never a long-lived
/// cursor), encoded, and written through the response body writer, whose `write` returns only
/// when the connection can take more: a slow client slows the reader, and at most two batches
/// (the one being written, the one read ahead) are in memory. When the client goes away, the
/// next write throws, the read-ahead is cancelled and no further batch is read.
public struct ReportsController: Sendable {
    let tasks: TaskStore
    let products: ProductStore
    let notifications: NotificationStore?
    let logger: Logger
    let batchSize: Int

    /// Creates the controller; `batchSize` rows are read per database round trip.
    public init(tasks: TaskStore, products: ProductStore, notifications: NotificationStore? = nil, logger: Logger, batchSize: Int = 2000) {
        self.tasks = tasks
        self.products = products
        self.notifications = notifications
        self.logger = logger
        self.batchSize = max(1, batchSize)
    }

    /// Adds the routes to the authenticated group, all for owners and admins.
    public func addRoutes(to group: RouterGroup<AuthenticatedContext>) {
        let reports = group.group("reports").add(middleware: RequireAdmin())
        if notifications != nil { reports.get("notifications.csv", use: notificationsReport) }
        reports.get("tasks.csv", use: tasksReport)
        reports.get("products.csv", use: productsReport)
    }

    /// `GET /reports/tasks.csv[?completed=&raw=]`.
    @Sendable func tasksReport(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        var issues: [FieldIssue] = []
        let raw = Self.raw(request.uri, issues: &issues)
        var completed: Bool?
        if let value = request.uri.queryParameters.get("completed") {
            if let parsed = Bool(value) {
                completed = parsed
            } else {
                issues.append(FieldIssue(field: "completed", issue: "must be true or false"))
            }
        }
        if !issues.isEmpty { throw AppError.invalidInput(issues) }
        let tenantId = context.identity.tenantId
        let store = tasks
        let wanted = completed
        let batchSize = self.batchSize
        return stream(
            report: "tasks", request: request, context: context, raw: raw,
            header: ["id", "title", "description", "completed", "createdBy", "createdAt", "updatedAt"],
            fetch: { after in
                let rows = try await store.batch(tenantId: tenantId, completed: wanted, after: after, limit: batchSize)
                return (rows.count == batchSize ? rows.last?.id : nil, rows)
            },
            encode: { task, csv in
                csv.plain(task.id)
                csv.text(task.title)
                csv.text(task.description)
                csv.bool(task.completed)
                csv.plain(task.createdBy)
                csv.timestamp(milliseconds: task.createdAt)
                csv.timestamp(milliseconds: task.updatedAt)
                csv.endRecord()
            })
    }

    /// `GET /reports/products.csv`, with the filters of `GET /products`.
    @Sendable func productsReport(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        var issues: [FieldIssue] = []
        let raw = Self.raw(request.uri, issues: &issues)
        let filter = ProductsController.parseFilter(request.uri, issues: &issues)
        if !issues.isEmpty { throw AppError.invalidInput(issues) }
        let tenantId = context.identity.tenantId
        let store = products
        let batchSize = self.batchSize
        return stream(
            report: "products", request: request, context: context, raw: raw,
            header: [
                "id", "sku", "name", "description", "priceMinor", "currency", "category", "stock", "attributes", "createdAt",
                "updatedAt",
            ],
            fetch: { after in
                let rows = try await store.batch(tenantId: tenantId, filter: filter, after: after, limit: batchSize)
                return (rows.count == batchSize ? rows.last?.id : nil, rows)
            },
            encode: { product, csv in
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
                csv.endRecord()
            })
    }

    /// `GET /reports/notifications.csv[?type=]`: every notification of the tenant, all users.
    @Sendable func notificationsReport(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        guard let store = notifications else { throw AppError.notFound() }
        var issues: [FieldIssue] = []
        let raw = Self.raw(request.uri, issues: &issues)
        let type = request.uri.queryParameters.get("type").map { String($0) }
        if let type, type.isEmpty || type.utf8.count > 64 || !type.utf8.allSatisfy({ $0 >= 0x21 && $0 <= 0x7E }) {
            issues.append(FieldIssue(field: "type", issue: "must be 1 to 64 visible ASCII characters"))
        }
        if !issues.isEmpty { throw AppError.invalidInput(issues) }
        let tenantId = context.identity.tenantId
        let batchSize = self.batchSize
        return stream(
            report: "notifications", request: request, context: context, raw: raw,
            header: ["id", "userId", "seq", "type", "title", "body", "data", "createdAt", "readAt"],
            fetch: { after in
                let rows = try await store.batch(tenantId: tenantId, type: type, after: after, limit: batchSize)
                return (rows.count == batchSize ? rows.last?.id : nil, rows)
            },
            encode: { notification, csv in
                csv.plain(notification.id)
                csv.plain(notification.userId)
                csv.integer(notification.seq)
                csv.text(notification.type)
                csv.text(notification.title)
                csv.text(notification.body)
                csv.text(notification.data)
                csv.timestamp(milliseconds: notification.createdAt)
                if let readAt = notification.readAt { csv.timestamp(milliseconds: readAt) } else { csv.text(nil) }
                csv.endRecord()
            })
    }

    static func raw(_ uri: URI, issues: inout [FieldIssue]) -> Bool {
        guard let value = uri.queryParameters.get("raw") else { return false }
        guard let raw = Bool(String(value)) else {
            issues.append(FieldIssue(field: "raw", issue: "must be true or false"))
            return false
        }
        return raw
    }

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

    /// The streamed response. `fetch(after)` returns the next batch and the key to continue
    /// after (nil when this was the last batch); `encode` writes one row.
    func stream<Row: Sendable>(
        report: String, request: Request, context: AuthenticatedContext, raw: Bool, header: [StaticString],
        fetch: @escaping @Sendable (String?) async throws -> (next: String?, rows: [Row]),
        encode: @escaping @Sendable (Row, inout CSVEncoder) -> Void
    ) -> Response {
        let gzip = Self.acceptsGzip(request)
        var headers: HTTPFields = [
            .contentType: "text/csv; charset=utf-8; header=present",
            .contentDisposition: "attachment; filename=\"\(report).csv\"",
            .cacheControl: "no-store",
            .vary: "Accept-Encoding",
        ]
        if gzip { headers[.contentEncoding] = "gzip" }
        let body = csvBody(
            report: report, requestId: context.requestId, gzip: gzip, raw: raw, header: header, fetch: fetch, encode: encode)
        return Response(status: .ok, headers: headers, body: body)
    }

    /// The report's body: batches read one ahead, encoded, compressed when `gzip`, written.
    func csvBody<Row: Sendable>(
        report: String, requestId: String, gzip: Bool, raw: Bool, header: [StaticString],
        fetch: @escaping @Sendable (String?) async throws -> (next: String?, rows: [Row]),
        encode: @escaping @Sendable (Row, inout CSVEncoder) -> Void
    ) -> ResponseBody {
        let logger = self.logger
        let metrics = ReportMetrics(report: report)
        return ResponseBody { writer in
            metrics.started()
            defer { metrics.ended() }
            let compressor = try gzip ? GzipStream() : nil
            var csv = CSVEncoder(neutralise: !raw)
            csv.header(header)
            var rowsWritten = 0
            // One batch is read ahead while the previous one is encoded and written.
            var pending: Task<(next: String?, rows: [Row]), any Error>? = Self.read(after: nil, fetch: fetch, metrics: metrics)
            do {
                while let task = pending {
                    let batch = try await task.value
                    pending = batch.next.map { Self.read(after: $0, fetch: fetch, metrics: metrics) }
                    for row in batch.rows { encode(row, &csv) }
                    rowsWritten += batch.rows.count
                    metrics.rows(batch.rows.count)
                    var chunk = csv.buffer
                    csv.buffer.clear()
                    if let compressor { chunk = try compressor.compress(chunk, finish: pending == nil) }
                    if chunk.readableBytes == 0 { continue }
                    metrics.bytes(chunk.readableBytes)
                    try await writer.write(chunk)
                }
                try await writer.finish(nil)
            } catch {
                pending?.cancel()
                metrics.aborted()
                Self.logStopped(logger, report: report, rows: rowsWritten, requestId: requestId, error: error)
                throw error
            }
        }
    }

    /// Starts reading the batch after `key` (the first batch for nil).
    static func read<Row: Sendable>(
        after key: String?, fetch: @escaping @Sendable (String?) async throws -> (next: String?, rows: [Row]), metrics: ReportMetrics
    ) -> Task<(next: String?, rows: [Row]), any Error> {
        Task {
            metrics.batchRead()
            return try await fetch(key)
        }
    }

    /// Logs a report that ended before its last row (the client went away, or a read failed).
    static func logStopped(_ logger: Logger, report: String, rows rowsWritten: Int, requestId: String, error: any Error) {
        logger.notice(
            "report stopped before the end: client gone or read failed",
            metadata: [
                "report": .string(report), "rows": .stringConvertible(rowsWritten), "request_id": .string(requestId),
                "error.type": .string(String(reflecting: type(of: error))),
            ])
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
