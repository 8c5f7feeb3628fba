import CairnHTTP
import CairnServer
import CairnStorage
import CairnTestSupport
import Foundation
import HTTPTypes
import HummingbirdTesting
import SQLKit
import Synchronization
import Testing

@testable import CairnJobs

/// Typed arguments with every shape a kind uses: strings, numbers, an optional, an array and
/// free-form JSON.
private struct Sample: JobArguments, Equatable {
    static let kind = "test.sample"
    var deliveryId: String
    var count: Int
    var note: String?
    var tags: [String]
    var data: JSONValue
}

/// A kind with its own queue and attempts.
private struct Tuned: JobArguments {
    static let kind = "test.tuned"
    static let defaultQueue = "tuned"
    static let defaultMaxAttempts = 3
    static let enqueueableOverHTTP = true
    static let adminOnly = true
}

private let sample = Sample(
    deliveryId: "d-1", count: 3, note: nil, tags: ["a", "b"], data: .object(["nested": .array([.number(1), .bool(true), .null])]))

/// The stored form of `sample`: the same object a handler once read key by key.
private let sampleText = #"{"count":3,"data":{"nested":[1,true,null]},"deliveryId":"d-1","tags":["a","b"]}"#

@Suite("Jobs: typed arguments")
struct JobArgumentsTests {
    @Test func argumentsRoundTripThroughTheStoredJSON() throws {
        let request = try JobRequest(sample)
        #expect(request.kind == "test.sample")
        #expect(request.queue == "default")
        #expect(request.maxAttempts == 20)
        #expect(request.args.text == sampleText)
        #expect(try Sample.decode(storedArguments: request.args.text) == sample)
        var noted = sample
        noted.note = "hello"
        #expect(try Sample.decode(storedArguments: JobRequest(noted).args.text) == noted)
        // Keys a kind does not know are ignored, as a handler reading keys ignored them.
        let extra = #"{"count":3,"data":{"nested":[1,true,null]},"deliveryId":"d-1","tags":["a","b"],"later":1}"#
        #expect(try Sample.decode(storedArguments: extra) == sample)
    }

    @Test func aKindsOptionsSetItsRequestsAndItsRegistration() throws {
        let request = try JobRequest(Tuned())
        #expect(request.args.text == "{}")
        #expect(request.queue == "tuned")
        #expect(request.maxAttempts == 3)
        #expect(Sample.enqueueableOverHTTP == false && Sample.adminOnly == false)
    }

