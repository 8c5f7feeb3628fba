package import CairnHTTP
import CairnJobs
import CairnStorage
import HTTPTypes
package import Hummingbird

/// `/pipelines`: a tenant's processing logic (owners and admins write, members read and run)
/// and `POST /pipelines/{id}/runs`, which starts a run as a job (202 + `Location: /jobs/{id}`,
/// `Idempotency-Key` honoured). It translates HTTP only; ``PipelineService`` does the work.
@MemberwiseInit
package struct PipelinesController: Sendable {
    let service: PipelineService
    /// Serves `POST /pipelines/{id}/runs`.
    let idempotency: IdempotencyMiddleware

    /// A create or update body. On update every member is optional; `schedule: null` removes
    /// the schedule.
    struct Body: Decodable {
        var changes: PipelineChanges

        enum CodingKeys: String, CodingKey {
            case name, input, sql, output, onRowError, schedule
        }

        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            changes = PipelineChanges(
                name: try container.decodeIfPresent(String.self, forKey: .name),
                input: try container.decodeIfPresent(PipelineSpec.Input.self, forKey: .input),
                sql: try container.decodeIfPresent(String.self, forKey: .sql),
                output: try container.decodeIfPresent(PipelineSpec.Output.self, forKey: .output),
                onRowError: try container.decodeIfPresent(PipelineSpec.RowErrorPolicy.self, forKey: .onRowError))
            // A present `schedule` (null included) replaces the schedule; an absent one keeps it.
            if container.contains(.schedule) {
                changes.schedule = .some(try container.decodeIfPresent(PipelineSpec.Schedule.self, forKey: .schedule))
            }
        }
    }

    struct RunBody: Decodable, ValueChecked {
        var fileId: String

        func valueIssues() -> [FieldIssue] { UUIDv7.bodyIDIssues(fileId, field: "fileId") }
    }

    /// Adds the routes to the authenticated group: owners and admins write, members read and run.
    package func addRoutes(to group: RouterGroup<AuthenticatedContext>) {
        group.group("pipelines")
            .resource(list: list, show: show)
        group.group("pipelines").add(middleware: RequireAdmin())
            .resource(create: create, update: update, delete: delete)
        group.group("pipelines").add(middleware: idempotency)
            .post(":id/runs", use: run)
    }

    /// `POST /pipelines` (admins): the pipeline and, with a schedule, its job schedule, in one transaction.
    @Sendable func create(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        var request = request
        let body = try await request.decodeJSON(as: Body.self, context: context) { body in PipelineService.newSpec(body.changes).1 }
        let pipeline = try await service.create(body.changes, tenantId: context.identity.tenantId, createdBy: context.identity.userId)
        return .versioned(pipeline, status: .created, location: "/pipelines/\(pipeline.id)")
    }

    /// `GET /pipelines`: a page of the tenant's pipelines.
    @Sendable func list(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        let page = try PageRequest.parse(request.uri, validateKey: UUIDv7.isValid)
        return .json(try await service.list(tenantId: context.identity.tenantId, page: page))
    }

    /// `GET /pipelines/{id}`, with `If-None-Match` → 304.
    @Sendable func show(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        let pipeline = try await service.get(id: try context.parameters.require("id"), tenantId: context.identity.tenantId)
        return ETag.conditional(request, pipeline)
    }

    /// `PATCH /pipelines/{id}` (admins; `If-Match` optional; `schedule: null` removes the schedule).
    @Sendable func update(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        let expected = try ETag.expectedVersion(request)
        var request = request
        let body = try await request.decodeJSON(as: Body.self, context: context)
        let updated = try await service.update(
            id: try context.parameters.require("id"), tenantId: context.identity.tenantId, expectedVersion: expected, changes: body.changes)
        return .versioned(updated)
    }

    /// `DELETE /pipelines/{id}` (admins; `If-Match` optional): the pipeline and its schedule.
    @Sendable func delete(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        let expected = try ETag.expectedVersion(request)
        try await service.delete(id: try context.parameters.require("id"), tenantId: context.identity.tenantId, expectedVersion: expected)
        return Response(status: .noContent)
    }

    /// `POST /pipelines/{id}/runs`: 202 + `Location: /jobs/{id}`; the run is a job.
    @Sendable func run(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        var request = request
        let body = try await request.decodeJSON(as: RunBody.self, context: context)
        let job = try await service.startRun(
            pipelineId: try context.parameters.require("id"), fileId: try UUIDv7.bodyID(body.fileId, field: "fileId"),
            tenantId: context.identity.tenantId,
            createdBy: context.identity.userId)
        return .json(job, status: .accepted, headers: [.location: "/jobs/\(job.id)"])
    }
}
