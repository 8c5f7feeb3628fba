import CairnHTTP
import CairnServer
import CairnStorage
import CairnTestSupport
import Logging
import ServiceLifecycle
import Synchronization
import Testing
import Tracing

/// Makes recording spans, or dropped ones when `sampled` is off, and keeps them.
private final class RecordingTracer: Tracer {
    let sampled = Atomic(true)
    let made = Mutex<[RecordingSpan]>([])

    func startSpan<Instant: TracerInstant>(
        _ operationName: String, context: @autoclosure () -> ServiceContext, ofKind kind: SpanKind, at instant: @autoclosure () -> Instant,
        function: String, file fileID: String, line: UInt
    ) -> RecordingSpan {
        let span = RecordingSpan(operationName, recording: sampled.load(ordering: .relaxed), start: instant().nanosecondsSinceEpoch, kind: kind)
        made.withLock { $0.append(span) }
        return span
    }
    func forceFlush() {}
    func inject<Carrier, Inject>(_ context: ServiceContext, into carrier: inout Carrier, using injector: Inject)
    where Inject: Injector, Carrier == Inject.Carrier {}
    func extract<Carrier, Extract>(_ carrier: Carrier, into context: inout ServiceContext, using extractor: Extract)
    where Extract: Extractor, Carrier == Extract.Carrier {}
}

private struct At: TracerInstant {
    let nanosecondsSinceEpoch: UInt64
    static func < (lhs: At, rhs: At) -> Bool { lhs.nanosecondsSinceEpoch < rhs.nanosecondsSinceEpoch }
}

@Suite struct BatchedEndTracerTests {
    /// A recording span stops recording when ended, but reaches the inner tracer only at the
    /// hand-over, with its own end time; ended twice, it ends once.
    @Test func recordingSpansEndAtTheHandOverWithTheirOwnEndTime() throws {
        let inner = RecordingTracer()
        let tracer = BatchedEndTracer(inner)
        let request = tracer.startSpan("GET /tasks", context: .topLevel, ofKind: .server, at: At(nanosecondsSinceEpoch: 1))
        let statement = tracer.startSpan("SELECT tasks", context: .topLevel, ofKind: .client, at: At(nanosecondsSinceEpoch: 2))
        #expect(request.isRecording && statement.isRecording)
        statement.end(at: At(nanosecondsSinceEpoch: 30))
        request.end(at: At(nanosecondsSinceEpoch: 40))
        request.end(at: At(nanosecondsSinceEpoch: 50))
        #expect(!request.isRecording && !statement.isRecording)
        let spans = inner.made.withLock { $0 }
        #expect(spans.allSatisfy { $0.ends.isEmpty }, "ended before the hand-over")
        #expect(tracer.waitingEnds == 2)
        tracer.handOverEnds()
        #expect(tracer.waitingEnds == 0)
        #expect(spans.map(\.ends) == [[40], [30]])
    }

    /// A statement's span, recorded after it ran, is made by the inner tracer only at the
    /// hand-over, with its own times, kind and attributes (after the final hand-over, at once).
    @Test func finishedSpansAreMadeAtTheHandOver() {
        let inner = RecordingTracer()
        let tracer = BatchedEndTracer(inner)
        tracer.recordFinishedSpan(
            "SELECT tasks", parent: .topLevel, kind: .client, start: 10, end: 20, attributes: ["db.system.name": "sqlite"], error: nil)
        #expect(inner.made.withLock { $0.isEmpty }, "made before the hand-over")
        #expect(tracer.waitingEnds == 1)
        tracer.handOverEnds()
        let made = inner.made.withLock { $0 }
        #expect(made.map(\.operationName) == ["SELECT tasks"])
        #expect(made.first?.start == 10 && made.first?.ends == [20] && made.first?.kind == .client)
        #expect(made.first?.attributes["db.system.name"]?.toSpanAttribute() == .string("sqlite"))

        tracer.handOverEnds(finally: true)
        tracer.recordFinishedSpan("SELECT users", parent: .topLevel, kind: .client, start: 30, end: 40, attributes: [:], error: nil)
        #expect(inner.made.withLock { $0.map(\.operationName) } == ["SELECT tasks", "SELECT users"])
    }

