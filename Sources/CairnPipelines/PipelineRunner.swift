package import CairnFiles
import CairnFormats
import CairnHTTP
package import CairnJobs
package import CairnObjects
import CairnSandbox
import CairnStorage
import Foundation
package import Logging
import Metrics
import NIOFileSystem
import SQLKit
import ServiceLifecycle
import Subprocess
import Synchronization
import Tracing

#if canImport(Glibc)
    import Glibc
#endif

/// Settings of pipeline runs (`CAIRN_PIPELINE_*`).
package struct PipelineSettings: Sendable {
    /// Seconds the tenant's query may run before it is stopped (`CAIRN_PIPELINE_TIMEOUT`,
    /// default 300); its sandbox process is killed 5 seconds later if it has not stopped.
    package var timeoutSeconds: Double = 300
    /// Runs making progress at once on this node, each in its own sandbox process
    /// (`CAIRN_PIPELINE_THREADS`, default 2). Other runs wait for a free slot.
    package var threads = 2
    /// Of those slots, the most one tenant's runs may hold at once
    /// (`CAIRN_PIPELINE_MAX_RUNNING_PER_TENANT`); nil means half of `threads`, at least 1, so
    /// another tenant's run never waits for one tenant's long runs.
    package var maxRunningPerTenant: Int?
    /// Memory one sandbox process may use, bytes (`CAIRN_PIPELINE_MEMORY`, default 512 MiB):
    /// its `RLIMIT_DATA`, heap and thread stacks included.
    package var memoryBytes: Int64 = 512 << 20
    /// CPU seconds one sandbox process (a run's load, or its query) may use
    /// (`CAIRN_PIPELINE_CPU`, default 600), beside the wall-clock `timeoutSeconds`.
    package var cpuSeconds = 600
    /// The largest output a run may write, bytes (`CAIRN_PIPELINE_MAX_OUTPUT`, default 1 GiB;
    /// never more than the largest file a tenant may have).
    package var maxOutputBytes: Int64 = 1 << 30
    /// Descriptors one sandbox process may hold (its `RLIMIT_NOFILE`).
    package var openFiles = 64
    /// A CSV input larger than this is loaded in chunks of about this size, each a job of its
    /// own that any worker of any node may take (`CAIRN_PIPELINE_CHUNK`). The default, 1 TiB,
    /// leaves chunking off: on one 2-core node a 1 GB run in 64 MiB chunks took 30.5 s against
    /// 27.0 s whole (the chunks' databases are copied into one before the query), so chunks pay
    /// only where more workers than one node's share the load.
    package var chunkBytes: Int64 = 1 << 40
    /// Where runs keep their job-private databases (`<data dir>/pipelines`).
    package var workDirectory = "./cairn-data/pipelines"
    /// The `cairn` binary started in sandbox mode; by default the running binary itself
    /// (`/proc/self/exe`, so the sandbox is always the server's own version). Tests, whose
    /// process is not `cairn`, point it at the built binary.
    package var sandboxExecutable = "/proc/self/exe"

    /// Creates the defaults.
    package init() {}

    /// `maxRunningPerTenant`, or its default.
    package var runningPerTenant: Int { min(threads, maxRunningPerTenant ?? max(1, threads / 2)) }

    /// A size as people read it: "512 MiB", "1 GiB", "64 KiB", otherwise "123 bytes".
    package static func describe(bytes: Int64) -> String {
        for (unit, name) in [(Int64(1) << 30, "GiB"), (Int64(1) << 20, "MiB"), (Int64(1) << 10, "KiB")] where bytes >= unit && bytes % unit == 0 {
            return "\(bytes / unit) \(name)"
        }
        return "\(bytes) bytes"
    }
}

