import CairnAccounts
package import CairnHTTP
package import CairnNotifications
import CairnStorage
import Crypto
import Foundation
import HTTPTypes
package import Hummingbird
import JWTKit
import NIOCore
import SQLKit

/// The provider adapters a tenant can configure, by name.
package enum ProviderName: String, Sendable, CaseIterable {
    /// Email through a SendGrid-compatible v3 Mail Send API.
    case sendgrid
    /// Push to Android, web and iOS apps through Firebase Cloud Messaging HTTP v1.
    case fcm
    /// Push to Apple devices through APNs over HTTP/2.
    case apns
    /// SMS through a Twilio-compatible Programmable Messaging API.
    case twilio

    /// The channel the provider serves.
    package var channel: NotificationChannel {
        switch self {
        case .sendgrid: .email
        case .fcm, .apns: .push
        case .twilio: .sms
        }
    }
}

/// A tenant's stored provider settings; the secret parts never leave the server.
struct ProviderSettingsRecord: Sendable, JSONWritable {
    var provider: ProviderName
    var config: String
    var createdAt: Int64
    var updatedAt: Int64

    /// The settings without their secrets (API key, private keys).
    func writeJSON(to writer: inout JSONWriter) {
        writer.objectStart()
        writer.field("provider", provider.rawValue)
        writer.field("channel", provider.channel.rawValue)
        writer.key("settings")
        writer.objectStart()
        writeShownSettings(to: &writer)
        writer.objectEnd()
        writer.field("createdAt", timestamp: createdAt)
        writer.field("updatedAt", timestamp: updatedAt)
        writer.objectEnd()
    }

    /// The members of `settings`: what identifies the account, and of a secret only its ending;
    /// none when the stored settings do not decode.
    private func writeShownSettings(to writer: inout JSONWriter) {
        let data = Data(config.utf8)
        let decoder = JSONDecoder()
        switch provider {
        case .sendgrid:
            guard let config = try? decoder.decode(SendGridConfig.self, from: data) else { return }
            writer.field("fromEmail", config.fromEmail)
            writer.field("fromName", config.fromName)
            writer.field("apiKey", Self.ending(of: config.apiKey))
        case .fcm:
            guard let config = try? decoder.decode(FCMConfig.self, from: data) else { return }
            writer.field("projectId", config.projectId)
            writer.field("clientEmail", config.clientEmail)
            writer.field("privateKeyId", config.privateKeyId)
        case .apns:
            guard let config = try? decoder.decode(APNsConfig.self, from: data) else { return }
            writer.field("teamId", config.teamId)
            writer.field("keyId", config.keyId)
            writer.field("topic", config.topic)
            writer.field("environment", config.environment)
        case .twilio:
            guard let config = try? decoder.decode(TwilioConfig.self, from: data) else { return }
            writer.field("accountSid", config.accountSid)
            writer.field("from", config.from)
            writer.field("authToken", Self.ending(of: config.authToken))
        }
    }

    /// `…` and the last 4 characters of a secret: they identify a real one (SendGrid's keys are
    /// tens of characters, Twilio's tokens 32); a short one would be shown whole, so it shows `…`.
    static func ending(of secret: String) -> String {
        secret.count >= 16 ? "…" + secret.suffix(4) : "…"
    }

    /// What the settings (API keys, private keys) are sealed for (``SecretBox``'s additional data).
    static let configPurpose = "provider.config"

    /// The settings in `row`, opened with `secrets` (a plaintext row the start-up sealing step
    /// has not reached yet reads as it is); nil for an unknown provider.
    /// - Throws: a decoding error, or `MasterKeyError` when the settings do not open.
    static func from(_ row: any SQLRow, secrets: SecretBox) throws -> ProviderSettingsRecord? {
        guard let provider = ProviderName(rawValue: try row.decode(column: "provider", as: String.self)) else { return nil }
        return ProviderSettingsRecord(
            provider: provider, config: try secrets.openOrPlain(try row.decode(column: "config", as: String.self), purpose: configPurpose),
            createdAt: try row.decode(column: "created_at", as: Int64.self), updatedAt: try row.decode(column: "updated_at", as: Int64.self))
    }
}

