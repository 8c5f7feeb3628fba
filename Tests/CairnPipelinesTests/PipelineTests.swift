import CairnAccounts
import CairnFiles
import CairnFormats
import CairnHTTP
import CairnJobs
import CairnSandbox
import CairnServer
import CairnStorage
import CairnTestSupport
import Foundation
import HTTPTypes
import HummingbirdTesting
import NIOCore
import SQLKit
import Testing

@testable import CairnPipelines

/// Runs a Python script (an independent implementation to compare with) and decodes the JSON
/// it prints.
func python(_ script: String, _ arguments: [String] = []) async throws -> Any {
    try JSONSerialization.jsonObject(with: try await runPython(script, arguments), options: [.fragmentsAllowed])
}

/// `flights.csv`, decompressed into the temporary folder once (written under another name and
/// renamed, so a test running beside the first never reads half of it).
func flightsPath() async throws -> String {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("cairn-test-flights-\(getpid()).csv").path
    if !FileManager.default.fileExists(atPath: path) {
        try await runProcess("/bin/sh", ["-c", "gunzip -c \"$0\" > \"$1.$$\" && mv \"$1.$$\" \"$1\"", "\(sharedData)/flights.csv.gz", path])
    }
    return path
}

/// A tenant's session in a pipeline test: uploads, pipelines, runs.
struct PipelineClient {
    let client: any TestClientProtocol
    let token: String
    /// The node's queue, whose job events the runs are awaited on.
    let jobs: JobQueue

    func upload(_ bytes: [UInt8], contentType: String = "text/csv", name: String = "data") async throws -> String {
        let response = try await CairnTestSupport.upload(
            client, token: token, bytes, contentType: contentType, headers: [.contentDisposition: "attachment; filename=\"\(name)\""])
        guard response.status == .created, let id = response.object["id"] as? String else {
            throw TestSetupError("upload failed: \(response.status) \(response.text)")
        }
        return id
    }

    func upload(path: String, contentType: String = "text/csv") async throws -> String {
        try await upload([UInt8](try Data(contentsOf: URL(fileURLWithPath: path))), contentType: contentType)
    }

    func create(_ body: [String: Any]) async throws -> String {
        let response = try await client.json(.post, "/pipelines", body, token: token)
        guard response.status == .created, let id = response.object["id"] as? String else {
            throw TestSetupError("creating the pipeline failed: \(response.status) \(response.text)")
        }
        return id
    }

    func start(_ pipelineId: String, fileId: String, headers: HTTPFields = [:]) async throws -> TestResponse {
        try await client.json(.post, "/pipelines/\(pipelineId)/runs", ["fileId": fileId], token: token, headers: headers)
    }

    /// Starts a run and waits for its job to end; returns the job.
    func run(_ pipelineId: String, fileId: String) async throws -> [String: Any] {
        let started = try await start(pipelineId, fileId: fileId)
        guard started.status == .accepted, let jobId = started.object["id"] as? String else {
            throw TestSetupError("starting the run failed: \(started.status) \(started.text)")
        }
        #expect(started.headers[.location] == "/jobs/\(jobId)")
        return try await finished(jobId)
    }

    /// Waits (on job events) for the run's job to end; returns it as `GET /jobs/{id}` shows it.
    /// The bound only stops a run that never ends: debug-built sandbox processes loading
    /// flights.csv beside the chunked runs' own loads took over 120 s on a busy 2-core machine.
    func finished(_ jobId: String, timeout: Duration = .seconds(300)) async throws -> [String: Any] {
        try await jobs.waitUntilFinished(jobId, timeout: timeout)
        return try await client.json(.get, "/jobs/\(jobId)", token: token).object
    }

    func content(_ fileId: String) async throws -> [UInt8] {
        let response = try await client.execute(uri: "/files/\(fileId)/content", method: .get, headers: [.authorization: "Bearer \(token)"])
        return Array(response.body.readableBytesView)
    }

    /// The output of a succeeded run, parsed as NDJSON.
    func rows(of job: [String: Any]) async throws -> [[String: Any]] {
        let result = try #require(job["result"] as? [String: Any], "no result: \(job)")
        let output = try #require(result["outputFileId"] as? String, "no output: \(result)")
        let text = String(decoding: try await content(output), as: UTF8.self)
        return text.split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8), options: [.fragmentsAllowed]) as? [String: Any]
        }
    }
}

func pipelineBody(
    _ sql: String, format: String = "csv", output: String = "ndjson", onRowError: String = "fail", extra: [String: Any] = [:]
) -> [String: Any] {
    var input: [String: Any] = ["format": format]
    for (key, value) in extra { input[key] = value }
    return ["name": "test", "input": input, "sql": sql, "output": ["format": output], "onRowError": onRowError]
}

func withPipelines<R: Sendable>(
    _ engine: TestEngine, clock: any CairnClock = SystemClock(), configure: @escaping @Sendable (inout CairnConfiguration) -> Void = { _ in },
    _ body: @Sendable (PipelineClient, any TestClientProtocol, CairnComponents) async throws -> R
) async throws -> R {
    try await withTestApp(
        engine, owner: "pipelines@example.com", clock: clock,
        configure: { configuration in
            // Generous: sandbox processes run at nice 10, so a busy test machine slows them; the
            // test of the time limit sets its own.
            configuration.pipelines.timeoutSeconds = 60
            configure(&configuration)
        }, runServices: true
    ) { app, token in
        return try await body(PipelineClient(client: app.client, token: token, jobs: app.components.jobs), app.client, app.components)
    }
}

