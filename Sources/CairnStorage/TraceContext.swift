import Foundation
import Synchronization
package import Tracing
package import W3CTraceContext

/// Helpers every module shares for OpenTelemetry tracing (issue 16): whether a tracer is
/// installed, the current span, and the W3C Trace Context (`traceparent`/`tracestate`)
/// of the current span as text a job row can carry to another node.
///
/// Spans are made with swift-distributed-tracing's `withSpan`; the process's tracer is
/// bootstrapped once by the composition root (`CairnServer`'s `TracingBootstrap`). Without it,
/// every call here is a cheap no-op, so in-process tests run untraced.
package enum TraceContext {
    private static let enabled = Atomic<Bool>(false)
    // Written once by `markEnabled` before `enabled` is set (release), read only after `enabled`
    // is seen set (acquire): no lock on the per-request and per-statement paths.
    nonisolated(unsafe) private static var installed: (any Tracer)?
    // The same tracer when it records finished spans (written and read as `installed` is).
    nonisolated(unsafe) private static var recorder: (any FinishedSpanRecorder)?
    // The same tracer when it decides a root's sampling before making a span (ditto).
    nonisolated(unsafe) private static var rootSampler: (any RootSampler)?

    /// Whether a tracer is installed in this process (set once, by the bootstrap).
    package static var isEnabled: Bool { enabled.load(ordering: .acquiring) }

    /// The installed tracer, kept here because `InstrumentationSystem.tracer` looks it up with
    /// a dynamic cast on every call, too slow for the per-request and per-statement paths.
    package static var tracer: (any Tracer)? {
        guard isEnabled else { return nil }
        return installed
    }

    /// Records the process's tracer, just installed with `InstrumentationSystem.bootstrap`;
    /// called once, by the bootstrap only (a second call is ignored).
    package static func markEnabled(tracer: any Tracer) {
        guard !isEnabled else { return }
        installed = tracer
        recorder = tracer as? any FinishedSpanRecorder
        rootSampler = tracer as? any RootSampler
        enabled.store(true, ordering: .releasing)
    }

    /// The installed tracer when it can record a span after it ran (see
    /// ``FinishedSpanRecorder``).
    package static var finishedSpanRecorder: (any FinishedSpanRecorder)? {
        guard isEnabled else { return nil }
        return recorder
    }

    /// The installed tracer when it decides a new trace's sampling before any span is made
    /// (see ``RootSampler``).
    package static var installedRootSampler: (any RootSampler)? {
        guard isEnabled else { return nil }
        return rootSampler
    }

    /// Marks a service context whose trace the sampler dropped, so the work done under it
    /// (statements, enqueues, deliveries) makes no span at all: a dropped span's children are
    /// dropped anyway (parent-based sampling, and ratio sampling by the same trace id), and
    /// asking the tracer for each one would cost allocations on every request. The value is the
    /// dropped span's W3C context when the tracer made one, so `traceparent` still goes out,
    /// flagged not sampled (W3C Trace Context §3.2.2.5).
    private enum SampledOutKey: ServiceContextKey {
        typealias Value = DroppedSpan
    }

    /// What a context says of a span the sampler dropped.
    private struct DroppedSpan: Sendable {
        let traceContext: W3CTraceContext.TraceContext?
    }

    /// Whether work under `context` is in a trace the sampler dropped (see `SampledOutKey`).
    package static func isSampledOut(_ context: ServiceContext) -> Bool {
        context[SampledOutKey.self] != nil
    }

    /// `context` marked as the context of a span the sampler dropped, whose W3C context (trace
    /// id, its own span id, flags without `sampled`, the caller's `tracestate`) is
    /// `traceContext`: what the tracer propagates and logs for it.
    package static func sampledOut(_ context: ServiceContext, as traceContext: W3CTraceContext.TraceContext) -> ServiceContext {
        var context = context
        context[SampledOutKey.self] = DroppedSpan(traceContext: traceContext)
        return context
    }

    /// The W3C context of the dropped span `context` belongs to, when the tracer made one.
    package static func droppedSpan(in context: ServiceContext) -> W3CTraceContext.TraceContext? {
        context[SampledOutKey.self]?.traceContext
    }

    /// The span whose work runs in a context made by ``context(for:)``, when it records.
    /// Kept in the context itself because the tracer's own lookup (`activeSpan(identifiedBy:)`)
    /// takes one process-wide lock and hashes the span context, on every statement.
    private enum RecordingSpanKey: ServiceContextKey {
        typealias Value = any Span
    }

    /// The context to run a span's work in: `span.context`, marked sampled-out when the span
    /// does not record, and naming the span when it does (see ``currentSpan``).
    package static func context(for span: any Span) -> ServiceContext {
        var context = span.context
        if span.isRecording {
            context[RecordingSpanKey.self] = span
        } else if !isSampledOut(context) {
            context[SampledOutKey.self] = DroppedSpan(traceContext: nil)
        }
        return context
    }

    /// The recording span of the current task, when tracing is on and one is active: the
    /// innermost span Cairn made (request, job attempt, statement…) that has not ended. Work
    /// that outlives its span (a stream after its request's handler) has none.
    package static var currentSpan: (any Span)? {
        guard isEnabled, let context = ServiceContext.current else { return nil }
        return activeSpan(in: context)
    }

    /// The span ``context(for:)`` put in `context`, while it records (not ended).
    package static func activeSpan(in context: ServiceContext) -> (any Span)? {
        guard let span = context[RecordingSpanKey.self], span.isRecording else { return nil }
        return span
    }

    /// Runs `body` in a new span named `operationName`, a child of `context` (default: the
    /// current one), ended when `body` returns and recording what it throws; the span's context
    /// is current while `body` runs.
    ///
    /// Like swift-distributed-tracing's `withSpan`, with two shortcuts on hot paths: with no
    /// tracer installed, or under a trace the sampler dropped, no span is made and `body` gets a
    /// no-op span (its attributes are ignored); the name is only built when a span is made.
    /// - Throws: what `body` throws.
    package static func withSpan<T, E: Error>(
        _ operationName: @autoclosure () -> String, context: ServiceContext? = nil, ofKind kind: SpanKind = .internal,
        isolation: isolated (any Actor)? = #isolation, _ body: (any Span) async throws(E) -> T
    ) async throws(E) -> T {
        guard let tracer else { return try await body(NoOpTracer.NoOpSpan(context: .topLevel)) }
        let parent = context ?? ServiceContext.current ?? .topLevel
        if isSampledOut(parent) { return try await body(NoOpTracer.NoOpSpan(context: parent)) }
        let span: any Span = tracer.startSpan(operationName(), context: parent, ofKind: kind)
        defer { span.end() }
        // `withValue` rethrows untyped; carrying the outcome keeps `E`.
        let outcome: Result<T, E> = await ServiceContext.$current.withValue(Self.context(for: span)) {
            do throws(E) { return .success(try await body(span)) } catch { return .failure(error) }
        }
        if case .failure(let error) = outcome { span.recordError(error) }
        return try outcome.get()
    }

    /// Sets a string attribute on the current span, if any (the tenant id of a request, …).
    package static func setAttribute(_ key: String, _ value: String) {
        currentSpan?.attributes[key] = value
    }

    /// The current span's W3C Trace Context headers (`traceparent`, and `tracestate` when
    /// there is one), empty when tracing is off or no span is active.
    package static func headers() -> [(String, String)] {
        guard let tracer, let context = ServiceContext.current else { return [] }
        var carrier: [String: String] = [:]
        tracer.inject(context, into: &carrier, using: DictionaryInjector())
        return carrier.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
    }

    /// The current span's context as stored text (a JSON object of the W3C headers), for a
    /// row whose work continues elsewhere (a job); nil when there is nothing to carry.
    package static func serialized() -> String? {
        let headers = headers()
        guard !headers.isEmpty else { return nil }
        let object = Dictionary(headers, uniquingKeysWith: { $1 })
        guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) else { return nil }
        return String(decoding: data, as: UTF8.self)
    }

    /// The service context stored by ``serialized()``, to parent work on it: `.topLevel` when
    /// `text` is nil, malformed or tracing is off.
    package static func context(from text: String?) -> ServiceContext {
        var context = ServiceContext.topLevel
        guard let tracer, let text, let data = text.data(using: .utf8),
            let object = try? JSONSerialization.jsonObject(with: data) as? [String: String]
        else { return context }
        tracer.extract(object, into: &context, using: DictionaryExtractor())
        return context
    }
}

