import Foundation
package import HTTPTypes
package import Hummingbird
package import HummingbirdCore
package import NIOCore

/// One field-level validation failure inside a problem document: `{field, issue}`.
package struct FieldIssue: Sendable, Equatable, Codable {
    /// The JSON field (dotted path for nested fields) or query parameter at fault.
    package var field: String
    /// A short, human-readable statement of what is wrong with it.
    package var issue: String

    /// Creates a field issue.
    package init(field: String, issue: String) {
        self.field = field
        self.issue = issue
    }
}

/// The one error type that reaches clients: an RFC 9457 problem document with a stable `code`.
///
/// Every other error thrown by a handler is turned into `internal` (500) by ``ProblemMiddleware``,
/// so no stack trace, SQL text or secret can leak into a response.
/// The body is `application/problem+json`: `{type, title, status, code, detail?, errors?}`.
package struct AppError: Error, Sendable, HTTPResponseError {
    /// The closed set of stable, machine-readable problem codes. Each one is documented in
    /// openapi.yaml's `Problem` schema (a test checks the two lists are the same set), so a
    /// client can switch on `code` without meeting one it was never told about.
    package enum Code: String, Sendable, CaseIterable, CustomStringConvertible {
        /// 400: empty body, malformed JSON, or nesting too deep.
        case invalidJSON = "invalid_json"
        /// 400: a field or parameter is missing, mistyped or out of range (see `errors`).
        case invalidInput = "invalid_input"
        /// 400: the request is not valid HTTP/1.1 (a raw non-ASCII byte in its request line, a
        /// malformed head); the connection is closed after the answer.
        case badRequest = "bad_request"
        /// 408: the request head did not arrive within `CAIRN_HTTP_HEAD_TIMEOUT`; the connection
        /// is closed after the answer.
        case requestTimeout = "request_timeout"
        /// 401: no credentials.
        case unauthorized
        /// 401: malformed, forged, wrong-algorithm or revoked token.
        case invalidToken = "invalid_token"
        /// 401: the access token has expired.
        case tokenExpired = "token_expired"
        /// 401: wrong email or password.
        case invalidCredentials = "invalid_credentials"
        /// 401: unknown, expired or revoked refresh token.
        case invalidRefreshToken = "invalid_refresh_token"
        /// 401: an already-rotated refresh token (the session is revoked).
        case refreshTokenReused = "refresh_token_reused"
        /// 403: the caller's role or token scope does not allow this.
        case forbidden
        /// 403: a request authenticated by the console's refresh-token cookie lacks the
        /// `X-Cairn-CSRF` header or comes from another origin (`Origin`, `Sec-Fetch-Site`).
        case csrfRejected = "csrf_rejected"
        /// 404: no such resource in the caller's tenant, or no such route.
        case notFound = "not_found"
        /// 405: the path does not support this method.
        case methodNotAllowed = "method_not_allowed"
        /// 409: the change clashes with the current state.
        case conflict
        /// 409: the resource belongs to another one, through which alone it changes (a
        /// pipeline's own schedule, under `/schedules`); `detail` names the owner and the way.
        case managedByOwner = "managed_by_owner"
        /// 411: a raw file upload without `Content-Length` (a chunked body cut off before its
        /// last chunk cannot be told from a complete one, so its length must be announced).
        case lengthRequired = "length_required"
        /// 412: `If-Match` (or tus' `Tus-Resumable`) does not match.
        case preconditionFailed = "precondition_failed"
        /// 413: the body or file is too large.
        case payloadTooLarge = "payload_too_large"
        /// 415: the body's media type is not accepted.
        case unsupportedMediaType = "unsupported_media_type"
        /// 416: a `Range` starts past the end of the file.
        case rangeNotSatisfiable = "range_not_satisfiable"
        /// 422: an `Idempotency-Key` reused with a different request.
        case idempotencyKeyMismatch = "idempotency_key_mismatch"
        /// 460 (tus checksum extension): the body does not match `Upload-Checksum`.
        case checksumMismatch = "checksum_mismatch"
        /// 431 (RFC 6585 §5): the request's header block is larger than the server reads; the
        /// connection is closed after the answer.
        case requestHeaderFieldsTooLarge = "request_header_fields_too_large"
        /// 429: too many requests; see `Retry-After`.
        case rateLimited = "rate_limited"
        /// 500: an unexpected error (details only in the server log).
        case `internal`
        /// 503: a dependency is not available.
        case unavailable

        /// The code as it appears in responses and logs.
        package var description: String { rawValue }
    }

    /// HTTP status of the response.
    package var status: HTTPResponse.Status
    /// Stable machine-readable code, one of the closed set documented in openapi.yaml.
    package var code: Code
    /// Human-readable explanation specific to this occurrence; never contains secrets.
    package var detail: String?
    /// Field-level validation failures, for `invalid_input`.
    package var errors: [FieldIssue]
    /// Extra response headers (`WWW-Authenticate`, `Retry-After`, `Allow`, ...).
    package var headers: HTTPFields

    /// Creates a problem with the given status, code and optional detail.
    package init(
        _ status: HTTPResponse.Status, code: Code, detail: String? = nil, errors: [FieldIssue] = [],
        headers: HTTPFields = [:]
    ) {
        self.status = status
        self.code = code
        self.detail = detail
        self.errors = errors
        self.headers = headers
    }

    /// 400 `invalid_input` listing the failing fields.
    package static func invalidInput(_ errors: [FieldIssue], detail: String = "The request has invalid fields.") -> AppError {
        AppError(.badRequest, code: .invalidInput, detail: detail, errors: errors)
    }

    /// 400 `invalid_input` for a single field.
    package static func invalidField(_ field: String, _ issue: String) -> AppError {
        invalidInput([FieldIssue(field: field, issue: issue)])
    }

    /// 404 `not_found`. Used for missing rows and for other tenants' rows alike (no existence leak).
    package static func notFound(_ detail: String = "The resource does not exist.") -> AppError {
        AppError(.notFound, code: .notFound, detail: detail)
    }

    /// 403 `forbidden`: authenticated, but the role does not allow this.
    package static func forbidden(_ detail: String = "Your role does not allow this action.") -> AppError {
        AppError(.forbidden, code: .forbidden, detail: detail)
    }

    /// 403 `forbidden` for a service token whose scopes do not cover the route, with
    /// `WWW-Authenticate: Bearer error="insufficient_scope", scope="…"`: the scope the route
    /// accepts, or ``userScope`` where it accepts none (RFC 6750 §3, §3.1).
    package static func insufficientScope(_ scope: String?) -> AppError {
        // RFC 6750 §3: `scope` names what the route needs; a route no service token may call
        // needs a user's access token, named by the pseudo-scope `user`.
        let challenge = "Bearer realm=\"cairn\", error=\"insufficient_scope\", scope=\"\(scope ?? userScope)\""
        let detail =
            scope.map { "This service token lacks the scope \($0)." } ?? "Service tokens cannot call this route: it needs a user's access token."
        return AppError(.forbidden, code: .forbidden, detail: detail, headers: [.wwwAuthenticate: challenge])
    }

    /// The `scope` of a 403 `insufficient_scope` on a route only users' access tokens may call
    /// (RFC 6750 §3); no service token can hold it.
    package static let userScope = "user"

    /// 409 `conflict`.
    package static func conflict(_ detail: String) -> AppError {
        AppError(.conflict, code: .conflict, detail: detail)
    }

    /// 413 `payload_too_large` for a request body longer than `limit` bytes, which the detail
    /// names (RFC 9110 §15.5.14).
    package static func bodyTooLarge(limit: Int) -> AppError {
        AppError(.contentTooLarge, code: .payloadTooLarge, detail: "The request body exceeds the limit of \(limit) bytes.")
    }

    /// 412 `precondition_failed`: `If-Match` did not match the current `ETag`.
    package static func preconditionFailed() -> AppError {
        AppError(.preconditionFailed, code: .preconditionFailed, detail: "The resource has changed since the given ETag.")
    }

    /// 401 with `WWW-Authenticate: Bearer` (RFC 6750 §3). `invalidToken` adds `error="invalid_token"`.
    package static func unauthorized(code: Code, detail: String, invalidToken: Bool) -> AppError {
        var challenge = "Bearer realm=\"cairn\""
        if invalidToken {
            challenge += ", error=\"invalid_token\""
        }
        return AppError(.unauthorized, code: code, detail: detail, headers: [.wwwAuthenticate: challenge])
    }

    /// 429 `rate_limited` with `Retry-After` (seconds) and the IETF RateLimit headers.
    package static func rateLimited(retryAfter seconds: Int, policy: String, detail: String) -> AppError {
        var headers = HTTPFields()
        headers[.retryAfter] = String(max(1, seconds))
        headers[HTTPField.Name("RateLimit-Policy")!] = policy
        headers[HTTPField.Name("RateLimit")!] = "remaining=0, reset=\(max(1, seconds))"
        return AppError(.tooManyRequests, code: .rateLimited, detail: detail, headers: headers)
    }

    /// Renders the problem document.
    package func response(from request: Request, context: some RequestContext) throws -> Response {
        var headers = self.headers
        headers[.contentType] = "application/problem+json"
        return Response(status: status, headers: headers, body: .init(byteBuffer: document()))
    }

    /// The problem document (RFC 9457): `{type, title, status, code, detail?, errors?}`, as
    /// every error answer carries it, including those written below the router.
    package func document() -> ByteBuffer {
        var writer = JSONWriter()
        writer.objectStart()
        writer.field("type", "https://cairn.dev/problems/\(code.rawValue)")
        writer.field("title", status.reasonPhrase)
        writer.field("status", status.code)
        writer.field("code", code.rawValue)
        if let detail {
            writer.field("detail", detail)
        }
        if !errors.isEmpty {
            writer.key("errors")
            writer.arrayStart()
            for issue in errors {
                writer.objectStart()
                writer.field("field", issue.field)
                writer.field("issue", issue.issue)
                writer.objectEnd()
            }
            writer.arrayEnd()
        }
        writer.objectEnd()
        return writer.buffer
    }
}
