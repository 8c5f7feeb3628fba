package import CairnStorage

extension NotificationSettings {
    /// Reads the settings that are set, in the `notifications` scope:
    /// `CAIRN_NOTIFICATIONS_RETENTION` and `_BATCH_SIZE` (1–2000: a batch's insert binds 11
    /// values per row, and SQLite allows 32,766).
    /// - Throws: `ConfigurationError` naming the first bad one.
    package mutating func read(from settings: SettingsReader) throws {
        retentionSeconds = try settings.seconds("retention", default: retentionSeconds)
        batchSize = try settings.integer("batch.size", in: 1...2000, default: batchSize)
    }
}
