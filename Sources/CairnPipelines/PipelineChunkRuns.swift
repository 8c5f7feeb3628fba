import CairnFiles
import CairnFormats
import CairnHTTP
import CairnJobs
import CairnObjects
import CairnSandbox
import CairnStorage
import Foundation
import NIOCore
import NIOFileSystem
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// A chunked run, as its job's checkpoint keeps it.
struct ChunkedRun: Codable, Sendable {
    /// The plan.
    var plan: ChunkedPlan
    /// The `pipeline.chunk` job of each chunk, in file order (empty until enqueued).
    var jobIds: [String]
}

/// What a chunk job leaves in its result for its run.
struct ChunkResult: Codable, Sendable {
    /// The chunk's load: its rows, and its bad records with the whole file's row numbers.
    var load: LoadState
    /// Why the whole run must fail here (bad data with `onRowError: fail`, a file that stops
    /// being CSV): the run fails with the first chunk's reason in file order, as the whole file's
    /// load would have.
    var failure: String?
}

/// The arguments of a `pipeline.chunk` job: loads chunk `index` of the chunked run whose job is
/// `runJobId` (its plan is in that job's checkpoint) into a database of its own, which it puts
/// in the blob store (under the chunk job's id) for the run to combine.
struct RunPipelineChunk: JobArguments {
    static let kind = "pipeline.chunk"
    /// As runs: bad data ends a chunk at once (its run fails), crashes and I/O errors retry.
    static let defaultMaxAttempts = 10
    /// As runs (``RunPipeline/timeout``): a chunk waits for a pipeline slot, then its load's
    /// sandbox process is bounded by `CAIRN_PIPELINE_CPU` and the memory cap.
    static let timeout = JobTimeout.unlimited

    /// The run's job.
    var runJobId: String
    /// The chunk, from 0.
    var index: Int
}

extension PipelineRunner {
    /// Whether a run loads its input in chunks: a CSV input larger than `chunkBytes`, never
    /// loaded whole by an earlier attempt.
    func isChunked(_ checkpoint: Checkpoint, size: Int64) -> Bool {
        checkpoint.chunked != nil || (checkpoint.load == nil && checkpoint.spec.input.format == .csv && size > settings.chunkBytes)
    }

    /// The load of a chunked run, in its job's attempts: the first plans (in a sandbox process)
    /// and enqueues the chunk jobs, then the job snoozes, woken as chunks end; the attempt that
    /// finds every chunk loaded fetches their databases into `folder` and returns their
    /// combined load state, and the names of their databases there (merged in the query phase).
    /// Nil when the plan finds one chunk: the run loads the file whole.
    /// - Throws: `SnoozeJob` while chunks are loading; `PipelineFailure` for the first chunk
    ///   (in file order) whose data fails the run, or a chunk cancelled or discarded.
    func loadInChunks(_ context: JobContext, checkpoint: inout Checkpoint, file: StoredFile, folder: String) async throws -> (
        LoadState, [String]
    )? {
        let tenantId = context.job.tenantId
        guard let chunked = checkpoint.chunked, !chunked.jobIds.isEmpty else {
            let inputPath = folder + "/" + Self.inputName
            try await fetchInput(tenantId: tenantId, fileId: file.id, to: inputPath)
            let order = SandboxOrder(
                phase: .plan, spec: checkpoint.spec, inputPath: inputPath, resume: nil, maxOutputBytes: 0, timeoutSeconds: 0,
                limits: limits(fileBytes: 64 << 20), chunkBytes: settings.chunkBytes)
            let planned = try await inSandbox(order, context: context, folder: folder, deadline: nil) { _ in nil }
            guard let plan = planned.plan else { throw SandboxError(.io, "the plan's process reported no plan") }
            if plan.chunks.count < 2 { return nil }
            try? FileManager.default.removeItem(atPath: inputPath)
            checkpoint.chunked = ChunkedRun(plan: plan, jobIds: [])
            try await context.saveCheckpoint(Self.encode(checkpoint))
            // A unique key per chunk: an attempt that enqueued them and stopped before its
            // checkpoint finds the same jobs again.
            let requests = try plan.chunks.map { chunk in
                var request = try JobRequest(RunPipelineChunk(runJobId: context.job.id, index: chunk.index))
                request.uniqueKey = "\(context.job.id)/\(chunk.index)"
                request.priority = context.job.priority
                return request
            }
            let enqueued = try await jobs.enqueueMany(requests, tenantId: tenantId, createdBy: context.job.createdBy)
            checkpoint.chunked?.jobIds = enqueued.map(\.job.id)
            try await context.saveCheckpoint(Self.encode(checkpoint), progress: Self.chunkProgress(checkpoint, chunkJobs: [:], size: file.size))
            throw SnoozeJob(upTo: Self.chunkPoll)
        }
        let results = try await chunkResults(context, checkpoint: checkpoint, size: file.size)
        var load = results[0].load
        for result in results.dropFirst() {
            load.recordsRead = max(load.recordsRead, result.load.recordsRead)
            load.rowsLoaded += result.load.rowsLoaded
            load.errorCount += result.load.errorCount
            load.errors += result.load.errors.prefix(max(0, PipelineEngine.maxErrors - load.errors.count))
        }
        load.bytesRead = file.size
        load.done = true
        if let failure = results.first(where: { $0.failure != nil })?.failure { throw PipelineFailure(message: failure) }
        var pieces: [String] = []
        for (index, id) in chunked.jobIds.enumerated() {
            let name = "chunk-\(index).sqlite"
            do {
                try await blobs.copy(tenantId: tenantId, id: id, toLocalFile: FilePath(folder + "/" + name))
            } catch is BlobNotFound {
                throw SandboxError(.io, "the database of chunk \(index + 1) is not in the store")
            }
            pieces.append(name)
        }
        return (load, pieces)
    }

