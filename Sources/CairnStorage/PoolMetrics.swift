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

    /// Work holding a connection, per pool label, across the process.
    private static let inUse = Mutex([String: Int]())

    /// Creates the metrics of `pool` with `capacity` connections.
    init(pool: String, capacity: Int) {
        self.pool = pool
        self.capacity = capacity
        publish(Self.inUse.withLock { $0[pool, default: 0] })
    }

    /// Records the wait to acquire a connection that began at `asked`.
    func waited(since asked: ContinuousClock.Instant) {
        let elapsed = (ContinuousClock.now - asked).components
        // Made per use: metrics made before the Prometheus bootstrap would stay no-ops.
        Timer(label: "cairn_db_pool_acquire_wait_seconds", dimensions: [("pool", pool)], preferredDisplayUnit: .seconds)
            .recordNanoseconds(elapsed.seconds * 1_000_000_000 + elapsed.attoseconds / 1_000_000_000)
    }

    /// Counts `body` as holding a connection while it runs.
    func using<R>(_ body: () async throws -> R) async rethrows -> R {
        change(by: 1)
        defer { change(by: -1) }
        return try await body()
    }

    private func change(by delta: Int) {
        publish(
            Self.inUse.withLock { counts in
                counts[pool, default: 0] += delta
                return counts[pool, default: 0]
            })
    }

    private func publish(_ count: Int) {
        Gauge(label: "cairn_db_pool_connections_in_use", dimensions: [("pool", pool)]).record(count)
        Gauge(label: "cairn_db_pool_connections_idle", dimensions: [("pool", pool)]).record(max(0, capacity - count))
    }
}
