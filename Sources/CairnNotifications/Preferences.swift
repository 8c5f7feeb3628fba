import CairnAccounts
package import CairnHTTP
package import CairnStorage
import Foundation
package import Hummingbird
import SQLKit

/// A delivery channel of notifications.
package enum NotificationChannel: String, Sendable, CaseIterable, Codable, JSONEnum {
    /// The inbox and the live streams.
    case inApp = "in_app"
    /// The tenant's registered webhook endpoints (Standard Webhooks).
    case webhook
    /// Email through the tenant's provider.
    case email
    /// Mobile push through the tenant's provider.
    case push
    /// SMS to the user's phone (E.164, on their profile) through the tenant's provider.
    case sms
}

/// How a user receives one type on one outbound channel: each notification at once, or
/// batched into one message at the end of each hour or day (a digest).
package enum DigestMode: String, Sendable, CaseIterable, Codable, JSONEnum {
    /// Each notification as it is published (the default).
    case immediate
    /// One message at the end of each hour.
    case hourly
    /// One message at the end of each day.
    case daily

    /// The channels a user may digest. In-app stays immediate (the inbox is the record), and
    /// webhooks are the tenant's integration, delivered per event to its endpoints.
    package static let channels: [NotificationChannel] = [.email, .sms, .push]
}

