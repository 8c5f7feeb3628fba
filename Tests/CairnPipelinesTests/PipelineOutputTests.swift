import CairnFormats
import CairnSandbox
import CairnTestSupport
import Foundation
import Testing

@testable import CairnPipelines

/// The output writer's bytes for every kind of SQLite value, per output format: pinned so that
/// the shared CSV writer and JSON escaper keep pipeline outputs byte for byte as they were.
@Suite("Pipeline outputs, byte for byte", .dedicatedThreads)
struct PipelineOutputTests {
    /// Loads `flag` (inferred BOOLEAN) and runs a query of awkward values into `format`.
    static func output(_ format: PipelineSpec.OutputFormat) throws -> [UInt8] {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("cairn-output-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let input = folder + "/input.csv"
        _ = FileManager.default.createFile(atPath: input, contents: Data("flag\ntrue\nfalse\n".utf8))
        let sql = """
            SELECT flag, NULL AS "null", -7 AS "int", 1.5 AS "real", 1e300 * 1e300 AS "inf", 'plain' AS "a,b",
                'say "hi", twice' AS "q""x", 'line' || char(10) || 'break' || char(13) || char(10) AS "lf",
                '=1+2' AS "formula", '' AS "empty", char(1) || char(9) || '\\' || char(127) AS "controls",
                'Zürich 東京 🚀' AS "unicode", CAST(x'41ff42' AS TEXT) AS "badUTF8", x'00ff10' AS "blob"
            FROM input ORDER BY flag DESC
            """
        let spec = PipelineSpec(input: .init(format: .csv), sql: sql, output: .init(format: format), onRowError: .fail)
        let database = folder + "/work.sqlite"
        _ = try PipelineEngine.load(spec: spec, filePath: input, databasePath: database, control: SandboxControl(), resume: nil, report: { _ in })
        let path = folder + "/out"
        _ = try PipelineEngine.query(
            spec: spec, databasePath: database, outputPath: path, maxBytes: 1 << 20, timeoutSeconds: 10, control: SandboxControl(), report: { _ in })
        return Array(try Data(contentsOf: URL(fileURLWithPath: path)))
    }

    @Test func csvIsRFC4180WithLFRecordEndsAndNoNeutralising() throws {
        let header = "flag,null,int,real,inf,\"a,b\",\"q\"\"x\",lf,formula,empty,controls,unicode,badUTF8,blob\n"
        let rest = ",,-7,1.5,Infinity,plain,\"say \"\"hi\"\", twice\",\"line\nbreak\r\n\",=1+2,,\u{01}\t\\\u{7F},Zürich 東京 🚀,A\u{FFFD}B,AP8Q\n"
        #expect(try Self.output(.csv) == Array((header + "1" + rest + "0" + rest).utf8))
    }

    /// One result row as a JSON object.
    static func object(flag: Bool) -> String {
        "{\"flag\":\(flag),\"null\":null,\"int\":-7,\"real\":1.5,\"inf\":null,\"a,b\":\"plain\",\"q\\\"x\":\"say \\\"hi\\\", twice\","
            + "\"lf\":\"line\\nbreak\\r\\n\",\"formula\":\"=1+2\",\"empty\":\"\",\"controls\":\"\\u0001\\t\\\\\u{7F}\","
            + "\"unicode\":\"Zürich 東京 🚀\",\"badUTF8\":\"A\u{FFFD}B\",\"blob\":\"AP8Q\"}"
    }

    @Test func ndjsonIsOneObjectPerLine() throws {
        #expect(try Self.output(.ndjson) == Array((Self.object(flag: true) + "\n" + Self.object(flag: false) + "\n").utf8))
    }

    /// A CSV output's infinities are numbers when the file is read back as a pipeline's input,
    /// inferred or declared `real` (not text, not bad rows), and are written the same again.
    @Test func infinitiesInCSVOutputReadBackAsNumbers() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("cairn-infinity-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let input = folder + "/input.csv"
        _ = FileManager.default.createFile(atPath: input, contents: Data("x\nInfinity\n-Infinity\n1.5\n".utf8))
        for declared in [nil, [PipelineSpec.Column(name: "x", type: .real)]] {
            let sql = "SELECT typeof(x) AS t, x > 1e308 AS big, x < -1e308 AS small, x FROM input"
            let spec = PipelineSpec(input: .init(format: .csv, columns: declared), sql: sql, output: .init(format: .csv), onRowError: .fail)
            let database = folder + "/work-\(declared == nil).sqlite"
            let loaded = try PipelineEngine.load(
                spec: spec, filePath: input, databasePath: database, control: SandboxControl(), resume: nil, report: { _ in })
            #expect(loaded.rowsLoaded == 3 && loaded.errorCount == 0, "declared: \(declared != nil)")
            let path = folder + "/out-\(declared == nil).csv"
            _ = try PipelineEngine.query(
                spec: spec, databasePath: database, outputPath: path, maxBytes: 1 << 20, timeoutSeconds: 10, control: SandboxControl(),
                report: { _ in })
            let text = String(decoding: try Data(contentsOf: URL(fileURLWithPath: path)), as: UTF8.self)
            #expect(text == "t,big,small,x\nreal,1,0,Infinity\nreal,0,1,-Infinity\nreal,0,0,1.5\n", "declared: \(declared != nil)")
        }
    }

    @Test func jsonIsOneArray() throws {
        #expect(try Self.output(.json) == Array(("[" + Self.object(flag: true) + "," + Self.object(flag: false) + "]\n").utf8))
    }
}
