package import CairnAccounts
package import CairnCatalog
import CairnConsole
package import CairnFiles
package import CairnHTTP
package import CairnJobs
package import CairnNotifications
package import CairnObjects
package import CairnOutbound
package import CairnPipelines
import CairnReports
package import CairnStorage
package import CairnTasks
import Foundation
import HTTPTypes
package import Hummingbird
import HummingbirdWebSocket
package import Logging
import Metrics
import NIOCore
package import Prometheus
import SQLKit
package import ServiceLifecycle
import Synchronization
import UnixSignals

/// Every module's migrations: the SQL files in the modules' resource bundles, and the catalog's,
/// written in Swift because its statements differ by dialect. Read once, on first use.
/// - Throws: `StorageError` `migration_files` when a bundle's files are unreadable or misnamed.
package func allMigrations() throws -> [Migration] {
    try loadedMigrations.get()
}

private let loadedMigrations = Result {
    try StorageMigrations.all() + AccountsMigrations.all() + TasksMigrations.all() + JobsMigrations.all() + IdempotencyMigrations.all()
        + NotificationsMigrations.all() + IngestMigrations.all() + PipelineMigrations.all() + CatalogMigrations.all
}

/// Process-wide observability bootstrap: swift-metrics backed by one Prometheus registry.
/// Bootstrapping is once per process (swift-metrics' rule); later calls are no-ops.
package enum Observability {
    /// The registry `/metrics` renders.
    package static let registry = PrometheusCollectorRegistry()
    private static let bootstrapped = Mutex(false)

    /// The registry's metrics in the Prometheus text format 0.0.4 (what `/metrics` answers).
    package static func exposition() -> [UInt8] {
        registry.emitToBuffer()
    }

    /// Bootstraps swift-metrics with Prometheus, once.
    package static func bootstrapMetrics() {
        let first = bootstrapped.withLock { done -> Bool in
            defer { done = true }
            return !done
        }
        guard first else { return }
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = [
            .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10),
            .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1),
            .seconds(2.5), .seconds(5), .seconds(10),
        ]
        MetricsSystem.bootstrap(factory)
    }
}

/// The wired parts of a Cairn node, for the CLI and tests.
package struct CairnComponents: Sendable {
    /// The database.
    package let database: Database
    /// Accounts use cases.
    package let accounts: AccountService
    /// Tasks persistence.
    package let tasks: TaskStore
    /// Cross-node notifications.
    package let events: EventBus
    /// Seals secrets at rest under the node's master key.
    package let secrets: SecretBox
    /// The durable job queue.
    package let jobs: JobQueue
    /// Notifications: inbox, live hub, publish API.
    package let notifications: Notifier
    /// Outbound notification channels (webhooks), delivered by jobs.
    package let channels: OutboundChannels
    /// Tenant broadcasts, run as jobs of kind `notifications.broadcast`.
    package let broadcasts: TenantBroadcasts
    /// Settings, for services built from these components.
    package let configuration: CairnConfiguration
    /// The time every module reads: token expiry, job backoff, leases, schedules, quiet hours.
    package let clock: any CairnClock
    /// The logger.
    package let logger: Logger
    /// The product catalog: cached reads, invalidating writes.
    package var catalog: CatalogService

    /// Product imports, run as jobs of kind `products.import`.
    package var productImporter: ProductImporter
    /// Uploaded files' metadata.
    package var files: FileStore
    /// Uploaded files' bytes (`CAIRN_BLOB_URL`; `<data dir>/blobs` by default).
    package var blobs: any BlobStore
    /// Tenants' pipelines.
    package var pipelines: PipelineStore
    /// Pipeline runs, jobs of kind `pipeline.run` (a service for the upkeep of its work folders).
    package var pipelineRunner: PipelineRunner
    /// Pipelines' use cases: writes with their job schedules, runs started as jobs.
    package var pipelineService: PipelineService

    /// The background services of a node: the job-status bridge, the pipeline runner, the job
    /// worker, the cron scheduler, the catalog's cache invalidation listener, notification
    /// pruning, upload expiry, the event-loop latency and data-directory disk probes and the
    /// orphaned-blob sweeper. A service group stops them last first, so everything the jobs the
    /// worker drains use comes before the worker and stops after it: the bridge, so on SIGTERM
    /// it reports the jobs the worker finished while draining, before the database closes; the
    /// pipeline runner, so its work folders are still looked after (a run cancelled during the
    /// grace loses its folder then) while the runs the worker lets finish go on. The services
    /// after the worker (scheduling, cache invalidation, pruning, expiry, probes, the sweeper)
    /// serve no job in progress, and stop while the worker drains.
    /// `worker` is the job worker to run (one made here when nil): ``runNode(components:services:)``
    /// keeps it, to start its shutdown when the signal arrives.
    package func makeServices(worker: JobWorker? = nil) -> [any Service] {
        [
            JobStatusService(center: notifications, jobs: jobs, logger: logger), pipelineRunner,
            worker ?? JobWorker(queue: jobs, logger: logger), Scheduler(queue: jobs, logger: logger), catalog.makeInvalidationListener(),
            NotificationService(center: notifications, logger: logger),
            UploadExpiryService(store: UploadStore(database: database), blobs: blobs, logger: logger),
            EventLoopProbe(), DiskProbe(path: configuration.dataDir),
            OrphanSweeper(database: database, blobs: blobs, logger: logger),
        ]
    }
}

