import CairnTestSupport
import Foundation
import Testing

@Suite("End to end: pipeline runs survive a crash", .serialized)
struct PipelinesEndToEndTests {
    /// Uploads a file with curl, streamed from disk.
    func upload(_ base: String, path: String, token: String) async throws -> String {
        let result = try await runChild(
            "/usr/bin/env",
            [
                "curl", "-s", "-S", "--max-time", "120", "-X", "POST", "-H", "Authorization: Bearer \(token)", "-H", "Content-Type: text/csv",
                "-T", path, "\(base)/files",
            ])
        let file = try JSONSerialization.jsonObject(with: result.output) as? [String: Any]
        return try #require(file?["id"] as? String, "upload failed: \(result.text) \(result.errorText)")
    }

    /// Rows of `i,label` the `totals` pipeline counts.
    static let total = 600_000

    /// Writes ``total`` rows of `i,label` (`1,row 1`, …) to `path` and returns it.
    static func writeNumberedCSV(_ path: String) throws -> String {
        var text = "i,label\n"
        text.reserveCapacity(total * 16)
        for index in 1...total { text += "\(index),row \(index)\n" }
        _ = FileManager.default.createFile(atPath: path, contents: Data(text.utf8))
        return path
    }

    /// Signs up `email` on the node at `base`, uploads `input` and starts a run of a `totals`
    /// pipeline (count, distinct counts and sum of the rows) on it.
    func startTotalsRun(_ base: String, email: String, input: String) async throws -> (token: String, jobId: String) {
        _ = try await curl("POST", "\(base)/auth/register", json: ["email": email, "password": "pipeline password", "name": "E"])
        let token = try #require(
            try await curl("POST", "\(base)/auth/login", json: ["email": email, "password": "pipeline password"]).json["accessToken"] as? String)
        let file = try await upload(base, path: input, token: token)
        let pipeline = try await curl(
            "POST", "\(base)/pipelines",
            json: [
                "name": "totals", "input": ["format": "csv"], "output": ["format": "ndjson"],
                "sql": "SELECT count(*) AS n, count(DISTINCT i) AS d, sum(i) AS s, count(DISTINCT label) AS l FROM input",
            ], token: token)
        let pipelineId = try #require(pipeline.json["id"] as? String, "\(pipeline.body)")
        let started = try await curl("POST", "\(base)/pipelines/\(pipelineId)/runs", json: ["fileId": file], token: token)
        #expect(started.status == 202)
        return (token, try #require(started.json["id"] as? String))
    }

    /// Follows the run until a checkpoint holds part of the load; returns the rows it holds.
    /// - Throws: when the run finished first (nothing left to kill mid-load).
    func rowsLoadedOnceCheckpointed(_ base: String, _ jobId: String, token: String) async throws -> Int {
        let loaded = { @Sendable (job: [String: Any]) in
            ((job["checkpoint"] as? [String: Any])?["load"] as? [String: Any])?["rowsLoaded"] as? Int ?? 0
        }
        let first = try await followJob(base, jobId, token: token, timeout: .seconds(120)) {
            loaded($0) > 0 || $0["state"] as? String == "succeeded"
        }
        let checkpointed = loaded(first)
        try #require(checkpointed > 0 && checkpointed < Self.total, "the run finished before it could be killed mid-load")
        return checkpointed
    }

    /// The finished run loaded every row, its output counts each exactly once, and the tenant
    /// has the input and that one output file.
    func expectCompleteTotals(_ base: String, result: [String: Any], token: String) async throws {
        let total = Self.total
        #expect(result["rowsLoaded"] as? Int == total)
        let output = try #require(result["outputFileId"] as? String)
        let content = try await curl("GET", "\(base)/files/\(output)/content", token: token)
        let row = try JSONSerialization.jsonObject(with: Data(content.body.utf8)) as? [String: Any]
        #expect(row?["n"] as? Int == total, "no row lost or loaded twice")
        #expect(row?["d"] as? Int == total)
        #expect(row?["l"] as? Int == total)
        #expect(row?["s"] as? Int == total * (total + 1) / 2)
        let files = try await curl("GET", "\(base)/files?limit=100", token: token).json["items"] as? [[String: Any]] ?? []
        #expect(files.count == 2, "the input and one output")
    }

