import Logging
import NIOCore
package import SQLKit
import Synchronization

/// The connection of an open transaction, as ``Database/transaction(_:)`` hands it to its body:
/// every statement runs inside the transaction, and work registered with
/// ``Database/afterCommit(on:_:)`` runs once the transaction has committed — on both engines,
/// and never when it rolls back. On SQLite each unit of a group commit has its own, so a unit
/// rolled back to its savepoint drops its work while the others' still runs.
final class Transaction: SQLDatabaseWrapper {
    let base: any SQLDatabase
    private let pending = Mutex<[@Sendable () -> Void]>([])

    init(_ base: any SQLDatabase) {
        self.base = base
    }

    func afterCommit(_ work: @escaping @Sendable () -> Void) {
        pending.withLock { $0.append(work) }
    }

    /// Runs the registered work, once; called after COMMIT succeeded.
    func committed() {
        for work in pending.withLock({ work in
            defer { work = [] }; return work
        }) { work() }
    }

    func execute(sql query: any SQLExpression, _ onRow: @escaping @Sendable (any SQLRow) -> Void) async throws {
        try await base.execute(sql: query, onRow)
    }
}

/// A connection that wraps another (a transaction's view, a traced connection): everything a
/// wrapper does not change is the wrapped connection's.
protocol SQLDatabaseWrapper: SQLDatabase {
    /// The wrapped connection.
    var base: any SQLDatabase { get }
}

extension SQLDatabaseWrapper {
    var logger: Logger { base.logger }
    var eventLoop: any EventLoop { base.eventLoop }
    var version: (any SQLDatabaseReportedVersion)? { base.version }
    var dialect: any SQLDialect { base.dialect }
    var queryLogLevel: Logger.Level? { base.queryLogLevel }

    func execute(sql query: any SQLExpression, _ onRow: @escaping @Sendable (any SQLRow) -> Void) -> EventLoopFuture<Void> {
        base.execute(sql: query, onRow)
    }

    /// Statements of a session run on the wrapper, so its behaviour holds for them too.
    func withSession<R>(_ closure: @escaping @Sendable (any SQLDatabase) async throws -> R) async throws -> R {
        try await closure(self)
    }
}

extension Database {
    /// Runs `work` when the transaction `db` belongs to has committed; at once when `db` is
    /// not a transaction's connection (a plain read or autocommit write has nothing to wait for).
    package static func afterCommit(on db: any SQLDatabase, _ work: @escaping @Sendable () -> Void) {
        if let transaction = (db as? Transaction) ?? ((db as? TracedSQLDatabase)?.base as? Transaction) {
            transaction.afterCommit(work)
        } else {
            work()
        }
    }

    /// Runs `body` inside the caller's open transaction `db` when one is given (its changes
    /// commit or roll back with the caller's), else in a new transaction of its own.
    /// - Throws: what `body` throws, or the database's error.
    package func transaction<R: Sendable>(
        joining db: (any SQLDatabase)?, _ body: @escaping @Sendable (any SQLDatabase) async throws -> R
    ) async throws -> R {
        if let db { return try await body(db) }
        return try await transaction(body)
    }
}