/// Opens the database, applies migrations when configured, loads keys, and wires the modules,
/// each reading the time from `clock` (tests pass one they advance by hand). `observers` see
/// published notifications after the outbound channels do (tests use it to hold a publish open).
/// - Throws: `StorageError`, `KeyRingError` (start-up problems, each one clear line).
package func buildComponents(
    configuration: CairnConfiguration, logger: Logger, observers: [any PublishObserver] = [], clock: any CairnClock = SystemClock()
) async throws -> CairnComponents {
    // Metrics created while wiring (the catalog's gauges) bind to the backend present then.
    Observability.bootstrapMetrics()
    if configuration.databaseURL == nil || configuration.accounts.jwtSecret == nil || configuration.masterKey == nil {
        try configuration.createDataDir()
    }
    // Read before the database opens, so a broken bundle stops a node that would not migrate too.
    let migrations = try allMigrations()
    let database = try await Database.open(url: configuration.databaseURL, sqlitePath: configuration.sqlitePath, logger: logger)
    do {
        if configuration.migrateOnStart {
            try await Migrator(database: database, migrations: migrations, logger: logger).migrate()
        }
        let secrets = try await openSecrets(configuration: configuration, database: database)
        let tokens = try await makeTokenService(configuration: configuration, database: database, secrets: secrets, clock: clock)
        let components = try await wireModules(
            configuration: configuration, database: database, secrets: secrets, tokens: tokens, observers: observers, clock: clock, logger: logger)
        components.registerJobs()
        return components
    } catch {
        await database.close()
        throw error
    }
}

/// The node's secret box, under the configured master key (or the key file's, made on first
/// start), checked against the key the database's secrets were sealed with.
/// - Throws: `MasterKeyError` for a missing, unreadable or wrong master key.
private func openSecrets(configuration: CairnConfiguration, database: Database) async throws -> SecretBox {
    let generating = configuration.masterKey == nil && !FileManager.default.fileExists(atPath: configuration.masterKeyFile)
    let secrets = SecretBox(master: try configuration.masterKey ?? MasterKey.loadOrCreate(at: configuration.masterKeyFile))
    do {
        try await MasterKeyCheck.verify(secrets, on: database)
    } catch let error as MasterKeyError {
        guard generating else { throw error }
        // A key made just now for a database already sealed under another: left behind, it
        // would stand in for the right key at every later start, so it goes again.
        try? FileManager.default.removeItem(atPath: configuration.masterKeyFile)
        throw MasterKeyError(
            "no master key: this database's secrets are sealed under another master key; set CAIRN_MASTER_KEY to it (or restore \(configuration.masterKeyFile))"
        )
    } catch {
        // No canary table yet: a node started with --no-migrate before `cairn migrate`;
        // it is not ready until then, and checks the key on its next start.
    }
    return secrets
}

