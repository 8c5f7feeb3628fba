package import CairnStorage

extension NotificationSettings {
    /// Reads the settings that are set, in the `notifications` scope:
    /// `CAIRN_NOTIFICATIONS_RETENTION`, `_BATCH_SIZE` (1–2000: a batch's insert binds 11
    /// values per row, and SQLite allows 32,766), `_PUBLISH_BATCH` (0–2000, likewise; 0
    /// turns the batching of concurrent publishes off) and `_PUBLISH_BATCHES` (1–16: publish
    /// batches stored at once on a node) and `_MAX_USER_CONNECTIONS` (1–100,000: live
    /// connections one user may hold on a node).
    /// - Throws: `ConfigurationError` naming the first bad one.
    package mutating func read(from settings: SettingsReader) throws {
        retentionSeconds = try settings.seconds("retention", default: retentionSeconds)
        batchSize = try settings.integer("batch.size", in: 1...2000, default: batchSize)
        publishBatchRows = try settings.integer("publish.batch", in: 0...2000, default: publishBatchRows)
        publishBatchesInFlight = try settings.integer("publish.batches", in: 1...16, default: publishBatchesInFlight)
        maxUserConnections = try settings.integer("max.user.connections", in: 1...100_000, default: maxUserConnections)
    }
}
