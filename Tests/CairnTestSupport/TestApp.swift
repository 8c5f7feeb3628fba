import CairnAccounts
package import CairnJobs
package import CairnNotifications
package import CairnServer
package import CairnStorage
import Hummingbird
package import HummingbirdTesting
import HummingbirdWebSocket
package import Logging

/// How a test talks to its node.
package enum TestAppMode: Sendable {
    /// Requests go straight to the router, with no socket (HummingbirdTesting's router mode).
    case router
    /// The node as `cairn serve` runs it: HTTP with WebSocket upgrade on a free loopback port,
    /// so real clients (curl, Python, WebSocket) can connect.
    case live
}

/// A node under test: its client, its parts, and in live mode its port.
package struct TestApp: Sendable {
    /// Sends requests to the node (over loopback HTTP in live mode).
    package let client: any TestClientProtocol
    /// The node's wired parts.
    package let components: CairnComponents
    /// The loopback port the node listens on (live mode only).
    package let port: Int?
    /// The node's job worker, when its background services run: a test may begin its shutdown
    /// (``JobWorker/beginShutdown()``) at a moment it chooses, as a signal would.
    package var worker: JobWorker? = nil

    /// The clock every module of the node reads.
    package var clock: any CairnClock { components.clock }
    /// The node's database.
    package var database: Database { components.database }
    /// `http://127.0.0.1:<port>` (live mode only).
    package var baseURL: String { "http://127.0.0.1:\(port ?? 0)" }
}

/// Builds a node on a fresh database of `engine` (removed afterwards) and runs `body` with it.
///
/// - Parameters:
///   - mode: router (default) or live; see ``TestAppMode``.
///   - clock: the time every module reads; pass a ``TestClock`` to advance it by hand.
///   - configure: changes to the test configuration (bcrypt cost 4, a temporary data directory).
///   - runServices: run the node's background services (job worker, scheduler, notification
///     bridge…); by default live mode runs them and router mode does not.
///   - observers: see published notifications after the outbound channels (hold a publish open).
///   - prepare: runs on the wired components before the node starts (register job kinds).
package func withTestApp<R: Sendable>(
    _ engine: TestEngine, mode: TestAppMode = .router, clock: any CairnClock = SystemClock(),
    configure: @Sendable (inout CairnConfiguration) -> Void = { _ in }, runServices: Bool? = nil, logger: Logger = testLogger,
    observers: [any PublishObserver] = [], prepare: @Sendable (CairnComponents) -> Void = { _ in },
    _ body: @Sendable (TestApp) async throws -> R
) async throws -> R {
    try await withTestDatabase(engine, configure: configure) { database in
        try await withTestApp(
            on: database, mode: mode, clock: clock, runServices: runServices, logger: logger, observers: observers, prepare: prepare, body)
    }
}

/// ``withTestApp(_:mode:clock:configure:runServices:logger:observers:prepare:_:)`` with a tenant
/// owner registered as `owner` before `body` runs with the node and the owner's access token:
/// the opening of the tests that need the node itself (its port, clock or job waits).
package func withTestApp<R: Sendable>(
    _ engine: TestEngine, owner: String, mode: TestAppMode = .router, clock: any CairnClock = SystemClock(),
    configure: @Sendable (inout CairnConfiguration) -> Void = { _ in }, runServices: Bool? = nil,
    _ body: @Sendable (TestApp, String) async throws -> R
) async throws -> R {
    try await withTestApp(engine, mode: mode, clock: clock, configure: configure, runServices: runServices) { app in
        try await body(app, try await app.client.registerAndLogin(email: owner).tokens.accessToken)
    }
}

