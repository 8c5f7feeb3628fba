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
        try await Application(router: router).test(.router) { client in
            #expect(try await Self.answers(client, .get, "/things") == "list")
            #expect(try await Self.answers(client, .post, "/things") == "create")
            #expect(try await Self.answers(client, .get, "/things/7") == "show 7")
            #expect(try await Self.answers(client, .patch, "/things/7") == "update 7")
            #expect(try await Self.answers(client, .delete, "/things/7") == "delete 7")
            #expect(try await Self.answers(client, .put, "/things/7") == "no route")
        }
    }

    /// A handler left out adds no route; the group's own routes sit beside the resource's.
    @Test func leftOutHandlersAddNoRoute() async throws {
        let router = Router(context: BasicRequestContext.self)
        router.group("things")
            .resource(list: Self.named("list"), show: Self.named("show"))
            .get("count", use: Self.named("count"))
        try await Application(router: router).test(.router) { client in
            #expect(try await Self.answers(client, .get, "/things") == "list")
            #expect(try await Self.answers(client, .get, "/things/7") == "show 7")
            #expect(try await Self.answers(client, .get, "/things/count") == "count")
            #expect(try await Self.answers(client, .post, "/things") == "no route")
            #expect(try await Self.answers(client, .patch, "/things/7") == "no route")
            #expect(try await Self.answers(client, .delete, "/things/7") == "no route")
        }
    }
}
