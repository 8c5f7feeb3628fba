package import Logging
import PostgresNIO
package import SQLKit
import Synchronization

/// Small notifications between nodes: `LISTEN/NOTIFY` on PostgreSQL, an in-process fan-out on
/// SQLite (a single node). Payloads are short strings (ids, never row contents: PostgreSQL
/// caps a payload at 8000 bytes); receivers read the rows they need.
///
/// Delivery is at most once and only to live subscribers; every consumer also polls slowly,
/// so a lost notification delays work but never loses it.
package final class EventBus: Sendable {
    private let database: Database
    private let logger: Logger
    private let subscribers = Mutex<[String: [UInt64: AsyncStream<String>.Continuation]]>([:])
    private let nextId = Atomic<UInt64>(0)

    /// Creates the bus over a database.
    package init(database: Database, logger: Logger) {
        self.database = database
        self.logger = logger
    }

    /// Publishes `payload` on `channel`. With `db` inside a transaction, the notification is
    /// delivered when (and only if) the transaction commits, on both engines: PostgreSQL
    /// delivers `NOTIFY` at commit, and on SQLite the in-process delivery is after-commit work.
    package func publish(channel: String, payload: String, on db: (any SQLDatabase)? = nil) async throws {
        if database.dialect == .postgres {
            let query: SQLQueryString = "SELECT pg_notify(\(bind: channel), \(bind: payload))"
            if let db {
                try await db.raw(query).run()
            } else {
                // Outside a transaction (job claims and completions announce every batch):
                // prepared, so it costs one round trip and no planning.
                _ = try await database.readRows(Notify.self, [.text(channel), .text(payload)]) { _ in () }
            }
        } else if let db {
            Database.afterCommit(on: db) { [weak self] in self?.deliverLocally(channel: channel, payload: payload) }
        } else {
            deliverLocally(channel: channel, payload: payload)
        }
    }

    /// `pg_notify` as a prepared statement.
    private enum Notify: PreparedRead {
        static let name = "cairn_storage_notify"
        static let sql = "SELECT pg_notify($1, $2)"
    }

    private func deliverLocally(channel: String, payload: String) {
        let targets = subscribers.withLock { Array(($0[channel] ?? [:]).values) }
        for continuation in targets { continuation.yield(payload) }
    }

    /// Notifications on `channel` until the consuming task is cancelled. On PostgreSQL a
    /// dedicated connection LISTENs, reconnecting after errors.
    ///
    /// `onListening` runs each time the subscription starts receiving: at once on SQLite; on
    /// PostgreSQL when `LISTEN` has been acknowledged, and again after every reconnect. What was
    /// published before that moment is not delivered, so a consumer that must not miss anything
    /// re-reads its source of truth then.
    package func subscribe(channel: String, onListening: (@Sendable () -> Void)? = nil) -> AsyncStream<String> {
        let (stream, continuation) = AsyncStream<String>.makeStream(bufferingPolicy: .bufferingNewest(1024))
        let id = nextId.wrappingAdd(1, ordering: .relaxed).newValue
        subscribers.withLock { $0[channel, default: [:]][id] = continuation }
        let logger = self.logger
        let listener: Task<Void, Never>? = database.postgresClient.map { client in
            Task {
                while !Task.isCancelled {
                    do {
                        try await client.withConnection { connection in
                            try await connection.listen(on: channel) { notifications in
                                // listen(on:) calls this only once the server has acknowledged LISTEN.
                                onListening?()
                                for try await notification in notifications {
                                    continuation.yield(notification.payload)
                                }
                            }
                        }
                    } catch {
                        if Task.isCancelled { break }
                        logger.warning("event bus listener reconnecting", metadata: ["channel": .string(channel)])
                        try? await Task.sleep(for: .seconds(1))
                    }
                }
            }
        }
        if database.postgresClient == nil { onListening?() }
        continuation.onTermination = { [weak self] _ in
            listener?.cancel()
            _ = self?.subscribers.withLock { $0[channel]?.removeValue(forKey: id) }
        }
        return stream
    }
}
