import CairnHTTP
import CairnJobs
import CairnServer
import CairnTestSupport
import Foundation
import HTTPTypes
import HummingbirdTesting
import Synchronization
import Testing

@testable import CairnPipelines

/// What a finished run shows of itself for comparing with another: its state, the counts and
/// errors of its result, its failure and its output's bytes.
struct RunSummary: Equatable, Sendable, CustomStringConvertible {
    var state: String
    var counts: [String: Int]
    var errors: String
    var failure: String?
    var output: [UInt8]

    var description: String { "\(state) \(counts) failure: \(failure ?? "none") errors: \(errors.prefix(300)) output: \(output.count) bytes" }

    init(_ job: [String: Any], tenant: PipelineClient) async throws {
        state = job["state"] as? String ?? ""
        let result = job["result"] as? [String: Any] ?? [:]
        counts = [:]
        for key in ["rowsRead", "rowsLoaded", "rowsSkipped", "rowsOutput"] { counts[key] = result[key] as? Int }
        let errorList = result["errors"] ?? []
        errors = String(decoding: try JSONSerialization.data(withJSONObject: errorList, options: [.sortedKeys]), as: UTF8.self)
        failure = result["failure"] as? String
        if let id = result["outputFileId"] as? String { output = try await tenant.content(id) } else { output = [] }
    }
}

/// A finished run: its summary, its progress's phase and fraction, and its chunk jobs (none
/// for a run that loaded its file whole).
struct FinishedRun: Sendable {
    var summary: RunSummary
    var phase: String?
    var fraction: Double?
    var chunks: [Job]
}

/// The chunk jobs of a chunked run, from its checkpoint.
func chunkJobIds(_ job: [String: Any]) -> [String] {
    ((job["checkpoint"] as? [String: Any])?["chunked"] as? [String: Any])?["jobIds"] as? [String] ?? []
}

/// Runs each pipeline body over the file (uploaded from `bytes`) on a node whose chunk size is
/// `chunkBytes`, one after the other. `during` runs once the first run is under way.
func runs(
    _ engine: TestEngine, bytes: [UInt8], bodies: [[String: Any]], chunkBytes: Int64,
    during: (@Sendable (PipelineClient, CairnComponents, String) async throws -> Void)? = nil
) async throws -> [FinishedRun] {
    // As JSON text: the node's closure is Sendable.
    let texts = try bodies.map { try JSONSerialization.data(withJSONObject: $0) }
    return try await withPipelines(
        engine,
        configure: {
            $0.allowLongRuns()
            $0.pipelines.chunkBytes = chunkBytes
            // Both of the node's pipeline slots may load one tenant's chunks.
            $0.pipelines.maxRunningPerTenant = 2
        }
    ) { tenant, _, components in
        let file = try await tenant.upload(bytes)
        var finished: [FinishedRun] = []
        for text in texts {
            let body = try #require(try JSONSerialization.jsonObject(with: text) as? [String: Any])
            let jobId = try await tenant.startRun(try await tenant.create(body), fileId: file)
            if let during, finished.isEmpty { try await during(tenant, components, jobId) }
            let job = try await tenant.finished(jobId, timeout: .seconds(300))
            let progress = job["progress"] as? [String: Any]
            finished.append(
                FinishedRun(
                    summary: try await RunSummary(job, tenant: tenant), phase: progress?["phase"] as? String,
                    fraction: progress?["fraction"] as? Double, chunks: try await components.jobs.store.jobs(ids: chunkJobIds(job))))
        }
        return finished
    }
}

/// A CSV of `records` records whose text field is mostly quoted line breaks (LF and CRLF,
/// with doubled quotes), so that most byte offsets, chunk edges among them, fall inside a
/// quoted field; every 97th record has a field too many and every 89th a `count` that is no
/// integer (both past the type sample of 1,000 records).
func quotedLineBreaksCSV(records: Int) -> [UInt8] {
    var text = "id,note,count,price\r\n"
    for id in 1...records {
        let note = String(repeating: "a \"\"b\"\"\n", count: id % 7) + String(repeating: "\r\n", count: id % 5) + "end"
        let count = id > 1000 && id % 89 == 0 ? "many" : String(id * 3)
        let extra = id > 1000 && id % 97 == 0 ? ",surplus" : ""
        text += "\(id),\"\(note)\",\(count),\(Double(id) / 4)\(extra)\r\n"
    }
    return Array(text.utf8)
}

/// What a test learnt while a run went on: the chunk job whose process it killed, the run's chunk jobs.
final class Killed: Sendable {
    let id = Mutex<String?>(nil)
    let ids = Mutex<[String]>([])
}

