import AsyncHTTPClient
package import CairnAccounts
import CairnHTTP
package import CairnJobs
package import CairnNotifications
package import CairnStorage
import Crypto
import Foundation
import HTTPTypes
import Hummingbird
package import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
package import SQLKit
import Synchronization
import Tracing

/// Outbound channels: plans deliveries in the publishing transaction (one record and one job
/// per recipient and webhook endpoint, per recipient for email, per recipient and device for
/// push) and runs them as jobs with the job system's retries, backoff and dead letters.
/// Email and push go through the tenant's configured ``NotificationProvider`` adapters.
package final class OutboundChannels: PublishObserver {
    let database: Database
    let notifications: NotificationStore
    let accounts: AccountService
    let jobs: JobQueue
    let http: OutboundHTTP
    let settings: OutboundSettings
    let logger: Logger
    let credentials = CredentialCache()
    /// Seals webhook secrets and provider settings at rest.
    let secrets: SecretBox

    /// Creates the channels, sealing their secrets at rest with `secrets`. Pass them to
    /// ``Notifier`` as its publish observer and call ``registerJobs(on:)`` once, from the
    /// composition root.
    package init(
        database: Database, notifications: NotificationStore, accounts: AccountService, jobs: JobQueue, settings: OutboundSettings,
        secrets: SecretBox, logger: Logger
    ) {
        self.database = database
        self.secrets = secrets
        self.notifications = notifications
        self.accounts = accounts
        self.jobs = jobs
        self.settings = settings
        self.http = OutboundHTTP(allowPrivateTargets: settings.allowPrivateWebhookTargets)
        self.logger = logger
    }

    /// Registers the delivery job handlers (webhook, email, push, SMS, digests) on `queue`. A
    /// delivery whose job ends without sending it (cancelled, or discarded before it recorded an
    /// outcome) is `failed` from the same transaction on (``abandon(_:job:on:)``), so it can be
    /// redelivered.
    package func registerJobs(on queue: JobQueue) {
        registerDelivery(SendWebhook.self, on: queue, span: nil) { try await $0.deliverWebhook($1, context: $2) }
        registerDelivery(SendEmail.self, on: queue, span: "email delivery") { try await $0.deliverThroughProvider($1, context: $2) }
        registerDelivery(SendPush.self, on: queue, span: "push delivery") { try await $0.deliverThroughProvider($1, context: $2) }
        registerDelivery(SendSMS.self, on: queue, span: nil) { try await $0.deliverThroughProvider($1, context: $2) }
        queue.register(SendDigest.self, on: self, whenGone: Self.shuttingDown) { channels, args, context in
            try await TraceContext.withSpan("digest delivery") { span in
                span.attributes["cairn.digest.id"] = args.digestId
                try await channels.deliverDigest(args.digestId, context: context)
            }
        }
    }

    /// The failure of a delivery job that starts after the channels are gone.
    @Sendable static func shuttingDown() -> any Error { PermanentJobError("notifications are shutting down") }

    /// Registers the handler of one kind of delivery job: `deliver` carries out the job's
    /// delivery (inside a span named `spanName`, with the delivery's id, when one is given), and an
    /// abandoned job settles it (``abandon(_:job:on:)``).
    private func registerDelivery<Delivery: DeliveryJob>(
        _ kind: Delivery.Type, on queue: JobQueue, span spanName: String?,
        _ deliver: @escaping @Sendable (OutboundChannels, _ deliveryId: String, JobContext) async throws -> Void
    ) {
        queue.register(
            kind, on: self, whenGone: Self.shuttingDown,
            handler: { channels, args, context in
                guard let spanName else { return try await deliver(channels, args.deliveryId, context) }
                try await TraceContext.withSpan(spanName) { span in
                    span.attributes["cairn.delivery.id"] = args.deliveryId
                    try await deliver(channels, args.deliveryId, context)
                }
            }, abandoned: Self.abandon)
    }

    /// Settles the delivery of a job that ended without sending it, in the transaction that
    /// ended the job: a `pending` delivery becomes `failed` with `cancelled` (or `discarded: …`,
    /// the job's last error) as its last error. One that already recorded its outcome (a
    /// dead letter's own `failed`) stays as it is. No dead letter is counted: nothing was sent.
    static func abandon(_ args: some DeliveryJob, job: Job, on db: any SQLDatabase) async throws {
        let reason: String
        if job.state == .cancelled {
            reason = "cancelled"
        } else if case .array(let errors)? = JSONValue(text: job.errors), let last = errors.last?["error"]?.string {
            reason = "discarded: " + String(last.prefix(500))
        } else {
            reason = "discarded"
        }
        try await db.raw(
            """
            UPDATE notification_deliveries SET state = 'failed', last_error = \(bind: reason), updated_at = \(bind: WallClock.milliseconds())
            WHERE id = \(bind: args.deliveryId) AND tenant_id = \(bind: job.tenantId) AND state = 'pending'
            """
        ).run()
    }

    /// Plans the outbound deliveries of notifications just stored, in the publishing transaction.
    package func didStore(
        _ rows: [StoredNotification], draft: NotificationDraft, preferences: [String: NotificationPreferences], on db: any SQLDatabase
    ) async throws {
        try await plan(rows, draft: draft, preferences: preferences, on: db)
    }

    /// Plans the outbound deliveries of publishes stored together, reading each tenant's
    /// endpoints and providers once for all of them (a batch of single-user publishes would
    /// otherwise read them once per notification, inside the batch's transaction).
    package func didStore(_ publishes: [StoredPublish], on db: any SQLDatabase) async throws {
        var known: [String: TenantChannels] = [:]
        for publish in publishes {
            guard let tenantId = publish.rows.first?.tenantId else { continue }
            let channels: TenantChannels
            if let cached = known[tenantId] {
                channels = cached
            } else {
                channels = try await tenantChannels(tenantId, on: db)
                known[tenantId] = channels
            }
            try await plan(publish.rows, draft: publish.draft, preferences: publish.preferences, on: db, channels: channels)
        }
    }

    /// A tenant's enabled webhook endpoints and configured providers.
    struct TenantChannels {
        var endpoints: [WebhookEndpoint]
        var providers: Set<ProviderName>
    }

    /// One statement for both (a publish batch reads this once per tenant inside its
    /// transaction, where each round trip holds the batch): the enabled endpoints' rows, then
    /// one row per configured provider, told apart by `provider` (NULL on endpoint rows).
    func tenantChannels(_ tenantId: String, on db: any SQLDatabase) async throws -> TenantChannels {
        let blanks = Array(repeating: "NULL", count: WebhookEndpoint.columns.split(separator: ",").count).joined(separator: ", ")
        let rows = try await db.raw(
            """
            SELECT NULL AS provider, \(unsafeRaw: WebhookEndpoint.columns) FROM webhook_endpoints
            WHERE tenant_id = \(bind: tenantId) AND enabled = \(bind: true)
            UNION ALL SELECT provider, \(unsafeRaw: blanks) FROM notification_providers WHERE tenant_id = \(bind: tenantId)
            """
        ).all()
        var channels = TenantChannels(endpoints: [], providers: [])
        for row in rows {
            if let provider = try row.decode(column: "provider", as: String?.self) {
                if let name = ProviderName(rawValue: provider) { channels.providers.insert(name) }
            } else {
                channels.endpoints.append(try WebhookEndpoint.from(row, secrets: secrets))
            }
        }
        return channels
    }

    /// Plans the outbound deliveries of stored (or in-app-less) notifications: webhooks to the
    /// tenant's endpoints, email (SMS) when the tenant has an email (SMS) provider, push to each of the
    /// recipient's devices whose platform the tenant configured — each as the recipient's
    /// preferences allow, delayed to the end of their quiet hours. `channels`, when given, are
    /// the tenant's, already read.
    func plan(
        _ rows: [StoredNotification], draft: NotificationDraft, preferences: [String: NotificationPreferences], on db: any SQLDatabase,
        channels: TenantChannels? = nil
    ) async throws {
        guard let tenantId = rows.first?.tenantId else { return }
        let known: TenantChannels
        if let channels { known = channels } else { known = try await tenantChannels(tenantId, on: db) }
        let endpoints = known.endpoints.filter { $0.accepts(draft.type) }
        let providers = known.providers
        let email = providers.contains(.sendgrid)
        let sms = providers.contains(.twilio)
        let pushPlatforms = providers.intersection([.fcm, .apns])
        guard !endpoints.isEmpty || email || sms || !pushPlatforms.isEmpty else { return }
        let pushRecipients = pushPlatforms.isEmpty ? [] : rows.map(\.userId).filter { (preferences[$0] ?? .defaults).allows(draft.type, on: .push) }
        let devices = try await ProviderStore.devices(tenantId: tenantId, userIds: pushRecipients, platforms: pushPlatforms, on: db)
        // The node's clock (the job queue's): quiet hours are judged by it.
        let now = jobs.clock.milliseconds
        for row in rows {
            let prefs = preferences[row.userId] ?? .defaults
            let runAt = prefs.quietUntil(now: now)
            if prefs.allows(draft.type, on: .webhook), !endpoints.isEmpty {
                var json = JSONWriter()
                json.objectStart()
                json.key("type")
                json.string("notification.\(row.type)")
                json.key("timestamp")
                json.timestamp(milliseconds: now)
                json.key("data")
                json.objectStart()
                json.key("userId")
                json.string(row.userId)
                json.key("notification")
                row.writeJSON(to: &json)
                json.objectEnd()
                json.objectEnd()
                let payload = String(buffer: json.buffer)
                for endpoint in endpoints {
                    try await planDelivery(
                        row, channel: .webhook, endpointId: endpoint.id, payload: payload, job: SendWebhook.self,
                        maxAttempts: settings.webhookMaxAttempts, runAt: runAt, dedupeKey: draft.dedupeKey, now: now, on: db)
                }
            }
            let message = JSONValue.object([
                "type": .string(row.type), "title": .string(row.title), "body": .string(row.body), "data": JSONValue(text: row.data) ?? .object([:]),
            ]).text
            if email, prefs.allows(draft.type, on: .email) {
                try await planProviderDelivery(
                    row, channel: .email, endpointId: nil, payload: message, job: SendEmail.self, preferences: prefs, runAt: runAt,
                    dedupeKey: draft.dedupeKey, now: now, on: db)
            }
            // The phone is read when the job runs (as the email address): Accounts owns it.
            if sms, prefs.allows(draft.type, on: .sms) {
                try await planProviderDelivery(
                    row, channel: .sms, endpointId: nil, payload: message, job: SendSMS.self, preferences: prefs, runAt: runAt,
                    dedupeKey: draft.dedupeKey, now: now, on: db)
            }
            for device in devices[row.userId] ?? [] {
                try await planProviderDelivery(
                    row, channel: .push, endpointId: device.id, payload: message, job: SendPush.self, preferences: prefs, runAt: runAt,
                    dedupeKey: draft.dedupeKey, now: now, on: db)
            }
        }
    }

    /// An email, SMS or push delivery: into the user's digest window when their preferences
    /// batch the type on the channel (and the window is still open), at once otherwise.
    private func planProviderDelivery<Delivery: DeliveryJob>(
        _ row: StoredNotification, channel: NotificationChannel, endpointId: String?, payload: String, job: Delivery.Type,
        preferences: NotificationPreferences, runAt: Int64?, dedupeKey: String?, now: Int64, on db: any SQLDatabase
    ) async throws {
        let mode = preferences.digest(row.type, on: channel)
        if mode != .immediate,
            try await planDigested(
                row, channel: channel, endpointId: endpointId, payload: payload, mode: mode, preferences: preferences, dedupeKey: dedupeKey,
                now: now, on: db)
        {
            return
        }
        try await planDelivery(
            row, channel: channel, endpointId: endpointId, payload: payload, job: job, maxAttempts: settings.providerMaxAttempts, runAt: runAt,
            dedupeKey: dedupeKey, now: now, on: db)
    }

    /// One delivery record and the job that carries it out, in the publishing transaction.
    /// With the draft's dedupe key, a second delivery of the same key to the same user, channel
    /// and endpoint is not planned: the inbox row's unique key stops a repeated publish (a
    /// retried broadcast page, the job-status bridge of every node) for users who keep in-app
    /// on, and this stops it for those who turned in-app off, who have no inbox row.
    private func planDelivery<Delivery: DeliveryJob>(
        _ row: StoredNotification, channel: NotificationChannel, endpointId: String?, payload: String, job: Delivery.Type, maxAttempts: Int,
        runAt: Int64?, dedupeKey: String?, now: Int64, on db: any SQLDatabase
    ) async throws {
        let deliveryId = UUIDv7.make()
        let inserted = try await db.raw(
            """
            INSERT INTO notification_deliveries (id, tenant_id, user_id, notification_id, channel, endpoint_id, state, attempts, last_error,
                payload, dedupe_key, created_at, updated_at)
            VALUES (\(bind: deliveryId), \(bind: row.tenantId), \(bind: row.userId), \(bind: row.id), \(bind: channel.rawValue), \(bind: endpointId),
                'pending', 0, NULL, \(bind: payload), \(bind: dedupeKey), \(bind: now), \(bind: now))
            ON CONFLICT DO NOTHING RETURNING id
            """
        ).first()
        guard inserted != nil else { return }
        var request = try JobRequest(Delivery(deliveryId: deliveryId))
        request.maxAttempts = max(1, min(100, maxAttempts))
        request.runAt = runAt
        _ = try await jobs.enqueue(request, tenantId: row.tenantId, createdBy: nil, on: db)
    }

    struct DeliveryFailure: Error, CustomStringConvertible {
        var description: String
    }

    /// One attempt of the webhook delivery `deliveryId`.
    func deliverWebhook(_ deliveryId: String, context: JobContext) async throws {
        let tenantId = context.job.tenantId
        let database = database
        let secrets = secrets
        let loaded = try await database.read { db -> (String, WebhookEndpoint?)? in
            guard
                let row = try await db.raw(
                    "SELECT payload, endpoint_id FROM notification_deliveries WHERE id = \(bind: deliveryId) AND tenant_id = \(bind: tenantId)"
                ).first()
            else { return nil }
            let endpointId = try row.decode(column: "endpoint_id", as: String?.self) ?? ""
            let endpoint = try await db.raw(
                "SELECT \(unsafeRaw: WebhookEndpoint.columns) FROM webhook_endpoints WHERE id = \(bind: endpointId) AND tenant_id = \(bind: tenantId)"
            ).first().map { try WebhookEndpoint.from($0, secrets: secrets) }
            return (try row.decode(column: "payload", as: String.self), endpoint)
        }
        guard let (payload, endpoint) = loaded else { return }  // the delivery was deleted
        guard let endpoint, endpoint.enabled else {
            try await record(deliveryId, tenantId: tenantId, state: "failed", error: "endpoint disabled or deleted", countAttempt: false)
            return
        }
        var failure: String?
        guard let host = URL(string: endpoint.url)?.host, let client = await http.targetClient(host: host) else {
            try await record(deliveryId, tenantId: tenantId, state: "failed", error: "target address is not public", countAttempt: true)
            throw PermanentJobError("webhook target address is not public")
        }
        let timestamp = WallClock.milliseconds() / 1000
        var request = HTTPClientRequest(url: endpoint.url)
        request.method = .POST
        request.headers.add(name: "content-type", value: "application/json")
        request.headers.add(name: "user-agent", value: "Cairn-Webhooks/1")
        request.headers.add(name: "webhook-id", value: deliveryId)
        request.headers.add(name: "webhook-timestamp", value: String(timestamp))
        // Both secrets sign during a rotation's overlap, judged on the node's clock.
        let signing = endpoint.signingSecrets(now: jobs.clock.milliseconds)
        request.headers.add(
            name: "webhook-signature", value: WebhookSignature.sign(secrets: signing, id: deliveryId, timestamp: timestamp, body: payload))
        request.body = .bytes(ByteBuffer(string: payload))
        do {
            let response = try await OutboundHTTP.execute(
                request, on: client, timeout: settings.webhookTimeout, operation: "webhook delivery",
                attributes: ["cairn.tenant_id": tenantId, "cairn.delivery.id": deliveryId, "cairn.webhook.endpoint_id": endpoint.id])
            // Read (and drop) at most 64 KiB of the answer so the connection can be reused.
            _ = try? await response.body.collect(upTo: 64 * 1024)
            if (200..<300).contains(Int(response.status.code)) {
                try await record(deliveryId, tenantId: tenantId, state: "sent", error: nil, countAttempt: true)
                return
            }
            failure = "HTTP \(response.status.code)"
        } catch {
            // Stopped by the worker (a shutdown hands the job back, a cancel request or a lost
            // lease ends it here): the receiver was not judged, so no attempt nor error is
            // recorded. Before, a shutdown left "connection failed" on a delivery that the next
            // node then sent.
            if Task.isCancelled { throw CancellationError() }
            let timedOut = [HTTPClientError.deadlineExceeded, .readTimeout, .connectTimeout].contains { $0 == error as? HTTPClientError }
            failure = timedOut ? "timeout" : "connection failed"
        }
        let last = context.job.attempt >= context.job.maxAttempts
        if last {
            // One transaction: a reader never sees the dead letter without its count (or the
            // endpoint still enabled after its last allowed one), and a crash cannot split them.
            let error = failure
            let limit = settings.webhookDisableAfter
            try await database.transaction { db in
                try await Self.record(deliveryId, tenantId: tenantId, state: "failed", error: error, countAttempt: true, on: db)
                try await Self.deadLetter(endpoint, deliveryId: deliveryId, limit: limit, on: db)
            }
            logger.warning("webhook delivery dead-lettered", metadata: ["endpoint_id": .string(endpoint.id)])
            throw DeliveryFailure(description: "webhook delivery failed: \(failure ?? "?")")
        }
        try await record(deliveryId, tenantId: tenantId, state: "pending", error: failure, countAttempt: true)
        // The next attempt follows the webhook schedule (hours apart), not the queue's backoff.
        let schedule = settings.webhookRetrySchedule
        let wait = schedule.isEmpty ? Duration.seconds(60) : schedule[min(max(0, context.job.attempt - 1), schedule.count - 1)]
        throw RetryJobLater(after: wait, "webhook delivery failed: \(failure ?? "?")")
    }

    func record(_ deliveryId: String, tenantId: String, state: String, error: String?, countAttempt: Bool) async throws {
        try await database.write { db in
            try await Self.record(deliveryId, tenantId: tenantId, state: state, error: error, countAttempt: countAttempt, on: db)
        }
    }

    static func record(_ deliveryId: String, tenantId: String, state: String, error: String?, countAttempt: Bool, on db: any SQLDatabase) async throws
    {
        let now = WallClock.milliseconds()
        try await db.raw(
            """
            UPDATE notification_deliveries SET state = \(bind: state), last_error = COALESCE(\(bind: error), last_error), updated_at = \(bind: now),
                attempts = attempts + \(bind: countAttempt ? 1 : 0)
            WHERE id = \(bind: deliveryId) AND tenant_id = \(bind: tenantId)
            """
        ).run()
    }

    /// Counts a dead letter against the endpoint, once per delivery: a redelivery that fails
    /// again is a dead letter of the same event, not another one (five manual retries of one
    /// failure must not disable the endpoint). Disables the endpoint at the limit.
    static func deadLetter(_ endpoint: WebhookEndpoint, deliveryId: String, limit: Int, on db: any SQLDatabase) async throws {
        let now = WallClock.milliseconds()
        let first = try await db.raw(
            """
            UPDATE notification_deliveries SET dead_lettered_at = \(bind: now)
            WHERE id = \(bind: deliveryId) AND tenant_id = \(bind: endpoint.tenantId) AND dead_lettered_at IS NULL RETURNING id
            """
        ).first()
        guard first != nil else { return }
        try await db.raw(
            """
            UPDATE webhook_endpoints SET dead_letters = dead_letters + 1,
                enabled = CASE WHEN dead_letters + 1 >= \(bind: limit) THEN \(bind: false) ELSE enabled END,
                disabled_at = CASE WHEN dead_letters + 1 >= \(bind: limit) THEN \(bind: now) ELSE disabled_at END
            WHERE id = \(bind: endpoint.id) AND tenant_id = \(bind: endpoint.tenantId)
            """
        ).run()
    }
}