/// Runs pipelines as jobs of kind `pipeline.run`: on demand (``PipelineService/startRun(pipelineId:fileId:tenantId:createdBy:)``)
/// or from a pipeline's schedule. One run streams the input file through its parser into a
/// job-private SQLite database (committing and checkpointing every 50,000 rows), runs the
/// tenant's query in the sandbox, and streams the result into a new file of the tenant.
///
/// The load and the query each run in a sandbox process of their own (`cairn
/// pipeline-sandbox`, see ``PipelineSandbox``) under hard limits of memory, CPU time, file
/// size and open files, in the run's work folder: tenant SQL that allocates, loops or writes
/// without bound ends its own process and fails its run, and the server's memory does not
/// move. Runs take turns for the node's slots (`threads`), at most `runningPerTenant` of them
/// one tenant's.
///
/// A killed or failed attempt resumes from its checkpoint: rows loaded stay loaded (rows
/// committed after the last checkpoint are removed and read again), and the output file's id is
/// fixed in the checkpoint before it is recorded, so a run's output exists once. The input is
/// read from the blob store into the run's work folder (node-local scratch) and the output
/// written back through it. An attempt on the same node, whose work database is still there,
/// resumes the load at the checkpoint's byte offset; an attempt rescued by another node fetches
/// the input again and loads it from the start (the work database stayed on the first node).
package final class PipelineRunner: Service, Sendable {
    /// The job kind.
    package static var kind: String { RunPipeline.kind }

    let pipelines: PipelineStore
    let files: FileStore
    let blobs: any BlobStore
    let jobs: JobQueue
    let quotas: FileQuotas
    let settings: PipelineSettings
    let logger: Logger
    let slots: FairSlots
    /// The sandbox process of each run in progress on this node, by job id (from its `started`
    /// report to its end).
    let children = Mutex<[String: pid_t]>([:])
    /// The work folders this node holds, and the runs whose handler is going on it.
    let work = Mutex(WorkFolders())

    /// The work folders of one node: which jobs have one here (by job id, their tenant's id),
    /// and which of them are running here now (never removed from under their run).
    struct WorkFolders {
        /// Job id → tenant id, for every folder known on this node.
        var folders: [String: String] = [:]
        /// Jobs whose handler runs on this node.
        var active: Set<String> = []
    }

    /// Creates the runner; call ``registerJobs(on:)`` once, from the composition root.
    package init(
        pipelines: PipelineStore, files: FileStore, blobs: any BlobStore, jobs: JobQueue, quotas: FileQuotas, settings: PipelineSettings,
        logger: Logger
    ) {
        self.pipelines = pipelines
        self.files = files
        self.blobs = blobs
        self.jobs = jobs
        self.quotas = quotas
        self.settings = settings
        self.logger = logger
        self.slots = FairSlots(capacity: settings.threads, perTenant: settings.runningPerTenant)
        ChildMetrics.publishAll()
        // The run-time histogram exists from start-up, empty.
        _ = Timer(label: "cairn_pipeline_run_seconds")
    }

    /// Registers the pipeline run job handler on `queue`.
    package func registerJobs(on queue: JobQueue) {
        queue.register(
            RunPipeline.self, on: self, whenGone: { CancellationError() }, handler: { try await $0.run($1, context: $2) },
            abandoned: { [weak queue] _, job, db in
                // A run cancelled or discarded takes its chunks with it.
                guard let queue, let checkpoint = job.checkpoint.flatMap({ JSONValue(text: $0) }).flatMap({ Self.decode(Checkpoint.self, $0) }),
                    let ids = checkpoint.chunked?.jobIds, !ids.isEmpty
                else { return }
                try await queue.cancel(ids: ids, tenantId: job.tenantId, on: db)
            })
        queue.register(
            RunPipelineChunk.self, on: self, whenGone: { CancellationError() }, handler: { try await $0.runChunk($1, context: $2) },
            abandoned: { [weak queue] args, job, db in
                // The run learns at once that this chunk will not load.
                try await queue?.wake(id: args.runJobId, tenantId: job.tenantId, on: db)
            })
    }

    /// Removes the work folders this node holds as soon as their run no longer needs them: on
    /// every announced change of such a job (from any node: a cancel, a final state reached
    /// elsewhere, a deletion) the job is read again, and its folder goes when the job is final
    /// or gone. A sweep of the whole
    /// work directory at start-up and every minute catches announcements that were missed.
    /// Sandbox processes end with their runs: on shutdown the job worker cancels the runs it
    /// does not let finish, which kills their processes.
    package func run() async throws {
        try? await cancelWhenGracefulShutdown {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    for await ids in self.jobs.events.changes() {
                        await self.removeWorkNoLongerNeeded(jobIds: ids)
                    }
                }
                group.addTask {
                    while !Task.isCancelled {
                        await self.removeStaleWork()
                        try await Task.sleep(for: .seconds(60))
                    }
                }
                try await group.waitForAll()
            }
        }
    }

    /// Removes the folders of `jobIds` (those this node holds and does not run) whose job is
    /// final or deleted.
    func removeWorkNoLongerNeeded(jobIds: [String]) async {
        let held = work.withLock { state in jobIds.compactMap { id in state.folders[id].map { (id, $0) } } }
        for (jobId, tenantId) in held where work.withLock({ !$0.active.contains(jobId) }) {
            let job: Job?
            do {
                job = try await jobs.store.job(id: jobId, tenantId: tenantId)
            } catch {
                continue  // the next announcement or sweep tries again
            }
            // A job still running elsewhere keeps its folder here: its lease may be a dead node's
            // (this node's own earlier life, restarted), and the rescue that follows resumes from
            // the folder's checkpoint. It goes when the job is final or deleted.
            if let job, !job.state.isFinal { continue }
            removeWork(jobId: jobId, tenantId: tenantId, unlessActive: true)
        }
    }

    /// Deletes a run's work folder and forgets it; with `unlessActive`, not while a run of the
    /// job goes on on this node (checked under the same lock the run registers with, so a run
    /// starting now never loses its folder).
    func removeWork(jobId: String, tenantId: String, unlessActive: Bool = false) {
        let folder = workFolder(tenantId: tenantId, jobId: jobId)
        work.withLock { state in
            if unlessActive && state.active.contains(jobId) { return }
            try? FileManager.default.removeItem(atPath: folder)
            state.folders[jobId] = nil
        }
    }

    /// The sandbox process of job `jobId`'s run, while one is going on this node.
    func sandboxProcess(jobId: String) -> pid_t? {
        children.withLock { $0[jobId] }
    }

    /// What a run keeps between attempts.
    struct Checkpoint: Codable {
        var fileId: String
        var spec: PipelineSpec
        var pipelineName: String
        var load: LoadState?
        var outputFileId: String?
        /// A chunked run's plan and chunk jobs.
        var chunked: ChunkedRun? = nil
    }

    /// The name of the input's copy in a run's work folder.
    static let inputName = "input.data"

    func workFolder(tenantId: String, jobId: String) -> String {
        settings.workDirectory + "/" + tenantId + "/" + jobId
    }

    // MARK: The job

    func run(_ args: RunPipeline, context: JobContext) async throws {
        let job = context.job
        let pipelineId = args.pipelineId
        var checkpoint: Checkpoint
        if let saved = context.checkpoint.flatMap({ Self.decode(Checkpoint.self, $0) }) {
            checkpoint = saved
            // A scheduled run that stopped between its first checkpoint and recording its file.
            if args.fileId == nil {
                try await pipelines.recordScheduledFile(pipelineId: pipelineId, tenantId: job.tenantId, fileId: saved.fileId)
            }
        } else {
            guard let pipeline = try await pipelines.get(id: pipelineId, tenantId: job.tenantId) else {
                throw PermanentJobError("the pipeline was deleted")
            }
            let fileId: String
            if let given = args.fileId {
                fileId = given
            } else {
                guard let chosen = try await scheduledInput(pipeline) else {
                    let reason =
                        "no new uploaded \(pipeline.spec.input.format.rawValue) file\(pipeline.spec.schedule?.namePattern.map { " matching \($0)" } ?? "") since the last scheduled run"
                    try await context.saveResult(
                        .object(["skipped": .bool(true), "reason": .string(reason)]), progress: .object(["fraction": .number(1)]))
                    return
                }
                fileId = chosen.id
            }
            checkpoint = Checkpoint(fileId: fileId, spec: pipeline.spec, pipelineName: pipeline.name, load: nil, outputFileId: nil)
            try await context.saveCheckpoint(Self.encode(checkpoint), progress: .object(["phase": .string("waiting"), "fraction": .number(0)]))
            // Recorded only once the run holds its file in a checkpoint: a crash in between must
            // not make the schedule skip a file no run took (the resumed run records it).
            if args.fileId == nil { try await pipelines.recordScheduledFile(pipelineId: pipeline.id, tenantId: job.tenantId, fileId: fileId) }
        }
        let folder = workFolder(tenantId: job.tenantId, jobId: job.id)
        work.withLock { state in
            state.active.insert(job.id)
            state.folders[job.id] = job.tenantId
        }
        defer { work.withLock { _ = $0.active.remove(job.id) } }
        do {
            // A chunked run whose chunks are still loading snoozes again without waiting for
            // a pipeline slot (its chunks may hold them all).
            if checkpoint.chunked?.jobIds.isEmpty == false && checkpoint.outputFileId == nil {
                _ = try await chunkResults(context, checkpoint: checkpoint, size: checkpoint.chunked?.plan.chunks.last?.end ?? 0)
            }
            try await slots.withSlot(tenantId: job.tenantId) {
                // Until now the run showed `waiting` (for a pipeline slot), not a load that is stuck.
                if checkpoint.load?.done != true && checkpoint.chunked == nil {
                    try await context.reportProgress(Self.progress(checkpoint, phase: "loading"))
                }
                try await run(context, pipelineId: pipelineId, checkpoint: &checkpoint, folder: folder)
            }
            removeWork(jobId: job.id, tenantId: job.tenantId)
        } catch let snooze as SnoozeJob {
            // A chunked run waiting for its chunks, holding no slot.
            throw snooze
        } catch let failure as PipelineFailure {
            removeWork(jobId: job.id, tenantId: job.tenantId)
            await removeChunkDatabases(checkpoint, tenantId: job.tenantId)
            try? await context.saveResult(
                resultValue(checkpoint, output: nil, failure: failure.message), progress: Self.progress(checkpoint, phase: "failed"))
            throw PermanentJobError(failure.message)
        } catch let error as SandboxError where error.kind != .io && error.kind != .cancelled {
            removeWork(jobId: job.id, tenantId: job.tenantId)
            await removeChunkDatabases(checkpoint, tenantId: job.tenantId)
            try? await context.saveResult(
                resultValue(checkpoint, output: nil, failure: error.message), progress: Self.progress(checkpoint, phase: "failed"))
            throw PermanentJobError(error.message)
        } catch {
            // Retried, or stopped by shutdown: the folder stays for the next attempt on this
            // node, and goes as soon as the job is final, deleted or taken by another node (see
            // `run()`). A run cancelled by its tenant, or stopped because its job is gone, final
            // or another node's (a lost lease), has no next attempt here: its folder goes now (a
            // retry of it loads again).
            if job.attempt >= job.maxAttempts { removeWork(jobId: job.id, tenantId: job.tenantId) }
            let cancelled = await cancelRequested(job)
            let abandoned = Task.isCancelled ? await hasNoNextAttemptHere(job) : false
            if cancelled || abandoned { removeWork(jobId: job.id, tenantId: job.tenantId) }
            if let error = error as? SandboxError, error.kind == .cancelled { throw CancellationError() }
            throw error
        }
    }

    /// Whether the job's tenant asked to cancel it. Read in a task of its own: the handler's task
    /// is cancelled by then, and its database reads could refuse to start.
    private func cancelRequested(_ job: Job) async -> Bool {
        guard Task.isCancelled else { return false }
        let store = jobs.store
        return await Task { (try? await store.job(id: job.id, tenantId: job.tenantId))?.cancelRequestedAt != nil }.value
    }

    /// Whether no later attempt of the job can use this node's folder: the job is gone (its
    /// lease lost because its row was deleted), final, or running on another node (a lost
    /// lease). Read in a task of its own, as `cancelRequested` is; a failed read says false
    /// (the folder then waits for the next announcement or sweep).
    private func hasNoNextAttemptHere(_ job: Job) async -> Bool {
        let store = jobs.store
        let node = jobs.settings.nodeId
        return await Task {
            do {
                guard let current = try await store.job(id: job.id, tenantId: job.tenantId) else { return true }
                return current.state.isFinal || (current.state == .running && current.leaseOwner != node)
            } catch {
                return false
            }
        }.value
    }

    private func run(_ context: JobContext, pipelineId: String, checkpoint: inout Checkpoint, folder: String) async throws {
        let tenantId = context.job.tenantId
        if let outputId = checkpoint.outputFileId {
            if let existing = try await files.get(id: outputId, tenantId: tenantId) {
                // An earlier attempt recorded the output and stopped before the job completed.
                try await context.saveResult(
                    resultValue(checkpoint, output: existing, failure: nil), progress: Self.progress(checkpoint, phase: "done"))
                return
            }
            // It stopped before recording it: bytes it may have moved into the file store are
            // outside every quota and listed nowhere, so they go before the query runs again.
            try? await blobs.delete(tenantId: tenantId, id: outputId)
            checkpoint.outputFileId = nil
        }
        guard let file = try await files.get(id: checkpoint.fileId, tenantId: tenantId) else {
            throw PipelineFailure(message: "the input file was deleted")
        }
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let databasePath = folder + "/" + SandboxOrder.databaseName
        let inputPath = folder + "/" + Self.inputName
        let started = ContinuousClock.now

        if checkpoint.load != nil && !FileManager.default.fileExists(atPath: databasePath) {
            // Loaded, wholly or in part, by an attempt whose folder is gone (removed on cancel,
            // or another node's): load again from the first row rather than resume into nothing.
            checkpoint.load = nil
        }
        // Reported in the result, so a resumed load is visible (and testable).
        let resumedFromRow = checkpoint.load.flatMap { $0.done ? nil : $0.rowsLoaded }
        // A chunked run's chunks' databases, merged into the work database by the query phase.
        var pieces: [String]?
        if checkpoint.load?.done != true && isChunked(checkpoint, size: file.size) {
            if let loaded = try await loadInChunks(context, checkpoint: &checkpoint, file: file, folder: folder) {
                checkpoint.load = loaded.0
                pieces = loaded.1
                try await context.reportProgress(Self.progress(checkpoint, phase: "querying", size: file.size))
            }
        }
        if checkpoint.load?.done != true {
            if checkpoint.load == nil { Self.removeDatabase(databasePath) }
            // The input comes from the store into this node's scratch (a hard link when the store
            // is this file system), once per work folder. A retry on this node with its work
            // database resumes at the checkpoint's byte offset; a run rescued on another node
            // has no work database there (reset above), fetches the input and loads from the start.
            if !FileManager.default.fileExists(atPath: inputPath) {
                do {
                    try await blobs.copy(tenantId: tenantId, id: file.id, toLocalFile: FilePath(inputPath))
                } catch is BlobNotFound {
                    // Retried like any I/O error: the bytes may yet appear (a store catching up).
                    throw SandboxError(.io, "opening the input failed: the input file's bytes are not in the store")
                }
            }
            let current = checkpoint
            checkpoint.load = try await TraceContext.withSpan("pipeline load") { span in
                span.attributes["cairn.pipeline.phase"] = "load"
                span.attributes["cairn.file.size"] = Int(file.size)
                let state = try await load(context, checkpoint: current, inputPath: inputPath, folder: folder, size: file.size)
                span.attributes["cairn.pipeline.rows_loaded"] = state.rowsLoaded
                return state
            }
            // Loaded: the copy goes before tenant SQL runs in this folder (it may be a hard link
            // to the stored blob).
            try? FileManager.default.removeItem(atPath: inputPath)
            try await context.saveCheckpoint(Self.encode(checkpoint), progress: Self.progress(checkpoint, phase: "querying", size: file.size))
        }

        let spec = checkpoint.spec
        let maxBytes = min(settings.maxOutputBytes, quotas.maxFileBytes)
        let timeout = settings.timeoutSeconds
        let snapshot = checkpoint
        // The query writes its output and SQLite's temporary files (sorts, grouping); each may
        // be as large as the output limit or twice the work database.
        let databaseBytes =
            pieces.map { names in names.reduce(Int64(0)) { total, name in total + Self.fileSize(folder + "/" + name) } }
            ?? Self.fileSize(databasePath) + Self.fileSize(databasePath + "-wal")
        let order = SandboxOrder(
            phase: .query, spec: spec, inputPath: nil, resume: nil, maxOutputBytes: maxBytes, timeoutSeconds: timeout,
            limits: limits(fileBytes: max(maxBytes + (1 << 20), 2 * databaseBytes + (64 << 20))), merge: pieces,
            mergeColumns: pieces == nil ? nil : checkpoint.load?.columns)
        let queried = try await TraceContext.withSpan("pipeline query") { span in
            span.attributes["cairn.pipeline.phase"] = "query"
            let queried = try await inSandbox(order, context: context, folder: folder, deadline: .seconds(timeout + 5)) { report in
                switch report.event {
                // Announced as a job change, so a watcher sees the query's process once it runs.
                case .started: return (nil, Self.progress(snapshot, phase: "querying", size: file.size))
                case .rows: return (nil, Self.progress(snapshot, phase: "querying", size: file.size, rowsOutput: report.rows ?? 0))
                default: return nil
                }
            }
            if let rows = queried.outcome?.rows { span.attributes["cairn.pipeline.rows_output"] = rows }
            return queried
        }
        guard let outcome = queried.outcome else { throw SandboxError(.io, "the query's process reported no outcome") }
        let elapsed = (ContinuousClock.now - started).components
        Timer(label: "cairn_pipeline_run_seconds").recordNanoseconds(elapsed.seconds * 1_000_000_000 + elapsed.attoseconds / 1_000_000_000)

        let output = try await TraceContext.withSpan("pipeline output") { span in
            span.attributes["cairn.pipeline.phase"] = "output"
            span.attributes["cairn.file.size"] = Int(outcome.bytes)
            return try await store(outcome, context, pipelineId: pipelineId, checkpoint: &checkpoint, folder: folder)
        }
        await removeChunkDatabases(checkpoint, tenantId: tenantId)
        Counter(label: "cairn_pipeline_rows_total", dimensions: [("phase", "loaded")]).increment(by: checkpoint.load?.rowsLoaded ?? 0)
        Counter(label: "cairn_pipeline_rows_total", dimensions: [("phase", "output")]).increment(by: outcome.rows)
        try await context.saveResult(
            resultValue(checkpoint, output: output, failure: nil, rowsOutput: outcome.rows, resumedFromRow: resumedFromRow),
            progress: Self.progress(checkpoint, phase: "done", size: file.size, rowsOutput: outcome.rows))
    }

    /// The output phase: moves the query's output into the file store and records it under the
    /// tenant's quota, as a file of origin `pipeline` naming `pipelineId` and the run's job.
    /// - Throws: `PipelineFailure` when it would exceed the quota; storage errors.
    private func store(
        _ outcome: QueryOutcome, _ context: JobContext, pipelineId: String, checkpoint: inout Checkpoint, folder: String
    ) async throws -> StoredFile {
        let tenantId = context.job.tenantId
        let spec = checkpoint.spec
        let outputPath = folder + "/" + SandboxOrder.outputName
        // The output's id is fixed before it is recorded, so a retry after a crash finds it.
        let outputId = UUIDv7.make()
        checkpoint.outputFileId = outputId
        try await context.saveCheckpoint(Self.encode(checkpoint))
        let format = spec.output.format
        let output = StoredFile(
            id: outputId, tenantId: tenantId, name: Self.outputName(checkpoint.pipelineName, jobId: context.job.id, format: format),
            size: outcome.bytes, sha256: outcome.sha256, contentType: Self.contentType(format), format: format == .csv ? "csv" : format.rawValue,
            createdBy: context.job.createdBy, createdAt: WallClock.milliseconds(), origin: .pipeline, originPipelineId: pipelineId,
            originJobId: context.job.id)
        try await blobs.adopt(tenantId: tenantId, id: outputId, movingFileAt: FilePath(outputPath))
        do {
            try await files.insert(output, quotas: quotas, hour: WallClock.milliseconds() / 3_600_000, countsAsUpload: false)
        } catch is FileStore.QuotaExceeded {
            try? await blobs.delete(tenantId: tenantId, id: outputId)
            throw PipelineFailure(message: "the output (\(outcome.bytes) bytes) would exceed the tenant's file quota")
        }
        return output
    }

    /// The load phase in a sandbox process; every committed batch becomes a checkpoint.
    private func load(_ context: JobContext, checkpoint: Checkpoint, inputPath: String, folder: String, size: Int64) async throws -> LoadState {
        let base = checkpoint
        // The work database is the one file a load writes; it may outgrow its input (row
        // overhead, the WAL), never by this much.
        let order = SandboxOrder(
            phase: .load, spec: checkpoint.spec, inputPath: inputPath, resume: checkpoint.load, maxOutputBytes: 0, timeoutSeconds: 0,
            limits: limits(fileBytes: 4 * size + (256 << 20)))
        let loaded = try await inSandbox(order, context: context, folder: folder, deadline: nil) { report in
            switch report.event {
            case .committed:
                guard let state = report.load else { return nil }
                var next = base
                next.load = state
                return (Self.encode(next), Self.progress(next, phase: "loading", size: size))
            case .restarted:
                self.logger.info("pipeline work database does not match its checkpoint; loading again", metadata: ["job_id": .string(context.job.id)])
                return nil
            default:
                return nil
            }
        }
        guard let state = loaded.load else { throw SandboxError(.io, "the load's process reported no outcome") }
        return state
    }

    /// The limits of one sandbox process of this node.
    func limits(fileBytes: Int64) -> SandboxLimits {
        SandboxLimits(memoryBytes: settings.memoryBytes, cpuSeconds: settings.cpuSeconds, fileBytes: fileBytes, openFiles: settings.openFiles)
    }

    /// Runs `order` in a sandbox process in `folder` and returns its final report. What `save`
    /// makes of the intermediate reports is saved by this task as it goes (the newest wins when
    /// saving falls behind: a checkpoint or progress), and cancelling this task kills the
    /// process.
    /// - Throws: `PipelineFailure` for a limit reached, bad data or refused SQL (final);
    ///   `SandboxError` (`io`) when another attempt may succeed; `CancellationError`.
    func inSandbox(
        _ order: SandboxOrder, context: JobContext, folder: String, deadline: Duration?,
        save: @escaping @Sendable (SandboxReport) -> (checkpoint: JSONValue?, progress: JSONValue)?
    ) async throws -> SandboxReport {
        let (reports, continuation) = AsyncStream.makeStream(of: SandboxReport.self, bufferingPolicy: .bufferingNewest(1))
        let jobId = context.job.id
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                for await report in reports {
                    guard let (checkpoint, progress) = save(report) else { continue }
                    if let checkpoint {
                        try await context.saveCheckpoint(checkpoint, progress: progress)
                    } else {
                        try await context.reportProgress(progress)
                    }
                }
            }
            let ending: SandboxProcess.Ending
            do {
                ending = try await SandboxProcess.run(
                    executable: settings.sandboxExecutable, folder: folder, order: order, deadline: deadline,
                    report: { report in
                        // Known once its limits are in place, before its first report is saved.
                        if report.event == .started, let pid = report.pid { self.children.withLock { $0[jobId] = pid } }
                        continuation.yield(report)
                    })
                self.children.withLock { $0[jobId] = nil }
                // A cancelled run's process was killed: that is the cancellation, not a failure.
                try Task.checkCancellation()
            } catch {
                self.children.withLock { $0[jobId] = nil }
                continuation.finish()
                group.cancelAll()
                throw error
            }
            continuation.finish()
            try await group.waitForAll()
            return try outcome(of: ending, order: order)
        }
    }

    /// The final report of a sandbox process that ended well, or the error its ending means.
    private func outcome(of ending: SandboxProcess.Ending, order: SandboxOrder) throws -> SandboxReport {
        if ending.timedOut { throw PipelineFailure(message: "the query ran past the pipeline time limit") }
        if let last = ending.last {
            if last.event == .failed {
                let message = last.message ?? "the run failed"
                switch last.kind {
                case "io": throw SandboxError(.io, message)
                case "cancelled": throw CancellationError()
                case "internal":
                    logger.error("pipeline sandbox process failed", metadata: ["error": .string(message)])
                    throw PipelineFailure(message: "the run's sandbox process failed")
                default: throw PipelineFailure(message: message)
                }
            }
            if case .exited(0) = ending.status { return last }
        }
        let limits = order.limits
        switch ending.status {
        case .signaled(SIGXCPU):
            throw PipelineFailure(message: "CPU time limit reached")
        case .signaled(SIGXFSZ):
            throw PipelineFailure(message: "a work file of the run reached the size limit of \(PipelineSettings.describe(bytes: limits.fileBytes))")
        case .signaled(let signal) where [SIGTERM, SIGINT, SIGHUP, SIGKILL].contains(signal):
            // Stopped from outside (a service manager stopping the node's process group, the
            // kernel's OOM killer): another attempt resumes from the checkpoint.
            throw SandboxError(.io, "the run's sandbox process was stopped by signal \(signal)")
        case .signaled(let signal):
            // The Swift runtime traps when an allocation fails under RLIMIT_DATA; SQLite's own
            // allocations fail earlier and are reported as such.
            let errors = ending.errors.lowercased()
            if errors.contains("alloc") || errors.contains("memory") {
                throw PipelineFailure(message: PipelineSandbox.memoryMessage(limits.memoryBytes))
            }
            logger.warning(
                "pipeline sandbox process crashed",
                metadata: ["signal": .stringConvertible(signal), "stderr": .string(String(ending.errors.suffix(500)))])
            throw PipelineFailure(message: "the run's sandbox process crashed (signal \(signal))")
        case .exited(let code):
            logger.warning(
                "pipeline sandbox process ended without an outcome",
                metadata: ["status": .stringConvertible(code), "stderr": .string(String(ending.errors.suffix(500)))])
            throw PipelineFailure(message: "the run's sandbox process ended without an outcome (status \(code))")
        }
    }

    static func fileSize(_ path: String) -> Int64 {
        ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? NSNumber)?.int64Value ?? 0
    }

    /// The newest file for a scheduled run: uploaded (never a pipeline's output, or a schedule
    /// would take its own last result on every tick), of the pipeline's input format, newer than
    /// the one the previous scheduled run took, matching `namePattern` when the schedule has one.
    private func scheduledInput(_ pipeline: Pipeline) async throws -> StoredFile? {
        let format = pipeline.spec.input.format.rawValue
        let candidates = try await files.newest(tenantId: pipeline.tenantId, format: format, after: pipeline.lastScheduledFileId)
        guard let pattern = pipeline.spec.schedule?.namePattern, pipeline.spec.schedule?.source == "namePattern" else { return candidates.first }
        return candidates.first { fnmatch(pattern, $0.name, 0) == 0 }
    }

    // MARK: Shapes

    static func progress(_ checkpoint: Checkpoint, phase: String, size: Int64 = 0, rowsOutput: Int? = nil) -> JSONValue {
        let load = checkpoint.load ?? LoadState()
        let loadFraction = load.done ? 1 : (size > 0 ? min(1, Double(load.bytesRead) / Double(size)) : 0)
        var fields: [String: JSONValue] = [
            "phase": .string(phase), "rowsDone": .number(Double(load.recordsRead)), "rowsLoaded": .number(Double(load.rowsLoaded)),
            "rowsSkipped": .number(Double(load.errorCount)), "bytesDone": .number(Double(load.done ? size : load.bytesRead)),
            "bytesTotal": .number(Double(size)), "fraction": .number(phase == "done" ? 1 : 0.9 * loadFraction),
        ]
        if let rowsOutput { fields["rowsOutput"] = .number(Double(rowsOutput)) }
        return .object(fields)
    }

    func resultValue(_ checkpoint: Checkpoint, output: StoredFile?, failure: String?, rowsOutput: Int? = nil, resumedFromRow: Int? = nil)
        -> JSONValue
    {
        let load = checkpoint.load ?? LoadState()
        var fields: [String: JSONValue] = [
            "inputFileId": .string(checkpoint.fileId), "rowsRead": .number(Double(load.recordsRead)),
            "rowsLoaded": .number(Double(load.rowsLoaded)), "rowsSkipped": .number(Double(load.errorCount)),
            "columns": .array(load.columns.map { .object(["name": .string($0.name), "type": .string($0.type.rawValue)]) }),
            "errors": .array(
                load.errors.map { error in
                    var entry: [String: JSONValue] = ["row": .number(Double(error.row)), "message": .string(error.message)]
                    if let offset = error.byteOffset { entry["byteOffset"] = .number(Double(offset)) }
                    if let column = error.column { entry["column"] = .string(column) }
                    return .object(entry)
                }),
        ]
        if let output {
            fields["outputFileId"] = .string(output.id)
            fields["outputBytes"] = .number(Double(output.size))
        }
        if let rowsOutput { fields["rowsOutput"] = .number(Double(rowsOutput)) }
        if let failure { fields["failure"] = .string(failure) }
        if let resumedFromRow { fields["resumedFromRow"] = .number(Double(resumedFromRow)) }
        // Zero records is legitimate, but most often a recordPath that names no element:
        // say so rather than succeed in silence.
        if failure == nil, load.done, load.recordsRead == 0 {
            let input = checkpoint.spec.input
            let warning =
                input.format == .xml
                ? "recordPath '\(input.recordPath ?? "")' matched no element: the run read no records"
                : "the file has no records"
            fields["warnings"] = .array([.string(warning)])
        }
        return .object(fields)
    }

    static func outputName(_ pipelineName: String, jobId: String, format: PipelineSpec.OutputFormat) -> String {
        let safe = String(pipelineName.prefix(80)).map { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" ? $0 : "-" }
        return "\(String(safe))-\(jobId).\(format.rawValue)"
    }

    static func contentType(_ format: PipelineSpec.OutputFormat) -> String {
        switch format {
        case .csv: return "text/csv"
        case .json: return "application/json"
        case .ndjson: return "application/x-ndjson"
        }
    }

    static func encode<Value: Encodable>(_ value: Value) -> JSONValue {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        guard let data = try? encoder.encode(value) else { return .null }
        return JSONValue(text: String(decoding: data, as: UTF8.self)) ?? .null
    }

    static func decode<Value: Decodable>(_ type: Value.Type, _ value: JSONValue) -> Value? {
        try? JSONDecoder().decode(Value.self, from: Data(value.text.utf8))
    }

    static func removeDatabase(_ path: String) {
        for suffix in ["", "-wal", "-shm", "-journal"] { try? FileManager.default.removeItem(atPath: path + suffix) }
    }

    /// Learns every work folder on this node's disk (a restarted node's too) and deletes
    /// those whose job is final or gone (see
    /// ``removeWorkNoLongerNeeded(jobIds:)``).
    func removeStaleWork() async {
        guard let tenants = try? FileManager.default.contentsOfDirectory(atPath: settings.workDirectory) else { return }
        var found: [String] = []
        for tenant in tenants {
            let tenantFolder = settings.workDirectory + "/" + tenant
            for jobId in (try? FileManager.default.contentsOfDirectory(atPath: tenantFolder)) ?? [] where UUIDv7.isValid(jobId) {
                work.withLock { $0.folders[jobId] = tenant }
                found.append(jobId)
            }
        }
        await removeWorkNoLongerNeeded(jobIds: found)
    }
}

