import CairnStorage
import Foundation
package import Hummingbird

/// What a group of routes accepts as credentials besides a user's access token in the
/// `Authorization` header. It belongs to the group, not to a path: moving or renaming a route
/// within its group cannot change who may call it, and a route added to a group without a
/// wider policy refuses service tokens and `?access_token=`.
package struct TokenPolicy: Sendable, Equatable {
    /// Service tokens holding this scope may call the group's routes; nil refuses service
    /// tokens (403 `forbidden`, `WWW-Authenticate: Bearer error="insufficient_scope"`).
    package var serviceTokenScope: String?
    /// The access token may come as the `access_token` query parameter (RFC 6750 §2.3), for
    /// clients that cannot set a header (a browser's `EventSource`). Otherwise the parameter
    /// is ignored.
    package var acceptsQueryToken: Bool

    /// Creates a policy.
    package init(serviceTokenScope: String? = nil, acceptsQueryToken: Bool = false) {
        self.serviceTokenScope = serviceTokenScope
        self.acceptsQueryToken = acceptsQueryToken
    }

    /// Users' access tokens in the `Authorization` header only: the default.
    package static let users = TokenPolicy()

    /// Users' access tokens, and service tokens holding `scope`.
    package static func serviceTokens(scope: String) -> TokenPolicy {
        TokenPolicy(serviceTokenScope: scope)
    }

    /// Users' access tokens, in the `Authorization` header or as `?access_token=`.
    package static let queryToken = TokenPolicy(acceptsQueryToken: true)
}

/// Puts a group's ``TokenPolicy`` on the context, for the authenticator that follows it in the
/// group (``RouteGroups/authenticated(_:accepting:)`` adds both, in that order).
struct TokenPolicyMiddleware: RouterMiddleware {
    let policy: TokenPolicy

    func handle(
        _ request: Request, context: CairnRequestContext, next: (Request, CairnRequestContext) async throws -> Response
    ) async throws -> Response {
        var context = context
        context.tokenPolicy = policy
        return try await next(request, context)
    }
}

/// Route-group middleware: a path parameter that carries an id (`id`, or a name ending in
/// `Id`, such as `deliveryId`) and is a UUID in any case is read in lower case
/// (``UUIDv7/normalized(_:)``, RFC 9562 §4), so `/users/{ID}` written in upper case names the
/// same user as the id the server wrote; a percent-encoded one is decoded first. Other parameters (a SKU, a template type) are left
/// as they are. Every authenticated group has it (``RouteGroups/authenticated(_:accepting:)``).
package struct IDParameterMiddleware: RouterMiddleware {
    /// Creates the middleware.
    package init() {}

    /// Lower-cases the id parameters that need it, then hands on.
    package func handle(
        _ request: Request, context: CairnRequestContext, next: (Request, CairnRequestContext) async throws -> Response
    ) async throws -> Response {
        // Most requests carry ids in lower case already: the parameters are rebuilt only when one is not.
        guard context.parameters.contains(where: { Self.rewritten($0.key, $0.value) != nil }) else { return try await next(request, context) }
        var context = context
        context.coreContext.parameters = .init(
            context.parameters.map { (key: $0.key, value: Self.rewritten($0.key, $0.value).map { Substring($0) } ?? $0.value) })
        return try await next(request, context)
    }

    /// The id an id parameter names when it is not written as stored, else nil: a UUID with an
    /// upper-case letter, in lower case; a percent-encoded one (RFC 3986 §2.1: `%2D` is `-`,
    /// and the router hands segments on undecoded), decoded and in lower case. Anything else
    /// stays as written (a 404 of its route).
    static func rewritten(_ name: Substring, _ value: Substring) -> String? {
        guard name == "id" || name.hasSuffix("Id") else { return nil }
        return storedForm(ofPathId: value)
    }

    /// The id a path segment names when it is not written as stored, else nil: a UUID with an
    /// upper-case letter, in lower case; a percent-encoded UUID, decoded and in lower case.
    /// What the routes read, and what the idempotency fingerprint compares.
    package static func storedForm(ofPathId value: Substring) -> String? {
        if value.utf8.contains(UInt8(ascii: "%")) {
            guard let decoded = String(value).removingPercentEncoding, UUIDv7.isValid(decoded) else { return nil }
            return decoded.lowercased()
        }
        guard value.utf8.contains(where: { $0 >= 0x41 && $0 <= 0x46 }), UUIDv7.isValid(value) else { return nil }
        return value.lowercased()
    }
}

/// The router as controllers see it: public routes, and authenticated route groups whose token
/// policy is declared where the group is made, next to its routes.
///
/// ```swift
/// routes.authenticated("notifications", accepting: .serviceTokens(scope: "notifications:publish"))
///     .add(middleware: RequireAdmin(orScope: "notifications:publish"))
///     .post(use: publish)
/// ```
package struct RouteGroups {
    /// The routes anyone may call.
    package let router: Router<CairnRequestContext>
    let authenticator: any MiddlewareProtocol<Request, Response, CairnRequestContext>

    /// Creates the groups; `authenticator` (the Bearer middleware) reads the group's
    /// ``TokenPolicy`` from ``CairnRequestContext/tokenPolicy`` and sets the identity.
    package init(router: Router<CairnRequestContext>, authenticator: any MiddlewareProtocol<Request, Response, CairnRequestContext>) {
        self.router = router
        self.authenticator = authenticator
    }

    /// A new group at `path` whose routes need an access token, with the identity on an
    /// ``AuthenticatedContext``; `policy` says what else the group accepts.
    package func authenticated(_ path: RouterPath = "", accepting policy: TokenPolicy = .users) -> RouterGroup<AuthenticatedContext> {
        router.group(path)
            .add(middleware: TokenPolicyMiddleware(policy: policy))
            .add(middleware: IDParameterMiddleware())
            .add(middleware: authenticator)
            .group(context: AuthenticatedContext.self)
    }
}

/// Route-group middleware: only the tenant's owners and admins reach the group's routes, and,
/// with a scope, service tokens holding it; anyone else gets 403 `forbidden`.
///
/// ```swift
/// let admins = group.group().add(middleware: RequireAdmin())
/// admins.post("schedules", use: create)
/// ```
package struct RequireAdmin: RouterMiddleware {
    let scope: String?

    /// Owners and admins only; never a service token.
    package init() {
        self.scope = nil
    }

    /// Owners and admins, and service tokens holding `scope` (the group's ``TokenPolicy`` must
    /// also admit them, or the authenticator refuses them first).
    package init(orScope scope: String) {
        self.scope = scope
    }

    /// Handles one request.
    package func handle(
        _ request: Request, context: AuthenticatedContext, next: (Request, AuthenticatedContext) async throws -> Response
    ) async throws -> Response {
        if let scope {
            try context.identity.requireAdmin(orScope: scope)
        } else {
            try context.identity.requireAdmin()
        }
        return try await next(request, context)
    }
}
