import CairnFiles
import CairnHTTP
import CairnJobs
import CairnServer
import CairnStorage
import CairnTestSupport
import Foundation
import HTTPTypes
import HummingbirdTesting
import Synchronization
import SystemPackage
import Testing

@testable import CairnPipelines

#if canImport(Glibc)
    import Glibc
#endif

/// This process's resident memory, bytes (`VmRSS` of `/proc/self/status`).
func residentBytes() -> Int64 {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
        let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
        let kib = Int64(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "")
    else { return 0 }
    return kib << 10
}

/// Samples this process's resident memory every 20 ms until stopped; keeps the peak.
struct ResidentPeak: Sendable {
    private let sampler = Task<Int64, Never> {
        var peak = residentBytes()
        // Sampling is the measurement itself, not a wait for an event.
        while !Task.isCancelled {
            peak = max(peak, residentBytes())
            try? await Task.sleep(for: .milliseconds(20))
        }
        return max(peak, residentBytes())
    }

    /// Stops sampling; returns the peak, bytes.
    func stop() async -> Int64 {
        sampler.cancel()
        return await sampler.value
    }
}

/// What happened, in order, across tasks.
final class Recorder: Sendable {
    private let events = Mutex<[String]>([])
    func append(_ event: String) { events.withLock { $0.append(event) } }
    var all: [String] { events.withLock { $0 } }
}

extension PipelineClient {
    /// Starts a run; returns its job id.
    func startRun(_ pipelineId: String, fileId: String) async throws -> String {
        let started = try await start(pipelineId, fileId: fileId)
        guard started.status == .accepted, let jobId = started.object["id"] as? String else {
            throw TestSetupError("starting the run failed: \(started.status) \(started.text)")
        }
        return jobId
    }

    /// The `result.failure` of a finished run that was discarded at its first attempt.
    func failure(of job: [String: Any]) -> String? {
        guard job["state"] as? String == "discarded", job["attempt"] as? Int == 1 else { return nil }
        return (job["result"] as? [String: Any])?["failure"] as? String
    }
}

/// The tenant of the user with `token`.
func tenantOf(_ client: any TestClientProtocol, _ token: String) async throws -> String {
    try #require(try await client.json(.get, "/users/me", token: token).object["tenantId"] as? String)
}

/// A small CSV, so a phase's own work costs next to nothing of a tight CPU limit.
let tinyCSV = Array("n,label\n1,one\n2,two\n3,three\n".utf8)

/// Never ends by itself: only a limit, the timeout or cancellation stops it.
let runawaySQL = "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c) SELECT count(*) AS n FROM c"

@Suite("Pipeline sandbox processes: hard limits, kills, fair slots")
struct PipelineSandboxTests {
    @Test(arguments: TestEngine.available)
    func aHugeRowFailsOnTheMemoryLimitWhileTheNodesMemoryStaysFlat(engine: TestEngine) async throws {
        // Computing the values takes seconds on a loaded machine: the limit must be what stops them.
        try await withPipelines(engine, configure: { $0.pipelines.timeoutSeconds = 120 }) { tenant, _, _ in
            let file = try await tenant.upload(tinyCSV)
            // Concatenation makes SQLite build each value (a zeroblob alone is only a size).
            let hostile: [(sql: String, what: String)] = [
                // Twelve 60 MB values in one row (720 MB, which the server itself once held):
                // SQLite's own allocations fail.
                ((1...12).map { "zeroblob(60000000) || x'' AS v\($0)" }.joined(separator: ", "), "SQLite's heap"),
                // A row SQLite can hold but whose encoding would not fit beside it.
                ((1...3).map { "zeroblob(70000000) || x'' AS v\($0)" }.joined(separator: ", "), "the encoders"),
                // Blobs SQLite keeps as a size until they are read.
                ((1...12).map { "zeroblob(60000000) AS v\($0)" }.joined(separator: ", "), "lazy blobs"),
            ]
            for (columns, what) in hostile {
                let pipeline = try await tenant.create(pipelineBody("SELECT \(columns) FROM input LIMIT 1"))
                let before = residentBytes()
                let peak = ResidentPeak()
                let job = try await tenant.run(pipeline, fileId: file)
                let highest = await peak.stop()
                #expect(tenant.failure(of: job) == "memory limit of 512 MiB reached", "\(what): \(job)")
                #expect((job["result"] as? [String: Any])?["outputFileId"] == nil)
                // Other tests run beside this one in the same process, hence a wide margin; each
                // row alone is 210 MB or more (the end-to-end test measures the server alone).
                #expect(highest - before < 256 << 20, "\(what): the node grew from \(before >> 20) MiB to \(highest >> 20) MiB")
                print("hostile run (\(what)) on \(engine): node RSS \(before >> 20) MiB before, \(highest >> 20) MiB at its peak")
            }
        }
    }

