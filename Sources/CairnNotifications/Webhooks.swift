import AsyncHTTPClient
public import CairnHTTP
public import CairnJobs
import CairnStorage
import Crypto
import Foundation
import HTTPTypes
public import Hummingbird
public import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import SQLKit
import Synchronization

/// A tenant's webhook endpoint.
struct WebhookEndpoint: Sendable, JSONWritable {
    var id: String
    var tenantId: String
    var url: String
    var types: [String]
    var secret: String
    var enabled: Bool
    var deadLetters: Int
    var createdAt: Int64
    /// Shown once, in the creation response.
    var showSecret = false

    func writeJSON(to writer: inout JSONWriter) {
        writer.objectStart()
        writer.key("id")
        writer.string(id)
        writer.key("url")
        writer.string(url)
        writer.key("types")
        writer.arrayStart()
        for type in types { writer.string(type) }
        writer.arrayEnd()
        writer.key("enabled")
        writer.bool(enabled)
        writer.key("deadLetters")
        writer.int(deadLetters)
        writer.key("createdAt")
        writer.timestamp(milliseconds: createdAt)
        if showSecret {
            writer.key("secret")
            writer.string(secret)
        }
        writer.objectEnd()
    }

    func accepts(_ type: String) -> Bool { types.contains("*") || types.contains(type) }

    static let columns = "id, tenant_id, url, types, secret, enabled, dead_letters, created_at"

    static func from(_ row: any SQLRow) throws -> WebhookEndpoint {
        let typesText = try row.decode(column: "types", as: String.self)
        return WebhookEndpoint(
            id: try row.decode(column: "id", as: String.self), tenantId: try row.decode(column: "tenant_id", as: String.self),
            url: try row.decode(column: "url", as: String.self),
            types: (try? JSONDecoder().decode([String].self, from: Data(typesText.utf8))) ?? [],
            secret: try row.decode(column: "secret", as: String.self), enabled: try row.decode(column: "enabled", as: Bool.self),
            deadLetters: try row.decode(column: "dead_letters", as: Int.self), createdAt: try row.decode(column: "created_at", as: Int64.self))
    }
}

/// A delivery of one notification on one outbound channel (and endpoint).
struct Delivery: Sendable, JSONWritable {
    var id: String
    var notificationId: String
    var channel: String
    var endpointId: String?
    var state: String
    var attempts: Int
    var lastError: String?
    var providerMessageId: String?
    var createdAt: Int64
    var updatedAt: Int64

    func writeJSON(to writer: inout JSONWriter) {
        writer.objectStart()
        writer.key("id")
        writer.string(id)
        writer.key("notificationId")
        writer.string(notificationId)
        writer.key("channel")
        writer.string(channel)
        writer.key("endpointId")
        writer.string(endpointId)
        writer.key("state")
        writer.string(state)
        writer.key("attempts")
        writer.int(attempts)
        writer.key("lastError")
        writer.string(lastError)
        writer.key("providerMessageId")
        writer.string(providerMessageId)
        writer.key("createdAt")
        writer.timestamp(milliseconds: createdAt)
        writer.key("updatedAt")
        writer.timestamp(milliseconds: updatedAt)
        writer.objectEnd()
    }

    static let columns = "id, notification_id, channel, endpoint_id, state, attempts, last_error, provider_message_id, created_at, updated_at"

    static func from(_ row: any SQLRow) throws -> Delivery {
        Delivery(
            id: try row.decode(column: "id", as: String.self), notificationId: try row.decode(column: "notification_id", as: String.self),
            channel: try row.decode(column: "channel", as: String.self), endpointId: try row.decode(column: "endpoint_id", as: String?.self),
            state: try row.decode(column: "state", as: String.self), attempts: try row.decode(column: "attempts", as: Int.self),
            lastError: try row.decode(column: "last_error", as: String?.self),
            providerMessageId: try row.decode(column: "provider_message_id", as: String?.self),
            createdAt: try row.decode(column: "created_at", as: Int64.self),
            updatedAt: try row.decode(column: "updated_at", as: Int64.self))
    }
}

/// `{"items": [...]}` without a cursor.
struct ItemList<Item: JSONWritable>: JSONWritable {
    var items: [Item]

