package import CairnFiles
import CairnFormats
import CairnHTTP
package import CairnJobs
package import CairnObjects
import CairnStorage
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

/// `POST /products:import`: a CSV or NDJSON body is stored and upserted by SKU in a job
/// (`products.import`), whose progress reports counts and per-row errors.
package struct ProductImporter: Sendable {
    /// The job kind.
    package static var kind: String { ImportProducts.kind }
    /// Largest import body, bytes (10 MiB; larger files go through uploads).
    package static let maxBody = 10 << 20
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
    package init(catalog: CatalogService, jobs: JobQueue, files: FileStore? = nil, blobs: (any BlobStore)? = nil) {
        self.catalog = catalog
        self.jobs = jobs
        self.files = files
        self.blobs = blobs
    }

    /// Registers the import job handler on `queue`.
    package func registerJobs(on queue: JobQueue) {
        queue.register(ImportProducts.self) { [catalog] args, context in
            try await Self.run(args, context: context, catalog: catalog)
        }
    }

    struct FileBody: Decodable, ValueChecked {
        var fileId: String

        func valueIssues() -> [FieldIssue] { UUIDv7.bodyIDIssues(fileId, field: "fileId") }
    }

    /// Accepts an import: 202 with the job and `Location: /jobs/{id}`. The rows come as the body
    /// (`text/csv`, `application/x-ndjson`) or from an uploaded file (`application/json`
    /// `{"fileId"}`, a CSV or NDJSON file of the tenant).
    /// - Throws: 415 for other media types, 411 for rows without `Content-Length`, 413 above
    ///   `maxBody`, 400 for a body that ended before its `Content-Length`, a non-UTF-8 body, a
    ///   file of another format, a CSV header naming unknown columns, or a missing or malformed
    ///   `fileId` (`invalid_input`);
    ///   404 for a file the tenant does not have.
    func accept(request: Request, context: AuthenticatedContext) async throws -> Response {
        let mediaType =
            (request.headers[.contentType] ?? "").split(separator: ";", maxSplits: 1).first
            .map { $0.trimmingCharacters(in: .whitespaces).lowercased() } ?? ""
        var format: String
        var buffer: ByteBuffer
        var source = "body"
        switch mediaType {
        case "text/csv", "application/x-ndjson", "application/ndjson", "application/jsonl":
            format = mediaType == "text/csv" ? "csv" : "ndjson"
            buffer = try await Self.collectRows(request)
        case "application/json":
            var request = request
            let body = try await request.decodeJSON(as: FileBody.self, context: context)
            (format, buffer) = try await readFile(try UUIDv7.bodyID(body.fileId, field: "fileId"), tenantId: context.identity.tenantId)
            source = "fileId"
        default:
            throw AppError(
                .unsupportedMediaType, code: .unsupportedMediaType,
                detail: "Send the rows as text/csv or application/x-ndjson, or {\"fileId\"} as application/json.")
        }
        let text = try Self.checkedRows(buffer, format: format, source: source)
        let tenantId = context.identity.tenantId
        let importId = try await catalog.store.saveImport(tenantId: tenantId, format: format, body: text)
        let (job, _) = try await jobs.enqueue(
            ImportProducts(importId: importId, format: format), tenantId: tenantId, createdBy: context.identity.userId)
        return .json(job, status: .accepted, headers: [.location: "/jobs/\(job.id)"])
    }

    /// A body of rows, held to its announced length: rows cut off with their connection must not
    /// import as a shorter, complete-looking file (see `FilesController.lengthRequired`).
    /// - Throws: 411 without `Content-Length`, 413 above `maxBody`, 400 for a body that ended early.
    static func collectRows(_ request: Request) async throws -> ByteBuffer {
        guard let declared = request.headers[.contentLength].flatMap({ Int64($0) }) else { throw FilesController.lengthRequired }
        guard declared <= Int64(maxBody) else {
            throw AppError(.contentTooLarge, code: .payloadTooLarge, detail: "The body exceeds \(maxBody) bytes.")
        }
        do {
            return try await DeclaredLengthBody(base: request.body, declared: declared).collect(upTo: maxBody)
        } catch let error as IncompleteBody {
            throw AppError.invalidField("body", "\(error.description); nothing was imported")
        } catch {
            throw AppError(.contentTooLarge, code: .payloadTooLarge, detail: "The body exceeds \(maxBody) bytes.")
        }
    }

    /// The rows as text, checked before anything is stored; `source` names the field a bad
    /// CSV header is reported on (`body` or `fileId`).
    /// - Throws: 400 for text that is not UTF-8, holds NUL, has no row, or (CSV) whose header
    ///   names columns a product does not have.
    static func checkedRows(_ buffer: ByteBuffer, format: String, source: String) throws -> String {
        guard let text = String(validating: buffer.readableBytesView, as: UTF8.self), !text.contains("\u{0}") else {
            throw AppError.invalidField("body", "must be UTF-8 text without NUL characters")
        }
        guard !text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else {
            throw AppError.invalidField("body", "must contain at least one row")
        }
        // A header naming columns a product does not have fails the whole file: said now, not
        // by a job discarded later. (A header that cannot be read at all is the job's to report.)
        if format == "csv", case let unknown = ImportRows.unknownColumns(csv: text), !unknown.isEmpty {
            throw AppError.invalidField(source, ImportRows.unknownColumnsIssue(unknown))
        }
        return text
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
        return (file.format, try await FilesController.storeCall { try await blobs.read(tenantId: tenantId, id: file.id, limit: Self.maxBody) })
    }

    static func run(_ args: ImportProducts, context: JobContext, catalog: CatalogService) async throws {
        let importId = args.importId
        let tenantId = context.job.tenantId
        guard let (format, body) = try await catalog.store.loadImport(id: importId, tenantId: tenantId) else {
            throw PermanentJobError("the import's rows are gone")
        }
        try await apply(ImportInput(format: format, body: body), importId: importId, tenantId: tenantId, context: context, catalog: catalog)
    }

    /// Upserts the rows of `input` in batches of `batchSize`, reporting progress after each.
    /// The body is read twice, streaming, record by record: first to count its rows and find
    /// a malformed file (which then fails whole, before any row is written), then to apply it.
    static func apply(_ input: ImportInput, importId: String, tenantId: String, context: JobContext, catalog: CatalogService) async throws {
        var progress = ImportProgress()
        var rows: ImportRows
        do {
            progress.rowsTotal = try input.countRows()
            rows = try input.rows()
        } catch let issue as ImportIssue {
            progress.record(issue)
            try await context.reportProgress(progress.json(done: false))
            // The job ends here for good: its stored rows are of no further use.
            try? await catalog.store.deleteImport(id: importId)
            // The issue's field is part of what it says: `colour is not a known column`.
            let what = issue.field == "body" ? issue.issue : "\(issue.field) \(issue.issue)"
            throw PermanentJobError("the import is not valid \(input.format.uppercased()): \(what)")
        }
        var pending: [ImportedProduct] = []
        var seen = Set<String>()
        let now = WallClock.milliseconds()
        /// Writes the pending rows; an update-only row whose SKU matches no product becomes a row
        /// error naming the first required column it lacks.
        func flush() async throws {
            let missing = try await catalog.store.upsert(imported: pending.map(\.upsert))
            for row in pending where missing.contains(row.upsert.product.sku) {
                progress.imported -= 1
                progress.record(
                    ImportIssue(
                        row: row.line, field: row.lacking, issue: "is required to create a product (no product has SKU \(row.upsert.product.sku))"))
            }
            pending.removeAll(keepingCapacity: true)
            seen.removeAll(keepingCapacity: true)
            await catalog.invalidate(tenantId: tenantId)
        }
        while let (line, row) = try rows.next() {
            try Task.checkCancellation()
            switch row.flatMap({ product(from: $0, line: line, tenantId: tenantId, now: now) }) {
            case .failure(let issue): progress.record(issue)
            case .success(let product):
                // A SKU twice in one file: the rows apply in order, as sequential upserts (a
                // later row that gives fewer columns keeps what the earlier one wrote).
                if seen.contains(product.upsert.product.sku) { try await flush() }
                seen.insert(product.upsert.product.sku)
                pending.append(product)
                progress.imported += 1
            }
            if pending.count >= batchSize {
                try await flush()
                try await context.reportProgress(progress.json())
            }
        }
        try await flush()
        try await context.reportProgress(progress.json())
        try await catalog.store.deleteImport(id: importId)
    }

    /// The product a row gives, as an upsert by SKU of the columns the row has (a CSV header's
    /// columns; an NDJSON record's keys). An optional column given empty or `null` is cleared
    /// (no description or category, stock 0, attributes `{}`); a required one (`name`,
    /// `priceMinor`, `currency`) cannot be null. A row without every required column may only
    /// update a product (the store finds out which).
    static func product(from row: ImportRows.Row, line: Int, tenantId: String, now: Int64) -> Result<ImportedProduct, ImportIssue> {
        var issues: [FieldIssue] = []
        func text(_ key: String, required: Bool) -> String? {
            switch row[key] {
            case .text(let value)?: return value
            case nil: return nil
            case .null?:
                if required { issues.append(FieldIssue(field: key, issue: key == "sku" ? "is required" : "must not be null")) }
                return nil
            default:
                issues.append(FieldIssue(field: key, issue: "must be a string"))
                return nil
            }
        }
        func integer(_ key: String, required: Bool) -> Int64? {
            switch row[key] {
            case .integer(let value)? where value.magnitude < 9_000_000_000_000_000: return value
            case .real(let value)? where value.rounded() == value && abs(value) < 9e15: return Int64(value)
            case .text(let value)?:
                if let parsed = Int64(value.trimmingCharacters(in: .whitespaces)) { return parsed }
                if value.isEmpty && !required { return nil }
            case nil: return nil
            case .null?:
                if required { issues.append(FieldIssue(field: key, issue: "must not be null")) }
                return nil
            default: break
            }
            issues.append(FieldIssue(field: key, issue: "must be an integer"))
            return nil
        }
        guard row["sku"] != nil else { return .failure(ImportIssue(row: line, field: "sku", issue: "is required")) }
        let sku = text("sku", required: true) ?? ""
        let columns = Set(ProductColumn.allCases.filter { row[$0.rawValue] != nil })
        let lacking = ProductColumn.required.first { !columns.contains($0) }
        let name = text("name", required: true).flatMap { ProductRules.name($0, into: &issues) } ?? ""
        let description = text("description", required: false).flatMap { $0.isEmpty ? nil : $0 }
        let price = integer("priceMinor", required: true) ?? 0
        let currency = text("currency", required: true) ?? ""
        let category = text("category", required: false).flatMap { $0.isEmpty ? nil : $0 }
        let stock = integer("stock", required: false) ?? 0
        var attributes = "{}"
        switch row["attributes"] {
        case nil, .null?, .text("")?: break
        case .text(let raw)?, .json(let raw)?:
            // CSV carries the object as text; NDJSON as the object itself.
            if let value = JSONValue(text: raw) {
                attributes = ProductRules.attributes(value, into: &issues) ?? attributes
            } else {
                issues.append(FieldIssue(field: "attributes", issue: "must be a JSON object"))
            }
        case _?: issues.append(FieldIssue(field: "attributes", issue: "must be a JSON object"))
        }
        let product = Product(
            id: UUIDv7.make(), tenantId: tenantId, sku: sku, name: name, description: description, priceMinor: price,
            currency: currency, category: category, stock: stock, attributes: attributes, version: 1, createdAt: now, updatedAt: now)
        if issues.isEmpty {
            // Only the row's own columns are checked: the others hold placeholders.
            var checked: [FieldIssue] = []
            ProductRules.check(product, into: &checked)
            issues = checked.filter { $0.field == "sku" || ProductColumn(rawValue: $0.field).map(columns.contains) == true }
        }
        if let first = issues.first { return .failure(ImportIssue(row: line, field: first.field, issue: first.issue)) }
        return .success(
            ImportedProduct(
                line: line, upsert: ProductUpsert(product: product, columns: columns, updateOnly: lacking != nil),
                lacking: lacking?.rawValue ?? ""))
    }
}

