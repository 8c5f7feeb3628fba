import CairnHTTP
import CairnTestSupport
import Foundation
import HTTPTypes
import HummingbirdTesting
import Testing

@Suite("Cursors bound to their list")
struct CursorBindingTests {
    /// A list's `nextCursor` pages that list and no other: `GET /files` (or `/users`) with a
    /// task list's cursor is 400 `invalid_input` naming `cursor` (it was taken as a position
    /// among the files, found by a fresh-user trial); the task list still takes it, and a
    /// cursor of the first version (bound to no list) still pages.
    @Test(arguments: TestEngine.available)
    func anotherListsCursorIsRefusedNamingCursor(engine: TestEngine) async throws {
        try await withTestApp(engine, owner: "cursors@example.com") { app, token in
            let client = app.client
            var ids: [String] = []
            for title in ["one", "two", "three"] {
                ids.append(try await client.json(.post, "/tasks", ["title": title], token: token).object["id"] as? String ?? "")
            }
            let first = try await client.json(.get, "/tasks?limit=1", token: token)
            let cursor = try #require(first.object["nextCursor"] as? String, "\(first.text)")
            let second = try await client.json(.get, "/tasks?limit=1&cursor=\(cursor)", token: token)
            #expect(second.status == .ok, "\(second.text)")
            #expect((second.object["items"] as? [[String: Any]])?.count == 1)
            for list in ["/files", "/users", "/jobs"] {
                let refused = try await client.json(.get, "\(list)?cursor=\(cursor)", token: token)
                #expect(refused.status == .badRequest, "\(list): \(refused.text)")
                #expect(refused.code == "invalid_input", "\(list)")
                let fields = (refused.object["errors"] as? [[String: Any]] ?? []).compactMap { $0["field"] as? String }
                #expect(fields == ["cursor"], "\(list): \(refused.text)")
            }
            // A first-version cursor (before cursors named their list) of the newest task.
            let newest = try #require(ids.max())
            let legacy = Base64URL.encode(Array("c1:\(newest)".utf8))
            let resumed = try await client.json(.get, "/tasks?cursor=\(legacy)", token: token)
            #expect(resumed.status == .ok, "\(resumed.text)")
            #expect((resumed.object["items"] as? [[String: Any]])?.count == 2)
        }
    }

    /// Found by a fresh-user trial: a cursor whose id is in upper case paged nothing (200 with
    /// no items) and is now read as the same position; `cursor` or `limit` given twice was
    /// answered (one of them silently won) and is now 400 `invalid_input` naming it, on keyset
    /// lists and on `GET /products` alike.
    @Test(arguments: TestEngine.available)
    func upperCaseCursorIdsPageAndRepeatedParametersAreRefused(engine: TestEngine) async throws {
        try await withTestApp(engine, owner: "cursor-case@example.com") { app, token in
            let client = app.client
            for title in ["one", "two", "three"] { _ = try await client.json(.post, "/tasks", ["title": title], token: token) }
            let first = try await client.json(.get, "/tasks?limit=1", token: token)
            let cursor = try #require(first.object["nextCursor"] as? String, "\(first.text)")
            let key = try #require(Cursor.decode(cursor, collection: "/tasks"))
            let upper = Cursor.encode(key.uppercased(), collection: "/tasks")
            let lower = try await client.json(.get, "/tasks?limit=1&cursor=\(cursor)", token: token)
            let shouted = try await client.json(.get, "/tasks?limit=1&cursor=\(upper)", token: token)
            #expect(shouted.status == .ok, "\(shouted.text)")
            #expect((shouted.object["items"] as? [[String: Any]])?.count == 1)
            #expect(shouted.text == lower.text)
            let product = try await client.json(
                .post, "/products", ["sku": "C-1", "name": "n", "priceMinor": 1, "currency": "EUR"], token: token)
            #expect(product.status == .created, "\(product.text)")
            let repeated = [
                ("/tasks?cursor=\(cursor)&cursor=\(cursor)", "cursor"), ("/tasks?limit=1&limit=2", "limit"),
                ("/products?limit=1&limit=1", "limit"), ("/products?cursor=abc&cursor=abc", "cursor"), ("/files?limit=5&limit=5", "limit"),
            ]
            for (path, field) in repeated {
                let refused = try await client.json(.get, path, token: token)
                #expect(refused.status == .badRequest, "\(path): \(refused.text)")
                #expect(refused.code == "invalid_input", "\(path)")
                let fields = (refused.object["errors"] as? [[String: Any]] ?? []).compactMap { $0["field"] as? String }
                #expect(fields == [field], "\(path): \(refused.text)")
            }
            let products = try await client.json(.get, "/products?limit=1", token: token)
            #expect(products.status == .ok, "\(products.text)")
        }
    }
}