    /// A lazy span (a request's) is made by the inner tracer only at the hand-over after it
    /// ended, with its own start time, name and attributes, before the statements under it;
    /// what needs its context while it runs (`traceparent`) makes it at once.
    @Test func lazySpansAreMadeWhenNeededOrAtTheHandOver() {
        let inner = RecordingTracer()
        let tracer = BatchedEndTracer(inner, lazyKinds: [.server])
        let request = tracer.startSpan("GET", context: .topLevel, ofKind: .server, at: At(nanosecondsSinceEpoch: 5))
        #expect(request.isRecording)
        request.attributes["http.route"] = "/tasks"
        request.operationName = "GET /tasks"
        tracer.recordFinishedSpan("SELECT tasks", parent: request.context, kind: .client, start: 6, end: 7, attributes: [:], error: nil)
        request.end(at: At(nanosecondsSinceEpoch: 9))
        #expect(!request.isRecording)
        #expect(inner.made.withLock { $0.isEmpty }, "made before the hand-over")
        tracer.handOverEnds()
        let made = inner.made.withLock { $0 }
        #expect(made.map(\.operationName) == ["GET /tasks", "SELECT tasks"])
        #expect(made.first?.start == 5 && made.first?.ends == [9] && made.first?.kind == .server)
        #expect(made.first?.attributes["http.route"]?.toSpanAttribute() == .string("/tasks"))

        let webhook = tracer.startSpan("POST /webhooks", context: .topLevel, ofKind: .server, at: At(nanosecondsSinceEpoch: 10))
        var carrier: [String: String] = [:]
        tracer.inject(webhook.context, into: &carrier, using: DictionaryInjector())
        #expect(inner.made.withLock { $0.map(\.operationName) } == ["GET /tasks", "SELECT tasks", "POST /webhooks"])
        webhook.end(at: At(nanosecondsSinceEpoch: 11))
        tracer.handOverEnds()
        #expect(inner.made.withLock { $0.last?.ends } == [11])
    }

    /// A span the sampler dropped is ended at once: nothing would read it later.
    @Test func droppedSpansEndAtOnce() {
        let inner = RecordingTracer()
        inner.sampled.store(false, ordering: .relaxed)
        let tracer = BatchedEndTracer(inner)
        let span = tracer.startSpan("GET /tasks", context: .topLevel, ofKind: .server, at: At(nanosecondsSinceEpoch: 1))
        #expect(!span.isRecording)
        span.end(at: At(nanosecondsSinceEpoch: 7))
        #expect(tracer.waitingEnds == 0)
        #expect(inner.made.withLock { $0.map(\.ends) } == [[7]])
    }

    /// After the final hand-over (shutdown), ends are handed over at once, so none is left behind.
    @Test func afterTheFinalHandOverEndsGoStraightThrough() {
        let inner = RecordingTracer()
        let tracer = BatchedEndTracer(inner)
        let early = tracer.startSpan("early", context: .topLevel, ofKind: .internal, at: At(nanosecondsSinceEpoch: 1))
        let late = tracer.startSpan("late", context: .topLevel, ofKind: .internal, at: At(nanosecondsSinceEpoch: 2))
        early.end(at: At(nanosecondsSinceEpoch: 3))
        tracer.handOverEnds(finally: true)
        late.end(at: At(nanosecondsSinceEpoch: 4))
        #expect(tracer.waitingEnds == 0)
        #expect(inner.made.withLock { $0.map(\.ends) } == [[3], [4]])
    }
}

/// The W3C headers `tracer` writes for `context`.
private func headers(_ tracer: BatchedEndTracer<RecordingTracer>, _ context: ServiceContext) -> [String: String] {
    var carrier: [String: String] = [:]
    tracer.inject(context, into: &carrier, using: DictionaryInjector())
    return carrier
}

/// The parts of a `traceparent` value: version, trace id, span id, flags.
private func parts(_ traceparent: String?) -> [String] {
    (traceparent ?? "").split(separator: "-").map(String.init)
}

