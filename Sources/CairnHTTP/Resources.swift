package import CairnStorage
package import HTTPTypes
package import Hummingbird

/// A handler of one route whose requests carry `Context`.
package typealias RouteHandler<Context: RequestContext> = @Sendable (Request, Context) async throws -> Response

extension RouterGroup {
    /// Adds the routes of a REST collection at the group's path, the convention every resource
    /// of the API follows: `GET` lists it (`list`) and `POST` adds to it (`create`); a member is
    /// `:id` below it, read with `GET` (`show`), changed with `PATCH` (`update`) and removed
    /// with `DELETE` (`delete`). A handler left out adds no route, so the method answers 405
    /// with the others in `Allow`.
    ///
    /// ```swift
    /// group.group("tasks").resource(list: list, create: create, show: show, update: update, delete: delete)
    /// ```
    ///
    /// The handlers are registered as they are, with nothing in between: a resource's routes
    /// cost what routes added one by one cost.
    @discardableResult
    package func resource(
        list: RouteHandler<Context>? = nil, create: RouteHandler<Context>? = nil, show: RouteHandler<Context>? = nil,
        update: RouteHandler<Context>? = nil, delete: RouteHandler<Context>? = nil
    ) -> Self {
        if let list { get(use: list) }
        if let create { post(use: create) }
        if let show { get(":id", use: show) }
        if let update { patch(":id", use: update) }
        if let delete { self.delete(":id", use: delete) }
        return self
    }
}

extension ETag {
    /// The answer to a read of `resource` whose tag is `etag` (a row version's, ``of(version:)``,
    /// or a content hash): 304 with `headers` and the tag when `If-None-Match` names it (weak
    /// comparison, `*` included, RFC 9110 §13.1.2), else 200 with the resource, `headers` and
    /// the tag.
    package static func conditional(_ request: Request, _ resource: some JSONWritable, etag: String, headers: HTTPFields = [:]) -> Response {
        var headers = headers
        headers[.eTag] = etag
        return notModified(request, etag: etag) ? Response(status: .notModified, headers: headers) : .json(resource, headers: headers)
    }
}

extension Response {
    /// A versioned resource as JSON with its version's `ETag` (``ETag/of(version:)``), the
    /// answer of every create, read and write of one: `status` (201 for a new one, with the
    /// `location` it can be read at) and any other `headers`.
    package static func versioned(
        _ resource: some JSONWritable & Versioned, status: HTTPResponse.Status = .ok, location: String? = nil, headers: HTTPFields = [:]
    ) -> Response {
        var headers = headers
        if let location { headers[.location] = location }
        headers[.eTag] = ETag.of(version: resource.version)
        return .json(resource, status: status, headers: headers)
    }
}