/// A valid import row waiting to be written: its data row number, its upsert, and the first
/// required column it lacks (empty when it has them all).
struct ImportedProduct {
    var line: Int
    var upsert: ProductUpsert
    var lacking: String
}

/// A problem with one input row (`row` is 1-based, counting data rows), or with the whole
/// file (`row` 0 for its header).
struct ImportIssue: Error, Equatable {
    var row: Int
    var field: String
    var issue: String
}

/// Counts and the first `maxErrors` row errors, as the job's progress reports them.
struct ImportProgress {
    var rowsTotal = 0
    var imported = 0
    var failed = 0
    var issues: [ImportIssue] = []

    mutating func record(_ issue: ImportIssue) {
        failed += 1
        if issues.count < ProductImporter.maxErrors { issues.append(issue) }
    }

    /// The errors in row order (a row found update-only with no product is known only when its
    /// batch is written, after later rows were read).
    var errors: [JSONValue] {
        issues.sorted { $0.row < $1.row }.map {
            .object(["row": .number(Double($0.row)), "field": .string($0.field), "issue": .string($0.issue)])
        }
    }

    /// `{rowsTotal, rowsDone, imported, failed, errors}`; a file that failed whole reports no
    /// rows at all (and no `rowsDone`).
    func json(done: Bool = true) -> JSONValue {
        guard done else {
            return .object(["rowsTotal": .number(0), "imported": .number(0), "failed": .number(0), "errors": .array(errors)])
        }
        return .object([
            "rowsTotal": .number(Double(rowsTotal)), "rowsDone": .number(Double(imported + failed)), "imported": .number(Double(imported)),
            "failed": .number(Double(failed)), "errors": .array(errors),
        ])
    }
}