@Suite struct HeadSamplingTests {
    /// A root span the sampler drops never reaches the inner tracer, yet has a W3C context of
    /// its own: `traceparent` flagged not sampled, which its children (dropped too, without
    /// asking the inner tracer) carry on with the same trace id.
    @Test func aDroppedRootMakesNoInnerSpanButPropagatesItsTrace() throws {
        let inner = RecordingTracer()
        let tracer = BatchedEndTracer(inner, sampler: HeadSampler(root: .never, parentBased: true))
        let root = tracer.startSpan("GET /tasks", context: .topLevel, ofKind: .server, at: At(nanosecondsSinceEpoch: 1))
        #expect(!root.isRecording)
        #expect(TraceContext.isSampledOut(root.context))
        let rootParent = parts(headers(tracer, root.context)["traceparent"])
        try #require(rootParent.count == 4)
        #expect(rootParent[0] == "00" && rootParent[1].count == 32 && rootParent[2].count == 16 && rootParent[3] == "00")
        #expect(rootParent[1] != String(repeating: "0", count: 32))

        let child = tracer.startSpan("SELECT tasks", context: root.context, ofKind: .client, at: At(nanosecondsSinceEpoch: 2))
        #expect(!child.isRecording)
        let childParent = parts(headers(tracer, child.context)["traceparent"])
        #expect(childParent[1] == rootParent[1], "the child left its parent's trace")
        #expect(childParent[2] != rootParent[2], "the child has its parent's span id")
        child.end(at: At(nanosecondsSinceEpoch: 3))
        root.end(at: At(nanosecondsSinceEpoch: 4))
        #expect(inner.made.withLock { $0.isEmpty }, "a dropped span reached the inner tracer")
        #expect(tracer.waitingEnds == 0)

        // Another root, another trace.
        let other = tracer.startSpan("GET /tasks", context: .topLevel, ofKind: .server, at: At(nanosecondsSinceEpoch: 5))
        #expect(parts(headers(tracer, other.context)["traceparent"])[1] != rootParent[1])
    }

    /// At a ratio, about that share of roots reaches the inner tracer (10 % of 4,000 here:
    /// 400 expected, the bounds more than ten standard deviations away).
    @Test func aRatioSamplesThatShareOfRoots() {
        let inner = RecordingTracer()
        let tracer = BatchedEndTracer(inner, sampler: HeadSampler(root: .ratio(0.1), parentBased: true))
        var recorded = 0
        for index in 0..<4000 {
            let span = tracer.startSpan("GET /tasks", context: .topLevel, ofKind: .server, at: At(nanosecondsSinceEpoch: UInt64(index)))
            if span.isRecording { recorded += 1 }
        }
        #expect(recorded == inner.made.withLock { $0.count })
        #expect((200...600).contains(recorded), "\(recorded) of 4000 roots sampled at 10 %")
    }

    /// `decideRoot` draws a new trace's decision once: a root it records is started recording
    /// (not drawn again), and one it drops is a dropped span's context, flagged not sampled,
    /// with a trace id of its own, that reaches no inner tracer.
    @Test func aRootDecidedBeforeItsSpanIsDrawnOnce() throws {
        let inner = RecordingTracer()
        let tracer = BatchedEndTracer(inner, sampler: HeadSampler(root: .ratio(0.5), parentBased: true))
        var recorded = 0
        var droppedTraces = Set<String>()
        for index in 0..<200 {
            switch tracer.decideRoot() {
            case .recorded(let parent):
                let span = tracer.startSpan("GET /tasks", context: parent, ofKind: .server, at: At(nanosecondsSinceEpoch: UInt64(index)))
                #expect(span.isRecording, "a root decided recorded was drawn again and dropped")
                recorded += 1
            case .dropped(let context):
                #expect(TraceContext.isSampledOut(context))
                let traceparent = parts(headers(tracer, context)["traceparent"])
                try #require(traceparent.count == 4)
                #expect(traceparent[3] == "00" && traceparent[1] != String(repeating: "0", count: 32))
                droppedTraces.insert(traceparent[1])
                let child = tracer.startSpan("SELECT tasks", context: context, ofKind: .client, at: At(nanosecondsSinceEpoch: 1))
                #expect(!child.isRecording)
            }
        }
        #expect(inner.made.withLock { $0.count } == recorded, "a dropped root reached the inner tracer")
        #expect(recorded > 0 && droppedTraces.count == 200 - recorded, "\(recorded) recorded, \(droppedTraces.count) distinct dropped")
    }

