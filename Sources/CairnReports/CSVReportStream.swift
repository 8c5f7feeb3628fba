import CairnFormats
import CairnHTTP
import HummingbirdCore
import Logging
import NIOCore

/// One read of a report: its rows, already written as CSV, and the last row's keyset key.
struct CSVBatch: Sendable {
    /// The batch's records (the first batch starts with the header).
    var csv: CSVWriter
    /// How many rows the batch holds.
    var rows = 0
    /// The last row's key as UTF-8 bytes: overwritten in place on every row, so keeping it
    /// allocates nothing per row.
    var lastKey: [UInt8] = []

    init(csv: CSVWriter) {
        self.csv = csv
    }

    /// Records `key` as the last row's key.
    mutating func key(_ key: UnsafeBufferPointer<UInt8>) {
        lastKey.removeAll(keepingCapacity: true)
        lastKey.append(contentsOf: key)
    }

    /// Records `key` as the last row's key.
    mutating func key(_ key: String) {
        lastKey.removeAll(keepingCapacity: true)
        lastKey.append(contentsOf: key.utf8)
    }
}

/// One report's body being written: batches read by keyset and written as CSV by the read
/// itself, one read ahead while the previous batch is (compressed and) written, so at most two
/// batches are in memory and a slow client slows the reads. When a write or a read fails, the
/// read-ahead is cancelled.
struct CSVReportStream: Sendable {
    /// Reads at most `limit` rows of the tenant after the key `after` (from the first row when
    /// nil) and writes them into the batch it is given.
    typealias Fetch = @Sendable (_ tenantId: String, _ after: String?, _ limit: Int, _ batch: CSVBatch) async throws -> CSVBatch

    let report: CSVReport
    /// True: text cells are not neutralised.
    let raw: Bool
    let gzip: Bool
    let batchSize: Int
    let tenantId: String
    let requestId: String
    let logger: Logger
    let fetch: Fetch
    let metrics: ReportMetrics

    init(report: CSVReport, raw: Bool, gzip: Bool, batchSize: Int, tenantId: String, requestId: String, logger: Logger, fetch: @escaping Fetch) {
        self.report = report
        self.raw = raw
        self.gzip = gzip
        self.batchSize = batchSize
        self.tenantId = tenantId
        self.requestId = requestId
        self.logger = logger
        self.fetch = fetch
        self.metrics = ReportMetrics(report: report.name)
    }

    /// Writes the whole report to `writer` and finishes it.
    /// - Throws: the read's or the write's error (the client went away), after logging it.
    func write(to writer: inout any ResponseBodyWriter) async throws {
        metrics.started()
        defer { metrics.ended() }
        let compressor = try gzip ? GzipStream() : nil
        var first = CSVWriter(neutraliseFormulas: !raw)
        first.header(report.header)
        var rowsWritten = 0
        // One batch is read ahead while the previous one is written.
        var pending: Task<CSVBatch, any Error>? = Task { [first] in try await read(after: nil, into: first) }
        do {
            while let task = pending {
                let batch = try await task.value
                if batch.rows == batchSize {
                    let next = String(decoding: batch.lastKey, as: UTF8.self)
                    // Sized like this batch, so the next one rarely grows its buffer.
                    let csv = CSVWriter(neutraliseFormulas: !raw, capacity: batch.csv.bytes.count + batch.csv.bytes.count / 8)
                    pending = Task { try await read(after: next, into: csv) }
                } else {
                    pending = nil
                }
                rowsWritten += batch.rows
                metrics.rows(batch.rows)
                var chunk = ByteBuffer(bytes: batch.csv.bytes)
                if let compressor { chunk = try compressor.compress(chunk, finish: pending == nil) }
                if chunk.readableBytes == 0 { continue }
                metrics.bytes(chunk.readableBytes)
                try await writer.write(chunk)
            }
            try await writer.finish(nil)
        } catch {
            pending?.cancel()
            stopped(afterRows: rowsWritten, error: error)
            throw error
        }
    }

    /// The next batch after the key `after` (from the first row when nil), written after what
    /// `csv` holds.
    func read(after: String?, into csv: CSVWriter) async throws -> CSVBatch {
        metrics.batchRead()
        return try await fetch(tenantId, after, batchSize, CSVBatch(csv: csv))
    }

    /// Counts and logs a report that stopped before its end.
    func stopped(afterRows rows: Int, error: any Error) {
        metrics.aborted()
        logger.notice(
            "report stopped before the end: client gone or read failed",
            metadata: [
                "report": .string(report.name), "rows": .stringConvertible(rows), "request_id": .string(requestId),
                "error.type": .string(String(reflecting: type(of: error))),
            ])
    }
}

extension CSVReportStream {
    /// A fetch for a report whose rows are read as values (`read`), then written with `encode`
    /// and keyed with `key`.
    static func encoding<Row: Sendable>(
        _ read: @escaping @Sendable (_ tenantId: String, _ after: String?, _ limit: Int) async throws -> [Row],
        key: @escaping @Sendable (Row) -> String, encode: @escaping @Sendable (Row, inout CSVWriter) -> Void
    ) -> Fetch {
        { tenantId, after, limit, batch in
            let rows = try await read(tenantId, after, limit)
            var batch = batch
            for row in rows {
                encode(row, &batch.csv)
                batch.csv.endRecord()
            }
            batch.rows = rows.count
            if let last = rows.last { batch.key(key(last)) }
            return batch
        }
    }
}
