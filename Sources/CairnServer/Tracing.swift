package import CairnStorage
import Foundation
package import Logging
import OTel
package import ServiceLifecycle
import Synchronization
package import Tracing
import W3CTraceContext

/// The process's OpenTelemetry tracing (issue 16): spans exported with swift-otel over
/// OTLP/HTTP (protobuf), configured by the standard `OTEL_*` environment variables, which
/// swift-otel reads itself (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`,
/// `OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`,
/// `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_BSP_*`, `OTEL_EXPORTER_OTLP_TIMEOUT`, …).
///
/// Off unless an endpoint is set. Only traces: metrics stay on Prometheus and logs on
/// standard output. Spans are exported in batches off the request path, so an unreachable
/// collector costs requests nothing; each export gives up after 2 s and the flush at shutdown
/// after 3 s (unless `OTEL_EXPORTER_OTLP_TIMEOUT`/`OTEL_BSP_EXPORT_TIMEOUT` say otherwise), and
/// ``BoundedShutdown`` stops the exporter at most 5 s after the shutdown signal whatever they say
/// (however long the HTTP drain before its turn took).
package enum TracingBootstrap {
    private static let bootstrapped = Mutex(false)

    /// The thread tracing's background work runs on (see ``TracingService``), one per process,
    /// started when first used.
    package static let executor = DedicatedTaskExecutor()

    /// Whether `environment` turns tracing on: an OTLP endpoint is set, and neither
    /// `OTEL_SDK_DISABLED=true` nor `OTEL_TRACES_EXPORTER=none` turns it off.
    package static func isConfigured(_ environment: [String: String]) -> Bool {
        let endpoint = ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"].contains {
            !(environment[$0] ?? "").trimmingCharacters(in: .whitespaces).isEmpty
        }
        let disabled = environment["OTEL_SDK_DISABLED"]?.lowercased() == "true" || environment["OTEL_TRACES_EXPORTER"]?.lowercased() == "none"
        return endpoint && !disabled
    }

    /// Installs the tracer once per process when ``isConfigured(_:)``, and returns the service
    /// that exports its spans (to run first in the node's service group, so it stops last and
    /// flushes the spans of the work that drained before it); nil when tracing is off or
    /// already installed. `logger` gets swift-otel's own warnings (export failures).
    /// - Throws: ``ConfigurationError`` naming an OTLP endpoint that is not an http(s) URL
    ///   with a host (see ``checkEndpoints(_:)``), and swift-otel's configuration errors (a
    ///   malformed `OTEL_*` value), so the node refuses to start rather than run untraced
    ///   unnoticed.
    package static func bootstrap(environment: [String: String] = ProcessInfo.processInfo.environment, logger: Logger) throws
        -> (any Service)?
    {
        guard isConfigured(environment) else { return nil }
        try checkEndpoints(environment)
        let first = bootstrapped.withLock { done -> Bool in
            defer { done = true }
            return !done
        }
        guard first else { return nil }
        var configuration = OTel.Configuration.default
        configuration.serviceName = "cairn"
        configuration.metrics.enabled = false
        configuration.logs.enabled = false
        configuration.traces.enabled = true
        configuration.traces.exporter = .otlp
        configuration.traces.otlpExporter.timeout = .seconds(2)
        configuration.traces.batchSpanProcessor.exportTimeout = .seconds(3)
        configuration.traces.batchSpanProcessor.maxExportBatchSize = exportBatchSize(environment)
        configuration.diagnosticLogger = .custom(logger)
        configuration.diagnosticLogLevel = .warning
        // Cairn's tracer samples; swift-otel records every span it is given. It reads the
        // sampler from the process environment itself (over its configuration), so the
        // environment says `always_on` while it reads it, and is restored at once; an invalid
        // export timeout, reported here, is hidden from it the same way.
        let sampler = try HeadSampler(environment: environment, logger: logger)
        var hidden: [String: String?] = ["OTEL_TRACES_SAMPLER": "always_on", "OTEL_TRACES_SAMPLER_ARG": nil]
        for name in ignoredTimeouts(environment, logger: logger) { hidden[name] = .some(nil) }
        let (otelTracer, service) = try withEnvironment(hidden) {
            try OTel.makeTracingBackend(configuration: configuration)
        }
        let propagators = environment["OTEL_PROPAGATORS"].map { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }
        // Server spans are lazy: a request whose work is only statements makes its spans off the
        // request path.
        let tracer = BatchedEndTracer(
            otelTracer, sampler: sampler, propagates: propagators?.contains("tracecontext") ?? true, lazyKinds: [.server])
        InstrumentationSystem.bootstrap(tracer)
        CairnStorage.TraceContext.markEnabled(tracer: tracer)
        logger.info("tracing on", metadata: ["exporter": "otlp/http", "sampler": "\(sampler)"])
        return BoundedShutdown(TracingService(exporter: service, tracer: tracer), bound: .seconds(5))
    }

    /// Refuses an OTLP endpoint variable that is set but is not an `http` or `https` URL with a
    /// host (`notaurl`, `localhost:4318`, `http:///v1/traces`): swift-otel takes any text and
    /// fails only when it exports, so a node would run with every span lost and one warning
    /// per batch. The value is not repeated: a URL may carry credentials.
    /// - Throws: ``ConfigurationError`` naming the first such variable.
    package static func checkEndpoints(_ environment: [String: String]) throws(ConfigurationError) {
        for name in ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"] {
            let value = (environment[name] ?? "").trimmingCharacters(in: .whitespaces)
            guard !value.isEmpty else { continue }
            let url = URL(string: value)
            let scheme = url?.scheme?.lowercased()
            guard scheme == "http" || scheme == "https", let host = url?.host, !host.isEmpty else {
                throw ConfigurationError(setting: name, problem: "must be an http or https URL with a host, like http://127.0.0.1:4318")
            }
            // Foundation takes any number as a port (`:99999`, `:0`); no connection can be made to
            // one outside 1–65535 (RFC 6335 §6), so every export would fail.
            if let port = url?.port, !(1...65_535).contains(port) {
                throw ConfigurationError(setting: name, problem: "has port \(port), out of range: a port is from 1 to 65535")
            }
        }
    }

    /// The OTLP export timeouts Cairn documents, traces' first, as OpenTelemetry reads them
    /// (a whole number of milliseconds, 0 or more).
    package static let timeoutVariables = ["OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"]

    /// The export timeout variables of `environment` that are set but not a whole number of
    /// milliseconds from 0 (`-5`, `2s`), each reported to `logger` by the name the operator set
    /// and then treated as not set, as the OpenTelemetry specification asks of an invalid value
    /// ("SHOULD generate a warning and gracefully ignore the setting") and as Cairn does for
    /// `OTEL_TRACES_SAMPLER_ARG`. swift-otel would report `OTEL_EXPORTER_OTLP_TIMEOUT=-5` three
    /// times under the names of its three signals (`OTEL_EXPORTER_OTLP_LOGS_TIMEOUT`, …), none
    /// of them set, so these are hidden from it while it reads its configuration.
    /// - Returns: the variables to unset while swift-otel reads the environment.
    package static func ignoredTimeouts(_ environment: [String: String], logger: Logger) -> [String] {
        let ignored = timeoutVariables.filter { name in
            // As swift-otel parses it, so whatever passes here it takes.
            guard let value = environment[name] else { return false }
            return (Int(value) ?? -1) < 0
        }
        // The traces' own variable wins over the shared one; the default (2 s) over neither.
        let fallback = timeoutVariables.first { environment[$0] != nil && !ignored.contains($0) } ?? "the default, 2000"
        for name in ignored {
            logger.warning(
                "\(name) ignored: not a whole number of milliseconds, 0 or more; using \(fallback)",
                metadata: ["environment_value": "\(environment[name] ?? "")"])
        }
        return ignored
    }

    /// The largest batch one export sends, unless `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` says: the whole
    /// queue (`OTEL_BSP_MAX_QUEUE_SIZE`, default 2,048).
    ///
    /// The OpenTelemetry specification's batching processor exports once the queue holds a batch
    /// (512); swift-otel 1.6's exports only when the queue is full, and then one batch of 512, so
    /// from about 400 spans a second (2,048 in the 5 s schedule delay) the queue stays full and
    /// the spans ended while a batch is in flight are dropped ("queue was full" warnings: 2 to 7 %
    /// of the spans of a 10 % sampled `GET /tasks` at 5,000 requests a second). Exporting the
    /// whole queue empties it each time, so none are dropped until spans end faster than one
    /// export of 2,048 takes.
    package static func exportBatchSize(_ environment: [String: String]) -> Int {
        func setting(_ name: String) -> Int? {
            environment[name].flatMap { Int($0.trimmingCharacters(in: .whitespaces)) }.flatMap { $0 > 0 ? $0 : nil }
        }
        // An explicit batch size is the user's (swift-otel reads it over the configuration too).
        return setting("OTEL_BSP_MAX_EXPORT_BATCH_SIZE") ?? setting("OTEL_BSP_MAX_QUEUE_SIZE") ?? 2048
    }

    /// The log metadata of the current span: `trace_id`, `span_id` (lower-case hex, as W3C
    /// Trace Context writes them) and `trace_flags`, when a span is active, recorded or dropped
    /// by the sampler; nothing otherwise.
    package static var logMetadataProvider: Logger.MetadataProvider {
        let recorded = OTel.makeLoggingMetadataProvider()
        return Logger.MetadataProvider {
            guard var context = ServiceContext.current else { return [:] }
            if let lazy = context[LazySpanKey.self] {
                // The ids of a lazy span: made now.
                context = lazy.madeContext()
                return ServiceContext.$current.withValue(context) { recorded.get() }
            }
            guard let dropped = CairnStorage.TraceContext.droppedSpan(in: context) else { return recorded.get() }
            return ["trace_id": "\(dropped.traceID)", "span_id": "\(dropped.spanID)", "trace_flags": "\(dropped.flags.rawValue)"]
        }
    }

    /// Runs `body` with the process environment changed as `changes` say (nil unsets), then
    /// puts it back. Only at bootstrap, before the node serves: the environment is process-wide.
    private static func withEnvironment<T>(_ changes: [String: String?], _ body: () throws -> T) rethrows -> T {
        let saved = changes.keys.map { ($0, getenv($0).map { String(cString: $0) }) }
        func apply(_ name: String, _ value: String?) {
            if let value { setenv(name, value, 1) } else { unsetenv(name) }
        }
        for (name, value) in changes { apply(name, value) }
        defer { for (name, value) in saved { apply(name, value) } }
        return try body()
    }
}