/// Settings of the outbound channels (`CAIRN_WEBHOOKS_*`, `CAIRN_PROVIDERS_*` and the providers' URLs).
package struct OutboundSettings: Sendable {
    /// The waits between webhook delivery attempts, one per retry, each counted from the failed
    /// attempt (`CAIRN_WEBHOOKS_RETRY_SCHEDULE`). The default, 5 s, 5 min, 30 min, 2 h, 5 h, 8 h,
    /// 8 h, is Svix's schedule trimmed to end near a day: 8 attempts over 23 h 35 min, so a
    /// receiver down for a night still gets its events.
    package var webhookRetrySchedule: [Duration] = [
        .seconds(5), .seconds(300), .seconds(1800), .seconds(7200), .seconds(18_000), .seconds(28_800), .seconds(28_800),
    ]
    /// Webhook delivery attempts before the delivery is a dead letter (`failed`): the first
    /// and one per entry of ``webhookRetrySchedule``.
    package var webhookMaxAttempts: Int { webhookRetrySchedule.count + 1 }
    /// How long the previous signing secret of an endpoint keeps signing after a rotation, when
    /// the request does not say (default 24 h, as Svix).
    package var webhookSecretOverlap: Duration = .seconds(86_400)
    /// Dead letters after which an endpoint is disabled.
    package var webhookDisableAfter = 5
    /// Time allowed for one webhook request (default 10 s).
    package var webhookTimeout: Duration = .seconds(10)
    /// Allow webhook URLs resolving to loopback, link-local or private addresses
    /// (`CAIRN_WEBHOOKS_ALLOW_PRIVATE`, default false: SSRF protection).
    package var allowPrivateWebhookTargets = false
    /// Email and push delivery attempts before the delivery is a dead letter (`failed`).
    package var providerMaxAttempts = 8
    /// The email and push providers' endpoints and TLS trust (operator settings).
    package var providers = ProviderEndpoints()

    /// Creates the defaults.
    package init() {}
}
