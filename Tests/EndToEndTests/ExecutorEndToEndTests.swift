import CairnTestSupport
import Foundation
import Testing

/// With `CAIRN_CONCURRENCY_EXECUTOR=nio`, `cairn serve` runs its Swift tasks on SwiftNIO's event
/// loops (the global-executor takeover in `Cairn.main`), so a request never hops to the
/// runtime's cooperative pool and back; by default it keeps the pool; a bad value stops it.
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
    static func load(executor: String?, count: Int) async throws -> [String: Int] {
        let dataDir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dataDir) }
        let server = try await ServerProcess.start(
            dataDir: dataDir, environment: executor.map { ["CAIRN_CONCURRENCY_EXECUTOR": $0] } ?? [:])
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
        return after.merging(before) { $0 - $1 }
    }

    /// Swift's cooperative pool threads are Dispatch's `com.apple.root.default-qos` workers.
    static func poolTicks(_ ticks: [String: Int]) -> Int {
        ticks.filter { $0.key.contains("default-qos") }.values.reduce(0, +)
    }

    @Test func handlersRunOnTheEventLoopsNotTheCooperativePool() async throws {
        let taken = try await Self.load(executor: "nio", count: 3000)
        // The default: the runtime's pool does the requests' work (and shows that the
        // measurement can see a hop when there is one).
        let pooled = try await Self.load(executor: nil, count: 3000)
        func total(_ ticks: [String: Int]) -> Int { ticks.values.reduce(0, +) }
        #expect(Self.poolTicks(pooled) * 4 > total(pooled), "with the runtime's pool: \(pooled)")
        // Not zero: a task resumed from `Task.sleep` runs its first slice on Dispatch's threads
        // (NIO takes over the runtime's enqueue hook, not its timers), so a node's background
        // timers leave a few ticks there; a request's work leaves none.
        #expect(Self.poolTicks(taken) * 10 < total(taken), "with the takeover: \(taken)")
    }

    @Test func anUnknownExecutorStopsStartUpWithExitCode2() async throws {
        let result = try await runCairn(["serve", "--port", "0"], environment: ["CAIRN_CONCURRENCY_EXECUTOR": "fast"])
        #expect(result.status == 2)
        #expect(result.error.contains("CAIRN_CONCURRENCY_EXECUTOR must be swift or nio"))
    }
}
