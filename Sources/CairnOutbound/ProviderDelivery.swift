import CairnAccounts
import CairnHTTP
import CairnJobs
import CairnNotifications
import CairnStorage
import Crypto
import Foundation
import Logging
import SQLKit

extension OutboundChannels {
    /// The adapter for a tenant's provider, built from its stored settings; nil when the
    /// provider is not (or no longer) configured.
    func provider(_ name: ProviderName, tenantId: String) async throws -> (any NotificationProvider)? {
        let secrets = secrets
        guard
            let record = try await database.read({ db in
                try await ProviderStore.settings(tenantId: tenantId, provider: name, secrets: secrets, on: db)
            })
        else { return nil }
        let endpoints = settings.providers
        let client = http.providerClient(caFile: endpoints.caFile)
        // Cached credentials are keyed by the settings themselves, so new keys take effect at once.
        let cacheKey = tenantId + ":" + SHA256.hash(data: Data(record.config.utf8)).map { String(format: "%02x", $0) }.joined()
        let decoder = JSONDecoder()
        let data = Data(record.config.utf8)
        switch name {
        case .sendgrid:
            return SendGridProvider(config: try decoder.decode(SendGridConfig.self, from: data), endpoints: endpoints, client: client)
        case .fcm:
            return FCMProvider(
                config: try decoder.decode(FCMConfig.self, from: data), endpoints: endpoints, client: client, cache: credentials, cacheKey: cacheKey)
        case .apns:
            return APNsProvider(
                config: try decoder.decode(APNsConfig.self, from: data), endpoints: endpoints, client: client, cache: credentials, cacheKey: cacheKey)
        case .twilio:
            return TwilioProvider(config: try decoder.decode(TwilioConfig.self, from: data), endpoints: endpoints, client: client)
        }
    }

    /// One attempt of the email, push or SMS delivery `deliveryId`: resolves the address (the user's
    /// current email or phone; the device's token), sends through the tenant's provider and records the outcome.
    /// Transient failures throw, so the job system retries with backoff until the last attempt
    /// (then the delivery is `failed`, a dead letter); a refusal fails at once; a device the
    /// provider no longer knows is unregistered.
    func deliverThroughProvider(_ deliveryId: String, context: JobContext) async throws {
        let tenantId = context.job.tenantId
        let database = database
        guard
            let row = try await database.read({ db in
                try await db.raw(
                    """
                    SELECT notification_id, user_id, channel, endpoint_id, payload FROM notification_deliveries
                    WHERE id = \(bind: deliveryId) AND tenant_id = \(bind: tenantId)
                    """
                ).first()
            })
        else { return }  // the delivery was deleted with its notification
        let channel = try row.decode(column: "channel", as: String.self)
        let userId = try row.decode(column: "user_id", as: String.self)
        let payload = JSONValue(text: try row.decode(column: "payload", as: String.self)) ?? .object([:])
        var message = OutboundMessage(
            notificationId: try row.decode(column: "notification_id", as: String.self), deliveryId: deliveryId, type: payload["type"]?.string ?? "",
            title: payload["title"]?.string ?? "", body: payload["body"]?.string ?? "", data: payload["data"] ?? .object([:]))

        // The type's template for the channel, rendered whole before anything is sent: a
        // variable the notification lacks fails the delivery (a dead letter), never half a message.
        do {
            message = try await rendered(message, channel: channel, tenantId: tenantId, userId: userId)
        } catch let failure as any TemplateRenderError {
            let why = failure.reason
            try await record(deliveryId, tenantId: tenantId, state: "failed", error: why, countAttempt: true)
            throw PermanentJobError(why)
        }
        let providerName: ProviderName
        let address: String
        let deviceId: String?
        switch try await recipient(
            channel: channel, userId: userId, endpointId: try row.decode(column: "endpoint_id", as: String?.self), tenantId: tenantId)
        {
        case .unreachable(let why):
            try await record(deliveryId, tenantId: tenantId, state: "failed", error: why, countAttempt: false)
            return
        case .found(let name, let to, let device):
            (providerName, address, deviceId) = (name, to, device)
        }
        guard let provider = try await provider(providerName, tenantId: tenantId) else {
            try await record(
                deliveryId, tenantId: tenantId, state: "failed", error: "\(providerName.rawValue) is not configured", countAttempt: false)
            return
        }
        // A send cut by the node's shutdown is no attempt: the job goes back untouched.
        let outcome = try await provider.send(message, to: address).unlessCancelled()
        switch outcome {
        case .sent(let messageId):
            try await record(deliveryId, tenantId: tenantId, state: "sent", error: nil, countAttempt: true, providerMessageId: messageId)
        case .rejected(let why):
            try await record(deliveryId, tenantId: tenantId, state: "failed", error: why, countAttempt: true)
            throw PermanentJobError("\(providerName.rawValue) refused the delivery: \(why)")
        case .recipientGone(let why):
            try await database.transaction { [deviceId] db in
                try await Self.record(
                    deliveryId, tenantId: tenantId, state: "failed", error: "device unregistered: \(why)", countAttempt: true, on: db)
                if let deviceId { try await ProviderStore.deleteDevice(id: deviceId, tenantId: tenantId, userId: nil, on: db) }
            }
            logger.info("push device unregistered by its provider", metadata: ["provider": .string(providerName.rawValue)])
        case .retry(let why):
            let last = context.job.attempt >= context.job.maxAttempts
            try await record(deliveryId, tenantId: tenantId, state: last ? "failed" : "pending", error: why, countAttempt: true)
            throw DeliveryFailure(description: "\(providerName.rawValue) delivery failed: \(why)")
        }
    }