/// A stored import body and its format (`csv` or `ndjson`).
struct ImportInput {
    var format: String
    var body: String

    /// The rows, read from the start.
    /// - Throws: `ImportIssue` when the CSV header is malformed or names an unknown column.
    func rows() throws -> ImportRows {
        try ImportRows(format: format, source: MemoryByteSource(body))
    }

    /// The number of rows (good or bad) the body holds.
    /// - Throws: `ImportIssue` for a file that fails whole (see `ImportRows.next`).
    func countRows() throws -> Int {
        var rows = try rows()
        var count = 0
        while try rows.next() != nil { count += 1 }
        return count
    }
}

/// An import's rows, one at a time, from CairnFormats' streaming readers: memory stays flat
/// whatever the number of rows.
///
/// - CSV (RFC 4180, `,`) with a header row naming the columns (`sku,name,description,
///   priceMinor,currency,category,stock,attributes`; unknown columns are refused, order is
///   free). Every value is text (no null markers: `NA` is a name like any other).
/// - NDJSON: one object per line, fields as in `POST /products` (nested values kept as JSON);
///   a line with an unknown or repeated key is a row error naming it.
struct ImportRows {
    /// One input row as field values by column name (missing columns absent).
    typealias Row = [String: FieldValue]

    static let known: Set<String> = ["sku", "name", "description", "priceMinor", "currency", "category", "stock", "attributes"]

