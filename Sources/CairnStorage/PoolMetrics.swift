import Metrics
import Synchronization

/// Use and wait time of one connection pool, exported as
/// `cairn_db_pool_connections_in_use{pool}`, `cairn_db_pool_connections_idle{pool}` (gauges)
/// and `cairn_db_pool_acquire_wait_seconds{pool}` (histogram).
///
/// Pools (a closed set, so the label stays bounded): `sqlite_writer` (the one writer behind
/// group commit; its wait is the time a unit queues for the next transaction), `sqlite_reader`
/// (the reader connections, shared round-robin: no acquire step, so no wait is recorded) and
/// `postgres` (postgres-nio's `PostgresClient`; its wait is from asking for a connection to
/// holding one, which includes connecting when the pool grows). Idle is the pool's capacity
/// not in use: SQLite's connections are always open; PostgreSQL's are opened on demand up to
/// the maximum. Counts are per process (a process normally opens one database).
struct PoolMetrics: Sendable {
    /// The pool's label value.
    let pool: String
    /// Connections the pool can hold.
    let capacity: Int
    /// The label's count and metric handles, shared by every pool of that label in the process.
    private let shared: Shared

    /// One label's in-use count and its metrics, made once per process.
    ///
    /// Making a `Gauge` or `Timer` asks the factory for a handler (in Prometheus, a registry
    /// lookup under a lock with its label array): done per query, that was about 3% of the
    /// server's CPU on the request path. The handles are made at the first use after the metrics
    /// system is bootstrapped and kept (bootstrapping happens once per process); before it,
    /// nothing is recorded, as the no-op factory would.
    private final class Shared: Sendable {
        struct Handles: Sendable {
            let inUse: Gauge
            let idle: Gauge
            let wait: Timer
        }
        let pool: String
        let inUse = Atomic<Int>(0)
        private let handles = Mutex<Handles?>(nil)

        init(pool: String) {
            self.pool = pool
        }

        /// The metric handles, nil while the metrics system is not bootstrapped.
        var current: Handles? {
            handles.withLock { handles in
                if let handles { return handles }
                guard !(MetricsSystem.factory is NOOPMetricsHandler) else { return nil }
                let made = Handles(
                    inUse: Gauge(label: "cairn_db_pool_connections_in_use", dimensions: [("pool", pool)]),
                    idle: Gauge(label: "cairn_db_pool_connections_idle", dimensions: [("pool", pool)]),
                    wait: Timer(label: "cairn_db_pool_acquire_wait_seconds", dimensions: [("pool", pool)], preferredDisplayUnit: .seconds))
                handles = made
                return made
            }
        }
    }

    /// The shared state of each label.
    private static let labels = Mutex([String: Shared]())

    /// Creates the metrics of `pool` with `capacity` connections.
    init(pool: String, capacity: Int) {
        self.pool = pool
        self.capacity = capacity
        self.shared = Self.labels.withLock { labels in
            if let shared = labels[pool] { return shared }
            let shared = Shared(pool: pool)
            labels[pool] = shared
            return shared
        }
        publish(shared.inUse.load(ordering: .relaxed))
    }

    /// Records the wait to acquire a connection that began at `asked`.
    func waited(since asked: ContinuousClock.Instant) {
        guard let handles = shared.current else { return }
        let elapsed = (ContinuousClock.now - asked).components
        handles.wait.recordNanoseconds(elapsed.seconds * 1_000_000_000 + elapsed.attoseconds / 1_000_000_000)
    }

    /// Counts `body` as holding a connection while it runs.
    func using<R>(_ body: () async throws -> R) async rethrows -> R {
        change(by: 1)
        defer { change(by: -1) }
        return try await body()
    }

    private func change(by delta: Int) {
        publish(shared.inUse.add(delta, ordering: .relaxed).newValue)
    }

    private func publish(_ count: Int) {
        guard let handles = shared.current else { return }
        handles.inUse.record(count)
        handles.idle.record(max(0, capacity - count))
    }
}
