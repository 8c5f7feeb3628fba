import CairnFiles
import CairnHTTP
import CairnJobs
import CairnObjects
import CairnServer
import CairnStorage
import CairnTestSupport
import Dispatch
import Foundation
import HTTPTypes
import HummingbirdTesting
import NIOCore
import NIOFileSystem
import NIOPosix
import SQLKit
import Testing

/// The monitoring files: `deploy/grafana/cairn.json` and `deploy/prometheus/alerts.yml`.
enum MonitoringFiles {
    /// The package root: the working directory (tests run from it), else the one above `Tests`.
    static let root: String = {
        let here = FileManager.default.currentDirectoryPath
        if FileManager.default.fileExists(atPath: here + "/deploy/grafana/cairn.json") { return here }
        return URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    }()

    /// Every PromQL expression of the dashboard: panels' `expr`s and template variables' queries.
    static func dashboardExpressions() throws -> [String] {
        let data = try Data(contentsOf: URL(fileURLWithPath: root + "/deploy/grafana/cairn.json"))
        var found: [String] = []
        func walk(_ value: Any) {
            if let object = value as? [String: Any] {
                for (key, inner) in object {
                    if key == "expr" || key == "definition", let text = inner as? String { found.append(text) } else { walk(inner) }
                }
            } else if let array = value as? [Any] {
                array.forEach(walk)
            }
        }
        walk(try JSONSerialization.jsonObject(with: data))
        return found
    }

    /// Every rule's `expr` in the alerts file (inline, or a folded `>-` block on the lines below).
    static func alertExpressions() throws -> [String] {
        let lines = try String(contentsOfFile: root + "/deploy/prometheus/alerts.yml", encoding: .utf8).split(
            separator: "\n", omittingEmptySubsequences: false)
        var found: [String] = []
        var index = 0
        while index < lines.count {
            let line = lines[index]
            guard let range = line.range(of: "expr:") else {
                index += 1
                continue
            }
            let indent = line.prefix(while: { $0 == " " }).count
            let inline = line[range.upperBound...].trimmingCharacters(in: .whitespaces)
            index += 1
            if inline == ">-" || inline == ">" || inline == "|" {
                var block: [String] = []
                while index < lines.count, lines[index].prefix(while: { $0 == " " }).count > indent {
                    block.append(lines[index].trimmingCharacters(in: .whitespaces))
                    index += 1
                }
                found.append(block.joined(separator: " "))
            } else {
                found.append(inline)
            }
        }
        return found
    }