    @Test(arguments: TestEngine.available)
    func aRunawayQueryFailsOnTheCPUTimeLimit(engine: TestEngine) async throws {
        try await withPipelines(engine, configure: { $0.allowLongRuns(cpuSeconds: 1) }) { tenant, _, _ in
            let file = try await tenant.upload(tinyCSV)
            let job = try await tenant.run(try await tenant.create(pipelineBody(runawaySQL)), fileId: file)
            #expect(tenant.failure(of: job) == "CPU time limit reached", "\(job)")
            // Its last progress says it failed, not that it is still querying.
            #expect((job["progress"] as? [String: Any])?["phase"] as? String == "failed", "\(job)")
        }
    }

    @Test(arguments: TestEngine.available)
    func anOutputOverItsLimitFails(engine: TestEngine) async throws {
        try await withPipelines(engine, configure: { $0.pipelines.maxOutputBytes = 64 << 10 }) { tenant, client, _ in
            let file = try await tenant.upload(tinyCSV)
            let big = "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c LIMIT 200000) SELECT n, 'some text' AS t FROM c"
            let job = try await tenant.run(try await tenant.create(pipelineBody(big)), fileId: file)
            #expect(tenant.failure(of: job) == "output limit of 64 KiB reached", "\(job)")
            #expect((job["result"] as? [String: Any])?["outputFileId"] == nil)
            // Under the limit the same pipeline still writes its output.
            let small = try await tenant.run(try await tenant.create(pipelineBody("SELECT * FROM input")), fileId: file)
            #expect(try await tenant.rows(of: small).count == 3)
            let files = try await client.json(.get, "/files", token: tenant.token).object["items"] as? [[String: Any]]
            #expect(files?.count == 2, "the input and the small run's output, nothing of the failed run")
        }
    }

