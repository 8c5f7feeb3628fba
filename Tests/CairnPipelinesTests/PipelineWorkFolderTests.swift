import CairnHTTP
import CairnJobs
import CairnServer
import CairnStorage
import CairnTestSupport
import Foundation
import HTTPTypes
import HummingbirdTesting
import SQLKit
import Testing

@testable import CairnPipelines

/// A run's work folder (its copy of the input, its work database, its output before it is
/// stored) is outside every quota, so it goes as soon as the run cannot use it any more:
/// cancelled, deleted, succeeded or failed, whichever node learns it first. Cancelled runs
/// used to leave gigabytes behind until the node's next restart.
@Suite("Pipeline work folders go when their run ends")
struct PipelineWorkFolderTests {
    /// Waits for a work folder to disappear. A folder's removal is announced by no event, so the
    /// test looks (every 100 ms) until a deadline.
    func waitUntilGone(_ folder: String, _ what: String, timeout: Duration = .seconds(10)) async throws {
        try await pollUntil("\(what): the work folder is removed", timeout: timeout) { !FileManager.default.fileExists(atPath: folder) }
    }

    @Test(arguments: TestEngine.available)
    func succeededFailedAndCancelledRunsLeaveNoWorkFolder(engine: TestEngine) async throws {
        try await withPipelines(engine, configure: { $0.allowLongRuns() }) { tenant, client, components in
            let runner = components.pipelineRunner
            let tenantId = try await tenantOf(client, tenant.token)
            let penguins = try await tenant.upload(path: "\(sharedData)/penguins.csv")
            let succeeded = try await tenant.run(try await tenant.create(pipelineBody("SELECT count(*) AS n FROM input")), fileId: penguins)
            #expect(succeeded["state"] as? String == "succeeded", "\(succeeded)")
            try await waitUntilGone(runner.workFolder(tenantId: tenantId, jobId: try #require(succeeded["id"] as? String)), "succeeded")
            // Fails in the query, after the load wrote its work database.
            let failed = try await tenant.run(
                try await tenant.create(pipelineBody("SELECT abs(-9223372036854775807 - 1) AS n FROM input")), fileId: penguins)
            #expect(tenant.failure(of: failed)?.contains("integer overflow") == true, "\(failed)")
            try await waitUntilGone(runner.workFolder(tenantId: tenantId, jobId: try #require(failed["id"] as? String)), "failed")

            // A real file, cancelled while its run works in its folder.
            let flights = try await tenant.upload(path: try await flightsPath())
            let jobId = try await tenant.startRun(try await tenant.create(pipelineBody(runawaySQL)), fileId: flights)
            let folder = runner.workFolder(tenantId: tenantId, jobId: jobId)
            try await components.jobs.waitUntil("the run's sandbox process works in its folder", timeout: .seconds(60)) {
                runner.sandboxProcess(jobId: jobId) != nil && FileManager.default.fileExists(atPath: folder + "/" + SandboxOrder.databaseName)
            }
            #expect(try await client.json(.post, "/jobs/\(jobId)/cancel", token: tenant.token).status == .ok)
            try await components.jobs.waitForJob(jobId, state: .cancelled)
            try await waitUntilGone(folder, "cancelled while running")
        }
    }

    /// A run whose job row disappears under it (its lease renewal finds nothing to renew, and
    /// stops it) has no later attempt: its node removes the folder then, not at the next sweep.
    @Test(arguments: TestEngine.available)
    func aRunWhoseJobIsGoneRemovesItsFolder(engine: TestEngine) async throws {
        try await withPipelines(
            engine,
            configure: {
                $0.jobs.leaseSeconds = 3  // renewed every second
                $0.allowLongRuns()
            }
        ) { tenant, client, components in
            let runner = components.pipelineRunner
            let file = try await tenant.upload(tinyCSV)
            let jobId = try await tenant.startRun(try await tenant.create(pipelineBody(runawaySQL)), fileId: file)
            let folder = runner.workFolder(tenantId: try await tenantOf(client, tenant.token), jobId: jobId)
            try await components.jobs.waitUntil("the run's query works in its folder", timeout: .seconds(60)) {
                guard let job = try await components.jobs.store.jobs(ids: [jobId]).first,
                    job.progress.flatMap({ JSONValue(text: $0) })?["phase"]?.string == "querying"
                else { return false }
                return runner.sandboxProcess(jobId: jobId) != nil
            }
            try await components.database.write { db in try await db.raw("DELETE FROM jobs WHERE id = \(bind: jobId)").run() }
            try await waitUntilGone(folder, "the job was deleted under its run", timeout: .seconds(20))
            #expect(runner.sandboxProcess(jobId: jobId) == nil, "its process was stopped")
        }
    }

    /// A run waiting for its retry keeps its folder on the node that ran it; a cancel (taken by
    /// any node: it needs no node to stop anything) or a deletion of the job after it ended
    /// elsewhere must still remove it there, at once.
    @Test(arguments: TestEngine.available)
    func aFolderKeptForARetryGoesWhenTheJobIsCancelledOrDeleted(engine: TestEngine) async throws {
        // The retries' backoff never elapses: the test clock does not move.
        try await withPipelines(engine, clock: TestClock()) { tenant, client, components in
            let runner = components.pipelineRunner
            let tenantId = try await tenantOf(client, tenant.token)
            let file = try await tenant.upload(tinyCSV)
            let blob = components.configuration.dataDir + "/blobs/\(tenantId)/\(file)"
            #expect(rename(blob, blob + ".away") == 0)
            let pipeline = try await tenant.create(pipelineBody("SELECT count(*) AS n FROM input"))

            // Cancelled while it waits for its retry.
            let cancelled = try await tenant.startRun(pipeline, fileId: file)
            try await components.jobs.waitForJob(cancelled, state: .retryable)
            let cancelledFolder = runner.workFolder(tenantId: tenantId, jobId: cancelled)
            #expect(FileManager.default.fileExists(atPath: cancelledFolder), "kept for the next attempt")
            #expect(try await client.json(.post, "/jobs/\(cancelled)/cancel", token: tenant.token).status == .ok)
            try await waitUntilGone(cancelledFolder, "cancelled while waiting for a retry")

            // Finished by another node whose announcement this node missed (played by a direct
            // write), then deleted: the deletion is the last word.
            let deleted = try await tenant.startRun(pipeline, fileId: file)
            try await components.jobs.waitForJob(deleted, state: .retryable)
            let deletedFolder = runner.workFolder(tenantId: tenantId, jobId: deleted)
            #expect(FileManager.default.fileExists(atPath: deletedFolder), "kept for the next attempt")
            try await components.database.write { db in
                try await db.raw("UPDATE jobs SET state = 'discarded', finished_at = 1 WHERE id = \(bind: deleted)").run()
            }
            // No check that the folder is still there at this point: a loaded CI run saw this node
            // notice the finished job and remove it first, which is also right.
            #expect(try await client.json(.delete, "/jobs/\(deleted)", token: tenant.token).status == .noContent)
            try await waitUntilGone(deletedFolder, "deleted")
        }
    }
}