    @Test(arguments: E2EEngine.available)
    func aRunKilledMidLoadResumesFromItsCheckpointWithCompleteOutput(engine: E2EEngine) async throws {
        let dataDir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dataDir) }
        let input = try Self.writeNumberedCSV(dataDir + "-input.csv")
        defer { try? FileManager.default.removeItem(atPath: input) }

        let environment = try await engine.environment().merging(["CAIRN_JOBS_LEASE": "2"]) { $1 }
        var server = try await ServerProcess.start(dataDir: dataDir, environment: environment)
        let (token, jobId) = try await startTotalsRun(server.baseURL, email: "etl@example.com", input: input)

        // Kill the node as soon as a checkpoint holds part of the load, before the load is done.
        let checkpointed = try await rowsLoadedOnceCheckpointed(server.baseURL, jobId, token: token)
        await server.kill()

        server = try await ServerProcess.start(dataDir: dataDir, environment: environment)
        let job = try await followJob(server.baseURL, jobId, token: token, timeout: .seconds(180)) {
            ["succeeded", "discarded"].contains($0["state"] as? String ?? "")
        }
        #expect(job["state"] as? String == "succeeded", "\(job)")
        #expect(job["attempt"] as? Int ?? 0 >= 2, "the kill cost the first attempt (a lease lapsing on a loaded machine may cost more)")
        let result = try #require(job["result"] as? [String: Any])
        #expect((result["resumedFromRow"] as? Int ?? 0) >= checkpointed, "the second attempt loaded from scratch")
        try await expectCompleteTotals(server.baseURL, result: result, token: token)
        // The work folder is gone.
        let work = (try? FileManager.default.subpathsOfDirectory(atPath: dataDir + "/pipelines")) ?? []
        #expect(!work.contains { $0.hasSuffix("input.sqlite") })
        #expect(try await server.stop() == 0)
    }
}

extension PipelinesEndToEndTests {
    /// Two nodes on one PostgreSQL and one blob store (a folder both reach, as a shared volume
    /// would be): a run started on node A, with A killed -9 mid-load, is rescued by node B once
    /// A's (2-second) lease lapses, and completes there with every row exactly once. B has no
    /// copy of A's work database (node-local scratch), so it loads again from the first row.
    @Test(.enabled(if: E2EEngine.available.contains(.postgres), "needs PostgreSQL (two nodes)"))
    func aRunWhoseNodeIsKilledMidLoadCompletesOnAnotherNode() async throws {
        let dirA = try temporaryDirectory()
        let dirB = try temporaryDirectory()
        let blobs = try temporaryDirectory()
        defer { for dir in [dirA, dirB, blobs] { try? FileManager.default.removeItem(atPath: dir) } }
        let input = try Self.writeNumberedCSV(dirA + "-input.csv")
        defer { try? FileManager.default.removeItem(atPath: input) }

        let masterKey = Data((0..<32).map { _ in UInt8.random(in: 0...255) }).base64EncodedString()
        let environment = try await E2EEngine.postgres.environment().merging([
            "CAIRN_JOBS_LEASE": "2", "CAIRN_BLOB_URL": "file://" + blobs, "CAIRN_MASTER_KEY": masterKey,
        ]) { $1 }
        let nodeA = try await ServerProcess.start(dataDir: dirA, environment: environment)
        let (token, jobId) = try await startTotalsRun(nodeA.baseURL, email: "etl2@example.com", input: input)

        // Node A holds the run (B starts only once A's load has checkpointed part of the input).
        _ = try await rowsLoadedOnceCheckpointed(nodeA.baseURL, jobId, token: token)
        let nodeB = try await ServerProcess.start(dataDir: dirB, environment: environment)
        await nodeA.kill()

        let job = try await followJob(nodeB.baseURL, jobId, token: token, timeout: .seconds(180)) {
            ["succeeded", "discarded"].contains($0["state"] as? String ?? "")
        }
        #expect(job["state"] as? String == "succeeded", "\(job)")
        #expect(job["attempt"] as? Int ?? 0 >= 2, "the kill cost the first attempt")
        let result = try #require(job["result"] as? [String: Any])
        #expect(result["resumedFromRow"] == nil, "node B resumed into a work database it does not have")
        try await expectCompleteTotals(nodeB.baseURL, result: result, token: token)
        let work = (try? FileManager.default.subpathsOfDirectory(atPath: dirB + "/pipelines")) ?? []
        #expect(!work.contains { $0.hasSuffix("input.sqlite") }, "node B's work folder is gone")
        #expect(try await nodeB.stop() == 0)
    }
}