    /// The metric names a PromQL expression reads: label matchers, ranges, strings and
    /// grouping clauses removed, then every identifier that is not a function or a keyword.
    static func metricNames(in expression: String) -> Set<String> {
        var text = expression
        text = text.replacing(#/"(?:[^"\\]|\\.)*"/#, with: "")
        text = text.replacing(#/\{[^}]*\}/#, with: "")
        text = text.replacing(#/\[[^\]]*\]/#, with: "")
        text = text.replacing(#/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/#, with: "")
        let keywords: Set<String> = ["and", "or", "unless", "bool", "offset", "instance"]
        var names: Set<String> = []
        for match in text.matches(of: #/([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?/#) where match.output.2 == nil {
            let name = String(match.output.1)
            if !keywords.contains(name) { names.insert(name) }
        }
        return names
    }

    /// Whether `name` is exported in `text`: a sample of that name, or a histogram's
    /// `_bucket`/`_sum`/`_count` series whose base is declared a histogram.
    static func isExported(_ name: String, in text: String, samples: Set<String>) -> Bool {
        if samples.contains(name) { return true }
        for suffix in ["_bucket", "_sum", "_count"] where name.hasSuffix(suffix) {
            if text.contains("# TYPE \(name.dropLast(suffix.count)) histogram") { return true }
        }
        return false
    }
}

@Suite("Monitoring: metrics, dashboard and alerts")
struct MonitoringTests {
    @Test func promQLNamesAreFound() {
        #expect(
            MonitoringFiles.metricNames(
                in: #"histogram_quantile(0.99, sum by (le, http_route) (rate(http_server_request_duration_bucket{instance=~"$instance"}[5m]))) > 1"#)
                == ["http_server_request_duration_bucket"])
        #expect(
            MonitoringFiles.metricNames(in: "cairn_data_dir_free_bytes / cairn_data_dir_capacity_bytes < 0.10")
                == ["cairn_data_dir_free_bytes", "cairn_data_dir_capacity_bytes"])
        #expect(MonitoringFiles.metricNames(in: "label_values(hb_requests, instance)") == ["hb_requests"])
    }

    /// A live node, exercised so every series exists (a request, a job run, each probe),
    /// exports every metric the dashboard and the alert rules name.
    @Test(arguments: TestEngine.available)
    func dashboardAndAlertsNameOnlyExportedMetrics(engine: TestEngine) async throws {
        let dashboard = try MonitoringFiles.dashboardExpressions()
        let alerts = try MonitoringFiles.alertExpressions()
        #expect(dashboard.count >= 25)
        #expect(alerts.count >= 10)
        try await withTestApp(engine, mode: .live) { app in
            let (_, tokens) = try await app.client.registerAndLogin(email: "monitoring@example.com")
            let token = tokens.accessToken
            #expect(try await app.client.json(.get, "/tasks", token: token).status == .ok)
            #expect(try await app.client.json(.get, "/products", token: token).status == .ok)
            let enqueued = try await app.client.json(.post, "/jobs", ["kind": "noop"], token: token)
            try #require(enqueued.status == .accepted || enqueued.status == .created, "\(enqueued.status) \(enqueued.text)")
            let id = try enqueued.decode(JobBody.self).id
            #expect(try await app.waitUntilFinished(id, token: token).state == "succeeded")
            try await app.components.jobs.sampleLag()
            await EventLoopProbe().probe()
            DiskProbe(path: app.components.configuration.dataDir).sample()
            // The job worker samples the jobs-per-state gauges every rescue interval (5 s); no
            // event marks a sample, so this polls for the first one.
            try await pollUntil("the first queue-depth sample", timeout: .seconds(30)) { metricValue("cairn_jobs", ["state": "succeeded"]) != nil }
            let metrics = try await app.client.execute(uri: "/metrics", method: .get, headers: [:], body: nil)
            let text = metrics.text
            let samples = sampleNames(in: text)
            for (file, expressions) in [("cairn.json", dashboard), ("alerts.yml", alerts)] {
                for expression in expressions {
                    for name in MonitoringFiles.metricNames(in: expression) {
                        let exported = MonitoringFiles.isExported(name, in: text, samples: samples)
                        #expect(exported, "\(file) names \(name), which /metrics lacks: \(expression)")
                    }
                }
            }
        }
    }

    /// Queue lag is the age of the oldest due job, read on the injected clock, and falls to 0
    /// once the queue is empty.
    @Test(arguments: TestEngine.available)
    func queueLagIsTheAgeOfTheOldestDueJob(engine: TestEngine) async throws {
        let clock = TestClock()
        try await withTestApp(engine, clock: clock) { app in
            // A queue name of this test's own: the gauges are process-wide.
            let queue = "lag-\(UUID().uuidString.prefix(8).lowercased())"
            var request = JobRequest(kind: "noop")
            request.queue = queue
            let (first, _) = try await app.components.jobs.enqueue(request, tenantId: UUIDv7.make(), createdBy: nil)
            clock.advance(by: .seconds(30))
            _ = try await app.components.jobs.enqueue(request, tenantId: UUIDv7.make(), createdBy: nil)
            clock.advance(by: .seconds(60))
            let sampled = try await app.components.jobs.sampleLag()
            #expect(sampled[queue] == 90)
            #expect(metricValue("cairn_jobs_queue_lag_seconds", ["queue": queue]) == 90)
            // Both jobs gone: the queue's lag returns to 0 rather than staying at its last value.
            _ = try await app.database.write { db in try await db.raw("DELETE FROM jobs WHERE queue = \(bind: queue)").run() }
            _ = first
            try await app.components.jobs.sampleLag()
            #expect(metricValue("cairn_jobs_queue_lag_seconds", ["queue": queue]) == 0)
        }
    }

    /// Database work records the wait for a connection (the SQLite writer queue or the
    /// PostgreSQL pool) and returns the connection: in-use is back to its level after.
    @Test(arguments: TestEngine.available)
    func poolWaitIsRecordedForDatabaseWork(engine: TestEngine) async throws {
        try await withTestApp(engine) { app in
            let pool = engine == .postgres ? "postgres" : "sqlite_writer"
            let before = metricValue("cairn_db_pool_acquire_wait_seconds_count", ["pool": pool]) ?? 0
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<20 {
                    group.addTask { _ = try await app.database.write { db in try await db.raw("SELECT 1 AS one").all() } }
                }
                try await group.waitForAll()
            }
            let after = try #require(metricValue("cairn_db_pool_acquire_wait_seconds_count", ["pool": pool]))
            // Other tests share the process's registry, so at least these 20.
            #expect(after - before >= 20)
            #expect(metricValue("cairn_db_pool_connections_in_use", ["pool": pool]) != nil)
            #expect(metricValue("cairn_db_pool_connections_idle", ["pool": pool]) != nil)
        }
    }

    /// A loop kept busy for 200 ms after the probe's task is queued shows a delay past 100 ms.
    @Test func eventLoopLagShowsABlockedLoop() async throws {
        Observability.bootstrapMetrics()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let probe = EventLoopProbe(group: group)
        func slowProbes() -> Double {
            let all = metricValue("cairn_event_loop_lag_seconds_count") ?? 0
            let fast = metricValue("cairn_event_loop_lag_seconds_bucket", ["le": "0.1"]) ?? 0
            return all - fast
        }
        let before = slowProbes()
        // The loop is held until the probe's task is queued, then 200 ms more: the probe's
        // wait is at least that long however loaded the machine is.
        let queued = DispatchSemaphore(value: 0)
        group.next().execute {
            // Blocks the loop on purpose: this is what the probe must see.
            queued.wait()
            usleep(200_000)
        }
        await probe.probe(submitted: { queued.signal() })
        #expect(slowProbes() - before >= 1)
        try await group.shutdownGracefully()
    }

    /// Blob operations are timed by operation, and a failing one is counted as an error.
    @Test func blobOperationsAreTimedAndErrorsCounted() async throws {
        Observability.bootstrapMetrics()
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("blobs-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let blobs = MeteredBlobStore(LocalBlobStore(rootPath: folder))
        let tenant = UUIDv7.make()
        let id = UUIDv7.make()
        let writes = metricValue("cairn_blob_operation_seconds_count", ["operation": "write"]) ?? 0
        let readErrors = metricValue("cairn_blob_operation_errors_total", ["operation": "read"]) ?? 0
        let body = AsyncStream<ByteBuffer> { continuation in
            continuation.yield(ByteBuffer(string: "hello"))
            continuation.finish()
        }
        _ = try await blobs.write(tenantId: tenant, id: id, body: body, maxBytes: 100)
        #expect(try await blobs.read(tenantId: tenant, id: id, limit: 100) == ByteBuffer(string: "hello"))
        #expect((metricValue("cairn_blob_operation_seconds_count", ["operation": "write"]) ?? 0) - writes >= 1)
        await #expect(throws: (any Error).self) { _ = try await blobs.read(tenantId: tenant, id: UUIDv7.make(), limit: 100) }
        #expect((metricValue("cairn_blob_operation_errors_total", ["operation": "read"]) ?? 0) - readErrors >= 1)
    }
}
