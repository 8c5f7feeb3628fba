import CairnTestSupport
import Foundation
import Testing

/// The engines the binary is driven on: SQLite always, PostgreSQL when CAIRN_TEST_POSTGRES_URL is set.
enum E2EEngine: String, CaseIterable, CustomTestStringConvertible {
    case sqlite, postgres
    static var available: [E2EEngine] {
        ProcessInfo.processInfo.environment["CAIRN_TEST_POSTGRES_URL"].map { $0.isEmpty ? [.sqlite] : [.sqlite, .postgres] } ?? [.sqlite]
    }
    var testDescription: String { rawValue }

    /// Environment for a fresh database on this engine.
    func environment() async throws -> [String: String] {
        guard self == .postgres, let base = ProcessInfo.processInfo.environment["CAIRN_TEST_POSTGRES_URL"] else { return [:] }
        let name = "cairn_e2e_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(12).lowercased()
        var components = URLComponents(string: base)!
        let result = try await runPsql(base, "CREATE DATABASE \(name)")
        guard result == 0 else { throw E2EError("could not create database \(name)") }
        components.path = "/" + name
        return ["CAIRN_DATABASE_URL": components.string!]
    }
}

/// Runs SQL through psql (a real PostgreSQL client); returns its exit status.
func runPsql(_ url: String, _ sql: String) async throws -> Int32 {
    try await runChild("/usr/bin/env", ["psql", url.replacingOccurrences(of: "?sslmode=disable", with: ""), "-q", "-c", sql]).status
}

