package import CairnAccounts
package import CairnCatalog
package import CairnFiles
package import CairnHTTP
package import CairnJobs
package import CairnNotifications
package import CairnOutbound
package import CairnPipelines
package import CairnStorage
import Configuration
import Foundation
import SystemPackage

/// Everything `cairn serve` can be told. Sources, highest precedence first: command-line flags,
/// environment (`CAIRN_*`), an optional JSON file (`--config` / `CAIRN_CONFIG_FILE`, keys
/// nested as in `{"http": {"port": 8080}}`), then these defaults.
package struct CairnConfiguration: Sendable {
    /// Listen address (`CAIRN_HTTP_HOST`, default 127.0.0.1).
    package var httpHost = "127.0.0.1"
    /// Listen port (`CAIRN_HTTP_PORT`, default 8080; 0 picks a free port).
    package var httpPort = 8080
    /// Connection timeouts, the header block limit and WebSocket compression
    /// (`CAIRN_HTTP_HEAD_TIMEOUT`, `CAIRN_HTTP_IDLE_TIMEOUT`, `CAIRN_HTTP_BODY_TIMEOUT`, `CAIRN_HTTP_DRAIN_TIMEOUT`,
    /// `CAIRN_WS_DEFLATE`).
    package var http = HTTPTransportSettings()
    /// Data directory for the SQLite file and signing keys (`CAIRN_DATA_DIR`, default ./cairn-data),
    /// made absolute against the working directory when loaded.
    package var dataDir = "./cairn-data"
    /// `postgres://…` to run on PostgreSQL (`CAIRN_DATABASE_URL`); nil runs on embedded SQLite.
    package var databaseURL: String?
    /// The master key secrets at rest are sealed under (`CAIRN_MASTER_KEY`, 32 bytes in
    /// base64); nil uses `<data dir>/master.key`, generated on first start with mode 0600.
    package var masterKey: MasterKey?
    /// Accounts and tokens (`CAIRN_JWT_SECRET`, `CAIRN_ACCESS_TOKEN_TTL`, `CAIRN_REFRESH_TOKEN_TTL`,
    /// `CAIRN_BCRYPT_COST`, `CAIRN_BCRYPT_THREADS`, `CAIRN_BCRYPT_QUEUE`, `CAIRN_LOGIN_*`, `CAIRN_REGISTER_*`,
    /// `CAIRN_PASSWORD_CHANGE_*`).
    package var accounts = AccountSettings()
    /// Reverse proxies whose `Forwarded` / `X-Forwarded-For` headers name the client
    /// (`CAIRN_TRUSTED_PROXIES`, comma-separated CIDR blocks; default none).
    package var trustedProxies = TrustedProxies()
    /// Browser origins allowed to call the API (`CAIRN_CORS_ORIGINS`, comma-separated exact
    /// origins; default none: CORS off).
    package var corsOrigins = CORSOrigins()
    /// `text` or `json` (`CAIRN_LOG_FORMAT`).
    package var logFormat = "text"
    /// swift-log level (`CAIRN_LOG_LEVEL`, default info).
    package var logLevel = "info"
    /// Apply pending migrations on start (`serve --no-migrate` turns it off).
    package var migrateOnStart = true
    /// The job system (`CAIRN_JOBS_*`: concurrency, lease, per-tenant caps, shutdown grace,
    /// retention, claim limit, batched completions).
    package var jobs = JobsSettings()
    /// `Idempotency-Key` handling (`CAIRN_IDEMPOTENCY_LEASE`: how long a key whose request
    /// never finished stays claimed, default 60 s).
    package var idempotency = IdempotencySettings()
    /// Catalog cache and circuit breaker (`CAIRN_CATALOG_CACHE_TTL`, `CAIRN_CATALOG_CACHE_SIZE`,
    /// `CAIRN_CATALOG_READ_TIMEOUT_MS`).
    package var catalog = CatalogSettings()
    /// Notifications (`CAIRN_NOTIFICATIONS_RETENTION`, default 90d; `CAIRN_NOTIFICATIONS_BATCH_SIZE`
    /// and `CAIRN_NOTIFICATIONS_PUBLISH_BATCH`, default 500; the rest tests shorten).
    package var notifications = NotificationSettings()
    /// Webhooks, email and push (`CAIRN_WEBHOOKS_ALLOW_PRIVATE`, the providers' URLs and
    /// `CAIRN_PROVIDERS_CA_FILE`; attempts and timeouts tests shorten).
    package var outbound = OutboundSettings()
    /// Files and uploads (`CAIRN_FILES_MAX_SIZE`, `CAIRN_FILES_MAX_TOTAL`, `CAIRN_FILES_MAX_PER_HOUR`,
    /// `CAIRN_UPLOADS_EXPIRY`).
    package var files = FilesSettings()
    /// Pipeline runs: query time limit (`CAIRN_PIPELINE_TIMEOUT`, seconds), runs at once
    /// (`CAIRN_PIPELINE_THREADS`, `CAIRN_PIPELINE_MAX_RUNNING_PER_TENANT`) and each sandbox
    /// process's limits (`CAIRN_PIPELINE_MEMORY`, `CAIRN_PIPELINE_CPU`,
    /// `CAIRN_PIPELINE_MAX_OUTPUT`); the work folder is `<data dir>/pipelines`.
    package var pipelines = PipelineSettings()
    /// Creates the defaults.
    package init() {}

    /// The SQLite database file inside the data directory.
    package var sqlitePath: String { dataDir + "/cairn.sqlite" }
    /// The Ed25519 key ring inside the data directory.
    package var keyFile: String { dataDir + "/jwt-keys.json" }
    /// The generated master key, used when `CAIRN_MASTER_KEY` is not set.
    package var masterKeyFile: String { dataDir + "/master.key" }

    /// Creates the data directory and any missing parents (`permissions` for what it creates,
    /// under the umask) when it does not exist yet.
    /// - Throws: ``ConfigurationError`` naming `CAIRN_DATA_DIR`, the directory and the
    ///   operating system's reason (`No such file or directory`, `Not a directory`, …), which
    ///   `cairn` prints as a configuration error (exit 2) instead of Foundation's error text.
    package func createDataDir(permissions: Int? = 0o700) throws(ConfigurationError) {
        // mkdir(2) one level at a time, as `mkdir -p` does: Foundation's error on Linux keeps no
        // errno, so its text could not say why.
        let absolute = URL(fileURLWithPath: dataDir).standardizedFileURL.path
        var path = ""
        for component in absolute.split(separator: "/") {
            path += "/" + component
            guard mkdir(path, mode_t(permissions ?? 0o777)) != 0 else { continue }
            var code = errno
            if code == EEXIST {
                var isDirectory: ObjCBool = false
                if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue { continue }
                code = ENOTDIR
            }
            throw ConfigurationError(
                setting: "CAIRN_DATA_DIR", problem: "'\(dataDir)' cannot be used as the data directory: \(String(cString: strerror(code)))")
        }
    }

    /// The settings that are optional switches, unset meaning a built-in choice (embedded SQLite,
    /// a generated Ed25519 key, blobs in the data directory, the system's CAs), keyed as flags
    /// are (`database.url`): set to an empty value, each counts as not set, as Compose writes
    /// `${VAR:-}` for a variable it has no value for, and the next source (the configuration
    /// file) decides, as for a variable not set at all. An empty value of any other setting is
    /// refused (exit 2), as before.
    static let emptyMeansUnset = ["database.url", "jwt.secret", "blob.url", "providers.ca.file"]

    /// Reads the configuration.
    /// - Parameters:
    ///   - flags: values given on the command line, keyed like `http.port`.
    ///   - environment: the process environment (tests pass their own).
    /// - Throws: `ConfigurationError` naming the first bad setting.
    package static func load(flags: [String: String] = [:], environment: [String: String] = ProcessInfo.processInfo.environment) async throws
        -> CairnConfiguration
    {
        var providers: [any ConfigProvider] = []
        var flagValues: [AbsoluteConfigKey: ConfigValue] = [:]
        let skipped = Set(emptyMeansUnset.map { "CAIRN_" + $0.replacingOccurrences(of: ".", with: "_").uppercased() })
        let environment = environment.filter { !($0.value.isEmpty && skipped.contains($0.key)) }
        for (key, value) in flags where !(value.isEmpty && emptyMeansUnset.contains(key)) {
            flagValues[AbsoluteConfigKey(key.split(separator: ".").map(String.init))] = ConfigValue(
                .string(value), isSecret: key == "jwt.secret" || key == "master.key")
        }
        providers.append(InMemoryProvider(name: "flags", values: flagValues))
        providers.append(
            EnvironmentVariablesProvider(
                environmentVariables: environment, secretsSpecifier: .specific(["CAIRN_JWT_SECRET", "CAIRN_DATABASE_URL", "CAIRN_MASTER_KEY"])
            )
            .prefixKeys(with: ["cairn"]))
        // Named as the operator gave it: the flag wins over the variable.
        let fileSetting = flags["config.file"] != nil ? "--config" : "CAIRN_CONFIG_FILE"
        var file: (path: String, content: ConfigurationFile)?
        if let path = flags["config.file"] ?? environment["CAIRN_CONFIG_FILE"] {
            // Strictly first: swift-configuration's reader takes a trailing comma and a repeated
            // member, and refuses a top-level array without saying where.
            let content = try ConfigurationFile.read(path, setting: fileSetting)
            do {
                providers.append(try await FileProvider<JSONSnapshot>(filePath: FilePath(path)))
            } catch {
                // What the strict reader lets through and swift-configuration refuses: a list
                // mixing strings and numbers, which no setting takes anyway.
                try checkValueKinds(of: content, path: path, setting: fileSetting)
                throw ConfigurationError(setting: fileSetting, problem: "'\(path)' cannot be read as configuration: \(error)")
            }
            file = (path, content)
        }
        let sources = SettingSources(
            flags: Set(flagValues.keys.map { $0.components.joined(separator: ".") }), environment: Set(environment.keys),
            file: file?.content.leaves.compactMapValues { leaf in
                switch leaf.kind {
                case .boolean: .boolean
                case .integer: .number
                case .string: .string
                case .decimal, .list, .null: nil
                }
            } ?? [:],
            fileSetting: fileSetting)
        let settings = SettingsReader(ConfigReader(providers: providers), sources: sources)
        var config = CairnConfiguration()
        if let host = settings.text("http.host") {
            guard !host.isEmpty, !host.contains(where: { $0.isWhitespace || $0 == "/" }) else {
                throw settings.invalid("http.host", "must be a host name or IP address, got '\(host)'")
            }
            config.httpHost = host
        }
        config.httpPort = try settings.integer("http.port", in: 0...65_535, default: config.httpPort)
        try config.http.read(from: settings)
        if let dir = settings.text("data.dir") {
            guard !dir.isEmpty else { throw settings.invalid("data.dir", "must not be empty") }
            config.dataDir = dir
        }
        // Absolute from here on: pipeline sandbox processes run in their own work folders, where
        // a path relative to the server's working directory would name nothing.
        config.dataDir = URL(fileURLWithPath: config.dataDir).standardizedFileURL.path
        if let url = settings.text("database.url"), !url.isEmpty {
            // Named as the operator gave it: the flag wins over the variable.
            let setting = flags["database.url"]?.isEmpty == false ? "--database-url" : settings.setting("database.url")
            // Schemes compare in any case (RFC 3986 §3.1).
            let scheme = url.prefix(while: { $0 != ":" }).lowercased()
            guard (scheme == "postgres" || scheme == "postgresql") && url.dropFirst(scheme.count).hasPrefix("://") else {
                throw ConfigurationError(setting: setting, problem: "must start with postgres:// (leave it unset for embedded SQLite)")
            }
            do { try Database.checkPostgresURL(url) } catch let error as StorageError {
                // The setting is named once, by the configuration error: the storage message's
                // own `CAIRN_DATABASE_URL ` goes.
                let prefix = "CAIRN_DATABASE_URL "
                let problem = error.message.hasPrefix(prefix) ? String(error.message.dropFirst(prefix.count)) : error.message
                throw ConfigurationError(setting: setting, problem: problem)
            }
            config.databaseURL = url
        }
        // Set but empty counts as set: taken for unset, a node would write a new master.key
        // and then refuse the database sealed under the intended key.
        if let text = settings.text("master.key") ?? environment["CAIRN_MASTER_KEY"] {
            // The message never repeats the value: it is a secret.
            guard let key = try? MasterKey(base64: text) else {
                throw settings.invalid("master.key", "must be 32 bytes in base64 (unset it to use the data directory's master.key)")
            }
            config.masterKey = key
        }
        if let format = settings.text("log.format") {
            guard ["text", "json"].contains(format) else { throw settings.invalid("log.format", "must be text or json, got '\(format)'") }
            config.logFormat = format
        }
        if let level = settings.text("log.level") {
            guard ["trace", "debug", "info", "notice", "warning", "error", "critical"].contains(level) else {
                throw settings.invalid("log.level", "must be one of trace, debug, info, notice, warning, error, critical")
            }
            config.logLevel = level
        }
        if let proxies = settings.text("trusted.proxies") {
            do {
                config.trustedProxies = try TrustedProxies(parsing: proxies)
            } catch let error as TrustedProxies.Invalid {
                throw settings.invalid("trusted.proxies", error.description)
            }
        }
        if let origins = settings.text("cors.origins") {
            do {
                config.corsOrigins = try CORSOrigins(parsing: origins)
            } catch let error as CORSOrigins.Invalid {
                throw settings.invalid("cors.origins", error.description)
            }
        }
        // Each module reads its own settings from its own scope.
        try config.accounts.read(from: settings)
        try config.jobs.read(from: settings.scoped(to: "jobs"))
        try config.idempotency.read(from: settings.scoped(to: "idempotency"))
        try config.catalog.read(from: settings.scoped(to: "catalog"))
        try config.files.read(from: settings)
        try config.files.readStore(environment: environment)
        try config.notifications.read(from: settings.scoped(to: "notifications"))
        try config.outbound.read(from: settings)
        try config.pipelines.read(from: settings.scoped(to: "pipeline"))
        let known = settings.keysRead.union(readBeforeLoad)
        if let file {
            try checkKeys(of: file.content, path: file.path, known: known, setting: fileSetting)
            // The typed settings refuse a boolean as they read it; the rest read text, and
            // swift-configuration gives `true` as `1` (`"host": true` would listen on "1").
            let booleans = settings.keysReadAsBooleans
            for (key, leaf) in file.content.leaves.sorted(by: { $0.key < $1.key }) where leaf.kind == .boolean && !booleans.contains(key) {
                let overridden =
                    flagValues[AbsoluteConfigKey(key.split(separator: ".").map(String.init))] != nil
                    || environment["CAIRN_" + key.replacingOccurrences(of: ".", with: "_").uppercased()] != nil
                if !overridden {
                    throw ConfigurationError(setting: "\(key) in \(fileSetting) file", problem: "must be a string, not a boolean")
                }
            }
        }
        config.knownVariables = Set(known.map { "CAIRN_" + $0.replacingOccurrences(of: ".", with: "_").uppercased() }).union(
            variablesReadElsewhere)
        return config
    }

    /// A `CAIRN_*` environment variable that no setting reads: most often a typo
    /// (`CAIRN_JOBS_CONCURENCY`), which would otherwise leave the default in place unsaid.
    package struct UnknownVariable: Sendable, Equatable, CustomStringConvertible {
        /// The variable as set.
        package var name: String
        /// The known variable nearest to it, when one is close.
        package var meant: String?

        /// Names `name`, and the variable `meant`.
        package init(name: String, meant: String?) {
            self.name = name
            self.meant = meant
        }

        /// `CAIRN_JOBS_CONCURENCY (did you mean CAIRN_JOBS_CONCURRENCY?)`.
        package var description: String { meant.map { "\(name) (did you mean \($0)?)" } ?? name }
    }

    /// Every `CAIRN_*` variable a setting or a command reads (`CAIRN_JOBS_CONCURRENCY`,
    /// `CAIRN_CONFIG_FILE`, …), as the last load found them.
    package var knownVariables: Set<String> = []

    /// Variables with the `CAIRN_` prefix read by something other than the settings: the
    /// configuration file's path, the secrets of `cairn user create` and `cairn keys
    /// rotate-master`, and those of the tests, benchmarks and scripts, which may share the
    /// environment a node runs in.
    static let variablesReadElsewhere: Set<String> = [
        "CAIRN_CONFIG_FILE", "CAIRN_USER_PASSWORD", "CAIRN_NEW_MASTER_KEY", "CAIRN_BINARY", "CAIRN_BIN", "CAIRN_SHARED_DATA",
        "CAIRN_CONSOLE_SCREENSHOTS",
    ]

    /// Prefixes of variables the tests (`CAIRN_TEST_POSTGRES_URL`, …) and the fuzzing script
    /// (`CAIRN_FUZZ_TARGET`, …) read: never a node's.
    static let prefixesReadElsewhere = ["CAIRN_TEST_", "CAIRN_FUZZ_"]

    /// The variables of `environment` that start with `CAIRN_` and are neither one of
    /// ``knownVariables`` nor under a prefix the tests and scripts use, sorted, each with the
    /// known variable it is closest to when one is close. `cairn` logs them as a warning when a
    /// command starts rather than stopping: other tools may use the prefix too.
    package func unknownVariables(in environment: [String: String]) -> [UnknownVariable] {
        // Compared without the prefix, so the distance allowed follows the part that differs.
        let stems = Set(knownVariables.map { String($0.dropFirst("CAIRN_".count)) })
        return environment.keys
            .filter { name in
                name.hasPrefix("CAIRN_") && !knownVariables.contains(name) && !Self.prefixesReadElsewhere.contains { name.hasPrefix($0) }
            }
            .sorted()
            .map { name in
                UnknownVariable(name: name, meant: Self.nearest(to: String(name.dropFirst("CAIRN_".count)), in: stems).map { "CAIRN_" + $0 })
            }
    }

    /// Keys of the configuration file that `cairn` reads before the configuration is loaded
    /// (the executor is chosen before any task runs), so no settings reader looks them up.
    static let readBeforeLoad: Set<String> = ["concurrency.executor"]

    /// Refuses a configuration file with keys no setting reads: a typo (`jobs.concurency`)
    /// would otherwise be dropped without a word and the default used. So is a value of a kind
    /// no setting takes (see ``checkValueKinds(of:path:setting:)``).
    /// - Throws: ``ConfigurationError`` naming `setting` and every unknown key, each with the
    ///   nearest known key when one is close, or else every value of a kind no setting takes.
    static func checkKeys(of file: ConfigurationFile, path: String, known: Set<String>, setting: String) throws(ConfigurationError) {
        let unknown = file.leaves.keys.filter { !known.contains($0) }.sorted()
        if !unknown.isEmpty {
            let named = unknown.map { key in nearest(to: key, in: known).map { "\(key) (did you mean \($0)?)" } ?? key }
            throw ConfigurationError(setting: setting, problem: "'\(path)' has keys no setting reads: \(named.joined(separator: ", "))")
        }
        try checkValueKinds(of: file, path: path, setting: setting)
    }

    /// Refuses a value of a kind no setting takes (settings are strings, whole numbers and
    /// booleans): a decimal such as `"lease": 4.5`, a list or a null reads as not set, so the
    /// default would be used without a word.
    /// - Throws: ``ConfigurationError`` naming `setting` and every such value.
    static func checkValueKinds(of file: ConfigurationFile, path: String, setting: String) throws(ConfigurationError) {
        let untaken = file.leaves.compactMap { key, leaf in leaf.kind.noSettingTakes.map { "\(key) (\($0))" } }.sorted()
        if !untaken.isEmpty {
            throw ConfigurationError(
                setting: setting,
                problem:
                    "'\(path)' has values no setting takes (a setting is a string, a whole number or a boolean): \(untaken.joined(separator: ", "))")
        }
    }

    /// The known key nearest to `key` in edit distance (any case), when it is within a third
    /// of `key`'s length and at most 3 edits.
    static func nearest(to key: String, in known: Set<String>) -> String? {
        let target = Array(key.lowercased())
        let limit = min(3, target.count / 3)
        let (best, distance) = known.sorted().map { ($0, editDistance(target, Array($0.lowercased()))) }.min { $0.1 < $1.1 } ?? ("", Int.max)
        return distance <= limit ? best : nil
    }

    /// Levenshtein distance between `a` and `b`.
    static func editDistance(_ a: [Character], _ b: [Character]) -> Int {
        var previous = Array(0...b.count)
        for (i, x) in a.enumerated() {
            var current = [i + 1]
            for (j, y) in b.enumerated() {
                current.append(min(previous[j + 1] + 1, current[j] + 1, previous[j] + (x == y ? 0 : 1)))
            }
            previous = current
        }
        return previous[b.count]
    }
}
