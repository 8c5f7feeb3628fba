import CairnHTTP
package import CairnStorage
import OTel
import Synchronization
package import Tracing
import W3CTraceContext

/// Cairn's tracer (issue 16): decides sampling itself, before any span object is made, then
/// starts the spans it keeps with another tracer (swift-otel's) and hands their ends over in
/// batches, from one task, every `interval`. Statement spans (`FinishedSpanRecorder`) and, of
/// the kinds asked for, spans nothing needed while they ran (`LazySpan`) are made there too.
///
/// Head sampling: the ``HeadSampler`` (`OTEL_TRACES_SAMPLER`) decides a root span from one
/// draw of a fast generator; a dropped span is a W3C context in its `ServiceContext` (trace id,
/// span id, flags without `sampled`, the caller's `tracestate`), which this tracer injects as
/// `traceparent` and the log metadata provider prints, and under which Cairn makes no further
/// span. Only the spans the sampler keeps reach the inner tracer, which must sample every span
/// it is given (swift-otel runs with `always_on`). An incoming W3C context is read by this
/// tracer and handed to the inner one only for a span that records.
///
/// Batched ends: swift-otel 1.6 sends each recorded span's end through an `AsyncStream` to its
/// tracer's task, and on through a second stream and an actor to its batch processor. At a low
/// sampling rate those consumers sleep between spans, so every end costs thread wake-ups
/// (measured at 10 %: 0.7 more context switches per request than with tracing off). Ends handed
/// over together are handled in one wake-up. A span keeps its exact end time; it reaches the
/// exporter up to `interval` later.
package final class BatchedEndTracer<Inner: Tracer>: Tracer {
    /// The spans this tracer makes.
    package typealias Span = BatchedEndSpan<Inner.Span>

    private let inner: Inner
    private let sampler: HeadSampler
    private let propagates: Bool
    private let lazyKinds: Set<SpanKind>
    private let queue = SpanEndQueue<Inner.Span>()
    private let interval: Duration

    /// Wraps `inner`, which records every span it is asked for; `sampler` decides which those
    /// are. Without `propagates` (`OTEL_PROPAGATORS=none`), no W3C context is read or written.
    /// Recording spans of `lazyKinds` are made with the inner tracer only when first needed (see
    /// `LazySpan`). Ends are handed over every `interval` by ``handOverEndsPeriodically()``.
    package init(
        _ inner: Inner, sampler: HeadSampler = .parentBasedAlwaysOn, propagates: Bool = true, lazyKinds: Set<SpanKind> = [],
        interval: Duration = .milliseconds(100)
    ) {
        self.inner = inner
        self.sampler = sampler
        self.propagates = propagates
        self.lazyKinds = lazyKinds
        self.interval = interval
    }

    /// Starts a span: a dropped one when the sampler says so (or its parent was dropped), else
    /// one of the inner tracer.
    package func startSpan<Instant: TracerInstant>(
        _ operationName: String, context: @autoclosure () -> ServiceContext, ofKind kind: SpanKind, at instant: @autoclosure () -> Instant,
        function: String, file fileID: String, line: UInt
    ) -> Span {
        let parent = context()
        var parentForInner = parent
        if let lazy = parent[LazySpanKey.self] {
            // A recording parent whose span is not made yet: made now, to parent this one.
            parentForInner = lazy.madeContext()
        } else if CairnStorage.TraceContext.isSampledOut(parent) {
            // A dropped span's children are dropped (see `TraceContext.isSampledOut`).
            guard let dropped = CairnStorage.TraceContext.droppedSpan(in: parent) else { return BatchedEndSpan(dropped: parent) }
            return dropping(traceID: dropped.traceID, state: dropped.state, parent: parent)
        } else if parent.otelIsSampled {
            // A recording parent of this process: its trace is sampled.
        } else if let remote = parent[RemoteParentKey.self] {
            guard sampler.samplesChild(ofRemote: remote) else { return dropping(traceID: remote.traceID, state: remote.state, parent: parent) }
            // The inner tracer parents its span on what it extracts itself.
            var headers = ["traceparent": remote.traceParentHeaderValue]
            headers["tracestate"] = remote.traceStateHeaderValue
            inner.extract(headers, into: &parentForInner, using: DictionaryExtractor())
        } else if parent[SampledRootKey.self] == nil {
            var generator = FastIDGenerator()
            let traceID = TraceID.random(using: &generator)
            // The root of a trace (the inner tracer draws its own ids for the ones it records).
            guard sampler.samplesRoot(traceID) else { return dropping(traceID: traceID, state: TraceState(), parent: parent) }
        }
        // Else a root `decideRoot` already sampled: one draw per trace.
        if lazyKinds.contains(kind) {
            let inner = self.inner
            let lazy = LazySpan<Inner.Span>(
                operationName, parent: parentForInner, kind: kind, start: instant().nanosecondsSinceEpoch
            ) { name, parent, kind, start in
                inner.startSpan(
                    name, context: parent, ofKind: kind, at: EndInstant(nanosecondsSinceEpoch: start), function: function, file: fileID, line: line)
            }
            return BatchedEndSpan(lazy: lazy, queue: queue)
        }
        let span = inner.startSpan(operationName, context: parentForInner, ofKind: kind, at: instant(), function: function, file: fileID, line: line)
        return BatchedEndSpan(span, queue: span.isRecording ? queue : nil)
    }

    /// A dropped span of trace `traceID` under `parent`, with a fresh span id.
    private func dropping(traceID: TraceID, state: TraceState, parent: ServiceContext) -> Span {
        var generator = FastIDGenerator()
        let dropped = W3CTraceContext.TraceContext(traceID: traceID, spanID: .random(using: &generator), flags: [], state: state)
        return BatchedEndSpan(dropped: CairnStorage.TraceContext.sampledOut(parent, as: dropped))
    }

    /// The inner tracer's active span for `context`. Ending the span returned here ends it at
    /// once, not in a batch.
    package func activeSpan(identifiedBy context: ServiceContext) -> Span? {
        inner.activeSpan(identifiedBy: context).map { BatchedEndSpan($0, queue: nil) }
    }

    /// Hands over the waiting ends. (The requirement is deprecated in swift-distributed-tracing,
    /// and Cairn flushes the exporter through its service's shutdown instead.)
    package func forceFlush() {
        handOverEnds()
    }

    /// Hands over every span ended or recorded so far; with `finally`, spans ended or recorded
    /// from then on are handed over at once (at shutdown, when no periodic hand-over follows).
    package func handOverEnds(finally: Bool = false) {
        queue.handOver(finally: finally) { make($0) }
    }

    /// The number of ended or recorded spans not handed over yet.
    package var waitingEnds: Int { queue.count }

    /// Hands over the waiting ends every `interval` until the task is cancelled.
    package func handOverEndsPeriodically() async {
        while !Task.isCancelled {
            do { try await Task.sleep(for: interval) } catch { break }
            handOverEnds()
        }
    }

    /// Makes `span` with the inner tracer, as it ran, except its end: returned with the time to
    /// end it at, so a hand-over can end all its spans together (see `SpanEndQueue.handOver`).
    private func make(_ span: FinishedSpan) -> (Inner.Span, UInt64) {
        let parent = span.parent[LazySpanKey.self]?.madeContext() ?? span.parent
        let made = inner.startSpan(
            span.operationName, context: parent, ofKind: span.kind, at: EndInstant(nanosecondsSinceEpoch: span.start), function: #function,
            file: #fileID, line: #line)
        made.attributes = span.attributes
        if let error = span.error {
            made.recordError(error, attributes: [:], at: EndInstant(nanosecondsSinceEpoch: span.end))
            made.setStatus(.init(code: .error))
        }
        return (made, span.end)
    }

    /// Writes `traceparent` (and `tracestate`) for the span of `context`: a dropped span's own,
    /// else the inner tracer's.
    package func inject<Carrier, Inject>(_ context: ServiceContext, into carrier: inout Carrier, using injector: Inject)
    where Inject: Injector, Carrier == Inject.Carrier {
        guard propagates else { return }
        if let lazy = context[LazySpanKey.self] {
            inner.inject(lazy.madeContext(), into: &carrier, using: injector)
        } else if let dropped = CairnStorage.TraceContext.droppedSpan(in: context) {
            Self.write(dropped, into: &carrier, using: injector)
        } else if context.otelIsSampled {
            inner.inject(context, into: &carrier, using: injector)
        } else if let remote = context[RemoteParentKey.self] {
            // A caller's context no span of this process continued yet: passed on unchanged.
            Self.write(remote, into: &carrier, using: injector)
        } else {
            inner.inject(context, into: &carrier, using: injector)
        }
    }

    private static func write<Carrier, Inject>(_ context: W3CTraceContext.TraceContext, into carrier: inout Carrier, using injector: Inject)
    where Inject: Injector, Carrier == Inject.Carrier {
        injector.inject(context.traceParentHeaderValue, forKey: "traceparent", into: &carrier)
        if let state = context.traceStateHeaderValue { injector.inject(state, forKey: "tracestate", into: &carrier) }
    }

    /// Reads a caller's W3C Trace Context (`traceparent`, `tracestate`) into `context`; a
    /// malformed one is ignored (the work starts a trace of its own).
    package func extract<Carrier, Extract>(_ carrier: Carrier, into context: inout ServiceContext, using extractor: Extract)
    where Extract: Extractor, Carrier == Extract.Carrier {
        guard propagates, let parent = extractor.extract(key: "traceparent", from: carrier) else { return }
        let state = extractor.extract(key: "tracestate", from: carrier)
        guard let remote = try? W3CTraceContext.TraceContext(traceParentHeaderValue: parent, traceStateHeaderValue: state) else { return }
        context[RemoteParentKey.self] = remote
    }
}

extension BatchedEndTracer: RootSampler {
    /// Draws a new trace's sampling decision without making a span: dropped, the context of a
    /// dropped root span (the same as ``startSpan(_:context:ofKind:at:function:file:line:)``
    /// would give it); recorded, a parent context under which `startSpan` makes the root span
    /// without drawing again.
    package func decideRoot() -> RootDecision {
        var generator = FastIDGenerator()
        let traceID = TraceID.random(using: &generator)
        guard sampler.samplesRoot(traceID) else {
            let dropped = W3CTraceContext.TraceContext(traceID: traceID, spanID: .random(using: &generator), flags: [], state: TraceState())
            return .dropped(CairnStorage.TraceContext.sampledOut(.topLevel, as: dropped))
        }
        var context = ServiceContext.topLevel
        context[SampledRootKey.self] = true
        return .recorded(context)
    }
}

/// Marks the parent context of a root span ``BatchedEndTracer/decideRoot()`` sampled.
private enum SampledRootKey: ServiceContextKey {
    typealias Value = Bool
}

extension BatchedEndTracer: FinishedSpanRecorder {
    /// Queues a leaf span that ran under the recording span of `parent`, to be made with the
    /// inner tracer at the next hand-over (at once after the final one).
    package func recordFinishedSpan(
        _ operationName: String, parent: ServiceContext, kind: SpanKind, start: UInt64, end: UInt64, attributes: SpanAttributes,
        error: (any Error)?
    ) {
        let span = FinishedSpan(
            operationName: operationName, parent: parent, kind: kind, start: start, end: end, attributes: attributes, error: error)
        if !queue.add(span) {
            let (made, end) = make(span)
            made.end(at: EndInstant(nanosecondsSinceEpoch: end))
        }
    }
}

/// A caller's W3C context read by ``BatchedEndTracer/extract(_:into:using:)``, the parent of
/// the first span started under it.
private enum RemoteParentKey: ServiceContextKey {
    typealias Value = W3CTraceContext.TraceContext
}

/// A span of ``BatchedEndTracer``: a span the sampler dropped (its context only), or the inner
/// span, whose end, when it records, waits for the next hand-over. It stops recording as soon
/// as it is ended; a second end is ignored.
package struct BatchedEndSpan<Inner: Span>: Span {
    private let storage: Storage

    private enum Storage {
        case inner(Inner, Ending?)
        case lazy(LazySpan<Inner>, SpanEndQueue<Inner>)
        case dropped(ServiceContext)
    }

    /// What a recording span needs to end later: where to queue it, and whether it has ended.
    private final class Ending: Sendable {
        let queue: SpanEndQueue<Inner>
        let ended = Atomic(false)

        init(queue: SpanEndQueue<Inner>) {
            self.queue = queue
        }
    }

    fileprivate init(_ inner: Inner, queue: SpanEndQueue<Inner>?) {
        storage = .inner(inner, queue.map(Ending.init))
    }

    fileprivate init(dropped context: ServiceContext) {
        storage = .dropped(context)
    }

    fileprivate init(lazy span: LazySpan<Inner>, queue: SpanEndQueue<Inner>) {
        storage = .lazy(span, queue)
    }

    /// The span's context.
    package var context: ServiceContext {
        switch storage {
        case .inner(let inner, _): inner.context
        case .lazy(let lazy, _): lazy.context
        case .dropped(let context): context
        }
    }

    /// The span's name (none for a dropped span).
    package var operationName: String {
        get {
            switch storage {
            case .inner(let inner, _): inner.operationName
            case .lazy(let lazy, _): lazy.operationName
            case .dropped: ""
            }
        }
        nonmutating set {
            switch storage {
            case .inner(let inner, _): inner.operationName = newValue
            case .lazy(let lazy, _): lazy.operationName = newValue
            case .dropped: break
            }
        }
    }

    /// The span's attributes (none for a dropped span).
    package var attributes: SpanAttributes {
        get {
            switch storage {
            case .inner(let inner, _): inner.attributes
            case .lazy(let lazy, _): lazy.attributes
            case .dropped: [:]
            }
        }
        nonmutating set {
            switch storage {
            case .inner(let inner, _): inner.attributes = newValue
            case .lazy(let lazy, _): lazy.attributes = newValue
            case .dropped: break
            }
        }
    }

    /// Whether the span records and has not been ended.
    package var isRecording: Bool {
        switch storage {
        case .inner(let inner, let ending):
            guard inner.isRecording else { return false }
            return ending.map { !$0.ended.load(ordering: .acquiring) } ?? true
        case .lazy(let lazy, _): return !lazy.isEnded
        case .dropped: return false
        }
    }

    /// Sets the span's status.
    package func setStatus(_ status: SpanStatus) {
        switch storage {
        case .inner(let inner, _): inner.setStatus(status)
        case .lazy(let lazy, _): lazy.setStatus(status)
        case .dropped: break
        }
    }

    /// Adds an event to the span (a lazy span is made first: events are rare).
    package func addEvent(_ event: SpanEvent) {
        switch storage {
        case .inner(let inner, _): inner.addEvent(event)
        case .lazy(let lazy, _): lazy.made().addEvent(event)
        case .dropped: break
        }
    }

    /// Records an error on the span (a lazy span is made first).
    package func recordError<Instant: TracerInstant>(_ error: any Error, attributes: SpanAttributes, at instant: @autoclosure () -> Instant) {
        switch storage {
        case .inner(let inner, _): inner.recordError(error, attributes: attributes, at: instant())
        case .lazy(let lazy, _): lazy.made().recordError(error, attributes: attributes, at: instant())
        case .dropped: break
        }
    }

    /// Adds a link to the span (a lazy span is made first).
    package func addLink(_ link: SpanLink) {
        switch storage {
        case .inner(let inner, _): inner.addLink(link)
        case .lazy(let lazy, _): lazy.made().addLink(link)
        case .dropped: break
        }
    }

    /// Ends the span at `instant`: at once when it does not record, else at the next hand-over
    /// with `instant` as its end time (a lazy span is made then, if nothing needed it before).
    package func end<Instant: TracerInstant>(at instant: @autoclosure () -> Instant) {
        switch storage {
        case .inner(let inner, let ending):
            guard let ending else { return inner.end(at: instant()) }
            guard !ending.ended.exchange(true, ordering: .acquiringAndReleasing) else { return }
            ending.queue.add(inner, endedAt: instant().nanosecondsSinceEpoch)
        case .lazy(let lazy, let queue):
            guard lazy.markEnded() else { return }
            queue.add(lazy, endedAt: instant().nanosecondsSinceEpoch)
        case .dropped: break
        }
    }
}

/// A context's recording span whose inner span is not necessarily made yet (see `LazySpan`).
protocol LazyParent: AnyObject, Sendable {
    /// The context of the inner span, made now if it was not.
    func madeContext() -> ServiceContext
}

/// The lazy span a context belongs to, for whatever needs its inner span's context: a child
/// span, `traceparent`, a log line's ids.
enum LazySpanKey: ServiceContextKey {
    typealias Value = any LazyParent
}

/// A recording span whose inner span is made only when something needs it (a child span that
/// is not a finished leaf, `traceparent`, a log line's ids), else at the hand-over after it
/// ended, with its own start time. A request whose work is only statements then costs the
/// request path no span object of the exporter's, no id drawn from the system and no wake-up
/// of its tasks: the span is made off it, in a batch with the others.
final class LazySpan<Inner: Span>: LazyParent {
    private struct State {
        var operationName: String
        var attributes: SpanAttributes = [:]
        var status: SpanStatus?
        var made: Inner?
        var ended = false
    }

    let parent: ServiceContext
    let kind: SpanKind
    let start: UInt64
    private let state: Mutex<State>
    private let make: @Sendable (String, ServiceContext, SpanKind, UInt64) -> Inner

    init(
        _ operationName: String, parent: ServiceContext, kind: SpanKind, start: UInt64,
        make: @escaping @Sendable (String, ServiceContext, SpanKind, UInt64) -> Inner
    ) {
        self.parent = parent
        self.kind = kind
        self.start = start
        self.make = make
        state = Mutex(State(operationName: operationName))
    }

    /// The context work under this span runs in: its parent's, naming this span.
    var context: ServiceContext {
        var context = parent
        context[LazySpanKey.self] = self
        return context
    }

    /// The inner span, made now (with what was set so far) if it was not.
    func made() -> Inner {
        state.withLock { state in
            if let made = state.made { return made }
            let made = make(state.operationName, parent, kind, start)
            if !state.attributes.isEmpty { made.attributes = state.attributes }
            if let status = state.status { made.setStatus(status) }
            state.made = made
            state.attributes = [:]
            return made
        }
    }

    func madeContext() -> ServiceContext { made().context }

    var operationName: String {
        get { state.withLock { $0.made?.operationName ?? $0.operationName } }
        set {
            state.withLock { state in
                if let made = state.made { made.operationName = newValue } else { state.operationName = newValue }
            }
        }
    }

    var attributes: SpanAttributes {
        get { state.withLock { $0.made?.attributes ?? $0.attributes } }
        set {
            state.withLock { state in
                if let made = state.made { made.attributes = newValue } else { state.attributes = newValue }
            }
        }
    }

    func setStatus(_ status: SpanStatus) {
        state.withLock { state in
            if let made = state.made { made.setStatus(status) } else { state.status = status }
        }
    }

    var isEnded: Bool { state.withLock { $0.ended } }

    /// Marks the span ended; false when it already was.
    func markEnded() -> Bool {
        state.withLock { state in
            defer { state.ended = true }
            return !state.ended
        }
    }
}

/// A leaf span recorded after it ran (see `FinishedSpanRecorder`), waiting to be made.
struct FinishedSpan: Sendable {
    let operationName: String
    let parent: ServiceContext
    let kind: SpanKind
    let start: UInt64
    let end: UInt64
    let attributes: SpanAttributes
    let error: (any Error)?
}

/// Ended spans, and leaf spans recorded after they ran, waiting to be handed over to their
/// tracer.
final class SpanEndQueue<S: Span>: Sendable {
    private struct State {
        var waiting: [(span: S, at: UInt64)] = []
        var finished: [FinishedSpan] = []
        var lazy: [(span: LazySpan<S>, at: UInt64)] = []
        var direct = false
    }
    private let state = Mutex(State())

    /// Queues `span`'s end at `at` (nanoseconds since the epoch), or ends it now after a final
    /// hand-over.
    func add(_ span: S, endedAt at: UInt64) {
        let now = state.withLock { state -> Bool in
            if state.direct { return true }
            state.waiting.append((span, at))
            return false
        }
        if now { span.end(at: EndInstant(nanosecondsSinceEpoch: at)) }
    }

    /// Queues the end of lazy `span` at `at`, or makes and ends it now after a final hand-over.
    func add(_ span: LazySpan<S>, endedAt at: UInt64) {
        let now = state.withLock { state -> Bool in
            if state.direct { return true }
            state.lazy.append((span, at))
            return false
        }
        if now { span.made().end(at: EndInstant(nanosecondsSinceEpoch: at)) }
    }

    /// Queues `span`; false after a final hand-over, when the caller must make it now.
    func add(_ span: FinishedSpan) -> Bool {
        state.withLock { state in
            if state.direct { return false }
            state.finished.append(span)
            return true
        }
    }

    /// Makes every waiting finished span with `make` (which returns it with its end time),
    /// then ends every waiting span at its recorded time, in the order they ended; with
    /// `finally`, what comes later is not queued.
    ///
    /// Every span is made first and all are ended after, in one tight loop: an end is what
    /// wakes the exporter's tasks (swift-otel hands each end through a stream), and ends that
    /// come faster than those tasks wake are taken in one wake-up, where ends spaced out by the
    /// work of making the next span would wake them once each.
    func handOver(finally: Bool = false, making make: (FinishedSpan) -> (S, UInt64)) {
        let (ends, finished, lazy) = state.withLock { state in
            if finally { state.direct = true }
            defer {
                state.waiting.removeAll(keepingCapacity: true)
                state.finished.removeAll(keepingCapacity: true)
                state.lazy.removeAll(keepingCapacity: true)
            }
            return (state.waiting, state.finished, state.lazy)
        }
        guard !(ends.isEmpty && finished.isEmpty && lazy.isEmpty) else { return }
        var toEnd: [(span: S, at: UInt64)] = []
        toEnd.reserveCapacity(ends.count + finished.count + lazy.count)
        // Leaves first: making one makes its lazy parent, with the parent's own start time.
        for span in finished { toEnd.append(make(span)) }
        for (span, at) in lazy { toEnd.append((span.made(), at)) }
        toEnd += ends
        for (span, at) in toEnd { span.end(at: EndInstant(nanosecondsSinceEpoch: at)) }
    }

    var count: Int { state.withLock { $0.waiting.count + $0.finished.count + $0.lazy.count } }
}

/// A recorded end time.
struct EndInstant: TracerInstant {
    let nanosecondsSinceEpoch: UInt64

    static func < (lhs: EndInstant, rhs: EndInstant) -> Bool { lhs.nanosecondsSinceEpoch < rhs.nanosecondsSinceEpoch }
}
