import Synchronization
package import Tracing

/// A tracer that starts every span with another tracer (swift-otel's) but hands over the ends of
/// recording spans in batches, from one task, every `interval` (issue 16).
///
/// Why: swift-otel 1.6 sends each recorded span's end through an `AsyncStream` to its tracer's
/// task, and on through a second stream and an actor to its batch processor. At a low sampling
/// rate those consumers sleep between spans, so every end costs thread wake-ups (measured at
/// 10 %: 0.7 more context switches per request than with tracing off). Ends handed over together
/// are handled in one wake-up. A span keeps its exact end time; it reaches the exporter up to
/// `interval` later. Spans that do not record are ended at once: nothing waits on them.
package final class BatchedEndTracer<Inner: Tracer>: Tracer {
    /// The spans this tracer makes.
    package typealias Span = BatchedEndSpan<Inner.Span>

    private let inner: Inner
    private let queue = SpanEndQueue<Inner.Span>()
    private let interval: Duration

    /// Wraps `inner`; ends are handed over every `interval` by ``handOverEndsPeriodically()``.
    package init(_ inner: Inner, interval: Duration = .milliseconds(100)) {
        self.inner = inner
        self.interval = interval
    }

    /// Starts a span with the inner tracer.
    package func startSpan<Instant: TracerInstant>(
        _ operationName: String, context: @autoclosure () -> ServiceContext, ofKind kind: SpanKind, at instant: @autoclosure () -> Instant,
        function: String, file fileID: String, line: UInt
    ) -> Span {
        let span = inner.startSpan(operationName, context: context(), ofKind: kind, at: instant(), function: function, file: fileID, line: line)
        return BatchedEndSpan(span, queue: span.isRecording ? queue : nil)
    }

    /// The inner tracer's active span for `context`. Ending the span returned here ends it at
    /// once, not in a batch.
    package func activeSpan(identifiedBy context: ServiceContext) -> Span? {
        inner.activeSpan(identifiedBy: context).map { BatchedEndSpan($0, queue: nil) }
    }

    /// Hands over the waiting ends. (The requirement is deprecated in swift-distributed-tracing,
    /// and Cairn flushes the exporter through its service's shutdown instead.)
    package func forceFlush() {
        queue.handOver()
    }

    /// Hands over every span ended so far; with `finally`, spans ended from then on are handed
    /// over at once (at shutdown, when no periodic hand-over follows).
    package func handOverEnds(finally: Bool = false) {
        queue.handOver(finally: finally)
    }

    /// The number of ended spans not handed over yet.
    package var waitingEnds: Int { queue.count }

    /// Hands over the waiting ends every `interval` until the task is cancelled.
    package func handOverEndsPeriodically() async {
        while !Task.isCancelled {
            do { try await Task.sleep(for: interval) } catch { break }
            queue.handOver()
        }
    }

    /// Injects through the inner tracer.
    package func inject<Carrier, Inject>(_ context: ServiceContext, into carrier: inout Carrier, using injector: Inject)
    where Inject: Injector, Carrier == Inject.Carrier {
        inner.inject(context, into: &carrier, using: injector)
    }

    /// Extracts through the inner tracer.
    package func extract<Carrier, Extract>(_ carrier: Carrier, into context: inout ServiceContext, using extractor: Extract)
    where Extract: Extractor, Carrier == Extract.Carrier {
        inner.extract(carrier, into: &context, using: extractor)
    }
}

/// A span of ``BatchedEndTracer``: the inner span, whose end, when it records, waits for the
/// next hand-over. It stops recording as soon as it is ended; a second end is ignored.
package struct BatchedEndSpan<Inner: Span>: Span {
    private let inner: Inner
    private let ending: Ending?

    /// What a recording span needs to end later: where to queue it, and whether it has ended.
    private final class Ending: Sendable {
        let queue: SpanEndQueue<Inner>
        let ended = Atomic(false)

        init(queue: SpanEndQueue<Inner>) {
            self.queue = queue
        }
    }

    fileprivate init(_ inner: Inner, queue: SpanEndQueue<Inner>?) {
        self.inner = inner
        self.ending = queue.map(Ending.init)
    }

    /// The inner span's context.
    package var context: ServiceContext { inner.context }

    /// The inner span's name.
    package var operationName: String {
        get { inner.operationName }
        nonmutating set { inner.operationName = newValue }
    }

    /// The inner span's attributes.
    package var attributes: SpanAttributes {
        get { inner.attributes }
        nonmutating set { inner.attributes = newValue }
    }

    /// Whether the inner span records and this span has not been ended.
    package var isRecording: Bool {
        guard inner.isRecording else { return false }
        return ending.map { !$0.ended.load(ordering: .acquiring) } ?? true
    }

    /// Sets the inner span's status.
    package func setStatus(_ status: SpanStatus) { inner.setStatus(status) }

    /// Adds an event to the inner span.
    package func addEvent(_ event: SpanEvent) { inner.addEvent(event) }

    /// Records an error on the inner span.
    package func recordError<Instant: TracerInstant>(_ error: any Error, attributes: SpanAttributes, at instant: @autoclosure () -> Instant) {
        inner.recordError(error, attributes: attributes, at: instant())
    }

    /// Adds a link to the inner span.
    package func addLink(_ link: SpanLink) { inner.addLink(link) }

    /// Ends the span at `instant`: at once when it does not record, else at the next hand-over
    /// with `instant` as its end time.
    package func end<Instant: TracerInstant>(at instant: @autoclosure () -> Instant) {
        guard let ending else { return inner.end(at: instant()) }
        guard !ending.ended.exchange(true, ordering: .acquiringAndReleasing) else { return }
        ending.queue.add(inner, endedAt: instant().nanosecondsSinceEpoch)
    }
}

/// Ended spans waiting to be handed over to their tracer.
final class SpanEndQueue<S: Span>: Sendable {
    private let state = Mutex<(waiting: [(span: S, at: UInt64)], direct: Bool)>(([], false))

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

    /// Ends every waiting span at its recorded time, in the order they ended.
    func handOver(finally: Bool = false) {
        let batch = state.withLock { state in
            if finally { state.direct = true }
            defer { state.waiting.removeAll(keepingCapacity: true) }
            return state.waiting
        }
        for (span, at) in batch { span.end(at: EndInstant(nanosecondsSinceEpoch: at)) }
    }

    var count: Int { state.withLock { $0.waiting.count } }
}

/// A recorded end time.
struct EndInstant: TracerInstant {
    let nanosecondsSinceEpoch: UInt64

    static func < (lhs: EndInstant, rhs: EndInstant) -> Bool { lhs.nanosecondsSinceEpoch < rhs.nanosecondsSinceEpoch }
}
