package import CairnStorage

extension CatalogSettings {
    /// Reads the settings that are set, in the `catalog` scope: `CAIRN_CATALOG_CACHE_TTL`
    /// (a duration, 0 s–1 d), `_CACHE_SIZE` (entries), `_READ_TIMEOUT_MS` (a duration, 10 ms–10 min;
    /// a plain number is milliseconds), `_MAX_READS`,
    /// `_MAX_READS_PER_TENANT`.
    /// - Throws: `ConfigurationError` naming the first bad one.
    package mutating func read(from settings: SettingsReader) throws {
        cacheTTL = try settings.duration("cache.ttl", in: .zero ... .seconds(86_400), default: cacheTTL)
        cacheCapacity = try settings.integer("cache.size", in: 16...10_000_000, default: cacheCapacity)
        // A plain number is milliseconds here, as the name says.
        readTimeout = try settings.duration("read.timeout.ms", in: .milliseconds(10) ... .seconds(600), plain: .milliseconds(1), default: readTimeout)
        maxReads = try settings.integer("max.reads", in: 1...1024, default: maxReads)
        maxReadsPerTenant = try settings.integer("max.reads.per.tenant", in: 1...1024, default: maxReadsPerTenant)
    }
}
