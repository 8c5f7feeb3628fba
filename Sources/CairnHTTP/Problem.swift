import Foundation
public import HTTPTypes
public import Hummingbird
public import HummingbirdCore
import NIOCore

/// One field-level validation failure inside a problem document: `{field, issue}`.
public struct FieldIssue: Sendable, Equatable, Codable {
    /// The JSON field (dotted path for nested fields) or query parameter at fault.
    public var field: String
    /// A short, human-readable statement of what is wrong with it.
    public var issue: String

    /// Creates a field issue.
    public init(field: String, issue: String) {
        self.field = field
        self.issue = issue
    }
}

/// The one error type that reaches clients: an RFC 9457 problem document with a stable `code`.
///
/// Every other error thrown by a handler is turned into `internal` (500) by ``ProblemMiddleware``,
/// so no stack trace, SQL text or secret can leak into a response.
/// The body is `application/problem+json`: `{type, title, status, code, detail?, errors?}`.
public struct AppError: Error, Sendable, HTTPResponseError {
    /// HTTP status of the response.
    public var status: HTTPResponse.Status
    /// Stable machine-readable code (`invalid_input`, `not_found`, ...), documented in openapi.yaml.
    public var code: String
    /// Human-readable explanation specific to this occurrence; never contains secrets.
    public var detail: String?
    /// Field-level validation failures, for `invalid_input`.
    public var errors: [FieldIssue]
    /// Extra response headers (`WWW-Authenticate`, `Retry-After`, `Allow`, ...).
    public var headers: HTTPFields

    /// Creates a problem with the given status, code and optional detail.
    public init(
        _ status: HTTPResponse.Status, code: String, detail: String? = nil, errors: [FieldIssue] = [],
        headers: HTTPFields = [:]
    ) {
        self.status = status
        self.code = code
        self.detail = detail
        self.errors = errors
        self.headers = headers
    }

    /// 400 `invalid_input` listing the failing fields.
    public static func invalidInput(_ errors: [FieldIssue], detail: String = "The request has invalid fields.") -> AppError {
        AppError(.badRequest, code: "invalid_input", detail: detail, errors: errors)
    }

    /// 400 `invalid_input` for a single field.
    public static func invalidField(_ field: String, _ issue: String) -> AppError {
        invalidInput([FieldIssue(field: field, issue: issue)])
    }

    /// 404 `not_found`. Used for missing rows and for other tenants' rows alike (no existence leak).
    public static func notFound(_ detail: String = "The resource does not exist.") -> AppError {
        AppError(.notFound, code: "not_found", detail: detail)
    }

    /// 403 `forbidden`: authenticated, but the role does not allow this.
    public static func forbidden(_ detail: String = "Your role does not allow this action.") -> AppError {
        AppError(.forbidden, code: "forbidden", detail: detail)
    }

    /// 403 `forbidden` for a service token whose scopes do not cover the route, with
    /// `WWW-Authenticate: Bearer error="insufficient_scope"` and, when the route accepts one,
    /// the `scope` it needs (RFC 6750 §3.1).
    public static func insufficientScope(_ scope: String?) -> AppError {
        var challenge = "Bearer realm=\"cairn\", error=\"insufficient_scope\""
        if let scope { challenge += ", scope=\"\(scope)\"" }
        let detail = scope.map { "This service token lacks the scope \($0)." } ?? "Service tokens cannot call this route."
        return AppError(.forbidden, code: "forbidden", detail: detail, headers: [.wwwAuthenticate: challenge])
    }

    /// 409 `conflict`.
    public static func conflict(_ detail: String) -> AppError {
        AppError(.conflict, code: "conflict", detail: detail)
    }

    /// 412 `precondition_failed`: `If-Match` did not match the current `ETag`.
    public static func preconditionFailed() -> AppError {
        AppError(.preconditionFailed, code: "precondition_failed", detail: "The resource has changed since the given ETag.")
    }

    /// 401 with `WWW-Authenticate: Bearer` (RFC 6750 §3). `invalidToken` adds `error="invalid_token"`.
    public static func unauthorized(code: String, detail: String, invalidToken: Bool) -> AppError {
        var challenge = "Bearer realm=\"cairn\""
        if invalidToken {
            challenge += ", error=\"invalid_token\""
        }
        return AppError(.unauthorized, code: code, detail: detail, headers: [.wwwAuthenticate: challenge])
    }

    /// 429 `rate_limited` with `Retry-After` (seconds) and the IETF RateLimit headers.
    public static func rateLimited(retryAfter seconds: Int, policy: String, detail: String) -> AppError {
        var headers = HTTPFields()
        headers[.retryAfter] = String(max(1, seconds))
        headers[HTTPField.Name("RateLimit-Policy")!] = policy
        headers[HTTPField.Name("RateLimit")!] = "remaining=0, reset=\(max(1, seconds))"
        return AppError(.tooManyRequests, code: "rate_limited", detail: detail, headers: headers)
    }

    /// Renders the problem document.
    public func response(from request: Request, context: some RequestContext) throws -> Response {
        var headers = self.headers
        headers[.contentType] = "application/problem+json"
        var writer = JSONWriter()
        writer.objectStart()
        writer.key("type")
        writer.string("https://cairn.dev/problems/\(code)")
        writer.key("title")
        writer.string(status.reasonPhrase)
        writer.key("status")
        writer.int(status.code)
        writer.key("code")
        writer.string(code)
        if let detail {
            writer.key("detail")
            writer.string(detail)
        }
        if !errors.isEmpty {
            writer.key("errors")
            writer.arrayStart()
            for issue in errors {
                writer.objectStart()
                writer.key("field")
                writer.string(issue.field)
                writer.key("issue")
                writer.string(issue.issue)
                writer.objectEnd()
            }
            writer.arrayEnd()
        }
        writer.objectEnd()
        return Response(status: status, headers: headers, body: .init(byteBuffer: writer.buffer))
    }
}