    func writeJSON(to writer: inout JSONWriter) {
        writer.objectStart()
        writer.key("items")
        writer.arrayStart()
        for item in items { item.writeJSON(to: &writer) }
        writer.arrayEnd()
        writer.objectEnd()
    }
}

/// Standard Webhooks signatures (https://www.standardwebhooks.com): the secret is `whsec_`
/// followed by base64 key bytes; `webhook-signature` is `v1,` + base64(HMAC-SHA256(key,
/// "<webhook-id>.<webhook-timestamp>.<body>")).
public enum WebhookSignature {
    /// A new secret: `whsec_` + base64 of 32 random bytes.
    public static func makeSecret() -> String {
        "whsec_" + Data(SymmetricKey(size: .bits256).withUnsafeBytes { Array($0) }).base64EncodedString()
    }

    /// The `webhook-signature` header value for a message.
    public static func sign(secret: String, id: String, timestamp: Int64, body: String) -> String {
        let keyText = secret.hasPrefix("whsec_") ? String(secret.dropFirst(6)) : secret
        let key = SymmetricKey(data: Data(base64Encoded: keyText) ?? Data(keyText.utf8))
        let mac = HMAC<SHA256>.authenticationCode(for: Data("\(id).\(timestamp).\(body)".utf8), using: key)
        return "v1," + Data(mac).base64EncodedString()
    }
}

/// Refuses webhook targets on loopback, link-local, private, shared or unspecified addresses
/// (SSRF), unless the operator allows them.
enum AddressPolicy {
    /// True when every address `host` resolves to is public.
    static func isPublic(host: String) async -> Bool {
        await publicAddress(host: host) != nil
    }

    /// The first address `host` resolves to (as text) when every one of them is public, else
    /// nil (also when it does not resolve). Connecting to this very address, rather than
    /// resolving again, is what makes the check hold (a name that resolves to a public address
    /// for the check and to a private one for the connection is DNS rebinding).
    static func publicAddress(host: String) async -> String? {
        let addresses: [SocketAddress]
        do {
            addresses = try await NIOThreadPool.singleton.runIfActive {
                try Self.resolve(bare(host))
            }
        } catch {
            return nil
        }
        guard !addresses.isEmpty, addresses.allSatisfy(isPublic) else { return nil }
        return addresses.first?.ipAddress
    }

    /// A URL host without the brackets of an IPv6 literal.
    static func bare(_ host: String) -> String {
        host.hasPrefix("[") && host.hasSuffix("]") ? String(host.dropFirst().dropLast()) : host
    }

    static func resolve(_ host: String) throws -> [SocketAddress] {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, nil, &hints, &result) == 0, let first = result else { return [] }
        defer { freeaddrinfo(result) }
        var addresses: [SocketAddress] = []
        var cursor: UnsafeMutablePointer<addrinfo>? = first
        while let info = cursor {
            if let address = info.pointee.ai_addr {
                if info.pointee.ai_family == AF_INET {
                    address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { addresses.append(SocketAddress($0.pointee, host: host)) }
                } else if info.pointee.ai_family == AF_INET6 {
                    address.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { addresses.append(SocketAddress($0.pointee, host: host)) }
                }
            }
            cursor = info.pointee.ai_next
        }
        return addresses
    }

    static func isPublic(_ address: SocketAddress) -> Bool {
        switch address {
        case .v4(let v4):
            let value = UInt32(bigEndian: v4.address.sin_addr.s_addr)
            let a = value >> 24
            let b = (value >> 16) & 0xFF
            if a == 0 || a == 10 || a == 127 { return false }  // unspecified, private, loopback
            if a == 169 && b == 254 { return false }  // link-local (cloud metadata)
            if a == 172 && (16...31).contains(b) { return false }
            if a == 192 && b == 168 { return false }
            if a == 100 && (64...127).contains(b) { return false }  // shared address space (RFC 6598)
            if a >= 224 { return false }  // multicast, reserved, broadcast
            return true
        case .v6(let v6):
            let bytes = withUnsafeBytes(of: v6.address.sin6_addr) { Array($0) }
            if bytes.allSatisfy({ $0 == 0 }) { return false }  // ::
            if bytes[0..<15].allSatisfy({ $0 == 0 }) && bytes[15] == 1 { return false }  // ::1
            if bytes[0] == 0xFE && (bytes[1] & 0xC0) == 0x80 { return false }  // fe80::/10
            if (bytes[0] & 0xFE) == 0xFC { return false }  // fc00::/7
            if bytes[0] == 0xFF { return false }  // multicast
            if bytes[0..<10].allSatisfy({ $0 == 0 }) && bytes[10] == 0xFF && bytes[11] == 0xFF {  // IPv4-mapped
                let v4 = UInt32(bytes[12]) << 24 | UInt32(bytes[13]) << 16 | UInt32(bytes[14]) << 8 | UInt32(bytes[15])
                var raw = sockaddr_in()
                raw.sin_family = sa_family_t(AF_INET)
                raw.sin_addr.s_addr = v4.bigEndian
                return isPublic(SocketAddress(raw, host: ""))
            }
            return true
        default:
            return false
        }
    }
}

