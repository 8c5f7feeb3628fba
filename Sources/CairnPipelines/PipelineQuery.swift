import CairnFormats
import CairnSandbox

/// The outcome of the query phase.
struct QueryOutcome: Sendable {
    var rows: Int
    var bytes: Int64
    var sha256: String
    var columns: [String]
}

extension PipelineEngine {
    /// Runs the tenant's query over the loaded database and writes the result to `outputPath`.
    /// - Throws: `SandboxError` (`refused`, `notAQuery`, `sql`, `timeout`, `cancelled`),
    ///   `PipelineFailure` when the output would exceed `maxBytes`.
    static func query(
        spec: PipelineSpec, databasePath: String, outputPath: String, maxBytes: Int64, timeoutSeconds: Double, control: SandboxControl,
        report: (Int) -> Void
    ) throws -> QueryOutcome {
        let db = try SandboxDatabase(path: databasePath, control: control)
        db.lockDown()
        let statement = try db.prepareQuery(spec.sql)
        control.setDeadline(seconds: timeoutSeconds)
        let count = statement.columnCount
        let names = Loader.unique((0..<count).map { statement.columnName(Int32($0)) })
        let booleans = (0..<count).map { statement.declaredType(Int32($0))?.uppercased() == "BOOLEAN" }
        let writer = try OutputWriter(path: outputPath, maxBytes: maxBytes)
        let format = spec.output.format
        switch format {
        case .csv:
            for index in 0..<count {
                if index > 0 { writer.byte(UInt8(ascii: ",")) }
                writer.csvText(Array(names[index].utf8))
            }
            writer.byte(0x0A)
        case .json: writer.byte(UInt8(ascii: "["))
        case .ndjson: break
        }
        let keys = names.map { name -> [UInt8] in
            var key = OutputWriter.jsonString(Array(name.utf8))
            key.append(UInt8(ascii: ":"))
            return key
        }
        var rows = 0
        while try statement.step() {
            if format == .csv {
                for index in 0..<count {
                    if index > 0 { writer.byte(UInt8(ascii: ",")) }
                    writer.csvValue(statement, Int32(index))
                }
                writer.byte(0x0A)
            } else {
                if format == .json && rows > 0 { writer.byte(UInt8(ascii: ",")) }
                writer.byte(UInt8(ascii: "{"))
                for index in 0..<count {
                    if index > 0 { writer.byte(UInt8(ascii: ",")) }
                    writer.bytes(keys[index])
                    writer.jsonValue(statement, Int32(index), boolean: booleans[index])
                }
                writer.byte(UInt8(ascii: "}"))
                if format == .ndjson { writer.byte(0x0A) }
            }
            rows += 1
            if writer.failed { break }
            if rows % 10_000 == 0 { report(rows) }
        }
        if format == .json { writer.bytes(Array("]\n".utf8)) }
        let (bytes, digest) = try writer.close()
        return QueryOutcome(rows: rows, bytes: bytes, sha256: digest, columns: names)
    }
}
