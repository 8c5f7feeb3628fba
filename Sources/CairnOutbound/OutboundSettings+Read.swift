package import CairnStorage
import Foundation

extension OutboundSettings {
    /// Reads the settings that are set, from the top of the configuration:
    /// `CAIRN_WEBHOOKS_ALLOW_PRIVATE`, the providers' base URLs (`CAIRN_SENDGRID_URL`,
    /// `CAIRN_FCM_URL`, `CAIRN_FCM_TOKEN_URL`, `CAIRN_APNS_URL`, `CAIRN_APNS_SANDBOX_URL`,
    /// `CAIRN_TWILIO_URL`) and
    /// `CAIRN_PROVIDERS_CA_FILE` (a readable PEM file).
    /// - Throws: `ConfigurationError` naming the first bad one.
    package mutating func read(from settings: SettingsReader) throws {
        allowPrivateWebhookTargets = try settings.boolean("webhooks.allow.private", default: allowPrivateWebhookTargets)
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
}
