import CairnAccounts
public import CairnServer
import CairnStorage
import Foundation
public import Hummingbird
public import HummingbirdTesting
public import Logging
import NIOCore
import PostgresNIO
import SQLKit
public import Testing

/// The engines a database suite runs on: SQLite always, PostgreSQL when
/// `CAIRN_TEST_POSTGRES_URL` is set (CI sets it and checks the suites ran).
public enum TestEngine: String, Sendable, CaseIterable, CustomTestStringConvertible {
    case sqlite, postgres

    /// The engines available in this run.
    public static var available: [TestEngine] {
        postgresBaseURL == nil ? [.sqlite] : [.sqlite, .postgres]
    }

    /// The PostgreSQL server URL for tests, if any.
    public static var postgresBaseURL: String? {
        ProcessInfo.processInfo.environment["CAIRN_TEST_POSTGRES_URL"].flatMap { $0.isEmpty ? nil : $0 }
    }

    /// Shown in test output, so CI can see both engines ran.
    public var testDescription: String { rawValue }
}

/// A quiet logger for tests.
public let testLogger: Logger = {
    var logger = Logger(label: "cairn-test")
    logger.logLevel = .error
    return logger
}()

/// A fresh, empty database for one test: a new SQLite file in a temporary directory, or a new
/// PostgreSQL database created on the test server.
public struct TestDatabase: Sendable {
    /// The configuration pointing at it (data directory always set, bcrypt cost 4).
    public var configuration: CairnConfiguration

    /// Creates a fresh database on `engine`.
    public static func make(_ engine: TestEngine) async throws -> TestDatabase {
        var configuration = CairnConfiguration()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("cairn-test-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        configuration.dataDir = directory
        configuration.accounts.bcryptCost = 4
        configuration.accounts.bcryptThreads = 2
        if engine == .postgres {
            guard let base = TestEngine.postgresBaseURL else { throw TestSetupError("CAIRN_TEST_POSTGRES_URL is not set") }
            let name = "cairn_t_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased().prefix(16)
            let admin = try await Database.open(url: base, sqlitePath: "", logger: testLogger)
            do {
                try await admin.write { db in try await db.raw("CREATE DATABASE \(unsafeRaw: String(name))").run() }
            } catch {
                await admin.close()
                throw error
            }
            await admin.close()
            configuration.databaseURL = Self.replacingDatabase(in: base, with: String(name))
        }
        return TestDatabase(configuration: configuration)
    }

    static func replacingDatabase(in url: String, with name: String) -> String {
        var components = URLComponents(string: url)!
        components.path = "/" + name
        return components.string!
    }
}

/// A setup failure in a test helper.
public struct TestSetupError: Error, CustomStringConvertible {
    /// What failed.
    public var description: String
    /// Creates the error.
    public init(_ description: String) { self.description = description }
}

/// Builds a node on a fresh database and runs `body` with a router-level test client and the
/// node's components.
public func withTestApp<R: Sendable>(
    _ engine: TestEngine,
    configure: @Sendable (inout CairnConfiguration) -> Void = { _ in },
    runServices: Bool = false,
    prepare: @Sendable (CairnComponents) -> Void = { _ in },
    _ body: @Sendable (any TestClientProtocol, CairnComponents) async throws -> R
) async throws -> R {
    var database = try await TestDatabase.make(engine)
    configure(&database.configuration)
    let components = try await buildComponents(configuration: database.configuration, logger: testLogger)
    prepare(components)
    let app = Application(
        router: buildRouter(components: components), services: runServices ? components.makeServices() : [], logger: testLogger)
    // The data directory (SQLite file, keys, blobs) goes with the test.
    defer { try? FileManager.default.removeItem(atPath: database.configuration.dataDir) }
    do {
        let result = try await app.test(.router) { client in try await body(client, components) }
        await components.database.close()
        return result
    } catch {
        await components.database.close()
        throw error
    }
}

/// JSON helpers for test requests.
extension TestClientProtocol {
    /// Sends a JSON request; `token` adds `Authorization: Bearer`.
    @discardableResult
    public func json(
        _ method: HTTPRequest.Method, _ uri: String, _ body: Any? = nil, token: String? = nil, headers: HTTPFields = [:]
    ) async throws -> TestResponse {
        var headers = headers
        var buffer: ByteBuffer?
        if let body {
            let data = try JSONSerialization.data(withJSONObject: body, options: [.fragmentsAllowed])
            buffer = ByteBuffer(bytes: data)
            if headers[.contentType] == nil { headers[.contentType] = "application/json" }
        }
        if let token { headers[.authorization] = "Bearer \(token)" }
        return try await execute(uri: uri, method: method, headers: headers, body: buffer)
    }

    /// Registers a tenant owner and logs in; returns the user object and the token pair.
    public func registerAndLogin(email: String, password: String = "correct horse battery", name: String = "Test User") async throws -> (
        user: [String: Any], tokens: [String: Any]
    ) {
        let registered = try await json(.post, "/auth/register", ["email": email, "password": password, "name": name])
        guard registered.status == .created else { throw TestSetupError("register failed: \(registered.status) \(registered.text)") }
        let tokens = try await login(email: email, password: password)
        return (registered.object, tokens)
    }

    /// Logs in; fails the setup unless 200.
    public func login(email: String, password: String) async throws -> [String: Any] {
        let response = try await json(.post, "/auth/login", ["email": email, "password": password])
        guard response.status == .ok else { throw TestSetupError("login failed: \(response.status) \(response.text)") }
        return response.object
    }
}

extension TestResponse {
    /// The body as text.
    public var text: String { String(buffer: body) }
    /// The body as a JSON object (empty when it is not one).
    public var object: [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(body.readableBytesView)) as? [String: Any]) ?? [:]
    }
    /// The problem `code` of an error body.
    public var code: String? { object["code"] as? String }
}

/// Awaits a condition, re-checking every 100 ms until it holds or `timeout` passes; returns
/// whether it held. For effects that are asynchronous by design (cross-node propagation).
public func eventually(timeout: Duration = .seconds(30), _ condition: @Sendable () async throws -> Bool) async throws -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        try await Task.sleep(for: .milliseconds(100))
    }
    return try await condition()
}
