import Foundation
package import Hummingbird
package import HummingbirdTesting
package import Logging
import NIOCore
import Testing

/// The engines a database suite runs on: SQLite always, PostgreSQL when
/// `CAIRN_TEST_POSTGRES_URL` is set (CI sets it and checks the suites ran).
package enum TestEngine: String, Sendable, CaseIterable, CustomTestStringConvertible {
    case sqlite, postgres

    /// The engines available in this run.
    package static var available: [TestEngine] {
        postgresBaseURL == nil ? [.sqlite] : [.sqlite, .postgres]
    }

    /// The PostgreSQL server URL for tests, if any. Unless it sets its own, it gets a
    /// `connect_timeout` of 60 s: a full parallel run opens hundreds of connections at once on
    /// two busy cores, where the node's 15 s start-up check is too short (a test of load, not
    /// of Cairn).
    package static var postgresBaseURL: String? {
        guard let url = ProcessInfo.processInfo.environment["CAIRN_TEST_POSTGRES_URL"], !url.isEmpty else { return nil }
        return withTestConnectTimeout(url)
    }

    /// `url` with `connect_timeout=60` added unless it has one.
    package static func withTestConnectTimeout(_ url: String) -> String {
        guard var components = URLComponents(string: url) else { return url }
        var items = components.queryItems ?? []
        guard !items.contains(where: { $0.name == "connect_timeout" }) else { return url }
        items.append(URLQueryItem(name: "connect_timeout", value: "60"))
        components.queryItems = items
        return components.string ?? url
    }

    /// Shown in test output, so CI can see both engines ran.
    package var testDescription: String { rawValue }
}

/// A quiet logger for tests.
package let testLogger: Logger = {
    var logger = Logger(label: "cairn-test")
    logger.logLevel = .error
    return logger
}()

/// A setup failure in a test helper.
package struct TestSetupError: Error, CustomStringConvertible {
    /// What failed.
    package var description: String
    /// Creates the error.
    package init(_ description: String) { self.description = description }
}

/// JSON helpers for test requests.
extension TestClientProtocol {
    /// Sends a JSON request; `token` adds `Authorization: Bearer`.
    @discardableResult
    package func json(
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

    /// Registers a tenant owner and logs in; returns the user and the token pair.
    package func registerAndLogin(email: String, password: String = "correct horse battery", name: String = "Test User") async throws -> (
        user: UserBody, tokens: TokenPairBody
    ) {
        let registered = try await json(.post, "/auth/register", ["email": email, "password": password, "name": name])
        guard registered.status == .created else { throw TestSetupError("register failed: \(registered.status) \(registered.text)") }
        let tokens = try await login(email: email, password: password)
        return (try registered.decode(UserBody.self), tokens)
    }

    /// Adds a user with `role` to the tenant of the owner or admin whose access token is
    /// `token` (`POST /users`) and logs them in; returns the user and their token pair.
    package func addUser(
        email: String, role: String = "member", password: String = "correct horse battery", name: String = "Member", token: String
    ) async throws -> (user: UserBody, tokens: TokenPairBody) {
        let created = try await json(.post, "/users", ["email": email, "name": name, "role": role, "password": password], token: token)
        guard created.status == .created else { throw TestSetupError("add user failed: \(created.status) \(created.text)") }
        return (try created.decode(UserBody.self), try await login(email: email, password: password))
    }

    /// Logs in; fails the setup unless 200.
    package func login(email: String, password: String) async throws -> TokenPairBody {
        let response = try await json(.post, "/auth/login", ["email": email, "password": password])
        guard response.status == .ok else { throw TestSetupError("login failed: \(response.status) \(response.text)") }
        return try response.decode(TokenPairBody.self)
    }
}

extension TestResponse {
    /// The body as text.
    package var text: String { String(buffer: body) }
    /// The body as a JSON object (empty when it is not one).
    package var object: [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(body.readableBytesView)) as? [String: Any]) ?? [:]
    }
    /// The problem `code` of an error body.
    package var code: String? { object["code"] as? String }
}