extension CairnConfiguration {
    /// Gives each pipeline run two minutes of wall clock and `cpuSeconds` of CPU time: on a busy
    /// machine neither ends a run a test means to stop itself (or to stop on the CPU limit alone).
    mutating func allowLongRuns(cpuSeconds: Int = 120) {
        pipelines.timeoutSeconds = 120
        pipelines.cpuSeconds = cpuSeconds
    }
}

@Suite("Pipelines: tenant SQL over uploaded files")
struct PipelineTests {
    @Test(arguments: TestEngine.available)
    func flightsGroupedByCarrierMatchPythonsCSV(engine: TestEngine) async throws {
        let flightsPath = try await flightsPath()
        let expected =
            try await python(
                """
                import csv, json, sys
                counts, sums, total = {}, {}, 0
                with open(sys.argv[1], newline='') as f:
                    for row in csv.DictReader(f):
                        total += 1
                        if row['dep_delay'] in ('', 'NA'): continue
                        counts[row['carrier']] = counts.get(row['carrier'], 0) + 1
                        sums[row['carrier']] = sums.get(row['carrier'], 0) + int(row['dep_delay'])
                json.dump({'total': total, 'carriers': {c: [counts[c], sums[c]] for c in counts}}, sys.stdout)
                """, [flightsPath]) as! [String: Any]
        let carriers = expected["carriers"] as! [String: [Int]]
        let total = expected["total"] as! Int
        try await withPipelines(engine) { tenant, _, _ in
            let file = try await tenant.upload(path: flightsPath)
            let pipeline = try await tenant.create(
                pipelineBody(
                    """
                    SELECT carrier, count(*) AS flights, sum(dep_delay) AS delay,
                           (SELECT count(*) FROM input) AS total
                    FROM input WHERE dep_delay IS NOT NULL GROUP BY carrier ORDER BY carrier
                    """))
            let job = try await tenant.run(pipeline, fileId: file)
            #expect(job["state"] as? String == "succeeded", "\(job["errors"] ?? "")")
            let result = try #require(job["result"] as? [String: Any])
            #expect(result["rowsLoaded"] as? Int == 336_776)
            #expect(result["rowsRead"] as? Int == 336_776)
            let rows = try await tenant.rows(of: job)
            #expect(rows.count == carriers.count)
            for row in rows {
                let carrier = try #require(row["carrier"] as? String)
                #expect(row["flights"] as? Int == carriers[carrier]?[0], "carrier \(carrier)")
                #expect(row["delay"] as? Int == carriers[carrier]?[1], "carrier \(carrier)")
                #expect(row["total"] as? Int == total)
            }
            // The finished job's progress says it all ran.
            let progress = try #require(job["progress"] as? [String: Any])
            #expect(progress["fraction"] as? Double == 1)
            #expect(progress["bytesDone"] as? Int == progress["bytesTotal"] as? Int)
        }
    }

    @Test(arguments: TestEngine.available)
    func realFilesKeepTheirNullsTypesAndRecords(engine: TestEngine) async throws {
        let weatherNA =
            try await python(
                """
                import csv, json, sys
                with open(sys.argv[1], newline='') as f:
                    json.dump(sum(1 for r in csv.DictReader(f) if r['wind_gust'] == 'NA'), sys.stdout)
                """, ["\(sharedData)/weather.csv"]) as! Int
        let carNulls =
            try await python(
                """
                import json, sys
                cars = json.load(open(sys.argv[1]))
                json.dump({'records': len(cars), 'nulls': sum(1 for c in cars if c.get('Miles_per_Gallon') is None)}, sys.stdout)
                """, ["\(sharedData)/cars.json"]) as! [String: Int]
        try await withPipelines(engine) { tenant, _, _ in
            // weather.csv: NA is null, and the gust column is a number.
            let weather = try await tenant.upload(path: "\(sharedData)/weather.csv")
            let weatherJob = try await tenant.run(
                try await tenant.create(
                    pipelineBody("SELECT count(*) AS nulls FROM input WHERE wind_gust IS NULL")),
                fileId: weather)
            #expect(try await tenant.rows(of: weatherJob).first?["nulls"] as? Int == weatherNA)
            let columns = (weatherJob["result"] as? [String: Any])?["columns"] as? [[String: Any]] ?? []
            #expect(columns.first { $0["name"] as? String == "wind_gust" }?["type"] as? String == "real")

            // cars.json: JSON nulls stay null.
            let cars = try await tenant.upload(path: "\(sharedData)/cars.json", contentType: "application/json")
            let carsJob = try await tenant.run(
                try await tenant.create(
                    pipelineBody(
                        "SELECT count(*) AS records, sum(Miles_per_Gallon IS NULL) AS nulls FROM input", format: "json")),
                fileId: cars)
            let counted = try await tenant.rows(of: carsJob).first
            #expect(counted?["records"] as? Int == carNulls["records"])
            #expect(counted?["nulls"] as? Int == carNulls["nulls"])

            // iso_3166-1.xml: 249 countries with their attributes.
            let countries = try await tenant.upload(path: "\(sharedData)/iso_3166-1.xml", contentType: "application/xml")
            let countriesJob = try await tenant.run(
                try await tenant.create(
                    pipelineBody(
                        "SELECT alpha_2_code, name FROM input WHERE alpha_2_code IN ('FR', 'JP') ORDER BY alpha_2_code", format: "xml",
                        extra: ["recordPath": "/iso_3166_entries/iso_3166_entry"])),
                fileId: countries)
            #expect((countriesJob["result"] as? [String: Any])?["rowsLoaded"] as? Int == 249)
            let picked = try await tenant.rows(of: countriesJob)
            #expect(picked.map { $0["alpha_2_code"] as? String } == ["FR", "JP"])
            #expect(picked.map { $0["name"] as? String } == ["France", "Japan"])
            #expect((countriesJob["result"] as? [String: Any])?["warnings"] == nil)

            // A recordPath that names no element succeeds with zero rows, and says why.
            let missed = try await tenant.run(
                try await tenant.create(
                    pipelineBody("SELECT * FROM input", format: "xml", extra: ["recordPath": "/iso_3166_entries/country"])), fileId: countries)
            let missedResult = try #require(missed["result"] as? [String: Any])
            #expect(missedResult["rowsRead"] as? Int == 0)
            #expect((missedResult["warnings"] as? [String])?.first?.contains("/iso_3166_entries/country") == true, "\(missedResult)")
        }
    }