/// A user's notification preferences: per type, per channel on/off, digests, and quiet hours
/// in the user's time zone for the channels other than in-app.
///
/// JSON: `{"types": {"<type>" | "*": {"in_app": bool, "webhook": bool, "email": bool,
/// "push": bool, "sms": bool}}, "digests": {"<type>" | "*": {"email" | "sms" | "push":
/// "immediate" | "hourly" | "daily"}}, "quietHours": {"start": "HH:MM", "end": "HH:MM", "timeZone": IANA} | null}`.
/// `*` applies to types without their own entry; a channel missing from an entry takes the
/// `*` entry's value, then the default: in_app, webhook and push on (push reaches only devices
/// the user registered, which is their opt-in), email and sms off (opt-in), every channel
/// immediate. `system_alert` in-app cannot be turned off.
package struct NotificationPreferences: Sendable, Equatable, Codable {
    /// Per type (or `*`), per channel.
    package var types: [String: [String: Bool]]
    /// Per type (or `*`), per channel (email, sms, push): immediate or a digest period.
    package var digests: [String: [String: DigestMode]]
    /// Quiet hours, when set.
    package var quietHours: QuietHours?

    enum CodingKeys: String, CodingKey {
        case types, digests, quietHours
    }

    /// Decodes the document; `digests` may be missing (documents stored before digests).
    package init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        types = try container.decode([String: [String: Bool]].self, forKey: .types)
        digests = try container.decodeIfPresent([String: [String: DigestMode]].self, forKey: .digests) ?? [:]
        quietHours = try container.decodeIfPresent(QuietHours.self, forKey: .quietHours)
    }

    /// Encodes the document, `digests` always (`{}` when none), `quietHours` when set.
    package func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(types, forKey: .types)
        try container.encode(digests, forKey: .digests)
        try container.encodeIfPresent(quietHours, forKey: .quietHours)
    }

    /// A daily window, possibly crossing midnight, during which non-in-app channels wait.
    package struct QuietHours: Sendable, Equatable, Codable {
        /// `HH:MM`, 24-hour clock.
        package var start: String
        /// `HH:MM`; before `start` means the window crosses midnight.
        package var end: String
        /// An IANA time zone name (e.g. `Europe/Paris`).
        package var timeZone: String

        /// Creates quiet hours.
        package init(start: String, end: String, timeZone: String) {
            self.start = start
            self.end = end
            self.timeZone = timeZone
        }
    }

    /// Creates preferences.
    package init(types: [String: [String: Bool]], digests: [String: [String: DigestMode]] = [:], quietHours: QuietHours?) {
        self.types = types
        self.digests = digests
        self.quietHours = quietHours
    }

    /// The defaults: every type on in-app, webhook and push, off on email and sms, all
    /// immediate, no quiet hours.
    package static let defaults = NotificationPreferences(types: [:], quietHours: nil)

    static func minutes(_ text: String) -> Int? {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2, parts[0].count == 2, parts[1].count == 2, let hours = Int(parts[0]), let minutes = Int(parts[1]),
            (0...23).contains(hours), (0...59).contains(minutes)
        else { return nil }
        return hours * 60 + minutes
    }

    /// Checks the document.
    /// - Throws: 400 `invalid_input` naming each bad field.
    package func validate() throws {
        var issues: [FieldIssue] = []
        if types.count > 200 { issues.append(FieldIssue(field: "types", issue: "must have at most 200 entries")) }
        for (type, channels) in types.sorted(by: { $0.key < $1.key }) {
            if type != "*" && !NotificationDraft.isValidType(type) {
                issues.append(FieldIssue(field: "types.\(type)", issue: "must be * or a type matching [a-z][a-z0-9_.]{0,63}"))
                continue
            }
            for channel in channels.keys.sorted() where NotificationChannel(rawValue: channel) == nil {
                issues.append(FieldIssue(field: "types.\(type).\(channel)", issue: "must be one of in_app, webhook, email, push, sms"))
            }
        }
        if digests.count > 200 { issues.append(FieldIssue(field: "digests", issue: "must have at most 200 entries")) }
        let digestChannels = DigestMode.channels.map(\.rawValue)
        for (type, channels) in digests.sorted(by: { $0.key < $1.key }) {
            if type != "*" && !NotificationDraft.isValidType(type) {
                issues.append(FieldIssue(field: "digests.\(type)", issue: "must be * or a type matching [a-z][a-z0-9_.]{0,63}"))
                continue
            }
            for channel in channels.keys.sorted() where !digestChannels.contains(channel) {
                issues.append(
                    FieldIssue(
                        field: "digests.\(type).\(channel)",
                        issue: "must be one of \(digestChannels.joined(separator: ", ")) (in-app is immediate; webhooks are the tenant's, per event)")
                )
            }
        }
        if types["system_alert"]?["in_app"] == false || (types["system_alert"]?["in_app"] == nil && types["*"]?["in_app"] == false) {
            issues.append(FieldIssue(field: "types.system_alert.in_app", issue: "system alerts cannot be turned off in-app"))
        }
        if let quiet = quietHours {
            if Self.minutes(quiet.start) == nil { issues.append(FieldIssue(field: "quietHours.start", issue: "must be HH:MM")) }
            if Self.minutes(quiet.end) == nil { issues.append(FieldIssue(field: "quietHours.end", issue: "must be HH:MM")) }
            if quiet.timeZone.isEmpty || quiet.timeZone.count > 64 || TimeZone(identifier: quiet.timeZone) == nil {
                issues.append(FieldIssue(field: "quietHours.timeZone", issue: "must be an IANA time zone"))
            }
        }
        if !issues.isEmpty { throw AppError.invalidInput(issues) }
    }

    /// Whether `type` goes out on `channel`.
    package func allows(_ type: String, on channel: NotificationChannel) -> Bool {
        if type == "system_alert" && channel == .inApp { return true }
        if let value = types[type]?[channel.rawValue] ?? types["*"]?[channel.rawValue] { return value }
        return channel != .email && channel != .sms
    }

    /// How `type` goes out on `channel`: immediate, or batched into an hourly or daily digest.
    /// In-app and webhooks are always immediate.
    package func digest(_ type: String, on channel: NotificationChannel) -> DigestMode {
        guard DigestMode.channels.contains(channel) else { return .immediate }
        return digests[type]?[channel.rawValue] ?? digests["*"]?[channel.rawValue] ?? .immediate
    }

    /// The end (epoch ms) of the `mode` digest window holding `now`: the next hour or day
    /// boundary strictly after it, in the time zone of the quiet hours when they are set (the
    /// only zone the preferences carry), in UTC otherwise. DST-aware: a day is a local day.
    package func digestWindowEnd(_ mode: DigestMode, now: Int64) -> Int64 {
        let zone = quietHours.flatMap { TimeZone(identifier: $0.timeZone) } ?? TimeZone(identifier: "UTC")!
        let step: Int64 = mode == .daily ? 86_400_000 : 3_600_000
        if zone.identifier == "UTC" || zone.identifier == "GMT" {
            return (now / step + 1) * step
        }
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = zone
        let date = Date(timeIntervalSince1970: Double(now) / 1000)
        let boundary = mode == .daily ? DateComponents(hour: 0, minute: 0, second: 0) : DateComponents(minute: 0, second: 0)
        guard let next = calendar.nextDate(after: date, matching: boundary, matchingPolicy: .nextTime) else {
            return (now / step + 1) * step
        }
        return Int64((next.timeIntervalSince1970 * 1000).rounded())
    }

    /// The end of the quiet window containing `now` (epoch ms), or nil when `now` is outside
    /// quiet hours (or none are set).
    package func quietUntil(now: Int64) -> Int64? {
        guard let quiet = quietHours, let start = Self.minutes(quiet.start), let end = Self.minutes(quiet.end), start != end,
            let zone = TimeZone(identifier: quiet.timeZone)
        else { return nil }
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = zone
        let date = Date(timeIntervalSince1970: Double(now) / 1000)
        let parts = calendar.dateComponents([.hour, .minute], from: date)
        let minute = (parts.hour ?? 0) * 60 + (parts.minute ?? 0)
        let inside = start < end ? (minute >= start && minute < end) : (minute >= start || minute < end)
        guard inside else { return nil }
        // The next time the wall clock in the zone reads `end` (DST-aware via Calendar).
        let next = calendar.nextDate(
            after: date, matching: DateComponents(hour: end / 60, minute: end % 60), matchingPolicy: .nextTime)
        return next.map { Int64(($0.timeIntervalSince1970 * 1000).rounded()) }
    }

    /// The JSON document.
    var json: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return (try? encoder.encode(self)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    }
}

