package import CairnStorage

extension CatalogSettings {
    /// Reads the settings that are set, in the `catalog` scope: `CAIRN_CATALOG_CACHE_TTL`
    /// (seconds, 0–86400), `_CACHE_SIZE` (entries), `_READ_TIMEOUT_MS`, `_MAX_READS`,
    /// `_MAX_READS_PER_TENANT`.
    /// - Throws: `ConfigurationError` naming the first bad one.
    package mutating func read(from settings: SettingsReader) throws {
        cacheTTL = .seconds(try settings.integer("cache.ttl", in: 0...86_400, default: Int(cacheTTL.components.seconds)))
        cacheCapacity = try settings.integer("cache.size", in: 16...10_000_000, default: cacheCapacity)
        readTimeout = .milliseconds(
            try settings.integer("read.timeout.ms", in: 10...600_000, default: Int(readTimeout.components.seconds) * 1000))
        maxReads = try settings.integer("max.reads", in: 1...1024, default: maxReads)
        maxReadsPerTenant = try settings.integer("max.reads.per.tenant", in: 1...1024, default: maxReadsPerTenant)
    }
}