/// A device registered for push: an FCM registration token or an APNs device token.
struct PushDevice: Sendable, JSONWritable {
    var id: String
    var tenantId: String
    var userId: String
    var platform: ProviderName
    var token: String
    var createdAt: Int64
    var lastSeenAt: Int64

    /// The token is not echoed whole: its last 8 characters identify it to its owner.
    func writeJSON(to writer: inout JSONWriter) {
        writer.objectStart()
        writer.field("id", id)
        writer.field("platform", platform.rawValue)
        writer.field("tokenEnding", String(token.suffix(8)))
        writer.field("createdAt", timestamp: createdAt)
        writer.field("lastSeenAt", timestamp: lastSeenAt)
        writer.objectEnd()
    }

    static let columns = "id, tenant_id, user_id, platform, token, created_at, last_seen_at"

    static func from(_ row: any SQLRow) throws -> PushDevice? {
        guard let platform = ProviderName(rawValue: try row.decode(column: "platform", as: String.self)) else { return nil }
        return PushDevice(
            id: try row.decode(column: "id", as: String.self), tenantId: try row.decode(column: "tenant_id", as: String.self),
            userId: try row.decode(column: "user_id", as: String.self), platform: platform, token: try row.decode(column: "token", as: String.self),
            createdAt: try row.decode(column: "created_at", as: Int64.self), lastSeenAt: try row.decode(column: "last_seen_at", as: Int64.self))
    }
}

/// A row written a moment ago could not be read back.
struct StoreInconsistency: Error {}

/// Provider settings and device registrations in the database.
enum ProviderStore {
    /// Devices kept per user; registering one more forgets the least recently seen.
    static let devicesPerUser = 20

    static func settings(tenantId: String, provider: ProviderName, secrets: SecretBox, on db: any SQLDatabase) async throws
        -> ProviderSettingsRecord?
    {
        try await db.raw(
            """
            SELECT provider, config, created_at, updated_at FROM notification_providers
            WHERE tenant_id = \(bind: tenantId) AND provider = \(bind: provider.rawValue)
            """
        ).first().flatMap { try ProviderSettingsRecord.from($0, secrets: secrets) }
    }

    static func all(tenantId: String, secrets: SecretBox, on db: any SQLDatabase) async throws -> [ProviderSettingsRecord] {
        try await db.raw(
            "SELECT provider, config, created_at, updated_at FROM notification_providers WHERE tenant_id = \(bind: tenantId) ORDER BY provider"
        ).all().compactMap { try ProviderSettingsRecord.from($0, secrets: secrets) }
    }

    static func put(tenantId: String, provider: ProviderName, config: String, secrets: SecretBox, on db: any SQLDatabase) async throws
        -> ProviderSettingsRecord?
    {
        // The same settings again change nothing: no write, so `updatedAt` stays. Compared
        // opened, since each sealing of the same text differs.
        if let current = try await settings(tenantId: tenantId, provider: provider, secrets: secrets, on: db), current.config == config {
            return current
        }
        let now = WallClock.milliseconds()
        let sealed = secrets.seal(config, purpose: ProviderSettingsRecord.configPurpose)
        try await db.raw(
            """
            INSERT INTO notification_providers (tenant_id, provider, config, created_at, updated_at)
            VALUES (\(bind: tenantId), \(bind: provider.rawValue), \(bind: sealed), \(bind: now), \(bind: now))
            ON CONFLICT (tenant_id, provider) DO UPDATE SET config = excluded.config, updated_at = excluded.updated_at
            """
        ).run()
        return try await settings(tenantId: tenantId, provider: provider, secrets: secrets, on: db)
    }

    static func delete(tenantId: String, provider: ProviderName, on db: any SQLDatabase) async throws -> Bool {
        try await db.raw(
            "DELETE FROM notification_providers WHERE tenant_id = \(bind: tenantId) AND provider = \(bind: provider.rawValue) RETURNING provider"
        ).first() != nil
    }

