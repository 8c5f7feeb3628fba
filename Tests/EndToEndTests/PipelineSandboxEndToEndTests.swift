import CairnTestSupport
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

@Suite("End to end: hostile pipeline runs fail alone", .serialized)
struct PipelineSandboxEndToEndTests {
    /// A `/proc/<pid>/status` figure, bytes.
    static func memory(_ pid: pid_t, _ field: String) -> Int64 {
        let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix(field + ":") }),
            let kib = Int64(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "")
        else { return 0 }
        return kib << 10
    }

    @Test(arguments: E2EEngine.available)
    func aHugeRowAndARunawayQueryFailOnTheirLimitsWhileTheServersPeakMemoryStaysPut(engine: E2EEngine) async throws {
        let dataDir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dataDir) }
        let input = dataDir + "-tiny.csv"
        _ = FileManager.default.createFile(atPath: input, contents: Data("n,label\n1,one\n2,two\n3,three\n".utf8))
        defer { try? FileManager.default.removeItem(atPath: input) }
        let environment = try await engine.environment().merging(["CAIRN_PIPELINE_CPU": "2", "CAIRN_PIPELINE_TIMEOUT": "120"]) { $1 }
        let server = try await ServerProcess.start(dataDir: dataDir, environment: environment)
        let base = server.baseURL

        _ = try await curl("POST", "\(base)/auth/register", json: ["email": "hostile@example.com", "password": "pipeline password", "name": "H"])
        let token = try #require(
            try await curl("POST", "\(base)/auth/login", json: ["email": "hostile@example.com", "password": "pipeline password"])
                .json["accessToken"] as? String)
        let file = try await PipelinesEndToEndTests().upload(base, path: input, token: token)
        func run(_ sql: String) async throws -> [String: Any] {
            let pipeline = try await curl(
                "POST", "\(base)/pipelines", json: ["name": "p", "input": ["format": "csv"], "output": ["format": "ndjson"], "sql": sql],
                token: token)
            let pipelineId = try #require(pipeline.json["id"] as? String, "\(pipeline.body)")
            let jobId = try #require(
                try await curl("POST", "\(base)/pipelines/\(pipelineId)/runs", json: ["fileId": file], token: token).json["id"] as? String)
            return try await followJob(base, jobId, token: token, timeout: .seconds(120)) {
                ["succeeded", "discarded"].contains($0["state"] as? String ?? "")
            }
        }
        func failure(_ job: [String: Any]) -> String? { (job["result"] as? [String: Any])?["failure"] as? String }

        // A normal run first, so the peak below already holds what any run costs the server.
        let normal = try await run("SELECT count(*) AS n FROM input")
        #expect(normal["state"] as? String == "succeeded", "\(normal)")
        let before = Self.memory(server.pid, "VmHWM")

        let huge = try await run("SELECT " + (1...12).map { "zeroblob(60000000) || x'' AS v\($0)" }.joined(separator: ", ") + " FROM input")
        #expect(failure(huge) == "memory limit of 512 MiB reached", "\(huge)")
        let runaway = try await run("WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c) SELECT count(*) AS n FROM c")
        #expect(failure(runaway) == "CPU time limit reached", "\(runaway)")
        #expect(huge["attempt"] as? Int == 1 && runaway["attempt"] as? Int == 1, "a limit reached is not retried")

        let after = Self.memory(server.pid, "VmHWM")
        print("hostile runs end to end (\(engine)): server peak RSS \(before >> 20) MiB before, \(after >> 20) MiB after")
        // The row alone is 720 MB; in the server it once took the node to 2.9 GB.
        #expect(after - before < 64 << 20, "the server's peak grew from \(before >> 20) MiB to \(after >> 20) MiB")
        // The node still serves, and its next run succeeds.
        #expect(try await run("SELECT max(n) AS n FROM input")["state"] as? String == "succeeded")
        #expect(try await server.stop() == 0)
    }
}