/// The access and refresh token service: HS256 with a configured secret, else the key ring
/// (in the database, sealed, when several nodes share PostgreSQL; in the key file otherwise).
private func makeTokenService(
    configuration: CairnConfiguration, database: Database, secrets: SecretBox, clock: any CairnClock
) async throws -> TokenService {
    var tokenSettings = TokenSettings(keyFile: configuration.keyFile)
    tokenSettings.hmacSecret = configuration.accounts.jwtSecret
    tokenSettings.keyFileSecrets = secrets
    tokenSettings.accessTokenTTL = configuration.accounts.accessTokenTTL
    tokenSettings.refreshTokenTTL = configuration.accounts.refreshTokenTTL
    tokenSettings.refreshReuseInterval = configuration.accounts.refreshReuseInterval
    if configuration.databaseURL != nil {
        // Several nodes: the ring lives in the database, sealed; nothing to copy between nodes.
        tokenSettings.keyDatabase = (database, secrets)
    }
    return try await TokenService(settings: tokenSettings, clock: clock)
}

/// Builds every module on the open database, each given only the modules it uses.
private func wireModules(
    configuration: CairnConfiguration, database: Database, secrets: SecretBox, tokens: TokenService, observers: [any PublishObserver],
    clock: any CairnClock, logger: Logger
) async throws -> CairnComponents {
    let hasher = PasswordHasher(
        cost: configuration.accounts.bcryptCost, threads: configuration.accounts.bcryptThreads, queueLimit: configuration.accounts.bcryptQueue)
    let events = EventBus(database: database, logger: logger)
    let accounts = AccountService(
        store: AccountStore(database: database, clock: clock), tokens: tokens, hasher: hasher, limits: LoginLimits(configuration.accounts),
        bus: events, erasure: .cairn, logger: logger)
    let jobs = JobQueue(store: JobStore(database: database), bus: events, settings: configuration.jobs, clock: clock)
    let catalog = CatalogService(
        store: ProductStore(database: database), bus: events, settings: configuration.catalog, logger: logger, clock: clock)
    let files = FileStore(database: database)
    let blobs = MeteredBlobStore(configuration.files.makeBlobStore(dataDir: configuration.dataDir))
    BlobMetrics.publishAll()
    let notificationStore = NotificationStore(database: database)
    let channels = OutboundChannels(
        database: database, notifications: notificationStore, accounts: accounts, jobs: jobs, settings: configuration.outbound, secrets: secrets,
        logger: logger)
    if configuration.migrateOnStart { try await channels.sealPlaintextSecrets() }
    let notifications = Notifier(
        store: notificationStore, bus: events, accounts: accounts, settings: configuration.notifications, observers: [channels] + observers,
        logger: logger, clock: clock)
    let pipelines = PipelineStore(database: database)
    var pipelineSettings = configuration.pipelines
    pipelineSettings.workDirectory = configuration.dataDir + "/pipelines"
    let runner = PipelineRunner(
        pipelines: pipelines, files: files, blobs: blobs, jobs: jobs, quotas: configuration.files.quotas, settings: pipelineSettings,
        logger: logger)
    return CairnComponents(
        database: database, accounts: accounts, tasks: TaskStore(database: database), events: events, secrets: secrets, jobs: jobs,
        notifications: notifications, channels: channels, broadcasts: TenantBroadcasts(center: notifications, jobs: jobs),
        configuration: configuration, clock: clock, logger: logger, catalog: catalog,
        productImporter: ProductImporter(catalog: catalog, jobs: jobs, files: files, blobs: blobs), files: files, blobs: blobs,
        pipelines: pipelines, pipelineRunner: runner, pipelineService: PipelineService(store: pipelines, files: files, jobs: jobs))
}

extension CairnComponents {
    /// Registers every module's job handlers on the node's queue, once, before its worker runs.
    func registerJobs() {
        BuiltInJobs.registerJobs(on: jobs)
        channels.registerJobs(on: jobs)
        broadcasts.registerJobs(on: jobs)
        productImporter.registerJobs(on: jobs)
        pipelineRunner.registerJobs(on: jobs)
    }
}

