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
                return Self.describe(serializer.sql)
            }(), system: system
        ) { try await base.execute(sql: query, onRow) }
    }

    /// Runs one statement's `body` in a client span named by `statement` (see `describe`), when
    /// a recording span is active; else runs it untraced. `statement` is only worked out for a
    /// span that records: serialising and reading the SQL costs more than the statement's
    /// bookkeeping on a hot read.
    static func withStatementSpan<R>(
        _ statement: @autoclosure () -> (operation: String, collection: String?), system: String, _ body: () async throws -> R
    ) async throws -> R {
        guard let tracer = TraceContext.tracer, let parent = ServiceContext.current, !TraceContext.isSampledOut(parent),
            tracer.activeSpan(identifiedBy: parent) != nil
        else {
            return try await body()
        }
        let (operation, collection) = statement()
        let span: any Span = tracer.startSpan(collection.map { "\(operation) \($0)" } ?? operation, context: parent, ofKind: .client)
        defer { span.end() }
        span.attributes["db.system.name"] = system
        span.attributes["db.system"] = system
        span.attributes["db.operation.name"] = operation
        if let collection { span.attributes["db.collection.name"] = collection }
        do {
            return try await ServiceContext.$current.withValue(span.context) { try await body() }
        } catch {
            span.recordError(error)
            span.setStatus(.init(code: .error))
            throw error
        }
    }

    /// The operation (first keyword, upper-cased) and the plain table name a statement works
    /// on, read from its text without parsing it.
    static func describe(_ sql: String) -> (operation: String, collection: String?) {
        let words = sql.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\t" || $0 == "(" || $0 == "," })
        let operation = words.first.map { $0.uppercased() } ?? "SQL"
        let marker: String? =
            switch operation {
            case "SELECT", "DELETE": "FROM"
            case "INSERT": "INTO"
            case "UPDATE": "UPDATE"
            default: nil
            }
        guard let marker, let index = words.firstIndex(where: { $0.uppercased() == marker }), index + 1 < words.count else {
            return (operation, nil)
        }
        let table = words[index + 1].trimmingCharacters(in: CharacterSet(charactersIn: "\"`"))
        guard !table.isEmpty, table.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) else { return (operation, nil) }
        return (operation, table)
    }
}

extension Database {
    /// `db` wrapped so its statements are traced, when a tracer is installed; else `db` itself.
    func traced(_ db: any SQLDatabase) -> any SQLDatabase {
        guard TraceContext.isEnabled else { return db }
        return TracedSQLDatabase(db, system: dialect == .postgres ? "postgresql" : "sqlite")
    }
}