    /// A JSON record that names one field twice (a repeated member, two spellings of one name
    /// in different Unicode normalization forms, a flattened nested name that another member
    /// has) is a bad record naming the field, not a row holding whichever value came last:
    /// skipped and reported with `skip`, the end of the run with `fail`, in NDJSON and arrays.
    @Test(arguments: TestEngine.available)
    func aJSONRecordThatRepeatsAFieldIsABadRecord(engine: TestEngine) async throws {
        try await withPipelines(engine) { tenant, _, _ in
            let lines = [
                #"{"a": 1, "b": 10}"#, #"{"a": 1, "a": 2}"#, #"{"b": {"c": 5}, "b.c": 6, "a": 3}"#, #"{"caf\u00e9": 1, "cafe\u0301": 2}"#,
                #"{"a": 4}"#,
            ]
            let text = lines.joined(separator: "\n") + "\n"
            let sql = "SELECT sum(a) AS total, count(*) AS c FROM input"
            let file = try await tenant.upload(Array(text.utf8), contentType: "application/x-ndjson")
            let skipped = try await tenant.run(try await tenant.create(pipelineBody(sql, format: "ndjson", onRowError: "skip")), fileId: file)
            #expect(skipped["state"] as? String == "succeeded", "\(skipped)")
            let result = try #require(skipped["result"] as? [String: Any])
            let errors = try #require(result["errors"] as? [[String: Any]])
            #expect(errors.map { $0["row"] as? Int } == [2, 3, 4])
            #expect(errors.map { $0["column"] as? String } == ["a", "b.c", "café"])
            let starts = lines.indices.map { index in lines[..<index].reduce(0) { $0 + $1.utf8.count + 1 } }
            #expect(errors.map { $0["byteOffset"] as? Int } == [starts[1], starts[2], starts[3]], "each error names its record's first byte")
            #expect((errors.first?["message"] as? String)?.contains("appears more than once") == true, "\(errors)")
            #expect(result["rowsSkipped"] as? Int == 3)
            let row = try #require(try await tenant.rows(of: skipped).first)
            #expect(row["total"] as? Int == 5 && row["c"] as? Int == 2, "only the two good records are loaded: \(row)")

            let failed = try await tenant.run(try await tenant.create(pipelineBody(sql, format: "ndjson")), fileId: file)
            #expect(failed["state"] as? String == "discarded")
            let failure = (failed["result"] as? [String: Any])?["failure"] as? String ?? ""
            #expect(failure.contains("row 2") && failure.contains("column a") && failure.contains("more than once"), "\(failure)")

            let array = try await tenant.upload(Array("[\(lines.joined(separator: ","))]".utf8), contentType: "application/json")
            let arrayRun = try await tenant.run(try await tenant.create(pipelineBody(sql, format: "json", onRowError: "skip")), fileId: array)
            #expect(arrayRun["state"] as? String == "succeeded", "\(arrayRun)")
            #expect(((arrayRun["result"] as? [String: Any])?["errors"] as? [[String: Any]])?.map { $0["row"] as? Int } == [2, 3, 4])
            #expect(try await tenant.rows(of: arrayRun).first?["total"] as? Int == 5)
        }
    }