    /// Registers `token` for the user in their tenant. The same user registering it again keeps
    /// its registration (not new); a token another user of the tenant had (the device changed
    /// hands) becomes a new registration of this user, so nothing of the other user's shows.
    /// Tenants never share a registration: their apps are their own FCM projects or bundle ids.
    /// Returns the device and whether it is new.
    static func register(
        tenantId: String, userId: String, platform: ProviderName, token: String, on db: any SQLDatabase
    ) async throws -> (PushDevice, created: Bool) {
        let now = WallClock.milliseconds()
        let newId = UUIDv7.make()
        try await db.raw(
            """
            DELETE FROM notification_devices
            WHERE tenant_id = \(bind: tenantId) AND platform = \(bind: platform.rawValue) AND token = \(bind: token) AND user_id <> \(bind: userId)
            """
        ).run()
        let row = try await db.raw(
            """
            INSERT INTO notification_devices (\(unsafeRaw: PushDevice.columns))
            VALUES (\(bind: newId), \(bind: tenantId), \(bind: userId), \(bind: platform.rawValue), \(bind: token), \(bind: now), \(bind: now))
            ON CONFLICT (tenant_id, platform, token) DO UPDATE SET last_seen_at = excluded.last_seen_at
            RETURNING \(unsafeRaw: PushDevice.columns)
            """
        ).first()
        guard let row, let device = try PushDevice.from(row) else { throw StoreInconsistency() }
        // Keep the newest devicesPerUser registrations of this user.
        try await db.raw(
            """
            DELETE FROM notification_devices WHERE tenant_id = \(bind: tenantId) AND user_id = \(bind: userId) AND id NOT IN (
                SELECT id FROM notification_devices WHERE tenant_id = \(bind: tenantId) AND user_id = \(bind: userId)
                ORDER BY last_seen_at DESC, id DESC LIMIT \(bind: devicesPerUser))
            """
        ).run()
        return (device, device.id == newId)
    }

    static func devices(tenantId: String, userId: String, on db: any SQLDatabase) async throws -> [PushDevice] {
        try await db.raw(
            """
            SELECT \(unsafeRaw: PushDevice.columns) FROM notification_devices
            WHERE tenant_id = \(bind: tenantId) AND user_id = \(bind: userId) ORDER BY id
            """
        ).all().compactMap(PushDevice.from)
    }

    /// The devices of `userIds` on `platforms`, by user.
    static func devices(
        tenantId: String, userIds: [String], platforms: Set<ProviderName>, on db: any SQLDatabase
    ) async throws -> [String: [PushDevice]] {
        guard !userIds.isEmpty, !platforms.isEmpty else { return [:] }
        var query = SQLQueryString(
            "SELECT \(unsafeRaw: PushDevice.columns) FROM notification_devices WHERE tenant_id = \(bind: tenantId) AND user_id IN (")
        for (index, userId) in userIds.enumerated() {
            if index > 0 { query.appendLiteral(", ") }
            query.appendInterpolation(bind: userId)
        }
        query.appendLiteral(") ORDER BY id")
        var byUser: [String: [PushDevice]] = [:]
        for row in try await db.raw(query).all() {
            guard let device = try PushDevice.from(row), platforms.contains(device.platform) else { continue }
            byUser[device.userId, default: []].append(device)
        }
        return byUser
    }

    static func device(id: String, tenantId: String, on db: any SQLDatabase) async throws -> PushDevice? {
        try await db.raw(
            "SELECT \(unsafeRaw: PushDevice.columns) FROM notification_devices WHERE id = \(bind: id) AND tenant_id = \(bind: tenantId)"
        ).first().flatMap(PushDevice.from)
    }

