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
    private static let installed = Mutex<(any Tracer)?>(nil)

    /// Whether a tracer is installed in this process (set once, by the bootstrap).
    package static var isEnabled: Bool { enabled.load(ordering: .relaxed) }

    /// The installed tracer, kept here because `InstrumentationSystem.tracer` looks it up with
    /// a dynamic cast on every call, too slow for the per-request and per-statement paths.
    package static var tracer: (any Tracer)? {
        guard isEnabled else { return nil }
        return installed.withLock { $0 }
    }

    /// Records the process's tracer, just installed with `InstrumentationSystem.bootstrap`;
    /// called by the bootstrap only.
    package static func markEnabled(tracer: any Tracer) {
        installed.withLock { $0 = tracer }
        enabled.store(true, ordering: .relaxed)
    }

    /// The recording span of the current task, when tracing is on and one is active.
    package static var currentSpan: (any Span)? {
        guard isEnabled, let context = ServiceContext.current, let tracer else { return nil }
        return tracer.activeSpan(identifiedBy: context)
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
