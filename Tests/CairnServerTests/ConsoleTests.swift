import CairnConsole
import CairnServer
import CairnTestSupport
import Foundation
import HTTPTypes
import HummingbirdTesting
import Testing

/// The console's files are served by the binary with a strict policy (issue 15), and a
/// browser's `GET /` lands there while API clients keep the JSON 404.
@Suite("Console serving")
struct ConsoleTests {
    /// The policy header (CSP Level 3).
    static let csp = HTTPField.Name("Content-Security-Policy")!

    @Test(arguments: TestEngine.available)
    func theConsolePageAndItsModulesAreServedWithTheirTypesAndAStrictPolicy(engine: TestEngine) async throws {
        try await withTestApp(engine) { client, _ in
            for path in ["/console", "/console/", "/console/index.html"] {
                let page = try await client.execute(uri: path, method: .get, headers: [:], body: nil)
                #expect(page.status == .ok, "\(path)")
                #expect(page.headers[.contentType] == "text/html; charset=utf-8")
                #expect(page.headers[Self.csp] == ConsoleController.contentSecurityPolicy)
                #expect(page.headers[HTTPField.Name("X-Content-Type-Options")!] == "nosniff")
                #expect(page.text.contains("/console/js/app.js"))
            }
            let script = try await client.execute(uri: "/console/js/app.js", method: .get, headers: [:], body: nil)
            #expect(script.status == .ok)
            #expect(script.headers[.contentType] == "text/javascript; charset=utf-8")
            let style = try await client.execute(uri: "/console/css/console.css", method: .get, headers: [:], body: nil)
            #expect(style.headers[.contentType] == "text/css; charset=utf-8")
            // Revalidation: the strong tag answers 304.
            let etag = try #require(script.headers[.eTag])
            #expect(script.headers[.cacheControl] == "no-cache")
            let again = try await client.execute(uri: "/console/js/app.js", method: .get, headers: [.ifNoneMatch: etag], body: nil)
            #expect(again.status == .notModified)
            let missing = try await client.execute(uri: "/console/js/nope.js", method: .get, headers: [:], body: nil)
            #expect(missing.status == .notFound)
            #expect(missing.code == "not_found")
        }
    }

    @Test(arguments: TestEngine.available)
    func noConsoleFileHasInlineScriptOrStyle(engine: TestEngine) async throws {
        try await withTestApp(engine) { client, _ in
            let response = try await client.execute(uri: "/console/", method: .get, headers: [:], body: nil)
            #expect(response.status == .ok)
            let page = response.text
            #expect(page.contains("<main"))
            #expect(page.range(of: #"<script(?![^>]*\bsrc=)"#, options: .regularExpression) == nil, "an inline <script>")
            #expect(page.range(of: #"\sstyle=|<style|\son[a-z]+="#, options: .regularExpression) == nil, "inline style or handler")
        }
    }

    @Test(arguments: TestEngine.available)
    func aBrowserIsSentToTheConsoleAndAnAPIClientGetsTheJSON404(engine: TestEngine) async throws {
        try await withTestApp(engine) { client, _ in
            let browser = try await client.execute(
                uri: "/", method: .get, headers: [.accept: "text/html,application/xhtml+xml,*/*;q=0.8"], body: nil)
            #expect(browser.status == .seeOther)
            #expect(browser.headers[.location] == "/console/")
            let api = try await client.execute(uri: "/", method: .get, headers: [.accept: "application/json"], body: nil)
            #expect(api.status == .notFound)
            #expect(api.headers[.contentType] == "application/problem+json")
            #expect(api.code == "not_found")
        }
    }
}