@Suite("End to end: a 2 GB CSV through a pipeline", .serialized, .enabled(if: ProcessInfo.processInfo.environment["CAIRN_TEST_LARGE_FILES"] == "1"))
struct LargePipelineEndToEndTests {
    /// Writes `bytes` of CSV (`i,payload`, 200-byte payloads) and returns the row count.
    static func generate(_ path: String, bytes: Int) throws -> Int {
        _ = FileManager.default.createFile(atPath: path, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        defer { try? handle.close() }
        let payload = String(repeating: "x", count: 200)
        var chunk = "i,payload\n"
        var written = 0
        var rows = 0
        while written < bytes {
            rows += 1
            chunk += "\(rows),\(payload)\n"
            if chunk.utf8.count >= 8 << 20 {
                written += chunk.utf8.count
                try handle.write(contentsOf: Data(chunk.utf8))
                chunk = ""
            }
        }
        if !chunk.isEmpty { try handle.write(contentsOf: Data(chunk.utf8)) }
        return rows
    }

    @Test func aTwoGigabyteFileIsCountedWithFlatMemory() async throws {
        let dataDir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dataDir) }
        let input = dataDir + "-2g.csv"
        defer { try? FileManager.default.removeItem(atPath: input) }
        let rows = try Self.generate(input, bytes: 2 << 30)
        let server = try await ServerProcess.start(dataDir: dataDir)
        _ = try await curl(
            "POST", "\(server.baseURL)/auth/register", json: ["email": "big@example.com", "password": "pipeline password", "name": "B"])
        let token = try #require(
            try await curl("POST", "\(server.baseURL)/auth/login", json: ["email": "big@example.com", "password": "pipeline password"])
                .json["accessToken"] as? String)
        let file = try await PipelinesEndToEndTests().upload(server.baseURL, path: input, token: token)
        let pipeline = try await curl(
            "POST", "\(server.baseURL)/pipelines",
            json: [
                "name": "count", "input": ["format": "csv"], "output": ["format": "ndjson"], "sql": "SELECT count(*) AS n, sum(i) AS s FROM input",
            ],
            token: token)
        let pipelineId = try #require(pipeline.json["id"] as? String)
        let jobId = try #require(
            try await curl("POST", "\(server.baseURL)/pipelines/\(pipelineId)/runs", json: ["fileId": file], token: token).json["id"] as? String)
        let job = try await followJob(server.baseURL, jobId, token: token, timeout: .seconds(1800)) {
            ["succeeded", "discarded"].contains($0["state"] as? String ?? "")
        }
        let status = (try? String(contentsOfFile: "/proc/\(server.pid)/status", encoding: .utf8)) ?? ""
        let peak = status.split(separator: "\n").first { $0.hasPrefix("VmHWM") } ?? "VmHWM: ?"
        print("2 GB pipeline: \(rows) rows; server peak RSS \(peak.split(separator: ":")[1].trimmingCharacters(in: .whitespaces))")
        #expect(job["state"] as? String == "succeeded", "\(job)")
        let output = try #require((job["result"] as? [String: Any])?["outputFileId"] as? String)
        let row =
            try JSONSerialization.jsonObject(with: Data(try await curl("GET", "\(server.baseURL)/files/\(output)/content", token: token).body.utf8))
            as? [String: Any]
        #expect(row?["n"] as? Int == rows)
        #expect(row?["s"] as? Int == rows * (rows + 1) / 2)
        #expect(try await server.stop() == 0)
    }
}