    @Test(arguments: TestEngine.available)
    func aCancelledRunKillsItsProcessWhichHeldNothingOfTheServers(engine: TestEngine) async throws {
        try await withPipelines(engine, configure: { $0.allowLongRuns() }) { tenant, client, components in
            let file = try await tenant.upload(tinyCSV)
            let jobId = try await tenant.startRun(try await tenant.create(pipelineBody(runawaySQL)), fileId: file)
            let runner = components.pipelineRunner
            // The query's process announces itself with a progress report once it runs. The
            // phase is read first: a process seen before it could be the loader, about to exit.
            try await components.jobs.waitUntil("the query's sandbox process runs", timeout: .seconds(60)) {
                guard let job = try await components.jobs.store.jobs(ids: [jobId]).first,
                    job.progress.flatMap({ JSONValue(text: $0) })?["phase"]?.string == "querying"
                else { return false }
                return runner.sandboxProcess(jobId: jobId) != nil
            }
            let pid = try #require(runner.sandboxProcess(jobId: jobId))
            let proc = "/proc/\(pid)"

            // Its own folder, no environment, hard limits, and no descriptor of the server's.
            let folder = components.pipelineRunner.workFolder(tenantId: try await tenantOf(client, tenant.token), jobId: jobId)
            #expect(try FileManager.default.destinationOfSymbolicLink(atPath: proc + "/cwd") == folder)
            #expect(try Data(contentsOf: URL(fileURLWithPath: proc + "/environ")).isEmpty)
            let limits = try String(contentsOfFile: proc + "/limits", encoding: .utf8)
            #expect(limits.split(separator: "\n").contains { $0.hasPrefix("Max data size") && $0.contains("536870912") }, "\(limits)")
            #expect(limits.split(separator: "\n").contains { $0.hasPrefix("Max open files") && $0.contains(" 64 ") }, "\(limits)")
            // proc(5): the 19th field of a thread's stat is its nice value (per thread on Linux;
            // the process name, the 2nd, has no spaces here).
            let threads = try FileManager.default.contentsOfDirectory(atPath: proc + "/task").map {
                (try? String(contentsOfFile: proc + "/task/" + $0 + "/stat", encoding: .utf8))?.split(separator: " ")[18] ?? "?"
            }
            #expect(!threads.isEmpty && threads.allSatisfy { $0 == "10" }, "every thread yields the CPU to the server: \(threads)")
            let targets = try FileManager.default.contentsOfDirectory(atPath: proc + "/fd").compactMap {
                try? FileManager.default.destinationOfSymbolicLink(atPath: proc + "/fd/" + $0)
            }
            #expect(!targets.isEmpty)
            for target in targets {
                #expect(!target.hasPrefix("socket:"), "no connection of the server: \(targets)")
                #expect(!target.contains("cairn.sqlite"), "not the server's database: \(targets)")
                #expect(!target.hasPrefix("/") || target.hasPrefix(folder) || target == "/dev/null", "only its own files: \(targets)")
            }

            #expect(try await client.json(.post, "/jobs/\(jobId)/cancel", token: tenant.token).status == .ok)
            try await components.jobs.waitForJob(jobId, state: .cancelled)
            #expect(kill(pid, 0) == -1 && errno == ESRCH, "the process is gone (killed and reaped)")
            #expect(runner.sandboxProcess(jobId: jobId) == nil)
            #expect(!FileManager.default.fileExists(atPath: folder), "a cancelled run's work folder is removed at once")

            // Retried, its checkpoint says "loaded" but the work database is gone: it loads again
            // and reaches its query (it used to query an empty database and fail for good).
            #expect(try await client.json(.post, "/jobs/\(jobId)/retry", token: tenant.token).status == .ok)
            try await components.jobs.waitUntil("the retried run's query process", timeout: .seconds(60)) {
                guard let job = try await components.jobs.store.jobs(ids: [jobId]).first else { return false }
                if job.state.isFinal { return true }
                return runner.sandboxProcess(jobId: jobId) != nil && job.progress.flatMap { JSONValue(text: $0) }?["phase"]?.string == "querying"
            }
            let retried = try #require(try await components.jobs.store.jobs(ids: [jobId]).first)
            #expect(retried.state == .running, "\(retried.state): \(retried.errors)")
            #expect(FileManager.default.fileExists(atPath: folder + "/" + SandboxOrder.databaseName))
            #expect(try await client.json(.post, "/jobs/\(jobId)/cancel", token: tenant.token).status == .ok)
            try await components.jobs.waitForJob(jobId, state: .cancelled)
        }
    }

    /// A file that cannot be opened is an I/O error, retried with backoff like any other (the
    /// README's promise); it used to be discarded at once as if the data were bad.
    @Test(arguments: TestEngine.available)
    func anInputThatCannotBeOpenedIsRetriedAndSucceedsOnceReadable(engine: TestEngine) async throws {
        let clock = TestClock()
        try await withPipelines(engine, clock: clock) { tenant, client, components in
            let file = try await tenant.upload(tinyCSV)
            let blob = components.configuration.dataDir + "/blobs/\(try await tenantOf(client, tenant.token))/\(file)"
            #expect(rename(blob, blob + ".away") == 0)
            let jobId = try await tenant.startRun(try await tenant.create(pipelineBody("SELECT count(*) AS n FROM input")), fileId: file)
            try await components.jobs.waitForJob(jobId, state: .retryable)
            let waiting = try #require(try await components.jobs.store.jobs(ids: [jobId]).first)
            #expect(waiting.errors.contains("opening the input failed"), "\(waiting.errors)")

            #expect(rename(blob + ".away", blob) == 0)
            clock.advance(by: .seconds(3))  // past the first backoff (2 s ± 10%), within the token's life
            let job = try await tenant.finished(jobId)
            #expect(job["state"] as? String == "succeeded", "\(job)")
            #expect(job["attempt"] as? Int == 2)
            #expect(try await tenant.rows(of: job).first?["n"] as? Int == 3)
        }
    }