    /// The results of a chunked run's chunks, in file order, once every chunk has one.
    /// - Throws: `SnoozeJob` (after reporting the run's progress) while a chunk is loading;
    ///   `PipelineFailure` for a chunk deleted, cancelled or discarded.
    func chunkResults(_ context: JobContext, checkpoint: Checkpoint, size: Int64) async throws -> [ChunkResult] {
        let ids = checkpoint.chunked?.jobIds ?? []
        let found = try await jobs.store.jobs(ids: ids)
        let byId = Dictionary(found.map { ($0.id, $0) }, uniquingKeysWith: { first, _ in first })
        var results: [ChunkResult] = []
        for (index, id) in ids.enumerated() {
            guard let job = byId[id] else { throw PipelineFailure(message: "chunk \(index + 1) of the run was deleted") }
            switch job.state {
            case .cancelled: throw PipelineFailure(message: "chunk \(index + 1) of the run was cancelled")
            case .discarded:
                throw PipelineFailure(message: "chunk \(index + 1) of the run failed: \(Self.lastError(job) ?? "no attempt succeeded")")
            default:
                // Done once its result is saved, before its job is marked succeeded: the chunk
                // wakes this job right after saving it.
                guard let result = job.result.flatMap({ JSONValue(text: $0) }).flatMap({ Self.decode(ChunkResult.self, $0) }) else {
                    try await context.reportProgress(Self.chunkProgress(checkpoint, chunkJobs: byId, size: size))
                    throw SnoozeJob(upTo: Self.chunkPoll)
                }
                results.append(result)
            }
        }
        return results
    }

    /// How long a chunked run's job snoozes at most between looks at its chunks (each chunk
    /// wakes it as it ends; this is the fallback).
    static let chunkPoll: Duration = .seconds(5)

    /// Removes the chunks' databases from the blob store (the run has its output, or failed).
    func removeChunkDatabases(_ checkpoint: Checkpoint, tenantId: String) async {
        for id in checkpoint.chunked?.jobIds ?? [] { try? await blobs.delete(tenantId: tenantId, id: id) }
    }

    /// The newest error of a job, from its `errors`.
    static func lastError(_ job: Job) -> String? {
        guard case .array(let errors)? = JSONValue(text: job.errors), let last = errors.last else { return nil }
        return last["error"]?.string
    }

    /// A chunked run's progress while its chunks load: overall bytes and rows, and each chunk's
    /// job, state and bytes.
    static func chunkProgress(_ checkpoint: Checkpoint, chunkJobs: [String: Job], size: Int64) -> JSONValue {
        guard let chunked = checkpoint.chunked else { return progress(checkpoint, phase: "loading", size: size) }
        var bytesDone: Int64 = 0
        var rowsLoaded = 0
        var entries: [JSONValue] = []
        for (index, chunk) in chunked.plan.chunks.enumerated() {
            let id = index < chunked.jobIds.count ? chunked.jobIds[index] : nil
            let job = id.flatMap { chunkJobs[$0] }
            let progress = job?.progress.flatMap { JSONValue(text: $0) }
            let total = chunk.end - chunk.start
            let done = job?.result != nil ? total : min(total, Int64(progress?["bytesDone"]?.int ?? 0))
            let rows = progress?["rowsLoaded"]?.int ?? 0
            bytesDone += done
            rowsLoaded += rows
            var entry: [String: JSONValue] = [
                "index": .number(Double(index)), "state": .string(job?.state.rawValue ?? "available"), "bytesDone": .number(Double(done)),
                "bytesTotal": .number(Double(total)), "rowsLoaded": .number(Double(rows)),
            ]
            if let id { entry["jobId"] = .string(id) }
            entries.append(.object(entry))
        }
        return .object([
            "phase": .string("loading"), "bytesDone": .number(Double(bytesDone)), "bytesTotal": .number(Double(size)),
            "rowsLoaded": .number(Double(rowsLoaded)), "fraction": .number(size > 0 ? 0.9 * Double(bytesDone) / Double(size) : 0),
            "chunks": .array(entries),
        ])
    }

    /// Copies the input into the work folder (a hard link when the store is this file system).
    func fetchInput(tenantId: String, fileId: String, to path: String) async throws {
        guard !FileManager.default.fileExists(atPath: path) else { return }
        do {
            try await blobs.copy(tenantId: tenantId, id: fileId, toLocalFile: FilePath(path))
        } catch is BlobNotFound {
            // Retried like any I/O error: the bytes may yet appear (a store catching up).
            throw SandboxError(.io, "opening the input failed: the input file's bytes are not in the store")
        }
    }