    /// A caller's context decides a parent-based sampler: sampled, the span reaches the inner
    /// tracer whatever the root rule; not sampled, it is dropped and goes on in the caller's
    /// trace, flagged not sampled, with the caller's `tracestate`.
    @Test func aCallersFlagDecidesAParentBasedSampler() {
        let inner = RecordingTracer()
        let tracer = BatchedEndTracer(inner, sampler: HeadSampler(root: .never, parentBased: true))
        let trace = "4bf92f3577b34da6a3ce929d0e0e4736"
        var sampled = ServiceContext.topLevel
        tracer.extract(["traceparent": "00-\(trace)-00f067aa0ba902b7-01"], into: &sampled, using: DictionaryExtractor())
        #expect(tracer.startSpan("POST /notifications", context: sampled, ofKind: .server, at: At(nanosecondsSinceEpoch: 1)).isRecording)
        #expect(inner.made.withLock { $0.count } == 1)

        var unsampled = ServiceContext.topLevel
        tracer.extract(
            ["traceparent": "00-\(trace)-00f067aa0ba902b7-00", "tracestate": "vendor=value"], into: &unsampled, using: DictionaryExtractor())
        let dropped = tracer.startSpan("POST /notifications", context: unsampled, ofKind: .server, at: At(nanosecondsSinceEpoch: 2))
        #expect(!dropped.isRecording)
        #expect(inner.made.withLock { $0.count } == 1)
        let out = headers(tracer, dropped.context)
        let traceparent = parts(out["traceparent"])
        #expect(traceparent.count == 4 && traceparent[1] == trace && traceparent[2] != "00f067aa0ba902b7" && traceparent[3] == "00")
        #expect(out["tracestate"] == "vendor=value")

        // A malformed traceparent is ignored: the span is a root (dropped by this sampler).
        var malformed = ServiceContext.topLevel
        tracer.extract(["traceparent": "00-not-a-trace-01"], into: &malformed, using: DictionaryExtractor())
        let root = tracer.startSpan("GET /tasks", context: malformed, ofKind: .server, at: At(nanosecondsSinceEpoch: 3))
        #expect(!root.isRecording)
        #expect(parts(headers(tracer, root.context)["traceparent"]).dropFirst().first != trace)
    }

    /// `traceidratio` (not parent-based) decides a caller's trace by its id, whatever its flag,
    /// as OpenTelemetry's TraceIdRatioBased sampler does (the last eight bytes, little-endian,
    /// below ratio × 2^64).
    @Test func aRatioSamplerReadsTheCallersTraceId() {
        let inner = RecordingTracer()
        let tracer = BatchedEndTracer(inner, sampler: HeadSampler(root: .ratio(0.5), parentBased: false))
        func decision(_ trace: String, flags: String) -> Bool {
            var context = ServiceContext.topLevel
            tracer.extract(["traceparent": "00-\(trace)-00f067aa0ba902b7-\(flags)"], into: &context, using: DictionaryExtractor())
            return tracer.startSpan("job", context: context, ofKind: .consumer, at: At(nanosecondsSinceEpoch: 1)).isRecording
        }
        // Byte 15 is the most significant: 0x10… is below half, 0xf0… above.
        #expect(decision("0000000000000000ffffffffffffff10", flags: "00"))
        #expect(!decision("0000000000000000000000000000f0f0", flags: "01"))
    }