func temporaryDirectory() throws -> String {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("cairn-e2e-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

@Suite("End to end: the cairn binary over real HTTP", .serialized)
struct EndToEndTests {
    @Test(arguments: E2EEngine.available)
    func accountsAndTasksSurviveARestart(engine: E2EEngine) async throws {
        let dataDir = try temporaryDirectory()
        let environment = try await engine.environment()
        var server = try await ServerProcess.start(dataDir: dataDir, environment: environment)
        var base = server.baseURL

        let register = try await curl(
            "POST", "\(base)/auth/register", json: ["email": "e2e@example.com", "password": "e2e password!", "name": "E2E"])
        #expect(register.status == 201)
        let login = try await curl("POST", "\(base)/auth/login", json: ["email": "E2E@example.com", "password": "e2e password!"])
        #expect(login.status == 200)
        var access = try #require(login.json["accessToken"] as? String)
        let firstRefresh = try #require(login.json["refreshToken"] as? String)

        for title in ["first", "second", "third"] {
            let created = try await curl("POST", "\(base)/tasks", json: ["title": title], token: access)
            #expect(created.status == 201)
            #expect(created.headers["location"]?.hasPrefix("/tasks/") == true)
        }
        let list = try await curl("GET", "\(base)/tasks?limit=2", token: access)
        #expect(list.status == 200)
        #expect((list.json["items"] as? [[String: Any]])?.map { $0["title"] as? String } == ["third", "second"])
        #expect(list.json["nextCursor"] is String)

        let refreshed = try await curl("POST", "\(base)/auth/refresh-token", json: ["refreshToken": firstRefresh])
        #expect(refreshed.status == 200)
        let secondRefresh = try #require(refreshed.json["refreshToken"] as? String)
        access = try #require(refreshed.json["accessToken"] as? String)
        #expect(try await curl("POST", "\(base)/auth/logout", json: ["refreshToken": secondRefresh]).status == 204)
        let refused = try await curl("POST", "\(base)/auth/refresh-token", json: ["refreshToken": secondRefresh])
        #expect(refused.status == 401)
        #expect(refused.headers["content-type"] == "application/problem+json")
        // A second session, not logged out: its access token must outlive the restart.
        let second = try await curl("POST", "\(base)/auth/login", json: ["email": "e2e@example.com", "password": "e2e password!"])
        let kept = try #require(second.json["accessToken"] as? String)

        #expect(try await server.stop() == 0)

        server = try await ServerProcess.start(dataDir: dataDir, environment: environment)
        base = server.baseURL
        let again = try await curl("POST", "\(base)/auth/login", json: ["email": "e2e@example.com", "password": "e2e password!"])
        #expect(again.status == 200)
        let token = try #require(again.json["accessToken"] as? String)
        let after = try await curl("GET", "\(base)/tasks", token: token)
        #expect((after.json["items"] as? [[String: Any]])?.count == 3)
        // The access token issued before the restart is still valid: the signing key persisted.
        #expect(try await curl("GET", "\(base)/users/me", token: kept).status == 200)
        // The logged-out session's access token stays ended across the restart.
        #expect(try await curl("GET", "\(base)/users/me", token: access).status == 401)
        #expect(try await server.stop() == 0)
        if engine == .sqlite {
            let keyFile = dataDir + "/jwt-keys.json"
            let mode = try FileManager.default.attributesOfItem(atPath: keyFile)[.posixPermissions] as? Int
            #expect(mode == 0o600)
        }
        #expect(!server.output.contains(access))
        #expect(!server.output.contains(kept))
        #expect(!server.output.contains("e2e password!"))
    }

    @Test func jsonLogsCarryTheRequestIdAndNoSecrets() async throws {
        let server = try await ServerProcess.start(
            dataDir: try temporaryDirectory(), environment: ["CAIRN_LOG_FORMAT": "json", "CAIRN_LOG_LEVEL": "debug"])
        let register = try await curl(
            "POST", "\(server.baseURL)/auth/register", json: ["email": "log@example.com", "password": "log password!", "name": "Log"],
            headers: ["X-Request-Id": "e2e-request-1"])
        #expect(register.status == 201)
        #expect(register.headers["x-request-id"] == "e2e-request-1")
        #expect(try await server.stop() == 0)
        let lines = server.output.split(separator: "\n").filter { !$0.isEmpty }
        var tagged = 0
        for line in lines {
            let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
            #expect(object != nil, "not JSON: \(line)")
            if object?["request_id"] as? String == "e2e-request-1" { tagged += 1 }
        }
        #expect(tagged >= 1)
        #expect(!server.output.contains("log password!"))
    }

    @Test func aBadSettingStopsStartUpWithOneLineAndExitCode2() async throws {
        let result = try await runCairn(["serve", "--data-dir", try temporaryDirectory()], environment: ["CAIRN_HTTP_PORT": "not-a-port"])
        #expect(result.status == 2)
        let lines = result.error.split(separator: "\n")
        #expect(lines.count == 1)
        #expect(lines.first?.contains("CAIRN_HTTP_PORT") == true)
        let secret = try await runCairn(["migrate", "--data-dir", try temporaryDirectory()], environment: ["CAIRN_JWT_SECRET": "short-secret"])
        #expect(secret.status == 2)
        #expect(!secret.error.contains("short-secret"))
    }

    @Test func operatorCommandsWork() async throws {
        let dataDir = try temporaryDirectory()
        for command in [
            ["--help"], ["serve", "--help"], ["migrate", "--help"], ["user", "create", "--help"], ["tenant", "create", "--help"],
            ["keys", "rotate", "--help"],
        ] {
            let result = try await runCairn(command)
            #expect(result.status == 0, "\(command)")
            #expect(result.output.contains("USAGE"), "\(command)")
        }
        let migrate = try await runCairn(["migrate", "--data-dir", dataDir])
        #expect(migrate.status == 0)
        #expect(migrate.output.contains("accounts/1"))
        #expect(try await runCairn(["migrate", "--data-dir", dataDir]).output.contains("no pending migrations"))
        let tenant = try await runCairn(["tenant", "create", "--name", "Acme", "--data-dir", dataDir])
        #expect(tenant.status == 0)
        let tenantId = tenant.output.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(tenantId.count == 36)
        let user = try await runCairn(
            ["user", "create", "--email", "ops@acme.example", "--tenant", tenantId, "--admin", "--password-stdin", "--data-dir", dataDir],
            environment: ["CAIRN_BCRYPT_COST": "4"], stdin: "operator password\n")
        #expect(user.status == 0)
        #expect(user.output.contains("role admin"))
        let duplicate = try await runCairn(
            ["user", "create", "--email", "OPS@acme.example", "--tenant", tenantId, "--data-dir", dataDir], environment: ["CAIRN_BCRYPT_COST": "4"])
        #expect(duplicate.status == 1)
        #expect(duplicate.error.contains("conflict"))
        let rotate = try await runCairn(["keys", "rotate", "--data-dir", dataDir])
        #expect(rotate.status == 0)
        let ring = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dataDir + "/jwt-keys.json"))) as? [String: Any]
        #expect((ring?["keys"] as? [Any])?.count == 2)
    }
}
