import CairnHTTP
import CairnServer
import CairnTestSupport
import Foundation
import Testing

/// One exchange made with curl: the status and the response headers (names lower-cased).
private func exchange(_ method: String, _ url: String, headers: [String: String]) async throws -> (status: Int, headers: [String: String]) {
    var arguments = ["curl", "-s", "-o", "/dev/null", "-D", "-", "-X", method, "--max-time", "30"]
    for (name, value) in headers { arguments += ["-H", "\(name): \(value)"] }
    return parseResponseHead(String(decoding: try await runProcess("/usr/bin/env", arguments + [url]), as: UTF8.self))
}

/// Issue 20, "What a new user found": CORS for the origins in `CAIRN_CORS_ORIGINS` (Fetch
/// standard §3.2), over real HTTP with curl; before, a preflight answered 405.
@Suite("CORS: exact origins, preflights before auth")
struct CORSTests {
    @Test(arguments: TestEngine.available)
    func listedOriginsGetCORSAndOthersNothing(engine: TestEngine) async throws {
        let listed = "https://app.example.com"
        let origins = try CORSOrigins(parsing: "\(listed)/, http://localhost:5173")
        try await withTestApp(engine, mode: .live, configure: { $0.corsOrigins = origins }, runServices: false) { app in
            let base = app.baseURL
            // A preflight for an authenticated route and a tus PATCH: answered before auth.
            for (path, method, asked) in [
                ("/tasks", "POST", "authorization, content-type, idempotency-key"),
                ("/uploads/0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", "PATCH", "tus-resumable, upload-offset, content-type"),
            ] {
                let preflight = try await exchange(
                    "OPTIONS", base + path,
                    headers: ["Origin": listed, "Access-Control-Request-Method": method, "Access-Control-Request-Headers": asked])
                #expect(preflight.status == 204, "\(path)")
                #expect(preflight.headers["access-control-allow-origin"] == listed)
                #expect(preflight.headers["access-control-allow-credentials"] == "true")
                #expect(preflight.headers["access-control-allow-methods"]?.contains(method) == true)
                let allowed = Set(
                    (preflight.headers["access-control-allow-headers"] ?? "").lowercased().split(separator: ",").map {
                        $0.trimmingCharacters(in: .whitespaces)
                    })
                #expect(asked.split(separator: ",").allSatisfy { allowed.contains($0.trimmingCharacters(in: .whitespaces)) }, "\(allowed)")
                #expect(preflight.headers["vary"]?.contains("Origin") == true)
            }
            // The actual request: an error answer carries the CORS headers too, so the page can read it.
            let refused = try await exchange("GET", base + "/tasks", headers: ["Origin": listed])
            #expect(refused.status == 401)
            #expect(refused.headers["access-control-allow-origin"] == listed)
            #expect(refused.headers["access-control-allow-credentials"] == "true")
            let exposed = (refused.headers["access-control-expose-headers"] ?? "").lowercased()
            for name in ["location", "etag", "upload-offset", "tus-resumable", "tus-max-size", "retry-after", "x-request-id"] {
                #expect(exposed.contains(name), "\(name) is exposed")
            }
            #expect(refused.headers["vary"]?.contains("Origin") == true)
            let live = try await exchange("GET", base + "/health/live", headers: ["Origin": "http://localhost:5173"])
            #expect(live.status == 200)
            #expect(live.headers["access-control-allow-origin"] == "http://localhost:5173")

            // Another origin, or a look-alike: no CORS header at all.
            for origin in ["https://evil.example.com", "https://app.example.com.evil.net", "null", "http://app.example.com"] {
                let preflight = try await exchange(
                    "OPTIONS", base + "/tasks", headers: ["Origin": origin, "Access-Control-Request-Method": "POST"])
                #expect(preflight.status != 204, "\(origin)")
                #expect(preflight.headers.keys.allSatisfy { !$0.hasPrefix("access-control-") }, "\(origin): \(preflight.headers)")
                let get = try await exchange("GET", base + "/health/live", headers: ["Origin": origin])
                #expect(get.headers.keys.allSatisfy { !$0.hasPrefix("access-control-") }, "\(origin): \(get.headers)")
            }
        }
    }

    /// Off by default: no CORS header, and a preflight is an ordinary OPTIONS (405).
    @Test func corsIsOffByDefault() async throws {
        try await withTestApp(.sqlite, mode: .live, runServices: false) { app in
            let preflight = try await exchange(
                "OPTIONS", app.baseURL + "/tasks", headers: ["Origin": "https://app.example.com", "Access-Control-Request-Method": "POST"])
            #expect(preflight.status == 405)
            #expect(preflight.headers.keys.allSatisfy { !$0.hasPrefix("access-control-") })
        }
    }

    /// `CAIRN_CORS_ORIGINS` takes exact http(s) origins; anything else stops start-up naming it.
    @Test func theSettingTakesExactOriginsOnly() async throws {
        let config = try await CairnConfiguration.load(
            flags: [:], environment: ["CAIRN_CORS_ORIGINS": "HTTPS://App.Example.com:443, http://localhost:5173/"])
        #expect(config.corsOrigins.origins == ["https://app.example.com", "http://localhost:5173"])
        for bad in ["*", "https://app.example.com/path", "ftp://files.example.com", "app.example.com"] {
            await #expect(throws: (any Error).self, "\(bad)") {
                _ = try await CairnConfiguration.load(flags: [:], environment: ["CAIRN_CORS_ORIGINS": bad])
            }
        }
    }
}