    /// The known columns (fields), sorted and comma-separated.
    static var knownList: String { known.sorted().joined(separator: ", ") }

    /// The issue of a CSV column or NDJSON key that is not a product field.
    static func unknownIssue(kind: String) -> String {
        "is not a known \(kind) (\(knownList))"
    }

    /// The issue of a CSV header naming `unknown` columns, naming each of them and the known ones.
    static func unknownColumnsIssue(_ unknown: [String]) -> String {
        let names = unknown.map { "\"\($0)\"" }.joined(separator: ", ")
        let what = unknown.count == 1 ? "an unknown column" : "unknown columns"
        return "has a CSV header naming \(what), \(names) (the known columns are \(knownList))"
    }

    /// The columns of a CSV `text`'s header that are not product fields, in header order; none
    /// when the header names only known columns or cannot be read. Reads only the header.
    static func unknownColumns(csv text: String) -> [String] {
        guard let csv = try? CSVReader(source: MemoryByteSource(text), options: csvOptions) else { return [] }
        return csv.columns.map { $0.trimmingCharacters(in: .whitespaces) }.filter { !known.contains($0) }
    }

    /// RFC 4180 with `,`; no null markers (`NA` is a name like any other).
    private static var csvOptions: CSVOptions {
        var options = CSVOptions()
        options.delimiter = UInt8(ascii: ",")
        options.nullValues = []
        return options
    }

