import CairnTestSupport
import Foundation
import Testing

/// The master key at start-up (issue 14).
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