    /// A run that moved its output into the file store and stopped before recording it (played
    /// by the record failing once) leaves no bytes outside the quota: its retry removes them
    /// before it queries again, and only the recorded output remains.
    @Test(arguments: TestEngine.available)
    func anOutputNeverRecordedLeavesNoBytesBehind(engine: TestEngine) async throws {
        let clock = TestClock()
        try await withPipelines(engine, clock: clock) { tenant, client, components in
            let tenantId = try await tenantOf(client, tenant.token)
            let file = try await tenant.upload(tinyCSV)
            try await injectDatabaseFailure(components.database, engine: engine, name: "refuse_outputs", on: "INSERT", of: "files")
            let jobId = try await tenant.startRun(try await tenant.create(pipelineBody("SELECT * FROM input")), fileId: file)
            try await components.jobs.waitForJob(jobId, state: .retryable)
            let folder = components.configuration.dataDir + "/blobs/" + tenantId
            let blobs: @Sendable () -> Set<String> = {
                Set(((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).filter { !$0.hasPrefix(".") })
            }
            #expect(blobs().count == 2, "the input and the unrecorded output: \(blobs())")
            try await removeDatabaseFailure(components.database, engine: engine, name: "refuse_outputs", of: "files")

            clock.advance(by: .seconds(3))  // past the first backoff (2 s ± 10%)
            let job = try await tenant.finished(jobId)
            #expect(try await tenant.rows(of: job).count == 3)
            let listed = Set(
                (try await client.json(.get, "/files", token: tenant.token).object["items"] as? [[String: Any]] ?? []).compactMap {
                    $0["id"] as? String
                })
            #expect(blobs() == listed, "every stored byte belongs to a listed file, counted in the quota")
        }
    }

    @Test(arguments: TestEngine.available)
    func oneTenantsQueuedRunsNeverHoldEverySlot(engine: TestEngine) async throws {
        try await withPipelines(
            engine,
            configure: {
                $0.pipelines.threads = 2
                $0.pipelines.timeoutSeconds = 300
                $0.pipelines.cpuSeconds = 300
                // The job queue would let this tenant run three jobs at once on the node.
                $0.jobs.concurrency = 6
                $0.jobs.maxRunningPerTenant = 3
            }
        ) { hog, client, components in
            let hogFile = try await hog.upload(tinyCSV)
            let runaway = try await hog.create(pipelineBody(runawaySQL))
            var started: [String] = []
            for _ in 0..<3 { started.append(try await hog.startRun(runaway, fileId: hogFile)) }
            let hogJobs = started
            let runner = components.pipelineRunner
            try await components.jobs.waitUntil("one of the hog's runs queries", timeout: .seconds(60)) {
                hogJobs.contains { runner.sandboxProcess(jobId: $0) != nil }
            }

            // Another tenant's run starts and finishes while the hog's runs go on.
            let other = PipelineClient(
                client: client, token: try await client.registerAndLogin(email: "other@example.com").tokens.accessToken, jobs: components.jobs)
            let otherFile = try await other.upload(tinyCSV)
            let job = try await other.finished(
                try await other.startRun(try await other.create(pipelineBody("SELECT count(*) AS n FROM input")), fileId: otherFile),
                timeout: .seconds(60))
            #expect(job["state"] as? String == "succeeded", "\(job)")
            #expect(try await other.rows(of: job).first?["n"] as? Int == 3)

            let hogTenant = try await tenantOf(client, hog.token)
            let slots = runner.slots.snapshot()
            #expect(slots.running[hogTenant] == 1, "the hog holds one slot of two: \(slots)")
            #expect(slots.waiting[hogTenant] == 2, "its other runs wait: \(slots)")
            let states = try await components.jobs.store.jobs(ids: hogJobs).map(\.state)
            #expect(states.allSatisfy { $0 == .running }, "\(states)")
            // Their progress says why: the waiting ones are not a load that is stuck.
            let phases = try await components.jobs.store.jobs(ids: hogJobs).map {
                $0.progress.flatMap { JSONValue(text: $0) }?["phase"]?.string ?? ""
            }
            #expect(phases.sorted() == ["querying", "waiting", "waiting"], "\(phases)")

            for id in hogJobs { _ = try await client.json(.post, "/jobs/\(id)/cancel", token: hog.token) }
            for id in hogJobs { try await components.jobs.waitForJob(id, state: .cancelled) }
            #expect(runner.slots.snapshot().running.isEmpty)
        }
    }
}

@Suite("Pipeline slots")
struct PipelineSlotsTests {
    @Test func aFreedSlotGoesToTheTenantWithTheFewestRunsAndCancelledWaitersLeave() async throws {
        let slots = FairSlots(capacity: 2, perTenant: 1)
        let order = Recorder()
        let (releaseA, releaseAContinuation) = AsyncStream.makeStream(of: Void.self)
        // A takes one slot and holds it.
        let first = Task {
            try await slots.withSlot(tenantId: "a") {
                order.append("a1")
                for await _ in releaseA { break }
            }
        }
        try await waitFor { slots.snapshot().running["a"] == 1 }
        // A's second run waits although a slot is free: A is at its cap.
        let second = Task { try await slots.withSlot(tenantId: "a") { order.append("a2") } }
        try await waitFor { slots.snapshot().waiting["a"] == 1 }
        // B starts at once.
        try await slots.withSlot(tenantId: "b") { order.append("b1") }
        // A waiting run that is cancelled leaves the queue.
        let third = Task { try await slots.withSlot(tenantId: "a") { order.append("a3") } }
        try await waitFor { slots.snapshot().waiting["a"] == 2 }
        third.cancel()
        await #expect(throws: CancellationError.self) { try await third.value }
        #expect(slots.snapshot().waiting["a"] == 1)

        releaseAContinuation.finish()
        try await first.value
        try await second.value
        #expect(order.all == ["a1", "b1", "a2"])
        #expect(slots.snapshot().running.isEmpty && slots.snapshot().waiting.isEmpty)
    }

