import CairnTestSupport
import Foundation
import Testing

/// With `CAIRN_CONCURRENCY_EXECUTOR=nio`, `cairn serve` runs its Swift tasks on SwiftNIO's event
/// loops (the global-executor takeover in `Cairn.main`), so a request never hops to the
/// runtime's cooperative pool and back; with `swift` it keeps the pool; by default (`auto`) it
/// takes the event loops on SQLite and keeps the pool on PostgreSQL, wherever the database URL
/// comes from; a bad value stops it.
@Suite("End to end: request handlers run where CAIRN_CONCURRENCY_EXECUTOR says")
struct ExecutorEndToEndTests {
    /// CPU ticks (user + system, from `/proc/PID/task/*/stat`, fields 14 and 15 after the name)
    /// summed by thread name. Linux only, as the server's deployment target.
    static func ticksByThread(of pid: pid_t) throws -> [String: Int] {
        var ticks: [String: Int] = [:]
        for task in try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task") {
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/task/\(task)/stat", encoding: .utf8),
                let open = stat.firstIndex(of: "("), let close = stat.lastIndex(of: ")")
            else { continue }
            let name = String(stat[stat.index(after: open)..<close])
            // After the name: state is field 3, utime 14, stime 15.
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            guard fields.count > 12, let user = Int(fields[11]), let system = Int(fields[12]) else { continue }
            ticks[name, default: 0] += user + system
        }
        return ticks
    }

    /// Serves `count` authenticated `GET /users/me` on one keep-alive connection (one curl
    /// process) and returns the CPU ticks the server's threads spent, by thread name.
    /// `environment` and `arguments` go to `cairn serve` as they are.
    static func load(
        executor: String?, count: Int, environment: [String: String] = [:], arguments: [String] = []
    ) async throws -> (ticks: [String: Int], log: String) {
        let dataDir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dataDir) }
        let server = try await ServerProcess.start(
            dataDir: dataDir, environment: environment.merging(executor.map { ["CAIRN_CONCURRENCY_EXECUTOR": $0] } ?? [:]) { $1 },
            arguments: arguments)
        let base = server.baseURL
        #expect(
            try await curl("POST", "\(base)/auth/register", json: ["email": "loop@example.com", "password": "loop password!", "name": "L"])
                .status == 201)
        let login = try await curl("POST", "\(base)/auth/login", json: ["email": "loop@example.com", "password": "loop password!"])
        let token = try #require(login.json["accessToken"] as? String)
        let before = try ticksByThread(of: server.pid)
        let config = String(repeating: "url = \"\(base)/users/me\"\noutput = \"/dev/null\"\n", count: count)
        let result = try await runChild(
            "/usr/bin/env", ["curl", "-s", "-S", "-f", "-H", "Authorization: Bearer \(token)", "-K", "-"], input: Data(config.utf8))
        #expect(result.status == 0, "curl: \(result.errorText)")
        let after = try ticksByThread(of: server.pid)
        #expect(try await server.stop() == 0)
        return (after.merging(before) { $0 - $1 }, server.output)
    }

    /// Swift's cooperative pool threads are Dispatch's `com.apple.root.default-qos` workers.
    static func poolTicks(_ ticks: [String: Int]) -> Int {
        ticks.filter { $0.key.contains("default-qos") }.values.reduce(0, +)
    }

    static func total(_ ticks: [String: Int]) -> Int { ticks.values.reduce(0, +) }

    /// The runtime's pool does the requests' work (and the measurement sees a hop when there is one).
    static func expectPool(_ ticks: [String: Int], _ comment: Comment) {
        #expect(poolTicks(ticks) * 4 > total(ticks), "\(comment): \(ticks)")
    }

    /// The event loops do it. Not zero on the pool: a task resumed from `Task.sleep` runs its
    /// first slice on Dispatch's threads (NIO takes over the runtime's enqueue hook, not its
    /// timers), so a node's background timers leave a few ticks there; a request's work none.
    static func expectEventLoops(_ ticks: [String: Int], _ comment: Comment) {
        #expect(poolTicks(ticks) * 10 < total(ticks), "\(comment): \(ticks)")
    }

    @Test func handlersRunOnTheEventLoopsOrThePoolAsTheSettingSays() async throws {
        let taken = try await Self.load(executor: "nio", count: 3000)
        Self.expectEventLoops(taken.ticks, "nio")
        #expect(taken.log.contains("executor=nio"), "\(taken.log)")
        let pooled = try await Self.load(executor: "swift", count: 3000)
        Self.expectPool(pooled.ticks, "swift")
        #expect(pooled.log.contains("executor=swift"), "\(pooled.log)")
        // Any case, as the other `CAIRN_*` words.
        Self.expectEventLoops(try await Self.load(executor: "NIO", count: 1000).ticks, "NIO")
        // From the configuration file, as every other setting (the environment wins over it).
        let file = try Self.configFile(["concurrency": ["executor": "swift"]])
        defer { try? FileManager.default.removeItem(atPath: file) }
        let byFile = try await Self.load(executor: nil, count: 1000, arguments: ["--config", file])
        Self.expectPool(byFile.ticks, "swift from --config")
        #expect(byFile.log.contains("executor=swift"), "\(byFile.log)")
        #expect(try await Self.load(executor: "nio", count: 10, arguments: ["--config", file]).log.contains("executor=nio"))
    }

    /// A JSON configuration file holding `object`; the caller removes it.
    static func configFile(_ object: [String: Any]) throws -> String {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("cairn-config-\(UUID().uuidString).json").path
        try JSONSerialization.data(withJSONObject: object).write(to: URL(fileURLWithPath: file))
        return file
    }

    /// The default: the event loops on embedded SQLite, the runtime's pool on PostgreSQL (where
    /// the event loops served the task list about 15 % slower), whether the URL comes from the
    /// environment, the `--database-url` flag or the `--config` file.
    @Test(arguments: E2EEngine.available)
    func theDefaultIsTheEventLoopsOnSQLiteAndThePoolOnPostgreSQL(engine: E2EEngine) async throws {
        let environment = try await engine.environment()
        let byEnvironment = try await Self.load(executor: nil, count: 3000, environment: environment)
        switch engine {
        case .sqlite:
            Self.expectEventLoops(byEnvironment.ticks, "default on SQLite")
            #expect(byEnvironment.log.contains("executor=nio"), "\(byEnvironment.log)")
        case .postgres:
            Self.expectPool(byEnvironment.ticks, "default on PostgreSQL, CAIRN_DATABASE_URL")
            #expect(byEnvironment.log.contains("executor=swift"), "\(byEnvironment.log)")
            // A fresh database each: another data directory's node would meet a master key it lacks.
            var url = try #require(try await engine.environment()["CAIRN_DATABASE_URL"])
            let byFlag = try await Self.load(executor: "auto", count: 1000, arguments: ["--database-url", url])
            Self.expectPool(byFlag.ticks, "auto on PostgreSQL, --database-url")
            url = try #require(try await engine.environment()["CAIRN_DATABASE_URL"])
            let file = try Self.configFile(["database": ["url": url]])
            defer { try? FileManager.default.removeItem(atPath: file) }
            let byFile = try await Self.load(executor: nil, count: 1000, arguments: ["--config", file])
            Self.expectPool(byFile.ticks, "default on PostgreSQL, --config")
        }
    }

    @Test func anUnknownExecutorStopsStartUpWithExitCode2() async throws {
        let result = try await runCairn(["serve", "--port", "0"], environment: ["CAIRN_CONCURRENCY_EXECUTOR": "fast"])
        #expect(result.status == 2)
        #expect(result.error.contains("CAIRN_CONCURRENCY_EXECUTOR must be auto, swift or nio"))
        let file = try Self.configFile(["concurrency": ["executor": "bogus"]])
        defer { try? FileManager.default.removeItem(atPath: file) }
        // `migrate`, which exits by itself, so that a value that were ignored would not leave a server running.
        let dataDir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dataDir) }
        let fromFile = try await runCairn(["migrate", "--data-dir", dataDir, "--config", file])
        #expect(fromFile.status == 2)
        #expect(fromFile.error.contains("must be auto, swift or nio, not bogus"), "\(fromFile.error)")
    }
}
