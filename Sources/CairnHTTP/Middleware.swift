import CairnStorage
import Foundation
package import HTTPTypes
package import Hummingbird
package import HummingbirdCore
package import Logging
import Synchronization

/// Knows which methods each registered path answers, so that a wrong method gets
/// 405 + `Allow` instead of the router's 404. Filled once from `Router.routes` after all
/// routes are registered, before the server starts.
package final class RouteIndex: Sendable {
    private let routes = Mutex<[(path: RouterPath, method: HTTPRequest.Method)]>([])

    /// Creates an empty index.
    package init() {}

    /// Replaces the index with the router's routes. With `headForGet`, every GET route also
    /// answers HEAD (the router's `.autoGenerateHeadEndpoints`, which `routes` does not list).
    package func load<Context>(from router: Router<Context>, headForGet: Bool = true) {
        var list = router.routes.map { (path: $0.path, method: $0.method) }
        if headForGet {
            list += list.filter { $0.method == .get }.map { (path: $0.path, method: HTTPRequest.Method.head) }
        }
        routes.withLock { $0 = list }
    }

    /// The methods registered for a concrete request path (empty when no route matches it).
    package func allowedMethods(for path: String) -> [HTTPRequest.Method] {
        let segments = path.split(separator: "/", omittingEmptySubsequences: true)
        return routes.withLock { routes in
            // Like the router, prefer the most specific pattern: `/users/me` hides `/users/:id`.
            var best = -1
            var methods: [HTTPRequest.Method] = []
            for route in routes where route.path.count == segments.count {
                var literals = 0
                var matches = true
                for (element, segment) in zip(route.path, segments) {
                    guard element ~= segment else {
                        matches = false
                        break
                    }
                    if element == segment { literals += 1 }
                }
                guard matches else { continue }
                if literals > best {
                    best = literals
                    methods = []
                }
                if literals == best && !methods.contains(route.method) { methods.append(route.method) }
            }
            return methods
        }
    }
}

/// Assigns each request an id (`X-Request-Id`: propagated when the client sent a sane one,
/// else a new UUID), puts it in the logger's metadata so every log line carries it, and echoes
/// it on the response.
package struct RequestIDMiddleware: RouterMiddleware {
    /// The header name, `X-Request-Id`.
    package static let header = HTTPField.Name("X-Request-Id")!

    /// Creates the middleware.
    package init() {}

    /// Handles one request.
    package func handle(
        _ request: Request, context: CairnRequestContext,
        next: (Request, CairnRequestContext) async throws -> Response
    ) async throws -> Response {
        var context = context
        let id: String
        if let given = request.headers[Self.header], Self.isAcceptable(given) {
            id = given
        } else {
            var generator = FastIDGenerator()
            id = generator.uuidString()
        }
        context.requestId = id
        context.logger[metadataKey: "request_id"] = .string(id)
        do {
            var response = try await next(request, context)
            response.headers[Self.header] = id
            return response
        } catch let error as any HTTPResponseError {
            var response = try error.response(from: request, context: context)
            response.headers[Self.header] = id
            return response
        }
    }

    /// Only short ids of URL-safe characters are propagated, so a client cannot inject log lines:
    /// 1 to 128 of `A-Z a-z 0-9 - _ .`.
    package static func isAcceptable(_ value: String) -> Bool {
        !value.isEmpty && value.utf8.count <= 128
            && value.utf8.allSatisfy { byte in
                (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
                    || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "_") || byte == UInt8(ascii: ".")
            }
    }
}