    @discardableResult
    static func deleteDevice(id: String, tenantId: String, userId: String?, on db: any SQLDatabase) async throws -> Bool {
        var query = SQLQueryString("DELETE FROM notification_devices WHERE id = \(bind: id) AND tenant_id = \(bind: tenantId)")
        if let userId { query.appendInterpolation(unsafeRaw: " AND user_id = "); query.appendInterpolation(bind: userId) }
        query.appendLiteral(" RETURNING id")
        return try await db.raw(query).first() != nil
    }
}

/// Validation of the provider settings a tenant admin sends.
enum ProviderSettingsInput {
    struct SendGridBody: Decodable {
        var apiKey: String
        var fromEmail: String
        var fromName: String?
    }

    /// A Google service account key file, as downloaded (snake_case), or its fields; the file's
    /// other fields (`type`, `token_uri`, …) are accepted and not stored.
    struct ServiceAccount: Decodable, AllowsUnknownFields {
        var project_id: String
        var client_email: String
        var private_key: String
        var private_key_id: String?
    }

    struct FCMBody: Decodable {
        var serviceAccount: ServiceAccount
    }

    struct TwilioBody: Decodable {
        var accountSid: String
        var authToken: String
        var from: String
    }

    struct APNsBody: Decodable {
        var teamId: String
        var keyId: String
        var privateKey: String
        var topic: String
        var environment: String?
    }

    /// The settings to store (JSON text) for `provider` from a request body.
    /// - Throws: 400 `invalid_input` naming every bad field.
    static func config(for provider: ProviderName, raw: JSONValue) throws -> String {
        // Types first, every field at once (a Decodable stops at the first wrong one).
        let typeIssues: [FieldIssue]
        switch provider {
        case .sendgrid:
            typeIssues = stringFieldIssues(raw, [("apiKey", true), ("fromEmail", true), ("fromName", false)])
        case .fcm:
            typeIssues =
                raw["serviceAccount"] == nil || raw["serviceAccount"] == .null
                ? [FieldIssue(field: "serviceAccount", issue: "is required")]
                : stringFieldIssues(
                    raw["serviceAccount"]!, [("project_id", true), ("client_email", true), ("private_key", true), ("private_key_id", false)],
                    prefix: "serviceAccount.")
        case .apns:
            typeIssues = stringFieldIssues(
                raw, [("teamId", true), ("keyId", true), ("privateKey", true), ("topic", true), ("environment", false)])
        case .twilio:
            typeIssues = stringFieldIssues(raw, [("accountSid", true), ("authToken", true), ("from", true)])
        }
        if !typeIssues.isEmpty { throw withValueIssues(typeIssues, raw: raw) { _ = try checkedConfig(for: provider, body: $0) } }
        return try checkedConfig(for: provider, body: ByteBuffer(string: raw.text))
    }

    /// `typeIssues`, and the value issues `check` finds in the other fields once the fields at
    /// fault hold placeholders: one answer for both kinds.
    static func withValueIssues(_ typeIssues: [FieldIssue], raw: JSONValue, check: (ByteBuffer) throws -> Void) -> AppError {
        var issues = typeIssues
        if let patched = placeholders(raw, for: typeIssues) {
            issues += fieldIssues { try check(ByteBuffer(string: patched.text)) }.filter { found in !typeIssues.contains { $0.field == found.field } }
        }
        return AppError.invalidInput(issues)
    }

    /// `raw` with an empty string in each field an issue names (`a` or `a.b`); nil when `raw` is
    /// not an object or a path does not lead into one.
    static func placeholders(_ raw: JSONValue, for issues: [FieldIssue]) -> JSONValue? {
        guard case .object(var members) = raw else { return nil }
        for issue in issues {
            let path = issue.field.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
            switch path.count {
            case 1: members[path[0]] = .string("")
            case 2:
                guard case .object(var inner)? = members[path[0]] else { return nil }
                inner[path[1]] = .string("")
                members[path[0]] = .object(inner)
            default: return nil
            }
        }
        return .object(members)
    }

