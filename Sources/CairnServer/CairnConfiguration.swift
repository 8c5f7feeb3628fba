public import CairnCatalog
public import CairnFiles
public import CairnNotifications
public import CairnOutbound
public import CairnPipelines
import Configuration
public import Foundation
import SystemPackage

/// A setting with a bad value: start-up stops with one line naming it, and exit code 2.
public struct ConfigurationError: Error, CustomStringConvertible {
    /// The environment variable naming the setting (e.g. `CAIRN_HTTP_PORT`).
    public var setting: String
    /// What is wrong with it.
    public var problem: String
    /// `invalid configuration: CAIRN_HTTP_PORT must be …`.
    public var description: String { "invalid configuration: \(setting) \(problem)" }
}

/// Everything `cairn serve` can be told. Sources, highest precedence first: command-line flags,
/// environment (`CAIRN_*`), an optional JSON file (`--config` / `CAIRN_CONFIG_FILE`, keys
/// nested as in `{"http": {"port": 8080}}`), then these defaults.
public struct CairnConfiguration: Sendable {
    /// Listen address (`CAIRN_HTTP_HOST`, default 127.0.0.1).
    public var httpHost = "127.0.0.1"
    /// Listen port (`CAIRN_HTTP_PORT`, default 8080; 0 picks a free port).
    public var httpPort = 8080
    /// Data directory for the SQLite file and signing keys (`CAIRN_DATA_DIR`, default ./cairn-data).
    public var dataDir = "./cairn-data"
    /// `postgres://…` to run on PostgreSQL (`CAIRN_DATABASE_URL`); nil runs on embedded SQLite.
    public var databaseURL: String?
    /// HS256 secret (≥ 32 bytes) instead of Ed25519 keys (`CAIRN_JWT_SECRET`). Never logged.
    public var jwtSecret: String?
    /// Access token lifetime, seconds (`CAIRN_ACCESS_TOKEN_TTL`, default 900; accepts 15m, 1h).
    public var accessTokenTTL = 900
    /// Refresh token lifetime, seconds (`CAIRN_REFRESH_TOKEN_TTL`, default 30d).
    public var refreshTokenTTL = 30 * 86_400
    /// bcrypt cost 4...31 (`CAIRN_BCRYPT_COST`, default 12).
    public var bcryptCost = 12
    /// Threads that may hash passwords at once (`CAIRN_BCRYPT_THREADS`, default 1).
    public var bcryptThreads = 1
    /// `text` or `json` (`CAIRN_LOG_FORMAT`).
    public var logFormat = "text"
    /// swift-log level (`CAIRN_LOG_LEVEL`, default info).
    public var logLevel = "info"
    /// Apply pending migrations on start (`serve --no-migrate` turns it off).
    public var migrateOnStart = true
    /// Jobs run at once on this node (`CAIRN_JOBS_CONCURRENCY`, default 2 × cores).
    public var jobsConcurrency = 2 * ProcessInfo.processInfo.activeProcessorCount
    /// Job lease in seconds (`CAIRN_JOBS_LEASE`, default 30).
    public var jobsLease = 30
    /// Running jobs per tenant on one node (`CAIRN_JOBS_MAX_RUNNING_PER_TENANT`, default 2).
    public var jobsMaxRunningPerTenant = 2
    /// Waiting jobs per tenant (`CAIRN_JOBS_MAX_PENDING_PER_TENANT`, default 100,000).
    public var jobsMaxPendingPerTenant = 100_000
    /// Seconds running jobs get to finish on shutdown (`CAIRN_JOBS_SHUTDOWN_GRACE`, default 10).
    public var jobsShutdownGrace = 10
    /// Days finished jobs are kept (`CAIRN_JOBS_RETENTION`, default 7d).
    public var jobsRetention = 7 * 86_400
    /// How often lapsed leases are looked for (not an environment setting; tests shorten it).
    public var jobsRescueInterval: Duration = .seconds(5)
    /// Most jobs one claim statement takes (`CAIRN_JOBS_CLAIM_LIMIT`, 1–1000, default 100).
    public var jobsClaimLimit = 100
    /// Batch successful completions into one statement (`CAIRN_JOBS_BATCH_COMPLETIONS`, default true).
    public var jobsBatchCompletions = true
    /// Catalog cache and circuit breaker (`CAIRN_CATALOG_CACHE_TTL`, `CAIRN_CATALOG_CACHE_SIZE`,
    /// `CAIRN_CATALOG_READ_TIMEOUT_MS`).
    public var catalog = CatalogSettings()
    /// Notifications (`CAIRN_NOTIFICATIONS_RETENTION`, default 90d; `CAIRN_NOTIFICATIONS_BATCH_SIZE`,
    /// default 500; the rest tests shorten).
    public var notifications = NotificationSettings()
    /// Webhooks, email and push (`CAIRN_WEBHOOKS_ALLOW_PRIVATE`, the providers' URLs and
    /// `CAIRN_PROVIDERS_CA_FILE`; attempts and timeouts tests shorten).
    public var outbound = OutboundSettings()
    /// File size and volume limits per tenant (`CAIRN_FILES_MAX_SIZE`, `CAIRN_FILES_MAX_TOTAL`,
    /// `CAIRN_FILES_MAX_PER_HOUR`, in bytes).
    public var fileQuotas = FileQuotas()
    /// Pipeline runs: query time limit (`CAIRN_PIPELINE_TIMEOUT`, seconds) and worker threads
    /// (`CAIRN_PIPELINE_THREADS`); the work folder is `<data dir>/pipelines`.
    public var pipelines = PipelineSettings()
    /// Seconds a tus upload may take from creation to its last byte (`CAIRN_UPLOADS_EXPIRY`,
    /// default 24h); expired uploads answer 404 and their bytes are removed.
    public var uploadsExpiry = 86_400

