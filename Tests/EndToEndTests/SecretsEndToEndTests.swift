import CairnTestSupport
import Foundation
import Testing

/// The master key at start-up, and the signing key ring shared through the database (issue 14).
@Suite("End to end: master key and shared signing keys", .serialized)
struct SecretsEndToEndTests {
    /// 32 random bytes in base64, as `CAIRN_MASTER_KEY` takes them.
    static func newMasterKey() -> String {
        Data((0..<32).map { _ in UInt8.random(in: 0...255) }).base64EncodedString()
    }

    @Test(arguments: E2EEngine.available)
    func aNodeWithTheWrongMasterKeySaysSoInOneLineAndExits2(engine: E2EEngine) async throws {
        let dataDir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dataDir) }
        let environment = try await engine.environment()
        let right = Self.newMasterKey()
        let wrong = Self.newMasterKey()
        let first = try await ServerProcess.start(dataDir: dataDir, environment: environment.merging(["CAIRN_MASTER_KEY": right]) { $1 })
        #expect(try await first.stop() == 0)

        let (status, output) = try await Self.serveUntilExit(dataDir: dataDir, environment: environment.merging(["CAIRN_MASTER_KEY": wrong]) { $1 })
        #expect(status == 2)
        #expect(output.split(separator: "\n").count == 1, "\(output)")
        #expect(output.hasPrefix("cairn: wrong master key"))
        #expect(!output.contains(right) && !output.contains(wrong))

        // The right key still starts it.
        let again = try await ServerProcess.start(dataDir: dataDir, environment: environment.merging(["CAIRN_MASTER_KEY": right]) { $1 })
        #expect(try await again.stop() == 0)
    }

    /// `CAIRN_MASTER_KEY` set but empty, or not 32 bytes of base64, stops the node with one
    /// line and exit 2 before anything is written: an empty value once made a new `master.key`.
    @Test(arguments: ["", "not a key"])
    func anEmptyOrMalformedMasterKeyExits2AndWritesNothing(value: String) async throws {
        let dataDir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dataDir) }
        let (status, output) = try await Self.serveUntilExit(dataDir: dataDir, environment: ["CAIRN_MASTER_KEY": value])
        #expect(status == 2)
        #expect(output.split(separator: "\n").count == 1, "\(output)")
        #expect(output.contains("CAIRN_MASTER_KEY"))
        #expect(!FileManager.default.fileExists(atPath: dataDir + "/master.key"), "no master key was generated")
    }

    /// A node whose `master.key` was lost, on a database sealed under it, says so and exits 2,
    /// leaving no new key file behind (one would stand in for the right key at every start).
    @Test(arguments: E2EEngine.available)
    func aLostMasterKeyFileIsNotReplacedByANewOne(engine: E2EEngine) async throws {
        let dataDir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dataDir) }
        let environment = try await engine.environment()
        let first = try await ServerProcess.start(dataDir: dataDir, environment: environment)
        #expect(try await first.stop() == 0)
        try FileManager.default.removeItem(atPath: dataDir + "/master.key")

        let (status, output) = try await Self.serveUntilExit(dataDir: dataDir, environment: environment)
        #expect(status == 2)
        #expect(output.split(separator: "\n").count == 1, "\(output)")
        #expect(output.hasPrefix("cairn: no master key"), "\(output)")
        #expect(!FileManager.default.fileExists(atPath: dataDir + "/master.key"), "no new master key was left")
    }

    /// Runs `cairn serve` expecting it to stop by itself (at most 60 s, then it is killed).
    /// - Returns: its exit status (nil when it had to be killed) and everything it printed.
    static func serveUntilExit(dataDir: String, environment: [String: String]) async throws -> (Int32?, String) {
        let output = LogBuffer()
        let child = try await ChildProcess(
            try cairnBinary(), ["serve", "--port", "0", "--data-dir", dataDir],
            environment: cairnEnvironment(environment.merging(["CAIRN_LOG_LEVEL": "error"]) { $1 }), includeErrors: true
        ) { data in
            if let data { output.append(String(decoding: data, as: UTF8.self)) } else { output.end() }
        }
        let status = await child.waitForExit(timeout: .seconds(60))
        if status == nil { child.signal(SIGKILL) }
        return (status, output.text)
    }

    @Test
    func rotateMasterReencryptsEverythingUnderANewKey() async throws {
        let dataDir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dataDir) }
        let environment = ["CAIRN_WEBHOOKS_ALLOW_PRIVATE": "true"]
        var server = try await ServerProcess.start(dataDir: dataDir, environment: environment)
        let register = try await curl(
            "POST", "\(server.baseURL)/auth/register", json: ["email": "master@example.com", "password": "master password!", "name": "Keys"])
        #expect(register.status == 201)
        let first = try await curl("POST", "\(server.baseURL)/auth/login", json: ["email": "master@example.com", "password": "master password!"])
        let token = try #require(first.json["accessToken"] as? String)
        let apiKey = "SG.rotate-master-" + UUID().uuidString
        let put = try await curl(
            "PUT", "\(server.baseURL)/notification-providers/sendgrid", json: ["apiKey": apiKey, "fromEmail": "noreply@example.com"], token: token)
        #expect(put.status == 200)
        let hook = try await curl("POST", "\(server.baseURL)/webhooks", json: ["url": "http://127.0.0.1:9/hook"], token: token)
        #expect(hook.status == 201)
        #expect(try await server.stop() == 0)
        let oldKey = try String(contentsOfFile: dataDir + "/master.key", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)

        let rotated = try await runCairn(["keys", "rotate-master", "--data-dir", dataDir], environment: environment)
        #expect(rotated.status == 0, "\(rotated.error)")
        // The provider's API key, the webhook's secret and the ring file's signing key.
        #expect(rotated.output.contains("re-sealed 3 secrets"), "\(rotated.output)")
        let newKey = try String(contentsOfFile: dataDir + "/master.key", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(newKey != oldKey && !rotated.output.contains(newKey))

        server = try await ServerProcess.start(dataDir: dataDir, environment: environment)
        let login = try await curl("POST", "\(server.baseURL)/auth/login", json: ["email": "master@example.com", "password": "master password!"])
        let fresh = try #require(login.json["accessToken"] as? String)
        // The signing key survived its re-sealing: a token from before still verifies, and the
        // ring file holds sealed keys only.
        #expect(try await curl("GET", "\(server.baseURL)/tasks", token: token).status == 200)
        let ring = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dataDir + "/jwt-keys.json"))) as? [String: Any]
        let stored = (ring?["keys"] as? [[String: Any]] ?? []).map { $0["privateKey"] as? String ?? "" }
        #expect(!stored.isEmpty && stored.allSatisfy { $0.hasPrefix("v1:") }, "\(stored)")
        let listed = try await curl("GET", "\(server.baseURL)/notification-providers", token: fresh)
        #expect(listed.body.contains("…" + apiKey.suffix(4)), "\(listed.body)")
        #expect(try await server.stop() == 0)
        // The old key no longer opens this database.
        let (status, output) = try await Self.serveUntilExit(dataDir: dataDir, environment: environment.merging(["CAIRN_MASTER_KEY": oldKey]) { $1 })
        #expect(status == 2, "\(output)")
    }

    @Test
    func aSingleNodeGeneratesItsMasterKeyFileWithMode0600() async throws {
        let dataDir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dataDir) }
        let server = try await ServerProcess.start(dataDir: dataDir)
        #expect(try await server.stop() == 0)
        let attributes = try FileManager.default.attributesOfItem(atPath: dataDir + "/master.key")
        #expect((attributes[.posixPermissions] as? NSNumber)?.intValue == 0o600)
        let text = try String(contentsOfFile: dataDir + "/master.key", encoding: .utf8)
        #expect(Data(base64Encoded: text.trimmingCharacters(in: .whitespacesAndNewlines))?.count == 32)
    }
}