/// swift-otel's exporting service with the batched hand-over of span ends beside it. At
/// graceful shutdown the waiting ends are handed over first (this handler is registered before
/// the exporter's own), so the exporter's final flush sends them.
///
/// Both run on a thread of their own (``TracingBootstrap/executor``), never on the event loops that serve
/// requests, whichever executor the process runs its tasks on.
package struct TracingService<Tracer: Tracing.Tracer>: Service {
    let exporter: any Service
    let tracer: BatchedEndTracer<Tracer>

    /// Runs `exporter` (swift-otel's service) and `tracer`'s periodic hand-over.
    package init(exporter: any Service, tracer: BatchedEndTracer<Tracer>) {
        self.exporter = exporter
        self.tracer = tracer
    }

    /// Runs both on ``TracingBootstrap/executor`` until graceful shutdown, then hands the waiting ends over.
    /// - Throws: what the exporter's service throws.
    package func run() async throws {
        try await withTaskExecutorPreference(TracingBootstrap.executor) { try await runHere() }
    }

    private func runHere() async throws {
        try await withGracefulShutdownHandler {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await exporter.run() }
                group.addTask { await tracer.handOverEndsPeriodically() }
                // The exporter ends at shutdown; the hand-over loop only when cancelled.
                _ = try await group.next()
                group.cancelAll()
            }
        } onGracefulShutdown: {
            tracer.handOverEnds(finally: true)
        }
    }
}