/// Stored preferences (`notification_preferences`).
@MemberwiseInit
package struct PreferenceStore: Sendable {
    /// The database.
    package let database: Database

    static func decode(_ text: String) -> NotificationPreferences {
        (try? JSONDecoder().decode(NotificationPreferences.self, from: Data(text.utf8))) ?? .defaults
    }

    /// A user's preferences (the defaults when never set).
    package func preferences(tenantId: String, userId: String) async throws -> NotificationPreferences {
        try await database.read { db in
            try await db.raw("SELECT prefs FROM notification_preferences WHERE tenant_id = \(bind: tenantId) AND user_id = \(bind: userId)")
                .first()?.decode(column: "prefs", as: String.self)
        }.map(Self.decode) ?? .defaults
    }

    /// Preferences of several users of a tenant, on `db` (the publishing transaction).
    static func preferences(tenantId: String, userIds: [String], on db: any SQLDatabase) async throws -> [String: NotificationPreferences] {
        guard !userIds.isEmpty else { return [:] }
        let rows = try await db.raw(
            """
            SELECT user_id, prefs FROM notification_preferences WHERE tenant_id = \(bind: tenantId)
            AND user_id IN \(NotificationStore.list(userIds.map { "\(bind: $0)" }))
            """
        ).all()
        var result: [String: NotificationPreferences] = [:]
        for row in rows { result[try row.decode(column: "user_id", as: String.self)] = Self.decode(try row.decode(column: "prefs", as: String.self)) }
        return result
    }

    /// Replaces a user's preferences; the same preferences again write nothing (`updated_at` stays).
    package func save(_ preferences: NotificationPreferences, tenantId: String, userId: String) async throws {
        let json = preferences.json
        let now = WallClock.milliseconds()
        try await database.write { db in
            try await db.raw(
                """
                INSERT INTO notification_preferences (tenant_id, user_id, prefs, updated_at) VALUES (\(bind: tenantId), \(bind: userId), \(bind: json), \(bind: now))
                ON CONFLICT (tenant_id, user_id) DO UPDATE SET prefs = excluded.prefs, updated_at = excluded.updated_at
                WHERE notification_preferences.prefs IS DISTINCT FROM excluded.prefs
                """
            ).run()
        }
    }
}

/// `/users/me/notification-preferences`: the caller's own channel, digest and quiet-hour preferences.
package struct PreferencesController: Sendable {
    let store: PreferenceStore

    /// Creates the controller.
    package init(store: PreferenceStore) {
        self.store = store
    }

    /// Adds the routes to the authenticated group.
    package func addRoutes(to group: RouterGroup<AuthenticatedContext>) {
        group.get("users/me/notification-preferences", use: show)
        group.put("users/me/notification-preferences", use: replace)
    }

    /// The caller's preferences (the defaults when never set).
    @Sendable func show(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        let preferences = try await store.preferences(tenantId: context.identity.tenantId, userId: context.identity.userId)
        return try .json(encodable: preferences)
    }

    /// Replaces the caller's preferences; 400 `invalid_input` for an invalid document.
    @Sendable func replace(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        var request = request
        let preferences = try await request.decodeJSON(as: NotificationPreferences.self, context: context)
        try preferences.validate()
        try await store.save(preferences, tenantId: context.identity.tenantId, userId: context.identity.userId)
        return try .json(encodable: preferences)
    }
}

extension NotificationPreferences: ValueChecked {
    /// The issues of ``validate()``, for the body decoder.
    package func valueIssues() -> [FieldIssue] { issues { try validate() } }
}
