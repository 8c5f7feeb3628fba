import CairnHTTP
import CairnJobs
import CairnServer
import CairnStorage
import CairnTestSupport
import Foundation
import Testing

@testable import CairnNotifications

@Suite("Notifications: job status sweeps and marks")
struct JobStatusSweepTests {
    @Test(arguments: TestEngine.available)
    /// A sweep reads the unreported jobs in pages, stores each page's drafts in one transaction,
    /// and marks them; reading them again (another node, or a sweep racing an announcement)
    /// stores nothing twice and skips no seq.
    func aSweepReportsInPagesAndMarks(engine: TestEngine) async throws {
        try await withTestApp(engine, runServices: false) { app in
            let owner = try await signUp(app.client, "sweep@example.com")
            let queue = app.components.jobs
            let store = queue.store
            let ids = try await queue.enqueueMany(
                (0..<11).map { _ in JobStatusDurabilityTests.noop(0) }, tenantId: owner.tenantId, createdBy: owner.userId
            )
            .map(\.job.id)
            let orphan = try await queue.enqueue(JobStatusDurabilityTests.noop(0), tenantId: owner.tenantId, createdBy: nil).job.id
            #expect(try await store.unreportedStatus(after: nil, limit: 100).isEmpty, "a new job has no change to report")
            try await withBareWorker(app) {
                for id in ids + [orphan] { try await queue.waitUntilFinished(id) }
            }
            let unreported = try await store.unreportedStatus(after: nil, limit: 100)
            #expect(unreported.map(\.job.id) == ids.sorted(), "every finished job with a creator, in id order; not the creatorless one")
            #expect(try await store.unreportedStatus(after: ids.sorted()[3], limit: 4).map(\.job.id) == Array(ids.sorted()[4..<8]))

            let center = app.components.notifications
            let transactions = center.publishTransactions
            var reporter = JobStatusReporter(
                center: center, store: store, logger: testLogger, statuses: JobStatusBridge(progressInterval: .seconds(2)), batchSize: 4)
            await reporter.sweep()
            #expect(center.publishTransactions - transactions == 3, "one transaction per page of 4 jobs (2 drafts each)")
            let rows = try await jobStatusRows(app.database, userId: owner.userId)
            for id in ids { #expect(rows.filter { $0.jobId == id }.map(\.state) == ["running", "succeeded"]) }
            let first = try #require(rows.first).seq
            #expect(rows.map(\.seq) == Array(first..<first + Int64(2 * ids.count)), "one seq each, none skipped")
            let marked = try await store.jobsWithStatusVersion(ids: ids + [orphan])
            #expect(marked.allSatisfy { $0.job.id == orphan ? $0.statusVersion == 1 : $0.statusVersion == $0.job.version })
            #expect(try await store.unreportedStatus(after: nil, limit: 100).isEmpty)

            // Another node that read them before the marks: nothing new, and no seq skipped.
            var other = JobStatusReporter(
                center: center, store: store, logger: testLogger, statuses: JobStatusBridge(progressInterval: .seconds(2)), batchSize: 4)
            await other.report(unreported)
            #expect(try await jobStatusRows(app.database, userId: owner.userId).count == rows.count)
            let next = try await center.publish(NotificationDraft(type: "message", title: "after"), to: [owner.userId], tenantId: owner.tenantId)
            #expect(next.map(\.seq) == [first + Int64(rows.count)], "the seqs of the dropped duplicates were given back")

            // A mark never goes back (a node that read an older version marks late).
            try await store.markStatusReported([ids[0]: 1])
            #expect(try await store.jobsWithStatusVersion(ids: [ids[0]]).first?.statusVersion == marked.first { $0.job.id == ids[0] }?.job.version)
        }
    }

    @Test func theInboxReportsWhatWasHeardThenSweepsThenCloses() {
        let inbox = JobStatusInbox()
        #expect(inbox.take(limit: 10) == nil)
        inbox.heard(["a", "b"])
        inbox.requestSweep()
        inbox.heard(["b", "c"])
        inbox.close()
        #expect(inbox.take(limit: 2) == .changed(["a", "b"]))
        #expect(inbox.take(limit: 2) == .changed(["c"]))
        #expect(inbox.take(limit: 2) == .sweep)
        inbox.heard(["d"])
        #expect(inbox.take(limit: 2) == .changed(["d"]), "heard during the last sweep: still reported")
        #expect(inbox.take(limit: 2) == .closed)
    }
}
