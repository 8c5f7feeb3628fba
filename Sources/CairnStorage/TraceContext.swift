import Foundation
import Synchronization
package import Tracing

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
        enabled.store(true, ordering: .releasing)
    }

    /// Marks a service context whose trace the sampler dropped, so the work done under it
    /// (statements, enqueues, deliveries) makes no span at all: a dropped span's children are
    /// dropped anyway (parent-based sampling, and ratio sampling by the same trace id), and
    /// asking the tracer for each one costs ids, a sampling decision and allocations on every
    /// request. The context keeps the dropped span's W3C context, so `traceparent` still goes
    /// out, flagged not sampled (W3C Trace Context §3.2.2.5).
    private enum SampledOutKey: ServiceContextKey {
        typealias Value = Bool
    }

    /// Whether work under `context` is in a trace the sampler dropped (see `SampledOutKey`).
    package static func isSampledOut(_ context: ServiceContext) -> Bool {
        context[SampledOutKey.self] ?? false
    }

    /// The context to run a span's work in: `span.context`, marked sampled-out when the span
    /// does not record.
    package static func context(for span: any Span) -> ServiceContext {
        var context = span.context
        if !span.isRecording { context[SampledOutKey.self] = true }
        return context
    }

    /// The recording span of the current task, when tracing is on and one is active.
    package static var currentSpan: (any Span)? {
        guard let tracer, let context = ServiceContext.current, !isSampledOut(context) else { return nil }
        return tracer.activeSpan(identifiedBy: context)
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
