import CairnFormats
import CairnHTTP
import HummingbirdCore
import Logging
import NIOCore

/// One report's body being written: batches read by keyset, one read ahead while the previous
/// one is encoded (and compressed) and written, so at most two batches are in memory and a slow
/// client slows the reads. When a write or a read fails, the read-ahead is cancelled.
struct CSVReportStream<Row: Sendable>: Sendable {
    /// A batch of rows and the key to continue after (nil when it is the last).
    typealias Batch = (next: String?, rows: [Row])

    let report: CSVReport<Row>
    /// True: text cells are not neutralised.
    let raw: Bool
    let gzip: Bool
    let batchSize: Int
    let tenantId: String
    let requestId: String
    let logger: Logger
    let fetch: @Sendable (_ tenantId: String, _ after: String?, _ limit: Int) async throws -> [Row]
    let metrics: ReportMetrics

    init(
        report: CSVReport<Row>, raw: Bool, gzip: Bool, batchSize: Int, tenantId: String, requestId: String, logger: Logger,
        fetch: @escaping @Sendable (_ tenantId: String, _ after: String?, _ limit: Int) async throws -> [Row]
    ) {
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
        var csv = CSVWriter(neutraliseFormulas: !raw)
        csv.header(report.header)
        var rowsWritten = 0
        // One batch is read ahead while the previous one is encoded and written.
        var pending: Task<Batch, any Error>? = Task { try await read(after: nil) }
        do {
            while let task = pending {
                let batch = try await task.value
                pending = batch.next.map { next in Task { try await read(after: next) } }
                let chunk = try encode(batch.rows, into: &csv, compressor: compressor, last: pending == nil)
                rowsWritten += batch.rows.count
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

    /// The next batch after the key `after` (from the first row when nil).
    func read(after: String?) async throws -> Batch {
        metrics.batchRead()
        let rows = try await fetch(tenantId, after, batchSize)
        return (rows.count == batchSize ? rows.last.map(report.key) : nil, rows)
    }

    /// Encodes `rows` after what `csv` holds and takes its bytes out, gzip-compressed when asked
    /// (`last` ends the gzip stream); the result may be empty while gzip buffers.
    func encode(_ rows: [Row], into csv: inout CSVWriter, compressor: GzipStream?, last: Bool) throws -> ByteBuffer {
        for row in rows {
            report.encode(row, &csv)
            csv.endRecord()
        }
        metrics.rows(rows.count)
        var chunk = ByteBuffer(bytes: csv.bytes)
        csv.bytes.removeAll(keepingCapacity: true)
        if let compressor { chunk = try compressor.compress(chunk, finish: last) }
        return chunk
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
