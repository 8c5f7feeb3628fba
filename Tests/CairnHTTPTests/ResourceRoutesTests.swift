import CairnHTTP
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing

@Suite("REST resource routes")
struct ResourceRoutesTests {
    /// A handler that answers its name and the member id, if any.
    static func named(_ name: String) -> RouteHandler<BasicRequestContext> {
        { _, context in
            let id = context.parameters.get("id").map { " \($0)" } ?? ""
            return Response(status: .ok, body: .init(byteBuffer: ByteBuffer(string: name + id)))
        }
    }

    /// Checks what `router` answers each request with: the handler's text, or "no route".
    static func expect(_ router: Router<BasicRequestContext>, _ cases: [(HTTPRequest.Method, String, String)]) async throws {
        try await Application(router: router).test(.router) { client in
            for (method, uri, expected) in cases {
                let answer = try await answers(client, method, uri)
                #expect(answer == expected, "\(method) \(uri)")
            }
        }
    }

    static func answers(_ client: some TestClientProtocol, _ method: HTTPRequest.Method, _ uri: String) async throws -> String {
        let response = try await client.execute(uri: uri, method: method)
        // The bare router answers a path without a route for the method 404 or 405 (Cairn's
        // problem middleware makes it 405 with `Allow`); either says "no such route".
        if response.status == .notFound || response.status == .methodNotAllowed { return "no route" }
        return response.status == .ok ? String(buffer: response.body) : "\(response.status.code)"
    }

    /// The five handlers land on the collection and on `:id` by method.
    @Test func theFiveRoutesOfTheConvention() async throws {
        let router = Router(context: BasicRequestContext.self)
        router.group("things").resource(
            list: Self.named("list"), create: Self.named("create"), show: Self.named("show"), update: Self.named("update"),
            delete: Self.named("delete"))
        try await Self.expect(
            router,
            [
                (.get, "/things", "list"), (.post, "/things", "create"), (.get, "/things/7", "show 7"), (.patch, "/things/7", "update 7"),
                (.delete, "/things/7", "delete 7"), (.put, "/things/7", "no route"),
            ])
    }

    /// A handler left out adds no route; the group's own routes sit beside the resource's.
    @Test func leftOutHandlersAddNoRoute() async throws {
        let router = Router(context: BasicRequestContext.self)
        router.group("things")
            .resource(list: Self.named("list"), show: Self.named("show"))
            .get("count", use: Self.named("count"))
        try await Self.expect(
            router,
            [
                (.get, "/things", "list"), (.get, "/things/7", "show 7"), (.get, "/things/count", "count"), (.post, "/things", "no route"),
                (.patch, "/things/7", "no route"), (.delete, "/things/7", "no route"),
            ])
    }
}