    /// With `OTEL_PROPAGATORS=none`, no caller's context is read and none is written.
    @Test func withoutPropagatorsNothingIsReadOrWritten() {
        let tracer = BatchedEndTracer(RecordingTracer(), sampler: HeadSampler(root: .never, parentBased: true), propagates: false)
        var context = ServiceContext.topLevel
        tracer.extract(["traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"], into: &context, using: DictionaryExtractor())
        let span = tracer.startSpan("GET /tasks", context: context, ofKind: .server, at: At(nanosecondsSinceEpoch: 1))
        #expect(!span.isRecording)
        #expect(headers(tracer, span.context).isEmpty)
    }

    /// Log lines under a dropped span carry its trace and span ids, as under a recorded one.
    @Test func logLinesUnderADroppedSpanCarryItsIds() {
        let tracer = BatchedEndTracer(RecordingTracer(), sampler: HeadSampler(root: .never, parentBased: true))
        let span = tracer.startSpan("GET /tasks", context: .topLevel, ofKind: .server, at: At(nanosecondsSinceEpoch: 1))
        let traceparent = parts(headers(tracer, span.context)["traceparent"])
        let metadata = ServiceContext.$current.withValue(span.context) { TracingBootstrap.logMetadataProvider.get() }
        #expect(metadata["trace_id"]?.description == traceparent[1])
        #expect(metadata["span_id"]?.description == traceparent[2])
        #expect(metadata["trace_flags"]?.description == "0")
    }

    /// The sampler is read from the standard variables, as swift-otel reads them.
    @Test func theSamplerComesFromTheEnvironment() throws {
        let logger = Logger(label: "test")
        func sampler(_ environment: [String: String]) throws -> HeadSampler { try HeadSampler(environment: environment, logger: logger) }
        #expect(try sampler([:]) == .parentBasedAlwaysOn)
        #expect(
            try sampler(["OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"])
                == HeadSampler(root: .ratio(0.1), parentBased: false))
        #expect(
            try sampler(["OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.25"])
                == HeadSampler(root: .ratio(0.25), parentBased: true))
        #expect(
            try sampler(["OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"]) == HeadSampler(root: .ratio(1), parentBased: false))
        #expect(try sampler(["OTEL_TRACES_SAMPLER": "always_off"]) == HeadSampler(root: .never, parentBased: false))
        #expect(try sampler(["OTEL_TRACES_SAMPLER": "parentbased_always_off"]) == HeadSampler(root: .never, parentBased: true))
        #expect(try sampler(["OTEL_TRACES_SAMPLER": "always_on"]) == HeadSampler(root: .always, parentBased: false))
        #expect(try sampler(["OTEL_TRACES_SAMPLER": "sometimes"]) == .parentBasedAlwaysOn)
        #expect(throws: HeadSampler.UnsupportedSampler.self) { try sampler(["OTEL_TRACES_SAMPLER": "xray"]) }
    }

    /// The fast ids do not repeat.
    @Test func fastIdsDoNotRepeat() {
        var generator = FastIDGenerator()
        let draws = (0..<100_000).map { _ in generator.next() }
        #expect(Set(draws).count == draws.count)
    }
}

/// How many spans one export sends (see `TracingBootstrap.exportBatchSize`).
@Suite struct ExportBatchSizeTests {
    /// By default an export takes the whole queue, so swift-otel's processor, which exports
    /// only when its queue is full, empties it instead of staying full and dropping spans.
    @Test func anExportTakesTheWholeQueueUnlessTold() {
        #expect(TracingBootstrap.exportBatchSize([:]) == 2048)
        #expect(TracingBootstrap.exportBatchSize(["OTEL_BSP_MAX_QUEUE_SIZE": "8192"]) == 8192)
        #expect(TracingBootstrap.exportBatchSize(["OTEL_BSP_MAX_QUEUE_SIZE": " 4096 "]) == 4096)
        // The user's own batch size stands; what is not a positive number is ignored.
        #expect(TracingBootstrap.exportBatchSize(["OTEL_BSP_MAX_QUEUE_SIZE": "8192", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "256"]) == 256)
        #expect(TracingBootstrap.exportBatchSize(["OTEL_BSP_MAX_QUEUE_SIZE": "many", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "0"]) == 2048)
    }
}