    /// The settings to store for `provider` from a body whose fields have the right types.
    /// - Throws: 400 `invalid_input` naming every bad field.
    static func checkedConfig(for provider: ProviderName, body: ByteBuffer) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let data =
            switch provider {
            case .sendgrid: try encoder.encode(checkedSendGrid(body))
            case .fcm: try encoder.encode(checkedFCM(body))
            case .apns: try encoder.encode(checkedAPNs(body))
            case .twilio: try encoder.encode(checkedTwilio(body))
            }
        return String(decoding: data, as: UTF8.self)
    }

    static func checkedSendGrid(_ body: ByteBuffer) throws -> SendGridConfig {
        let input = try Request.decodeJSON(SendGridBody.self, from: body)
        var issues: [FieldIssue] = []
        let apiKey = input.apiKey.trimmingCharacters(in: .whitespaces)
        if apiKey.isEmpty || apiKey.utf8.count > 512 || apiKey.contains(where: { $0.isNewline }) {
            issues.append(FieldIssue(field: "apiKey", issue: "must be 1 to 512 characters on one line"))
        }
        if AccountRules.normalizeEmail(input.fromEmail) == nil {
            issues.append(FieldIssue(field: "fromEmail", issue: "must be an email address"))
        }
        if let name = input.fromName, name.isEmpty || name.count > 100 || name.contains(where: { $0.isNewline }) {
            issues.append(FieldIssue(field: "fromName", issue: "must be 1 to 100 characters on one line"))
        }
        if !issues.isEmpty { throw AppError.invalidInput(issues) }
        return SendGridConfig(apiKey: apiKey, fromEmail: input.fromEmail, fromName: input.fromName)
    }

    static func checkedFCM(_ body: ByteBuffer) throws -> FCMConfig {
        let input = try Request.decodeJSON(FCMBody.self, from: body).serviceAccount
        var issues: [FieldIssue] = []
        if !isIdentifier(input.project_id, max: 64, extra: "-") {
            issues.append(FieldIssue(field: "serviceAccount.project_id", issue: "must be a Firebase project id"))
        }
        if AccountRules.normalizeEmail(input.client_email) == nil {
            issues.append(FieldIssue(field: "serviceAccount.client_email", issue: "must be the service account's email address"))
        }
        if let kid = input.private_key_id, !isIdentifier(kid, max: 128, extra: "") {
            issues.append(FieldIssue(field: "serviceAccount.private_key_id", issue: "must be a key id (letters and digits)"))
        }
        if (try? Insecure.RSA.PrivateKey(pem: input.private_key)) == nil {
            issues.append(FieldIssue(field: "serviceAccount.private_key", issue: "must be an RSA private key PEM of at least 2048 bits"))
        }
        if !issues.isEmpty { throw AppError.invalidInput(issues) }
        return FCMConfig(
            projectId: input.project_id, clientEmail: input.client_email, privateKey: input.private_key, privateKeyId: input.private_key_id)
    }

    static func checkedAPNs(_ body: ByteBuffer) throws -> APNsConfig {
        let input = try Request.decodeJSON(APNsBody.self, from: body)
        var issues: [FieldIssue] = []
        if !isIdentifier(input.teamId, max: 10, extra: "") || input.teamId.count != 10 {
            issues.append(FieldIssue(field: "teamId", issue: "must be the 10-character team id"))
        }
        if !isIdentifier(input.keyId, max: 10, extra: "") || input.keyId.count != 10 {
            issues.append(FieldIssue(field: "keyId", issue: "must be the 10-character key id"))
        }
        if (try? ES256PrivateKey(pem: input.privateKey)) == nil {
            issues.append(FieldIssue(field: "privateKey", issue: "must be the .p8 signing key (a P-256 private key PEM)"))
        }
        if !isIdentifier(input.topic, max: 255, extra: "-.") {
            issues.append(FieldIssue(field: "topic", issue: "must be the app's bundle id"))
        }
        let environment = input.environment ?? "production"
        if !["production", "sandbox"].contains(environment) {
            issues.append(FieldIssue(field: "environment", issue: "must be production or sandbox"))
        }
        if !issues.isEmpty { throw AppError.invalidInput(issues) }
        return APNsConfig(teamId: input.teamId, keyId: input.keyId, privateKey: input.privateKey, topic: input.topic, environment: environment)
    }

    static func checkedTwilio(_ body: ByteBuffer) throws -> TwilioConfig {
        let input = try Request.decodeJSON(TwilioBody.self, from: body)
        var issues: [FieldIssue] = []
        // Account SIDs are "AC" and 32 hexadecimal digits; compatible APIs may use other ids,
        // which only need to be safe in a URL path.
        if !isIdentifier(input.accountSid, max: 64, extra: "-_") {
            issues.append(FieldIssue(field: "accountSid", issue: "must be the account SID (letters, digits, - and _)"))
        }
        if input.authToken.isEmpty || input.authToken.utf8.count > 256 || input.authToken.contains(where: { $0.isNewline || $0 == ":" }) {
            issues.append(FieldIssue(field: "authToken", issue: "must be 1 to 256 characters on one line, without a colon"))
        }
        if !AccountRules.isE164(input.from) && !isIdentifier(input.from, max: 34, extra: "") {
            issues.append(
                FieldIssue(field: "from", issue: "must be an E.164 number, a messaging service SID or an alphanumeric sender id"))
        }
        if !issues.isEmpty { throw AppError.invalidInput(issues) }
        return TwilioConfig(accountSid: input.accountSid, authToken: input.authToken, from: input.from)
    }

    /// Every field of `spec` (name, required) that is missing when required or not a string,
    /// named with `prefix`; or the object itself when `value` is not one.
    static func stringFieldIssues(_ value: JSONValue, _ spec: [(String, Bool)], prefix: String = "") -> [FieldIssue] {
        guard case .object(let members) = value else {
            return [FieldIssue(field: prefix.isEmpty ? "body" : String(prefix.dropLast()), issue: "must be an object")]
        }
        var issues: [FieldIssue] = []
        for (name, required) in spec {
            switch members[name] {
            case nil, .null?:
                if required { issues.append(FieldIssue(field: prefix + name, issue: "is required")) }
            case .string?:
                break
            default:
                issues.append(FieldIssue(field: prefix + name, issue: "must be a string"))
            }
        }
        return issues
    }

    static func isIdentifier(_ text: String, max: Int, extra: String) -> Bool {
        !text.isEmpty && text.utf8.count <= max
            && text.unicodeScalars.allSatisfy { $0.isASCII && (CharacterSet.alphanumerics.contains($0) || extra.unicodeScalars.contains($0)) }
    }

    struct DeviceBody: Decodable {
        var platform: String
        var token: String
    }

    /// Checks a device registration: FCM registration tokens are up to 4,096 URL-safe
    /// characters; APNs device tokens are hexadecimal (64 digits today, 200 at most).
    static func device(_ body: DeviceBody) throws -> (ProviderName, String) {
        guard let platform = ProviderName(rawValue: body.platform), platform.channel == .push else {
            throw AppError.invalidField("platform", "must be fcm or apns")
        }
        let token = body.token
        switch platform {
        case .apns:
            guard (32...200).contains(token.utf8.count), token.unicodeScalars.allSatisfy({ $0.properties.isASCIIHexDigit }) else {
                throw AppError.invalidField("token", "must be an APNs device token (hexadecimal)")
            }
            return (platform, token.lowercased())
        default:
            guard (1...4096).contains(token.utf8.count), isIdentifier(token, max: 4096, extra: "-_:.") else {
                throw AppError.invalidField("token", "must be an FCM registration token")
            }
            return (platform, token)
        }
    }
}

