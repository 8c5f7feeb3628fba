import CairnStorage
import Synchronization
import Testing
import Tracing

/// A span that records until it is ended, like a sampled OpenTelemetry span.
private final class RecordingSpan: Span {
    let context: ServiceContext
    private let state = Mutex<(name: String, attributes: SpanAttributes, ended: Bool)>(("", [:], false))

    init(_ name: String) {
        self.context = .topLevel
        state.withLock { $0.name = name }
    }

    var operationName: String {
        get { state.withLock { $0.name } }
        set { state.withLock { $0.name = newValue } }
    }
    var attributes: SpanAttributes {
        get { state.withLock { $0.attributes } }
        set { state.withLock { $0.attributes = newValue } }
    }
    var isRecording: Bool { state.withLock { !$0.ended } }
    func setStatus(_ status: SpanStatus) {}
    func addEvent(_ event: SpanEvent) {}
    func recordError<Instant: TracerInstant>(_ error: any Error, attributes: SpanAttributes, at instant: @autoclosure () -> Instant) {}
    func addLink(_ link: SpanLink) {}
    func end<Instant: TracerInstant>(at instant: @autoclosure () -> Instant) { state.withLock { $0.ended = true } }
}

@Suite struct TraceContextTests {
    /// Statement spans are named by their operation and plain table, read from the text.
    @Test(
        arguments: [
            ("SELECT id, title FROM tasks WHERE tenant_id = $1", "SELECT", "tasks"),
            ("select count(*) from \"jobs\" where state = 'available'", "SELECT", "jobs"),
            ("INSERT INTO notifications(id, user_id) VALUES ($1, $2)", "INSERT", "notifications"),
            ("UPDATE\n\tusers SET name = ?1", "UPDATE", "users"),
            ("DELETE FROM refresh_tokens WHERE expires_at < $1", "DELETE", "refresh_tokens"),
            ("SELECT 1", "SELECT", nil),
            ("SELECT * FROM (SELECT id FROM tasks) AS t", "SELECT", nil),
            ("WITH x AS (SELECT 1) SELECT * FROM x", "WITH", nil),
            ("BEGIN", "BEGIN", nil),
            ("   ", "SQL", nil),
        ] as [(String, String, String?)])
    func statementNames(sql: String, operation: String, collection: String?) {
        let name = TraceContext.statementName(sql)
        #expect(name.operation == operation)
        #expect(name.collection == collection)
    }

    /// The context a recording span's work runs in names that span until it ends, so work that
    /// outlives its span (a stream after its request's handler) makes no child spans of it; a
    /// span that does not record marks its context sampled-out instead.
    @Test func aRecordingSpanIsActiveInItsContextUntilItEnds() {
        let span = RecordingSpan("GET /tasks")
        let context = TraceContext.context(for: span)
        #expect(TraceContext.activeSpan(in: context)?.operationName == "GET /tasks")
        #expect(!TraceContext.isSampledOut(context))
        span.end()
        #expect(TraceContext.activeSpan(in: context) == nil)

        let dropped = NoOpTracer.NoOpSpan(context: .topLevel)
        let droppedContext = TraceContext.context(for: dropped)
        #expect(TraceContext.activeSpan(in: droppedContext) == nil)
        #expect(TraceContext.isSampledOut(droppedContext))
    }
}
