package import CairnHTTP
import CairnStorage
import Foundation
import HTTPTypes
package import Hummingbird

/// `/tasks`: list, create, read, update, delete, scoped to the caller's tenant.
@MemberwiseInit
package struct TasksController: Sendable {
    let store: TaskStore

    /// Validation limits.
    static let maxTitle = 200
    static let maxDescription = 10_000

    struct CreateBody: Decodable {
        var title: String
        var description: String?
        var completed: Bool?
    }

    struct PatchBody: Decodable {
        var title: PatchField<String>
        var description: PatchField<String>
        var completed: PatchField<Bool>
    }

    static func validTitle(_ raw: String, into issues: inout [FieldIssue]) -> String? {
        let title = raw.trimmingCharacters(in: .whitespacesAndNewlines)
        // In code points, as every limit (TextSafety.length): the stricter count, and openapi's.
        guard (1...maxTitle).contains(TextSafety.length(title)) else {
            issues.append(FieldIssue(field: "title", issue: "must be 1 to \(maxTitle) characters after trimming"))
            return nil
        }
        return title
    }

    static func checkDescription(_ description: String?, into issues: inout [FieldIssue]) {
        if let description, TextSafety.length(description) > maxDescription {
            issues.append(FieldIssue(field: "description", issue: "must be at most \(maxDescription) characters"))
        }
    }

    /// Adds the routes to the authenticated group.
    package func addRoutes(to group: RouterGroup<AuthenticatedContext>) {
        group.group("tasks").resource(list: list, create: create, show: show, update: update, delete: delete)
    }

    /// `GET /tasks[?completed=]`: a page of the tenant's tasks.
    @Sendable func list(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        let page = try PageRequest.parse(request.uri, validateKey: UUIDv7.isValid)
        var completed: Bool?
        if let raw = request.uri.queryParameters.get("completed") {
            guard let value = Bool(raw) else { throw AppError.invalidField("completed", "must be true or false") }
            completed = value
        }
        return .json(try await store.list(tenantId: context.identity.tenantId, completed: completed, page: page))
    }

    /// `POST /tasks`: 201 with `Location` and `ETag`.
    @Sendable func create(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        var request = request
        let body = try await request.decodeJSON(as: CreateBody.self, context: context)
        var issues: [FieldIssue] = []
        let title = Self.validTitle(body.title, into: &issues)
        Self.checkDescription(body.description, into: &issues)
        guard issues.isEmpty, let title else { throw AppError.invalidInput(issues) }
        let now = WallClock.milliseconds()
        let task = TaskItem(
            id: UUIDv7.make(), tenantId: context.identity.tenantId, title: title, description: body.description,
            completed: body.completed ?? false, createdBy: context.identity.userId, version: 1, createdAt: now, updatedAt: now)
        try await store.insert(task)
        return .versioned(task, status: .created, location: "/tasks/\(task.id)")
    }

    /// `GET /tasks/{id}`, with `If-None-Match` → 304.
    @Sendable func show(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        guard let task = try await store.get(id: try context.parameters.require("id"), tenantId: context.identity.tenantId) else {
            throw AppError.notFound("No such task.")
        }
        return ETag.conditional(request, task)
    }

    /// `PATCH /tasks/{id}` (JSON merge semantics; `If-Match` optional, 412 on mismatch).
    @Sendable func update(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        let id = try context.parameters.require("id")
        let expected = try ETag.expectedVersion(request)
        var request = request
        let body = try await request.decodeJSON(as: PatchBody.self, context: context)
        let change = try Self.change(from: body)
        let tenantId = context.identity.tenantId
        if let task = try await store.update(id: id, tenantId: tenantId, expectedVersion: expected, change: change) {
            return .versioned(task)
        }
        throw try await ETag.writeFailure(expected: expected, notFound: "No such task.") { try await store.get(id: id, tenantId: tenantId) != nil }
    }

    /// The change a PATCH body asks for.
    /// - Throws: 400 `invalid_input` listing every bad field.
    static func change(from body: PatchBody) throws -> TaskChange {
        var issues: [FieldIssue] = []
        var change = TaskChange()
        switch body.title {
        case .absent: break
        case .null: issues.append(FieldIssue(field: "title", issue: "must be a string, not null"))
        case .value(let raw): change.title = Self.validTitle(raw, into: &issues)
        }
        Self.checkDescription(body.description.value, into: &issues)
        change.description = body.description.nullableChange
        switch body.completed {
        case .absent: break
        case .null: issues.append(FieldIssue(field: "completed", issue: "must be a boolean, not null"))
        case .value(let value): change.completed = value
        }
        if !issues.isEmpty { throw AppError.invalidInput(issues) }
        return change
    }

    /// `DELETE /tasks/{id}` (`If-Match` optional).
    @Sendable func delete(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        let id = try context.parameters.require("id")
        let expected = try ETag.expectedVersion(request)
        let tenantId = context.identity.tenantId
        if try await store.delete(id: id, tenantId: tenantId, expectedVersion: expected) {
            return Response(status: .noContent)
        }
        throw try await ETag.writeFailure(expected: expected, notFound: "No such task.") { try await store.get(id: id, tenantId: tenantId) != nil }
    }
}

// Value checks run by the body decoder, so one answer lists type and value errors together.

extension TasksController.CreateBody: ValueChecked {
    func valueIssues() -> [FieldIssue] {
        var issues: [FieldIssue] = []
        _ = TasksController.validTitle(title, into: &issues)
        TasksController.checkDescription(description, into: &issues)
        return issues
    }
}

extension TasksController.PatchBody: ValueChecked {
    func valueIssues() -> [FieldIssue] { issues { _ = try TasksController.change(from: self) } }
}