/// HTTP clients that connect to one checked address of one host (DNS pinning; TLS still
/// verifies the certificate for the host name), kept for connection reuse and shut down
/// after five idle minutes or when more than 64 are open (the least recently used first).
final class PinnedClients: Sendable {
    static let shared = PinnedClients()
    static let capacity = 64
    static let idleTime: Duration = .seconds(300)

    private struct Entry {
        var client: HTTPClient
        var lastUsed: ContinuousClock.Instant
    }
    private let entries = Mutex<[String: Entry]>([:])

    /// The client whose connections to `host` go to `address`.
    func client(host: String, address: String) -> HTTPClient {
        let key = host + "|" + address
        let (client, retired) = entries.withLock { entries -> (HTTPClient, [HTTPClient]) in
            let now = ContinuousClock.now
            if var entry = entries[key] {
                entry.lastUsed = now
                entries[key] = entry
                return (entry.client, [])
            }
            var retired: [HTTPClient] = []
            for (key, entry) in entries where now - entry.lastUsed > Self.idleTime {
                retired.append(entry.client)
                entries[key] = nil
            }
            if entries.count >= Self.capacity, let oldest = entries.min(by: { $0.value.lastUsed < $1.value.lastUsed }) {
                retired.append(oldest.value.client)
                entries[oldest.key] = nil
            }
            var configuration = HTTPClient.Configuration()
            configuration.redirectConfiguration = .disallow
            configuration.timeout = .init(connect: .seconds(5), read: .seconds(10))
            configuration.dnsOverride = [host: address]
            let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
            entries[key] = Entry(client: client, lastUsed: now)
            return (client, retired)
        }
        // A retired client may still carry a request: it is shut down after any timeout.
        for old in retired {
            Task {
                try? await Task.sleep(for: .seconds(30))
                try? await old.shutdown()
            }
        }
        return client
    }
}

/// Outbound channels: plans deliveries in the publishing transaction (one record and one job
/// per recipient and webhook endpoint, per recipient for email, per recipient and device for
/// push) and runs them as jobs with the job system's retries, backoff and dead letters.
/// Email and push go through the tenant's configured ``NotificationProvider`` adapters.
public final class OutboundChannels: Sendable {
    let center: Notifier
    let jobs: JobQueue
    let preferences: PreferenceStore
    let logger: Logger
    let credentials = CredentialCache()

    /// One process-wide client (like `HTTPClient.shared`, which lives for the whole process and
    /// needs no shutdown), configured not to follow redirects: a redirect could point anywhere.
    static let client: HTTPClient = {
        var configuration = HTTPClient.Configuration()
        configuration.redirectConfiguration = .disallow
        configuration.timeout = .init(connect: .seconds(5), read: .seconds(10))
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }()

    /// The job kind that delivers one webhook.
    static let webhookKind = "notifications.webhook"
    /// The job kind that sends one email.
    static let emailKind = "notifications.email"
    /// The job kind that sends one push notification to one device.
    static let pushKind = "notifications.push"

