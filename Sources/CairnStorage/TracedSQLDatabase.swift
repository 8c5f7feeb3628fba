import Foundation
import Logging
import NIOCore
import SQLKit
import Tracing

/// A connection that records one client span per statement, with the OpenTelemetry database
/// semantic conventions: `db.system.name` (and the older `db.system`) `sqlite` or
/// `postgresql`, `db.operation.name` (the statement's first keyword) and `db.collection.name`
/// (the table after FROM/INTO/UPDATE, when plain). Never the statement's bound values, nor its
/// text: a few statements inline values that are not binds.
///
/// Only statements run under a recording span get one (a request, a job attempt): the job
/// worker's and listeners' polling would otherwise start a trace of its own every second.
final class TracedSQLDatabase: SQLDatabaseWrapper {
    let base: any SQLDatabase
    let system: String

    init(_ base: any SQLDatabase, system: String) {
        self.base = base
        self.system = system
    }

    func execute(sql query: any SQLExpression, _ onRow: @escaping @Sendable (any SQLRow) -> Void) async throws {
        try await Self.withStatementSpan(
            {
                var serializer = SQLSerializer(database: base)
                query.serialize(to: &serializer)
                return TraceContext.statementName(serializer.sql)
            }(), system: system
        ) { try await base.execute(sql: query, onRow) }
    }

    /// Runs one statement's `body` in a client span named by `statement` (see `TraceContext.statementName`), when
    /// a recording span is active; else runs it untraced. `statement` is only worked out for a
    /// span that records: serialising and reading the SQL costs more than the statement's
    /// bookkeeping on a hot read.
    ///
    /// A statement is a leaf: with a tracer that records finished spans, only its times are taken
    /// here and its span is made after it ran, off the request path.
    static func withStatementSpan<R>(
        _ statement: @autoclosure () -> (operation: String, collection: String?), system: String, _ body: () async throws -> R
    ) async throws -> R {
        guard let tracer = TraceContext.tracer, let parent = ServiceContext.current, TraceContext.activeSpan(in: parent) != nil else {
            return try await body()
        }
        let (operation, collection) = statement()
        let name = collection.map { "\(operation) \($0)" } ?? operation
        var attributes = SpanAttributes()
        attributes.set("db.system.name", value: .string(system))
        attributes.set("db.system", value: .string(system))
        attributes.set("db.operation.name", value: .string(operation))
        if let collection { attributes.set("db.collection.name", value: .string(collection)) }
        if let recorder = TraceContext.finishedSpanRecorder {
            let start = DefaultTracerClock.now.nanosecondsSinceEpoch
            do {
                let result = try await body()
                recorder.recordFinishedSpan(
                    name, parent: parent, kind: .client, start: start, end: DefaultTracerClock.now.nanosecondsSinceEpoch, attributes: attributes,
                    error: nil)
                return result
            } catch {
                recorder.recordFinishedSpan(
                    name, parent: parent, kind: .client, start: start, end: DefaultTracerClock.now.nanosecondsSinceEpoch, attributes: attributes,
                    error: error)
                throw error
            }
        }
        let span: any Span = tracer.startSpan(name, context: parent, ofKind: .client)
        defer { span.end() }
        span.attributes = attributes
        do {
            return try await ServiceContext.$current.withValue(TraceContext.context(for: span)) { try await body() }
        } catch {
            span.recordError(error)
            span.setStatus(.init(code: .error))
            throw error
        }
    }
}

extension Database {
    /// `db` wrapped so its statements are traced, when a tracer is installed; else `db` itself.
    func traced(_ db: any SQLDatabase) -> any SQLDatabase {
        guard TraceContext.isEnabled else { return db }
        return TracedSQLDatabase(db, system: dialect == .postgres ? "postgresql" : "sqlite")
    }
}