/// The arguments of a `pipeline.run` job: the pipeline, and the input file of an on-demand run
/// (none for a scheduled run, which picks the newest matching file itself).
struct RunPipeline: JobArguments {
    static let kind = "pipeline.run"
    /// Bad data, refused SQL and timeouts discard a run at once; attempts are spent only by
    /// crashes, lost leases and I/O errors, which a later attempt resumes from its checkpoint.
    static let defaultMaxAttempts = 10
    /// No job timeout (`CAIRN_JOBS_TIMEOUT`): an attempt first waits its turn for a pipeline
    /// slot (`CAIRN_PIPELINE_THREADS`), however long other tenants' runs take, and then every
    /// phase that works is bounded by the run's own limits (`CAIRN_PIPELINE_CPU` per sandbox
    /// process, `CAIRN_PIPELINE_TIMEOUT` for the query, memory and output caps), which fail
    /// the run with a message naming the limit instead of retrying it as a timeout would.
    static let timeout = JobTimeout.unlimited
    /// A pipeline's schedule is its own `schedule` field.
    static let schedulesManagedBy: String? = "a pipeline's schedule field (POST /pipelines, PATCH /pipelines/{id})"

    /// The pipeline to run.
    var pipelineId: String
    /// The input file; nil for a scheduled run.
    var fileId: String?

    /// The pipeline whose schedule it is.
    static func scheduleOwner(of arguments: RunPipeline) -> String? { "/pipelines/\(arguments.pipelineId)" }
}
