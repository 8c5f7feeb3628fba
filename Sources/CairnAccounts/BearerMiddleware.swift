package import CairnHTTP
import CairnStorage
import Foundation
import HTTPTypes
package import Hummingbird
import Logging

/// The one Bearer-token middleware (RFC 6750 §2.1) every protected route shares.
///
/// Reads `Authorization: Bearer <token>` (scheme case-insensitive), verifies the access token
/// and its revocation state, and puts the identity on the context. Missing, or another scheme
/// (`Basic …`) → 401 `unauthorized`; malformed, forged, revoked or wrong-algorithm → 401 `invalid_token`;
/// expired → 401 `token_expired`; each with `WWW-Authenticate: Bearer`. The scheme ends at a
/// space or a tab: `Bearer<TAB>token` is a malformed Bearer header (`invalid_token`), not another
/// scheme, since RFC 9110 §11.4 separates scheme and credentials by spaces only (`1*SP`).
///
/// What else a route accepts is its group's ``TokenPolicy`` (``CairnRequestContext/tokenPolicy``,
/// set where the group is declared: ``RouteGroups/authenticated(_:accepting:)``), never a list
/// of paths.
///
/// Groups whose policy accepts a query token also take the token as the `access_token` query
/// parameter (RFC 6750 §2.3), for clients that cannot set a header (a browser's `EventSource`);
/// a request that sends both, or the parameter more than once, is 400 `invalid_input` (RFC 6750
/// §2: one method per request; §3.1: a repeated parameter is an invalid request).
/// Other groups ignore the parameter. The request log redacts it (``RequestLogMiddleware``).
///
/// Service tokens (`cairn_st_…`, see ``ServiceToken``) are looked up in the database on every
/// request, so a revocation holds at once on every node. They reach only groups whose policy
/// names a service-token scope, and only with that scope; anything else answers 403 `forbidden`
/// with `WWW-Authenticate: Bearer error="insufficient_scope", scope="…"` (RFC 6750 §3.1).
package struct BearerMiddleware: RouterMiddleware {
    let accounts: AccountService

    /// The query parameter of RFC 6750 §2.3.
    package static let queryParameter = "access_token"

    /// Creates the middleware.
    package init(accounts: AccountService) {
        self.accounts = accounts
    }

    /// Handles one request.
    package func handle(
        _ request: Request, context: CairnRequestContext,
        next: (Request, CairnRequestContext) async throws -> Response
    ) async throws -> Response {
        let policy = context.tokenPolicy
        let queryToken = policy.acceptsQueryToken ? try Self.onlyQueryToken(request) : nil
        let token: String
        switch (try Self.authorization(request.headers), queryToken) {
        case (_?, _?):
            throw AppError.invalidField(Self.queryParameter, "send the access token in the Authorization header or the query, not both")
        case (let header?, nil):
            // Another scheme (Basic, Digest…) is no Bearer credential at all: RFC 6750 §3.1 says
            // to answer without an error code, as for a request without credentials.
            guard Self.isBearerScheme(header) else {
                throw AppError.unauthorized(code: .unauthorized, detail: "A Bearer access token is required.", invalidToken: false)
            }
            guard let parsed = Self.bearerToken(header) else { throw Self.malformed(header) }
            token = parsed
        case (nil, let query?):
            guard Self.isB64Token(query.utf8[...]) else {
                throw AppError.unauthorized(code: .invalidToken, detail: "The access_token parameter is not a Bearer token.", invalidToken: true)
            }
            token = query
        case (nil, nil):
            throw AppError.unauthorized(code: .unauthorized, detail: "A Bearer access token is required.", invalidToken: false)
        }
        var context = context
        let identity: Identity
        if token.hasPrefix(AccountService.serviceTokenPrefix) {
            identity = try await accounts.authenticate(serviceToken: token)
            let needed = policy.serviceTokenScope
            guard let needed, identity.scopes?.contains(needed) == true else { throw AppError.insufficientScope(needed) }
            context.logger[metadataKey: "service_token_id"] = .string(identity.tokenId)
            context.credential = CredentialCheck(expiresAtMs: nil) { [accounts] in
                do {
                    _ = try await accounts.authenticate(serviceToken: token)
                    return true
                } catch let error as AppError where error.status == .unauthorized {
                    return false
                }
            }
        } else {
            let expiry: Double
            (identity, expiry) = try await accounts.authenticateWithExpiry(bearer: token)
            context.logger[metadataKey: "user_id"] = .string(identity.userId)
            context.credential = CredentialCheck(expiresAtMs: Int64((expiry * 1000).rounded(.down))) { [accounts] in
                do {
                    _ = try await accounts.authenticate(bearer: token)
                    return true
                } catch let error as AppError where error.status == .unauthorized {
                    return false
                }
            }
        }
        context.identity = identity
        context.logger[metadataKey: "tenant_id"] = .string(identity.tenantId)
        TraceContext.setAttribute("cairn.tenant_id", identity.tenantId)
        return try await next(request, context)
    }

    /// The request's `Authorization` value, or nil. Read field by field: a lookup by name joins
    /// every value into a new string, a copy of the token on every protected request.
    /// - Throws: `AppError.unauthorized` (`invalid_token`) for more than one `Authorization`
    ///   field: RFC 9110 §5.3 allows repeating only list-valued fields, and a credential is not.
    package static func authorization(_ fields: HTTPFields) throws -> String? {
        let name = HTTPField.Name.authorization
        var value: String?
        for field in fields where field.name == name {
            guard value == nil else {
                throw AppError.unauthorized(code: .invalidToken, detail: "The request has more than one Authorization header.", invalidToken: true)
            }
            value = field.value
        }
        return value
    }

    /// The token of an `Authorization` value in the RFC 6750 §2.1 `b64token` syntax, or nil.
    /// Scans UTF-8 bytes directly: this runs on every protected request.
    package static func bearerToken(_ header: String) -> String? {
        let bytes = header.utf8
        guard bytes.count > 7 else { return nil }
        var index = bytes.startIndex
        for expected in "bearer".utf8 {
            guard bytes[index] | 0x20 == expected else { return nil }  // ASCII case-insensitive
            index = bytes.index(after: index)
        }
        guard bytes[index] == UInt8(ascii: " ") else { return nil }
        while index < bytes.endIndex, bytes[index] == UInt8(ascii: " ") { index = bytes.index(after: index) }
        var end = bytes.endIndex
        while end > index, bytes[bytes.index(before: end)] == UInt8(ascii: " ") { end = bytes.index(before: end) }
        guard index < end, isB64Token(bytes[index..<end]) else { return nil }
        return String(header.utf8[index..<end])
    }

    /// Whether an `Authorization` value uses the `Bearer` scheme (ASCII case-insensitive,
    /// RFC 9110 §11.1): its first word, up to a space, a tab or the end. A tab ends the word
    /// too, so `Bearer<TAB>token` counts as a Bearer header (then refused as malformed by
    /// ``bearerToken(_:)``) rather than as an unknown scheme.
    package static func isBearerScheme(_ header: String) -> Bool {
        let scheme = header.utf8.prefix { $0 != UInt8(ascii: " ") && $0 != UInt8(ascii: "\t") }
        return scheme.count == 6 && zip(scheme, "bearer".utf8).allSatisfy { $0 | 0x20 == $1 }
    }

    /// The 401 `invalid_token` for a Bearer header ``bearerToken(_:)`` refuses, saying why when
    /// the cause is a tab (off the hot path: only refused headers get here).
    static func malformed(_ header: String) -> AppError {
        let detail =
            header.utf8.contains(UInt8(ascii: "\t"))
            ? "The Authorization header has a tab: RFC 9110 §11.4 separates the scheme and the token by spaces only."
            : "The Authorization header is not a Bearer token."
        return AppError.unauthorized(code: .invalidToken, detail: detail, invalidToken: true)
    }

    /// The `access_token` query parameter (percent-decoded), if present.
    package static func queryToken(_ request: Request) -> String? {
        request.uri.queryParameters.get(queryParameter).map { String($0) }
    }

    /// The `access_token` query parameter (percent-decoded), if present once.
    /// - Throws: 400 `invalid_input` on `access_token` when it is repeated: which one is the
    ///   credential would be a guess (RFC 6750 §3.1 `invalid_request`).
    package static func onlyQueryToken(_ request: Request) throws -> String? {
        let values = request.uri.queryParameters.getAll(queryParameter)
        guard values.count <= 1 else {
            throw AppError.invalidField(queryParameter, "must be given once, not \(values.count) times")
        }
        return values.first
    }

    /// True for a non-empty RFC 6750 `b64token`.
    package static func isB64Token(_ bytes: Substring.UTF8View) -> Bool {
        guard !bytes.isEmpty else { return false }
        // Every protected request scans its whole token here: over contiguous bytes (a native
        // string's; a bridged one is copied first) with one bit test per byte. As a chain of
        // range comparisons this took ~2 % of such a request's CPU, and as a generic loop (a
        // witness call per byte) 0.6 %.
        return bytes.withContiguousStorageIfAvailable(allB64TokenBytes) ?? Array(bytes).withUnsafeBufferPointer(allB64TokenBytes)
    }

    private static func allB64TokenBytes(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        // Read once: a static is a lazy global, and each read checks its initialisation.
        let b64TokenMask = Self.b64TokenMask
        for byte in bytes {
            let bit: UInt64 =
                switch byte {
                case 0..<64: (b64TokenMask.low >> UInt64(byte)) & 1
                case 64..<128: (b64TokenMask.high >> UInt64(byte - 64)) & 1
                default: 0
                }
            if bit == 0 { return false }
        }
        return true
    }

    /// The `b64token` characters of RFC 6750 §2.1 (`ALPHA / DIGIT / "-" / "." / "_" / "~" /
    /// "+" / "/"`, then `"="` padding) as a bit set over ASCII: bytes 0–63, then 64–127.
    private static let b64TokenMask: (low: UInt64, high: UInt64) = {
        var low: UInt64 = 0
        var high: UInt64 = 0
        for byte in "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-._~+/=".utf8 {
            if byte < 64 { low |= 1 << UInt64(byte) } else { high |= 1 << UInt64(byte - 64) }
        }
        return (low, high)
    }()
}
