import CairnAccounts
import CairnHTTP
import CairnServer
import CairnTestSupport
import Foundation
import HTTPTypes
import HummingbirdTesting
import Testing

/// The browser console's refresh-token cookie (issue 15): set only for clients that ask, never
/// readable by page script (HttpOnly), accepted by refresh-token and logout behind a CSRF check,
/// cleared by logout. API clients are unchanged.
@Suite("Refresh-token cookie")
struct RefreshCookieTests {
    /// The console's request for the cookie.
    static let optIn: HTTPFields = [HTTPField.Name("X-Cairn-Refresh-Cookie")!: "1"]
    /// The header every cookie-authenticated request carries.
    static let csrf = HTTPField.Name("X-Cairn-CSRF")!
    /// `Set-Cookie` (RFC 6265 §4.1).
    static let setCookie = HTTPField.Name("Set-Cookie")!

    /// The `cairn_refresh` value of a `Set-Cookie` header.
    static func cookieValue(_ response: TestResponse) -> String? {
        guard let header = response.headers[setCookie], header.hasPrefix("cairn_refresh=") else { return nil }
        return header.dropFirst("cairn_refresh=".count).split(separator: ";").first.map(String.init)
    }

    /// Logs in asking for the cookie; returns the response.
    static func cookieLogin(_ client: any TestClientProtocol, email: String) async throws -> TestResponse {
        let registered = try await client.json(.post, "/auth/register", ["email": email, "password": "correct horse battery", "name": "C"])
        #expect(registered.status == .created)
        return try await client.json(.post, "/auth/login", ["email": email, "password": "correct horse battery"], headers: optIn)
    }

    @Test(arguments: TestEngine.available)
    func apiClientsStillGetTheTokenInTheBodyAndNoCookie(engine: TestEngine) async throws {
        try await withTestApp(engine) { client, _ in
            _ = try await client.json(.post, "/auth/register", ["email": "api@example.com", "password": "correct horse battery", "name": "A"])
            let login = try await client.json(.post, "/auth/login", ["email": "api@example.com", "password": "correct horse battery"])
            #expect(login.status == .ok)
            #expect(login.headers[Self.setCookie] == nil)
            #expect(login.object["refreshToken"] is String)
        }
    }

    @Test(arguments: TestEngine.available)
    func loginSetsAnHttpOnlyStrictCookieScopedToAuthAndLeavesTheTokenOutOfTheBody(engine: TestEngine) async throws {
        try await withTestApp(engine) { client, _ in
            let login = try await Self.cookieLogin(client, email: "cookie@example.com")
            #expect(login.status == .ok)
            let header = try #require(login.headers[Self.setCookie])
            let attributes = Set(header.split(separator: ";").dropFirst().map { $0.trimmingCharacters(in: .whitespaces) })
            #expect(attributes.isSuperset(of: ["Path=/auth", "HttpOnly", "SameSite=Strict", "Max-Age=2592000"]))
            #expect(!attributes.contains("Secure"), "plain HTTP without a trusted proxy")
            #expect(login.object["refreshToken"] == nil)
            #expect(login.object["accessToken"] is String)
            #expect(Self.cookieValue(login)?.count == 43)
        }
    }

    @Test(arguments: TestEngine.available)
    func theCookieIsSecureWhenATrustedProxySaysHTTPS(engine: TestEngine) async throws {
        // Router mode has no TCP peer address, so the proxy check runs live.
        try await withTestApp(
            engine, mode: .live, configure: { $0.trustedProxies = (try? TrustedProxies(parsing: "127.0.0.0/8, ::1")) ?? TrustedProxies() }
        ) { app in
            _ = try await app.client.json(.post, "/auth/register", ["email": "tls@example.com", "password": "correct horse battery", "name": "T"])
            var headers = Self.optIn
            headers[HTTPField.Name("X-Forwarded-Proto")!] = "https"
            let login = try await app.client.json(
                .post, "/auth/login", ["email": "tls@example.com", "password": "correct horse battery"], headers: headers)
            #expect(login.headers[Self.setCookie]?.hasSuffix("; Secure") == true)
        }
    }

