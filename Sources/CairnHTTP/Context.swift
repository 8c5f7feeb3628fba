package import Hummingbird
package import HummingbirdWebSocket
import Logging
package import NIOCore
import Synchronization

/// Roles a user can hold within a tenant. `owner` and `admin` manage users.
package enum Role: String, Sendable, Codable, CaseIterable, JSONEnum {
    case owner, admin, member

    /// True for the roles allowed to manage a tenant's users and data.
    package var isAdmin: Bool { self == .owner || self == .admin }
}

/// The authenticated caller, established by the Bearer middleware from a verified access token.
package struct Identity: Sendable, Equatable {
    /// The user's id (UUIDv7 string), the token's `sub`.
    package var userId: String
    /// The user's tenant id, the token's `tid`.
    package var tenantId: String
    /// The user's current role.
    package var role: Role
    /// The access token's `jti`, for audit logging.
    package var tokenId: String
    /// The scopes of a service token (RFC 6749 §3.3 scope tokens such as
    /// `notifications:publish`); nil for a user's access token, which carries the role's rights.
    package var scopes: Set<String>?

    /// Creates an identity; `scopes` is set only for service tokens.
    package init(userId: String, tenantId: String, role: Role, tokenId: String, scopes: Set<String>? = nil) {
        self.userId = userId
        self.tenantId = tenantId
        self.role = role
        self.tokenId = tokenId
        self.scopes = scopes
    }

    /// True when the caller is a service token, not a user (`userId` is then the token's id).
    package var isServiceToken: Bool { scopes != nil }

    /// Throws 403 `forbidden` unless the caller is an owner or admin (never a service token).
    package func requireAdmin() throws {
        guard role.isAdmin, !isServiceToken else { throw AppError.forbidden() }
    }

    /// Passes for owners and admins, and for the user who made the resource (its `createdBy`):
    /// members change only what they made.
    /// - Throws: 403 `forbidden` with `detail`.
    package func requireAdminOrCreator(_ createdBy: String?, _ detail: String) throws {
        guard role.isAdmin || createdBy == userId else { throw AppError.forbidden(detail) }
    }

    /// Passes for owners and admins, and for service tokens holding `scope`.
    /// - Throws: 403 `forbidden`; for a service token without the scope, with
    ///   `WWW-Authenticate: Bearer error="insufficient_scope"` (RFC 6750 §3.1).
    package func requireAdmin(orScope scope: String) throws {
        if let scopes {
            guard scopes.contains(scope) else { throw AppError.insufficientScope(scope) }
        } else {
            try requireAdmin()
        }
    }
}

/// Re-checks the credential a request was authenticated with, for a response that outlives
/// the request (an event stream): an access token expires, and its session can be logged out.
package struct CredentialCheck: Sendable {
    /// When the credential ends by itself, in milliseconds since the epoch (an access token's
    /// `exp`, RFC 7519 §4.1.4); nil when it has no expiry.
    package let expiresAtMs: Int64?
    private let check: @Sendable () async throws -> Bool

    /// A check of a credential expiring at `expiresAtMs`; `check` answers whether it still
    /// authenticates the same caller.
    package init(expiresAtMs: Int64?, check: @escaping @Sendable () async throws -> Bool) {
        self.expiresAtMs = expiresAtMs
        self.check = check
    }

    /// Whether the credential still authenticates the caller: false once it has expired or
    /// been revoked (logout, logout-all, password or role change, deletion).
    /// - Throws: errors other than a refusal (the database's, say).
    package func isStillValid() async throws -> Bool {
        try await check()
    }
}

