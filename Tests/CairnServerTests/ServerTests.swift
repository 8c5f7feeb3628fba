import CairnAccounts
import CairnCatalog
import CairnFiles
import CairnHTTP
import CairnJobs
import CairnNotifications
import CairnOutbound
import CairnPipelines
import CairnServer
import CairnStorage
import CairnTestSupport
import Foundation
import HTTPTypes
import HummingbirdTesting
import NIOCore
import Testing

@Suite("Configuration")
struct ConfigurationTests {
    /// A relative data directory is resolved once, against the working directory: the pipeline
    /// sandbox runs in a folder of its own, where a relative blob path named nothing.
    @Test func aRelativeDataDirectoryIsMadeAbsolute() async throws {
        let config = try await CairnConfiguration.load(flags: ["data.dir": "some/./data"], environment: [:])
        #expect(config.dataDir == FileManager.default.currentDirectoryPath + "/some/data")
        #expect(config.sqlitePath.hasPrefix("/"))
    }

    @Test func defaultsServeALaptop() async throws {
        let config = try await CairnConfiguration.load(flags: [:], environment: [:])
        #expect(config.httpHost == "127.0.0.1")
        #expect(config.httpPort == 8080)
        #expect(config.dataDir == FileManager.default.currentDirectoryPath + "/cairn-data")
        #expect(config.databaseURL == nil)
        #expect(config.accounts.accessTokenTTL == 900)
        #expect(config.accounts.refreshTokenTTL == 30 * 86_400)
        #expect(config.accounts.bcryptCost == 12)
    }

    @Test func flagsWinOverEnvironmentWhichWinsOverTheFile() async throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("cairn-config-\(UUID().uuidString).json").path
        try Data(#"{"http": {"port": 7001, "host": "0.0.0.0"}, "bcrypt": {"cost": 10}, "log": {"format": "json"}}"#.utf8)
            .write(to: URL(fileURLWithPath: file))
        let environment = ["CAIRN_CONFIG_FILE": file, "CAIRN_HTTP_PORT": "7002", "CAIRN_ACCESS_TOKEN_TTL": "15m", "CAIRN_BCRYPT_COST": "11"]
        let config = try await CairnConfiguration.load(flags: ["http.port": "7003"], environment: environment)
        #expect(config.httpPort == 7003)  // flag
        #expect(config.accounts.bcryptCost == 11)  // environment over file
        #expect(config.httpHost == "0.0.0.0")  // file
        #expect(config.logFormat == "json")  // file
        #expect(config.accounts.accessTokenTTL == 900)
        let withoutFlag = try await CairnConfiguration.load(flags: [:], environment: environment)
        #expect(withoutFlag.httpPort == 7002)
        let fileOnly = try await CairnConfiguration.load(flags: [:], environment: ["CAIRN_CONFIG_FILE": file])
        #expect(fileOnly.httpPort == 7001)
    }