/// Runs a service and gives it at most `bound` from the shutdown signal to finish before
/// cancelling it: a collector that does not answer must not hold a node's exit.
///
/// The bound counts from ``startClock()`` (``runNode(components:services:)`` calls it when the
/// signal arrives), not from this service's own turn to stop: that turn comes only after the
/// HTTP drain (`CAIRN_HTTP_DRAIN_TIMEOUT`, 25 s by default), and 5 s more after it met
/// Kubernetes' SIGKILL at 30 s. A turn that comes later than `bound` after the signal still
/// gets `minimum` to flush. Without ``startClock()`` the bound counts from the turn.
final class BoundedShutdown<C: Clock>: Service where C.Duration == Duration {
    let inner: any Service
    let bound: Duration
    let minimum: Duration
    let clock: C
    private let signalled = Mutex<C.Instant?>(nil)

    init(_ inner: any Service, bound: Duration, minimum: Duration = .milliseconds(250), clock: C) {
        self.inner = inner
        self.bound = bound
        self.minimum = minimum
        self.clock = clock
    }

    /// Notes now as the moment shutdown began, if it was not noted yet.
    func startClock() {
        let now = clock.now
        signalled.withLock { $0 = $0 ?? now }
    }

    func run() async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await self.inner.run() }
            group.addTask {
                try await gracefulShutdown()
                self.startClock()
                let start = self.signalled.withLock { $0 } ?? self.clock.now
                let deadline = max(start.advanced(by: self.bound), self.clock.now.advanced(by: self.minimum))
                try await self.clock.sleep(until: deadline, tolerance: nil)
            }
            // Whichever ends first: the service (done), or the bound after shutdown began.
            _ = try await group.next()
            group.cancelAll()
        }
    }
}

extension BoundedShutdown where C == ContinuousClock {
    /// Bounded on the continuous clock.
    convenience init(_ inner: any Service, bound: Duration) {
        self.init(inner, bound: bound, clock: ContinuousClock())
    }
}
