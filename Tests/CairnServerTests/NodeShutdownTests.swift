import CairnAccounts
import CairnFiles
import CairnHTTP
import CairnJobs
import CairnObjects
import CairnStorage
import CairnTestSupport
import Foundation
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization
import Testing

@testable import CairnPipelines
@testable import CairnServer

#if canImport(Glibc)
    import Glibc
#endif

/// A clock that stands still until the test moves it, with the sleeps waiting on it in view:
/// a test reads the deadline a service sleeps until instead of living through it.
private final class ManualClock: Clock {
    typealias Duration = Swift.Duration
    typealias Instant = ContinuousClock.Instant

    private struct State {
        var now = ContinuousClock.now
        var next = 0
        var sleepers: [Int: (deadline: Instant, continuation: CheckedContinuation<Void, any Error>)] = [:]
        var cancelled: Set<Int> = []
    }

    private let state = Mutex(State())
    /// The deadlines slept until now, in no order.
    let deadlines = Observed<[Instant]>([])

    var now: Instant { state.withLock { $0.now } }
    var minimumResolution: Duration { .zero }

    func sleep(until deadline: Instant, tolerance: Duration?) async throws {
        let id = state.withLock { state -> Int in
            state.next += 1
            return state.next
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let outcome = state.withLock { state -> Result<Void, any Error>? in
                    if state.cancelled.remove(id) != nil { return .failure(CancellationError()) }
                    if deadline <= state.now { return .success(()) }
                    state.sleepers[id] = (deadline, continuation)
                    return nil
                }
                if let outcome { continuation.resume(with: outcome) } else { publish() }
            }
        } onCancel: {
            let sleeper = state.withLock { state in
                let sleeper = state.sleepers.removeValue(forKey: id)
                if sleeper == nil { state.cancelled.insert(id) }
                return sleeper
            }
            sleeper?.continuation.resume(throwing: CancellationError())
            publish()
        }
    }

    /// Moves the clock forward by `duration`, waking the sleeps it reaches.
    func advance(by duration: Duration) {
        let woken = state.withLock { state in
            state.now += duration
            let due = state.sleepers.filter { $0.value.deadline <= state.now }
            for id in due.keys { state.sleepers.removeValue(forKey: id) }
            return due.values.map(\.continuation)
        }
        for continuation in woken { continuation.resume() }
        publish()
    }

    private func publish() {
        let current = state.withLock { $0.sleepers.values.map(\.deadline) }
        deadlines.update { $0 = current }
    }
}

/// A service that ignores graceful shutdown and ends only when cancelled (an exporter stuck on
/// a collector that does not answer).
private struct StuckService: Service {
    let cancelled: Observed<Bool>

    func run() async throws {
        await withTaskCancellationHandler {
            try? await Gate().wait()
        } onCancel: {
            cancelled.update { $0 = true }
        }
    }
}

@Suite("Node shutdown")
struct NodeShutdownTests {
    /// A fresh-user trial: the exporter's 5 s counted from its own turn to stop, after the HTTP
    /// drain, and a node with a hanging collector exited only at SIGKILL. The bound now counts
    /// from the signal: a turn 4 s after it leaves 1 s.
    @Test func theExportersBoundCountsFromTheSignal() async throws {
        let clock = ManualClock()
        let cancelled = Observed(false)
        let bounded = BoundedShutdown(StuckService(cancelled: cancelled), bound: .seconds(5), clock: clock)
        let group = ServiceGroup(configuration: .init(services: [bounded], logger: testLogger))
        async let ran: Void = group.run()
        let signal = clock.now
        bounded.startClock()
        clock.advance(by: .seconds(4))  // the HTTP drain
        await group.triggerGracefulShutdown()
        let deadlines = try await clock.deadlines.wait("the bound's sleep") { !$0.isEmpty }
        #expect(deadlines == [signal + .seconds(5)])
        clock.advance(by: .seconds(1))
        try await cancelled.wait("the exporter cancelled at the bound") { $0 }
        try await ran
    }

    /// A turn that comes after the bound has passed (a drain that took its full 25 s) still
    /// gets a moment to flush, not none.
    @Test func aLateTurnStillGetsAMomentToFlush() async throws {
        let clock = ManualClock()
        let cancelled = Observed(false)
        let bounded = BoundedShutdown(StuckService(cancelled: cancelled), bound: .seconds(5), minimum: .milliseconds(250), clock: clock)
        let group = ServiceGroup(configuration: .init(services: [bounded], logger: testLogger))
        async let ran: Void = group.run()
        bounded.startClock()
        clock.advance(by: .seconds(25))
        let turn = clock.now
        await group.triggerGracefulShutdown()
        let deadlines = try await clock.deadlines.wait("the bound's sleep") { !$0.isEmpty }
        #expect(deadlines == [turn + .milliseconds(250)])
        clock.advance(by: .milliseconds(250))
        try await cancelled.wait("the exporter cancelled after its moment") { $0 }
        try await ran
    }

