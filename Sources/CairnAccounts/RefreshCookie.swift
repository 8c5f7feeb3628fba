import CairnHTTP
import Foundation
package import HTTPTypes
package import Hummingbird

/// The browser console's refresh-token cookie (RFC 6265): the refresh token kept where page
/// script cannot read it.
///
/// A client opts in per request with `X-Cairn-Refresh-Cookie: 1` on `POST /auth/login`,
/// `POST /auth/refresh-token` or `PUT /users/me/password`: the answer then sets
/// `cairn_refresh=<token>; Path=/auth; Max-Age=<refresh TTL>; HttpOnly; SameSite=Strict`
/// (`Secure` when a trusted proxy said the client used HTTPS) and its body leaves out
/// `refreshToken`. API clients that do not ask keep getting the token in the body only.
///
/// `POST /auth/refresh-token` and `POST /auth/logout` read the cookie when their body has no
/// token. A request that uses the cookie must carry `X-Cairn-CSRF` (a custom header no other
/// origin can send without a CORS preflight Cairn never grants) and, when the browser says so,
/// come from the same origin (`Origin`, `Sec-Fetch-Site`); otherwise 403 `csrf_rejected`.
package enum RefreshCookie {
    /// The cookie's name.
    package static let name = "cairn_refresh"
    /// The cookie's `Path`: every route that reads it (`/auth/refresh-token`, `/auth/logout`).
    package static let path = "/auth"
    /// The request header by which a client asks for the cookie (any non-empty value).
    package static let optIn = HTTPField.Name("X-Cairn-Refresh-Cookie")!
    /// The request header every cookie-authenticated request must carry (any non-empty value).
    package static let csrfHeader = HTTPField.Name("X-Cairn-CSRF")!
    /// Fetch Metadata's `Sec-Fetch-Site` (W3C Fetch Metadata Request Headers).
    static let secFetchSite = HTTPField.Name("Sec-Fetch-Site")!
    /// The request's `Origin` (RFC 6454 §7).
    static let origin = HTTPField.Name("Origin")!

    /// True when the request asked for the refresh token as a cookie.
    package static func isRequested(by request: Request) -> Bool {
        !(request.headers[optIn] ?? "").isEmpty
    }

    /// The refresh token in the request's `Cookie` header(s), if any (RFC 6265 §5.4).
    package static func token(in request: Request) -> String? {
        for header in request.headers[values: .cookie] {
            for pair in header.split(separator: ";") {
                let parts = pair.split(separator: "=", maxSplits: 1)
                guard parts.count == 2, parts[0].trimmingCharacters(in: .whitespaces) == name else { continue }
                let value = parts[1].trimmingCharacters(in: .whitespaces)
                if !value.isEmpty { return value }
            }
        }
        return nil
    }

    /// A `Set-Cookie` value carrying `token` for `maxAge` seconds.
    package static func setting(_ token: String, maxAge: Int, secure: Bool) -> String {
        "\(name)=\(token); Path=\(path); Max-Age=\(maxAge); HttpOnly; SameSite=Strict" + (secure ? "; Secure" : "")
    }

    /// A `Set-Cookie` value that removes the cookie (RFC 6265 §3.1: an expiry in the past).
    package static func clearing(secure: Bool) -> String {
        "\(name)=; Path=\(path); Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; HttpOnly; SameSite=Strict" + (secure ? "; Secure" : "")
    }

    /// Refuses a cookie-authenticated request that may come from another site.
    ///
    /// Passes when `X-Cairn-CSRF` is present, `Sec-Fetch-Site` (when sent) is `same-origin`, and
    /// `Origin` (when sent) names the request's own `Host`.
    /// - Throws: 403 `csrf_rejected`.
    package static func checkSameOrigin(_ request: Request) throws {
        guard !(request.headers[csrfHeader] ?? "").isEmpty else {
            throw rejected("A request that uses the refresh-token cookie must carry the X-Cairn-CSRF header.")
        }
        if let site = request.headers[secFetchSite], site.lowercased() != "same-origin" {
            throw rejected("The refresh-token cookie is accepted only from the console's own origin (Sec-Fetch-Site: \(site.prefix(20))).")
        }
        if let origin = request.headers[origin] {
            let host = request.head.authority
            let originHost =
                URLComponents(string: origin).map { components -> String? in
                    guard let hostName = components.host else { return nil }
                    return components.port.map { "\(hostName):\($0)" } ?? hostName
                } ?? nil
            guard let host, let originHost, originHost.lowercased() == host.lowercased() else {
                throw rejected("The refresh-token cookie is accepted only from the console's own origin.")
            }
        }
    }

    /// 403 `csrf_rejected` with `detail`.
    static func rejected(_ detail: String) -> AppError {
        AppError(.forbidden, code: .csrfRejected, detail: detail)
    }

    /// The answer carrying a new token pair: the whole pair in the body, or, when the client
    /// asked for the cookie, the pair without `refreshToken` and the cookie set.
    package static func response(_ pair: TokenPair, request: Request, secure: Bool, maxAge: Int) -> Response {
        guard isRequested(by: request) else { return .json(pair, headers: [.cacheControl: "no-store"]) }
        var response = Response.json(AccessTokenOnly(pair: pair), headers: [.cacheControl: "no-store"])
        response.headers[.setCookie] = setting(pair.refreshToken, maxAge: maxAge, secure: secure)
        return response
    }
}

/// A token pair as the console receives it: `{accessToken, tokenType: "Bearer", expiresIn}`,
/// the refresh token being in the cookie only.
struct AccessTokenOnly: JSONWritable {
    /// The pair whose refresh token is left out.
    let pair: TokenPair

    /// Writes `{accessToken, tokenType, expiresIn}`.
    func writeJSON(to writer: inout JSONWriter) {
        writer.objectStart()
        writer.field("accessToken", pair.accessToken)
        writer.field("tokenType", "Bearer")
        writer.field("expiresIn", pair.expiresIn)
        writer.objectEnd()
    }
}
