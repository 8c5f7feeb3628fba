import Foundation
import Testing

@Suite("End to end: jobs survive crashes and restarts", .serialized)
struct JobsEndToEndTests {
    /// Registers an owner, logs in, returns the access token.
    func owner(_ base: String) async throws -> String {
        _ = try await curl("POST", "\(base)/auth/register", json: ["email": "jobs@example.com", "password": "jobs password!", "name": "Jobs"])
        let login = try await curl("POST", "\(base)/auth/login", json: ["email": "jobs@example.com", "password": "jobs password!"])
        return try #require(login.json["accessToken"] as? String)
    }

    @Test(arguments: E2EEngine.available)
    func aJobKilledMidRunResumesFromItsCheckpointAfterRestart(engine: E2EEngine) async throws {
        let dataDir = try temporaryDirectory()
        let environment = try await engine.environment().merging(["CAIRN_JOBS_LEASE": "2"]) { $1 }
        var server = try await ServerProcess.start(dataDir: dataDir, environment: environment)
        let token = try await owner(server.baseURL)
        // 10 s: the kill comes as soon as the stream shows 500 ms done, so the job is far from its
        // end even when a loaded machine is slow to open the stream.
        let created = try await curl(
            "POST", "\(server.baseURL)/jobs", json: ["kind": "noop", "args": ["sleepMs": 10_000, "checkpointEvery": 100]], token: token)
        #expect(created.status == 201)
        let id = try #require(created.json["id"] as? String)
        let checkpointed = try await followJob(server.baseURL, id, token: token) {
            ["succeeded", "discarded", "cancelled"].contains($0["state"] as? String ?? "")
                || (($0["checkpoint"] as? [String: Any])?["doneMs"] as? Double ?? 0) >= 500
        }
        try #require(checkpointed["state"] as? String == "running", "the job was no longer running when its stream was read: \(checkpointed)")
        await server.kill()

        server = try await ServerProcess.start(dataDir: dataDir, environment: environment)
        let done = try await followJob(server.baseURL, id, token: token, until: { $0["state"] as? String == "succeeded" })
        #expect(done["attempt"] as? Int == 2)
        let resumedFrom = (done["progress"] as? [String: Any])?["resumedFromMs"] as? Double ?? 0
        #expect(resumedFrom >= 500, "the second attempt started from scratch")
        #expect(try await server.stop() == 0)
    }

    @Test func sigtermReleasesARunningJobWithoutSpendingAnAttempt() async throws {
        let dataDir = try temporaryDirectory()
        let environment = ["CAIRN_JOBS_SHUTDOWN_GRACE": "0"]
        var server = try await ServerProcess.start(dataDir: dataDir, environment: environment)
        let token = try await owner(server.baseURL)
        let created = try await curl(
            "POST", "\(server.baseURL)/jobs", json: ["kind": "noop", "args": ["sleepMs": 1500, "checkpointEvery": 100]], token: token)
        let id = try #require(created.json["id"] as? String)
        _ = try await followJob(server.baseURL, id, token: token) { $0["state"] as? String == "running" }
        #expect(try await server.stop() == 0)
        server = try await ServerProcess.start(dataDir: dataDir, environment: environment)
        let done = try await followJob(server.baseURL, id, token: token, until: { $0["state"] as? String == "succeeded" })
        #expect(done["attempt"] as? Int == 1, "the released attempt was counted")
        #expect(try await server.stop() == 0)
    }
}