    @Test(arguments: TestEngine.available)
    func craftedCSVQuotesBOMRaggedRowsAndInvalidUTF8(engine: TestEngine) async throws {
        try await withPipelines(engine) { tenant, _, _ in
            // A BOM, a quoted field with CRLF and a doubled quote, CRLF line ends.
            let quoted = Array("\u{FEFF}id,note\r\n1,\"two\r\nlines, \"\"quoted\"\"\"\r\n2,plain\r\n".utf8)
            let file = try await tenant.upload(quoted)
            let job = try await tenant.run(try await tenant.create(pipelineBody("SELECT id, note FROM input ORDER BY id")), fileId: file)
            let rows = try await tenant.rows(of: job)
            #expect(rows.map { $0["id"] as? Int } == [1, 2], "the BOM is not part of the first column's name")
            #expect(rows.first?["note"] as? String == "two\r\nlines, \"quoted\"")

            // Ragged rows: skipped and reported with their row and byte offset, or fatal.
            let ragged = Array("a,b\n1,2\n3\n4,5\n6,7,8\n9,x\n".utf8)
            let raggedFile = try await tenant.upload(ragged)
            let skipped = try await tenant.run(
                try await tenant.create(
                    pipelineBody(
                        "SELECT sum(a) AS total FROM input", onRowError: "skip",
                        extra: ["columns": [["name": "a", "type": "integer"], ["name": "b", "type": "integer"]]])),
                fileId: raggedFile)
            #expect(skipped["state"] as? String == "succeeded")
            let result = try #require(skipped["result"] as? [String: Any])
            #expect(result["rowsRead"] as? Int == 5)
            #expect(result["rowsLoaded"] as? Int == 2)
            #expect(result["rowsSkipped"] as? Int == 3)
            let errors = try #require(result["errors"] as? [[String: Any]])
            #expect(errors.map { $0["row"] as? Int } == [2, 4, 5])
            #expect(errors.first?["byteOffset"] as? Int == 8, "row 2 starts at byte 8")
            #expect(errors.last?["column"] as? String == "b")
            #expect(try await tenant.rows(of: skipped).first?["total"] as? Int == 5)

            // A quote never closed swallows the rest of the file: even with skip, the run fails
            // rather than succeed on part of it (PipelineInputLimitTests has more).
            let unclosed = try await tenant.run(
                try await tenant.create(pipelineBody("SELECT count(*) AS n FROM input", onRowError: "skip")),
                fileId: try await tenant.upload(Array("a,b\n1,2\n3,\"x\n4,5\n".utf8)))
            #expect(unclosed["state"] as? String == "discarded")
            #expect(((unclosed["errors"] as? [[String: Any]])?.last?["error"] as? String)?.contains("never closed") == true)

            let failed = try await tenant.run(try await tenant.create(pipelineBody("SELECT * FROM input")), fileId: raggedFile)
            #expect(failed["state"] as? String == "discarded", "onRowError fail ends the run at the first bad row")
            #expect(((failed["errors"] as? [[String: Any]])?.last?["error"] as? String)?.contains("row 2") == true)
            #expect((failed["result"] as? [String: Any])?["outputFileId"] == nil)

            // NDJSON is one record per line: with skip, a bad line is reported and the next read.
            let lines = Array("{\"n\": 1}\n{\"n\": 2\n[3]\n\n{\"n\": 4}\nnot json\n{\"n\": 8}\n".utf8)
            let linesFile = try await tenant.upload(lines, contentType: "application/x-ndjson")
            let lineSkipped = try await tenant.run(
                try await tenant.create(pipelineBody("SELECT sum(n) AS total, count(*) AS c FROM input", format: "ndjson", onRowError: "skip")),
                fileId: linesFile)
            #expect(lineSkipped["state"] as? String == "succeeded", "\(lineSkipped)")
            let linesResult = try #require(lineSkipped["result"] as? [String: Any])
            #expect(linesResult["rowsRead"] as? Int == 6)
            #expect(linesResult["rowsSkipped"] as? Int == 3)
            #expect((linesResult["errors"] as? [[String: Any]])?.map { $0["row"] as? Int } == [2, 3, 5])
            #expect((linesResult["errors"] as? [[String: Any]])?.first?["byteOffset"] as? Int == 9, "line 2 starts at byte 9")
            #expect(try await tenant.rows(of: lineSkipped).first?["total"] as? Int == 13)
            let lineFailed = try await tenant.run(
                try await tenant.create(pipelineBody("SELECT count(*) AS c FROM input", format: "ndjson")), fileId: linesFile)
            #expect(lineFailed["state"] as? String == "discarded", "fail still ends the run at the first bad line")

            // Invalid UTF-8 names its row.
            let invalid: [UInt8] = Array("a\nok\n".utf8) + [0x66, 0xFF, 0x0A]
            let invalidJob = try await tenant.run(
                try await tenant.create(pipelineBody("SELECT * FROM input")), fileId: try await tenant.upload(invalid))
            #expect(invalidJob["state"] as? String == "discarded")
            let message = (invalidJob["errors"] as? [[String: Any]])?.last?["error"] as? String ?? ""
            #expect(message.contains("UTF-8") && message.contains("row 2"), "\(message)")
        }
    }

