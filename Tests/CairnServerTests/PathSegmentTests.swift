import CairnHTTP
import CairnStorage
import CairnTestSupport
import Foundation
import HTTPTypes
import HummingbirdTesting
import NIOCore
import Testing

@Suite("Paths with empty or dot segments")
struct PathSegmentTests {
    /// A path with an empty segment or a `.`/`..` segment (percent-encoded too) names no
    /// resource: 404 `not_found` problem with the request id, on every route, never the resource
    /// the normalised path would name (found by a fresh-user trial: `/tasks//{id}` and
    /// `/tasks/.` answered 200, `/users/me/devices/..` as `/users/me`). `/`, one trailing `/`
    /// and the console's paths are served as before.
    @Test(arguments: TestEngine.available)
    func emptyAndDotSegmentsAreNotFound(engine: TestEngine) async throws {
        try await withTestApp(engine, owner: "dot-segments@example.com") { client, _, token in
            let task = try await client.json(.post, "/tasks", ["title": "Dots", "description": "d"], token: token)
            let id = try #require(task.object["id"] as? String)
            #expect(try await client.json(.get, "/tasks/\(id)", token: token).status == .ok)
            let refused = [
                "/tasks//\(id)", "//tasks/\(id)", "/tasks/\(id)//", "//", "/tasks/.", "/tasks/./", "/tasks/..", "/tasks/%2e",
                "/tasks/%2E%2e", "/tasks/.%2E", "/tasks/./\(id)", "/tasks/\(id)/..", "/users/me/devices/..", "/users/me/devices/%2e%2e",
                "/users/me/.", "/console/./index.html", "/console/js/../index.html",
            ]
            for path in refused {
                let response = try await client.execute(
                    uri: path, method: .get, headers: [.authorization: "Bearer \(token)", RequestIDMiddleware.header: "dots-1"], body: nil)
                #expect(response.status == .notFound, "\(path): \(response.text)")
                #expect(response.code == "not_found", "\(path)")
                #expect(response.headers[.contentType] == "application/problem+json", "\(path)")
                #expect(response.headers[RequestIDMiddleware.header] == "dots-1", "\(path)")
            }
            let write = try await client.json(.patch, "/tasks//\(id)", ["completed": true], token: token)
            #expect(write.status == .notFound, "\(write.text)")
            #expect(try await client.json(.get, "/tasks/\(id)", token: token).object["completed"] as? Bool == false)
            // Names with dots that are not dot segments, a trailing slash, `/` and the console stay as they were.
            #expect(try await client.json(.get, "/tasks/...", token: token).status == .notFound)
            #expect(try await client.json(.get, "/tasks/", token: token).status == .ok)
            let root = try await client.execute(uri: "/", method: .get, headers: [.accept: "text/html"], body: nil)
            #expect(root.status == .seeOther)
            for path in ["/console", "/console/", "/console/index.html", "/console/js/app.js"] {
                #expect(try await client.execute(uri: path, method: .get, headers: [:], body: nil).status == .ok, "\(path)")
            }
        }
    }

    /// The rule itself: one trailing `/` is allowed, every other empty segment and every dot
    /// segment (`%2e` in either case) is not; dots within a name are fine.
    @Test func theRuleReadsSegmentsAsWritten() {
        for path in ["/", "/tasks", "/tasks/", "/console/js/app.js", "/tasks/a.b", "/tasks/...", "/tasks/.x", "/tasks/%2e%2e%2e", "/tasks/%2f"] {
            #expect(PathSegmentsMiddleware<CairnRequestContext>.isRoutable(path), "\(path)")
        }
        for path in ["//", "/tasks//", "//tasks", "/a//b", "/.", "/..", "/a/./b", "/a/%2E", "/a/%2e.", "/a/../b", "/a/%2e%2E/b"] {
            #expect(!PathSegmentsMiddleware<CairnRequestContext>.isRoutable(path), "\(path)")
        }
    }
}