    // MARK: The chunk job

    /// One attempt of a `pipeline.chunk` job: fetches the chunk's bytes from the store, loads
    /// them into a fresh database in a sandbox process (holding one of the node's pipeline
    /// slots, counted for its tenant), puts the database in the store, saves the chunk's result
    /// and wakes the run. A chunk of a run that has ended, or that its run no longer lists,
    /// does nothing.
    func runChunk(_ args: RunPipelineChunk, context: JobContext) async throws {
        let job = context.job
        guard let run = try await jobs.store.job(id: args.runJobId, tenantId: job.tenantId), !run.state.isFinal,
            let checkpoint = run.checkpoint.flatMap({ JSONValue(text: $0) }).flatMap({ Self.decode(Checkpoint.self, $0) }),
            let chunked = checkpoint.chunked, args.index < chunked.plan.chunks.count,
            chunked.jobIds.isEmpty || chunked.jobIds[args.index] == job.id
        else { return }
        let plan = chunked.plan
        let chunk = plan.chunks[args.index]
        let folder = workFolder(tenantId: job.tenantId, jobId: job.id)
        work.withLock { state in
            state.active.insert(job.id)
            state.folders[job.id] = job.tenantId
        }
        // Nothing of an attempt is kept for the next: each loads its chunk into a new database.
        defer {
            work.withLock { _ = $0.active.remove(job.id) }
            removeWork(jobId: job.id, tenantId: job.tenantId)
        }
        try? FileManager.default.removeItem(atPath: folder)
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let inputPath = folder + "/" + Self.inputName
        try await fetchRange(tenantId: job.tenantId, fileId: checkpoint.fileId, range: chunk.start..<chunk.end, to: inputPath)
        let order = SandboxOrder(
            phase: .load, spec: checkpoint.spec, inputPath: inputPath, resume: nil, maxOutputBytes: 0, timeoutSeconds: 0,
            limits: limits(fileBytes: 4 * (chunk.end - chunk.start) + (256 << 20)),
            chunk: ChunkLoad(chunk: chunk, delimiter: plan.delimiter, header: plan.header, columns: plan.columns, sourceFields: plan.sourceFields))
        let size = chunk.end - chunk.start
        var result: ChunkResult
        do {
            let loaded = try await slots.withSlot(tenantId: job.tenantId) {
                try await inSandbox(order, context: context, folder: folder, deadline: nil) { report in
                    guard report.event == .committed, let state = report.load else { return nil }
                    let done = min(size, max(0, state.bytesRead - chunk.start))
                    return (
                        nil,
                        .object([
                            "phase": .string("loading"), "bytesDone": .number(Double(done)), "bytesTotal": .number(Double(size)),
                            "rowsLoaded": .number(Double(state.rowsLoaded)),
                        ])
                    )
                }
            }
            guard let state = loaded.load else { throw SandboxError(.io, "the chunk's process reported no outcome") }
            result = ChunkResult(load: state, failure: nil)
            try? FileManager.default.removeItem(atPath: inputPath)
            try await blobs.adopt(tenantId: job.tenantId, id: job.id, movingFileAt: FilePath(folder + "/" + SandboxOrder.databaseName))
        } catch let failure as PipelineFailure {
            result = ChunkResult(load: LoadState(), failure: failure.message)
        }
        try await context.saveResult(
            Self.encode(result),
            progress: .object([
                "phase": .string("done"), "bytesDone": .number(Double(size)), "bytesTotal": .number(Double(size)),
                "rowsLoaded": .number(Double(result.load.rowsLoaded)), "fraction": .number(1),
            ]))
        try await jobs.wake(id: args.runJobId, tenantId: job.tenantId)
    }

    /// Writes bytes `range` of the tenant's file `fileId` to the local file at `path`.
    func fetchRange(tenantId: String, fileId: String, range: Range<Int64>, to path: String) async throws {
        let chunks: BlobChunks
        do {
            chunks = try await blobs.read(tenantId: tenantId, id: fileId, range: range)
        } catch is BlobNotFound {
            throw SandboxError(.io, "opening the input failed: the input file's bytes are not in the store")
        }
        let descriptor = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw SandboxError(.io, "the chunk's input could not be written") }
        defer { close(descriptor) }
        var written: Int64 = 0
        for try await buffer in chunks {
            try buffer.withUnsafeReadableBytes { raw in
                var offset = 0
                while offset < raw.count {
                    let count = write(descriptor, raw.baseAddress! + offset, raw.count - offset)
                    if count < 0 {
                        if errno == EINTR { continue }
                        throw SandboxError(.io, "the chunk's input could not be written")
                    }
                    offset += count
                }
            }
            written += Int64(buffer.readableBytes)
        }
        guard written == range.upperBound - range.lowerBound else { throw SandboxError(.io, "the input file ended before the chunk's bytes") }
    }
}