    @Test(arguments: TestEngine.available)
    func hostileXMLFailsItsJobWithoutExpanding(engine: TestEngine) async throws {
        try await withPipelines(engine) { tenant, _, _ in
            let laughs = """
                <?xml version="1.0"?>
                <!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
                <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
                <root><item>&lol3;</item></root>
                """
            let xxe = """
                <?xml version="1.0"?>
                <!DOCTYPE root [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
                <root><item>&secret;</item></root>
                """
            let pipeline = try await tenant.create(
                pipelineBody("SELECT * FROM input", format: "xml", extra: ["recordPath": "/root/item"]))
            for document in [laughs, xxe] {
                let file = try await tenant.upload(Array(document.utf8), contentType: "application/xml")
                let job = try await tenant.run(pipeline, fileId: file)
                #expect(job["state"] as? String == "discarded")
                let message = (job["errors"] as? [[String: Any]])?.last?["error"] as? String ?? ""
                #expect(message.contains("ENTITY") || message.contains("entit"), "\(message)")
                #expect(!message.contains("root:x:0"), "no file content leaks")
            }
        }
    }

    @Test(arguments: TestEngine.available)
    func theSandboxRefusesEscapesAndStopsRunawayQueries(engine: TestEngine) async throws {
        try await withPipelines(engine, configure: { $0.pipelines.timeoutSeconds = 2 }) { tenant, client, _ in
            let file = try await tenant.upload(path: "\(sharedData)/penguins.csv")
            // Refused when the pipeline is written (the run refuses them again).
            let refused: [(sql: String, says: String)] = [
                ("WITH x AS (SELECT 1) SELECT * FROM pragma_table_info('input')", "table-valued"),
                ("SELECT load_extension('/tmp/evil.so')", "load_extension"),
                ("SELECT * FROM sqlite_master", "only the table input"),
            ]
            for (sql, says) in refused {
                let response = try await client.json(.post, "/pipelines", pipelineBody(sql), token: tenant.token)
                #expect(response.status == .badRequest, "\(sql)")
                let issue = (response.object["errors"] as? [[String: Any]])?.first
                #expect(issue?["field"] as? String == "sql")
                #expect((issue?["issue"] as? String)?.contains(says) == true, "\(sql): \(response.text)")
            }
            let runaway = try await tenant.run(
                try await tenant.create(pipelineBody("WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c) SELECT count(*) FROM c")),
                fileId: file)
            #expect(runaway["state"] as? String == "discarded")
            #expect(runaway["attempt"] as? Int == 1, "a timeout is not retried")
            #expect(((runaway["errors"] as? [[String: Any]])?.last?["error"] as? String)?.contains("time limit") == true, "\(runaway)")
            // Without declared columns a column is judged by the run, before the file is loaded.
            let typo = try await tenant.run(try await tenant.create(pipelineBody("SELECT specie FROM input")), fileId: file)
            #expect(typo["state"] as? String == "discarded")
            #expect(((typo["errors"] as? [[String: Any]])?.last?["error"] as? String)?.contains("no such column: specie") == true)
            #expect((typo["result"] as? [String: Any])?["rowsLoaded"] as? Int == 0)
            // Statements that are not one query never get stored.
            for sql in [
                "SELECT 1; ATTACH DATABASE '/etc/passwd' AS x", "PRAGMA table_info(input)", "ATTACH DATABASE 'x' AS y", "DELETE FROM input",
                "SELECT 1; SELECT 2",
            ] {
                let response = try await client.json(.post, "/pipelines", pipelineBody(sql), token: tenant.token)
                #expect(response.status == .badRequest, "\(sql)")
                #expect((response.object["errors"] as? [[String: Any]])?.first?["field"] as? String == "sql")
            }
            // Strings and comments do not end a statement.
            let tricky = try await tenant.create(pipelineBody("SELECT 'a;b' AS s -- ; DROP TABLE input\n; "))
            let trickyJob = try await tenant.run(tricky, fileId: file)
            #expect(try await tenant.rows(of: trickyJob).first?["s"] as? String == "a;b")
        }
    }

    @Test(arguments: TestEngine.available)
    func tenantsNeverReachEachOthersFilesPipelinesOrOutputs(engine: TestEngine) async throws {
        try await withPipelines(engine) { alice, client, _ in
            let file = try await alice.upload(path: "\(sharedData)/penguins.csv")
            let pipeline = try await alice.create(pipelineBody("SELECT count(*) AS n FROM input"))
            let job = try await alice.run(pipeline, fileId: file)
            let output = try #require((job["result"] as? [String: Any])?["outputFileId"] as? String)
            #expect(try await alice.rows(of: job).first?["n"] as? Int == 344)

            let bobToken = try await client.registerAndLogin(email: "bob@example.com").tokens.accessToken
            let bob = PipelineClient(client: client, token: bobToken, jobs: alice.jobs)
            let bobPipeline = try await bob.create(pipelineBody("SELECT count(*) AS n FROM input"))
            #expect(try await bob.start(bobPipeline, fileId: file).status == .notFound, "Alice's file is not Bob's")
            #expect(try await bob.start(pipeline, fileId: file).status == .notFound, "nor is her pipeline")
            #expect(try await client.json(.get, "/pipelines/\(pipeline)", token: bobToken).status == .notFound)
            #expect(try await client.json(.get, "/files/\(output)", token: bobToken).status == .notFound, "nor her output")
            #expect((try await client.json(.get, "/pipelines", token: bobToken).object["items"] as? [Any])?.count == 1)
        }
    }