/// Builds the router: middleware order, then each module's routes.
///
/// Order (outermost first): tracing span → request id → CORS → client address → metrics → problem+json mapping → empty and dot
/// path segments refused → request log → routes.
/// Protected routes sit in authenticated groups (a child context whose identity is not
/// optional); each group's token policy, and any admin-only subgroup, is declared by its
/// controller next to its routes.
package func buildRouter(components: CairnComponents) -> Router<CairnRequestContext> {
    Observability.bootstrapMetrics()
    let routeIndex = RouteIndex()
    let router = Router(context: CairnRequestContext.self, options: .autoGenerateHeadEndpoints)
    addMiddleware(to: router, configuration: components.configuration, routeIndex: routeIndex)
    HealthController(database: components.database, blobs: components.blobs).addRoutes(to: router)
    ConsoleController().addRoutes(to: router)
    let routes = RouteGroups(router: router, authenticator: BearerMiddleware(accounts: components.accounts))
    let idempotency = IdempotencyMiddleware(database: components.database, settings: components.configuration.idempotency, clock: components.clock)
    addAccountAndDataRoutes(components, to: routes, idempotency: idempotency)
    addNotificationRoutes(components, to: routes, router: router, idempotency: idempotency)
    addFileAndPipelineRoutes(components, to: routes, router: router, idempotency: idempotency)
    routeIndex.load(from: router)
    return router
}

/// The middleware every request passes, outermost first.
private func addMiddleware(to router: Router<CairnRequestContext>, configuration: CairnConfiguration, routeIndex: RouteIndex) {
    router.add(middleware: RequestTracingMiddleware())
    router.add(middleware: RequestIDMiddleware())
    // Before everything that may refuse a request: preflights carry no credentials.
    router.add(middleware: CORSMiddleware(origins: configuration.corsOrigins))
    router.add(middleware: ClientAddressMiddleware(proxies: configuration.trustedProxies))
    router.add(middleware: MetricsMiddleware())
    router.add(middleware: ProblemMiddleware(routes: routeIndex))
    // One check for every route: the router drops empty segments, so `/tasks//{id}` would be served as `/tasks/{id}`.
    router.add(middleware: PathSegmentsMiddleware())
    // Not Hummingbird's LogRequestsMiddleware: it logs the whole URI, `?access_token=` included.
    router.add(middleware: RequestLogMiddleware(.debug))
}

/// Accounts, tasks, jobs and schedules, the catalog and reports.
private func addAccountAndDataRoutes(_ components: CairnComponents, to routes: RouteGroups, idempotency: IdempotencyMiddleware) {
    AuthController(accounts: components.accounts).addRoutes(to: routes)
    UsersController(accounts: components.accounts).addRoutes(to: routes.authenticated())
    ServiceTokensController(accounts: components.accounts).addRoutes(to: routes.authenticated())
    TasksController(store: components.tasks).addRoutes(to: routes.authenticated())
    JobsController(queue: components.jobs, idempotency: idempotency).addRoutes(to: routes.authenticated())
    SchedulesController(queue: components.jobs).addRoutes(to: routes.authenticated())
    ProductsController(catalog: components.catalog, importer: components.productImporter).addRoutes(to: routes.authenticated())
    ReportsController(
        tasks: components.tasks, products: components.catalog.store, notifications: components.notifications.store, logger: components.logger
    ).addRoutes(to: routes.authenticated())
}

/// Notifications (HTTP, SSE and WebSocket) and their outbound channels, preferences,
/// providers and templates.
private func addNotificationRoutes(
    _ components: CairnComponents, to routes: RouteGroups, router: Router<CairnRequestContext>, idempotency: IdempotencyMiddleware
) {
    NotificationsController(center: components.notifications, broadcasts: components.broadcasts).addRoutes(
        to: routes, idempotency: idempotency)
    NotificationSocketController(center: components.notifications).addRoutes(to: router)
    ChannelsController(channels: components.channels).addRoutes(to: routes.authenticated())
    PreferencesController(store: PreferenceStore(database: components.database)).addRoutes(to: routes.authenticated())
    ProvidersController(channels: components.channels).addRoutes(to: routes.authenticated())
    TemplatesController(channels: components.channels).addRoutes(to: routes.authenticated())
}

