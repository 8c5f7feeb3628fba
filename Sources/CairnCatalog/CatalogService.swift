import CairnHTTP
package import CairnStorage
import Foundation
import HTTPTypes
package import Logging
import Metrics
package import NIOCore
package import ServiceLifecycle
import Synchronization

/// Catalog cache and resilience settings.
package struct CatalogSettings: Sendable {
    /// How long a cached product or list page is fresh (`CAIRN_CATALOG_CACHE_TTL`, default 30 s).
    package var cacheTTL: Duration = .seconds(30)
    /// How long past its TTL an entry may still be served, marked stale, while the database
    /// cannot answer (default 10 min).
    package var staleFor: Duration = .seconds(600)
    /// Entries per cache (`CAIRN_CATALOG_CACHE_SIZE`, default 10,000 products and 10,000 pages).
    package var cacheCapacity = 10_000
    /// Budget of one database read (`CAIRN_CATALOG_READ_TIMEOUT`, default 2 s).
    package var readTimeout: Duration = .seconds(2)
    /// Consecutive failed reads that open the circuit (default 5).
    package var breakerThreshold = 5
    /// How long the circuit stays open before a probe (default 5 s).
    package var breakerCooldown: Duration = .seconds(5)
    /// Uncached database reads in flight on the node (`CAIRN_CATALOG_MAX_READS`, default 8, half
    /// the PostgreSQL pool).
    package var maxReads = 8
    /// Of those, one tenant's (`CAIRN_CATALOG_MAX_READS_PER_TENANT`, default 4): its slow
    /// queries wait for its own slots, inside its own read deadlines.
    package var maxReadsPerTenant = 4

    /// Creates the defaults.
    package init() {}
}

/// What a cached product read holds: the product, or its absence (404s are cached too, and
/// invalidated like everything else on the next write).
struct ProductSlot: Sendable {
    var product: Product?
}

/// A read through the cache: the value and where it came from.
package struct CatalogRead<Value: Sendable>: Sendable {
    /// The value.
    package var value: Value
    /// `hit`, `miss` or `stale`.
    package var status: CacheStatus
}