    /// A fresh-user trial: 60 logins queued for bcrypt when SIGTERM came kept the node up 10 s
    /// past its drain's deadline. The deadline closed their connections, but their handlers
    /// went on waiting for the hashes; now it cancels them too. Here a login waits for its hash
    /// (held) when the drain begins with no time to run: the node ends, the client sees its
    /// connection closed with no answer, and no hash is left admitted.
    @Test(arguments: TestEngine.available)
    func theDrainsDeadlineCancelsTheRequestsItCutsOff(engine: TestEngine) async throws {
        try await withDrainingNode(engine, drainTimeout: .zero) { node in
            let gate = Gate()
            node.components.accounts.hasher.holdAdmittedWork { try await gate.wait() }
            defer { gate.open() }
            let wire = try RawConnection(port: node.port)
            await wire.send(Self.login)
            try await gate.waitForArrivals(1, timeout: .seconds(30))
            try await node.stop()
            let answer = await wire.readToEnd(timeout: 30)
            #expect(answer.ended)
            #expect(answer.bytes.isEmpty, "answered: \(answer.text.prefix(200))")
            #expect(node.components.accounts.hasher.inFlight == 0)
            #expect(node.log.text.contains("drain deadline passed"))
        }
    }

    /// A response finished during the drain says `Connection: close` (RFC 9112 §9.6), so a
    /// keep-alive client sends its next request elsewhere; the connection then closes. Before,
    /// Hummingbird closed it after the response without saying so.
    @Test(arguments: TestEngine.available)
    func aResponseFinishedDuringTheDrainSaysConnectionClose(engine: TestEngine) async throws {
        try await withDrainingNode(engine, drainTimeout: .seconds(60)) { node in
            let gate = Gate()
            node.components.accounts.hasher.holdAdmittedWork { try await gate.wait() }
            defer { gate.open() }
            let wire = try RawConnection(port: node.port)
            // A first request answered before the drain keeps the connection open.
            await wire.send("GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            let before = await wire.read(timeout: 30) { $0.containsText(#"{"status":"ok"}"#) }
            #expect(before.text.hasPrefix("HTTP/1.1 200"))
            #expect(!before.text.lowercased().contains("connection: close"))
            await wire.send(Self.login)
            try await gate.waitForArrivals(1, timeout: .seconds(30))
            let stopped = Task { try await node.stop() }
            try await node.log.wait(forLineContaining: "connection drains")
            gate.open()
            let answer = await wire.readToEnd(timeout: 30)
            #expect(answer.text.hasPrefix("HTTP/1.1 401"), "got \(answer.text.prefix(300))")
            #expect(answer.text.lowercased().contains("\r\nconnection: close\r\n"), "got \(answer.text.prefix(300))")
            #expect(answer.ended)
            try await stopped.value
        }
    }

    /// A connection that has asked nothing when the drain begins (a browser's preconnect) is
    /// closed at once: before, nothing closed it until its head timeout or the drain's deadline,
    /// so one idle socket held every shutdown for the deadline's full 25 s.
    @Test(arguments: TestEngine.available)
    func aConnectionThatAskedNothingClosesWhenTheDrainBegins(engine: TestEngine) async throws {
        try await withDrainingNode(engine, drainTimeout: .seconds(600), headTimeout: .seconds(600)) { node in
            let wire = try RawConnection(port: node.port)
            // Another connection, opened after it, answered: the server has taken both in.
            let other = try RawConnection(port: node.port)
            await other.send("GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            _ = await other.read(timeout: 30) { $0.containsText(#"{"status":"ok"}"#) }
            try await node.stop(within: .seconds(60))
            let answer = await wire.readToEnd(timeout: 30)
            #expect(answer.ended)
            #expect(answer.bytes.isEmpty)
        }
    }

    /// A pipeline run whose query still works when shutdown begins gets the job worker's grace
    /// (`CAIRN_JOBS_SHUTDOWN_GRACE`) as any job does: it finishes and succeeds, and the node
    /// stops after it. Its sandbox process is held (SIGSTOP) until the group's reverse stop
    /// order reaches the worker, so every service stopped before the worker is gone while the
    /// run goes on. The pipeline runner outlives the worker: a run waiting for its retry that is
    /// cancelled meanwhile loses its work folder then, as on a running node; before, the runner
    /// stopped first and the folder stayed until the node's next start.
    @Test(arguments: TestEngine.available)
    func aPipelineRunInProgressFinishesWithinTheWorkersGraceAndTheRunnerOutlivesIt(engine: TestEngine) async throws {
        let configure: @Sendable (inout CairnConfiguration) -> Void = { configuration in
            configuration.jobs.shutdownGrace = .seconds(120)
            configuration.pipelines.timeoutSeconds = 240
            configuration.pipelines.cpuSeconds = 120
        }
        // The retry's backoff never elapses: the queue's clock does not move.
        try await withDrainingNode(engine, drainTimeout: .seconds(30), clock: TestClock(), configure: configure) { node in
            let components = node.components
            let database = components.database
            let runner = components.pipelineRunner
            let tenant = try await Factory.tenant(on: database)
            let user = try await Factory.user(on: database, tenant: tenant)

            // A run whose input's bytes are not in the store waits for its retry, its folder kept.
            let missing = try await Factory.file(on: database, tenant: tenant, createdBy: user.id)
            let counting = try await Factory.pipeline(
                on: database, tenant: tenant, spec: Factory.pipelineSpec(sql: "SELECT count(*) AS n FROM input"))
            let waiting = try await components.pipelineService.startRun(
                pipelineId: counting.id, fileId: missing.id, tenantId: tenant.id, createdBy: user.id)
            try await components.jobs.waitForJob(waiting.id, state: .retryable)
            let waitingFolder = runner.workFolder(tenantId: tenant.id, jobId: waiting.id)
            #expect(FileManager.default.fileExists(atPath: waitingFolder), "kept for the next attempt")

            let csv = ByteBuffer(string: "n\n1\n2\n3\n")
            let file = try await Factory.file(on: database, tenant: tenant, size: Int64(csv.readableBytes), createdBy: user.id)
            let bytes = AsyncStream<ByteBuffer> { continuation in
                continuation.yield(csv)
                continuation.finish()
            }
            _ = try await components.blobs.write(tenantId: tenant.id, id: file.id, body: bytes, maxBytes: 1 << 20)
            // Seconds of work: still going when the test stops its process, done soon after it goes on.
            let sql = "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 20000000) SELECT count(*) AS n FROM c"
            let pipeline = try await Factory.pipeline(on: database, tenant: tenant, spec: Factory.pipelineSpec(sql: sql))
            let job = try await components.pipelineService.startRun(
                pipelineId: pipeline.id, fileId: file.id, tenantId: tenant.id, createdBy: user.id)
            try await components.jobs.waitUntil("the run's query working in its sandbox process", timeout: .seconds(120)) {
                guard let current = try await components.jobs.store.jobs(ids: [job.id]).first,
                    current.progress.flatMap({ JSONValue(text: $0) })?["phase"]?.string == "querying"
                else { return false }
                return runner.sandboxProcess(jobId: job.id) != nil
            }
            let pid = try #require(runner.sandboxProcess(jobId: job.id))
            #expect(kill(pid, SIGSTOP) == 0)
            defer { kill(pid, SIGCONT) }
            try await pollUntil("the query's process stopped") { processState(pid) == "T" }

            // As the signal does in `runNode`: the worker's grace starts with the group's shutdown.
            node.worker.beginShutdown()
            let stopped = Task { try await node.stop(within: .seconds(180)) }
            try await node.log.wait(forLineContaining: "Triggering graceful shutdown for service sl-service=CairnJobs.JobWorker")
            _ = try await components.jobs.cancel(id: waiting.id, tenantId: tenant.id)
            // Not thrown: the held run is released and its outcome checked either way.
            let removed =
                (try? await pollUntil("the cancelled run's work folder removed", timeout: .seconds(20)) {
                    !FileManager.default.fileExists(atPath: waitingFolder)
                }) != nil
            #expect(removed, "the work folder of a run cancelled during the grace stayed")
            #expect(kill(pid, SIGCONT) == 0)
            try await stopped.value

            let configuration = components.configuration
            let reopened = try await Database.open(url: configuration.databaseURL, sqlitePath: configuration.sqlitePath, logger: testLogger)
            let finished = try await JobStore(database: reopened).job(id: job.id, tenantId: tenant.id)
            await reopened.close()
            #expect(finished?.state == .succeeded, "the run after shutdown: \(String(describing: finished))")
            #expect(finished?.result?.contains("outputFileId") == true, "\(String(describing: finished?.result))")
        }
    }

    /// A login of an unknown user (checked against the dummy hash all the same).
    private static let login: String = {
        let body = #"{"email":"nobody@example.com","password":"something long"}"#
        return "POST /auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n"
            + body
    }()
}

/// A node run as ``runNode(components:services:)`` runs it (its HTTP drain bounded by
/// ``BoundedDrain``), on a free loopback port, that a test stops as a signal would.
private struct DrainingNode: Sendable {
    let components: CairnComponents
    /// The node's job worker (``runNode(components:services:)`` begins its shutdown at the signal).
    let worker: JobWorker
    let port: Int
    let log: CapturedLog
    let group: ServiceGroup
    let running: Task<Void, any Error>

    /// Begins the graceful shutdown and waits for the node to end.
    /// - Throws: ``WaitTimeout`` when it has not ended within `limit`.
    func stop(within limit: Duration = .seconds(30)) async throws {
        await group.triggerGracefulShutdown()
        try await withDeadline(limit, "the node's end") { try await running.value }
    }
}

/// Runs `body` with a ``DrainingNode`` on a fresh database of `engine`, whose drain ends after
/// `drainTimeout`; stops it afterwards if `body` did not.
private func withDrainingNode(
    _ engine: TestEngine, drainTimeout: Duration, headTimeout: Duration = .seconds(30),
    clock: any CairnClock = SystemClock(), configure: @escaping @Sendable (inout CairnConfiguration) -> Void = { _ in },
    _ body: @Sendable (DrainingNode) async throws -> Void
) async throws {
    let log = CapturedLog()
    try await withTestDatabase(
        engine,
        configure: {
            $0.httpPort = 0
            $0.http.drainTimeout = drainTimeout
            $0.http.headTimeout = headTimeout
            configure(&$0)
        }
    ) { database in
        let components = try await buildComponents(configuration: database.configuration, logger: log.logger(level: .debug), clock: clock)
        let connections = OpenConnections()
        let worker = JobWorker(queue: components.jobs, logger: components.logger)
        let drain = BoundedDrain(
            makeApplication(components: components, worker: worker, connections: connections), connections: connections, limit: drainTimeout,
            logger: components.logger)
        let group = ServiceGroup(configuration: .init(services: [drain], logger: testLogger))
        let running = Task { try await group.run() }
        do {
            let line = try await log.wait(forLineContaining: "listening address=").first { $0.contains("listening address=") } ?? ""
            let port = try #require(line.firstMatch(of: /port=(\d+)/).flatMap { Int($0.1) }, "no port in \(line)")
            try await body(DrainingNode(components: components, worker: worker, port: port, log: log, group: group, running: running))
        } catch {
            running.cancel()
            _ = try? await running.value
            throw error
        }
        await group.triggerGracefulShutdown()
        try await running.value
    }
}

/// A blocking TCP client for exact bytes and what comes back.
private final class RawConnection: Sendable {
    let fd: Int32

    /// What a read got: the bytes, and whether the peer ended the connection (EOF or reset).
    struct Read: Sendable {
        let bytes: [UInt8]
        let ended: Bool
        var text: String { String(decoding: bytes, as: UTF8.self) }
    }

    init(port: Int) throws { fd = try loopbackSocket(port: port) }
    deinit { Glibc.close(fd) }

    func send(_ text: String) async { await sendAll(Array(text.utf8), on: fd) }

    /// Reads until the peer ends the connection, or `timeout` seconds pass.
    func readToEnd(timeout: Double) async -> Read { await read(timeout: timeout) { _ in false } }

    /// Reads until `done` holds for what was read, the peer ends the connection, or `timeout`
    /// seconds pass.
    func read(timeout: Double, until done: @escaping @Sendable ([UInt8]) -> Bool) async -> Read {
        await offThePool { [fd] in
            let start = Date()
            var received: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 65536)
            while !done(received) {
                let left = timeout - Date().timeIntervalSince(start)
                if left <= 0 { break }
                var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                guard poll(&poller, 1, Int32(left * 1000) + 1) > 0 else { continue }
                let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                if count == 0 || (count < 0 && errno == ECONNRESET) { return Read(bytes: received, ended: true) }
                if count < 0 { break }
                received += chunk[0..<count]
            }
            return Read(bytes: received, ended: false)
        }
    }
}

/// The state letter of process `pid` as /proc shows it (`T` when stopped by a signal), or nil
/// when there is no such process.
private func processState(_ pid: pid_t) -> Character? {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let end = stat.lastIndex(of: ")") else { return nil }
    return stat[end...].dropFirst(2).first
}