/// Files, tus uploads and pipelines.
private func addFileAndPipelineRoutes(
    _ components: CairnComponents, to routes: RouteGroups, router: Router<CairnRequestContext>, idempotency: IdempotencyMiddleware
) {
    let quotas = components.configuration.files.quotas
    FilesController(store: components.files, blobs: components.blobs, quotas: quotas, logger: components.logger)
        .addRoutes(to: routes.authenticated())
    PipelinesController(service: components.pipelineService, idempotency: idempotency).addRoutes(to: routes.authenticated())
    UploadsController(
        uploads: UploadStore(database: components.database), files: components.files, blobs: components.blobs, quotas: quotas,
        expirySeconds: components.configuration.files.uploadsExpiry, logger: components.logger
    ).addRoutes(to: router, authenticated: routes.authenticated())
}

/// Builds a Cairn node: components, router and HTTP server, with the database as a service
/// that shuts down after the server has drained.
package func buildApplication(configuration: CairnConfiguration, logger: Logger) async throws -> some ApplicationProtocol {
    makeApplication(components: try await buildComponents(configuration: configuration, logger: logger))
}

/// Builds the HTTP application around already wired components (the CLI keeps the components,
/// so it can close the database when the server cannot start). `services` run before every
/// other and stop after them (the trace exporter, which flushes the spans of the drained work).
/// `worker` is the node's job worker (one made here when nil), and `connections`, when given,
/// tracks the server's connections (both for ``runNode(components:services:)``).
package func makeApplication(
    components: CairnComponents, services extra: [any Service] = [], worker: JobWorker? = nil, connections: OpenConnections? = nil
) -> some ApplicationProtocol {
    let configuration = components.configuration
    let logger = components.logger
    let router = buildRouter(components: components)
    let hasher = components.accounts.hasher
    return Application(
        router: router,
        server: .cairn(router: router, settings: configuration.http, connections: connections),
        configuration: serverConfiguration(configuration, logger: logger),
        services: extra + [components.database, CleanupService { await hasher.shutdown() }] + components.makeServices(worker: worker),
        onServerRunning: { channel in
            logger.info(
                "listening",
                metadata: ["address": .string(channel.localAddress?.description ?? "?"), "port": .stringConvertible(channel.localAddress?.port ?? 0)])
        },
        logger: logger
    )
}

/// The HTTP server's address, name and connection limit (``HTTPTransportSettings/maxConnections``).
package func serverConfiguration(_ configuration: CairnConfiguration, logger: Logger) -> ApplicationConfiguration {
    .init(
        address: .hostname(configuration.httpHost, port: configuration.httpPort), serverName: "Cairn",
        availableConnectionsDelegate: ConnectionLimit(maximum: configuration.http.maxConnections, logger: logger))
}

/// Runs an action on graceful shutdown (stopping thread pools and the like).
struct CleanupService: Service {
    let action: @Sendable () async -> Void
    func run() async throws {
        try? await gracefulShutdown()
        await action()
    }
}

/// A logger that drops everything (readiness probes run often and must not log).
let quietLogger = Logger(label: "cairn.quiet", factory: { _ in SwiftLogNoOpLogHandler() })

/// `/health/live`, `/health/ready`, `/metrics`, `/openapi.yaml`.
struct HealthController {
    let database: Database
    let blobs: any BlobStore

    func addRoutes(to router: Router<CairnRequestContext>) {
        router.get("health/live", use: live)
        router.get("health/ready", use: ready)
        router.get("metrics", use: metrics)
        router.get("openapi.yaml", use: openAPI)
    }

