import CairnAccounts
import CairnHTTP
import CairnServer
import CairnStorage
import CairnTestSupport
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import SQLKit
import Testing

@testable import CairnJobs

/// A job kind whose handler reports progress one step at a time, each step only once the test
/// allows it: a test lets a step through after it saw the previous one, so no change can be
/// coalesced with another however slow the machine.
final class Steps: Sendable {
    /// The kind's (empty) arguments.
    struct Stepped: JobArguments {
        static let kind = "test.stepped"
    }
    private let allowed = Observed(0)

    func allow(_ step: Int) {
        allowed.update { $0 = max($0, step) }
    }

    /// Registers the kind: `count` progress reports, then the end, each once allowed (so
    /// step `count + 1` lets the job succeed).
    func register(on jobs: JobQueue, count: Int) {
        jobs.register(Stepped.self) { _, context in
            for step in 1...count {
                try await self.allowed.wait("step \(step) allowed", timeout: .seconds(3600)) { $0 >= step }
                try await context.reportProgress(.object(["step": .number(Double(step))]))
            }
            try await self.allowed.wait("the end allowed", timeout: .seconds(3600)) { $0 > count }
        }
    }

    /// The steps reported by the running job's events in `events`, in order (the final event
    /// repeats the last step's progress).
    static func steps(_ events: [ServerSentEvent]) -> [Int] {
        events.compactMap { event in
            guard let job = try? event.decode(JobBody.self), job.state == "running" else { return nil }
            return job.progress?["step"]?.int
        }
    }

    /// Whether `events` hold step `step`'s progress.
    static func shows(_ step: Int, _ events: [ServerSentEvent]) -> Bool {
        steps(events).contains(step)
    }

    /// Lets the job take steps 1 to `count` one at a time, each once `stream` (`what`) shows
    /// the one before, then lets it end.
    func walk(_ count: Int, shownOn stream: EventStreamReader, _ what: String) async throws {
        for step in 1...count {
            allow(step)
            try await stream.wait("step \(step) on \(what)") { Steps.shows(step, $0.events) }
        }
        allow(count + 1)
    }

    /// Registers `email` on `node`, enqueues a stepped job of theirs on `jobs` (the queue of
    /// the node that runs it), and opens the job's event stream on `node`.
    static func follow(_ email: String, on node: TestApp, enqueuedOn jobs: JobQueue) async throws -> (
        id: String, token: String, stream: EventStreamReader
    ) {
        let (user, tokens) = try await node.client.registerAndLogin(email: email)
        let id = try await jobs.enqueue(Stepped(), tenantId: user.tenantId, createdBy: user.id).job.id
        let stream = try await EventStreamReader(
            url: "\(node.baseURL)/jobs/\(id)/events", headers: ["Authorization: Bearer \(tokens.accessToken)"])
        return (id, tokens.accessToken, stream)
    }
}