    @Test(arguments: [
        (#"{"count":3,"tags":[],"data":{}}"#, "`deliveryId` is missing"),
        (#"{"deliveryId":5,"count":3,"tags":[],"data":{}}"#, "`deliveryId` is not a String"),
        (#"{"deliveryId":null,"count":3,"tags":[],"data":{}}"#, "`deliveryId` is null, not a String"),
        (#"{"deliveryId":"d","count":3,"tags":["a",7],"data":{}}"#, "`tags[1]` is not a String"),
        (#"{"deliveryId":"d","count":3,"tags":{},"data":{}}"#, "`tags` is not a JSON array"),
        (#"["d"]"#, "the document is not a JSON object"),
        ("null", "the document is null, not a JSON object"),
        ("not json", "the document is not valid JSON"),
        ("", "the document is not valid JSON"),
    ])
    func aMalformedDocumentIsAPermanentFailureThatSaysWhatIsWrong(text: String, problem: String) {
        let error = #expect(throws: PermanentJobError.self) { try Sample.decode(storedArguments: text) }
        #expect(error?.message == "the arguments of this test.sample job are malformed: " + problem)
    }

    @Test func integralNumbersDecodeAsIntegersAndOthersAreMalformed() throws {
        // As the untyped reads did (`JSONValue.int`): 3000.0 and 3e3 are the integer 3000.
        for count in ["3000.0", "3e3"] {
            #expect(try Sample.decode(storedArguments: #"{"deliveryId":"d","count":\#(count),"tags":[],"data":{}}"#).count == 3000)
        }
        let error = #expect(throws: PermanentJobError.self) {
            try Sample.decode(storedArguments: #"{"deliveryId":"d","count":1.5,"tags":[],"data":{}}"#)
        }
        #expect(error?.message == "the arguments of this test.sample job are malformed: a number does not fit its field's type")
    }

    @Test(arguments: TestEngine.available)
    func aTypedJobIsStoredUnderItsKindAndItsHandlerGetsTheValue(engine: TestEngine) async throws {
        try await withSampleHandler(engine) { components, received in
            let tenant = UUIDv7.make()
            // Enqueued inside the caller's transaction, as modules do.
            let (job, created) = try await components.database.transaction { db in
                try await components.jobs.enqueue(sample, tenantId: tenant, createdBy: nil, on: db)
            }
            #expect(created)
            #expect(job.kind == "test.sample")
            let stored = try await components.database.read { db in
                try await db.raw("SELECT args FROM jobs WHERE id = \(bind: job.id)").first()?.decode(column: "args", as: String.self)
            }
            #expect(stored == sampleText)
            let done = try await awaitFinal(job.id, tenantId: tenant, components)
            #expect(done.state == .succeeded)
            #expect(received.values == [sample])
        }
    }

    @Test(arguments: TestEngine.available)
    func aStoredDocumentThatDoesNotDecodeIsDiscardedAtOnce(engine: TestEngine) async throws {
        try await withSampleHandler(engine) { components, calls in
            let tenant = UUIDv7.make()
            // Valid JSON of the wrong shape is refused at enqueue, naming the field…
            do {
                _ = try await components.jobs.enqueue(
                    JobRequest(kind: Sample.kind, args: .object(["deliveryId": .number(5)])), tenantId: tenant, createdBy: nil)
                Issue.record("misshapen arguments were enqueued")
            } catch let error as AppError {
                #expect(error.errors.map(\.field) == ["args.deliveryId"])
            }
            // …but an older or foreign producer might have stored it.
            let (misshapen, _) = try await components.database.transaction { db in
                let enqueued = try await components.jobs.enqueue(sample, tenantId: tenant, createdBy: nil, on: db)
                try await db.raw("UPDATE jobs SET args = '{\"deliveryId\":5}' WHERE id = \(bind: enqueued.job.id)").run()
                return enqueued
            }
            // Text that is not JSON at all (only a hand-edited row could hold it).
            let (garbled, _) = try await components.database.transaction { db in
                let enqueued = try await components.jobs.enqueue(sample, tenantId: tenant, createdBy: nil, on: db)
                try await db.raw("UPDATE jobs SET args = 'not json' WHERE id = \(bind: enqueued.job.id)").run()
                return enqueued
            }
            for (id, problem) in [(misshapen.id, "`deliveryId` is not a String"), (garbled.id, "the document is not valid JSON")] {
                let job = try await awaitFinal(id, tenantId: tenant, components)
                #expect(job.state == .discarded)
                #expect(job.attempt == 1, "a document that does not decode is not retried")
                let errors = JSONValue(text: job.errors)
                #expect(errors?[0]?["error"]?.string == "the arguments of this test.sample job are malformed: " + problem)
            }
            #expect(calls.values.isEmpty)
        }
    }

    /// Issue 20: `noop`'s arguments are checked at enqueue, over HTTP, in batches and in
    /// schedules: an unknown member, another type or a value out of range is a 400 naming it.
    @Test(arguments: TestEngine.available)
    func noopArgumentsAreCheckedWhenEnqueuedOrScheduled(engine: TestEngine) async throws {
        try await withTestApp(engine, owner: "noop-args@example.com") { client, _, token in
            func fields(_ response: TestResponse) -> [String] {
                (response.object["errors"] as? [[String: Any]] ?? []).compactMap { $0["field"] as? String }
            }
            let bad: [([String: Any], [String])] = [
                (["sleepMs": "10"], ["args.sleepMs"]), (["sleepMs": -1], ["args.sleepMs"]), (["sleepMs": 1.5], ["args.sleepMs"]),
                (["sleepMs": 86_400_001], ["args.sleepMs"]), (["checkpointEvery": 0], ["args.checkpointEvery"]),
                // At most ten checkpoints a second: each is a write and an event.
                (["checkpointEvery": 99], ["args.checkpointEvery"]),
                (["fail": "sometimes"], ["args.fail"]), (["fail": true], ["args.fail"]), (["slepMs": 5], ["args.slepMs"]),
                (["sleepMs": "x", "extra": 1], ["args.extra", "args.sleepMs"]),
            ]
            for (args, expected) in bad {
                let response = try await client.json(.post, "/jobs", ["kind": "noop", "args": args], token: token)
                #expect(response.status == .badRequest, "\(args)")
                #expect(response.object["code"] as? String == "invalid_input")
                #expect(fields(response) == expected, "\(args)")
            }
            let good = try await client.json(
                .post, "/jobs", ["kind": "noop", "args": ["sleepMs": 0, "checkpointEvery": 86_400_000, "fail": NSNull()]], token: token)
            #expect(good.status == .created, "\(good.text)")

            let batch = try await client.json(
                .post, "/jobs/batch", ["jobs": [["kind": "noop"], ["kind": "noop", "args": ["sleepMs": "soon"]]]], token: token)
            #expect(batch.status == .badRequest)
            #expect(fields(batch) == ["jobs[1].args.sleepMs"])

            let scheduled = try await client.json(
                .post, "/schedules", ["name": "s", "cron": "@daily", "kind": "noop", "args": ["fail": "often"]], token: token)
            #expect(scheduled.status == .badRequest)
            #expect(fields(scheduled) == ["args.fail"])
            let created = try await client.json(.post, "/schedules", ["name": "s", "cron": "@daily", "kind": "noop"], token: token)
            #expect(created.status == .created)
            let id = try #require(created.object["id"] as? String)
            let patched = try await client.json(.patch, "/schedules/\(id)", ["args": ["sleepMs": -5]], token: token)
            #expect(patched.status == .badRequest)
            #expect(fields(patched) == ["args.sleepMs"])
        }
    }

    @Test(arguments: TestEngine.available)
    func unknownKindsAreRefusedAtEnqueueAndDiscardedWhenStored(engine: TestEngine) async throws {
        try await withTestApp(engine, runServices: true) { _, components in
            let tenant = UUIDv7.make()
            do {
                _ = try await components.jobs.enqueue(JobRequest(kind: "test.unknown"), tenantId: tenant, createdBy: nil)
                Issue.record("an unknown kind was enqueued")
            } catch let error as AppError {
                #expect(error.code == .invalidInput)
                #expect(error.errors.map(\.field) == ["kind"])
            }
            // A row whose kind this node has no handler for (another version's kind).
            let (orphan, _) = try await components.database.transaction { db in
                let enqueued = try await components.jobs.enqueue(JobRequest(kind: "noop"), tenantId: tenant, createdBy: nil, on: db)
                try await db.raw("UPDATE jobs SET kind = 'test.unknown' WHERE id = \(bind: enqueued.job.id)").run()
                return enqueued
            }
            let job = try await awaitFinal(orphan.id, tenantId: tenant, components)
            #expect(job.state == .discarded)
            #expect(JSONValue(text: job.errors)?[0]?["error"]?.string == "no handler is registered for kind 'test.unknown'")
        }
    }
}

extension JSONValue {
    /// The element of an array, or nil.
    fileprivate subscript(index: Int) -> JSONValue? {
        if case .array(let items) = self, items.indices.contains(index) { return items[index] }
        return nil
    }
}

/// Runs `body` on a node whose job worker runs, with a handler of `Sample` jobs that records
/// the arguments it gets.
private func withSampleHandler(_ engine: TestEngine, _ body: @Sendable (CairnComponents, Recorded<Sample>) async throws -> Void)
    async throws
{
    let received = Recorded<Sample>()
    try await withTestApp(
        engine, runServices: true, prepare: { components in components.jobs.register(Sample.self) { args, _ in received.append(args) } }
    ) { _, components in
        try await body(components, received)
    }
}

/// What handlers received, in order.
private final class Recorded<Value: Sendable>: Sendable {
    private let state = Mutex<[Value]>([])
    func append(_ value: Value) { state.withLock { $0.append(value) } }
    var values: [Value] { state.withLock { $0 } }
}

/// Job `id` once it is final, awaited on the job events the queue publishes (see
/// `JobQueue.waitUntilFinished` in CairnTestSupport); `timeout` is only the deadline.
private func awaitFinal(_ id: String, tenantId: String, _ components: CairnComponents, timeout: Duration = .seconds(60)) async throws -> Job {
    try await components.jobs.waitUntilFinished(id, timeout: timeout)
}
