import CairnTestSupport
import Foundation
import Testing

@Suite("End to end: configuration errors")
struct ConfigurationEndToEndTests {
    /// A data directory that cannot be made is a configuration error (exit 2) in one line naming
    /// the setting, the directory and the system's reason, instead of Foundation's error text
    /// and exit 1 (found by a fresh-user trial with `--data-dir /proc/nope`).
    @Test func aDataDirectoryThatCannotBeMadeExits2NamingItAndTheReason() async throws {
        let file = try temporaryDirectory() + "/plain-file"
        defer { try? FileManager.default.removeItem(atPath: (file as NSString).deletingLastPathComponent) }
        try Data("x".utf8).write(to: URL(fileURLWithPath: file))
        for (dataDir, reason) in [("/proc/nope", "No such file or directory"), (file + "/data", "Not a directory")] {
            for command in [["serve", "--port", "0"], ["migrate"]] {
                let result = try await runCairn(command + ["--data-dir", dataDir], environment: ["CAIRN_LOG_LEVEL": "error"])
                #expect(result.status == 2, "\(command) \(dataDir): \(result.error)")
                let lines = result.error.split(separator: "\n")
                #expect(lines.count == 1, "\(result.error)")
                #expect(result.error.contains("CAIRN_DATA_DIR") && result.error.contains("'\(dataDir)'"), "\(result.error)")
                #expect(result.error.contains(reason), "\(result.error)")
            }
        }
    }

    /// A value out of its range stops `cairn serve` with exit 2 and one line naming the setting
    /// and the range it takes (a fresh-user trial's `CAIRN_HTTP_DRAIN_TIMEOUT=0` was refused
    /// without either saying what would do).
    @Test func anOutOfRangeValueExits2NamingTheSettingAndItsRange() async throws {
        let dataDir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dataDir) }
        let result = try await runCairn(
            ["serve", "--port", "0", "--data-dir", dataDir], environment: ["CAIRN_HTTP_DRAIN_TIMEOUT": "0", "CAIRN_LOG_LEVEL": "error"])
        #expect(result.status == 2, "\(result.error)")
        #expect(result.error.split(separator: "\n").count == 1, "\(result.error)")
        #expect(result.error.contains("CAIRN_HTTP_DRAIN_TIMEOUT") && result.error.contains("from 1s to 3650d"), "\(result.error)")
    }

    /// A database URL without a database name, or with a parameter Cairn does not read, stops
    /// `cairn serve` with exit 2 before anything is made (the data directory included).
    @Test func aDatabaseURLWithoutADatabaseOrWithAnUnknownParameterExits2() async throws {
        let dataDir = try temporaryDirectory() + "/never-made"
        // Port 1: nothing listens there, so without the check the start fails later (exit 1)
        // instead of migrating whatever database the URL falls back to.
        for url in ["postgres://postgres@127.0.0.1:1", "postgres://postgres@127.0.0.1:1/cairn?sslmod=require"] {
            let result = try await runCairn(
                ["serve", "--port", "0", "--data-dir", dataDir], environment: ["CAIRN_DATABASE_URL": url, "CAIRN_LOG_LEVEL": "error"])
            #expect(result.status == 2, "\(url): \(result.error)")
            #expect(result.error.contains("CAIRN_DATABASE_URL"), "\(result.error)")
            #expect(!FileManager.default.fileExists(atPath: dataDir))
        }
    }

    /// `CAIRN_DATABASE_URL=` (empty, as Compose writes `${VAR:-}`) beside a `--config` file that
    /// names PostgreSQL: the node runs on that PostgreSQL, with the executor chosen for it, as
    /// without the variable. Before, the empty variable hid the file's URL and the node started
    /// on a SQLite file in its data directory.
    @Test func anEmptyDatabaseURLVariableLeavesTheFilesPostgreSQL() async throws {
        guard E2EEngine.available.contains(.postgres) else { return }
        let url = try #require(try await E2EEngine.postgres.environment()["CAIRN_DATABASE_URL"])
        let dataDir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dataDir) }
        let file = dataDir + "/cairn.json"
        try JSONSerialization.data(withJSONObject: ["database": ["url": url]]).write(to: URL(fileURLWithPath: file))
        let server = try await ServerProcess.start(dataDir: dataDir, environment: ["CAIRN_DATABASE_URL": ""], arguments: ["--config", file])
        let output = server.output
        #expect(try await server.stop() == 0)
        #expect(output.contains("database=postgres"), "\(output)")
        #expect(output.contains("executor=swift"), "\(output)")
        #expect(!FileManager.default.fileExists(atPath: dataDir + "/cairn.sqlite"), "a SQLite file was made")
    }
}