@Suite("Jobs: live status over Server-Sent Events")
struct JobEventsTests {
    @Test(arguments: TestEngine.available)
    func theStreamFollowsAJobToItsEndAndResumesAfterLastEventID(engine: TestEngine) async throws {
        let steps = Steps()
        try await withTestApp(engine, mode: .live, prepare: { steps.register(on: $0.jobs, count: 3) }) { app in
            let (id, token, stream) = try await Steps.follow("sse@example.com", on: app, enqueuedOn: app.components.jobs)
            defer { stream.stop() }
            try await steps.walk(3, shownOn: stream, "the stream")
            let received = try await stream.wait("the stream's end after the final state") { $0.ended }
            #expect(received.text.hasPrefix("retry: 2000\n\n"))
            let events = received.events
            let jobs = try events.map { try $0.decode(JobBody.self) }
            #expect(events.allSatisfy { $0.event == "job" })
            #expect(jobs.allSatisfy { $0.id == id })
            let versions = events.compactMap { $0.id.flatMap(Int.init) }
            #expect(versions.count == events.count && versions == versions.sorted() && Set(versions).count == versions.count)
            #expect(Steps.steps(events) == [1, 2, 3], "every progress report, in order")
            #expect(jobs.last?.state == "succeeded")

            // Reconnecting after the last event: nothing new, the stream just ends.
            let last = versions.last!
            let resumed = try await app.client.execute(
                uri: "/jobs/\(id)/events", method: .get,
                headers: [.authorization: "Bearer \(token)", HTTPField.Name("Last-Event-ID")!: String(last)])
            #expect(resumed.status == .ok)
            #expect(resumed.headers[.contentType] == "text/event-stream")
            #expect(ServerSentEvent.parse(resumed.text).isEmpty)
            // Reconnecting from an earlier event: the current state once.
            let earlier = try await app.client.execute(
                uri: "/jobs/\(id)/events", method: .get,
                headers: [.authorization: "Bearer \(token)", HTTPField.Name("Last-Event-ID")!: String(versions.first!)])
            #expect(ServerSentEvent.parse(earlier.text).map(\.id) == [String(last)])
            // Reconnecting with an id past every version the job had: the current state once.
            let ahead = try await app.client.execute(
                uri: "/jobs/\(id)/events", method: .get,
                headers: [.authorization: "Bearer \(token)", HTTPField.Name("Last-Event-ID")!: String(last + 1000)])
            #expect(ServerSentEvent.parse(ahead.text).map(\.id) == [String(last)])
            // A Last-Event-ID that is no event id is refused, as the notification stream
            // refuses it (it was read as 0 and replayed the current state).
            for garbage in ["abc", "-1", "1.5", "3 4", "99999999999999999999999"] {
                let refused = try await app.client.execute(
                    uri: "/jobs/\(id)/events", method: .get,
                    headers: [.authorization: "Bearer \(token)", HTTPField.Name("Last-Event-ID")!: garbage])
                #expect(refused.status == .badRequest, "\(garbage): \(refused.text)")
                #expect(refused.code == "invalid_input", "\(garbage)")
                #expect(refused.headers[.contentType] == "application/problem+json", "\(garbage)")
                let fields = (refused.object["errors"] as? [[String: Any]] ?? []).compactMap { $0["field"] as? String }
                #expect(fields == ["Last-Event-ID"], "\(garbage)")
            }

            let stranger = try await app.client.registerAndLogin(email: "sse2@example.com").tokens.accessToken
            #expect(try await app.client.json(.get, "/jobs/\(id)/events", token: stranger).status == .notFound)
        }
    }
}

@Suite("Jobs: event streams end with their credential")
struct JobEventsCredentialTests {
    /// A job that stays queued (no worker runs), watched from two sessions of one user: the
    /// logged-out session's stream ends (issue 13), the other's goes on until its access token
    /// expires on the node's clock.
    @Test(arguments: TestEngine.available)
    func aStreamEndsAtLogoutAndAtTheTokensExpiry(engine: TestEngine) async throws {
        let clock = TestClock()
        let steps = Steps()
        try await withTestApp(engine, mode: .live, clock: clock, runServices: false, prepare: { steps.register(on: $0.jobs, count: 1) }) { app in
            let (user, first) = try await app.client.registerAndLogin(email: "sse-logout@example.com")
            let second = try await app.client.login(email: "sse-logout@example.com", password: "correct horse battery")
            let id = try await app.components.jobs.enqueue(Steps.Stepped(), tenantId: user.tenantId, createdBy: user.id).job.id
            let url = "\(app.baseURL)/jobs/\(id)/events"
            let loggedOut = try await EventStreamReader(url: url, headers: ["Authorization: Bearer \(first.accessToken)"])
            defer { loggedOut.stop() }
            let other = try await EventStreamReader(url: url, headers: ["Authorization: Bearer \(second.accessToken)"])
            defer { other.stop() }
            try await loggedOut.wait("the job's first event") { !$0.events.isEmpty }
            try await other.wait("the job's first event") { !$0.events.isEmpty }

            #expect(try await app.client.json(.post, "/auth/logout", ["refreshToken": first.refreshToken]).status == .noContent)
            try await loggedOut.wait("the logged-out session's stream ending", timeout: .seconds(15)) { $0.ended }
            #expect(!other.current.ended, "the other session's stream goes on")

            // Past the 15-minute lifetime and the 60 s of clock skew token checks allow.
            clock.advance(by: .seconds(900 + 61))
            try await other.wait("the stream ending at the token's expiry", timeout: .seconds(15)) { $0.ended }
        }
    }
}

