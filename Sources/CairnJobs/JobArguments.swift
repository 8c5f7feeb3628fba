package import CairnHTTP
import Foundation
package import SQLKit

/// The typed arguments of one job kind, as swift-jobs' `JobParameters`: the value is what a
/// handler receives and what a producer enqueues, stored as the job's `args` JSON object (its
/// coding keys are the object's keys), so no code reads or builds that object by hand.
///
/// ```swift
/// struct SendWebhook: JobArguments {
///     static let kind = "notifications.webhook"
///     var deliveryId: String
/// }
/// queue.register(SendWebhook.self) { args, context in try await deliver(args.deliveryId) }
/// try await queue.enqueue(SendWebhook(deliveryId: id), tenantId: tenantId, createdBy: nil, on: db)
/// ```
package protocol JobArguments: Codable, Sendable {
    /// The kind's name, stored in the job's `kind` (e.g. `notifications.webhook`).
    static var kind: String { get }
    /// Whether `POST /jobs`, `POST /jobs/batch` and `/schedules` may create jobs of this kind
    /// (default false: only Swift code enqueues it).
    static var enqueueableOverHTTP: Bool { get }
    /// Whether, over HTTP, only owners and admins may enqueue this kind (default false).
    static var adminOnly: Bool { get }
    /// The queue a ``JobRequest`` of this kind starts with (default `default`).
    static var defaultQueue: String { get }
    /// The attempts a ``JobRequest`` of this kind starts with (default 20).
    static var defaultMaxAttempts: Int { get }
    /// How long one attempt may run before the worker cancels it and counts it as failed
    /// (retried with backoff, as any failure): by default the node's `CAIRN_JOBS_TIMEOUT`
    /// (``JobTimeout/node``). A kind whose work is bounded otherwise may declare its own.
    static var timeout: JobTimeout { get }
    /// What is wrong with `arguments`, a job's `args` object as a client or schedule gives it,
    /// each issue naming its field below `args` (`args.sleepMs`); empty when a job may carry
    /// them. Checked at enqueue time, so a bad argument is a `400`, not a discarded job. The
    /// default decodes them; a kind enqueueable over HTTP adds its ranges and unknown keys.
    static func issues(in arguments: JSONValue) -> [FieldIssue]
    /// Where schedules of this kind are managed, when another module owns them (a pipeline's
    /// own schedule is its `schedule`: `POST /pipelines`, `PATCH /pipelines/{id}`); nil (the
    /// default) for kinds `/schedules` manages. `/schedules` refuses to create such a schedule.
    static var schedulesManagedBy: String? { get }
    /// The resource that owns a schedule carrying `arguments` (`/pipelines/{id}`), for kinds
    /// with ``schedulesManagedBy``; `/schedules` shows it as `managedBy` and refuses to change
    /// or delete the schedule. Nil by default.
    static func scheduleOwner(of arguments: Self) -> String?
}

extension JobArguments {
    /// Not enqueueable over HTTP.
    package static var enqueueableOverHTTP: Bool { false }
    /// Any member may enqueue it (when it is enqueueable over HTTP at all).
    package static var adminOnly: Bool { false }
    /// The `default` queue.
    package static var defaultQueue: String { "default" }
    /// 20 attempts.
    package static var defaultMaxAttempts: Int { 20 }
    /// The node's limit.
    package static var timeout: JobTimeout { .node }
    /// Schedules of the kind are `/schedules`' own.
    package static var schedulesManagedBy: String? { nil }
    /// No owner.
    package static func scheduleOwner(of arguments: Self) -> String? { nil }

    /// The arguments decode as `Self`, or one issue naming the field that does not.
    package static func issues(in arguments: JSONValue) -> [FieldIssue] {
        let text = arguments.text
        do {
            _ = try JSONDecoder().decode(Self.self, from: Data(text.utf8))
            return []
        } catch let error as DecodingError {
            return [Self.issue(error, in: text)]
        } catch {
            return [FieldIssue(field: "args", issue: "are not valid arguments of \(kind)")]
        }
    }

