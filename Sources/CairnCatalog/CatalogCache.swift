import CairnStorage
import Foundation
import Synchronization

/// Whether an answer came from the cache.
package enum CacheStatus: String, Sendable {
    /// Fresh from the cache.
    case hit
    /// Read from the database (and now cached).
    case miss
    /// From the cache after its TTL, because the database could not answer.
    case stale
}

/// An in-process cache with a TTL, a stale window and a size bound, keyed per tenant.
///
/// Invalidation is per tenant: a write bumps the tenant's generation and every entry of an
/// older generation stops being visible at once (and is reclaimed by the next sweep). Writes are
/// rare next to reads in a catalog, so coarse invalidation costs little and cannot miss a list
/// page that a write changed.
final class CatalogCache<Value: Sendable>: Sendable {
    struct Entry {
        var value: Value
        var generation: UInt64
        var storedAt: ContinuousClock.Instant
    }

    struct State {
        var entries: [String: Entry] = [:]
        var generations: [String: UInt64] = [:]
    }

    private let state = Mutex(State())
    let ttl: Duration
    let staleFor: Duration
    let capacity: Int
    /// Entry ages are measured on this clock's monotonic instant.
    let clock: any CairnClock

    init(ttl: Duration, staleFor: Duration, capacity: Int, clock: any CairnClock = SystemClock()) {
        self.ttl = ttl
        self.staleFor = staleFor
        self.capacity = max(16, capacity)
        self.clock = clock
    }

    /// The tenant's current generation (a read started now stores under it).
    func generation(tenant: String) -> UInt64 {
        state.withLock { $0.generations[tenant] ?? 0 }
    }

    /// The entry for `key` of the tenant's current generation: fresh or stale (within the
    /// stale window), or nil.
    func lookup(tenant: String, key: String) -> (value: Value, fresh: Bool)? {
        let now = clock.instant
        return state.withLock { state in
            guard let entry = state.entries[key] else { return nil }
            let age = entry.storedAt.duration(to: now)
            guard entry.generation == (state.generations[tenant] ?? 0), age < ttl + staleFor else {
                state.entries[key] = nil
                return nil
            }
            return (entry.value, age < ttl)
        }
    }

    /// Stores `value` if the tenant is still at `generation` (a write in between means the
    /// value may already be outdated, so it is dropped).
    func store(tenant: String, key: String, value: Value, generation: UInt64) {
        let now = clock.instant
        state.withLock { state in
            guard (state.generations[tenant] ?? 0) == generation else { return }
            state.entries[key] = Entry(value: value, generation: generation, storedAt: now)
            if state.entries.count > capacity { sweep(&state, now: now) }
        }
    }

    /// Makes every entry of the tenant invisible.
    func invalidate(tenant: String) {
        state.withLock { $0.generations[tenant, default: 0] &+= 1 }
    }

    /// Entries held (for the size gauge and tests).
    var count: Int { state.withLock { $0.entries.count } }

    /// Drops entries past the stale window, then the oldest tenth until under capacity.
    private func sweep(_ state: inout State, now: ContinuousClock.Instant) {
        let horizon = ttl + staleFor
        let generations = state.generations
        // Entries of an old generation are unreachable; their tenant prefix is the key's start.
        state.entries = state.entries.filter { key, entry in
            guard entry.storedAt.duration(to: now) < horizon else { return false }
            let tenant = key.prefix { $0 != "\u{1F}" }
            return entry.generation == (generations[String(tenant)] ?? 0)
        }
        guard state.entries.count > capacity * 9 / 10 else { return }
        let excess = state.entries.count - capacity * 9 / 10
        let oldest = state.entries.sorted { $0.value.storedAt < $1.value.storedAt }.prefix(excess)
        for (key, _) in oldest { state.entries[key] = nil }
    }
}

/// Runs at most one load per key at a time: concurrent callers for one key await the same
/// unstructured task, so one caller's cancellation never fails the others.
final class SingleFlight<Value: Sendable>: Sendable {
    private let flights = Mutex<[String: Task<Value, any Error>]>([:])

    /// The result of `load` for `key`, shared with every concurrent caller of the same key.
    func run(key: String, _ load: @escaping @Sendable () async throws -> Value) async throws -> Value {
        let task = flights.withLock { flights -> Task<Value, any Error> in
            if let running = flights[key] { return running }
            let task = Task<Value, any Error> {
                defer { _ = self.flights.withLock { $0.removeValue(forKey: key) } }
                return try await load()
            }
            flights[key] = task
            return task
        }
        return try await task.value
    }
}
