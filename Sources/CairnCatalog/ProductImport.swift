public import CairnFiles
import CairnFormats
import CairnHTTP
public import CairnJobs
import CairnStorage
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

/// `POST /products:import`: a CSV or NDJSON body is stored and upserted by SKU in a job
/// (`products.import`), whose progress reports counts and per-row errors.
public struct ProductImporter: Sendable {
    /// The job kind.
    public static var kind: String { ImportProducts.kind }
    /// Largest import body, bytes (10 MiB; larger files go through uploads).
    public static let maxBody = 10 << 20
    /// Per-row errors kept in the job's progress.
    static let maxErrors = 1000
    /// Rows upserted per transaction.
    static let batchSize = 500

    let catalog: CatalogService
    let jobs: JobQueue
    let files: FileStore?
    let blobs: (any BlobStore)?

    /// Creates the importer; call ``registerJobs(on:)`` once, from the composition root. With
    /// `files` and `blobs`, an import may name an uploaded file (`{"fileId"}`) instead of
    /// carrying its rows.
    public init(catalog: CatalogService, jobs: JobQueue, files: FileStore? = nil, blobs: (any BlobStore)? = nil) {
        self.catalog = catalog
        self.jobs = jobs
        self.files = files
        self.blobs = blobs
    }

    /// Registers the import job handler on `queue`.
    public func registerJobs(on queue: JobQueue) {
        queue.register(ImportProducts.self) { [catalog] args, context in
            try await Self.run(args, context: context, catalog: catalog)
        }
    }

    struct FileBody: Decodable {
        var fileId: String
    }

    /// Accepts an import: 202 with the job and `Location: /jobs/{id}`. The rows come as the body
    /// (`text/csv`, `application/x-ndjson`) or from an uploaded file (`application/json`
    /// `{"fileId"}`, a CSV or NDJSON file of the tenant).
    /// - Throws: 415 for other media types, 413 above `maxBody`, 400 for a non-UTF-8 body, a
    ///   file of another format, or a missing `fileId`; 404 for a file the tenant does not have.
    func accept(request: Request, context: AuthenticatedContext) async throws -> Response {
        let mediaType =
            (request.headers[.contentType] ?? "").split(separator: ";", maxSplits: 1).first
            .map { $0.trimmingCharacters(in: .whitespaces).lowercased() } ?? ""
        var format: String
        var buffer: ByteBuffer
        switch mediaType {
        case "text/csv", "application/x-ndjson", "application/ndjson", "application/jsonl":
            format = mediaType == "text/csv" ? "csv" : "ndjson"
            do {
                buffer = try await request.body.collect(upTo: Self.maxBody)
            } catch {
                throw AppError(.contentTooLarge, code: .payloadTooLarge, detail: "The body exceeds \(Self.maxBody) bytes.")
            }
        case "application/json":
            var request = request
            let body = try await request.decodeJSON(as: FileBody.self, context: context)
            (format, buffer) = try await readFile(body.fileId, tenantId: context.identity.tenantId)
        default:
            throw AppError(
                .unsupportedMediaType, code: .unsupportedMediaType,
                detail: "Send the rows as text/csv or application/x-ndjson, or {\"fileId\"} as application/json.")
        }
        guard let text = String(validating: buffer.readableBytesView, as: UTF8.self), !text.contains("\u{0}") else {
            throw AppError.invalidField("body", "must be UTF-8 text without NUL characters")
        }
        guard !text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else {
            throw AppError.invalidField("body", "must contain at least one row")
        }
        let tenantId = context.identity.tenantId
        let importId = try await catalog.store.saveImport(tenantId: tenantId, format: format, body: text)
        let (job, _) = try await jobs.enqueue(
            ImportProducts(importId: importId, format: format), tenantId: tenantId, createdBy: context.identity.userId)
        return .json(job, status: .accepted, headers: [.location: "/jobs/\(job.id)"])
    }

    /// The bytes and format of an uploaded CSV or NDJSON file of the tenant.
    private func readFile(_ id: String, tenantId: String) async throws -> (String, ByteBuffer) {
        guard let files, let blobs else { throw AppError.invalidField("fileId", "imports from uploaded files are not available") }
        guard let file = try await files.get(id: id, tenantId: tenantId) else { throw AppError.notFound("No such file.") }
        guard file.format == "csv" || file.format == "ndjson" else {
            throw AppError.invalidField("fileId", "must name a CSV or NDJSON file (this one is \(file.format))")
        }
        guard file.size <= Int64(Self.maxBody) else {
            throw AppError(.contentTooLarge, code: .payloadTooLarge, detail: "Imports take files up to \(Self.maxBody) bytes.")
        }
        return (file.format, try await blobs.read(tenantId: tenantId, id: file.id, limit: Self.maxBody))
    }

