import CairnStorage
import CairnTestSupport
import Synchronization
import Testing
import Tracing

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
