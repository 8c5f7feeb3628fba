import CairnFormats
import CairnSandbox
import CairnTestSupport
import Foundation
import Testing

@testable import CairnPipelines

/// A load binds only the `input` columns the query reads (the others are type-checked and
/// stored NULL): every query must give exactly what it gives over a fully loaded table.
@Suite("Pipeline loads skip the columns the query does not read", .dedicatedThreads)
struct PipelineColumnPushdownTests {
    /// Ten columns, every value present, with repeats so that joins on them match: `k` repeats
    /// every 7 rows, the others are functions of it or of the row.
    static let csv: String = {
        var text = "k,name,amount,ratio,flag,day,a,b,c,d\n"
        for row in 0..<60 {
            let k = row % 7
            text += "\(k),n\(k),\(k * 10),\(Double(k) / 4),\(k % 2 == 0 ? "true" : "false"),2024-01-0\(k + 1),\(k % 3),x\(k),\(k * k),\"q,\(k)\"\n"
        }
        return text
    }()

    /// Loads `csv` for `loadSQL` and runs `sql` over it; the output's bytes (NDJSON).
    static func output(loadingFor loadSQL: String, query sql: String, folder: String) throws -> String {
        let input = folder + "/input.csv"
        if !FileManager.default.fileExists(atPath: input) { _ = FileManager.default.createFile(atPath: input, contents: Data(csv.utf8)) }
        let database = folder + "/\(UUID().uuidString).sqlite"
        let loadSpec = PipelineSpec(input: .init(format: .csv), sql: loadSQL, output: .init(format: .ndjson), onRowError: .fail)
        let state = try PipelineEngine.load(
            spec: loadSpec, filePath: input, databasePath: database, control: SandboxControl(), resume: nil, report: { _ in })
        #expect(state.rowsLoaded == 60)
        var spec = loadSpec
        spec.sql = sql
        let outputPath = database + ".out"
        _ = try PipelineEngine.query(
            spec: spec, databasePath: database, outputPath: outputPath, maxBytes: 1 << 20, timeoutSeconds: 10, control: SandboxControl(),
            report: { _ in })
        return try String(contentsOfFile: outputPath, encoding: .utf8)
    }