    /// One input row as field values by column name (missing columns absent).
    typealias Row = [String: JSONValue]

    static func run(_ args: ImportProducts, context: JobContext, catalog: CatalogService) async throws {
        let importId = args.importId
        let tenantId = context.job.tenantId
        guard let (format, body) = try await catalog.store.loadImport(id: importId, tenantId: tenantId) else {
            throw PermanentJobError("the import's rows are gone")
        }
        var errors: [JSONValue] = []
        var failed = 0
        var imported = 0
        var pending: [Product] = []
        var seen = Set<String>()
        let rows: [(line: Int, row: Result<Row, ImportIssue>)]
        do {
            rows = format == "csv" ? try CSVRows.parse(body) : NDJSONRows.parse(body)
        } catch let issue as ImportIssue {
            let progress: JSONValue = .object([
                "rowsTotal": .number(0), "imported": .number(0), "failed": .number(0),
                "errors": .array([.object(["row": .number(Double(issue.row)), "field": .string(issue.field), "issue": .string(issue.issue)])]),
            ])
            try await context.reportProgress(progress)
            // The job ends here for good: its stored rows are of no further use.
            try? await catalog.store.deleteImport(id: importId)
            throw PermanentJobError("the import is not valid \(format.uppercased()): \(issue.issue)")
        }
        func record(_ issue: ImportIssue) {
            failed += 1
            if errors.count < maxErrors {
                errors.append(.object(["row": .number(Double(issue.row)), "field": .string(issue.field), "issue": .string(issue.issue)]))
            }
        }
        func progress() -> JSONValue {
            .object([
                "rowsTotal": .number(Double(rows.count)), "rowsDone": .number(Double(imported + failed)), "imported": .number(Double(imported)),
                "failed": .number(Double(failed)), "errors": .array(errors),
            ])
        }
        let now = WallClock.milliseconds()
        for (line, result) in rows {
            try Task.checkCancellation()
            switch result {
            case .failure(let issue): record(issue)
            case .success(let row):
                switch product(from: row, line: line, tenantId: tenantId, now: now) {
                case .failure(let issue): record(issue)
                case .success(let product):
                    // A SKU twice in one file: the later row wins, as in a sequential upsert.
                    if seen.contains(product.sku) {
                        pending.removeAll { $0.sku == product.sku }
                        imported -= 1
                    }
                    seen.insert(product.sku)
                    pending.append(product)
                    imported += 1
                }
            }
            if pending.count >= batchSize {
                try await catalog.store.upsert(pending)
                pending.removeAll(keepingCapacity: true)
                seen.removeAll(keepingCapacity: true)
                await catalog.invalidate(tenantId: tenantId)
                try await context.reportProgress(progress())
            }
        }
        try await catalog.store.upsert(pending)
        await catalog.invalidate(tenantId: tenantId)
        try await context.reportProgress(progress())
        try await catalog.store.deleteImport(id: importId)
    }

    static func product(from row: Row, line: Int, tenantId: String, now: Int64) -> Result<Product, ImportIssue> {
        var issues: [FieldIssue] = []
        func text(_ key: String, required: Bool) -> String? {
            switch row[key] {
            case .string(let value)?: return value
            case .null?, nil:
                if required { issues.append(FieldIssue(field: key, issue: "is required")) }
                return nil
            default:
                issues.append(FieldIssue(field: key, issue: "must be a string"))
                return nil
            }
        }
        func integer(_ key: String, required: Bool) -> Int64? {
            switch row[key] {
            case .number(let value)? where value.rounded() == value && abs(value) < 9e15: return Int64(value)
            case .string(let value)?:
                if let parsed = Int64(value.trimmingCharacters(in: .whitespaces)) { return parsed }
                if value.isEmpty && !required { return nil }
                issues.append(FieldIssue(field: key, issue: "must be an integer"))
                return nil
            case .null?, nil:
                if required { issues.append(FieldIssue(field: key, issue: "is required")) }
                return nil
            default:
                issues.append(FieldIssue(field: key, issue: "must be an integer"))
                return nil
            }
        }
        let sku = text("sku", required: true) ?? ""
        let name = text("name", required: true).flatMap { ProductRules.name($0, into: &issues) } ?? ""
        let description = text("description", required: false).flatMap { $0.isEmpty ? nil : $0 }
        let price = integer("priceMinor", required: true) ?? 0
        let currency = text("currency", required: true) ?? ""
        let category = text("category", required: false).flatMap { $0.isEmpty ? nil : $0 }
        let stock = integer("stock", required: false) ?? 0
        var attributes = "{}"
        switch row["attributes"] {
        case nil, .null?: break
        case .string(let raw)?:
            if raw.isEmpty { break }
            if let value = JSONValue(text: raw), let text = ProductRules.attributes(value, into: &issues) { attributes = text }
            if JSONValue(text: raw) == nil { issues.append(FieldIssue(field: "attributes", issue: "must be a JSON object")) }
        case let value?:
            if let text = ProductRules.attributes(value, into: &issues) { attributes = text }
        }
        let product = Product(
            id: UUIDv7.make(), tenantId: tenantId, sku: sku, name: name, description: description, priceMinor: price,
            currency: currency, category: category, stock: stock, attributes: attributes, version: 1, createdAt: now, updatedAt: now)
        if issues.isEmpty { ProductRules.check(product, into: &issues) }
        if let first = issues.first { return .failure(ImportIssue(row: line, field: first.field, issue: first.issue)) }
        return .success(product)
    }
}

