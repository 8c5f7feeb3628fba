import Foundation
import Testing

@Suite("End to end: cairn migrate's data directory")
struct MigrateEndToEndTests {
    /// `cairn migrate` makes the data directory only where the database lives in it: on
    /// SQLite it holds `cairn.sqlite`; on PostgreSQL no folder is left behind (before: an empty
    /// `./cairn-data` after every run, found by a fresh-user trial).
    @Test(arguments: E2EEngine.available)
    func migrateMakesTheDataDirectoryForSQLiteOnly(engine: E2EEngine) async throws {
        let parent = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: parent) }
        let dataDir = parent + "/cairn-data"
        let migrate = try await runCairn(["migrate", "--data-dir", dataDir], environment: try await engine.environment())
        #expect(migrate.status == 0, "\(migrate.error)")
        switch engine {
        case .sqlite: #expect(FileManager.default.fileExists(atPath: dataDir + "/cairn.sqlite"))
        case .postgres: #expect(!FileManager.default.fileExists(atPath: dataDir), "cairn migrate made \(dataDir) on PostgreSQL")
        }
    }
}
