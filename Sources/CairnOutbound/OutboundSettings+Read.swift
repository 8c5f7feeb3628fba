package import CairnStorage
import Foundation

extension OutboundSettings {
    /// Reads the settings that are set, from the top of the configuration:
    /// `CAIRN_WEBHOOKS_ALLOW_PRIVATE`, `CAIRN_WEBHOOKS_RETRY_SCHEDULE` (see
    /// ``parseRetrySchedule(_:)``), the providers' base URLs (`CAIRN_SENDGRID_URL`,
    /// `CAIRN_FCM_URL`, `CAIRN_FCM_TOKEN_URL`, `CAIRN_APNS_URL`, `CAIRN_APNS_SANDBOX_URL`,
    /// `CAIRN_TWILIO_URL`) and
    /// `CAIRN_PROVIDERS_CA_FILE` (a readable PEM file).
    /// - Throws: `ConfigurationError` naming the first bad one.
    package mutating func read(from settings: SettingsReader) throws {
        allowPrivateWebhookTargets = try settings.boolean("webhooks.allow.private", default: allowPrivateWebhookTargets)
        if let schedule = settings.text("webhooks.retry.schedule") {
            guard let parsed = Self.parseRetrySchedule(schedule) else {
                throw settings.invalid(
                    "webhooks.retry.schedule", "must list 1 to 99 waits from 1s to 7d, comma-separated, like 5s,5m,30m,2h,5h,8h,8h, got '\(schedule)'"
                )
            }
            webhookRetrySchedule = parsed
        }
        for (key, setting) in [
            ("sendgrid.url", \ProviderEndpoints.sendGrid), ("fcm.url", \.fcm), ("fcm.token.url", \.fcmToken), ("apns.url", \.apns),
            ("apns.sandbox.url", \.apnsSandbox), ("twilio.url", \.twilio),
        ] {
            if let url = try settings.baseURL(key) { providers[keyPath: setting] = url }
        }
        if let caFile = settings.text("providers.ca.file"), !caFile.isEmpty {
            guard FileManager.default.isReadableFile(atPath: caFile) else {
                throw settings.invalid("providers.ca.file", "must be a readable PEM file")
            }
            providers.caFile = caFile
        }
    }

    /// The waits of a webhook retry schedule: a comma-separated list of 1 to 99 durations
    /// (`90`, `90s`, `15m`, `2h`, `1d`, `1500ms`; each from 1 s to 7 days), or nil when it is not one.
    package static func parseRetrySchedule(_ text: String) -> [Duration]? {
        let parts = text.split(separator: ",", omittingEmptySubsequences: false)
        guard (1...99).contains(parts.count) else { return nil }
        var waits: [Duration] = []
        for part in parts {
            guard let wait = SettingsReader.parseDuration(String(part)), (.seconds(1) ... .seconds(7 * 86_400)).contains(wait) else { return nil }
            waits.append(wait)
        }
        return waits
    }
}
