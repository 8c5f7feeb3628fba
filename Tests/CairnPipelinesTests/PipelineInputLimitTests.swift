import CairnTestSupport
import Foundation
import Testing

/// Runs never succeed on part of a file, and a record over a reader's limit fails its run with
/// a message naming the limit.
@Suite("Pipelines: stream errors and input limits")
struct PipelineInputLimitTests {
    /// `airports.csv` (1,458 data rows) with data row 16's name field broken by `breaking`.
    static func airports(breakingRow16 breaking: (String) -> String) throws -> [UInt8] {
        var lines = try String(contentsOfFile: "\(sharedData)/airports.csv", encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false)
            .map(String.init)
        var fields = lines[16].split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        fields[1] = breaking(fields[1])
        lines[16] = fields.joined(separator: ",")
        return Array(lines.joined(separator: "\n").utf8)
    }

    @Test(arguments: TestEngine.available)
    func aCSVThatCannotBeReadPastAnErrorFailsEvenWithSkip(engine: TestEngine) async throws {
        try await withPipelines(engine) { tenant, _, _ in
            let pipeline = try await tenant.create(pipelineBody("SELECT count(*) AS n FROM input", onRowError: "skip"))
            let cases: [(label: String, bytes: [UInt8], message: String)] = [
                ("an unclosed quote", try Self.airports { "\"" + $0 }, "a quoted field is never closed (row 16"),
                ("text after a closing quote", try Self.airports { "\"\($0)\"x" }, "unexpected text after a closing quote (row 16"),
            ]
            for (label, bytes, message) in cases {
                let job = try await tenant.run(pipeline, fileId: try await tenant.upload(bytes))
                #expect(job["state"] as? String == "discarded", "\(label): \(job)")
                let result = try #require(job["result"] as? [String: Any], "\(label)")
                #expect(result["outputFileId"] == nil, "\(label)")
                let failure = result["failure"] as? String ?? ""
                #expect(failure.contains(message), "\(label): \(failure)")
            }
            // The same file with its row intact loads whole.
            let whole = try await tenant.run(pipeline, fileId: try await tenant.upload(try Self.airports { $0 }))
            #expect(whole["state"] as? String == "succeeded")
            #expect(try await tenant.rows(of: whole).first?["n"] as? Int == 1458)
        }
    }

    @Test(arguments: TestEngine.available)
    func aRecordOverAReadersLimitFailsItsRun(engine: TestEngine) async throws {
        try await withPipelines(engine) { tenant, _, _ in
            // CSV: a header of 10,001 columns.
            let wide = Array(((1...10_001).map { "c\($0)" }.joined(separator: ",") + "\n" + String(repeating: "1,", count: 10_000) + "1\n").utf8)
            let csv = try await tenant.run(
                try await tenant.create(pipelineBody("SELECT 1 AS one", onRowError: "skip")), fileId: try await tenant.upload(wide))
            #expect(csv["state"] as? String == "discarded")
            let csvFailure = (csv["result"] as? [String: Any])?["failure"] as? String ?? ""
            #expect(csvFailure.contains("more than the limit of 10000 columns"), "\(csvFailure)")

            // NDJSON: a line longer than 16 MiB, with skip.
            let long = Array("{\"n\":1}\n{\"n\":\"".utf8) + [UInt8](repeating: UInt8(ascii: "x"), count: 16 << 20) + Array("\"}\n{\"n\":3}\n".utf8)
            let ndjson = try await tenant.run(
                try await tenant.create(pipelineBody("SELECT count(*) AS c FROM input", format: "ndjson", onRowError: "skip")),
                fileId: try await tenant.upload(long, contentType: "application/x-ndjson"))
            #expect(ndjson["state"] as? String == "discarded")
            let ndjsonFailure = (ndjson["result"] as? [String: Any])?["failure"] as? String ?? ""
            #expect(ndjsonFailure.contains("a line is longer than \(16 << 20) bytes"), "\(ndjsonFailure)")

            // XML: an element's text longer than 8 MiB.
            let text = Array("<r><row><a>".utf8) + [UInt8](repeating: UInt8(ascii: "x"), count: (8 << 20) + 1) + Array("</a></row></r>".utf8)
            let xml = try await tenant.run(
                try await tenant.create(pipelineBody("SELECT count(*) AS c FROM input", format: "xml", extra: ["recordPath": "/r/row"])),
                fileId: try await tenant.upload(text, contentType: "application/xml"))
            #expect(xml["state"] as? String == "discarded")
            let xmlFailure = (xml["result"] as? [String: Any])?["failure"] as? String ?? ""
            #expect(xmlFailure.contains("text is longer than \(8 << 20) bytes"), "\(xmlFailure)")
        }
    }
}
