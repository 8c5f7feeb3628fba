import CairnFormats
import CairnSandbox

/// The outcome of the query phase.
struct QueryOutcome: Codable, Sendable {
    var rows: Int
    var bytes: Int64
    var sha256: String
    var columns: [String]
}

extension PipelineEngine {
    /// Runs the tenant's query over the loaded database and writes the result to `outputPath`.
    /// `admit` sees every row before it is encoded, and may refuse it by throwing.
    /// - Throws: `SandboxError` (`refused`, `notAQuery`, `sql`, `timeout`, `cancelled`,
    ///   `memory`), `PipelineFailure` when the output would exceed `maxBytes`, what `admit`
    ///   throws.
    static func query(
        spec: PipelineSpec, databasePath: String, outputPath: String, maxBytes: Int64, timeoutSeconds: Double, control: SandboxControl,
        report: (Int) -> Void, admit: (SandboxStatement) throws -> Void = { _ in }
    ) throws -> QueryOutcome {
        let db = try SandboxDatabase(path: databasePath, control: control)
        db.lockDown()
        let statement = try db.prepareQuery(spec.sql)
        control.setDeadline(seconds: timeoutSeconds)
        let count = statement.columnCount
        let names = Loader.unique((0..<count).map { statement.columnName(Int32($0)) })
        let booleans = (0..<count).map { statement.declaredType(Int32($0))?.uppercased() == "BOOLEAN" }
        let file = try OutputWriter(path: outputPath, maxBytes: maxBytes)
        let rows: Int
        switch spec.output.format {
        case .csv:
            var encoder = CSVResultEncoder(columns: names)
            rows = try write(statement, with: &encoder, to: file, report: report, admit: admit)
        case .json, .ndjson:
            var encoder = JSONResultEncoder(columns: names, booleans: booleans, lines: spec.output.format == .ndjson)
            rows = try write(statement, with: &encoder, to: file, report: report, admit: admit)
        }
        let (bytes, digest) = try file.close()
        return QueryOutcome(rows: rows, bytes: bytes, sha256: digest, columns: names)
    }

    /// Steps through the result, encoding every row and writing in chunks; stops early when the
    /// file has failed (past its size limit). Returns the rows written.
    private static func write(
        _ statement: SandboxStatement, with encoder: inout some ResultEncoder, to file: OutputWriter, report: (Int) -> Void,
        admit: (SandboxStatement) throws -> Void
    ) throws -> Int {
        var rows = 0
        while try statement.step() {
            try admit(statement)
            encoder.row(statement)
            // SQLite hands out an empty value when it cannot expand one: never write that.
            if statement.ranOutOfMemory { throw SandboxError(.memory, "SQLite ran out of memory") }
            rows += 1
            encoder.drain(into: file, atLeast: OutputWriter.chunkBytes)
            if file.failed { break }
            if rows % 10_000 == 0 { report(rows) }
        }
        encoder.finish()
        encoder.drain(into: file, atLeast: 0)
        return rows
    }
}
