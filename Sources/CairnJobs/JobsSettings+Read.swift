package import CairnStorage

extension JobsSettings {
    /// Reads the settings that are set, in the `jobs` scope: `CAIRN_JOBS_CONCURRENCY` (0–1024;
    /// 0: the node enqueues but runs no jobs),
    /// `_LEASE`, `_MAX_RUNNING_PER_TENANT` (1–1024), `_RESERVED_SLOTS` (0–1024), `_MAX_PENDING_PER_TENANT`,
    /// `_SHUTDOWN_GRACE` (a duration, 0 s–1 h), `_RETENTION`, `_CLAIM_LIMIT` (1–1000), `_BATCH_COMPLETIONS`,
    /// `_TIMEOUT` (a duration; 0 for none), `_MAX_SCHEDULES_PER_TENANT` (1–1,000,000).
    /// - Throws: `ConfigurationError` naming the first bad one.
    package mutating func read(from settings: SettingsReader) throws {
        concurrency = try settings.integer("concurrency", in: 0...1024, default: concurrency)
        leaseSeconds = try settings.seconds("lease", default: leaseSeconds)
        maxRunningPerTenant = try settings.integer("max.running.per.tenant", in: 1...1024, default: maxRunningPerTenant)
        reservedSlots = try settings.integer("reserved.slots", in: 0...1024, default: reservedSlots)
        maxPendingPerTenant = try settings.integer("max.pending.per.tenant", in: 1...100_000_000, default: maxPendingPerTenant)
        shutdownGrace = try settings.duration("shutdown.grace", in: .zero ... .seconds(3600), default: shutdownGrace)
        retentionSeconds = try settings.seconds("retention", default: retentionSeconds)
        claimLimit = try settings.integer("claim.limit", in: 1...1000, default: claimLimit)
        batchCompletions = try settings.boolean("batch.completions", default: batchCompletions)
        let attemptLimit = try settings.duration("timeout", in: .zero...SettingsReader.durationRange.upperBound, default: timeout ?? .zero)
        timeout = attemptLimit == .zero ? nil : attemptLimit
        maxSchedulesPerTenant = try settings.integer("max.schedules.per.tenant", in: 1...1_000_000, default: maxSchedulesPerTenant)
    }
}