/// Refuses a request path that names a resource only once normalised, so it can never be
/// served as another one: an empty segment (`/tasks//{id}`, which the router's split drops) or a
/// dot segment (`.` or `..`, RFC 3986 §3.3 and §5.2.4, also written percent-encoded as `%2e`,
/// RFC 3986 §2.1 and §6.2.2.2). Such a path answers 404 `not_found`: it matches no route as
/// written, and the closed set of problem codes has no other for it. One trailing `/` stays
/// allowed (`/`, `/console/`), as the routes have always read it.
package struct PathSegmentsMiddleware<Context: RequestContext>: RouterMiddleware {
    /// Creates the middleware.
    package init() {}

    /// Handles one request.
    /// - Throws: 404 `not_found` for a path with an empty or dot segment.
    package func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard Self.isRoutable(request.uri.path) else {
            throw AppError.notFound("No route matches \(request.method.rawValue) \(request.uri.path): a path has no empty, `.` or `..` segments.")
        }
        return try await next(request, context)
    }

    /// Whether `path` has neither an empty segment (one trailing `/` aside) nor a dot segment,
    /// percent-encoded or not.
    package static func isRoutable(_ path: String) -> Bool {
        var segments = path.utf8.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false)
        // The text before the leading `/` is no segment; one trailing `/` (`/`, `/console/`)
        // leaves an empty last one, which the routes have always read as none.
        if segments.first?.isEmpty == true { segments.removeFirst() }
        if segments.last?.isEmpty == true { segments.removeLast() }
        return segments.allSatisfy { !$0.isEmpty && !isDotSegment($0) }
    }

    /// True for `.` and `..`, each dot written as itself or as `%2e` / `%2E`.
    static func isDotSegment(_ segment: Substring.UTF8View) -> Bool {
        var dots = 0
        var index = segment.startIndex
        while index < segment.endIndex {
            if segment[index] == UInt8(ascii: ".") {
                index = segment.index(after: index)
            } else if segment[index] == UInt8(ascii: "%"), segment.distance(from: index, to: segment.endIndex) >= 3,
                segment[segment.index(index, offsetBy: 1)] == UInt8(ascii: "2"),
                segment[segment.index(index, offsetBy: 2)] | 0x20 == UInt8(ascii: "e")
            {
                index = segment.index(index, offsetBy: 3)
            } else {
                return false
            }
            dots += 1
            if dots > 2 { return false }
        }
        return dots > 0
    }
}

/// Turns every error into an RFC 9457 problem document with a stable code.
///
/// `AppError` passes through; Hummingbird's own errors are mapped by status (404 becomes 405 +
/// `Allow` when the path exists under another method); a ``DeadlineExceeded`` is 503
/// `unavailable` with `Retry-After` (RFC 9110 §15.6.4); anything else is logged by type and
/// answered as 500 `internal` without details, so no SQL or secret can reach a client.
package struct ProblemMiddleware<Context: RequestContext>: RouterMiddleware {
    let routes: RouteIndex

    /// Creates the middleware; `routes` is consulted for 405 answers.
    package init(routes: RouteIndex) {
        self.routes = routes
    }

    /// Handles one request.
    package func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as AppError {
            throw error
        } catch let error as HTTPError {
            throw map(error, request: request, context: context)
        } catch let error as any HTTPResponseError {
            // NIO's `NIOTooManyBytesError` (a body read past its limit) is one: it comes with no words.
            if error.status == .contentTooLarge { throw AppError.bodyTooLarge(limit: context.maxUploadSize) }
            throw AppError(error.status, code: Self.code(for: error.status))
        } catch is CancellationError {
            throw AppError(.serviceUnavailable, code: .unavailable, detail: "The request was cancelled.")
        } catch let error as DeadlineExceeded {
            // A dependency (most often the database) did not answer in time: the node is
            // overloaded or cut off, not broken, and the client may try again.
            context.logger.warning("deadline exceeded", metadata: ["error": .string(error.description)])
            throw AppError(
                .serviceUnavailable, code: .unavailable, detail: "A dependency did not answer in time; try again shortly.",
                headers: [.retryAfter: "1"])
        } catch {
            context.logger.error(
                "unhandled error",
                metadata: ["error.type": .string(String(reflecting: type(of: error))), "error": .string(Self.sanitized(error))]
            )
            throw AppError(.internalServerError, code: .internal, detail: "An internal error occurred.")
        }
    }

    private func map(_ error: HTTPError, request: Request, context: Context) -> AppError {
        if error.status == .notFound {
            let allowed = routes.allowedMethods(for: request.uri.path)
            if !allowed.isEmpty {
                var headers = HTTPFields()
                headers[.allow] = allowed.map(\.rawValue).sorted().joined(separator: ", ")
                return AppError(
                    .methodNotAllowed, code: .methodNotAllowed,
                    detail: "\(request.method.rawValue) is not allowed here.", headers: headers)
            }
            return AppError(.notFound, code: .notFound, detail: "No route matches \(request.method.rawValue) \(request.uri.path).")
        }
        if error.status == .contentTooLarge {
            return AppError.bodyTooLarge(limit: context.maxUploadSize)
        }
        return AppError(error.status, code: Self.code(for: error.status), detail: error.body)
    }

    /// The stable code for a status that reached us without one.
    static func code(for status: HTTPResponse.Status) -> AppError.Code {
        switch status.code {
        case 400: .invalidInput
        case 401: .unauthorized
        case 403: .forbidden
        case 404: .notFound
        case 405: .methodNotAllowed
        case 409: .conflict
        case 412: .preconditionFailed
        case 413: .payloadTooLarge
        case 415: .unsupportedMediaType
        case 429: .rateLimited
        case 503: .unavailable
        default: status.code >= 500 ? .internal : .invalidInput
        }
    }

    /// Error text for logs, cut short: driver errors may be long, and are never echoed to clients.
    static func sanitized(_ error: any Error) -> String {
        String(String(describing: error).prefix(300))
    }
}