    /// An optional switch set to an empty value (`CAIRN_DATABASE_URL=`, as Compose writes
    /// `${VAR:-}`) counts as not set, as it did without a file: the configuration file then
    /// decides. Before, the empty variable hid the file's PostgreSQL URL and the node started
    /// on a SQLite file of its own; an empty value of a setting that is not such a switch still
    /// stops start-up (`CAIRN_HTTP_PORT=`).
    @Test func anEmptyOptionalSettingLetsTheFileDecide() async throws {
        let url = "postgres://cairn@127.0.0.1:5432/cairn"
        let secret = String(repeating: "s", count: 32)
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("cairn-config-\(UUID().uuidString).json").path
        try JSONSerialization.data(withJSONObject: ["database": ["url": url], "jwt": ["secret": secret]]).write(to: URL(fileURLWithPath: file))
        defer { try? FileManager.default.removeItem(atPath: file) }
        let empty = ["CAIRN_CONFIG_FILE": file, "CAIRN_DATABASE_URL": "", "CAIRN_JWT_SECRET": ""]
        let fromFile = try await CairnConfiguration.load(flags: [:], environment: empty)
        #expect(fromFile.databaseURL == url)
        #expect(fromFile.accounts.jwtSecret == secret)
        let emptyFlag = try await CairnConfiguration.load(flags: ["database.url": ""], environment: ["CAIRN_CONFIG_FILE": file])
        #expect(emptyFlag.databaseURL == url)
        // Without a file, empty is unset as before: embedded SQLite.
        let noFile = try await CairnConfiguration.load(flags: [:], environment: ["CAIRN_DATABASE_URL": ""])
        #expect(noFile.databaseURL == nil)
        await #expect(throws: ConfigurationError.self) {
            try await CairnConfiguration.load(flags: [:], environment: ["CAIRN_CONFIG_FILE": file, "CAIRN_HTTP_PORT": ""])
        }
    }

    /// A key of the configuration file that no setting reads stops start-up, naming every such
    /// key and, when one is close, the known key meant: a fresh-user trial's typo
    /// (`jobs.concurency`) was dropped without a word and the default used.
    @Test func keysOfTheFileThatNoSettingReadsAreRefused() async throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("cairn-config-\(UUID().uuidString).json").path
        defer { try? FileManager.default.removeItem(atPath: file) }
        try JSONSerialization.data(withJSONObject: [
            "jobs": ["concurency": 4, "lease": 30], "HTTP": ["port": 9000], "nonsense": true, "concurrency": ["executor": "swift"],
        ]).write(to: URL(fileURLWithPath: file))
        for (flags, environment, setting) in [
            ([:], ["CAIRN_CONFIG_FILE": file], "CAIRN_CONFIG_FILE"), (["config.file": file], [:], "--config"),
        ] {
            do {
                _ = try await CairnConfiguration.load(flags: flags, environment: environment)
                Issue.record("a file with unknown keys was accepted")
            } catch let error as ConfigurationError {
                #expect(error.setting == setting)
                #expect(error.description.contains("jobs.concurency (did you mean jobs.concurrency?)"), "\(error)")
                #expect(error.description.contains("HTTP.port (did you mean http.port?)"), "\(error)")
                #expect(error.description.contains("nonsense"), "\(error)")
                // Known keys are not named, the executor's (read before the configuration) included.
                #expect(!error.description.contains("jobs.lease") && !error.description.contains("concurrency.executor"), "\(error)")
                #expect(!error.description.contains("\n"))
            }
        }
        // Known keys only, nested or dotted as swift-configuration reads them: the file loads.
        try JSONSerialization.data(withJSONObject: ["jobs.lease": 45, "http": ["port": 9000], "concurrency": ["executor": "swift"]])
            .write(to: URL(fileURLWithPath: file))
        let config = try await CairnConfiguration.load(flags: [:], environment: ["CAIRN_CONFIG_FILE": file])
        #expect(config.jobs.leaseSeconds == 45)
        #expect(config.httpPort == 9000)
    }

    /// A value no setting takes would read as not set, and the default would be used without a
    /// word: a decimal, a list or a null under a known key is refused, naming each.
    @Test func valuesOfAKindNoSettingTakesAreRefused() async throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("cairn-config-\(UUID().uuidString).json").path
        defer { try? FileManager.default.removeItem(atPath: file) }
        try Data(#"{"jobs": {"lease": 4.5, "concurrency": 4}, "cors": {"origins": ["https://a.example"]}, "http": {"port": null}}"#.utf8)
            .write(to: URL(fileURLWithPath: file))
        do {
            _ = try await CairnConfiguration.load(flags: ["config.file": file], environment: [:])
            Issue.record("a file with a decimal, a list and a null was accepted")
        } catch let error as ConfigurationError {
            #expect(error.setting == "--config")
            #expect(error.description.contains("cors.origins (a list), http.port (null), jobs.lease (a decimal number)"), "\(error)")
            #expect(!error.description.contains("jobs.concurrency"), "\(error)")
        }
        try Data(#"{"jobs": {"lease": 45, "concurrency": 4}, "cors": {"origins": "https://a.example"}, "http": {"port": 9000}}"#.utf8)
            .write(to: URL(fileURLWithPath: file))
        let config = try await CairnConfiguration.load(flags: ["config.file": file], environment: [:])
        #expect(config.jobs.leaseSeconds == 45)
    }

    /// A JSON boolean in the file for a setting that takes a number, a duration or text stops
    /// start-up naming the key and the kind it takes: swift-configuration read `true` as 1, so
    /// a fresh-user trial's `{"http": {"port": true}}` listened on port 1. A number for a
    /// boolean setting is refused the same way; a boolean for one loads.
    @Test(arguments: [
        (#"{"http": {"port": true}}"#, "http.port", "must be an integer from 0 to 65535, not a boolean"),
        (#"{"jobs": {"concurrency": true}}"#, "jobs.concurrency", "must be an integer from"),
        (#"{"jobs": {"lease": false}}"#, "jobs.lease", "must be a duration from"),
        (#"{"http": {"host": true}}"#, "http.host", "must be a string, not a boolean"),
        (#"{"log": {"format": true}}"#, "log.format", "must be text or json, got 'true'"),
        (#"{"jobs": {"batch": {"completions": 1}}}"#, "jobs.batch.completions", "must be true or false, not a number"),
        (#"{"webhooks": {"allow": {"private": 0}}}"#, "webhooks.allow.private", "must be true or false, not a number"),
    ])
    func aValueOfTheWrongJSONKindIsRefused(text: String, key: String, problem: String) async throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("cairn-config-\(UUID().uuidString).json").path
        defer { try? FileManager.default.removeItem(atPath: file) }
        try Data(text.utf8).write(to: URL(fileURLWithPath: file))
        do {
            let config = try await CairnConfiguration.load(flags: ["config.file": file], environment: [:])
            Issue.record("accepted \(text): port \(config.httpPort), concurrency \(config.jobs.concurrency)")
        } catch let error as ConfigurationError {
            #expect(error.setting == "\(key) in --config file", "\(error)")
            #expect(error.problem.hasPrefix(problem), "\(error)")
        }
    }

    /// Booleans are `true` or `false` (any case), as the README says, from every source:
    /// `yes` and `1` were read as true by swift-configuration's environment provider. A JSON
    /// boolean in the file still loads for a boolean setting, and a flag that wins over a
    /// wrongly kinded file value leaves nothing to refuse.
    @Test func aBooleanIsTrueOrFalse() async throws {
        for value in ["yes", "1", "on", "0", "no"] {
            do {
                _ = try await CairnConfiguration.load(flags: [:], environment: ["CAIRN_JOBS_BATCH_COMPLETIONS": value])
                Issue.record("accepted CAIRN_JOBS_BATCH_COMPLETIONS=\(value)")
            } catch let error as ConfigurationError {
                #expect(error.setting == "CAIRN_JOBS_BATCH_COMPLETIONS")
                #expect(error.problem == "must be true or false, got '\(value)'")
            }
        }
        let on = try await CairnConfiguration.load(flags: [:], environment: ["CAIRN_JOBS_BATCH_COMPLETIONS": "TRUE"])
        #expect(on.jobs.batchCompletions == true)
        let off = try await CairnConfiguration.load(flags: [:], environment: ["CAIRN_JOBS_BATCH_COMPLETIONS": "false"])
        #expect(off.jobs.batchCompletions == false)
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("cairn-config-\(UUID().uuidString).json").path
        defer { try? FileManager.default.removeItem(atPath: file) }
        try Data(#"{"jobs": {"batch": {"completions": false}}, "webhooks": {"allow": {"private": true}}, "http": {"port": true}}"#.utf8)
            .write(to: URL(fileURLWithPath: file))
        let config = try await CairnConfiguration.load(flags: ["config.file": file, "http.port": "9000"], environment: [:])
        #expect(config.jobs.batchCompletions == false)
        #expect(config.outbound.allowPrivateWebhookTargets == true)
        #expect(config.httpPort == 9000)
    }

    /// A bad value is named by the source that gave it: the file's key when the file did (a
    /// fresh-user trial saw the file's value named as `CAIRN_JOBS_MAX_SCHEDULES_PER_TENANT`),
    /// the variable when the environment did.
    @Test func aBadValueIsNamedByItsSource() async throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("cairn-config-\(UUID().uuidString).json").path
        defer { try? FileManager.default.removeItem(atPath: file) }
        try Data(#"{"jobs": {"max": {"schedules": {"per": {"tenant": 0}}}}, "database": {"url": "mysql://x"}}"#.utf8)
            .write(to: URL(fileURLWithPath: file))
        for (flags, environment, setting) in [(["config.file": file], [:], "--config"), ([:], ["CAIRN_CONFIG_FILE": file], "CAIRN_CONFIG_FILE")] {
            do {
                _ = try await CairnConfiguration.load(flags: flags, environment: environment)
                Issue.record("accepted a bad database URL")
            } catch let error as ConfigurationError {
                #expect(error.setting == "database.url in \(setting) file", "\(error)")
            }
            let url = ["CAIRN_DATABASE_URL": "postgres://cairn@127.0.0.1/cairn"]
            do {
                _ = try await CairnConfiguration.load(flags: flags, environment: environment.merging(url) { $1 })
                Issue.record("accepted 0 schedules per tenant")
            } catch let error as ConfigurationError {
                #expect(error.setting == "jobs.max.schedules.per.tenant in \(setting) file", "\(error)")
                #expect(error.problem.hasPrefix("must be an integer from 1 to"), "\(error)")
            }
            // From the environment, named by the variable.
            do {
                _ = try await CairnConfiguration.load(
                    flags: flags, environment: environment.merging(url) { $1 }.merging(["CAIRN_JOBS_MAX_SCHEDULES_PER_TENANT": "-1"]) { $1 })
                Issue.record("accepted -1 schedules per tenant")
            } catch let error as ConfigurationError {
                #expect(error.setting == "CAIRN_JOBS_MAX_SCHEDULES_PER_TENANT", "\(error)")
            }
        }
    }

    /// The configuration file is read as strict RFC 8259 JSON, each fault stopping start-up in
    /// one line with where it is: a fresh-user trial found a trailing comma taken, a member
    /// given twice silently taking the last value, and a top-level array refused as "missing or
    /// not valid JSON".
    @Test(arguments: [
        (#"{"http": {"port": 7001,}}"#, ["is not valid JSON at line 1, column 23: a trailing comma"]),
        ("{\n  \"cors\": {\"origins\": [\"https://a.example\" , ]}\n}", ["at line 2, column 44: a trailing comma"]),
        (
            "{\n  \"jobs\": {\"lease\": 30},\n  \"jobs\": {\"concurrency\": 4}\n}",
            ["repeats the key jobs at line 3, column 3 (first at line 2, column 3)"]
        ),
        (#"{"jobs": {"lease": 30, "lease": 45}}"#, ["repeats the key jobs.lease at line 1, column 24 (first at line 1, column 11)"]),
        // One setting, nested and dotted: swift-configuration keeps either value.
        (#"{"jobs": {"lease": 30}, "jobs.lease": 45}"#, ["repeats the key jobs.lease at line 1, column 25"]),
        (#"[{"http": {"port": 7001}}]"#, ["holds an array at line 1, column 1: the configuration file must hold a JSON object"]),
        (#""http.port=7001""#, ["holds a string at line 1, column 1: the configuration file must hold a JSON object"]),
        (" \n", ["is empty: the configuration file must hold a JSON object"]),
        (#"{"http": {"port": 7001}} // the port"#, ["at line 1, column 26: a comment (JSON has none)"]),
        // Columns count characters, not bytes.
        (#"{"http": {"host": "été", "port": 70 01}}"#, ["is not valid JSON at line 1, column 37: expected , or }"]),
        (String(repeating: #"{"a":"#, count: 70) + "1" + String(repeating: "}", count: 70), ["nests deeper than 64 levels"]),
    ])
    func theConfigurationFileIsStrictJSON(text: String, fragments: [String]) async throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("cairn-config-\(UUID().uuidString).json").path
        defer { try? FileManager.default.removeItem(atPath: file) }
        try Data(text.utf8).write(to: URL(fileURLWithPath: file))
        for (flags, environment, setting) in [(["config.file": file], [:], "--config"), ([:], ["CAIRN_CONFIG_FILE": file], "CAIRN_CONFIG_FILE")] {
            do {
                _ = try await CairnConfiguration.load(flags: flags, environment: environment)
                Issue.record("accepted \(text)")
            } catch let error as ConfigurationError {
                #expect(error.setting == setting)
                #expect(error.description.hasPrefix("invalid configuration: \(setting) '\(file)' "), "\(error)")
                for fragment in fragments { #expect(error.description.contains(fragment), "\(error)") }
                #expect(!error.description.contains("\n"))
            }
        }
    }

    /// A strict file still loads, with a byte order mark (RFC 8259 §8.1), nested and dotted
    /// keys and an empty object; one that cannot be read says why.
    @Test func aStrictFileWithAByteOrderMarkLoads() async throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("cairn-config-\(UUID().uuidString).json").path
        defer { try? FileManager.default.removeItem(atPath: file) }
        try Data([0xEF, 0xBB, 0xBF] + Array("{\"http\": {\"port\": 7001}, \"jobs.lease\": 45, \"log\": {}}\n".utf8)).write(
            to: URL(fileURLWithPath: file))
        let config = try await CairnConfiguration.load(flags: ["config.file": file], environment: [:])
        #expect(config.httpPort == 7001)
        #expect(config.jobs.leaseSeconds == 45)
        // A file that cannot be read says why, in the system's words.
        do {
            _ = try await CairnConfiguration.load(flags: ["config.file": file + ".missing"], environment: [:])
            Issue.record("a missing file was accepted")
        } catch let error as ConfigurationError {
            #expect(error.description.contains("No such file or directory"), "\(error)")
        }
    }

    /// A `CAIRN_*` variable no setting reads is reported, with the variable meant when one is
    /// close: a fresh-user trial's `CAIRN_JOBS_CONCURENCY=8` was ignored without a word. The
    /// variables the tests, scripts and commands read are not.
    @Test func unknownVariablesAreReportedWithTheOneMeant() async throws {
        let environment = [
            "CAIRN_JOBS_CONCURENCY": "8", "CAIRN_HTTP_PORT": "9000", "CAIRN_NOTHING_LIKE_IT": "1", "PATH": "/bin",
            "CAIRN_TEST_POSTGRES_URL": "postgres://x", "CAIRN_SHARED_DATA": "/data", "CAIRN_FUZZ_TARGET": "csv", "CAIRN_BINARY": "/bin/cairn",
            "CAIRN_CONCURRENCY_EXECUTOR": "nio", "CAIRN_USER_PASSWORD": "pw", "CAIRN_NEW_MASTER_KEY": "k", "CAIRN_CONFIG_FILE_": "x",
        ]
        let config = try await CairnConfiguration.load(flags: [:], environment: environment)
        #expect(
            config.unknownVariables(in: environment) == [
                .init(name: "CAIRN_CONFIG_FILE_", meant: "CAIRN_CONFIG_FILE"),
                .init(name: "CAIRN_JOBS_CONCURENCY", meant: "CAIRN_JOBS_CONCURRENCY"), .init(name: "CAIRN_NOTHING_LIKE_IT", meant: nil),
            ])
        #expect(
            config.unknownVariables(in: environment).map(\.description).contains("CAIRN_JOBS_CONCURENCY (did you mean CAIRN_JOBS_CONCURRENCY?)"))
        // Every variable the README documents is one a setting reads.
        let readme = try String(
            contentsOf: URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../README.md"), encoding: .utf8)
        // `CAIRN_LIBFUZZER` is a compilation condition (`-D`), not a variable, and
        // `CAIRN_JOBS_CONCURENCY` the README's example of a typo.
        let documented = Set(readme.matches(of: /CAIRN_[A-Z0-9_]*[A-Z0-9]\b/).map { String($0.output) }).subtracting([
            "CAIRN_LIBFUZZER", "CAIRN_JOBS_CONCURENCY",
        ])
        #expect(documented.count > 60)
        let unknown = config.unknownVariables(in: Dictionary(uniqueKeysWithValues: documented.map { ($0, "") }))
        #expect(unknown.isEmpty, "\(unknown)")
    }

    /// Each module reads its own scope: a variable lands in that module's settings type.
    @Test func eachModuleReadsItsOwnScope() async throws {
        let config = try await CairnConfiguration.load(
            flags: [:],
            environment: [
                "CAIRN_JOBS_LEASE": "45", "CAIRN_JOBS_SHUTDOWN_GRACE": "3", "CAIRN_CATALOG_CACHE_SIZE": "100",
                "CAIRN_NOTIFICATIONS_BATCH_SIZE": "100", "CAIRN_PIPELINE_THREADS": "3", "CAIRN_FILES_MAX_SIZE": "1000",
                "CAIRN_UPLOADS_EXPIRY": "2h", "CAIRN_WEBHOOKS_ALLOW_PRIVATE": "true", "CAIRN_FCM_URL": "http://127.0.0.1:9",
                "CAIRN_BCRYPT_THREADS": "3", "CAIRN_NOTIFICATIONS_PUBLISH_BATCHES": "4",
            ])
        #expect(config.jobs.leaseSeconds == 45)
        #expect(config.jobs.shutdownGrace == .seconds(3))
        #expect(config.catalog.cacheCapacity == 100)
        #expect(config.notifications.batchSize == 100)
        #expect(config.notifications.publishBatchesInFlight == 4)
        #expect(config.pipelines.threads == 3)
        #expect(config.files.quotas.maxFileBytes == 1000)
        #expect(config.files.uploadsExpiry == 7200)
        #expect(config.outbound.allowPrivateWebhookTargets)
        #expect(config.outbound.providers.fcm == "http://127.0.0.1:9")
        #expect(config.accounts.bcryptThreads == 3)
    }

    /// Every duration setting reads the same forms: a number of seconds, or a whole number with
    /// a unit (`ms`, `s`, `m`, `h`, `d`). A fresh-user trial's `CAIRN_JOBS_SHUTDOWN_GRACE=1m`
    /// was refused while `CAIRN_HTTP_DRAIN_TIMEOUT=1m` was taken.
    @Test func everyDurationSettingTakesSecondsOrAUnit() async throws {
        let config = try await CairnConfiguration.load(
            flags: [:],
            environment: [
                "CAIRN_JOBS_SHUTDOWN_GRACE": "1m", "CAIRN_HTTP_DRAIN_TIMEOUT": "1m", "CAIRN_HTTP_HEAD_TIMEOUT": "1500ms",
                "CAIRN_CATALOG_CACHE_TTL": "2m", "CAIRN_CATALOG_READ_TIMEOUT_MS": "3s", "CAIRN_REFRESH_REUSE_INTERVAL": "1m",
                "CAIRN_JOBS_LEASE": "2m", "CAIRN_IDEMPOTENCY_LEASE": "5000ms", "CAIRN_PIPELINE_CPU": "1h",
                "CAIRN_WEBHOOKS_RETRY_SCHEDULE": "1500ms,1h",
            ])
        #expect(config.jobs.shutdownGrace == .seconds(60))
        #expect(config.http.drainTimeout == .seconds(60))
        #expect(config.http.headTimeout == .milliseconds(1500))
        #expect(config.catalog.cacheTTL == .seconds(120))
        #expect(config.catalog.readTimeout == .seconds(3))
        #expect(config.accounts.refreshReuseInterval == 60)
        #expect(config.jobs.leaseSeconds == 120)
        #expect(config.idempotency.leaseSeconds == 5)
        #expect(config.pipelines.cpuSeconds == 3600)
        #expect(config.outbound.webhookRetrySchedule == [.milliseconds(1500), .seconds(3600)])
        // A plain number keeps its unit: seconds, and milliseconds for the setting named `_MS`.
        let plain = try await CairnConfiguration.load(
            flags: [:], environment: ["CAIRN_JOBS_SHUTDOWN_GRACE": "90", "CAIRN_CATALOG_READ_TIMEOUT_MS": "250", "CAIRN_CATALOG_CACHE_TTL": "0"])
        #expect(plain.jobs.shutdownGrace == .seconds(90))
        #expect(plain.catalog.readTimeout == .milliseconds(250))
        #expect(plain.catalog.cacheTTL == .zero)
        // A setting kept in whole seconds refuses a fraction of one; no form takes a fraction
        // or a sign.
        for (setting, value) in [
            ("CAIRN_JOBS_LEASE", "1500ms"), ("CAIRN_JOBS_SHUTDOWN_GRACE", "1.5"), ("CAIRN_HTTP_DRAIN_TIMEOUT", "+5s"),
            ("CAIRN_HTTP_IDLE_TIMEOUT", "5 s"), ("CAIRN_HTTP_BODY_TIMEOUT", "5w"),
        ] {
            await #expect(throws: ConfigurationError.self, "\(setting)=\(value)") {
                _ = try await CairnConfiguration.load(flags: [:], environment: [setting: value])
            }
        }
    }

    /// The job attempt time limit (default 30 min; 0 for none) and the schedules a tenant may
    /// have (default 100) are settings, read as the others of their kinds.
    @Test func theJobTimeoutAndTheScheduleLimitAreSettings() async throws {
        let defaults = try await CairnConfiguration.load(flags: [:], environment: [:])
        #expect(defaults.jobs.timeout == .seconds(1800))
        #expect(defaults.jobs.maxSchedulesPerTenant == 100)
        let set = try await CairnConfiguration.load(
            flags: [:], environment: ["CAIRN_JOBS_TIMEOUT": "45M", "CAIRN_JOBS_MAX_SCHEDULES_PER_TENANT": "250"])
        #expect(set.jobs.timeout == .seconds(2700))
        #expect(set.jobs.maxSchedulesPerTenant == 250)
        #expect(try await CairnConfiguration.load(flags: [:], environment: ["CAIRN_JOBS_TIMEOUT": "1500ms"]).jobs.timeout == .milliseconds(1500))
        #expect(try await CairnConfiguration.load(flags: [:], environment: ["CAIRN_JOBS_TIMEOUT": "0"]).jobs.timeout == nil)
        for (setting, value) in [("CAIRN_JOBS_TIMEOUT", "soon"), ("CAIRN_JOBS_TIMEOUT", "-1m"), ("CAIRN_JOBS_MAX_SCHEDULES_PER_TENANT", "0")] {
            await #expect(throws: ConfigurationError.self, "\(setting)=\(value)") {
                _ = try await CairnConfiguration.load(flags: [:], environment: [setting: value])
            }
        }
    }

    /// A value out of its setting's range is refused in one line naming the setting and the
    /// range it takes: a fresh-user trial's `CAIRN_HTTP_DRAIN_TIMEOUT=0` was refused as
    /// "must be a duration like 900, 15m, 12h or 30d", which 0 looks like.
    @Test(arguments: [
        ("CAIRN_HTTP_DRAIN_TIMEOUT", "0", "from 1s to 3650d"), ("CAIRN_ACCESS_TOKEN_TTL", "0", "from 1s to 3650d"),
        ("CAIRN_JOBS_SHUTDOWN_GRACE", "2h", "from 0s to 1h"), ("CAIRN_CATALOG_CACHE_TTL", "2d", "from 0s to 1d"),
        ("CAIRN_CATALOG_READ_TIMEOUT_MS", "5", "from 10ms to 10m"), ("CAIRN_REFRESH_REUSE_INTERVAL", "301", "from 0s to 5m"),
        ("CAIRN_JOBS_LEASE", "1500ms", "from 1s to 3650d"), ("CAIRN_HTTP_PORT", "70000", "from 0 to 65535"),
        ("CAIRN_JOBS_CONCURRENCY", "2000", "from 0 to 1024"), ("CAIRN_PIPELINE_MEMORY", "1KiB", "from 67108864 to 1099511627776 bytes"),
        ("CAIRN_WEBHOOKS_RETRY_SCHEDULE", "8d", "from 1s to 7d"),
    ])
    func outOfRangeValuesNameTheSettingAndItsRange(setting: String, value: String, range: String) async throws {
        do {
            _ = try await CairnConfiguration.load(flags: [:], environment: [setting: value])
            Issue.record("accepted \(setting)=\(value)")
        } catch let error as ConfigurationError {
            #expect(error.description.hasPrefix("invalid configuration: \(setting) "), "\(error)")
            #expect(error.description.contains(range), "\(error)")
            #expect(!error.description.contains("\n"))
        }
    }

    @Test(arguments: [
        ("CAIRN_HTTP_PORT", "eighty"), ("CAIRN_HTTP_PORT", "70000"), ("CAIRN_BCRYPT_COST", "3"), ("CAIRN_BCRYPT_COST", "32"),
        ("CAIRN_ACCESS_TOKEN_TTL", "soon"), ("CAIRN_REFRESH_TOKEN_TTL", "-5"), ("CAIRN_LOG_FORMAT", "xml"),
        ("CAIRN_JWT_SECRET", "short"), ("CAIRN_MASTER_KEY", ""), ("CAIRN_MASTER_KEY", " "), ("CAIRN_MASTER_KEY", "c2hvcnQ="),
        ("CAIRN_DATABASE_URL", "mysql://localhost/x"), ("CAIRN_CONFIG_FILE", "/nonexistent.json"),
        ("CAIRN_JOBS_LEASE", "soon"), ("CAIRN_JOBS_CLAIM_LIMIT", "0"), ("CAIRN_CATALOG_CACHE_SIZE", "1"),
        ("CAIRN_NOTIFICATIONS_BATCH_SIZE", "5000"), ("CAIRN_PIPELINE_THREADS", "0"), ("CAIRN_WEBHOOKS_ALLOW_PRIVATE", "maybe"),
        ("CAIRN_SENDGRID_URL", "ftp://mail.example"), ("CAIRN_FILES_MAX_SIZE", "0"), ("CAIRN_UPLOADS_EXPIRY", "never"),
        ("CAIRN_NOTIFICATIONS_PUBLISH_BATCHES", "0"),
    ])
    func badValuesNameTheSetting(setting: String, value: String) async throws {
        do {
            _ = try await CairnConfiguration.load(flags: [:], environment: [setting: value])
            Issue.record("accepted \(setting)=\(value)")
        } catch let error as ConfigurationError {
            #expect(error.setting == setting)
            #expect(error.description.hasPrefix("invalid configuration: \(setting)"))
            if setting == "CAIRN_JWT_SECRET" { #expect(!error.description.contains(value)) }
        }
    }
}

@Suite("Operations endpoints")
struct OperationsTests {
    @Test(arguments: TestEngine.available)
    func healthMetricsOpenAPIAndRequestIds(engine: TestEngine) async throws {
        try await withTestApp(engine) { client, _ in
            let live = try await client.execute(uri: "/health/live", method: .get)
            #expect(live.status == .ok)
            let ready = try await client.execute(uri: "/health/ready", method: .get)
            #expect(ready.status == .ok)
            #expect(ready.object["database"] as? String == "ok")
            #expect(ready.object["blobs"] as? String == "ok")
            // Generate traffic, then find it in the Prometheus exposition.
            _ = try await client.execute(uri: "/tasks", method: .get)
            let metrics = try await client.execute(uri: "/metrics", method: .get)
            #expect(metrics.status == .ok)
            #expect(metrics.text.contains(#"hb_requests{http_route="/tasks",http_request_method="GET",http_response_status_code="401"}"#))
            #expect(metrics.text.contains("http_server_request_duration_bucket"))
            let spec = try await client.execute(uri: "/openapi.yaml", method: .get)
            #expect(spec.status == .ok)
            #expect(spec.text.hasPrefix("openapi: 3.1"))
            let propagated = try await client.execute(uri: "/health/live", method: .get, headers: [HTTPField.Name("X-Request-Id")!: "req-42"])
            #expect(propagated.headers[HTTPField.Name("X-Request-Id")!] == "req-42")
            let generated = try await client.execute(uri: "/nowhere", method: .get)
            #expect(generated.headers[HTTPField.Name("X-Request-Id")!]?.count == 36)
        }
    }

    @Test func allowNamesOnlyTheMostSpecificRouteAndHEADIsServed() async throws {
        try await withTestApp(.sqlite) { client, _ in
            let (_, tokens) = try await client.registerAndLogin(email: "allow@example.com")
            let token = tokens.accessToken
            // /users/me hides /users/:id: only its own methods are advertised.
            let response = try await client.json(.post, "/users/me", token: token)
            #expect(response.status == .methodNotAllowed)
            let allowed = Set((response.headers[.allow] ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) })
            #expect(allowed == ["GET", "HEAD", "PATCH", "DELETE"])
            let head = try await client.execute(uri: "/health/live", method: .head)
            #expect(head.status == .ok)
            #expect(head.body.readableBytes == 0)
        }
    }

    @Test func readinessFailsWhenTheDatabaseIsGone() async throws {
        try await withTestApp(.sqlite) { client, components in
            await components.database.close()
            let ready = try await client.execute(uri: "/health/ready", method: .get)
            #expect(ready.status == .serviceUnavailable)
            #expect(ready.code == "unavailable")
            #expect(ready.headers[.retryAfter] != nil)
        }
    }
}