/// `/notification-providers` (admins: a tenant's email, push and SMS credentials) and
/// `/users/me/devices` (a user's push registrations).
package struct ProvidersController: Sendable {
    let channels: OutboundChannels

    /// Creates the controller.
    package init(channels: OutboundChannels) {
        self.channels = channels
    }

    /// Adds the routes: providers for owners and admins, devices for the caller.
    package func addRoutes(to group: RouterGroup<AuthenticatedContext>) {
        group.group("notification-providers").add(middleware: RequireAdmin())
            .get(use: listProviders)
            .put(":provider", use: putProvider)
            .delete(":provider", use: deleteProvider)
        group.group("users/me/devices")
            .post(use: registerDevice)
            .get(use: listDevices)
            .delete(":id", use: deleteDevice)
    }

    /// `GET /notification-providers`: the tenant's configured providers, secrets masked.
    @Sendable func listProviders(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        let tenantId = context.identity.tenantId
        let secrets = channels.secrets
        let items = try await channels.database.read { db in try await ProviderStore.all(tenantId: tenantId, secrets: secrets, on: db) }
        return .json(ItemList(items: items))
    }

    /// `PUT /notification-providers/{provider}`: sets a provider's configuration.
    @Sendable func putProvider(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        guard let provider = ProviderName(rawValue: try context.parameters.require("provider")) else {
            throw AppError.notFound("No such provider: use sendgrid, fcm, apns or twilio.")
        }
        // Content type, size and depth checked as for every JSON body, then read per provider.
        var request = request
        let raw = try await request.decodeJSON(as: JSONValue.self, context: context)
        let config = try ProviderSettingsInput.config(for: provider, raw: raw)
        let tenantId = context.identity.tenantId
        let secrets = channels.secrets
        let record = try await channels.database.write { db in
            try await ProviderStore.put(tenantId: tenantId, provider: provider, config: config, secrets: secrets, on: db)
        }
        guard let record else { throw StoreInconsistency() }
        return .json(record)
    }

    /// `DELETE /notification-providers/{provider}`.
    @Sendable func deleteProvider(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        guard let provider = ProviderName(rawValue: try context.parameters.require("provider")) else { throw AppError.notFound() }
        let tenantId = context.identity.tenantId
        guard try await channels.database.write({ db in try await ProviderStore.delete(tenantId: tenantId, provider: provider, on: db) }) else {
            throw AppError.notFound("This provider is not configured.")
        }
        return Response(status: .noContent)
    }

    /// `POST /users/me/devices`: 201 for a new registration, 200 for a known one.
    @Sendable func registerDevice(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        var request = request
        let raw = try await request.decodeJSON(as: JSONValue.self, context: context)
        let typeIssues = ProviderSettingsInput.stringFieldIssues(raw, [("platform", true), ("token", true)])
        let check = { (body: ByteBuffer) throws -> (ProviderName, String) in
            try ProviderSettingsInput.device(try Request.decodeJSON(ProviderSettingsInput.DeviceBody.self, from: body))
        }
        if !typeIssues.isEmpty { throw ProviderSettingsInput.withValueIssues(typeIssues, raw: raw) { _ = try check($0) } }
        let (platform, token) = try check(ByteBuffer(string: raw.text))
        let identity = context.identity
        let (device, created) = try await channels.database.write { db in
            try await ProviderStore.register(tenantId: identity.tenantId, userId: identity.userId, platform: platform, token: token, on: db)
        }
        return .json(device, status: created ? .created : .ok, headers: [.location: "/users/me/devices/\(device.id)"])
    }

    /// `GET /users/me/devices`.
    @Sendable func listDevices(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        let identity = context.identity
        let items = try await channels.database.read { db in
            try await ProviderStore.devices(tenantId: identity.tenantId, userId: identity.userId, on: db)
        }
        return .json(ItemList(items: items))
    }

    /// `DELETE /users/me/devices/{id}`.
    @Sendable func deleteDevice(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        let id = try context.parameters.require("id")
        let identity = context.identity
        guard UUIDv7.isValid(id),
            try await channels.database.write({ db in
                try await ProviderStore.deleteDevice(id: id, tenantId: identity.tenantId, userId: identity.userId, on: db)
            })
        else { throw AppError.notFound("No such device.") }
        return Response(status: .noContent)
    }
}
