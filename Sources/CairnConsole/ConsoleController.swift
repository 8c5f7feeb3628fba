package import CairnHTTP
import Crypto
import Foundation
import HTTPTypes
package import Hummingbird
import NIOCore

/// The browser console: static HTML, CSS and ES modules embedded as package resources and
/// served at `/console/…`, plus the redirect of a browser's `GET /` there.
///
/// Every answer carries a strict Content-Security-Policy (no inline script or style, no other
/// origin), `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer`, a strong `ETag`
/// (SHA-256 of the bytes) and `Cache-Control: no-cache` (assets have no versioned names, so a
/// browser revalidates each one and gets 304 while it is unchanged).
package struct ConsoleController: Sendable {
    /// One embedded file: its bytes, media type and tag.
    struct Asset: Sendable {
        /// The file's bytes.
        let bytes: ByteBuffer
        /// Its media type, from its extension.
        let contentType: String
        /// A strong tag: the first 128 bits of its SHA-256, quoted (RFC 9110 §8.8.3).
        let etag: String
    }

    /// The policy of every console answer (CSP Level 3).
    package static let contentSecurityPolicy =
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"

    /// The embedded files by path below `/console/` (`index.html`, `js/app.js`, …).
    let assets: [String: Asset]

    /// Loads every file of the bundle's `console` folder into memory (about 100 KB).
    package init() {
        var assets: [String: Asset] = [:]
        if let root = Bundle.module.url(forResource: "console", withExtension: nil) {
            let rootPath = root.standardizedFileURL.path
            let walker = FileManager.default.enumerator(at: root, includingPropertiesForKeys: [.isRegularFileKey])
            while let url = walker?.nextObject() as? URL {
                guard (try? url.resourceValues(forKeys: [.isRegularFileKey]).isRegularFile) == true,
                    let data = try? Data(contentsOf: url)
                else { continue }
                let path = String(url.standardizedFileURL.path.dropFirst(rootPath.count + 1))
                let digest = SHA256.hash(data: data).prefix(16).map { String(format: "%02x", $0) }.joined()
                assets[path] = Asset(bytes: ByteBuffer(bytes: data), contentType: Self.mediaType(of: path), etag: "\"\(digest)\"")
            }
        }
        self.assets = assets
    }

    /// The media type of a file by its extension.
    static func mediaType(of path: String) -> String {
        switch path.split(separator: ".").last.map({ $0.lowercased() }) ?? "" {
        case "html": "text/html; charset=utf-8"
        case "js", "mjs": "text/javascript; charset=utf-8"
        case "css": "text/css; charset=utf-8"
        case "svg": "image/svg+xml"
        case "png": "image/png"
        case "ico": "image/x-icon"
        case "json", "webmanifest": "application/json"
        default: "application/octet-stream"
        }
    }

    /// Adds `GET /` (a browser is sent to the console; anything else keeps the JSON 404) and
    /// `GET /console`, `/console/`, `/console/**`.
    package func addRoutes(to router: Router<CairnRequestContext>) {
        router.get("/", use: root)
        router.get("console", use: index)
        router.get("console/**", use: asset)
    }

    /// `GET /`: 303 to `/console/` when the client accepts `text/html` (a browser), else the
    /// JSON 404 an unknown route answers.
    @Sendable func root(_ request: Request, context: CairnRequestContext) async throws -> Response {
        let accept = request.headers[values: .accept].joined(separator: ",").lowercased()
        guard accept.contains("text/html") else { throw AppError.notFound() }
        return Response(status: .seeOther, headers: [.location: "/console/", .cacheControl: "no-store"])
    }

    /// `GET /console` and `/console/`: the single page.
    @Sendable func index(_ request: Request, context: CairnRequestContext) async throws -> Response {
        try serve("index.html", request: request)
    }

    /// `GET /console/<path>`: one embedded file, or 404.
    @Sendable func asset(_ request: Request, context: CairnRequestContext) async throws -> Response {
        let path = context.parameters.getCatchAll().joined(separator: "/")
        return try serve(path.isEmpty ? "index.html" : path, request: request)
    }

    /// The answer for one file: 200 with its bytes, or 304 when `If-None-Match` names its tag.
    /// - Throws: 404 `not_found` for a path that is not an embedded file.
    func serve(_ path: String, request: Request) throws -> Response {
        guard let asset = assets[path] else { throw AppError.notFound() }
        var headers = Self.securityHeaders
        headers[.eTag] = asset.etag
        headers[.cacheControl] = "no-cache"
        if ETag.notModified(request, etag: asset.etag) {
            return Response(status: .notModified, headers: headers)
        }
        headers[.contentType] = asset.contentType
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: asset.bytes))
    }

    /// The headers of every console answer.
    static let securityHeaders: HTTPFields = [
        HTTPField.Name("Content-Security-Policy")!: contentSecurityPolicy,
        HTTPField.Name("X-Content-Type-Options")!: "nosniff",
        HTTPField.Name("Referrer-Policy")!: "no-referrer",
        HTTPField.Name("Cross-Origin-Opener-Policy")!: "same-origin",
    ]
}