    @Test(arguments: TestEngine.available)
    func runsHonourIdempotencyKeysAndValidation(engine: TestEngine) async throws {
        try await withPipelines(engine) { tenant, client, _ in
            let file = try await tenant.upload(path: "\(sharedData)/penguins.csv")
            let pipeline = try await tenant.create(pipelineBody("SELECT 1 AS one"))
            let first = try await tenant.start(pipeline, fileId: file, headers: [IdempotencyMiddleware.header: "run-1"])
            let again = try await tenant.start(pipeline, fileId: file, headers: [IdempotencyMiddleware.header: "run-1"])
            #expect(first.status == .accepted)
            #expect(first.object["id"] as? String == again.object["id"] as? String)
            let xml = try await tenant.upload(Array("<a><b/></a>".utf8), contentType: "application/xml")
            #expect(try await tenant.start(pipeline, fileId: xml).status == .badRequest, "a CSV pipeline does not take an XML file")

            let bad = try await client.json(
                .post, "/pipelines",
                [
                    "name": "", "input": ["format": "xml", "options": ["delimiter": ";;"]], "sql": "SELECT 1",
                    "schedule": ["cron": "99 * * * *", "source": "sometimes"],
                ], token: tenant.token)
            #expect(bad.status == .badRequest)
            let fields = Set((bad.object["errors"] as? [[String: Any]] ?? []).compactMap { $0["field"] as? String })
            #expect(
                fields.isSuperset(of: [
                    "name", "input.options.delimiter", "input.recordPath", "schedule.cron", "schedule.source",
                ]), "\(fields)")
            let unknownFormat = try await client.json(.post, "/pipelines", pipelineBody("SELECT 1", format: "xlsx"), token: tenant.token)
            #expect(unknownFormat.status == .badRequest)

            // Updates need the current version; members read and run but do not write.
            let current = try await client.json(.get, "/pipelines/\(pipeline)", token: tenant.token)
            let etag = try #require(current.headers[.eTag])
            let stale = try await client.json(
                .patch, "/pipelines/\(pipeline)", ["name": "renamed"], token: tenant.token, headers: [.ifMatch: "\"99\""])
            #expect(stale.status == .preconditionFailed)
            let renamed = try await client.json(.patch, "/pipelines/\(pipeline)", ["name": "renamed"], token: tenant.token, headers: [.ifMatch: etag])
            #expect(renamed.object["name"] as? String == "renamed")
            #expect(try await client.json(.delete, "/pipelines/\(pipeline)", token: tenant.token).status == .noContent)
            #expect(try await client.json(.get, "/pipelines/\(pipeline)", token: tenant.token).status == .notFound)
        }
    }

    @Test(arguments: TestEngine.available)
    func scheduledRunsTakeTheNewestMatchingFileOrSkipWithAReason(engine: TestEngine) async throws {
        // The schedule fires when the node's clock reaches its next occurrence (up to a day
        // ahead each time: the test's access token lives a week so it outlasts the moves).
        let clock = TestClock()
        try await withPipelines(engine, clock: clock, configure: { $0.accounts.accessTokenTTL = 7 * 86_400 }) { tenant, client, components in
            let pipeline = try await tenant.create(
                pipelineBody("SELECT count(*) AS n FROM input").merging(
                    ["schedule": ["cron": "0 3 * * *", "timeZone": "Europe/Paris", "source": "namePattern", "namePattern": "sales-*.csv"]]
                ) { $1 })
            let stored = try #require(try await components.pipelines.get(id: pipeline, tenantId: try tenantId(client, tenant.token)))
            let scheduleId = try #require(stored.scheduleId)
            #expect(try await components.jobs.nextRun(scheduleId: scheduleId, tenantId: stored.tenantId) != nil)

            _ = try await tenant.upload(Array("x\n1\n".utf8), name: "sales-old.csv")
            _ = try await tenant.upload(Array("x\n1\n2\n".utf8), name: "sales-2026.csv")
            _ = try await tenant.upload(Array("x\n1\n2\n3\n4\n".utf8), name: "other.csv")
            let first = try await fire(scheduleId, clock: clock, components: components, tenant: tenant)
            #expect(try await tenant.rows(of: first).first?["n"] as? Int == 2, "the newest file whose name matches")

            let second = try await fire(scheduleId, clock: clock, components: components, tenant: tenant)
            #expect(second["state"] as? String == "succeeded")
            let result = try #require(second["result"] as? [String: Any])
            #expect(result["skipped"] as? Bool == true)
            #expect((result["reason"] as? String)?.contains("sales-*.csv") == true, "\(result)")

            // Removing the schedule removes it from the job system.
            _ = try await client.json(.patch, "/pipelines/\(pipeline)", ["schedule": NSNull()], token: tenant.token)
            #expect(try await components.jobs.nextRun(scheduleId: scheduleId, tenantId: stored.tenantId) == nil)
        }
    }

    /// A scheduled pipeline whose output has its input's format used to take its own previous
    /// output as the "latest" file, so every tick processed the last result and added another
    /// file, for ever. Outputs carry their origin (the pipeline and run) and are never picked.
    @Test(arguments: TestEngine.available)
    func scheduledRunsTakeOnlyUploadsNeverPipelineOutputs(engine: TestEngine) async throws {
        let clock = TestClock()
        try await withPipelines(engine, clock: clock, configure: { $0.accounts.accessTokenTTL = 7 * 86_400 }) { tenant, client, components in
            let pipeline = try await tenant.create(
                pipelineBody("SELECT count(*) AS n FROM input", output: "csv").merging(
                    ["schedule": ["cron": "0 3 * * *", "timeZone": "UTC", "source": "latest"]]) { $1 })
            let stored = try #require(try await components.pipelines.get(id: pipeline, tenantId: try tenantId(client, tenant.token)))
            let scheduleId = try #require(stored.scheduleId)
            let upload = try await tenant.upload(Array("x\n1\n2\n".utf8), name: "daily.csv")
            let uploaded = try await client.json(.get, "/files/\(upload)", token: tenant.token).object
            #expect(uploaded["origin"] as? String == "upload")
            #expect(uploaded["pipelineId"] is NSNull && uploaded["jobId"] is NSNull, "\(uploaded)")

            let first = try await fire(scheduleId, clock: clock, components: components, tenant: tenant)
            let result = try #require(first["result"] as? [String: Any], "\(first)")
            #expect(result["inputFileId"] as? String == upload)
            let outputId = try #require(result["outputFileId"] as? String)
            let output = try await client.json(.get, "/files/\(outputId)", token: tenant.token).object
            #expect(output["format"] as? String == "csv", "an output the schedule could mistake for its input")
            #expect(output["origin"] as? String == "pipeline")
            #expect(output["pipelineId"] as? String == pipeline)
            #expect(output["jobId"] as? String == first["id"] as? String)

            // Nothing new was uploaded: the next tick skips rather than process its own output.
            for _ in 0..<2 {
                let next = try await fire(scheduleId, clock: clock, components: components, tenant: tenant)
                let skipped = try #require(next["result"] as? [String: Any], "\(next)")
                #expect(skipped["skipped"] as? Bool == true, "\(skipped)")
            }
            let files = try await client.json(.get, "/files", token: tenant.token).object["items"] as? [[String: Any]]
            #expect(files?.count == 2, "the upload and one output")

            // A new upload is taken on the next tick.
            let later = try await tenant.upload(Array("x\n1\n2\n3\n".utf8), name: "daily2.csv")
            let again = try await fire(scheduleId, clock: clock, components: components, tenant: tenant)
            #expect((again["result"] as? [String: Any])?["inputFileId"] as? String == later, "\(again)")
        }
    }

    /// A scheduled run that stops after choosing its file but before its first checkpoint (a
    /// crash there, played by that checkpoint failing once) leaves the file to its retry: the
    /// file is recorded as the schedule's last only with that checkpoint. It used to be recorded
    /// first, so the retry found "no new file" and the file was never processed.
    @Test(arguments: TestEngine.available)
    func aScheduledRunStoppedBeforeItsFirstCheckpointStillProcessesItsFile(engine: TestEngine) async throws {
        let clock = TestClock()
        try await withPipelines(engine, clock: clock, configure: { $0.accounts.accessTokenTTL = 7 * 86_400 }) { tenant, client, components in
            let pipeline = try await tenant.create(
                pipelineBody("SELECT count(*) AS n FROM input").merging(["schedule": ["cron": "0 3 * * *", "timeZone": "UTC"]]) { $1 })
            let stored = try #require(try await components.pipelines.get(id: pipeline, tenantId: try tenantId(client, tenant.token)))
            _ = try await tenant.upload(Array("x\n1\n2\n".utf8), name: "daily.csv")
            try await injectDatabaseFailure(
                components.database, engine: engine, name: "refuse_first_checkpoint", on: "UPDATE", of: "jobs",
                when: "OLD.checkpoint IS NULL AND NEW.checkpoint IS NOT NULL AND NEW.kind = 'pipeline.run'")
            let jobId = try await fired(try #require(stored.scheduleId), clock: clock, components: components, tenant: tenant)
            try await components.jobs.waitForJob(jobId, state: .retryable)
            try await removeDatabaseFailure(components.database, engine: engine, name: "refuse_first_checkpoint", of: "jobs")

            clock.advance(by: .seconds(3))  // past the first backoff (2 s ± 10%)
            let job = try await tenant.finished(jobId)
            #expect((job["result"] as? [String: Any])?["skipped"] == nil, "\(job)")
            #expect(try await tenant.rows(of: job).first?["n"] as? Int == 2)
        }
    }

    /// Moves the node's clock to the schedule's next occurrence and waits (on job events) for
    /// the run it fires to end.
    func fire(_ scheduleId: String, clock: TestClock, components: CairnComponents, tenant: PipelineClient) async throws -> [String: Any] {
        try await tenant.finished(try await fired(scheduleId, clock: clock, components: components, tenant: tenant))
    }

    /// Moves the node's clock to the schedule's next occurrence and waits (on job events) for
    /// the run it fires to exist; its id.
    func fired(_ scheduleId: String, clock: TestClock, components: CairnComponents, tenant: PipelineClient) async throws -> String {
        let count: @Sendable () async throws -> Int = {
            try await components.database.read { db in
                try await db.raw("SELECT count(*) AS n FROM jobs WHERE kind = 'pipeline.run'").first()?.decode(column: "n", as: Int.self) ?? 0
            }
        }
        let before = try await count()
        let tenantId = try await tenantId(tenant.client, tenant.token)
        let next = try #require(try await components.jobs.nextRun(scheduleId: scheduleId, tenantId: tenantId))
        clock.advance(to: Date(timeIntervalSince1970: Double(next) / 1000))
        // The scheduler looks every 500 ms; the worker claims the run it enqueues at once, and
        // the claim is announced.
        try await components.jobs.waitUntil("the schedule firing") { try await count() > before }
        let jobId = try await components.database.read { db in
            try await db.raw("SELECT id FROM jobs WHERE kind = 'pipeline.run' ORDER BY id DESC LIMIT 1").first()?.decode(
                column: "id", as: String.self)
        }
        return try #require(jobId)
    }

    func tenantId(_ client: any TestClientProtocol, _ token: String) async throws -> String {
        try #require(try await client.json(.get, "/users/me", token: token).object["tenantId"] as? String)
    }
}