    /// Where an email, SMS or push to `userId` goes now: the user's current email or phone (a
    /// number changed or removed after publishing counts; Accounts owns both), or the device
    /// `endpointId`'s token.
    enum Recipient {
        /// The provider and the address (the device, for push).
        case found(ProviderName, address: String, deviceId: String?)
        /// Why there is no address any more.
        case unreachable(String)
    }

    /// See ``Recipient``.
    func recipient(channel: String, userId: String, endpointId: String?, tenantId: String) async throws -> Recipient {
        if channel == NotificationChannel.email.rawValue {
            guard let user = try await accounts.store.user(id: userId, tenantId: tenantId) else { return .unreachable("the user no longer exists") }
            return .found(.sendgrid, address: user.email, deviceId: nil)
        }
        if channel == NotificationChannel.sms.rawValue {
            guard let user = try await accounts.store.user(id: userId, tenantId: tenantId), let phone = user.phone else {
                return .unreachable("the user has no phone number")
            }
            return .found(.twilio, address: phone, deviceId: nil)
        }
        let database = database
        guard let device = try await database.read({ db in try await ProviderStore.device(id: endpointId ?? "", tenantId: tenantId, on: db) }),
            device.userId == userId
        else { return .unreachable("the device is no longer registered") }
        return .found(device.platform, address: device.token, deviceId: device.id)
    }

    /// `message` rendered through its type's template for `channel` (email subject, text and
    /// html; SMS text; push title and body), or as it is when the type has none for the channel.
    /// - Throws: ``TemplateRenderError``.
    func rendered(_ message: OutboundMessage, channel: String, tenantId: String, userId: String) async throws -> OutboundMessage {
        guard let templateChannel = TemplateChannel(rawValue: channel),
            let parts = try await renderTemplate(
                type: message.type, channel: templateChannel, digest: false, tenantId: tenantId, userId: userId,
                context: { TemplateRenderer.context(title: message.title, body: message.body, data: message.data) })
        else { return message }
        return message.applying(parts, channel: templateChannel, digest: false)
    }

    /// The rendered parts of `type`'s template for `channel` (its digest parts when `digest`),
    /// in the variant of the user's profile `locale` (then its shorter tags, then `default`); nil
    /// when the type has no template for the channel. `context` is built only when there is one.
    /// - Throws: ``TemplateRenderError``.
    func renderTemplate(
        type: String, channel: TemplateChannel, digest: Bool, tenantId: String, userId: String, context: () -> [String: Any]
    ) async throws -> [String: String]? {
        guard let (template, _, _) = try await database.read({ db in try await TemplateStore.get(tenantId: tenantId, type: type, on: db) })
        else { return nil }
        let locale = try await accounts.store.user(id: userId, tenantId: tenantId)?.locale
        return try TemplateRenderer.render(template, channel: channel, locale: locale, context: context(), digest: digest)?.parts
    }

    func record(_ deliveryId: String, tenantId: String, state: String, error: String?, countAttempt: Bool, providerMessageId: String?) async throws {
        let now = WallClock.milliseconds()
        try await database.write { db in
            try await db.raw(
                """
                UPDATE notification_deliveries SET state = \(bind: state), last_error = COALESCE(\(bind: error), last_error), updated_at = \(bind: now),
                    attempts = attempts + \(bind: countAttempt ? 1 : 0), provider_message_id = \(bind: providerMessageId)
                WHERE id = \(bind: deliveryId) AND tenant_id = \(bind: tenantId)
                """
            ).run()
        }
    }
}

extension OutboundMessage {
    /// The message with a template's rendered parts in place of its own: email subject, text and
    /// html; SMS text (an SMS has no subject); push title and body. A part the template lacks
    /// keeps the message's own. `digest` reads the digest parts (`digestSubject`, …).
    func applying(_ parts: [String: String], channel: TemplateChannel, digest: Bool) -> OutboundMessage {
        func part(_ name: String) -> String? { parts[digest ? TemplateChannel.digestPart(name) : name] }
        var message = self
        switch channel {
        case .email:
            message.title = part("subject") ?? title
            message.body = part("text") ?? body
            message.html = part("html")
        case .sms:
            if let text = part("text") {
                message.title = ""
                message.body = text
            }
        case .push:
            message.title = part("title") ?? title
            message.body = part("body") ?? body
        }
        return message
    }
}
