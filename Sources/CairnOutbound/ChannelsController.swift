import AsyncHTTPClient
package import CairnHTTP
import CairnJobs
import CairnNotifications
import CairnStorage
import Crypto
import Foundation
import HTTPTypes
package import Hummingbird
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import SQLKit
import Synchronization

/// `/webhooks` (admins) and `/notifications/{id}/deliveries`.
package struct ChannelsController: Sendable {
    let channels: OutboundChannels

    /// Creates the controller.
    package init(channels: OutboundChannels) {
        self.channels = channels
    }

    struct EndpointBody: Decodable {
        var url: String
        var types: [String]?
    }

    /// Checks a webhook URL: http(s), a host, at most 2048 bytes, and a public address unless allowed.
    func validate(url text: String) async throws {
        guard text.utf8.count <= 2048, let url = URL(string: text), let scheme = url.scheme?.lowercased(), scheme == "https" || scheme == "http",
            let host = url.host, !host.isEmpty, url.user == nil
        else { throw AppError.invalidField("url", "must be an absolute http or https URL without credentials") }
        if await !channels.http.isAllowedTarget(host: host) {
            throw AppError.invalidField("url", "must resolve to public addresses (loopback, link-local and private ranges are refused)")
        }
    }

    /// Adds the routes: `/webhooks` for owners and admins, a notification's deliveries for its recipient.
    package func addRoutes(to group: RouterGroup<AuthenticatedContext>) {
        group.group("webhooks").add(middleware: RequireAdmin())
            .post(use: createWebhook)
            .get(use: listWebhooks)
            .delete(":id", use: deleteWebhook)
        group.get("notifications/:id/deliveries", use: deliveries)
    }

    /// `POST /webhooks`: 201 with the signing secret, shown this once.
    @Sendable func createWebhook(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        let database = channels.database
        var request = request
        let body = try await request.decodeJSON(as: EndpointBody.self, context: context)
        try await validate(url: body.url)
        let types = body.types ?? ["*"]
        guard (1...100).contains(types.count), types.allSatisfy({ $0 == "*" || NotificationDraft.isValidType($0) }) else {
            throw AppError.invalidField("types", "must list 1 to 100 notification types (or *)")
        }
        let typesJSON = String(decoding: try JSONEncoder().encode(types), as: UTF8.self)
        var endpoint = WebhookEndpoint(
            id: UUIDv7.make(), tenantId: context.identity.tenantId, url: body.url, types: types, secret: WebhookSignature.makeSecret(),
            enabled: true, deadLetters: 0, createdAt: WallClock.milliseconds())
        let sealedSecret = channels.secrets.seal(endpoint.secret, purpose: WebhookEndpoint.secretPurpose)
        try await database.write { [endpoint] db in
            try await db.raw(
                """
                INSERT INTO webhook_endpoints (\(unsafeRaw: WebhookEndpoint.columns), disabled_at) VALUES (\(bind: endpoint.id), \(bind: endpoint.tenantId),
                    \(bind: endpoint.url), \(bind: typesJSON), \(bind: sealedSecret), \(bind: true), 0, \(bind: endpoint.createdAt), NULL)
                """
            ).run()
        }
        endpoint.showSecret = true
        return .json(endpoint, status: .created, headers: [.location: "/webhooks/\(endpoint.id)"])
    }

    /// `GET /webhooks`: the tenant's endpoints (at most 100), without secrets.
    @Sendable func listWebhooks(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        let tenantId = context.identity.tenantId
        let secrets = channels.secrets
        let items = try await channels.database.read { db in
            try await db.raw(
                "SELECT \(unsafeRaw: WebhookEndpoint.columns) FROM webhook_endpoints WHERE tenant_id = \(bind: tenantId) ORDER BY id LIMIT 100"
            ).all().map { try WebhookEndpoint.from($0, secrets: secrets) }
        }
        return .json(ItemList(items: items))
    }

    /// `DELETE /webhooks/{id}`.
    @Sendable func deleteWebhook(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        let id = try context.parameters.require("id")
        let tenantId = context.identity.tenantId
        let deleted = try await channels.database.write { db in
            try await db.raw("DELETE FROM webhook_endpoints WHERE id = \(bind: id) AND tenant_id = \(bind: tenantId) RETURNING id").first() != nil
        }
        guard deleted else { throw AppError.notFound("No such webhook endpoint.") }
        return Response(status: .noContent)
    }

    /// `GET /notifications/{id}/deliveries`: the outbound deliveries of one of the caller's notifications.
    @Sendable func deliveries(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        let id = try context.parameters.require("id")
        let identity = context.identity
        guard UUIDv7.isValid(id) else { throw AppError.notFound("No such notification.") }
        let items = try await channels.database.read { db in
            try await db.raw(
                """
                SELECT \(unsafeRaw: Delivery.columns) FROM notification_deliveries
                WHERE tenant_id = \(bind: identity.tenantId) AND notification_id = \(bind: id) AND user_id = \(bind: identity.userId) ORDER BY id
                """
            ).all().map(Delivery.from)
        }
        if items.isEmpty, try await channels.notifications.notification(id: id, tenantId: identity.tenantId, userId: identity.userId) == nil {
            throw AppError.notFound("No such notification.")
        }
        return .json(ItemList(items: items))
    }
}