    @Test(arguments: TestEngine.available)
    func refreshReadsTheCookieRotatesItAndTheOldOneIsRefused(engine: TestEngine) async throws {
        let clock = TestClock()
        try await withTestApp(engine, clock: clock) { app in
            let client = app.client
            let login = try await Self.cookieLogin(client, email: "rotate@example.com")
            let first = try #require(Self.cookieValue(login))
            var headers = Self.optIn
            headers[.cookie] = "other=1; cairn_refresh=\(first)"
            headers[Self.csrf] = "1"
            headers[HTTPField.Name("Sec-Fetch-Site")!] = "same-origin"
            let refreshed = try await client.json(.post, "/auth/refresh-token", [String: String](), headers: headers)
            #expect(refreshed.status == .ok)
            let second = try #require(Self.cookieValue(refreshed))
            #expect(second != first)
            #expect(refreshed.object["refreshToken"] == nil)
            // The rotated-away token, past the reuse interval, is reuse: refused, and the cookie is cleared.
            clock.advance(by: .seconds(11))
            let reused = try await client.json(.post, "/auth/refresh-token", [String: String](), headers: headers)
            #expect(reused.status == .unauthorized)
            #expect(reused.code == "refresh_token_reused")
            #expect(reused.headers[Self.setCookie]?.contains("Max-Age=0") == true)
        }
    }

    @Test(arguments: TestEngine.available)
    func theCookieWithoutTheCSRFHeaderOrFromAnotherOriginIsRefused(engine: TestEngine) async throws {
        try await withTestApp(engine) { client, _ in
            let login = try await Self.cookieLogin(client, email: "csrf@example.com")
            let token = try #require(Self.cookieValue(login))
            let cookie: HTTPFields = [.cookie: "cairn_refresh=\(token)"]
            let bare = try await client.json(.post, "/auth/refresh-token", [String: String](), headers: cookie)
            #expect(bare.status == .forbidden)
            #expect(bare.code == "csrf_rejected")
            var crossSite = cookie
            crossSite[Self.csrf] = "1"
            crossSite[HTTPField.Name("Sec-Fetch-Site")!] = "cross-site"
            #expect(try await client.json(.post, "/auth/refresh-token", [String: String](), headers: crossSite).code == "csrf_rejected")
            var otherOrigin = cookie
            otherOrigin[Self.csrf] = "1"
            otherOrigin[HTTPField.Name("Origin")!] = "https://evil.example"
            #expect(try await client.json(.post, "/auth/refresh-token", [String: String](), headers: otherOrigin).code == "csrf_rejected")
            #expect(try await client.json(.post, "/auth/logout", [String: String](), headers: cookie).code == "csrf_rejected")
            // None of these used the token up: a same-origin request still rotates it.
            var good = cookie
            good[Self.csrf] = "1"
            good[HTTPField.Name("Sec-Fetch-Site")!] = "same-origin"
            #expect(try await client.json(.post, "/auth/refresh-token", [String: String](), headers: good).status == .ok)
        }
    }

    @Test(arguments: TestEngine.available)
    func logoutWithTheCookieEndsTheSessionAndClearsIt(engine: TestEngine) async throws {
        try await withTestApp(engine) { client, _ in
            let login = try await Self.cookieLogin(client, email: "out@example.com")
            let token = try #require(Self.cookieValue(login))
            let headers: HTTPFields = [.cookie: "cairn_refresh=\(token)", Self.csrf: "1"]
            let logout = try await client.json(.post, "/auth/logout", [String: String](), headers: headers)
            #expect(logout.status == .noContent)
            let cleared = try #require(logout.headers[Self.setCookie])
            #expect(cleared.hasPrefix("cairn_refresh=;"))
            #expect(cleared.contains("Max-Age=0"))
            let after = try await client.json(.post, "/auth/refresh-token", ["refreshToken": token])
            #expect(after.status == .unauthorized)
            // Neither a body token nor a cookie: the field is missing.
            let missing = try await client.json(.post, "/auth/refresh-token", [String: String]())
            #expect(missing.status == .badRequest)
            #expect(missing.code == "invalid_input")
        }
    }
}