/// The catalog's read path (cache, single-flight, deadline, circuit breaker) and write path
/// (store, then invalidation on every node over the EventBus).
package final class CatalogService: Sendable {
    /// The EventBus channel of invalidations; the payload is a tenant id.
    package static let channel = "cairn_catalog"

    /// Product persistence.
    package let store: ProductStore
    let bus: EventBus
    let settings: CatalogSettings
    let logger: Logger
    let products: CatalogCache<ProductSlot>
    let pages: CatalogCache<ByteBuffer>
    let productFlights = SingleFlight<ProductSlot>()
    let pageFlights = SingleFlight<ByteBuffer>()
    /// One breaker per tenant guarding its database reads: a tenant whose reads fail or time
    /// out opens only its own circuit.
    private let breakers = Mutex<[String: CircuitBreaker]>([:])
    /// Database reads shared fairly between tenants.
    package let readSlots: FairSlots
    private let clock: any CairnClock
    private let reads = Atomic<Int>(0)
    private let testDelays = Mutex<[String: Duration]>([:])
    /// Tenants whose circuit is not closed, exported as `cairn_catalog_circuits_open`.
    private let openCircuits = Atomic<Int>(0)
    private let openGauge = Gauge(label: "cairn_catalog_circuits_open")
    private let tripCounter = Counter(label: "cairn_catalog_circuit_trips_total")

    private let cacheCounters: [CacheStatus: Counter]
    private let hitRatio = Gauge(label: "cairn_catalog_cache_hit_ratio")
    private let lookups = Mutex<(hits: Int, total: Int)>((0, 0))
    private let readCounter = Counter(label: "cairn_catalog_db_reads_total")
    private let readFailures = Counter(label: "cairn_catalog_db_read_failures_total")
    private let entriesGauge = Gauge(label: "cairn_catalog_cache_entries")

    /// Creates the service; cache ages and the breaker's cooldown are measured on `clock`.
    package init(store: ProductStore, bus: EventBus, settings: CatalogSettings, logger: Logger, clock: any CairnClock = SystemClock()) {
        self.store = store
        self.bus = bus
        self.settings = settings
        self.logger = logger
        products = CatalogCache(ttl: settings.cacheTTL, staleFor: settings.staleFor, capacity: settings.cacheCapacity, clock: clock)
        pages = CatalogCache(ttl: settings.cacheTTL, staleFor: settings.staleFor, capacity: settings.cacheCapacity, clock: clock)
        self.clock = clock
        readSlots = FairSlots(capacity: settings.maxReads, perTenant: settings.maxReadsPerTenant)
        openGauge.record(0)
        var counters: [CacheStatus: Counter] = [:]
        for status in [CacheStatus.hit, .miss, .stale] {
            counters[status] = Counter(label: "cairn_catalog_cache_requests_total", dimensions: [("result", status.rawValue)])
        }
        cacheCounters = counters
    }

    /// Database reads made by the catalog's read path so far (single-flight makes concurrent
    /// misses of one key count once).
    package var databaseReads: Int { reads.load(ordering: .relaxed) }

    /// Test hook: every database read of the read path first waits this long, holding its read
    /// slot even past its deadline (so tests can hold many misses in flight, or play a tenant's
    /// slow queries); for one
    /// tenant, or every tenant when `tenantId` is nil. Zero in production.
    package func setReadDelayForTesting(_ delay: Duration, tenantId: String? = nil) {
        testDelays.withLock { $0[tenantId ?? ""] = delay }
    }

    /// The circuit breaker of `tenantId`'s database reads, made on first use. Breakers that are
    /// closed are forgotten when more than 10,000 tenants have one (a closed breaker with no
    /// failures is the same as a new one; a few failures may be forgotten).
    package func breaker(tenantId: String) -> CircuitBreaker {
        breakers.withLock { breakers in
            if let breaker = breakers[tenantId] { return breaker }
            if breakers.count >= 10_000 { breakers = breakers.filter { $0.value.state != .closed } }
            let breaker = CircuitBreaker(failureThreshold: settings.breakerThreshold, cooldown: settings.breakerCooldown, clock: clock) {
                [weak self] from, to in
                self?.circuitChanged(tenantId: tenantId, from: from, to: to)
            }
            breakers[tenantId] = breaker
            return breaker
        }
    }

    private func count(_ status: CacheStatus) {
        cacheCounters[status]?.increment()
        let ratio = lookups.withLock { lookups -> Double in
            lookups.total += 1
            if status == .hit { lookups.hits += 1 }
            return Double(lookups.hits) / Double(lookups.total)
        }
        hitRatio.record(ratio)
    }

    /// Metrics and logs of one tenant's circuit changing state.
    private func circuitChanged(tenantId: String, from: CircuitBreaker.State, to: CircuitBreaker.State) {
        if to == .open {
            tripCounter.increment()
            logger.warning("catalog circuit opened: the tenant's database reads are failing", metadata: ["tenant_id": .string(tenantId)])
        }
        // Open and half-open both count as not closed.
        if from == .closed {
            openGauge.record(openCircuits.add(1, ordering: .relaxed).newValue)
        } else if to == .closed {
            openGauge.record(openCircuits.subtract(1, ordering: .relaxed).newValue)
            logger.notice("catalog circuit closed: the tenant's database reads recovered", metadata: ["tenant_id": .string(tenantId)])
        }
    }

    /// One guarded database read of a tenant: its breaker, then within the deadline a fair read
    /// slot and the read; counters.
    private func guardedRead<R: Sendable>(tenantId: String, _ body: @escaping @Sendable () async throws -> R) async throws -> R {
        let delay = testDelays.withLock { $0[tenantId] ?? $0[""] ?? .zero }
        let timeout = settings.readTimeout
        let slots = readSlots
        do {
            return try await breaker(tenantId: tenantId).call {
                self.reads.add(1, ordering: .relaxed)
                self.readCounter.increment()
                return try await withDeadline(timeout) {
                    try await slots.withSlot(tenantId: tenantId) {
                        // Not cancellable, as a query the database runs on after its caller gave up.
                        if delay > .zero { await Task { try? await Task.sleep(for: delay) }.value }
                        return try await body()
                    }
                }
            }
        } catch let error as CircuitBreaker.OpenError {
            throw error
        } catch {
            readFailures.increment()
            throw error
        }
    }

    /// The cached-read algorithm shared by products and pages.
    private func cached<Value: Sendable>(
        cache: CatalogCache<Value>, flights: SingleFlight<Value>, tenant: String, key: String,
        load: @escaping @Sendable () async throws -> Value
    ) async throws -> CatalogRead<Value> {
        let fullKey = tenant + "\u{1F}" + key
        let found = cache.lookup(tenant: tenant, key: fullKey)
        if let found, found.fresh {
            count(.hit)
            return CatalogRead(value: found.value, status: .hit)
        }
        let generation = cache.generation(tenant: tenant)
        do {
            let value = try await flights.run(key: "\(generation)\u{1F}" + fullKey) {
                let value = try await self.guardedRead(tenantId: tenant, load)
                cache.store(tenant: tenant, key: fullKey, value: value, generation: generation)
                return value
            }
            entriesGauge.record(products.count + pages.count)
            count(.miss)
            return CatalogRead(value: value, status: .miss)
        } catch {
            if let found {
                count(.stale)
                return CatalogRead(value: found.value, status: .stale)
            }
            if let open = error as? CircuitBreaker.OpenError {
                throw AppError(
                    .serviceUnavailable, code: .unavailable, detail: "The catalog database is not answering; try again shortly.",
                    headers: [.retryAfter: String(open.retryAfter)])
            }
            if error is CancellationError { throw error }
            logger.warning("catalog read failed", metadata: ["error.type": .string(String(reflecting: type(of: error)))])
            let retry = CircuitBreaker.seconds(settings.breakerCooldown)
            throw AppError(
                .serviceUnavailable, code: .unavailable, detail: "The catalog database is not answering; try again shortly.",
                headers: [.retryAfter: String(retry)])
        }
    }

    /// A product by id through the cache.
    /// - Throws: 503 `unavailable` (with `Retry-After`) when the database cannot answer and
    ///   nothing is cached.
    package func product(id: String, tenantId: String) async throws -> CatalogRead<Product?> {
        let store = self.store
        let read = try await cached(cache: products, flights: productFlights, tenant: tenantId, key: "id\u{1F}" + id) {
            ProductSlot(product: try await store.get(id: id, tenantId: tenantId))
        }
        return CatalogRead(value: read.value.product, status: read.status)
    }

    /// A product by SKU through the cache.
    /// - Throws: 503 `unavailable` as `product(id:tenantId:)`.
    package func product(sku: String, tenantId: String) async throws -> CatalogRead<Product?> {
        let store = self.store
        let read = try await cached(cache: products, flights: productFlights, tenant: tenantId, key: "sku\u{1F}" + sku) {
            ProductSlot(product: try await store.get(sku: sku, tenantId: tenantId))
        }
        return CatalogRead(value: read.value.product, status: read.status)
    }

    /// A list page (its JSON body `{items, nextCursor}`) through the cache.
    /// - Throws: 503 `unavailable` as `product(id:tenantId:)`.
    package func page(
        tenantId: String, filter: ProductFilter, sort: ProductSort, descending: Bool, limit: Int, after: ProductCursor?
    ) async throws -> CatalogRead<ByteBuffer> {
        let store = self.store
        let key = "list\u{1F}\(sort.rawValue)\u{1F}\(descending)\u{1F}\(limit)\u{1F}\(after?.encoded ?? "")\u{1F}" + filter.cacheKey
        return try await cached(cache: pages, flights: pageFlights, tenant: tenantId, key: key) {
            let page = try await store.list(tenantId: tenantId, filter: filter, sort: sort, descending: descending, limit: limit, after: after)
            var writer = JSONWriter(capacity: 512 * max(1, page.items.count))
            Page(items: page.items, nextCursor: page.nextCursor).writeJSON(to: &writer)
            return writer.buffer
        }
    }

    /// Drops the tenant's cached entries on this node and tells every other node to do the
    /// same. Called after every committed write.
    package func invalidate(tenantId: String) async {
        invalidateLocally(tenantId: tenantId)
        do {
            try await bus.publish(channel: Self.channel, payload: tenantId)
        } catch {
            // Other nodes then serve the old entry until its TTL ends; the write itself stands.
            logger.error("catalog invalidation could not be published", metadata: ["tenant": .string(tenantId)])
        }
    }

    /// Drops the tenant's cached entries on this node only.
    package func invalidateLocally(tenantId: String) {
        products.invalidate(tenant: tenantId)
        pages.invalidate(tenant: tenantId)
    }

    /// Subscribes to the catalog channel and invalidates the tenants named there, until the
    /// calling task is cancelled. `onListening` runs each time the subscription starts
    /// receiving, `onInvalidation` after each tenant's entries were dropped (for callers that
    /// wait for other nodes' writes to reach this node).
    package func listenForInvalidations(
        onListening: (@Sendable () -> Void)? = nil, onInvalidation: (@Sendable (_ tenantId: String) -> Void)? = nil
    ) async {
        for await tenant in bus.subscribe(channel: Self.channel, onListening: onListening) {
            invalidateLocally(tenantId: tenant)
            onInvalidation?(tenant)
        }
    }

    /// The background service that applies other nodes' invalidations to this node's cache.
    package func makeInvalidationListener() -> some Service {
        InvalidationListener(catalog: self)
    }
}

/// Applies other nodes' invalidations until shutdown.
struct InvalidationListener: Service {
    let catalog: CatalogService

    func run() async throws {
        // Cancelling the loop on shutdown ends the stream, which ends the LISTEN.
        await cancelWhenGracefulShutdown {
            await catalog.listenForInvalidations()
        }
    }
}
