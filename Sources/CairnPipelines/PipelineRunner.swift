package import CairnFiles
import CairnFormats
import CairnHTTP
package import CairnJobs
import CairnSandbox
import CairnStorage
import Foundation
package import Logging
import Metrics
import NIOFileSystem
import NIOPosix
import ServiceLifecycle

/// Settings of pipeline runs (`CAIRN_PIPELINE_*`).
package struct PipelineSettings: Sendable {
    /// Seconds the tenant's query may run before it is stopped (`CAIRN_PIPELINE_TIMEOUT`,
    /// default 300).
    package var timeoutSeconds: Double = 300
    /// Threads that parse, load and query, i.e. runs making progress at once on this node
    /// (`CAIRN_PIPELINE_THREADS`, default 2). They are not the Swift concurrency pool's, so a
    /// long query never holds up requests.
    package var threads = 2
    /// Where runs keep their job-private databases (`<data dir>/pipelines`).
    package var workDirectory = "./cairn-data/pipelines"

    /// Creates the defaults.
    package init() {}
}

/// Runs pipelines as jobs of kind `pipeline.run`: on demand (``PipelineService/startRun(pipelineId:fileId:tenantId:createdBy:)``)
/// or from a pipeline's schedule. One run streams the input file through its parser into a
/// job-private SQLite database (committing and checkpointing every 50,000 rows), runs the
/// tenant's query in the sandbox, and streams the result into a new file of the tenant.
///
/// A killed or failed attempt resumes from its checkpoint: rows loaded stay loaded (rows
/// committed after the last checkpoint are removed and read again), and the output file's id is
/// fixed in the checkpoint before it is recorded, so a run's output exists once. Runs are local
/// to a node's disk: an attempt rescued by another node starts its load again.
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
    let pool: NIOThreadPool

    /// Creates the runner and starts its thread pool; call ``registerJobs(on:)`` once, from the
    /// composition root.
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
        self.pool = NIOThreadPool(numberOfThreads: max(1, settings.threads))
        pool.start()
    }

    /// Registers the pipeline run job handler on `queue`.
    package func registerJobs(on queue: JobQueue) {
        queue.register(RunPipeline.self) { [weak self] args, context in
            guard let self else { throw CancellationError() }
            try await self.run(args, context: context)
        }
    }

    /// Removes the work folders of finished runs every 10 minutes; stops the pool on shutdown.
    package func run() async throws {
        try? await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                await self.removeStaleWork()
                try await Task.sleep(for: .seconds(600))
            }
        }
        try? await pool.shutdownGracefully()
    }

    /// What a run keeps between attempts.
    struct Checkpoint: Codable {
        var fileId: String
        var spec: PipelineSpec
        var pipelineName: String
        var load: LoadState?
        var outputFileId: String?
    }

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
                        "no new \(pipeline.spec.input.format.rawValue) file\(pipeline.spec.schedule?.namePattern.map { " matching \($0)" } ?? "") since the last scheduled run"
                    try await context.saveResult(
                        .object(["skipped": .bool(true), "reason": .string(reason)]), progress: .object(["fraction": .number(1)]))
                    return
                }
                fileId = chosen.id
                try await pipelines.recordScheduledFile(pipelineId: pipeline.id, tenantId: job.tenantId, fileId: chosen.id)
            }
            checkpoint = Checkpoint(fileId: fileId, spec: pipeline.spec, pipelineName: pipeline.name, load: nil, outputFileId: nil)
            try await context.saveCheckpoint(Self.encode(checkpoint), progress: .object(["phase": .string("loading"), "fraction": .number(0)]))
        }
        let folder = workFolder(tenantId: job.tenantId, jobId: job.id)
        do {
            try await run(context, checkpoint: &checkpoint, folder: folder)
            try? FileManager.default.removeItem(atPath: folder)
        } catch let failure as PipelineFailure {
            try? FileManager.default.removeItem(atPath: folder)
            try? await context.saveResult(resultValue(checkpoint, output: nil, failure: failure.message))
            throw PermanentJobError(failure.message)
        } catch let error as SandboxError where error.kind != .io && error.kind != .cancelled {
            try? FileManager.default.removeItem(atPath: folder)
            try? await context.saveResult(resultValue(checkpoint, output: nil, failure: error.message))
            throw PermanentJobError(error.message)
        } catch {
            // Retried (or cancelled): the folder stays for the next attempt; the last one cleans up.
            if job.attempt >= job.maxAttempts { try? FileManager.default.removeItem(atPath: folder) }
            if let error = error as? SandboxError, error.kind == .cancelled { throw CancellationError() }
            throw error
        }
    }

    private func run(_ context: JobContext, checkpoint: inout Checkpoint, folder: String) async throws {
        let tenantId = context.job.tenantId
        if let outputId = checkpoint.outputFileId, let existing = try await files.get(id: outputId, tenantId: tenantId) {
            // An earlier attempt recorded the output and stopped before the job completed.
            try await context.saveResult(resultValue(checkpoint, output: existing, failure: nil), progress: Self.progress(checkpoint, phase: "done"))
            return
        }
        guard let file = try await files.get(id: checkpoint.fileId, tenantId: tenantId) else {
            throw PipelineFailure(message: "the input file was deleted")
        }
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let databasePath = folder + "/input.sqlite"
        let inputPath = blobs.path(tenantId: tenantId, id: file.id).string
        let started = ContinuousClock.now

        // Reported in the result, so a resumed load is visible (and testable).
        let resumedFromRow = checkpoint.load.flatMap { $0.done ? nil : $0.rowsLoaded }
        if checkpoint.load?.done != true {
            if checkpoint.load == nil { Self.removeDatabase(databasePath) }
            do {
                checkpoint.load = try await load(context, checkpoint: checkpoint, inputPath: inputPath, databasePath: databasePath, size: file.size)
            } catch is LoadRestart {
                logger.info("pipeline work database does not match its checkpoint; loading again", metadata: ["job_id": .string(context.job.id)])
                Self.removeDatabase(databasePath)
                checkpoint.load = nil
                checkpoint.load = try await load(context, checkpoint: checkpoint, inputPath: inputPath, databasePath: databasePath, size: file.size)
            }
            try await context.saveCheckpoint(Self.encode(checkpoint), progress: Self.progress(checkpoint, phase: "querying", size: file.size))
        }

        let outputPath = folder + "/output"
        let control = SandboxControl()
        let spec = checkpoint.spec
        let maxBytes = quotas.maxFileBytes
        let timeout = settings.timeoutSeconds
        let snapshot = checkpoint
        let outcome = try await onPool(
            control: control, context: context,
            snapshot: { rows in
                Self.progress(snapshot, phase: "querying", size: file.size, rowsOutput: rows)
            }
        ) { report in
            try PipelineEngine.query(
                spec: spec, databasePath: databasePath, outputPath: outputPath, maxBytes: maxBytes, timeoutSeconds: timeout, control: control,
                report: report)
        }
        let elapsed = (ContinuousClock.now - started).components
        Timer(label: "cairn_pipeline_run_seconds").recordNanoseconds(elapsed.seconds * 1_000_000_000 + elapsed.attoseconds / 1_000_000_000)

        // The output's id is fixed before it is recorded, so a retry after a crash finds it.
        let outputId = UUIDv7.make()
        checkpoint.outputFileId = outputId
        try await context.saveCheckpoint(Self.encode(checkpoint))
        let format = spec.output.format
        let output = StoredFile(
            id: outputId, tenantId: tenantId, name: Self.outputName(checkpoint.pipelineName, jobId: context.job.id, format: format),
            size: outcome.bytes, sha256: outcome.sha256, contentType: Self.contentType(format), format: format == .csv ? "csv" : format.rawValue,
            createdBy: context.job.createdBy, createdAt: WallClock.milliseconds())
        try await blobs.adopt(tenantId: tenantId, id: outputId, movingFileAt: FilePath(outputPath))
        do {
            try await files.insert(output, quotas: quotas, hour: WallClock.milliseconds() / 3_600_000, countsAsUpload: false)
        } catch is FileStore.QuotaExceeded {
            try? await blobs.delete(tenantId: tenantId, id: outputId)
            throw PipelineFailure(message: "the output (\(outcome.bytes) bytes) would exceed the tenant's file quota")
        }
        Counter(label: "cairn_pipeline_rows_total", dimensions: [("phase", "loaded")]).increment(by: checkpoint.load?.rowsLoaded ?? 0)
        Counter(label: "cairn_pipeline_rows_total", dimensions: [("phase", "output")]).increment(by: outcome.rows)
        try await context.saveResult(
            resultValue(checkpoint, output: output, failure: nil, rowsOutput: outcome.rows, resumedFromRow: resumedFromRow),
            progress: Self.progress(checkpoint, phase: "done", size: file.size, rowsOutput: outcome.rows))
    }

    /// The load phase on the pool; every committed batch becomes a checkpoint.
    private func load(_ context: JobContext, checkpoint: Checkpoint, inputPath: String, databasePath: String, size: Int64) async throws -> LoadState {
        let control = SandboxControl()
        let spec = checkpoint.spec
        let resume = checkpoint.load
        let base = checkpoint
        return try await onPool(
            control: control, context: context,
            save: { (state: LoadState) in
                var next = base
                next.load = state
                return (Self.encode(next), Self.progress(next, phase: "loading", size: size))
            }
        ) { report in
            try PipelineEngine.load(spec: spec, filePath: inputPath, databasePath: databasePath, control: control, resume: resume, report: report)
        }
    }

    /// Runs `work` on the pipeline pool. What it reports is saved by this task as it goes (the
    /// newest report wins when saving falls behind), and cancelling this task stops the work.
    private func onPool<Report: Sendable, Outcome: Sendable>(
        control: SandboxControl, context: JobContext, save: @escaping @Sendable (Report) -> (checkpoint: JSONValue?, progress: JSONValue),
        work: @escaping @Sendable (_ report: (Report) -> Void) throws -> Outcome
    ) async throws -> Outcome {
        let (reports, continuation) = AsyncStream.makeStream(of: Report.self, bufferingPolicy: .bufferingNewest(1))
        return try await withTaskCancellationHandler {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    for await report in reports {
                        let (checkpoint, progress) = save(report)
                        if let checkpoint {
                            try await context.saveCheckpoint(checkpoint, progress: progress)
                        } else {
                            try await context.reportProgress(progress)
                        }
                    }
                }
                let outcome: Outcome
                do {
                    outcome = try await pool.runIfActive { try work { continuation.yield($0) } }
                } catch {
                    continuation.finish()
                    group.cancelAll()
                    throw error
                }
                continuation.finish()
                try await group.waitForAll()
                return outcome
            }
        } onCancel: {
            control.cancel()
        }
    }

    /// `onPool` for work whose reports are progress only.
    private func onPool<Outcome: Sendable>(
        control: SandboxControl, context: JobContext, snapshot: @escaping @Sendable (Int) -> JSONValue,
        work: @escaping @Sendable (_ report: (Int) -> Void) throws -> Outcome
    ) async throws -> Outcome {
        try await onPool(control: control, context: context, save: { (rows: Int) in (nil, snapshot(rows)) }, work: work)
    }

    /// The newest file for a scheduled run: of the pipeline's input format, newer than the one
    /// the previous scheduled run took, matching `namePattern` when the schedule has one.
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

    /// Deletes work folders whose job is final or gone (a run that died on its last attempt).
    func removeStaleWork() async {
        guard let tenants = try? FileManager.default.contentsOfDirectory(atPath: settings.workDirectory) else { return }
        for tenant in tenants {
            let tenantFolder = settings.workDirectory + "/" + tenant
            for jobId in (try? FileManager.default.contentsOfDirectory(atPath: tenantFolder)) ?? [] {
                guard let job = try? await jobs.store.job(id: jobId, tenantId: tenant) else {
                    if UUIDv7.isValid(jobId) { try? FileManager.default.removeItem(atPath: tenantFolder + "/" + jobId) }
                    continue
                }
                if job.state.isFinal { try? FileManager.default.removeItem(atPath: tenantFolder + "/" + jobId) }
            }
        }
    }
}

/// The arguments of a `pipeline.run` job: the pipeline, and the input file of an on-demand run
/// (none for a scheduled run, which picks the newest matching file itself).
struct RunPipeline: JobArguments {
    static let kind = "pipeline.run"
    /// Bad data, refused SQL and timeouts discard a run at once; attempts are spent only by
    /// crashes, lost leases and I/O errors, which a later attempt resumes from its checkpoint.
    static let defaultMaxAttempts = 10

    /// The pipeline to run.
    var pipelineId: String
    /// The input file; nil for a scheduled run.
    var fileId: String?
}