/// A tracer that decides a new trace's head sampling before it makes any span, so that a request
/// the sampler drops (nine in ten at a 10 % ratio) costs no span object, no tracer call through
/// an existential and no second context copy: only the one context its work runs in.
package protocol RootSampler: Sendable {
    /// Draws the sampling decision for a new trace (no caller's context, no parent span).
    func decideRoot() -> RootDecision
}

/// A new trace's sampling decision (``RootSampler/decideRoot()``).
package enum RootDecision: Sendable {
    /// Dropped: run the work in this context, a dropped span's W3C context marked sampled out
    /// (see ``TraceContext/sampledOut(_:as:)``); no span is made.
    case dropped(ServiceContext)
    /// Recorded: start the root span with this context as its parent; the tracer honours the
    /// decision already drawn instead of drawing again.
    case recorded(ServiceContext)
}

/// A tracer that records a leaf span after it ran: a span no other span descends from and whose
/// context nobody reads while it runs (a database statement), so the span object is made later,
/// off the request path, in a batch with others (`CairnServer`'s `BatchedEndTracer`).
package protocol FinishedSpanRecorder: Sendable {
    /// Records a span named `operationName` of `kind`, a child of the span of `parent`, that ran
    /// from `start` to `end` (nanoseconds since the epoch) with `attributes`, and failed with
    /// `error` when there is one (recorded, and the span's status set to error).
    func recordFinishedSpan(
        _ operationName: String, parent: ServiceContext, kind: SpanKind, start: UInt64, end: UInt64, attributes: SpanAttributes,
        error: (any Error)?)
}