/// Query parameters whose values are never logged or traced (see `RequestLogMiddleware`).
private let redactedQueryParameters: Set<String> = ["access_token"]
private let redactedQueryParameterBytes: [[UInt8]] = redactedQueryParameters.map { Array($0.utf8) }

/// Logs every request (`Request`, with `hb.request.method` and `hb.request.path`), like
/// Hummingbird's `LogRequestsMiddleware`, except that the values of credential query
/// parameters (`access_token`, RFC 6750 §2.3, whose caveats include URLs ending up in logs)
/// are replaced by `***`, so a token never reaches a log line at any level.
package struct RequestLogMiddleware<Context: RequestContext>: RouterMiddleware {
    let level: Logger.Level

    /// Query parameters whose values are never logged (compared after percent-decoding, in any case).
    package static var redactedParameters: Set<String> { redactedQueryParameters }

    /// ``redactedParameters`` as lower-case bytes, for the scan that skips decoding.
    private static var redactedParameterBytes: [[UInt8]] { redactedQueryParameterBytes }

    /// Creates the middleware, logging at `level`.
    package init(_ level: Logger.Level) {
        self.level = level
    }

    /// Handles one request.
    package func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        // Skip the redaction work when the line would be dropped anyway.
        if context.logger.logLevel <= level {
            context.logger.log(
                level: level, "Request",
                metadata: [
                    "hb.request.path": .string(Self.redacted(path: request.uri.path, query: request.uri.query)),
                    "hb.request.method": .string(request.method.rawValue),
                ])
        }
        return try await next(request, context)
    }

    /// `path?query` with the values of ``redactedParameters`` replaced by `***`.
    static func redacted(path: String, query: String?) -> String {
        guard let query, !query.isEmpty else { return path }
        return path + "?" + redactedQuery(query)
    }

    /// `query` with the values of ``redactedParameters`` replaced by `***`; `query` itself when
    /// it names none of them.
    ///
    /// An ASCII query with no `%` or `+` names its parameters literally, so one pass over its bytes
    /// tells whether any needs redacting, with no allocation: the common case on every traced
    /// request (`url.query`) and logged one. Anything else takes the decoding path.
    package static func redactedQuery(_ query: String) -> String {
        mayNameRedactedParameter(query) ? redactedQueryByDecoding(query) : query
    }

    /// ``redactedQuery(_:)`` without its shortcut: every name percent-decoded and compared.
    package static func redactedQueryByDecoding(_ query: String) -> String {
        let pairs = query.split(separator: "&", omittingEmptySubsequences: false).map { pair -> String in
            let name = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
            // A name that does not decode is redacted too: no guessing how a parser reads it.
            guard let decoded = String(name).replacingOccurrences(of: "+", with: " ").removingPercentEncoding,
                // Case-insensitive: a client that writes ACCESS_TOKEN is refused, but its token
                // is still a credential.
                !redactedParameters.contains(decoded.lowercased())
            else { return "\(name)=***" }
            return String(pair)
        }
        return pairs.joined(separator: "&")
    }

    /// False only when `query` certainly names no redacted parameter: every byte is ASCII and
    /// none is `%` or `+` (so names are literal, and ASCII lower-casing is Unicode's: the
    /// Kelvin sign lower-cases to `k`), and no name equals one of ``redactedParameters`` in any
    /// case.
    private static func mayNameRedactedParameter(_ query: String) -> Bool {
        let bytes = query.utf8
        if bytes.contains(where: { $0 >= 0x80 || $0 == UInt8(ascii: "%") || $0 == UInt8(ascii: "+") }) { return true }
        var start = bytes.startIndex
        while start < bytes.endIndex {
            let end = bytes[start...].firstIndex(of: UInt8(ascii: "&")) ?? bytes.endIndex
            let name = bytes[start..<end].prefix { $0 != UInt8(ascii: "=") }
            if redactedParameterBytes.contains(where: { $0.count == name.count && zip($0, name).allSatisfy { $0 == asciiLowercased($1) } }) {
                return true
            }
            start = end == bytes.endIndex ? end : bytes.index(after: end)
        }
        return false
    }

    private static func asciiLowercased(_ byte: UInt8) -> UInt8 {
        byte >= 0x41 && byte <= 0x5A ? byte + 0x20 : byte
    }
}
