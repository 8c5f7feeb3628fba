package import CairnStorage

/// Settings of files and uploads, read from the top of the configuration: the quotas
/// (`CAIRN_FILES_MAX_SIZE`, `CAIRN_FILES_MAX_TOTAL`, `CAIRN_FILES_MAX_PER_HOUR`, in bytes) and
/// `CAIRN_UPLOADS_EXPIRY`.
package struct FilesSettings: Sendable {
    /// Size and volume limits per tenant.
    package var quotas = FileQuotas()
    /// Seconds a tus upload may take from creation to its last byte (default 24h); expired
    /// uploads answer 404 and their bytes are removed.
    package var uploadsExpiry = 86_400

    /// The defaults.
    package init() {}

    /// Reads the settings that are set.
    /// - Throws: `ConfigurationError` naming the first bad one.
    package mutating func read(from settings: SettingsReader) throws {
        quotas.maxFileBytes = Int64(try settings.integer("files.max.size", in: 1...(1 << 50), default: Int(quotas.maxFileBytes)))
        quotas.maxTotalBytes = Int64(try settings.integer("files.max.total", in: 1...(1 << 50), default: Int(quotas.maxTotalBytes)))
        quotas.maxBytesPerHour = Int64(try settings.integer("files.max.per.hour", in: 1...(1 << 50), default: Int(quotas.maxBytesPerHour)))
        uploadsExpiry = try settings.seconds("uploads.expiry", default: uploadsExpiry)
    }
}