/// The `kid` in a compact JWS's header (RFC 7515 §4.1.4).
func tokenKid(_ token: String) -> String? {
    guard var header = token.split(separator: ".").first.map(String.init) else { return nil }
    header = header.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
    header += String(repeating: "=", count: (4 - header.count % 4) % 4)
    guard let data = Data(base64Encoded: header), let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
        return nil
    }
    return object["kid"] as? String
}

extension SecretsEndToEndTests {
    @Test
    func aKeyRotationOnOneNodeIsAcceptedByAnotherWithNothingCopied() async throws {
        guard E2EEngine.available.contains(.postgres) else { return }
        let environment = try await E2EEngine.postgres.environment().merging(["CAIRN_MASTER_KEY": Self.newMasterKey()]) { $1 }
        let directories = try (0..<3).map { _ in try temporaryDirectory() }
        defer { for directory in directories { try? FileManager.default.removeItem(atPath: directory) } }
        let a = try await ServerProcess.start(dataDir: directories[0], environment: environment)
        let b = try await ServerProcess.start(dataDir: directories[1], environment: environment)

        let register = try await curl(
            "POST", "\(a.baseURL)/auth/register", json: ["email": "ring@example.com", "password": "ring password!", "name": "Keys"])
        #expect(register.status == 201)
        let login = { @Sendable () async throws -> String in
            let response = try await curl("POST", "\(a.baseURL)/auth/login", json: ["email": "ring@example.com", "password": "ring password!"])
            guard let token = response.json["accessToken"] as? String else { throw E2EError("login failed: \(response.body)") }
            return token
        }
        let before = try await login()
        // B verifies what A signed: one ring, in the database.
        #expect(try await curl("GET", "\(b.baseURL)/tasks", token: before).status == 200)

        // Rotated from a third place that shares nothing but the database and the master key.
        let rotated = try await runCairn(["keys", "rotate", "--data-dir", directories[2]], environment: environment)
        #expect(rotated.status == 0, "\(rotated.error)")
        let line = try #require(rotated.output.split(separator: "\n").first { $0.hasPrefix("new signing key ") })
        let newKid = try #require(line.split(separator: " ").dropFirst(3).first.map { String($0.dropLast()) })
        #expect(newKid != tokenKid(before))
        // Polling HTTP endpoints: the nodes announce nothing a test could await. They re-read
        // the ring at most every 5 s, so each poll's deadline leaves twice that.
        let after = try await pollFor("A signing with the new key", timeout: .seconds(10)) {
            let token = try await login()
            return tokenKid(token) == newKid ? token : nil
        }
        _ = try await pollFor("B accepting the new key", timeout: .seconds(10)) {
            try await curl("GET", "\(b.baseURL)/tasks", token: after).status == 200 ? true : nil
        }
        // Tokens of the old key stay valid until they expire.
        #expect(try await curl("GET", "\(b.baseURL)/tasks", token: before).status == 200)
        for directory in directories {
            #expect(!FileManager.default.fileExists(atPath: directory + "/jwt-keys.json"))
        }
        #expect(try await a.stop() == 0)
        #expect(try await b.stop() == 0)
    }
}