/// A problem with one input row (`row` is 1-based, counting data rows).
struct ImportIssue: Error {
    var row: Int
    var field: String
    var issue: String
}

/// RFC 4180 CSV with a header row naming the columns (`sku,name,description,priceMinor,
/// currency,category,stock,attributes`; unknown columns are refused, order is free).
enum CSVRows {
    static let known: Set<String> = ["sku", "name", "description", "priceMinor", "currency", "category", "stock", "attributes"]

    static func parse(_ text: String) throws -> [(line: Int, row: Result<ImportRows.Row, ImportIssue>)] {
        // A UTF-8 byte-order mark (Excel's "CSV UTF-8") is not part of the first column's name.
        var bytes = Array(text.utf8)
        if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { bytes.removeFirst(3) }
        let records = try records(bytes)
        guard let header = records.first else { return [] }
        let columns = header.map { $0.trimmingCharacters(in: .whitespaces) }
        for column in columns where !known.contains(column) {
            throw ImportIssue(row: 0, field: column, issue: "is not a known column (\(known.sorted().joined(separator: ", ")))")
        }
        var rows: [(line: Int, row: Result<ImportRows.Row, ImportIssue>)] = []
        for (index, record) in records.dropFirst().enumerated() {
            if record == [""] { continue }
            guard record.count == columns.count else {
                rows.append(
                    (index + 1, .failure(ImportIssue(row: index + 1, field: "row", issue: "has \(record.count) fields, the header \(columns.count)")))
                )
                continue
            }
            var row: ImportRows.Row = [:]
            for (column, value) in zip(columns, record) { row[column] = .string(value) }
            rows.append((index + 1, .success(row)))
        }
        return rows
    }

    /// Splits CSV bytes into records of fields: quoted fields may hold commas, quotes (doubled)
    /// and line breaks; records end with CRLF or LF.
    static func records(_ bytes: [UInt8]) throws -> [[String]] {
        var records: [[String]] = []
        var record: [String] = []
        var field: [UInt8] = []
        var index = 0
        var quoted = false
        var line = 1
        let quote = UInt8(ascii: "\""), comma = UInt8(ascii: ","), cr = UInt8(ascii: "\r"), lf = UInt8(ascii: "\n")
        func endField() {
            record.append(String(decoding: field, as: UTF8.self))
            field.removeAll(keepingCapacity: true)
        }
        while index < bytes.count {
            let byte = bytes[index]
            if quoted {
                if byte == quote {
                    if index + 1 < bytes.count, bytes[index + 1] == quote {
                        field.append(quote)
                        index += 2
                        continue
                    }
                    quoted = false
                } else {
                    if byte == lf { line += 1 }
                    field.append(byte)
                }
                index += 1
                continue
            }
            switch byte {
            case quote where field.isEmpty: quoted = true
            case comma: endField()
            case cr where index + 1 < bytes.count && bytes[index + 1] == lf: break
            case lf:
                endField()
                records.append(record)
                record.removeAll(keepingCapacity: true)
                line += 1
            default: field.append(byte)
            }
            index += 1
        }
        if quoted { throw ImportIssue(row: max(0, records.count), field: "body", issue: "a quoted field is not closed (line \(line))") }
        if !field.isEmpty || !record.isEmpty {
            endField()
            records.append(record)
        }
        return records
    }
}

/// Shared row type of the import parsers.
enum ImportRows {
    typealias Row = [String: JSONValue]
}

/// Newline-delimited JSON: one object per line, fields as in `POST /products`.
enum NDJSONRows {
    static func parse(_ text: String) -> [(line: Int, row: Result<ImportRows.Row, ImportIssue>)] {
        var rows: [(line: Int, row: Result<ImportRows.Row, ImportIssue>)] = []
        var number = 0
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            let trimmed = line.trimmingCharacters(in: .whitespacesAndNewlines)
            if trimmed.isEmpty { continue }
            number += 1
            guard let value = JSONValue(text: trimmed), case .object(let members) = value else {
                rows.append((number, .failure(ImportIssue(row: number, field: "row", issue: "is not a JSON object"))))
                continue
            }
            rows.append((number, .success(members)))
        }
        return rows
    }
}
