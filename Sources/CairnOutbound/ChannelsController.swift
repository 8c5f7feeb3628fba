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
@MemberwiseInit
package struct ChannelsController: Sendable {
    let channels: OutboundChannels

    struct EndpointBody: Decodable {
        var url: String
        var types: [String]?
    }

    /// `PATCH /webhooks/{id}`: every field optional.
    struct EndpointPatch: Decodable {
        var url: String?
        var types: [String]?
        var enabled: Bool?
        var rotateSecret: Bool?
        var secretOverlapSeconds: Int?
    }

    /// Checks a list of types to deliver: 1 to 100 notification types, or `*`.
    /// - Throws: 400 `invalid_input` on `types`.
    func validate(types: [String]) throws {
        if let issue = Self.typesIssue(types) { throw AppError.invalidInput([issue]) }
    }

    /// The issue of a list of types to deliver, if any.
    static func typesIssue(_ types: [String]) -> FieldIssue? {
        guard (1...100).contains(types.count), types.allSatisfy({ $0 == "*" || NotificationDraft.isValidType($0) }) else {
            return FieldIssue(field: "types", issue: "must list 1 to 100 notification types (or *)")
        }
        return nil
    }

    /// The host of a webhook URL of the right shape (http(s), a host, at most 2048 bytes, no
    /// credentials), or nil.
    static func webhookHost(_ text: String) -> String? {
        guard text.utf8.count <= 2048, let url = URL(string: text), let scheme = url.scheme?.lowercased(), scheme == "https" || scheme == "http",
            let host = url.host, !host.isEmpty, url.user == nil
        else { return nil }
        return host
    }

    /// The issue of a webhook URL of the wrong shape.
    static let urlIssue = FieldIssue(field: "url", issue: "must be an absolute http or https URL without credentials")

    /// Checks a webhook URL: http(s), a host, at most 2048 bytes, and a public address unless
    /// allowed; a host that does not resolve is said to be one.
    func validate(url text: String) async throws {
        guard let host = Self.webhookHost(text) else { throw AppError.invalidInput([Self.urlIssue]) }
        switch await channels.http.targetRefusal(host: host) {
        case nil: break
        case .unresolved:
            // Said apart from the SSRF refusal: a typo in the host is not a private address.
            throw AppError.invalidField("url", "has a host, \(host), that could not be resolved (no DNS record found)")
        case .notPublic:
            throw AppError.invalidField("url", "must resolve to public addresses (loopback, link-local and private ranges are refused)")
        }
    }

    /// Adds the routes: `/webhooks` for owners and admins, a notification's deliveries for its recipient.
    package func addRoutes(to group: RouterGroup<AuthenticatedContext>) {
        group.group("webhooks").add(middleware: RequireAdmin())
            .resource(list: listWebhooks, create: createWebhook, show: showWebhook, update: updateWebhook, delete: deleteWebhook)
        group.get("notifications/:id/deliveries", use: deliveries)
        group.post("notifications/:id/deliveries/:deliveryId/redeliver", use: redeliver)
    }

    /// `POST /webhooks`: 201 with the signing secret, shown this once.
    @Sendable func createWebhook(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        let database = channels.database
        var request = request
        let body = try await request.decodeJSON(as: EndpointBody.self, context: context)
        try await validate(url: body.url)
        let types = body.types ?? ["*"]
        try validate(types: types)
        let typesJSON = String(decoding: try JSONEncoder().encode(types), as: UTF8.self)
        var endpoint = WebhookEndpoint(
            id: UUIDv7.make(), tenantId: context.identity.tenantId, url: body.url, types: types, secret: WebhookSignature.makeSecret(),
            enabled: true, deadLetters: 0, createdAt: WallClock.milliseconds(), version: 1)
        let sealedSecret = channels.secrets.seal(endpoint.secret, purpose: WebhookEndpoint.secretPurpose)
        try await database.write { [endpoint] db in
            try await db.raw(
                """
                INSERT INTO webhook_endpoints (id, tenant_id, url, types, secret, enabled, dead_letters, created_at, disabled_at, version)
                VALUES (\(bind: endpoint.id), \(bind: endpoint.tenantId), \(bind: endpoint.url), \(bind: typesJSON), \(bind: sealedSecret),
                    \(bind: true), 0, \(bind: endpoint.createdAt), NULL, 1)
                """
            ).run()
        }
        endpoint.showSecret = true
        return .versioned(endpoint, status: .created, location: "/webhooks/\(endpoint.id)", headers: [.cacheControl: "no-store"])
    }

    /// The caller's tenant's endpoint `id`.
    /// - Throws: 404 when it does not exist or is another tenant's.
    func endpoint(_ id: String, tenantId: String) async throws -> WebhookEndpoint {
        let secrets = channels.secrets
        guard UUIDv7.isValid(id),
            let endpoint = try await channels.database.read({ db in
                try await db.raw(
                    "SELECT \(unsafeRaw: WebhookEndpoint.columns) FROM webhook_endpoints WHERE id = \(bind: id) AND tenant_id = \(bind: tenantId)"
                ).first().map { try WebhookEndpoint.from($0, secrets: secrets) }
            })
        else { throw AppError.notFound("No such webhook endpoint.") }
        return endpoint
    }

    /// `GET /webhooks/{id}`: the endpoint without its secret, with `ETag` (`If-None-Match` → 304).
    @Sendable func showWebhook(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        ETag.conditional(request, try await endpoint(try context.parameters.require("id"), tenantId: context.identity.tenantId))
    }

    /// `PATCH /webhooks/{id}` (`If-Match` optional): changes `url` and `types`; `enabled: true`
    /// re-enables a disabled endpoint (its dead-letter count starts again from 0), `false`
    /// disables it; `rotateSecret: true` makes a new signing secret, answered this once, while
    /// the old one keeps signing beside it for `secretOverlapSeconds` (0 to 604800, default
    /// 86400): Standard Webhooks' rotation, one `v1,` signature per active secret. A PATCH that
    /// changes nothing answers the endpoint as it is, with the same `ETag`.
    /// - Throws: 400 `invalid_input`; 404; 412 when `If-Match` (or a concurrent change) differs.
    @Sendable func updateWebhook(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        let expected = try ETag.expectedVersion(request)
        var request = request
        let body = try await request.decodeJSON(as: EndpointPatch.self, context: context)
        if let url = body.url { try await validate(url: url) }
        if let types = body.types { try validate(types: types) }
        if let issue = body.overlapIssue { throw AppError.invalidInput([issue]) }
        let current = try await endpoint(try context.parameters.require("id"), tenantId: context.identity.tenantId)
        if let expected, expected != current.version { throw AppError.preconditionFailed() }
        let updated = applying(body, to: current)
        // A PATCH that changes nothing (`{}`, or the stored values again) writes nothing: the
        // version and `ETag` stay, as for the other resources.
        if !updated.showSecret, updated.url == current.url, updated.types == current.types, updated.enabled == current.enabled {
            return .versioned(current)
        }
        guard try await save(updated, replacing: current) else { throw AppError.preconditionFailed() }
        // A new secret is shown this once: no copy of the answer may be kept.
        return .versioned(updated, headers: updated.showSecret ? [.cacheControl: "no-store"] : [:])
    }

    /// `current` with a validated PATCH applied, one version later: re-enabling clears the
    /// dead letters, a rotation makes a new secret (shown once) and keeps the old one signing
    /// for the overlap, judged on the jobs' clock (deliveries judge it by that clock).
    private func applying(_ body: EndpointPatch, to current: WebhookEndpoint) -> WebhookEndpoint {
        let now = channels.jobs.clock.milliseconds
        var updated = current
        updated.url = body.url ?? current.url
        updated.types = body.types ?? current.types
        if let enabled = body.enabled, enabled != current.enabled {
            updated.enabled = enabled
            updated.disabledAt = enabled ? nil : now
            // Re-enabled: the endpoint gets its full allowance of dead letters again.
            if enabled { updated.deadLetters = 0 }
        }
        if body.rotateSecret == true {
            let overlap = body.secretOverlapSeconds.map { Int64($0) * 1000 } ?? channels.settings.webhookSecretOverlap.components.seconds * 1000
            updated.previousSecret = overlap > 0 ? current.secret : nil
            updated.previousSecretExpiresAt = overlap > 0 ? now + overlap : nil
            updated.secret = WebhookSignature.makeSecret()
            updated.showSecret = true
        }
        updated.version = current.version + 1
        return updated
    }

    /// Writes `updated` (secrets sealed) over `current` if nobody changed it since it was read.
    private func save(_ updated: WebhookEndpoint, replacing current: WebhookEndpoint) async throws -> Bool {
        let secrets = channels.secrets
        let typesJSON = String(decoding: try JSONEncoder().encode(updated.types), as: UTF8.self)
        let sealed = secrets.seal(updated.secret, purpose: WebhookEndpoint.secretPurpose)
        let sealedPrevious = updated.previousSecret.map { secrets.seal($0, purpose: WebhookEndpoint.secretPurpose) }
        return try await channels.database.write { db in
            try await db.raw(
                """
                UPDATE webhook_endpoints SET url = \(bind: updated.url), types = \(bind: typesJSON), enabled = \(bind: updated.enabled),
                    disabled_at = \(bind: updated.disabledAt), dead_letters = \(bind: updated.deadLetters), secret = \(bind: sealed),
                    previous_secret = \(bind: sealedPrevious), previous_secret_expires_at = \(bind: updated.previousSecretExpiresAt),
                    version = \(bind: updated.version)
                WHERE id = \(bind: updated.id) AND tenant_id = \(bind: updated.tenantId) AND version = \(bind: current.version) RETURNING id
                """
            ).first() != nil
        }
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

    /// `POST /notifications/{id}/deliveries/{deliveryId}/redeliver`: one new attempt of a
    /// failed (dead-lettered) delivery, as a job, answering 202 with the delivery (`pending`).
    /// A webhook keeps its `webhook-id` (the delivery id), so a receiver that already has it
    /// can tell. Allowed to the notification's recipient and to the tenant's owners and admins.
    /// - Throws: 404 for a delivery of another tenant (or user, for a member), or none;
    ///   409 when the delivery has not failed, or its webhook endpoint is disabled or deleted.
    @Sendable func redeliver(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        let notificationId = try context.parameters.require("id")
        let deliveryId = try context.parameters.require("deliveryId")
        let identity = context.identity
        guard UUIDv7.isValid(notificationId), UUIDv7.isValid(deliveryId) else { throw AppError.notFound("No such delivery.") }
        // Owners and admins see every delivery of their tenant; anyone else only their own.
        let anyUser = (try? identity.requireAdmin()) != nil
        let jobs = channels.jobs
        let delivery = try await channels.database.transaction { db -> Delivery in
            var delivery = try await Self.failedDelivery(deliveryId, notificationId: notificationId, identity: identity, anyUser: anyUser, on: db)
            let job = try await Self.redeliveryJob(for: delivery, tenantId: identity.tenantId, on: db)
            delivery.updatedAt = try await Self.reopen(delivery, with: job, tenantId: identity.tenantId, jobs: jobs, on: db)
            delivery.state = "pending"
            return delivery
        }
        return .json(delivery, status: .accepted, headers: [.location: "/notifications/\(notificationId)/deliveries"])
    }

    /// The `failed` delivery `deliveryId` of the notification, if the caller may see it.
    /// - Throws: 404 for another tenant's (or, without `anyUser`, another user's) or none;
    ///   409 when it has not failed.
    private static func failedDelivery(
        _ deliveryId: String, notificationId: String, identity: Identity, anyUser: Bool, on db: any SQLDatabase
    ) async throws -> Delivery {
        guard
            let row = try await db.raw(
                """
                SELECT \(unsafeRaw: Delivery.columns), user_id FROM notification_deliveries
                WHERE id = \(bind: deliveryId) AND tenant_id = \(bind: identity.tenantId) AND notification_id = \(bind: notificationId)
                """
            ).first()
        else { throw AppError.notFound("No such delivery.") }
        let recipient = try row.decode(column: "user_id", as: String.self)
        guard anyUser || recipient == identity.userId else { throw AppError.notFound("No such delivery.") }
        let delivery = try Delivery.from(row)
        guard delivery.state == "failed" else {
            throw AppError.conflict("Only a failed delivery can be redelivered; this one is \(delivery.state).")
        }
        return delivery
    }

    /// The job kind that carries out `delivery` again.
    /// - Throws: 409 when its webhook endpoint is disabled or deleted, or its channel is unknown.
    private static func redeliveryJob(for delivery: Delivery, tenantId: String, on db: any SQLDatabase) async throws -> any DeliveryJob.Type {
        switch NotificationChannel(rawValue: delivery.channel) {
        case .webhook?:
            let enabled = try await db.raw(
                "SELECT enabled FROM webhook_endpoints WHERE id = \(bind: delivery.endpointId ?? "") AND tenant_id = \(bind: tenantId)"
            ).first()?.decode(column: "enabled", as: Bool.self)
            guard enabled == true else {
                throw AppError.conflict("The delivery's webhook endpoint is disabled or deleted: re-enable it (PATCH /webhooks/{id}) first.")
            }
            return SendWebhook.self
        case .email?: return SendEmail.self
        case .sms?: return SendSMS.self
        case .push?: return SendPush.self
        default: throw AppError.conflict("This delivery's channel cannot be redelivered.")
        }
    }

    /// Puts the failed `delivery` back to `pending` and enqueues one attempt of `job`, on `db`;
    /// returns the time it was reopened.
    /// - Throws: 409 when a concurrent redelivery reopened it first.
    private static func reopen(
        _ delivery: Delivery, with job: any DeliveryJob.Type, tenantId: String, jobs: JobQueue, on db: any SQLDatabase
    ) async throws -> Int64 {
        let now = jobs.clock.milliseconds
        // Guarded by its state: of two concurrent redeliveries, one plans an attempt.
        guard
            try await db.raw(
                """
                UPDATE notification_deliveries SET state = 'pending', updated_at = \(bind: now)
                WHERE id = \(bind: delivery.id) AND tenant_id = \(bind: tenantId) AND state = 'failed' RETURNING id
                """
            ).first() != nil
        else { throw AppError.conflict("Only a failed delivery can be redelivered.") }
        var request = try Self.jobRequest(job, deliveryId: delivery.id)
        // One attempt, as Svix's and Stripe's manual resend: a failure is a dead letter again
        // (counted against the endpoint once per delivery, however often it is redelivered).
        request.maxAttempts = 1
        _ = try await jobs.enqueue(request, tenantId: tenantId, createdBy: nil, on: db)
        return now
    }

    /// The job request carrying out delivery `deliveryId` with job kind `job`.
    private static func jobRequest<Job: DeliveryJob>(_ job: Job.Type, deliveryId: String) throws -> JobRequest {
        try JobRequest(Job(deliveryId: deliveryId))
    }
}

// The checks that need no network, run by the body decoder so that one answer lists type and
// value errors together (the URL's addresses are checked afterwards, by the handler).

extension ChannelsController.EndpointBody: ValueChecked {
    func valueIssues() -> [FieldIssue] {
        var issues: [FieldIssue] = []
        if ChannelsController.webhookHost(url) == nil { issues.append(ChannelsController.urlIssue) }
        if let types, let issue = ChannelsController.typesIssue(types) { issues.append(issue) }
        return issues
    }
}

extension ChannelsController.EndpointPatch: ValueChecked {
    static var integerRanges: [String: ClosedRange<Int64>] { ["secretOverlapSeconds": 0...604_800] }

    /// The issue of `secretOverlapSeconds`, if any.
    var overlapIssue: FieldIssue? {
        guard let overlap = secretOverlapSeconds else { return nil }
        if rotateSecret != true { return FieldIssue(field: "secretOverlapSeconds", issue: "applies only with rotateSecret: true") }
        if !(0...604_800).contains(overlap) { return FieldIssue(field: "secretOverlapSeconds", issue: "must be 0 to 604800 seconds") }
        return nil
    }

    func valueIssues() -> [FieldIssue] {
        var issues: [FieldIssue] = []
        if let url, ChannelsController.webhookHost(url) == nil { issues.append(ChannelsController.urlIssue) }
        if let types, let issue = ChannelsController.typesIssue(types) { issues.append(issue) }
        if let issue = overlapIssue { issues.append(issue) }
        return issues
    }
}
