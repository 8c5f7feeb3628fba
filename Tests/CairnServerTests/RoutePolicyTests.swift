import CairnHTTP
import CairnServer
import CairnStorage
import CairnTestSupport
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Testing

/// Who may call each route is declared with the route (its group's token policy, and
/// `RequireAdmin` on admin groups). These tables are the policy; every route the router knows is
/// checked against them, so a route that loses its policy, gains one, or is added without one
/// fails here.
@Suite("Route policy: every route against the declared tables")
struct RoutePolicyTests {
    /// Routes anyone may call (the WebSocket authenticates itself; tus' OPTIONS tells
    /// capabilities only; the console's files are static and the page signs in by itself).
    static let publicRoutes: Set<String> = [
        "GET /", "GET /console", "GET /console/**", "GET /health/live", "GET /health/ready", "GET /metrics", "GET /openapi.yaml",
        "GET /.well-known/jwks.json",
        "POST /auth/register", "POST /auth/login", "POST /auth/refresh-token", "POST /auth/logout",
        "GET /ws", "OPTIONS /uploads", "OPTIONS /uploads/{id}",
    ]

    /// The routes service tokens may call: only with the scope `notifications:publish`.
    static let serviceTokenRoutes: Set<String> = ["POST /notifications"]

    /// The routes that take the access token as `?access_token=` (a browser's `EventSource`).
    static let queryTokenRoutes: Set<String> = ["GET /notifications/stream"]

    /// Owner and admin routes: a member is refused with 403 before anything else is looked at.
    static let adminRoutes: Set<String> = [
        "GET /users", "POST /users", "GET /users/{id}", "PATCH /users/{id}", "DELETE /users/{id}",
        "POST /service-tokens", "GET /service-tokens", "DELETE /service-tokens/{id}",
        "POST /schedules", "GET /schedules", "GET /schedules/{id}", "PATCH /schedules/{id}", "DELETE /schedules/{id}",
        "POST /products", "PATCH /products/{id}", "DELETE /products/{id}", "POST /products:import",
        "GET /reports/tasks.csv", "GET /reports/products.csv", "GET /reports/notifications.csv",
        "POST /pipelines", "PATCH /pipelines/{id}", "DELETE /pipelines/{id}",
        "POST /webhooks", "GET /webhooks", "GET /webhooks/{id}", "PATCH /webhooks/{id}", "DELETE /webhooks/{id}",
        "GET /notification-providers", "PUT /notification-providers/{provider}", "DELETE /notification-providers/{provider}",
        "GET /notification-templates/{type}", "PUT /notification-templates/{type}", "DELETE /notification-templates/{type}",
        "POST /notification-templates/{type}/preview",
        "POST /notifications",
    ]

    /// Routes a member's request must not reach in this test: it would open a stream that never
    /// ends, or end the member's own sessions.
    static let notCalledAsMember: Set<String> = ["GET /notifications/stream", "POST /auth/logout-all"]

    /// One route of the router: `"METHOD /path"` with parameters as `{name}`, and a concrete URI.
    struct Route: CustomStringConvertible {
        var method: HTTPRequest.Method
        var pattern: String
        var description: String { "\(method.rawValue) \(pattern)" }

        /// The path with every parameter replaced by a value of the right shape that names nothing.
        var uri: String {
            pattern.split(separator: "/", omittingEmptySubsequences: false).map { segment -> String in
                switch segment {
                case "{provider}": "fcm"
                case "{type}": "message"
                case "{sku}": "NO-SUCH-SKU"
                case _ where segment.hasPrefix("{"): "01890a5d-ac96-774b-bcce-b302099a8057"
                default: String(segment)
                }
            }.joined(separator: "/")
        }
    }

    static func routes(_ components: CairnComponents) -> [Route] {
        buildRouter(components: components).routes.map { Route(method: $0.method, pattern: $0.path.description) }
    }