    /// Polls a condition of in-memory state that no event announces (5 s at most).
    private func waitFor(_ condition: () -> Bool) async throws {
        let deadline = ContinuousClock.now + .seconds(5)
        while !condition() {
            guard ContinuousClock.now < deadline else { throw TestSetupError("the slots never reached the expected state") }
            await Task.yield()
        }
    }
}

@Suite("Pipeline settings")
struct PipelineSettingsTests {
    @Test func limitsAreReadFromTheEnvironmentWithUnits() async throws {
        let configuration = try await CairnConfiguration.load(environment: [
            "CAIRN_PIPELINE_MEMORY": "256MiB", "CAIRN_PIPELINE_CPU": "2m", "CAIRN_PIPELINE_MAX_OUTPUT": "10G",
            "CAIRN_PIPELINE_THREADS": "8", "CAIRN_PIPELINE_MAX_RUNNING_PER_TENANT": "3",
        ])
        #expect(configuration.pipelines.memoryBytes == 256 << 20)
        #expect(configuration.pipelines.cpuSeconds == 120)
        #expect(configuration.pipelines.maxOutputBytes == 10 << 30)
        #expect(configuration.pipelines.runningPerTenant == 3)
        let defaults = try await CairnConfiguration.load(environment: ["CAIRN_PIPELINE_THREADS": "8"])
        #expect(defaults.pipelines.memoryBytes == 512 << 20 && defaults.pipelines.runningPerTenant == 4)
        #expect(PipelineSettings.describe(bytes: 512 << 20) == "512 MiB")
        #expect(PipelineSettings.describe(bytes: 1000) == "1000 bytes")
        await #expect(throws: ConfigurationError.self) { _ = try await CairnConfiguration.load(environment: ["CAIRN_PIPELINE_MEMORY": "lots"]) }
        await #expect(throws: ConfigurationError.self) { _ = try await CairnConfiguration.load(environment: ["CAIRN_PIPELINE_MEMORY": "1M"]) }
    }
}