/// Builds a node on an existing test database and runs `body` with it; several nodes may
/// share one database (see ``withTestDatabase(_:migrated:_:)``). The node's connections and
/// threads are closed when `body` returns or throws.
package func withTestApp<R: Sendable>(
    on database: TestDatabase, mode: TestAppMode = .router, clock: any CairnClock = SystemClock(), runServices: Bool? = nil,
    logger: Logger = testLogger, observers: [any PublishObserver] = [], prepare: @Sendable (CairnComponents) -> Void = { _ in },
    _ body: @Sendable (TestApp) async throws -> R
) async throws -> R {
    let components = try await buildComponents(configuration: database.configuration, logger: logger, observers: observers, clock: clock)
    prepare(components)
    do {
        let result: R
        switch (mode, runServices ?? (mode == .live)) {
        case (.router, let services):
            let worker = services ? JobWorker(queue: components.jobs, logger: logger) : nil
            let app = Application(
                router: buildRouter(components: components), services: services ? components.makeServices(worker: worker) : [], logger: logger)
            result = try await app.test(.router) { client in
                try await body(TestApp(client: client, components: components, port: nil, worker: worker))
            }
        case (.live, true):
            let worker = JobWorker(queue: components.jobs, logger: logger)
            result = try await makeApplication(components: components, worker: worker).test(.live) { client in
                try await body(TestApp(client: client, components: components, port: try livePort(client), worker: worker))
            }
        case (.live, false):
            // As `makeApplication`, without the background services (a node that only serves).
            let router = buildRouter(components: components)
            let app = Application(
                router: router, server: .cairn(router: router, settings: components.configuration.http),
                configuration: serverConfiguration(components.configuration, logger: logger), logger: logger)
            result = try await app.test(.live) { client in
                try await body(TestApp(client: client, components: components, port: try livePort(client)))
            }
        }
        await close(components)
        return result
    } catch {
        await close(components)
        throw error
    }
}

/// Builds a node on a fresh database and runs `body` with a router-level test client and the
/// node's components (the two-argument form of ``withTestApp(_:mode:clock:configure:runServices:logger:prepare:_:)``).
package func withTestApp<R: Sendable>(
    _ engine: TestEngine,
    configure: @Sendable (inout CairnConfiguration) -> Void = { _ in },
    runServices: Bool = false,
    prepare: @Sendable (CairnComponents) -> Void = { _ in },
    _ body: @Sendable (any TestClientProtocol, CairnComponents) async throws -> R
) async throws -> R {
    try await withTestApp(engine, mode: .router, configure: configure, runServices: runServices, prepare: prepare) { (app: TestApp) in
        try await body(app.client, app.components)
    }
}

/// Builds a node on a fresh database, registers a tenant owner with the email `owner`, and runs
/// `body` with a router-level test client, the node's components and the owner's access token:
/// the opening most API tests share.
package func withTestApp<R: Sendable>(
    _ engine: TestEngine,
    owner: String,
    configure: @Sendable (inout CairnConfiguration) -> Void = { _ in },
    runServices: Bool = false,
    prepare: @Sendable (CairnComponents) -> Void = { _ in },
    _ body: @Sendable (any TestClientProtocol, CairnComponents, String) async throws -> R
) async throws -> R {
    try await withTestApp(engine, configure: configure, runServices: runServices, prepare: prepare) { client, components in
        let token = try await client.registerAndLogin(email: owner).tokens.accessToken
        return try await body(client, components, token)
    }
}

/// Runs `body` with two nodes on one fresh PostgreSQL database, as production runs several
/// stateless nodes: they share its signing key ring, its LISTEN/NOTIFY channels and `clock`.
/// `configure` changes the configuration both nodes read.
package func withTwoNodes<R: Sendable>(
    mode: TestAppMode = .router, clock: any CairnClock = SystemClock(), configure: (inout CairnConfiguration) -> Void = { _ in },
    _ body: @Sendable (_ nodeA: TestApp, _ nodeB: TestApp) async throws -> R
) async throws -> R {
    try await withTestDatabase(.postgres, configure: configure) { database in
        try await withTestApp(on: database, mode: mode, clock: clock) { nodeA in
            try await withTestApp(on: database, mode: mode, clock: clock) { nodeB in try await body(nodeA, nodeB) }
        }
    }
}

private func livePort(_ client: any TestClientProtocol) throws -> Int {
    guard let port = client.port else { throw TestSetupError("the live test client has no port") }
    return port
}

/// Closes what a node opened: its database connections and its bcrypt threads (both safe to
/// close twice: a live node's services close them on shutdown too).
private func close(_ components: CairnComponents) async {
    await components.database.close()
    await components.accounts.hasher.shutdown()
}