    /// A decoding error as an issue on its field below `args` (`args.items[2]`).
    static func issue(_ error: DecodingError, in text: String) -> FieldIssue {
        func field(_ path: [any CodingKey]) -> String {
            path.reduce("args") { text, key in
                if let index = key.intValue, key.stringValue.hasPrefix("Index ") { return text + "[\(index)]" }
                return text + "." + key.stringValue
            }
        }
        switch error {
        case .keyNotFound(let key, let context): return FieldIssue(field: field(context.codingPath + [key]), issue: "is required")
        case .valueNotFound(let type, let context): return FieldIssue(field: field(context.codingPath), issue: "must be a \(type), not null")
        case .typeMismatch(let type, let context):
            let expected = type is [String: Any].Type ? "JSON object" : type is [Any].Type ? "JSON array" : "\(type)"
            return FieldIssue(field: field(context.codingPath), issue: "must be a \(expected)")
        case .dataCorrupted(let context):
            return FieldIssue(field: field(context.codingPath), issue: describe(error, in: text))
        @unknown default:
            return FieldIssue(field: "args", issue: "are not valid arguments of \(kind)")
        }
    }

    /// The arguments as the JSON object stored in the job's `args`.
    /// - Throws: `EncodingError` when a value has no JSON form (a non-finite number).
    func jsonValue() throws -> JSONValue {
        try JSONDecoder().decode(JSONValue.self, from: JSONEncoder().encode(self))
    }

    /// Decodes a job's stored `args` text.
    /// - Throws: ``PermanentJobError`` naming the kind and what is wrong (a missing or
    ///   mistyped field, text that is not JSON): a document that does not decode now never will.
    static func decode(storedArguments text: String) throws -> Self {
        do {
            return try JSONDecoder().decode(Self.self, from: Data(text.utf8))
        } catch let error as DecodingError {
            throw PermanentJobError("the arguments of this \(kind) job are malformed: \(Self.describe(error, in: text))")
        } catch {
            throw PermanentJobError("the arguments of this \(kind) job are malformed: \(error)")
        }
    }

    /// One line saying what is wrong with `text`, with the field's path (`data.items[2]`);
    /// never the document itself.
    static func describe(_ error: DecodingError, in text: String) -> String {
        func place(_ path: [any CodingKey]) -> String {
            var text = ""
            for key in path {
                if let index = key.intValue, key.stringValue.hasPrefix("Index ") {
                    text += "[\(index)]"
                } else {
                    text += (text.isEmpty ? "" : ".") + key.stringValue
                }
            }
            return text.isEmpty ? "the document" : "`\(text)`"
        }
        switch error {
        case .keyNotFound(let key, let context):
            return "\(place(context.codingPath + [key])) is missing"
        case .valueNotFound(let type, let context):
            if context.codingPath.isEmpty { return "the document is null, not a JSON object" }
            return "\(place(context.codingPath)) is null, not a \(type)"
        case .typeMismatch(let type, let context):
            let expected = type is [String: Any].Type ? "JSON object" : type is [Any].Type ? "JSON array" : "\(type)"
            return "\(place(context.codingPath)) is not a \(expected)"
        case .dataCorrupted(let context):
            if context.codingPath.isEmpty {
                // Foundation reports a number that does not fit its type (1.5 for an Int) as
                // invalid JSON, without the field: tell the two apart by parsing alone.
                let parses = (try? JSONSerialization.jsonObject(with: Data(text.utf8), options: .fragmentsAllowed)) != nil
                return parses ? "a number does not fit its field's type" : "the document is not valid JSON"
            }
            return "\(place(context.codingPath)) is invalid (\(context.debugDescription))"
        @unknown default:
            return "\(error)"
        }
    }
}

extension JobRequest {
    /// A request for a job of `Arguments.kind` carrying `arguments`, on the kind's default
    /// queue with its default attempts; change the other fields (`runAt`, `uniqueKey`, …) before
    /// enqueueing it.
    /// - Throws: `EncodingError` when a value has no JSON form (a non-finite number).
    package init<Arguments: JobArguments>(_ arguments: Arguments) throws {
        self.init(kind: Arguments.kind, args: try arguments.jsonValue())
        queue = Arguments.defaultQueue
        maxAttempts = Arguments.defaultMaxAttempts
    }
}

