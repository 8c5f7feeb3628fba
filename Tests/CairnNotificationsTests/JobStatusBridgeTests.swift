import CairnHTTP
import CairnStorage
import Foundation
import Testing

@testable import CairnJobs
@testable import CairnNotifications

/// A job row as the bridge reads it.
func jobRow(
    id: String, state: JobState, attempt: Int, attemptedAt: Int64?, version: Int, progress: String? = nil, createdBy: String? = "creator"
) -> Job {
    Job(
        id: id, tenantId: "tenant", queue: "default", kind: "noop", args: "{}", priority: 1, state: state, attempt: attempt, maxAttempts: 3,
        runAt: 0, progress: progress, checkpoint: nil, errors: "[]", uniqueKey: nil, createdBy: createdBy, createdAt: 0, attemptedAt: attemptedAt,
        finishedAt: nil, leaseOwner: nil, leaseExpiresAt: nil, cancelRequestedAt: nil, version: version)
}

@Suite("Notifications: job status bridge")
struct JobStatusBridgeTests {
    let id = UUIDv7.make()
    let start = ContinuousClock.now

    func states(_ drafts: [NotificationDraft]) -> [String] {
        drafts.map { $0.data["state"]?.string ?? "?" }
    }

    @Test func aBridgeThatFirstReadsAFinishedJobStillReportsItsRunFirst() {
        // The loaded-machine case: the claim's announcement is read after the job succeeded.
        var bridge = JobStatusBridge(progressInterval: .seconds(2))
        let drafts = bridge.drafts(for: jobRow(id: id, state: .succeeded, attempt: 1, attemptedAt: 1000, version: 9), now: start)
        #expect(states(drafts) == ["running", "succeeded"])
        #expect(drafts.map(\.dedupeKey) == ["job:\(id):running:1000", "job:\(id):9"])
        #expect(drafts[0].data["version"] == nil, "the reconstructed run carries no version of its own")
        // Read again (another announcement of the same change): the same keys, so no new rows.
        let again = bridge.drafts(for: jobRow(id: id, state: .succeeded, attempt: 1, attemptedAt: 1000, version: 9), now: start)
        #expect(again.map(\.dedupeKey) == drafts.map(\.dedupeKey))
    }

    @Test func progressIsThrottledAndStateChangesPass() {
        var bridge = JobStatusBridge(progressInterval: .seconds(2))
        let running = { (version: Int) in
            jobRow(id: id, state: .running, attempt: 1, attemptedAt: 1000, version: version, progress: #"{"fraction":0.5}"#)
        }
        let claimed = bridge.drafts(for: running(2), now: start)
        #expect(states(claimed) == ["running"])
        #expect(claimed[0].dedupeKey == "job:\(id):running:1000")
        #expect(claimed[0].data["progress"]?["fraction"] == .number(0.5))
        #expect(bridge.drafts(for: running(3), now: start + .milliseconds(500)).isEmpty)
        let step = bridge.drafts(for: running(4), now: start + .milliseconds(2100))
        #expect(states(step) == ["running"] && step[0].dedupeKey == "job:\(id):4")
        // The end passes at once, without a second report of the claim.
        let done = bridge.drafts(for: jobRow(id: id, state: .succeeded, attempt: 1, attemptedAt: 1000, version: 5), now: start + .milliseconds(2200))
        #expect(states(done) == ["succeeded"])
    }

    @Test func eachAttemptIsReportedAndUnclaimedOrCreatorlessJobsAreNot() {
        var bridge = JobStatusBridge(progressInterval: .seconds(2))
        _ = bridge.drafts(for: jobRow(id: id, state: .running, attempt: 1, attemptedAt: 1000, version: 2), now: start)
        #expect(states(bridge.drafts(for: jobRow(id: id, state: .retryable, attempt: 1, attemptedAt: 1000, version: 3), now: start)) == ["retryable"])
        // The second attempt was read only once it had failed again: its run still comes first.
        let second = bridge.drafts(for: jobRow(id: id, state: .discarded, attempt: 2, attemptedAt: 5000, version: 5), now: start)
        #expect(states(second) == ["running", "discarded"])
        #expect(second[0].dedupeKey == "job:\(id):running:5000")

        let waiting = UUIDv7.make()
        #expect(
            states(bridge.drafts(for: jobRow(id: waiting, state: .cancelled, attempt: 0, attemptedAt: nil, version: 2), now: start)) == ["cancelled"])
        #expect(
            bridge.drafts(for: jobRow(id: UUIDv7.make(), state: .succeeded, attempt: 1, attemptedAt: 1, version: 3, createdBy: nil), now: start)
                .isEmpty)
    }
}