    /// An owner, a member of the owner's tenant, and a service token of that tenant holding
    /// `notifications:publish`.
    static func callers(_ client: some TestClientProtocol) async throws -> (owner: String, member: String, service: String) {
        let owner = try await client.registerAndLogin(email: "policy-owner@example.com")
        let ownerToken = owner.tokens.accessToken
        let member = try await client.addUser(email: "policy-member@example.com", token: ownerToken).tokens
        let service = try await client.json(.post, "/service-tokens", ["name": "policy", "scopes": ["notifications:publish"]], token: ownerToken)
        #expect(service.status == .created)
        return (ownerToken, member.accessToken, try #require(service.object["token"] as? String))
    }

    // The policy does not depend on the database engine: SQLite is enough.
    @Test func theTablesNameRoutesTheRouterHas() async throws {
        try await withTestApp(.sqlite) { _, components in
            let known = Set(Self.routes(components).map(\.description))
            for table in [Self.publicRoutes, Self.serviceTokenRoutes, Self.queryTokenRoutes, Self.adminRoutes, Self.notCalledAsMember] {
                #expect(table.subtracting(known).isEmpty, "no such route: \(table.subtracting(known).sorted())")
            }
        }
    }

    @Test func everyRouteButThePublicOnesNeedsAnAccessToken() async throws {
        try await withTestApp(.sqlite) { client, components in
            for route in Self.routes(components) where !Self.publicRoutes.contains(route.description) {
                let response = try await client.execute(uri: route.uri, method: route.method)
                #expect(response.status == .unauthorized && response.code == "unauthorized", "\(route)")
                #expect(response.headers[.wwwAuthenticate]?.hasPrefix("Bearer") == true, "\(route)")
            }
            for route in Self.routes(components) where Self.publicRoutes.contains(route.description) {
                let response = try await client.execute(uri: route.uri, method: route.method)
                #expect(response.status != .unauthorized, "\(route) is public")
            }
        }
    }

    @Test func serviceTokensReachOnlyTheRoutesOfTheirScope() async throws {
        try await withTestApp(.sqlite) { client, components in
            let callers = try await Self.callers(client)
            for route in Self.routes(components) where !Self.publicRoutes.contains(route.description) {
                let response = try await client.json(route.method, route.uri, token: callers.service)
                if Self.serviceTokenRoutes.contains(route.description) {
                    // Past authorization: the missing body is what is wrong.
                    #expect(response.status == .unsupportedMediaType, "\(route)")
                } else {
                    #expect(response.status == .forbidden && response.code == "forbidden", "\(route)")
                    #expect(response.headers[.wwwAuthenticate] == #"Bearer realm="cairn", error="insufficient_scope", scope="user""#, "\(route)")
                }
            }
        }
    }

    @Test func theQueryTokenCountsOnlyOnTheStream() async throws {
        try await withTestApp(.sqlite) { client, components in
            let callers = try await Self.callers(client)
            for route in Self.routes(components) where !Self.publicRoutes.contains(route.description) {
                // A malformed query token is looked at (401 invalid_token) only where accepted.
                let malformed = try await client.execute(uri: route.uri + "?access_token=not*a*token", method: route.method)
                #expect(malformed.status == .unauthorized, "\(route)")
                if Self.queryTokenRoutes.contains(route.description) {
                    #expect(malformed.code == "invalid_token", "\(route)")
                    #expect(malformed.headers[.wwwAuthenticate]?.contains(#"error="invalid_token""#) == true, "\(route)")
                } else {
                    #expect(malformed.code == "unauthorized", "\(route)")
                    // A valid one is ignored too (accepting it would open the stream, tested elsewhere).
                    let valid = try await client.execute(uri: route.uri + "?access_token=\(callers.member)", method: route.method)
                    #expect(valid.status == .unauthorized && valid.code == "unauthorized", "\(route)")
                }
            }
        }
    }

    @Test func membersAreRefusedExactlyTheAdminRoutes() async throws {
        try await withTestApp(.sqlite) { client, components in
            let callers = try await Self.callers(client)
            for route in Self.routes(components)
            where !Self.publicRoutes.contains(route.description) && !Self.notCalledAsMember.contains(route.description) {
                let response = try await client.json(route.method, route.uri, token: callers.member)
                if Self.adminRoutes.contains(route.description) {
                    #expect(response.status == .forbidden && response.code == "forbidden", "\(route)")
                    #expect(response.headers[.wwwAuthenticate] == nil, "\(route)")
                } else {
                    #expect(response.status != .forbidden, "\(route) refused a member: \(response.text)")
                }
            }
            // The owner passes every admin route's policy (unknown ids and empty bodies aside).
            for route in Self.routes(components) where Self.adminRoutes.contains(route.description) {
                let response = try await client.json(route.method, route.uri, token: callers.owner)
                #expect(response.status != .forbidden, "\(route) refused the owner: \(response.text)")
            }
        }
    }
}