/// Records, as swift-otel's exporting service would run, whether its own task, a child task and
/// a default actor it calls run on the tracing thread.
private final class ExecutorProbe: Service {
    actor Processor {
        func onTracingThread() -> Bool { TracingBootstrap.executor.isCurrent }
    }
    let seen = Mutex<[String: Bool]>([:])

    func run() async throws {
        let own = TracingBootstrap.executor.isCurrent
        let child = await withTaskGroup(of: Bool.self) { group in
            group.addTask { TracingBootstrap.executor.isCurrent }
            return await group.next() ?? false
        }
        let actor = await Processor().onTracingThread()
        seen.withLock { $0 = ["service": own, "child task": child, "actor": actor] }
    }
}

@Suite struct TracingServiceTests {
    /// Tracing's background work (swift-otel's services, their child tasks and actors) runs on
    /// the tracing thread, never on the threads that serve requests (on SQLite, SwiftNIO's event
    /// loops). The exporter ending ends the service.
    @Test func theExporterRunsOnTheTracingThread() async throws {
        let probe = ExecutorProbe()
        #expect(!TracingBootstrap.executor.isCurrent)
        try await TracingService(exporter: probe, tracer: BatchedEndTracer(RecordingTracer())).run()
        #expect(probe.seen.withLock { $0 } == ["service": true, "child task": true, "actor": true])
    }
}

/// The OTLP variables Cairn checks itself before swift-otel reads them.
@Suite struct OTLPSettingsTests {
    /// A port outside 1–65535 stops the start, as a malformed endpoint does: a fresh-user
    /// trial's `:99999` and `:0` were taken and every export would have failed.
    @Test func anEndpointPortOutOfRangeIsRefused() throws {
        for name in ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] {
            for port in ["99999", "0", "65536"] {
                do {
                    try TracingBootstrap.checkEndpoints([name: "http://127.0.0.1:\(port)"])
                    Issue.record("\(name) with port \(port) accepted")
                } catch {
                    #expect(error.setting == name)
                    #expect(error.problem == "has port \(port), out of range: a port is from 1 to 65535", "\(error)")
                }
            }
            for value in ["http://127.0.0.1:4318", "https://collector.example:65535/v1/traces", "http://127.0.0.1", "http://[::1]:1"] {
                #expect(throws: Never.self, "\(value)") { try TracingBootstrap.checkEndpoints([name: value]) }
            }
        }
    }

    /// An export timeout that is not a whole number of milliseconds is reported once, by the
    /// name the operator set, and treated as not set (as the OpenTelemetry specification asks,
    /// and as `OTEL_TRACES_SAMPLER_ARG` is): swift-otel named `OTEL_EXPORTER_OTLP_TIMEOUT=-5`
    /// `OTEL_EXPORTER_OTLP_LOGS_TIMEOUT` (and its traces and metrics twins).
    @Test func anInvalidExportTimeoutIsReportedByTheNameSet() {
        func ignored(_ environment: [String: String]) -> ([String], String) {
            let log = CapturedLog()
            return (TracingBootstrap.ignoredTimeouts(environment, logger: log.logger()), log.text)
        }
        var (names, text) = ignored(["OTEL_EXPORTER_OTLP_TIMEOUT": "-5"])
        #expect(names == ["OTEL_EXPORTER_OTLP_TIMEOUT"])
        #expect(text.split(separator: "\n").count == 1, "\(text)")
        #expect(text.hasPrefix("warning OTEL_EXPORTER_OTLP_TIMEOUT ignored: not a whole number of milliseconds, 0 or more; using the default, 2000"))
        #expect(text.contains("environment_value=-5") && !text.contains("LOGS") && !text.contains("TRACES"), "\(text)")
        (names, text) = ignored(["OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "2s", "OTEL_EXPORTER_OTLP_TIMEOUT": "500"])
        #expect(names == ["OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"])
        #expect(text.contains("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT ignored") && text.contains("using OTEL_EXPORTER_OTLP_TIMEOUT"), "\(text)")
        (names, text) = ignored(["OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "0", "OTEL_EXPORTER_OTLP_TIMEOUT": "1500"])
        #expect(names.isEmpty && text.isEmpty, "\(text)")
    }
}
