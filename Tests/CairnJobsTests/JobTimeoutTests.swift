import CairnHTTP
import CairnServer
import CairnStorage
import CairnTestSupport
import Foundation
import HTTPTypes
import HummingbirdTesting
import NIOCore
import Testing

@testable import CairnJobs

/// The job attempt time limit (`CAIRN_JOBS_TIMEOUT`, a kind's own, a job's `timeoutMs`): a
/// fresh-user trial filled a node's slots for a day with `noop` jobs asking to sleep that long.
/// Every deadline here is on the node's clock, which the tests move: nothing waits for real time.
@Suite("Jobs: attempt timeouts")
struct JobTimeoutTests {
    /// A node timeout of 20 s: shorter than the 30 s lease, so moving the clock past it leaves
    /// the lease alone (no rescue races the timeout).
    static let twentySeconds: @Sendable (inout CairnConfiguration) -> Void = { $0.jobs.timeout = .seconds(20) }

    /// An attempt past the node's timeout is cancelled and fails with `timed out after 20s`,
    /// is retried with the usual backoff, and is discarded once its attempts are spent; a job's
    /// own `timeoutMs` shortens it.
    @Test(arguments: TestEngine.available)
    func anAttemptPastItsTimeoutIsCancelledFailedAndRetried(engine: TestEngine) async throws {
        let clock = TestClock()
        try await withTestApp(engine, owner: "timeout@example.com", clock: clock, configure: Self.twentySeconds, runServices: true) { app, token in
            let client = app.client
            // A day's sleep: only the timeout can end its attempts.
            let day = try await enqueue(client, token: token, ["kind": "noop", "args": ["sleepMs": 86_400_000], "maxAttempts": 2])
            #expect(day.status == .created)
            let id = try #require(day.job["id"] as? String)
            #expect(day.job["timeoutMs"] is NSNull)
            try await app.waitForJob(id, state: .running, token: token)
            clock.advance(by: .seconds(21))
            let retryable = try await app.waitForJob(id, state: .retryable, token: token)
            #expect(retryable.attempt == 1)
            #expect(retryable.errors.map(\.error) == ["timed out after 20s"])
            // The usual backoff after attempt 1: 2 s ± 10 %, from the failure.
            let backoff = retryable.runAt.timeIntervalSince(try #require(retryable.errors.first).at)
            #expect((1.8...2.2).contains(backoff), "backoff \(backoff) s")
            clock.advance(by: .seconds(3))
            try await app.components.jobs.waitForJob(id, "attempt 2 running") { $0.state == .running && $0.attempt == 2 }
            clock.advance(by: .seconds(21))
            let discarded = try await app.waitForJob(id, state: .discarded, token: token)
            #expect(discarded.errors.map(\.error) == ["timed out after 20s", "timed out after 20s"])
            #expect(discarded.errors.map(\.attempt) == [1, 2])

            // A job's own limit, shorter than the node's.
            let own = try await enqueue(
                client, token: token, ["kind": "noop", "args": ["sleepMs": 86_400_000], "maxAttempts": 1, "timeoutMs": 5000])
            #expect(own.job["timeoutMs"] as? Int == 5000)
            let ownId = try #require(own.job["id"] as? String)
            try await app.waitForJob(ownId, state: .running, token: token)
            clock.advance(by: .seconds(6))
            let ended = try await app.waitForJob(ownId, state: .discarded, token: token)
            #expect(ended.errors.map(\.error) == ["timed out after 5s"])
            #expect(ended.timeoutMs == 5000)
        }
    }

    /// `timeoutMs` is 1 ms up to the kind's limit on the node (here 20 s), checked with the other
    /// fields, alone and in batches.
    @Test(arguments: TestEngine.available)
    func aJobsTimeoutIsBoundedByTheNodes(engine: TestEngine) async throws {
        try await withTestApp(engine, owner: "timeout-range@example.com", configure: Self.twentySeconds) { app, token in
            let client = app.client
            for value in [20_001 as Any, 0, -5, "5s", 1.5] {
                let response = try await client.json(.post, "/jobs", ["kind": "noop", "timeoutMs": value], token: token)
                #expect(response.status == .badRequest, "\(value)")
                #expect(response.code == "invalid_input", "\(value)")
                let issues = response.object["errors"] as? [[String: Any]] ?? []
                #expect(issues.map { $0["field"] as? String } == ["timeoutMs"], "\(value): \(response.text)")
            }
            // Out of range within 64 bits, beyond them, or a fraction: the node's range, in one wording.
            for value in ["20001", "0", "1e20", "-1e20", "1.5", "1e-400"] {
                let tooLong = try await client.execute(
                    uri: "/jobs", method: .post, headers: [.contentType: "application/json", .authorization: "Bearer \(token)"],
                    body: ByteBuffer(string: #"{"kind":"noop","timeoutMs":\#(value)}"#))
                let issue = (tooLong.object["errors"] as? [[String: Any]])?.first?["issue"] as? String
                #expect(issue == "must be an integer from 1 to 20000 (milliseconds; at most the job timeout of its kind, 20s)", "\(value)")
            }
            let batch = try await client.json(
                .post, "/jobs/batch", ["jobs": [["kind": "noop", "timeoutMs": 20_000], ["kind": "noop", "timeoutMs": 30_000]]], token: token)
            #expect(batch.status == .badRequest)
            #expect((batch.object["errors"] as? [[String: Any]])?.map { $0["field"] as? String } == ["jobs[1].timeoutMs"])
            let longest = try await client.json(
                .post, "/jobs", ["kind": "noop", "timeoutMs": 20_000, "runAt": "2099-01-01T00:00:00Z"], token: token)
            #expect(longest.status == .created)
            #expect(longest.object["timeoutMs"] as? Int == 20_000)
        }
    }

    /// A kind may declare its own limit, longer or shorter than the node's, or none (pipeline
    /// runs): the worker applies it, a job's `timeoutMs` is bounded by it, and a kind without a
    /// limit is not cancelled when the node's passes.
    @Test(arguments: TestEngine.available)
    func aKindsOwnTimeoutReplacesTheNodes(engine: TestEngine) async throws {
        let clock = TestClock()
        let gate = Gate()
        let unboundedCancelled = Observed(false)
        try await withTestApp(
            engine, clock: clock, configure: Self.twentySeconds, runServices: true,
            prepare: { components in
                components.jobs.register(TwoSecondKind.self) { _, _ in try await gate.wait() }
                components.jobs.register(UnboundedKind.self) { _, _ in
                    try await withTaskCancellationHandler {
                        try await gate.wait()
                    } onCancel: {
                        unboundedCancelled.update { $0 = true }
                    }
                }
            }
        ) { app in
            defer { gate.open() }
            let queue = app.components.jobs
            let tenant = UUIDv7.make()
            #expect(queue.kindTimeout("noop") == .seconds(20))
            #expect(queue.kindTimeout(TwoSecondKind.kind) == .seconds(2))
            #expect(queue.kindTimeout(UnboundedKind.kind) == nil)
            // The pipeline kinds wait for a pipeline slot inside their attempts and bound their
            // work with their own limits.
            #expect(queue.kindTimeout("pipeline.run") == nil)
            #expect(queue.kindTimeout("pipeline.chunk") == nil)

            var longer = try JobRequest(UnboundedKind())
            longer.timeoutMs = 86_400_000
            longer.runAt = 4_102_444_800_000
            let (asked, _) = try await queue.enqueue(longer, tenantId: tenant, createdBy: nil)
            #expect(queue.timeout(for: asked) == .seconds(86_400))
            var pastKind = try JobRequest(TwoSecondKind())
            pastKind.timeoutMs = 2001
            await #expect(throws: AppError.self) { _ = try await queue.enqueue(pastKind, tenantId: tenant, createdBy: nil) }

            let unbounded = try await queue.enqueue(UnboundedKind(), tenantId: tenant, createdBy: nil).job
            var once = try JobRequest(TwoSecondKind())
            once.maxAttempts = 1
            let short = try await queue.enqueue(once, tenantId: tenant, createdBy: nil).job
            try await queue.waitForJob(unbounded.id, state: .running)
            try await queue.waitForJob(short.id, state: .running)
            clock.advance(by: .seconds(25))
            let ended = try await queue.waitForJob(short.id, state: .discarded)
            guard case .array(let errors) = JSONValue(text: ended.errors) else { throw TestSetupError("errors are not a list: \(ended.errors)") }
            #expect(errors.map { $0["error"]?.string } == ["timed out after 2s"])
            // The pass that cancelled the short job, past the node's 20 s too, cancelled nothing
            // else: a cancellation handler runs as its task is cancelled, before any outcome is
            // written.
            #expect(!unboundedCancelled.value)
            let still = try #require(try await queue.store.jobs(ids: [unbounded.id]).first)
            #expect(still.state == .running)
            #expect(still.errors == "[]")
        }
    }
}

/// A kind with a time limit of its own, shorter than the tests' node's.
struct TwoSecondKind: JobArguments {
    static let kind = "test.two-seconds"
    static let timeout = JobTimeout.fixed(.seconds(2))
}

/// A kind without a time limit, as pipeline runs.
struct UnboundedKind: JobArguments {
    static let kind = "test.unbounded"
    static let timeout = JobTimeout.unlimited
}