    @Sendable func live(_ request: Request, context: CairnRequestContext) async throws -> Response {
        Self.json(#"{"status":"ok"}"#)
    }

    /// Ready means: the database answers within 2 s and its schema is current (a node started
    /// with --no-migrate before `cairn migrate` ran is not ready), and the blob store answers
    /// within 2 s.
    @Sendable func ready(_ request: Request, context: CairnRequestContext) async throws -> Response {
        let database = self.database
        let pending: [String]
        do {
            pending = try await withThrowingTaskGroup(of: [String].self) { group in
                group.addTask { try await Migrator(database: database, migrations: allMigrations(), logger: quietLogger).pending() }
                group.addTask {
                    try await Task.sleep(for: .seconds(2))
                    throw CancellationError()
                }
                let result = try await group.next() ?? []
                group.cancelAll()
                return result
            }
        } catch {
            throw AppError(.serviceUnavailable, code: .unavailable, detail: "The database is not reachable.", headers: [.retryAfter: "5"])
        }
        guard pending.isEmpty else {
            throw AppError(
                .serviceUnavailable, code: .unavailable, detail: "\(pending.count) database migrations are pending; run `cairn migrate`.",
                headers: [.retryAfter: "5"])
        }
        let blobs = self.blobs
        do {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await blobs.checkReachable() }
                group.addTask {
                    try await Task.sleep(for: .seconds(2))
                    throw CancellationError()
                }
                try await group.next()
                group.cancelAll()
            }
        } catch {
            throw AppError(.serviceUnavailable, code: .unavailable, detail: "The blob store is not reachable.", headers: [.retryAfter: "5"])
        }
        return Self.json(#"{"status":"ok","database":"ok","blobs":"ok"}"#)
    }

    @Sendable func metrics(_ request: Request, context: CairnRequestContext) async throws -> Response {
        Response(
            status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
            body: .init(byteBuffer: ByteBuffer(bytes: Observability.exposition())))
    }

    @Sendable func openAPI(_ request: Request, context: CairnRequestContext) async throws -> Response {
        guard let url = Bundle.module.url(forResource: "openapi", withExtension: "yaml"), let data = try? Data(contentsOf: url) else {
            throw AppError.notFound()
        }
        return Response(status: .ok, headers: [.contentType: "application/yaml"], body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    static func json(_ text: String) -> Response {
        Response(
            status: .ok, headers: [.contentType: "application/json", .cacheControl: "no-store"], body: .init(byteBuffer: ByteBuffer(string: text)))
    }
}

/// Closes the node's live notification connections first on graceful shutdown, so WebSocket
/// clients get 1001 "going away" (RFC 6455 §7.4.1: reconnect elsewhere) rather than the 1000
/// the HTTP server's WebSocket layer sends to the connections it still holds when it stops.
struct LiveConnectionsCloser: Service {
    /// The node's notification hub, which holds every live connection's mailbox.
    let hub: NotificationHub

    /// Waits for graceful shutdown, then closes the connections (at most 5 s).
    func run() async throws {
        try? await gracefulShutdown()
        await hub.closeAllAndWait(timeout: .seconds(5))
    }
}

/// Runs a node until SIGTERM or SIGINT: the application of
/// ``makeApplication(components:services:worker:connections:)``, its HTTP drain bounded by
/// `CAIRN_HTTP_DRAIN_TIMEOUT` (``BoundedDrain``), and, stopped before it (a service group stops
/// its services last first), the ``LiveConnectionsCloser`` and, first of all, the
/// ``ShutdownStart``. Inside the application the HTTP server stops first and the job worker
/// only after it has drained, so the signal itself starts the worker's grace
/// (`CAIRN_JOBS_SHUTDOWN_GRACE`), the drain's deadline and the trace exporter's bound
/// (``BoundedShutdown``): running jobs are handed back within their grace of the signal, however
/// long a client holds a request open.
/// - Throws: the application's error (the server could not start).
package func runNode(components: CairnComponents, services extra: [any Service] = []) async throws {
    let worker = JobWorker(queue: components.jobs, logger: components.logger)
    let connections = OpenConnections()
    let application = BoundedDrain(
        makeApplication(components: components, services: extra, worker: worker, connections: connections), connections: connections,
        limit: components.configuration.http.drainTimeout, logger: components.logger)
    // The trace exporter's bound counts from the signal too (it stops last of all).
    let bounded = extra.compactMap { $0 as? BoundedShutdown<ContinuousClock> }
    let start = ShutdownStart {
        worker.beginShutdown()
        application.startClock()
        for service in bounded { service.startClock() }
    }
    let group = ServiceGroup(
        configuration: .init(
            services: [application, LiveConnectionsCloser(hub: components.notifications.hub), start],
            gracefulShutdownSignals: [.sigterm, .sigint], logger: components.logger))
    try await group.run()
}
