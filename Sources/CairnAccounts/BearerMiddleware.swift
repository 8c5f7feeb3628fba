public import CairnHTTP
import Foundation
public import Hummingbird
import Logging

/// The one Bearer-token middleware (RFC 6750 §2.1) every protected route shares.
///
/// Reads `Authorization: Bearer <token>` (scheme case-insensitive), verifies the access token
/// and its revocation state, and puts the identity on the context. Missing → 401
/// `unauthorized`; malformed, forged, revoked or wrong-algorithm → 401 `invalid_token`;
/// expired → 401 `token_expired`; each with `WWW-Authenticate: Bearer`.
public struct BearerMiddleware: RouterMiddleware {
    let accounts: AccountService

    /// Creates the middleware.
    public init(accounts: AccountService) {
        self.accounts = accounts
    }

    /// Handles one request.
    public func handle(
        _ request: Request, context: CairnRequestContext,
        next: (Request, CairnRequestContext) async throws -> Response
    ) async throws -> Response {
        guard let header = request.headers[.authorization] else {
            throw AppError.unauthorized(code: "unauthorized", detail: "A Bearer access token is required.", invalidToken: false)
        }
        guard let token = Self.bearerToken(header) else {
            throw AppError.unauthorized(code: "invalid_token", detail: "The Authorization header is not a Bearer token.", invalidToken: true)
        }
        var context = context
        let identity = try await accounts.authenticate(bearer: token)
        context.identity = identity
        context.logger[metadataKey: "user_id"] = .string(identity.userId)
        context.logger[metadataKey: "tenant_id"] = .string(identity.tenantId)
        return try await next(request, context)
    }

    /// The token of an `Authorization` value in the RFC 6750 §2.1 `b64token` syntax, or nil.
    static func bearerToken(_ header: String) -> String? {
        let parts = header.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else { return nil }
        let token = parts[1].trimmingCharacters(in: .whitespaces)
        let allowed = token.utf8.allSatisfy { byte in
            (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
                || "-._~+/=".utf8.contains(byte)
        }
        return allowed && !token.isEmpty ? token : nil
    }
}