    static func withFolder<R>(_ body: (String) throws -> R) throws -> R {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("cairn-pushdown-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        return try body(folder)
    }

    @Test(arguments: [
        // Two of ten columns, directly, through a subquery and through a common table expression.
        "SELECT k, sum(amount) AS s FROM input GROUP BY k ORDER BY k",
        "SELECT k, s FROM (SELECT k, sum(amount) AS s FROM input WHERE flag GROUP BY k) ORDER BY k",
        "WITH v AS (SELECT * FROM input) SELECT name, count(*) AS n FROM v GROUP BY name ORDER BY name",
        "WITH v AS (SELECT k, ratio FROM input) SELECT k, max(ratio) AS r FROM v GROUP BY k ORDER BY k",
        // Every column: SELECT *, table.*, and a row-order check through rowid.
        "SELECT * FROM input",
        "SELECT input.* FROM input WHERE rowid % 5 = 0",
        "SELECT count(*) AS n, count(DISTINCT d) AS d FROM input",
        // Joins that compare columns SQLite never reports to the authorizer.
        "SELECT count(*) AS n FROM input x NATURAL JOIN input y",
        "SELECT count(*) AS n FROM input x JOIN input y USING (k, c)",
        "SELECT x.name, count(*) AS n FROM input x LEFT JOIN input y USING (b) GROUP BY 1 ORDER BY 1",
        "SELECT count(*) AS n FROM input x JOIN input y ON x.k = y.k NATURAL JOIN input z",
    ])
    func aQueryGivesWhatItGivesOverEveryColumn(sql: String) throws {
        try Self.withFolder { folder in
            let full = try Self.output(loadingFor: "SELECT * FROM input", query: sql, folder: folder)
            let pushed = try Self.output(loadingFor: sql, query: sql, folder: folder)
            #expect(!full.isEmpty)
            #expect(pushed == full, "\(sql)")
        }
    }

    @Test func columnsTheQueryNeverReadsAreStoredNull() throws {
        try Self.withFolder { folder in
            // Proof that the load above skipped columns at all (or the comparison shows nothing).
            let loadSQL = "SELECT k, sum(amount) FROM input GROUP BY k"
            let seen = try Self.output(
                loadingFor: loadSQL, query: "SELECT count(name) AS names, count(amount) AS amounts, count(k) AS ks FROM input", folder: folder)
            #expect(seen == #"{"names":0,"amounts":60,"ks":60}"# + "\n")
            let joined = try Self.output(
                loadingFor: "SELECT count(*) FROM input x JOIN input y USING (k)", query: "SELECT count(name) AS names FROM input", folder: folder)
            #expect(joined == #"{"names":60}"# + "\n", "USING: every column loaded")
        }
    }

    @Test func namedFieldsSkipColumnsTooWithTheSameResult() throws {
        try Self.withFolder { folder in
            var lines = ""
            for row in 0..<40 {
                lines += #"{"k":\#(row % 5),"name":"n\#(row % 3)","amount":\#(row).5,"ok":\#(row % 2 == 0),"tags":[\#(row)]}"# + "\n"
            }
            let input = folder + "/input.ndjson"
            _ = FileManager.default.createFile(atPath: input, contents: Data(lines.utf8))
            func run(load: String, query: String) throws -> String {
                let database = folder + "/\(UUID().uuidString).sqlite"
                var spec = PipelineSpec(input: .init(format: .ndjson), sql: load, output: .init(format: .ndjson), onRowError: .fail)
                _ = try PipelineEngine.load(
                    spec: spec, filePath: input, databasePath: database, control: SandboxControl(), resume: nil, report: { _ in })
                spec.sql = query
                _ = try PipelineEngine.query(
                    spec: spec, databasePath: database, outputPath: database + ".out", maxBytes: 1 << 20, timeoutSeconds: 10,
                    control: SandboxControl(), report: { _ in })
                return try String(contentsOfFile: database + ".out", encoding: .utf8)
            }
            for sql in [
                "SELECT k, sum(amount) AS s FROM input GROUP BY k ORDER BY k", "SELECT * FROM input WHERE ok",
                "SELECT count(*) AS n FROM input x NATURAL JOIN input y",
            ] {
                #expect(try run(load: sql, query: sql) == run(load: "SELECT * FROM input", query: sql), "\(sql)")
            }
            let skipped = try run(load: "SELECT sum(amount) FROM input", query: "SELECT count(name) AS names, count(amount) AS amounts FROM input")
            #expect(skipped == #"{"names":0,"amounts":40}"# + "\n")
        }
    }

    @Test func rowsPastTheTypeSampleKeepTheirNullsAndQuotedText() throws {
        // Past the first 1,000 records, text is bound borrowing the reader's bytes and bindings
        // are kept from row to row: a null must never show the previous row's value, and a
        // value with doubled quotes its own.
        try Self.withFolder { folder in
            var text = "i,name,note\n"
            for row in 1...3000 { text += row % 2 == 0 ? "\(row),,\"say \"\"\(row)\"\"\"\n" : "\(row),n\(row),NA\n" }
            let input = folder + "/input.csv"
            _ = FileManager.default.createFile(atPath: input, contents: Data(text.utf8))
            let database = folder + "/work.sqlite"
            var spec = PipelineSpec(
                input: .init(format: .csv), sql: "SELECT count(name) AS names, count(note) AS notes, max(note) AS last FROM input WHERE i > 1000",
                output: .init(format: .ndjson), onRowError: .fail)
            _ = try PipelineEngine.load(spec: spec, filePath: input, databasePath: database, control: SandboxControl(), resume: nil, report: { _ in })
            spec.sql += " UNION ALL SELECT count(name), count(note), min(note) FROM input WHERE i > 1000"
            _ = try PipelineEngine.query(
                spec: spec, databasePath: database, outputPath: database + ".out", maxBytes: 1 << 20, timeoutSeconds: 10,
                control: SandboxControl(), report: { _ in })
            let lines = try String(contentsOfFile: database + ".out", encoding: .utf8)
            #expect(
                lines == #"{"names":1000,"notes":1000,"last":"say \"3000\""}"# + "\n" + #"{"names":1000,"notes":1000,"last":"say \"1002\""}"# + "\n")
        }
    }

    @Test func columnsTheQueryDoesNotReadAreStillChecked() throws {
        // Past the type sample an unread column is never bound, but a value that does not fit
        // its type (a timestamp here) or is not UTF-8 (in a text column) is still a row error,
        // with the whole file's row number and byte offset.
        try Self.withFolder { folder in
            var text = Array("i,day,note\n".utf8)
            var offsets: [Int: Int] = [:]
            for row in 1...1500 {
                offsets[row] = text.count
                switch row {
                case 1200: text += Array("1200,2024-02-30,x\n".utf8)
                case 1300: text += Array("1300,2024-03-01,caf".utf8) + [0xC3] + Array("\n".utf8)
                default: text += Array("\(row),2024-03-0\(row % 9 + 1),n\(row)\n".utf8)
                }
            }
            let input = folder + "/input.csv"
            _ = FileManager.default.createFile(atPath: input, contents: Data(text))
            let spec = PipelineSpec(input: .init(format: .csv), sql: "SELECT sum(i) FROM input", output: .init(format: .ndjson), onRowError: .skip)
            let state = try PipelineEngine.load(
                spec: spec, filePath: input, databasePath: folder + "/work.sqlite", control: SandboxControl(), resume: nil, report: { _ in })
            #expect(state.columns.map(\.type) == [.integer, .timestamp, .text])
            #expect(state.rowsLoaded == 1498)
            #expect(
                state.errors == [
                    RowError(
                        row: 1200, byteOffset: Int64(offsets[1200]!), column: "day", message: "'2024-02-30' is not an RFC 3339 timestamp or date"),
                    RowError(row: 1300, byteOffset: Int64(offsets[1300]! + 19), column: nil, message: "the text is not valid UTF-8"),
                ])
        }
    }

    @Test func keywordsAreFoundOnlyOutsideQuotesAndComments() {
        let keywords: Set<String> = ["NATURAL", "USING"]
        #expect(SQLText.containsKeyword("select * from input natural join input", anyOf: keywords))
        #expect(SQLText.containsKeyword("SELECT * FROM input a JOIN input b\nUsing(k)", anyOf: keywords))
        #expect(!SQLText.containsKeyword("SELECT 'natural', \"using\", [Using], `natural` FROM input", anyOf: keywords))
        #expect(!SQLText.containsKeyword("SELECT naturally, using_x FROM input -- using\n/* natural */", anyOf: keywords))
        #expect(!SQLText.containsKeyword("SELECT 'it''s using' FROM input", anyOf: keywords))
    }
}