@Suite("Jobs: live status across nodes")
struct JobEventsAcrossNodesTests {
    /// Node B serves the stream, node A runs the job. Each of the job's ten progress reports is
    /// let through only once B's stream showed the previous one, and B's own subscription must
    /// hear every change A announced (the claim, ten reports, the outcome) through
    /// LISTEN/NOTIFY: B's slow fallback poll could show the steps, but never announce them.
    @Test func aStreamOnOneNodeFollowsAJobRunningOnAnother() async throws {
        guard TestEngine.available.contains(.postgres) else { return }
        let steps = Steps()
        try await withTestDatabase(.postgres) { database in
            try await withTestApp(on: database, runServices: true, prepare: { steps.register(on: $0.jobs, count: 10) }) { nodeA in
                try await withTestApp(on: database, mode: .live, runServices: false) { nodeB in
                    let heard = Observed<[String: Int]>([:])
                    let listening = Observed(false)
                    let changes = nodeB.components.jobs.events.changes(onListening: { listening.update { $0 = true } })
                    let hearing = Task {
                        for await ids in changes { heard.update { for id in ids { $0[id, default: 0] += 1 } } }
                    }
                    defer { hearing.cancel() }
                    try await listening.wait("node B listening for job changes") { $0 }

                    let (id, _, stream) = try await Steps.follow("sse-nodes@example.com", on: nodeB, enqueuedOn: nodeA.components.jobs)
                    defer { stream.stop() }
                    try await steps.walk(10, shownOn: stream, "node B's stream")
                    let events = try await stream.wait("the end of node B's stream") { $0.ended }.events
                    #expect((try? events.last?.decode(JobBody.self))?.state == "succeeded")
                    #expect(Steps.steps(events) == Array(1...10))
                    let versions = events.compactMap { $0.id.flatMap(Int.init) }
                    #expect(versions == versions.sorted())
                    try await heard.wait("node B hearing the claim, ten reports and the outcome") { $0[id, default: 0] >= 12 }
                }
            }
        }
    }
}

@Suite("Jobs: metrics")
struct JobMetricsTests {
    @Test func countersTimersAndQueueDepthAreExported() async throws {
        try await withTestApp(.sqlite, configure: { $0.jobs.rescueInterval = .milliseconds(100) }, runServices: true) { app in
            let token = try await app.client.registerAndLogin(email: "metrics@example.com").tokens.accessToken
            let created = try await app.client.json(.post, "/jobs", ["kind": "noop"], token: token)
            try await app.waitForJob(created.object["id"] as! String, state: .succeeded, token: token)
            // Counters and timers are recorded before the outcome is announced.
            let text = try await app.client.execute(uri: "/metrics", method: .get).text
            #expect(text.contains(#"cairn_jobs_enqueued_total{kind="noop"}"#))
            #expect(text.contains(#"cairn_jobs_finished_total{kind="noop",state="succeeded"}"#))
            #expect(text.contains("cairn_jobs_wait_seconds_bucket") && text.contains("cairn_jobs_run_seconds_bucket"))
            // The queue-depth gauge is written by the worker's periodic maintenance pass (every
            // 100 ms here), which announces nothing: polled.
            try await pollUntil("the queue-depth gauge") {
                try await app.client.execute(uri: "/metrics", method: .get).text.contains(#"cairn_jobs{state="succeeded"}"#)
            }
        }
    }
}

@Suite("Jobs: retention")
struct JobRetentionTests {
    @Test(arguments: TestEngine.available)
    func pruningDeletesOldFinishedJobsButKeepsDeadLettersAndRecentOnes(engine: TestEngine) async throws {
        try await withTestApp(engine, owner: "prune@example.com") { client, components, token in
            var ids: [String] = []
            for _ in 0..<3 {
                ids.append(
                    try await client.json(.post, "/jobs", ["kind": "noop", "runAt": "2099-01-01T00:00:00Z"], token: token).object["id"] as! String)
            }
            let old = WallClock.milliseconds() - 8 * 86_400_000
            let created = ids
            try await components.database.write { db in
                try await db.raw("UPDATE jobs SET state = 'succeeded', finished_at = \(bind: old) WHERE id = \(bind: created[0])").run()
                try await db.raw("UPDATE jobs SET state = 'discarded', finished_at = \(bind: old) WHERE id = \(bind: created[1])").run()
                try await db.raw(
                    "UPDATE jobs SET state = 'cancelled', finished_at = \(bind: WallClock.milliseconds()) WHERE id = \(bind: created[2])"
                )
                .run()
            }
            let deleted = try await components.jobs.store.prune(before: WallClock.milliseconds() - 7 * 86_400_000)
            #expect(deleted == 1)
            #expect(try await client.json(.get, "/jobs/\(ids[0])", token: token).status == .notFound)
            #expect(try await client.json(.get, "/jobs/\(ids[1])", token: token).status == .ok)
            #expect(try await client.json(.get, "/jobs/\(ids[2])", token: token).status == .ok)
        }
    }
}