    /// Creates the channels and registers their job handler and publish hook.
    public init(center: Notifier, jobs: JobQueue, logger: Logger) {
        self.center = center
        self.jobs = jobs
        self.preferences = PreferenceStore(database: center.store.database)
        self.logger = logger
        jobs.register(kind: Self.webhookKind) { [weak self] context in
            guard let self else { throw PermanentJobError("notifications are shutting down") }
            try await self.deliverWebhook(context)
        }
        for kind in [Self.emailKind, Self.pushKind] {
            jobs.register(kind: kind) { [weak self] context in
                guard let self else { throw PermanentJobError("notifications are shutting down") }
                try await self.deliverThroughProvider(context)
            }
        }
        center.hooks.add { [weak self] rows, draft, preferences, db in
            try await self?.plan(rows, draft: draft, preferences: preferences, on: db)
        }
    }

    func endpoints(tenantId: String, on db: any SQLDatabase) async throws -> [WebhookEndpoint] {
        try await db.raw(
            "SELECT \(unsafeRaw: WebhookEndpoint.columns) FROM webhook_endpoints WHERE tenant_id = \(bind: tenantId) AND enabled = \(bind: true)"
        )
        .all().map(WebhookEndpoint.from)
    }

    /// Plans the outbound deliveries of stored (or in-app-less) notifications: webhooks to the
    /// tenant's endpoints, email when the tenant has an email provider, push to each of the
    /// recipient's devices whose platform the tenant configured — each as the recipient's
    /// preferences allow, delayed to the end of their quiet hours.
    func plan(_ rows: [StoredNotification], draft: NotificationDraft, preferences: [String: NotificationPreferences], on db: any SQLDatabase)
        async throws
    {
        guard let tenantId = rows.first?.tenantId else { return }
        let endpoints = try await endpoints(tenantId: tenantId, on: db).filter { $0.accepts(draft.type) }
        let providers = try await ProviderStore.configured(tenantId: tenantId, on: db)
        let email = providers.contains(.sendgrid)
        let pushPlatforms = providers.intersection([.fcm, .apns])
        guard !endpoints.isEmpty || email || !pushPlatforms.isEmpty else { return }
        let pushRecipients = pushPlatforms.isEmpty ? [] : rows.map(\.userId).filter { (preferences[$0] ?? .defaults).allows(draft.type, on: .push) }
        let devices = try await ProviderStore.devices(tenantId: tenantId, userIds: pushRecipients, platforms: pushPlatforms, on: db)
        let now = center.clock.milliseconds
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
                        row, channel: .webhook, endpointId: endpoint.id, payload: payload, kind: Self.webhookKind,
                        maxAttempts: center.settings.webhookMaxAttempts, runAt: runAt, dedupeKey: draft.dedupeKey, now: now, on: db)
                }
            }
            let message = JSONValue.object([
                "type": .string(row.type), "title": .string(row.title), "body": .string(row.body), "data": JSONValue(text: row.data) ?? .object([:]),
            ]).text
            if email, prefs.allows(draft.type, on: .email) {
                try await planDelivery(
                    row, channel: .email, endpointId: nil, payload: message, kind: Self.emailKind, maxAttempts: center.settings.providerMaxAttempts,
                    runAt: runAt, dedupeKey: draft.dedupeKey, now: now, on: db)
            }
            for device in devices[row.userId] ?? [] {
                try await planDelivery(
                    row, channel: .push, endpointId: device.id, payload: message, kind: Self.pushKind,
                    maxAttempts: center.settings.providerMaxAttempts, runAt: runAt, dedupeKey: draft.dedupeKey, now: now, on: db)
            }
        }
    }

    /// One delivery record and the job that carries it out, in the publishing transaction.
    /// With the draft's dedupe key, a second delivery of the same key to the same user, channel
    /// and endpoint is not planned: the inbox row's unique key stops a repeated publish (a
    /// retried broadcast page, the job-status bridge of every node) for users who keep in-app
    /// on, and this stops it for those who turned in-app off, who have no inbox row.
    private func planDelivery(
        _ row: StoredNotification, channel: NotificationChannel, endpointId: String?, payload: String, kind: String, maxAttempts: Int,
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
        var request = JobRequest(kind: kind, args: .object(["deliveryId": .string(deliveryId)]))
        request.maxAttempts = max(1, min(100, maxAttempts))
        request.queue = "notifications"
        request.runAt = runAt
        _ = try await jobs.enqueue(request, tenantId: row.tenantId, createdBy: nil, on: db)
    }

    struct DeliveryFailure: Error, CustomStringConvertible {
        var description: String
    }

    /// One attempt of one webhook delivery.
    func deliverWebhook(_ context: JobContext) async throws {
        guard let deliveryId = context.args["deliveryId"]?.string else { throw PermanentJobError("deliveryId missing") }
        let tenantId = context.job.tenantId
        let database = center.store.database
        let loaded = try await database.read { db -> (String, WebhookEndpoint?)? in
            guard
                let row = try await db.raw(
                    "SELECT payload, endpoint_id FROM notification_deliveries WHERE id = \(bind: deliveryId) AND tenant_id = \(bind: tenantId)"
                ).first()
            else { return nil }
            let endpointId = try row.decode(column: "endpoint_id", as: String?.self) ?? ""
            let endpoint = try await db.raw(
                "SELECT \(unsafeRaw: WebhookEndpoint.columns) FROM webhook_endpoints WHERE id = \(bind: endpointId) AND tenant_id = \(bind: tenantId)"
            ).first().map(WebhookEndpoint.from)
            return (try row.decode(column: "payload", as: String.self), endpoint)
        }
        guard let (payload, endpoint) = loaded else { return }  // the delivery was deleted
        guard let endpoint, endpoint.enabled else {
            try await record(deliveryId, tenantId: tenantId, state: "failed", error: "endpoint disabled or deleted", countAttempt: false)
            return
        }
        var failure: String?
        // The address checked is the address connected to (pinned), so DNS cannot swap in a
        // private one between the check and the connection.
        let client: HTTPClient
        if center.settings.allowPrivateWebhookTargets {
            client = Self.client
        } else {
            guard let host = URL(string: endpoint.url)?.host, let address = await AddressPolicy.publicAddress(host: host) else {
                try await record(deliveryId, tenantId: tenantId, state: "failed", error: "target address is not public", countAttempt: true)
                throw PermanentJobError("webhook target address is not public")
            }
            client = PinnedClients.shared.client(host: AddressPolicy.bare(host), address: address)
        }
        let timestamp = WallClock.milliseconds() / 1000
        var request = HTTPClientRequest(url: endpoint.url)
        request.method = .POST
        request.headers.add(name: "content-type", value: "application/json")
        request.headers.add(name: "user-agent", value: "Cairn-Webhooks/1")
        request.headers.add(name: "webhook-id", value: deliveryId)
        request.headers.add(name: "webhook-timestamp", value: String(timestamp))
        request.headers.add(
            name: "webhook-signature", value: WebhookSignature.sign(secret: endpoint.secret, id: deliveryId, timestamp: timestamp, body: payload))
        request.body = .bytes(ByteBuffer(string: payload))
        do {
            let response = try await client.execute(request, timeout: .init(center.settings.webhookTimeout))
            // Read (and drop) at most 64 KiB of the answer so the connection can be reused.
            _ = try? await response.body.collect(upTo: 64 * 1024)
            if (200..<300).contains(Int(response.status.code)) {
                try await record(deliveryId, tenantId: tenantId, state: "sent", error: nil, countAttempt: true)
                return
            }
            failure = "HTTP \(response.status.code)"
        } catch let error as HTTPClientError where error == .deadlineExceeded || error == .readTimeout || error == .connectTimeout {
            failure = "timeout"
        } catch {
            failure = "connection failed"
        }
        let last = context.job.attempt >= context.job.maxAttempts
        if last {
            // One transaction: a reader never sees the dead letter without its count (or the
            // endpoint still enabled after its last allowed one), and a crash cannot split them.
            let error = failure
            let limit = center.settings.webhookDisableAfter
            try await center.store.database.transaction { db in
                try await Self.record(deliveryId, tenantId: tenantId, state: "failed", error: error, countAttempt: true, on: db)
                try await Self.deadLetter(endpoint, limit: limit, on: db)
            }
            logger.warning("webhook delivery dead-lettered", metadata: ["endpoint_id": .string(endpoint.id)])
        } else {
            try await record(deliveryId, tenantId: tenantId, state: "pending", error: failure, countAttempt: true)
        }
        throw DeliveryFailure(description: "webhook delivery failed: \(failure ?? "?")")
    }

    func record(_ deliveryId: String, tenantId: String, state: String, error: String?, countAttempt: Bool) async throws {
        try await center.store.database.write { db in
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

    /// Counts a dead letter; disables the endpoint at the limit.
    static func deadLetter(_ endpoint: WebhookEndpoint, limit: Int, on db: any SQLDatabase) async throws {
        let now = WallClock.milliseconds()
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

/// `/webhooks` (admins) and `/users/me/notification-preferences`, `/notifications/{id}/deliveries`.
public struct ChannelsController: Sendable {
    let channels: OutboundChannels

    /// Creates the controller.
    public init(channels: OutboundChannels) {
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
        if !channels.center.settings.allowPrivateWebhookTargets, await !AddressPolicy.isPublic(host: host) {
            throw AppError.invalidField("url", "must resolve to public addresses (loopback, link-local and private ranges are refused)")
        }
    }

    /// Adds the routes.
    public func addRoutes(to group: RouterGroup<AuthenticatedContext>) {
        let channels = self.channels
        let database = channels.center.store.database
        group.post("webhooks") { request, context -> Response in
            try context.identity.requireAdmin()
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
            try await database.write { [endpoint] db in
                try await db.raw(
                    """
                    INSERT INTO webhook_endpoints (\(unsafeRaw: WebhookEndpoint.columns), disabled_at) VALUES (\(bind: endpoint.id), \(bind: endpoint.tenantId),
                        \(bind: endpoint.url), \(bind: typesJSON), \(bind: endpoint.secret), \(bind: true), 0, \(bind: endpoint.createdAt), NULL)
                    """
                ).run()
            }
            endpoint.showSecret = true
            return .json(endpoint, status: .created, headers: [.location: "/webhooks/\(endpoint.id)"])
        }
        group.get("webhooks") { _, context -> Response in
            try context.identity.requireAdmin()
            let tenantId = context.identity.tenantId
            let items = try await database.read { db in
                try await db.raw(
                    "SELECT \(unsafeRaw: WebhookEndpoint.columns) FROM webhook_endpoints WHERE tenant_id = \(bind: tenantId) ORDER BY id LIMIT 100"
                ).all().map(WebhookEndpoint.from)
            }
            return .json(ItemList(items: items))
        }
        group.delete("webhooks/:id") { _, context -> Response in
            try context.identity.requireAdmin()
            let id = try context.parameters.require("id")
            let tenantId = context.identity.tenantId
            let deleted = try await database.write { db in
                try await db.raw("DELETE FROM webhook_endpoints WHERE id = \(bind: id) AND tenant_id = \(bind: tenantId) RETURNING id").first() != nil
            }
            guard deleted else { throw AppError.notFound("No such webhook endpoint.") }
            return Response(status: .noContent)
        }
        group.get("notifications/:id/deliveries") { _, context -> Response in
            let id = try context.parameters.require("id")
            let identity = context.identity
            guard UUIDv7.isValid(id) else { throw AppError.notFound("No such notification.") }
            let items = try await database.read { db in
                try await db.raw(
                    """
                    SELECT \(unsafeRaw: Delivery.columns) FROM notification_deliveries
                    WHERE tenant_id = \(bind: identity.tenantId) AND notification_id = \(bind: id) AND user_id = \(bind: identity.userId) ORDER BY id
                    """
                ).all().map(Delivery.from)
            }
            if items.isEmpty, try await channels.center.store.notification(id: id, tenantId: identity.tenantId, userId: identity.userId) == nil {
                throw AppError.notFound("No such notification.")
            }
            return .json(ItemList(items: items))
        }
        group.get("users/me/notification-preferences") { _, context -> Response in
            let preferences = try await channels.preferences.preferences(tenantId: context.identity.tenantId, userId: context.identity.userId)
            return try .json(encodable: preferences)
        }
        group.put("users/me/notification-preferences") { request, context -> Response in
            var request = request
            let preferences = try await request.decodeJSON(as: NotificationPreferences.self, context: context)
            try preferences.validate()
            try await channels.preferences.save(preferences, tenantId: context.identity.tenantId, userId: context.identity.userId)
            return try .json(encodable: preferences)
        }
    }
}