    /// Creates the defaults.
    public init() {}

    /// The SQLite database file inside the data directory.
    public var sqlitePath: String { dataDir + "/cairn.sqlite" }
    /// The Ed25519 key ring inside the data directory.
    public var keyFile: String { dataDir + "/jwt-keys.json" }

    /// Reads the configuration.
    /// - Parameters:
    ///   - flags: values given on the command line, keyed like `http.port`.
    ///   - environment: the process environment (tests pass their own).
    /// - Throws: `ConfigurationError` naming the first bad setting.
    public static func load(flags: [String: String] = [:], environment: [String: String] = ProcessInfo.processInfo.environment) async throws
        -> CairnConfiguration
    {
        var providers: [any ConfigProvider] = []
        var flagValues: [AbsoluteConfigKey: ConfigValue] = [:]
        for (key, value) in flags {
            flagValues[AbsoluteConfigKey(key.split(separator: ".").map(String.init))] = ConfigValue(.string(value), isSecret: key == "jwt.secret")
        }
        providers.append(InMemoryProvider(name: "flags", values: flagValues))
        providers.append(
            EnvironmentVariablesProvider(environmentVariables: environment, secretsSpecifier: .specific(["CAIRN_JWT_SECRET", "CAIRN_DATABASE_URL"]))
                .prefixKeys(with: ["cairn"]))
        if let file = flags["config.file"] ?? environment["CAIRN_CONFIG_FILE"] {
            do {
                providers.append(try await FileProvider<JSONSnapshot>(filePath: FilePath(file)))
            } catch {
                throw ConfigurationError(setting: "CAIRN_CONFIG_FILE", problem: "names a file that is missing or not valid JSON: \(file)")
            }
        }
        let reader = ConfigReader(providers: providers)
        var config = CairnConfiguration()

        func text(_ key: String) -> String? {
            if let value = reader.string(forKey: ConfigKey(key.split(separator: ".").map(String.init))) { return value }
            return reader.int(forKey: ConfigKey(key.split(separator: ".").map(String.init))).map(String.init)
        }
        func env(_ key: String) -> String { "CAIRN_" + key.uppercased().replacingOccurrences(of: ".", with: "_") }
        func integer(_ key: String, _ range: ClosedRange<Int>, default value: Int) throws -> Int {
            guard let raw = text(key) else { return value }
            guard let parsed = Int(raw.trimmingCharacters(in: .whitespaces)), range.contains(parsed) else {
                throw ConfigurationError(
                    setting: env(key), problem: "must be an integer from \(range.lowerBound) to \(range.upperBound), got '\(raw)'")
            }
            return parsed
        }
        func boolean(_ key: String, default value: Bool) throws -> Bool {
            if let flag = reader.bool(forKey: ConfigKey(key.split(separator: ".").map(String.init))) { return flag }
            guard let raw = text(key) else { return value }
            switch raw.trimmingCharacters(in: .whitespaces).lowercased() {
            case "true", "1", "yes", "on": return true
            case "false", "0", "no", "off": return false
            default: throw ConfigurationError(setting: env(key), problem: "must be true or false, got '\(raw)'")
            }
        }
        func duration(_ key: String, default value: Int) throws -> Int {
            guard let raw = text(key) else { return value }
            guard let seconds = parseDuration(raw), seconds >= 1, seconds <= 10 * 365 * 86_400 else {
                throw ConfigurationError(setting: env(key), problem: "must be a duration like 900, 15m, 12h or 30d, got '\(raw)'")
            }
            return seconds
        }

        if let host = text("http.host") {
            guard !host.isEmpty, !host.contains(where: { $0.isWhitespace || $0 == "/" }) else {
                throw ConfigurationError(setting: "CAIRN_HTTP_HOST", problem: "must be a host name or IP address, got '\(host)'")
            }
            config.httpHost = host
        }
        config.httpPort = try integer("http.port", 0...65_535, default: config.httpPort)
        if let dir = text("data.dir") {
            guard !dir.isEmpty else { throw ConfigurationError(setting: "CAIRN_DATA_DIR", problem: "must not be empty") }
            config.dataDir = dir
        }
        if let url = text("database.url"), !url.isEmpty {
            guard url.hasPrefix("postgres://") || url.hasPrefix("postgresql://") else {
                throw ConfigurationError(setting: "CAIRN_DATABASE_URL", problem: "must start with postgres:// (leave it unset for embedded SQLite)")
            }
            config.databaseURL = url
        }
        if let secret = text("jwt.secret"), !secret.isEmpty {
            guard secret.utf8.count >= 32 else {
                throw ConfigurationError(setting: "CAIRN_JWT_SECRET", problem: "must be at least 32 bytes (RFC 7518 §3.2)")
            }
            config.jwtSecret = secret
        }
        config.accessTokenTTL = try duration("access.token.ttl", default: config.accessTokenTTL)
        config.refreshTokenTTL = try duration("refresh.token.ttl", default: config.refreshTokenTTL)
        config.bcryptCost = try integer("bcrypt.cost", 4...31, default: config.bcryptCost)
        config.bcryptThreads = try integer("bcrypt.threads", 1...64, default: config.bcryptThreads)
        config.jobsConcurrency = try integer("jobs.concurrency", 1...1024, default: config.jobsConcurrency)
        config.jobsLease = try duration("jobs.lease", default: config.jobsLease)
        config.jobsMaxRunningPerTenant = try integer("jobs.max.running.per.tenant", 1...1024, default: config.jobsMaxRunningPerTenant)
        config.jobsMaxPendingPerTenant = try integer("jobs.max.pending.per.tenant", 1...100_000_000, default: config.jobsMaxPendingPerTenant)
        config.jobsShutdownGrace = try integer("jobs.shutdown.grace", 0...3600, default: config.jobsShutdownGrace)
        config.jobsRetention = try duration("jobs.retention", default: config.jobsRetention)
        config.jobsClaimLimit = try integer("jobs.claim.limit", 1...1000, default: config.jobsClaimLimit)
        config.jobsBatchCompletions = try boolean("jobs.batch.completions", default: config.jobsBatchCompletions)
        config.catalog.cacheTTL = .seconds(
            try integer("catalog.cache.ttl", 0...86_400, default: Int(config.catalog.cacheTTL.components.seconds)))
        config.catalog.cacheCapacity = try integer("catalog.cache.size", 16...10_000_000, default: config.catalog.cacheCapacity)
        config.catalog.readTimeout = .milliseconds(
            try integer("catalog.read.timeout.ms", 10...600_000, default: Int(config.catalog.readTimeout.components.seconds) * 1000))
        config.fileQuotas.maxFileBytes = Int64(try integer("files.max.size", 1...(1 << 50), default: Int(config.fileQuotas.maxFileBytes)))
        config.fileQuotas.maxTotalBytes = Int64(try integer("files.max.total", 1...(1 << 50), default: Int(config.fileQuotas.maxTotalBytes)))
        config.fileQuotas.maxBytesPerHour = Int64(
            try integer("files.max.per.hour", 1...(1 << 50), default: Int(config.fileQuotas.maxBytesPerHour)))
        config.notifications.retentionSeconds = try duration("notifications.retention", default: config.notifications.retentionSeconds)
        // At most 2,000: a batch's insert binds 11 values per row, and SQLite allows 32,766.
        config.notifications.batchSize = try integer("notifications.batch.size", 1...2000, default: config.notifications.batchSize)
        config.pipelines.timeoutSeconds = Double(try duration("pipeline.timeout", default: Int(config.pipelines.timeoutSeconds)))
        config.pipelines.threads = try integer("pipeline.threads", 1...64, default: config.pipelines.threads)
        config.uploadsExpiry = try duration("uploads.expiry", default: config.uploadsExpiry)
        if let allow = text("webhooks.allow.private") {
            guard let value = ["true": true, "1": true, "false": false, "0": false][allow.lowercased()] else {
                throw ConfigurationError(setting: "CAIRN_WEBHOOKS_ALLOW_PRIVATE", problem: "must be true or false, got '\(allow)'")
            }
            config.outbound.allowPrivateWebhookTargets = value
        }
        for (key, setting) in [
            ("sendgrid.url", \ProviderEndpoints.sendGrid), ("fcm.url", \.fcm), ("fcm.token.url", \.fcmToken), ("apns.url", \.apns),
            ("apns.sandbox.url", \.apnsSandbox),
        ] {
            guard let url = text(key) else { continue }
            guard let parsed = URL(string: url), parsed.scheme == "https" || parsed.scheme == "http", parsed.host != nil, !url.hasSuffix("/") else {
                throw ConfigurationError(
                    setting: "CAIRN_" + key.uppercased().replacingOccurrences(of: ".", with: "_"),
                    problem: "must be an http(s) URL without a trailing /")
            }
            config.outbound.providers[keyPath: setting] = url
        }
        if let caFile = text("providers.ca.file"), !caFile.isEmpty {
            guard FileManager.default.isReadableFile(atPath: caFile) else {
                throw ConfigurationError(setting: "CAIRN_PROVIDERS_CA_FILE", problem: "must be a readable PEM file")
            }
            config.outbound.providers.caFile = caFile
        }
        if let format = text("log.format") {
            guard ["text", "json"].contains(format) else {
                throw ConfigurationError(setting: "CAIRN_LOG_FORMAT", problem: "must be text or json, got '\(format)'")
            }
            config.logFormat = format
        }
        if let level = text("log.level") {
            guard ["trace", "debug", "info", "notice", "warning", "error", "critical"].contains(level) else {
                throw ConfigurationError(setting: "CAIRN_LOG_LEVEL", problem: "must be one of trace, debug, info, notice, warning, error, critical")
            }
            config.logLevel = level
        }
        return config
    }

    /// Seconds from `900`, `90s`, `15m`, `12h` or `30d`.
    static func parseDuration(_ raw: String) -> Int? {
        let text = raw.trimmingCharacters(in: .whitespaces).lowercased()
        guard let last = text.last else { return nil }
        let units: [Character: Int] = ["s": 1, "m": 60, "h": 3600, "d": 86_400]
        if let unit = units[last] {
            return Int(text.dropLast()).map { $0 * unit }
        }
        return Int(text)
    }
}