extension Dictionary where Key == String, Value == Any {
    func merging(_ other: [String: Any], _ combine: (Any, Any) -> Any) -> [String: Any] {
        var copy = self
        for (key, value) in other { copy[key] = copy[key].map { combine($0, value) } ?? value }
        return copy
    }
}

@Suite("Pipeline loads resume from their checkpoints", .dedicatedThreads)
struct PipelineCheckpointTests {
    /// A CSV of `rows` rows `i,i*2`.
    static func csv(rows: Int) -> [UInt8] {
        var text = "i,double\n"
        for index in 1...rows { text += "\(index),\(index * 2)\n" }
        return Array(text.utf8)
    }

    @Test func aLoadStoppedAfterACommitResumesWithoutLosingOrRepeatingRows() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("cairn-resume-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let total = PipelineEngine.batchRows * 3 + 123
        let input = folder + "/input.csv"
        _ = FileManager.default.createFile(atPath: input, contents: Data(Self.csv(rows: total)))
        let database = folder + "/work.sqlite"
        let spec = PipelineSpec(
            input: .init(format: .csv), sql: "SELECT count(*) AS n, count(DISTINCT i) AS d, sum(i) AS s FROM input", output: .init(format: .ndjson),
            onRowError: .fail)

        // The first attempt dies after its second commit, but only the first checkpoint was saved
        // (the save of the second was lost with the process).
        var reports: [LoadState] = []
        let control = SandboxControl()
        #expect(throws: SandboxError.self) {
            _ = try PipelineEngine.load(spec: spec, filePath: input, databasePath: database, control: control, resume: nil) { state in
                reports.append(state)
                if reports.count == 2 { control.cancel() }
            }
        }
        let saved = try #require(reports.first)
        #expect(saved.rowsLoaded == PipelineEngine.batchRows)
        #expect(saved.bytesRead > 0 && !saved.done)