extension JobQueue {
    /// Registers the handler of the kind `Arguments.kind`, with the kind's HTTP options. Each
    /// attempt decodes the job's stored arguments and passes them to `handler`; a document that
    /// does not decode discards the job at once (``PermanentJobError``) without calling it.
    /// Modules register their kinds in their `registerJobs(on:)`, called once by the
    /// composition root.
    ///
    /// `abandoned`, if given, runs in the very transaction that ends a job of the kind without
    /// success: cancelled (`POST /jobs/{id}/cancel`, before or while it runs), or discarded (a
    /// permanent failure, its last attempt failed, or its node died during its last attempt),
    /// with the job in its new state. The kind settles there what the job stood for (a delivery
    /// record that would otherwise wait for good), and rolls the change back by throwing. Not
    /// called for arguments that do not decode.
    package func register<Arguments: JobArguments>(
        _ type: Arguments.Type, handler: @escaping @Sendable (_ arguments: Arguments, _ context: JobContext) async throws -> Void,
        abandoned: (@Sendable (_ arguments: Arguments, _ job: Job, _ db: any SQLDatabase) async throws -> Void)? = nil
    ) {
        var hook: (@Sendable (Job, any SQLDatabase) async throws -> Void)?
        if let abandoned {
            hook = { @Sendable (job: Job, db: any SQLDatabase) async throws in
                guard let arguments = try? Arguments.decode(storedArguments: job.args) else { return }
                try await abandoned(arguments, job, db)
            }
        }
        let schedules = Arguments.schedulesManagedBy.map { place in
            ScheduleOwnership(place: place) { args in
                (try? Arguments.decode(storedArguments: args.text)).flatMap { Arguments.scheduleOwner(of: $0) } ?? place
            }
        }
        register(
            kind: Arguments.kind, enqueueableOverHTTP: Arguments.enqueueableOverHTTP, adminOnly: Arguments.adminOnly,
            check: Arguments.issues(in:), abandoned: hook, schedules: schedules, timeout: Arguments.timeout
        ) { context in
            try await handler(try Arguments.decode(storedArguments: context.job.args), context)
        }
    }

    /// ``register(_:handler:abandoned:)`` for a handler that is a method of `owner`, which the
    /// queue does not keep alive (the owner holds the queue): a job of the kind that starts
    /// after `owner` is gone fails with the error `gone` makes.
    package func register<Arguments: JobArguments, Owner: AnyObject & Sendable>(
        _ type: Arguments.Type, on owner: Owner, whenGone gone: @escaping @Sendable () -> any Error,
        handler: @escaping @Sendable (Owner, _ arguments: Arguments, _ context: JobContext) async throws -> Void,
        abandoned: (@Sendable (_ arguments: Arguments, _ job: Job, _ db: any SQLDatabase) async throws -> Void)? = nil
    ) {
        register(
            type,
            handler: { [weak owner] arguments, context in
                guard let owner else { throw gone() }
                try await handler(owner, arguments, context)
            }, abandoned: abandoned)
    }

    /// Enqueues a job of `Arguments.kind` carrying `arguments` on the kind's default queue and
    /// attempts (build a ``JobRequest`` from the arguments to set other fields). With `db` (the
    /// caller's open transaction), the job commits or rolls back with the caller's own rows.
    /// - Returns: the job and whether it is new (false: an unfinished job with the same unique key).
    /// - Throws: 400 `invalid_input` (kind not registered, arguments over 64 KiB), 429
    ///   `rate_limited` (pending cap).
    @discardableResult
    package func enqueue<Arguments: JobArguments>(_ arguments: Arguments, tenantId: String, createdBy: String?, on db: (any SQLDatabase)? = nil)
        async throws -> (job: Job, created: Bool)
    {
        try await enqueue(JobRequest(arguments), tenantId: tenantId, createdBy: createdBy, on: db)
    }
}