extension TraceContext {
    /// The operation (first keyword, upper-cased) and the plain table name a statement works
    /// on, read from its text without parsing it. Words are separated by white space, `(` and
    /// `,`; only the words up to the table are read (a span's name must not cost a pass over a
    /// long statement).
    package static func statementName(_ sql: String) -> (operation: String, collection: String?) {
        var words = Words(sql)
        guard let first = words.next() else { return ("SQL", nil) }
        let operation = first.uppercased()
        let marker: String? =
            switch operation {
            case "SELECT", "DELETE": "FROM"
            case "INSERT": "INTO"
            case "UPDATE": "UPDATE"
            default: nil
            }
        guard let marker else { return (operation, nil) }
        var found = operation == marker
        while !found, let word = words.next() {
            found = word.utf8.elementsEqual(marker.utf8) { ($0 >= 0x61 && $0 <= 0x7A ? $0 - 0x20 : $0) == $1 }
        }
        // `FROM (SELECT …)` reads from a subquery, not a table.
        guard found, !words.opensParenthesis(), let word = words.next() else { return (operation, nil) }
        let table = word.trimmingCharacters(in: CharacterSet(charactersIn: "\"`"))
        guard !table.isEmpty, table.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) else { return (operation, nil) }
        return (operation, table)
    }

    /// The words of a statement, one at a time.
    private struct Words {
        let text: String
        var position: String.Index

        init(_ text: String) {
            self.text = text
            self.position = text.utf8.startIndex
        }

        private static func isSeparator(_ byte: UInt8) -> Bool {
            byte == 0x20 || byte == 0x0A || byte == 0x0D || byte == 0x09 || byte == 0x28 || byte == 0x2C
        }

        /// Whether the next character that is not white space is `(`.
        func opensParenthesis() -> Bool {
            let bytes = text.utf8
            var index = position
            while index < bytes.endIndex, [0x20, 0x0A, 0x0D, 0x09].contains(bytes[index]) { bytes.formIndex(after: &index) }
            return index < bytes.endIndex && bytes[index] == 0x28
        }

        mutating func next() -> Substring? {
            let bytes = text.utf8
            while position < bytes.endIndex, Self.isSeparator(bytes[position]) { bytes.formIndex(after: &position) }
            guard position < bytes.endIndex else { return nil }
            let start = position
            while position < bytes.endIndex, !Self.isSeparator(bytes[position]) { bytes.formIndex(after: &position) }
            return text[start..<position]
        }
    }
}

/// Writes propagation headers into a `[String: String]` (lower-case names, as W3C sends them).
package struct DictionaryInjector: Injector {
    /// Creates the injector.
    package init() {}

    /// Sets `key` to `value` in `carrier`.
    package func inject(_ value: String, forKey key: String, into carrier: inout [String: String]) {
        carrier[key.lowercased()] = value
    }
}

/// Reads propagation headers from a `[String: String]` (names matched case-insensitively).
package struct DictionaryExtractor: Extractor {
    /// Creates the extractor.
    package init() {}

    /// The value of `key` in `carrier`, if any.
    package func extract(key: String, from carrier: [String: String]) -> String? {
        carrier[key] ?? carrier[key.lowercased()]
    }
}
