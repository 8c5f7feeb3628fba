import CairnServer
import CairnTestSupport
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
        let span = RecordingSpan(operationName, recording: sampled.load(ordering: .relaxed))
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
