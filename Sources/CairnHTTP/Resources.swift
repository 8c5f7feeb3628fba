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