    private enum Reader {
        case csv(CSVReader, columns: [String])
        case ndjson(JSONRecordReader)
    }

    private let reader: Reader

    /// Opens the rows of `source`; for CSV, reads and checks the header.
    /// - Throws: `ImportIssue` for a malformed header or an unknown column.
    init(format: String, source: some ByteSource) throws {
        guard format == "csv" else {
            var options = JSONOptions()
            options.layout = .lines
            options.flatten = false
            reader = .ndjson(try Self.opening { try JSONRecordReader(source: source, options: options) })
            return
        }
        let csv = try Self.opening { try CSVReader(source: source, options: Self.csvOptions) }
        let columns = csv.columns.map { $0.trimmingCharacters(in: .whitespaces) }
        let unknown = columns.filter { !Self.known.contains($0) }
        if let first = unknown.first {
            let others = unknown.dropFirst().map { "\"\($0)\"" }.joined(separator: ", ")
            let issue =
                others.isEmpty
                ? Self.unknownIssue(kind: "column") : "is not a known column, nor are \(others) (\(Self.knownList))"
            throw ImportIssue(row: 0, field: first, issue: issue)
        }
        reader = .csv(csv, columns: columns)
    }

    private static func opening<Reader>(_ open: () throws -> Reader) throws -> Reader {
        do {
            return try open()
        } catch let error as IngestError {
            throw ImportIssue(row: 0, field: "body", issue: error.description)
        }
    }

    /// The next row and its data row number (from 1), or nil at the end. A row that cannot be
    /// read (a CSV record with another number of fields than the header, an NDJSON line that
    /// is not one JSON object) is a failure, and reading goes on with the next.
    /// - Throws: `ImportIssue` (field `body`) when the file cannot be read past a problem:
    ///   an unclosed quote or text after a closing quote.
    mutating func next() throws -> (line: Int, row: Result<Row, ImportIssue>)? {
        switch reader {
        case .csv(let csv, let columns):
            let start = csv.bytesConsumed
            do {
                guard let record = try csv.next() else { return nil }
                return (csv.row, .success(Row(zip(columns, record.map { FieldValue.text($0 ?? "") }), uniquingKeysWith: { $1 })))
            } catch let error as IngestError where error.kind == .malformed && csv.bytesConsumed != start {
                // The reader is past the record: only this row is bad.
                return (csv.row, .failure(ImportIssue(row: csv.row, field: "row", issue: error.message)))
            } catch let error as IngestError {
                throw ImportIssue(row: error.row ?? csv.row + 1, field: "body", issue: error.description)
            }
        case .ndjson(let lines):
            do {
                guard let record = try lines.next() else { return nil }
                // As strict as a CSV header and as `POST /products`: a repeated key does not let
                // the last copy win, and an unknown one is not silently dropped.
                if let name = lines.repeatedName {
                    return (lines.row, .failure(ImportIssue(row: lines.row, field: name, issue: "appears more than once")))
                }
                if let name = record.first(where: { !Self.known.contains($0.name) })?.name {
                    return (lines.row, .failure(ImportIssue(row: lines.row, field: name, issue: Self.unknownIssue(kind: "field"))))
                }
                return (lines.row, .success(Row(record.map { ($0.name, $0.value) }, uniquingKeysWith: { $1 })))
            } catch let error as IngestError where error.kind == .malformed || error.kind == .invalidUTF8 {
                try lines.skipLine()
                return (lines.row, .failure(ImportIssue(row: lines.row, field: "row", issue: error.message)))
            } catch let error as IngestError {
                throw ImportIssue(row: error.row ?? lines.row + 1, field: "body", issue: error.description)
            }
        }
    }
}
