import CairnAccounts
import CairnCatalog
import CairnHTTP
import CairnServer
import CairnStorage
import CairnTestSupport
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// A throwaway PostgreSQL cluster this test may stop and start (never the shared one).
struct OwnCluster {
    let bin: String
    let data: String
    let port: Int

    /// Runs a tool and waits for it with `waitpid`. (Foundation's `Process` can miss the exit
    /// of `pg_ctl start`, whose server child lives on, and then waits forever.)
    static func runProcess(_ executable: String, _ arguments: [String]) throws {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var pid: pid_t = 0
        guard posix_spawn(&pid, executable, &actions, nil, argv, environ) == 0 else {
            throw TestSetupError("cannot start \(executable)")
        }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
        // WIFEXITED && WEXITSTATUS == 0
        guard status & 0x7F == 0, (status >> 8) & 0xFF == 0 else {
            throw TestSetupError("\(arguments.first ?? executable) failed with status \(status)")
        }
    }

    /// `runuser -u postgres --` when running as root (initdb refuses root).
    func asPostgres(_ tool: String, _ arguments: [String]) throws {
        if getuid() == 0 {
            try Self.runProcess("/usr/sbin/runuser", ["-u", "postgres", "--", bin + "/" + tool] + arguments)
        } else {
            try Self.runProcess(bin + "/" + tool, arguments)
        }
    }

    static func freePort() -> Int {
        // Ports in a range the shared cluster and the test servers do not use.
        Int.random(in: 55_000...59_000)
    }

    static func start() throws -> OwnCluster {
        let roots = (try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? []
        guard let version = roots.sorted(by: { $0.compare($1, options: .numeric) == .orderedAscending }).last else {
            throw TestSetupError("no PostgreSQL server binaries under /usr/lib/postgresql")
        }
        let data = FileManager.default.temporaryDirectory.appendingPathComponent("cairn-own-pg-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        if getuid() == 0 { try runProcess("/usr/bin/chown", ["postgres:postgres", data]) }
        let cluster = OwnCluster(bin: "/usr/lib/postgresql/\(version)/bin", data: data, port: freePort())
        try cluster.asPostgres("initdb", ["-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8"])
        try cluster.startServer()
        try cluster.asPostgres("createdb", ["-h", "127.0.0.1", "-p", String(cluster.port), "-U", "postgres", "cairn_own"])
        return cluster
    }

    func startServer() throws {
        try asPostgres(
            "pg_ctl",
            [
                "-D", data, "-l", data + "/server.log", "-w", "-t", "60", "-o", "-c listen_addresses=127.0.0.1 -p \(port) -k \(data) -c fsync=off",
                "start",
            ])
    }

    func stopServer() throws {
        try asPostgres("pg_ctl", ["-D", data, "-m", "fast", "-w", "stop"])
    }

    func destroy() {
        try? stopServer()
        try? FileManager.default.removeItem(atPath: data)
    }

    var url: String { "postgres://postgres@127.0.0.1:\(port)/cairn_own?sslmode=disable" }
}

@Suite("Catalog: resilience")
struct CatalogResilienceTests {
    /// Stops the database under a running node: cached products are served stale with a
    /// warning, uncached ones get 503 with Retry-After, the circuit opens; when the database is
    /// back, a half-open probe closes it and fresh reads resume. The cache's TTL, the session
    /// guard's re-reads and the breaker's cooldown run on a test clock the test advances.
    @Test(.enabled(if: TestEngine.postgresBaseURL != nil && FileManager.default.fileExists(atPath: "/usr/lib/postgresql")))
    func staleWhenTheDatabaseStopsAndRecoveryWhenItReturns() async throws {
        let cluster = try OwnCluster.start()
        defer { cluster.destroy() }
        var configuration = CairnConfiguration()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("cairn-test-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        configuration.dataDir = directory
        configuration.accounts.bcryptCost = 4
        configuration.databaseURL = cluster.url
        configuration.catalog.cacheTTL = .milliseconds(200)
        configuration.catalog.readTimeout = .milliseconds(500)
        configuration.catalog.breakerThreshold = 2
        configuration.catalog.breakerCooldown = .seconds(1)
        let clock = TestClock()
        let components = try await buildComponents(configuration: configuration, logger: testLogger, clock: clock)
        let app = Application(router: buildRouter(components: components), logger: testLogger)
        do {
            try await app.test(.router) { client in
                let (token, _) = try await owner(client, "stale@example.com")
                let cached = try #require(try await createProduct(client, token: token, ["sku": "CACHED"])["id"] as? String)
                let uncached = try #require(try await createProduct(client, token: token, ["sku": "UNCACHED"])["id"] as? String)
                #expect(try await client.json(.get, "/products/\(cached)", token: token).headers[xCache] == "miss")

                try cluster.stopServer()

                // Past the TTL the entry is served stale, with a warning.
                clock.advance(by: .milliseconds(300))
                let stale = try await client.json(.get, "/products/\(cached)", token: token)
                #expect(stale.status == .ok && stale.headers[xCache] == "stale")
                #expect(stale.headers[HTTPField.Name("Warning")!]?.hasPrefix("110") == true)
                // Sessions are re-read from the database every 2 s; through the outage the last
                // known session state stands, so cached answers keep coming past that.
                var answers: [String] = []
                for _ in 0..<12 {
                    clock.advance(by: .milliseconds(250))
                    let response = try await client.json(.get, "/products/\(cached)", token: token)
                    answers.append("\(response.status.code) \(response.headers[xCache] ?? "-")")
                }
                #expect(answers.allSatisfy { $0 == "200 stale" }, "\(answers)")
                let unavailable = try await client.json(.get, "/products/\(uncached)", token: token)
                #expect(unavailable.status == .serviceUnavailable)
                #expect(unavailable.code == "unavailable")
                #expect(Int(unavailable.headers[.retryAfter] ?? "") ?? 0 >= 1)
                #expect(components.catalog.breaker.state != .closed)
                #expect(components.catalog.breaker.trips >= 1)
                let metrics = try await client.json(.get, "/metrics").text
                #expect(metrics.contains("cairn_catalog_circuit_trips_total"))

                try cluster.startServer()

                // Each try comes after the cooldown, so the breaker lets a probe through; the
                // connection pool reconnects to the restarted server on its own (real-time)
                // schedule, which nothing announces: polled.
                try await pollUntil("a fresh read after the restart") {
                    clock.advance(by: .milliseconds(1001))
                    let response = try await client.json(.get, "/products/\(uncached)", token: token)
                    return response.status == .ok && response.headers[xCache] != "stale"
                }
                #expect(components.catalog.breaker.state == .closed)
                let fresh = try await client.json(.get, "/products/\(cached)", token: token)
                #expect(fresh.status == .ok)
                #expect(fresh.headers[xCache] != "stale")
            }
        } catch {
            await components.database.close()
            throw error
        }
        await components.database.close()
    }
}
