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
        var cluster = OwnCluster(bin: "/usr/lib/postgresql/\(version)/bin", data: data, port: freePort())
        try cluster.asPostgres("initdb", ["-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8"])
        // A random port may be in use (a full run's client sockets take ephemeral ports in
        // this range): another one is tried.
        for attempt in 1...5 {
            do {
                try cluster.startServer()
                break
            } catch  where attempt < 5 {
                cluster = OwnCluster(bin: cluster.bin, data: data, port: freePort())
            }
        }
        try cluster.asPostgres("createdb", ["-h", "127.0.0.1", "-p", String(cluster.port), "-U", "postgres", "cairn_own"])
        return cluster
    }

    /// Runs `tool` on a thread of its own and awaits it: `pg_ctl -w` blocks for seconds, and a
    /// blocked thread of the cooperative pool (two threads on two cores) stalls every other
    /// test of a parallel run, deadlines included.
    func asPostgresOffThePool(_ tool: String, _ arguments: [String]) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let cluster = self
            Thread {
                continuation.resume(with: Result { try cluster.asPostgres(tool, arguments) })
            }.start()
        }
    }

    func startServer() throws {
        try asPostgres("pg_ctl", startArguments)
    }

    private var startArguments: [String] {
        [
            "-D", data, "-l", data + "/server.log", "-w", "-t", "60", "-o", "-c listen_addresses=127.0.0.1 -p \(port) -k \(data) -c fsync=off",
            "start",
        ]
    }

    func stopServer() throws {
        try asPostgres("pg_ctl", ["-D", data, "-m", "fast", "-w", "stop"])
    }

    /// ``startServer()`` off the cooperative pool.
    func restart() async throws {
        try await asPostgresOffThePool("pg_ctl", startArguments)
    }

    /// ``stopServer()`` off the cooperative pool.
    func stop() async throws {
        try await asPostgresOffThePool("pg_ctl", ["-D", data, "-m", "fast", "-w", "stop"])
    }

    func destroy() {
        try? stopServer()
        try? FileManager.default.removeItem(atPath: data)
    }

    var url: String { "postgres://postgres@127.0.0.1:\(port)/cairn_own?sslmode=disable&connect_timeout=60" }
}

@Suite("Catalog: resilience")
struct CatalogResilienceTests {
    /// Stops the database under a running node: cached products are served stale with a
    /// warning, uncached ones get 503 with Retry-After, the circuit opens; when the database is
    /// back, a half-open probe closes it and fresh reads resume. The cache's TTL, the session
    /// guard's re-reads and the breaker's cooldown run on a test clock the test advances.
    @Test(
        .enabled(if: TestEngine.postgresBaseURL != nil && FileManager.default.fileExists(atPath: "/usr/lib/postgresql")))
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
                let (token, tenantId) = try await owner(client, "stale@example.com")
                let cached = try #require(try await createProduct(client, token: token, ["sku": "CACHED"])["id"] as? String)
                let uncached = try #require(try await createProduct(client, token: token, ["sku": "UNCACHED"])["id"] as? String)
                #expect(try await client.json(.get, "/products/\(cached)", token: token).headers[xCache] == "miss")

                try await cluster.stop()

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
                #expect(components.catalog.breaker(tenantId: tenantId).state != .closed)
                #expect(components.catalog.breaker(tenantId: tenantId).trips >= 1)
                let metrics = try await client.json(.get, "/metrics").text
                #expect(metrics.contains("cairn_catalog_circuit_trips_total"))

                try await cluster.restart()

                // Each try comes after the cooldown, so the breaker lets a probe through; the
                // connection pool reconnects to the restarted server on its own (real-time)
                // schedule, which nothing announces: polled.
                try await pollUntil("a fresh read after the restart") {
                    clock.advance(by: .milliseconds(1001))
                    let response = try await client.json(.get, "/products/\(uncached)", token: token)
                    return response.status == .ok && response.headers[xCache] != "stale"
                }
                #expect(components.catalog.breaker(tenantId: tenantId).state == .closed)
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

@Suite("Catalog: noisy neighbours")
struct CatalogNoisyNeighbourTests {
    /// One tenant's slow uncached reads (played by an 8 s delay inside its read slot, as a slow
    /// query holding a pooled connection past its 5 s budget) time out and open its own circuit; another tenant's
    /// uncached reads meanwhile take a free slot at once and are answered, and its circuit
    /// stays closed. With one node-wide breaker, or slots served first come first served, the
    /// other tenant's reads got 503.
    @Test(arguments: TestEngine.available)
    func oneTenantsSlowReadsNeverFailAnotherTenantsUncachedReads(engine: TestEngine) async throws {
        try await withTestApp(
            engine,
            configure: {
                $0.catalog.readTimeout = .seconds(5)
                $0.catalog.maxReads = 2
                $0.catalog.maxReadsPerTenant = 1
                $0.catalog.breakerThreshold = 3
                $0.catalog.breakerCooldown = .seconds(600)
            }
        ) { client, components in
            let catalog = components.catalog
            let (noisy, noisyTenant) = try await owner(client, "noisy@example.com")
            let (quiet, quietTenant) = try await owner(client, "quiet@example.com")
            var noisyIds: [String] = []
            for index in 0..<8 {
                noisyIds.append(try #require(try await createProduct(client, token: noisy, ["sku": "N-\(index)"])["id"] as? String))
            }
            let quietId = try #require(try await createProduct(client, token: quiet, ["sku": "Q-1"])["id"] as? String)
            catalog.setReadDelayForTesting(.seconds(8), tenantId: noisyTenant)

            let ids = noisyIds
            let storm = Task {
                try await withThrowingTaskGroup(of: HTTPResponse.Status.self) { group in
                    for id in ids { group.addTask { try await client.json(.get, "/products/\(id)", token: noisy).status } }
                    var statuses: [HTTPResponse.Status] = []
                    for try await status in group { statuses.append(status) }
                    return statuses
                }
            }
            // Slots change with no event to wait on: polled until the storm holds its slot and queues.
            try await pollUntil("the noisy tenant's reads holding their slot and queueing") {
                let snapshot = catalog.readSlots.snapshot()
                return snapshot.running[noisyTenant, default: 0] >= 1 && snapshot.waiting[noisyTenant, default: 0] >= 5
            }
            let during = try await client.json(.get, "/products/\(quietId)", token: quiet)
            #expect(during.status == .ok, "\(during.status) \(during.text)")
            #expect(during.headers[xCache] == "miss")

            let statuses = try await storm.value
            #expect(statuses.contains(.serviceUnavailable), "the noisy tenant's queued reads ran out of budget: \(statuses)")
            #expect(catalog.breaker(tenantId: noisyTenant).trips >= 1)
            #expect(catalog.breaker(tenantId: noisyTenant).state == .open)

            // Its open circuit is its own: another uncached read of the quiet tenant (a miss
            // after a write) reaches the database.
            let another = try #require(try await createProduct(client, token: quiet, ["sku": "Q-2"])["id"] as? String)
            let after = try await client.json(.get, "/products/\(another)", token: quiet)
            #expect(after.status == .ok, "\(after.status) \(after.text)")
            #expect(after.headers[xCache] == "miss")
            #expect(catalog.breaker(tenantId: quietTenant).state == .closed)
        }
    }
}