        // The next attempt starts from the saved checkpoint: the rows of the unsaved commit are
        // dropped and read again from the checkpoint's byte offset.
        let finished = try PipelineEngine.load(
            spec: spec, filePath: input, databasePath: database, control: SandboxControl(), resume: saved, report: { _ in })
        #expect(finished.done)
        #expect(finished.rowsLoaded == total)
        #expect(finished.recordsRead == total)

        let output = folder + "/out.ndjson"
        let outcome = try PipelineEngine.query(
            spec: spec, databasePath: database, outputPath: output, maxBytes: 1 << 20, timeoutSeconds: 10, control: SandboxControl(), report: { _ in }
        )
        #expect(outcome.rows == 1)
        let row = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: output))) as? [String: Any]
        #expect(row?["n"] as? Int == total, "no row lost or loaded twice")
        #expect(row?["d"] as? Int == total)
        #expect(row?["s"] as? Int == total * (total + 1) / 2)
    }

    @Test func aWorkDatabaseShorterThanItsCheckpointIsLoadedAgain() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("cairn-restart-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let input = folder + "/input.csv"
        _ = FileManager.default.createFile(atPath: input, contents: Data(Self.csv(rows: 10)))
        let spec = PipelineSpec(input: .init(format: .csv), sql: "SELECT 1", output: .init(format: .csv), onRowError: .fail)
        let loaded = try PipelineEngine.load(
            spec: spec, filePath: input, databasePath: folder + "/work.sqlite", control: SandboxControl(), resume: nil, report: { _ in })
        var claimed = loaded
        claimed.rowsLoaded = 20
        claimed.done = false
        #expect(throws: LoadRestart.self) {
            _ = try PipelineEngine.load(
                spec: spec, filePath: input, databasePath: folder + "/work.sqlite", control: SandboxControl(), resume: claimed, report: { _ in })
        }
    }
}
