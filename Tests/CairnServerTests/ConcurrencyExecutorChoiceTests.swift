import CairnServer
import CairnTestSupport
import Foundation
import Testing

/// Which executor a node installs before its first task: the event loops on SQLite, the
/// runtime's pool on PostgreSQL, whichever way the database is named, unless told.
@Suite("Concurrency executor choice", .dedicatedThreads)
struct ConcurrencyExecutorChoiceTests {
    static let postgres = "postgres://cairn@127.0.0.1:5432/cairn"

    func choice(_ arguments: [String], _ environment: [String: String] = [:], file: String? = nil) -> Bool {
        ConcurrencyExecutorChoice.usesEventLoops(arguments: ["cairn", "serve"] + arguments, environment: environment) { _ in
            file.map { Foundation.Data($0.utf8) }
        }
    }

    @Test func sqliteTakesTheEventLoopsAndPostgresKeepsThePool() {
        #expect(choice([]))
        #expect(!choice(["--database-url", Self.postgres]))
        #expect(!choice(["--database-url=\(Self.postgres)"]))
        #expect(!choice([], ["CAIRN_DATABASE_URL": Self.postgres]))
        // An empty URL is SQLite, as the configuration reads it; the flag wins over the variable.
        #expect(choice([], ["CAIRN_DATABASE_URL": ""]))
        #expect(choice(["--database-url", ""], ["CAIRN_DATABASE_URL": Self.postgres]))
        // After `--` nothing is an option.
        #expect(choice(["--", "--database-url", Self.postgres]))
    }

    @Test func aConfigurationFileNamingPostgresKeepsThePool() {
        #expect(!choice(["--config", "c.json"], file: #"{"database": {"url": "\#(Self.postgres)"}}"#))
        #expect(!choice([], ["CAIRN_CONFIG_FILE": "c.json"], file: #"{"database.url": "\#(Self.postgres)"}"#))
        #expect(choice(["--config", "c.json"], file: #"{"http": {"port": "8080"}}"#))
        // Unreadable or not JSON: the pool (start-up then reports the file).
        #expect(!choice(["--config", "c.json"], file: nil))
        #expect(!choice(["--config", "c.json"], file: "not json"))
        // The variable and the flag win over the file.
        #expect(choice(["--config", "c.json", "--database-url", ""], file: #"{"database": {"url": "\#(Self.postgres)"}}"#))
    }

    @Test func theSettingWinsOverTheEngine() {
        #expect(choice(["--database-url", Self.postgres], ["CAIRN_CONCURRENCY_EXECUTOR": "nio"]))
        #expect(!choice([], ["CAIRN_CONCURRENCY_EXECUTOR": "swift"]))
        #expect(choice([], ["CAIRN_CONCURRENCY_EXECUTOR": "auto"]))
    }
}