/// The request context of every route: the request id, the client address and, once the
/// Bearer middleware has run, the caller's identity. It conforms to `WebSocketRequestContext`
/// so `GET /ws` can upgrade on the same router (hummingbird-websocket's requirement).
package struct CairnRequestContext: RequestContext, RemoteAddressRequestContext, WebSocketRequestContext {
    /// Hummingbird's per-request storage (logger, parameters, endpoint path).
    package var coreContext: CoreRequestContextStorage
    /// The request id (`X-Request-Id`, propagated or generated), also in every log line.
    package var requestId: String = ""
    /// The caller, when authenticated.
    package var identity: Identity?
    /// Re-checks the caller's credential (set with ``identity`` by the Bearer middleware).
    package var credential: CredentialCheck?
    /// What the matched route's group accepts as credentials, set by the group's
    /// ``TokenPolicyMiddleware`` for the authenticator (``RouteGroups/authenticated(_:accepting:)``).
    package internal(set) var tokenPolicy: TokenPolicy = .users
    /// The TCP peer address, used for per-client rate limits.
    package let remoteAddress: SocketAddress?
    /// The WebSocket handler a `ws` route hands to the upgrade (hummingbird-websocket).
    package let webSocket: WebSocketHandlerReference<CairnRequestContext>
    /// How a WebSocket route serves the connection from its pipeline once upgraded (see
    /// ``WebSocketPipelineReference``); without one, the upgrade falls back to `webSocket`.
    package let webSocketPipeline: WebSocketPipelineReference
    /// The request's connection: long-lived responses (WebSocket, SSE) close it when the client
    /// stops reading, since a write waiting for the peer cannot be cancelled otherwise.
    package let channel: any Channel

    /// Creates the context for one request.
    package init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.remoteAddress = source.channel.remoteAddress
        self.channel = source.channel
        self.webSocket = .init()
        self.webSocketPipeline = .init()
        self.clientAddress = source.channel.remoteAddress?.ipAddress ?? "unknown"
    }

    /// Bodies above 1 MiB are refused with 413 (DESIGN.md, HTTP conventions).
    package var maxUploadSize: Int { 1 << 20 }

    /// The client's IP address as text, or `"unknown"`: the TCP peer, unless the peer is a
    /// trusted proxy (``ClientAddressMiddleware`` then sets what the proxies' headers say).
    package internal(set) var clientAddress: String

    /// True when a trusted proxy said the client used HTTPS (`Forwarded: proto=https` or
    /// `X-Forwarded-Proto: https`, RFC 7239 §5.4); Cairn itself serves plain HTTP, so cookies
    /// are marked `Secure` only then.
    package internal(set) var forwardedHTTPS = false
}

/// The context of authenticated routes: the identity is not optional, so handlers never check it.
package struct AuthenticatedContext: ChildRequestContext {
    /// Hummingbird's per-request storage.
    package var coreContext: CoreRequestContextStorage
    /// The request id.
    package var requestId: String
    /// The authenticated caller.
    package let identity: Identity
    /// Re-checks the caller's credential, for responses that outlive the request.
    package let credential: CredentialCheck?
    /// The client's IP address as text.
    package let clientAddress: String
    /// True when a trusted proxy said the client used HTTPS (see ``CairnRequestContext/forwardedHTTPS``).
    package let forwardedHTTPS: Bool
    /// The request's connection (see ``CairnRequestContext/channel``).
    package let channel: any Channel

    /// Builds the child context; throws 401 when the parent carries no identity, which can only
    /// happen if a route was mounted without the Bearer middleware.
    package init(context: CairnRequestContext) throws {
        guard let identity = context.identity else {
            throw AppError.unauthorized(code: .unauthorized, detail: "A Bearer access token is required.", invalidToken: false)
        }
        self.coreContext = context.coreContext
        self.requestId = context.requestId
        self.identity = identity
        self.credential = context.credential
        self.clientAddress = context.clientAddress
        self.forwardedHTTPS = context.forwardedHTTPS
        self.channel = context.channel
    }

    /// Bodies above 1 MiB are refused with 413.
    package var maxUploadSize: Int { 1 << 20 }
}

/// How an upgraded WebSocket connection is served from its channel pipeline, with no task per
/// connection: a route's handler sets it while answering the upgrade request; the server's
/// upgrade channel runs it on the channel's event loop when the handshake is answered, before
/// any frame is read, so a frame sent right behind the handshake reaches it too.
package final class WebSocketPipelineReference: Sendable {
    /// Adds the handlers that serve the upgraded channel (it runs on the channel's event loop).
    package typealias Installer = @Sendable (any Channel) throws -> Void

    private let installer = Mutex<Installer?>(nil)

    /// None set yet.
    package init() {}

    /// The installer set by the route, if any.
    package var value: Installer? { installer.withLock { $0 } }

    /// Sets how the upgraded connection is served.
    package func set(_ value: @escaping Installer) {
        installer.withLock { $0 = value }
    }
}
