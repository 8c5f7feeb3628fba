import Foundation
import HTTPTypes
package import Hummingbird

/// The origins a browser page may call Cairn from (`CAIRN_CORS_ORIGINS`: a comma-separated list
/// of exact origins such as `https://app.example.com, http://localhost:5173`); empty, the
/// default, turns CORS off.
package struct CORSOrigins: Sendable, Equatable {
    /// The allowed origins, serialized as browsers send them (`scheme://host[:port]`, lower-case,
    /// default ports left out).
    package var origins: Set<String>

    /// No origin: CORS off.
    package init(origins: Set<String> = []) {
        self.origins = origins
    }

    /// Parses a comma-separated list of origins (RFC 6454 §6.2 serialization; a trailing `/` is
    /// tolerated and dropped).
    /// - Throws: ``Invalid`` naming the first entry that is not an http(s) origin (`*` included:
    ///   credentials are never granted to every origin).
    package init(parsing text: String) throws {
        var origins: Set<String> = []
        for entry in text.split(separator: ",") {
            let trimmed = entry.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty { continue }
            guard let origin = Self.serialized(trimmed) else { throw Invalid(entry: trimmed) }
            origins.insert(origin)
        }
        self.origins = origins
    }

    /// `HTTPS://App.Example.com:443/` → `https://app.example.com`; nil for anything with a path,
    /// query, user info or another scheme.
    static func serialized(_ text: String) -> String? {
        var text = text
        if text.hasSuffix("/") { text.removeLast() }
        guard let components = URLComponents(string: text), let scheme = components.scheme?.lowercased(), ["http", "https"].contains(scheme),
            let host = components.host?.lowercased(), !host.isEmpty, components.path.isEmpty, components.query == nil,
            components.fragment == nil, components.user == nil, components.password == nil
        else { return nil }
        let defaultPort = scheme == "https" ? 443 : 80
        let port = components.port.flatMap { $0 == defaultPort ? nil : $0 }
        return "\(scheme)://\(host)" + (port.map { ":\($0)" } ?? "")
    }

    /// An entry of the list that is not an origin.
    package struct Invalid: Error, CustomStringConvertible {
        /// The bad entry.
        package var entry: String
        /// One line for the configuration error.
        package var description: String { "'\(entry)' is not an origin (such as https://app.example.com or http://localhost:5173)" }
    }
}

/// CORS for the listed origins (the Fetch standard's CORS protocol, §3.2): a preflight
/// (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) from a listed origin is
/// answered 204 here, for any path and before authentication; other requests from a listed
/// origin get `Access-Control-Allow-Origin` (the origin itself), `-Allow-Credentials: true`
/// and `-Expose-Headers` on their answer, errors included. Requests from other origins pass
/// through with no CORS header, so browsers refuse their pages the answers. Every answer
/// carries `Vary: Origin` while CORS is on, so caches keep the answers apart.
package struct CORSMiddleware<Context: RequestContext>: RouterMiddleware {
    /// The allowed origins, serialized (see ``CORSOrigins``); empty: CORS off.
    let origins: Set<String>

    /// Methods a preflight may ask for.
    static var allowedMethods: String { "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS" }
    /// Request headers a page may send (besides the CORS-safelisted ones).
    static var allowedHeaders: String {
        [
            "Authorization", "Content-Type", "Idempotency-Key", "If-Match", "If-None-Match", "Range", "X-Request-Id", "Last-Event-ID",
            "Tus-Resumable", "Upload-Length", "Upload-Offset", "Upload-Metadata", "Upload-Checksum", "Upload-Defer-Length",
            "Upload-Concat", "X-HTTP-Method-Override", "Content-Disposition",
        ].joined(separator: ", ")
    }
    /// Response headers a page may read (besides the CORS-safelisted ones).
    static var exposedHeaders: String {
        [
            "Location", "ETag", "Retry-After", "X-Request-Id", "Upload-Offset", "Upload-Length", "Upload-Metadata", "Upload-Expires", "Tus-Resumable",
            "Tus-Version", "Tus-Extension", "Tus-Max-Size", "Tus-Checksum-Algorithm", "Cairn-File-Id", "Content-Disposition",
            "Content-Range", "Accept-Ranges", "RateLimit", "RateLimit-Policy", "WWW-Authenticate", "Link",
        ].joined(separator: ", ")
    }
    /// Seconds a browser may cache a preflight's answer.
    static var maxAge: String { "600" }

    /// Creates the middleware; with no origins it passes every request through untouched.
    package init(origins: CORSOrigins) {
        self.origins = origins.origins
    }

    /// Handles one request.
    package func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if origins.isEmpty { return try await next(request, context) }
        guard let origin = request.headers[.origin], origins.contains(origin) else {
            return Self.varying(try await Self.answer(request, context: context, next: next))
        }
        if request.method == .options, request.headers[.accessControlRequestMethod] != nil {
            var headers: HTTPFields = [
                .accessControlAllowOrigin: origin, .accessControlAllowCredentials: "true",
                .accessControlAllowMethods: Self.allowedMethods, .accessControlAllowHeaders: Self.allowedHeaders,
                .accessControlMaxAge: Self.maxAge,
            ]
            headers[values: .vary] = ["Origin", "Access-Control-Request-Method", "Access-Control-Request-Headers"]
            return Response(status: .noContent, headers: headers)
        }
        var response = Self.varying(try await Self.answer(request, context: context, next: next))
        response.headers[.accessControlAllowOrigin] = origin
        response.headers[.accessControlAllowCredentials] = "true"
        response.headers[.accessControlExposeHeaders] = Self.exposedHeaders
        return response
    }

    /// The answer of the rest of the chain, an error rendered as its response (so CORS headers
    /// reach error answers too).
    static func answer(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as any HTTPResponseError {
            return try error.response(from: request, context: context)
        }
    }

    /// `response` with `Origin` in its `Vary`.
    static func varying(_ response: Response) -> Response {
        var response = response
        if !response.headers[values: .vary].contains(where: { $0.lowercased() == "origin" || $0 == "*" }) {
            response.headers[values: .vary].append("Origin")
        }
        return response
    }
}