@Suite("Chunked pipeline runs: large inputs loaded as chunk jobs, combined exactly")
struct PipelineChunkTests {
    /// flights.csv (31 MB) in 8 MiB chunks (about 85,000 records, a committed batch each), loaded by chunk jobs on both of the node's slots,
    /// one of whose processes is killed mid-load: the retried chunk loads a fresh database, and
    /// the run's rows, row ids, errors and output are byte for byte the whole run's.
    @Test(arguments: TestEngine.available)
    func flightsInChunksEqualTheWholeRunEvenWhenAChunkIsKilled(engine: TestEngine) async throws {
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: try await flightsPath())))
        let body = pipelineBody(
            "SELECT rowid AS r, * FROM input WHERE rowid % 401 = 1 OR dep_delay > 1000 OR rowid > 336770", output: "csv")
        let whole = try await runs(engine, bytes: bytes, bodies: [body], chunkBytes: 1 << 40)
        #expect(whole[0].summary.state == "succeeded" && whole[0].chunks.isEmpty, "\(whole[0].summary)")
        let killed = Killed()
        let chunked = try await runs(engine, bytes: bytes, bodies: [body], chunkBytes: 8 << 20) { tenant, components, runId in
            // Kills the first chunk process seen after its first committed batch.
            try await components.jobs.waitUntil("a chunk's process has committed rows", timeout: .seconds(120)) {
                let run = try await tenant.client.json(.get, "/jobs/\(runId)", token: tenant.token).object
                for job in try await components.jobs.store.jobs(ids: chunkJobIds(run)) {
                    guard let progress = job.progress.flatMap({ JSONValue(text: $0) }), (progress["rowsLoaded"]?.int ?? 0) > 0,
                        progress["phase"]?.string == "loading", let pid = components.pipelineRunner.sandboxProcess(jobId: job.id)
                    else { continue }
                    if kill(pid, SIGKILL) == 0 {
                        killed.id.withLock { $0 = job.id }
                        return true
                    }
                }
                return false
            }
        }[0]
        #expect(chunked.summary == whole[0].summary)
        #expect(chunked.summary.counts["rowsLoaded"] == 336_776)
        #expect(chunked.chunks.count == 4, "31 MB in 8 MiB chunks")
        #expect(chunked.phase == "done" && chunked.fraction == 1)
        let killedChunk = try #require(chunked.chunks.first { $0.id == killed.id.withLock { $0 } })
        #expect(killedChunk.attempt == 2 && killedChunk.state == .succeeded, "retried once: \(killedChunk.errors)")
        #expect(chunked.chunks.allSatisfy { $0.state == .succeeded })
    }

    /// A generated file whose chunk edges fall inside quoted line breaks, with bad records past
    /// the type sample: with `onRowError: skip` and `fail`, the chunked runs' rows, errors (row
    /// numbers and byte offsets of the whole file), failures and outputs are the whole run's.
    @Test(arguments: TestEngine.available)
    func quotedLineBreaksAtChunkEdgesAndBadRowsEqualTheWholeRun(engine: TestEngine) async throws {
        let bytes = quotedLineBreaksCSV(records: 8000)
        let chunkBytes: Int64 = 64 << 10
        // Most chunk targets fall inside a quoted field (the text is mostly quoted line breaks).
        #expect(bytes.count > 5 * Int(chunkBytes))
        let bodies = [
            pipelineBody("SELECT rowid AS r, * FROM input", output: "csv", onRowError: "skip"),
            pipelineBody("SELECT count(*) AS n, sum(count) AS total FROM input", onRowError: "fail"),
        ]
        let whole = try await runs(engine, bytes: bytes, bodies: bodies, chunkBytes: 1 << 40)
        let chunked = try await runs(engine, bytes: bytes, bodies: bodies, chunkBytes: chunkBytes)
        #expect(whole[0].summary.state == "succeeded" && (whole[0].summary.counts["rowsSkipped"] ?? 0) > 20, "\(whole[0].summary)")
        #expect(whole[1].summary.state == "discarded" && whole[1].summary.failure?.contains("row 1067") == true, "\(whole[1].summary)")
        for (one, other) in zip(whole, chunked) {
            #expect(other.summary == one.summary)
            #expect(other.chunks.count >= 5, "split into chunks")
        }
    }

    /// Cancelling a chunked run (snoozed while its chunks load) cancels its chunks: waiting ones
    /// at once, the running one stopped by its node; none is left to run.
    @Test(arguments: TestEngine.available)
    func cancellingAChunkedRunCancelsItsChunks(engine: TestEngine) async throws {
        let path = try await flightsPath()
        try await withPipelines(
            engine,
            configure: {
                $0.allowLongRuns()
                $0.pipelines.chunkBytes = 4 << 20
            }
        ) { tenant, client, components in
            let file = try await tenant.upload(path: path)
            let runId = try await tenant.startRun(try await tenant.create(pipelineBody("SELECT count(*) AS n FROM input")), fileId: file)
            let chunkIds = Killed()
            try await components.jobs.waitUntil("the run has enqueued its chunks", timeout: .seconds(120)) {
                let run = try await client.json(.get, "/jobs/\(runId)", token: tenant.token).object
                let ids = chunkJobIds(run)
                chunkIds.ids.withLock { $0 = ids }
                return !ids.isEmpty
            }
            #expect(try await client.json(.post, "/jobs/\(runId)/cancel", token: tenant.token).status == .ok)
            try await components.jobs.waitForJob(runId, state: .cancelled)
            let ids = chunkIds.ids.withLock { $0 }
            #expect(ids.count == 8)
            try await components.jobs.waitUntil("every chunk has ended", timeout: .seconds(60)) {
                try await components.jobs.store.jobs(ids: ids).allSatisfy { $0.state.isFinal }
            }
            let chunks = try await components.jobs.store.jobs(ids: ids)
            #expect(chunks.filter { $0.state == .cancelled }.count >= 6, "\(chunks.map(\.state))")
            #expect(chunks.allSatisfy { $0.state == .cancelled || $0.state == .succeeded })
        }
    }
}
