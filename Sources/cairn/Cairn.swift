import ArgumentParser
import CairnAccounts
import CairnHTTP
import CairnOutbound
import CairnPipelines
import CairnServer
import CairnStorage
import Foundation
import Hummingbird
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization

/// The `cairn` command: serve, migrate, and operator tasks.
@main
struct Cairn: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cairn",
        abstract: "Cairn: a self-hostable backend server (tasks, accounts, JWT auth).",
        discussion: """
            Exit status: 0 done; 1 a failure while running (a database that cannot be reached, a \
            file missing beside the binary); 2 a setting with a bad value, from a flag, a CAIRN_* or \
            OTEL_* variable or the configuration file (one line on standard error names it); 64 a \
            command line that does not parse (an unknown command or option, a missing value) or an \
            argument a command refuses, with the usage (sysexits(3) EX_USAGE).
            """,
        subcommands: [Serve.self, Migrate.self, TenantCommand.self, UserCommand.self, KeysCommand.self, Seed.self, PipelineSandboxCommand.self],
        defaultSubcommand: Serve.self)

    /// Runs the command with its Swift tasks on SwiftNIO's event loops (as Swift concurrency's
    /// global executor: a request's handler runs on the event loop that read it, with no hop to
    /// the runtime's cooperative pool and back) or on the runtime's pool, as
    /// `CAIRN_CONCURRENCY_EXECUTOR` (or `concurrency.executor` in the configuration file) says:
    /// `nio`, `swift`, or `auto` (the default, any case): the event loops on embedded SQLite,
    /// the pool on PostgreSQL. Measured on this project's benchmarks (`Benchmarks/README.md`):
    /// on SQLite the event loops serve reads 30–50 % faster, writes as fast (each batch of
    /// writes is one hop to SQLite's thread), and heavy reads delay other answers less; on
    /// PostgreSQL they serve the task list about 15 % slower.
    static func main() async {
        // Must come first: tasks enqueued before the hook is installed stay on the runtime's pool.
        let sources = StartSettings()
        let setting = sources.value(environment: "CAIRN_CONCURRENCY_EXECUTOR", file: "concurrency", "executor") ?? ""
        let eventLoops: Bool
        switch setting.lowercased() {
        case "", "auto": eventLoops = sources.runsOnSQLite
        case "swift": eventLoops = false
        case "nio": eventLoops = true
        default:
            FileHandle.standardError.write(Data("cairn: CAIRN_CONCURRENCY_EXECUTOR must be auto, swift or nio, not \(setting.prefix(100))\n".utf8))
            Foundation.exit(2)
        }
        if eventLoops, NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor() {
            executor.store(.nio, ordering: .relaxed)
        }
        await main(nil)
    }

    /// Where this process runs its Swift tasks (logged when `serve` starts).
    static let executor = Atomic<ConcurrencyExecutor>(.swift)
}

/// The few settings read before the configuration is loaded (the executor must be chosen before
/// any task runs), from the same sources in the precedence `CairnConfiguration.load` gives
/// them: flags, then the environment, then the `--config` / `CAIRN_CONFIG_FILE` JSON file. A
/// command line or file that does not parse gives nothing here, and is reported by the command.
struct StartSettings {
    /// The common options, when the command line names a command that takes them.
    let options: CommonOptions?
    /// The configuration file's top-level object, when there is one that parses.
    let file: [String: Any]?
    let environment = ProcessInfo.processInfo.environment

    init() {
        options = ((try? Cairn.parseAsRoot()) as? any CommonOptionsCommand)?.options
        let path = options.flatMap { $0.config } ?? environment["CAIRN_CONFIG_FILE"]
        file = path.flatMap { FileManager.default.contents(atPath: $0) }.flatMap { try? JSONSerialization.jsonObject(with: $0) as? [String: Any] }
    }

    /// The value of `variable`, else of the file's `section.key`.
    func value(environment variable: String, file section: String, _ key: String) -> String? {
        environment[variable] ?? (file?[section] as? [String: Any])?[key] as? String
    }

    /// Whether the command opens a database and that database is embedded SQLite: no
    /// `postgres://` URL from `--database-url`, `CAIRN_DATABASE_URL` or the file. An empty one
    /// counts as not set, as `CairnConfiguration.load` reads it: the next source decides.
    var runsOnSQLite: Bool {
        guard let options else { return false }
        let urls = [options.databaseURL, environment["CAIRN_DATABASE_URL"], (file?["database"] as? [String: Any])?["url"] as? String]
        if urls.contains(where: { !($0 ?? "").isEmpty }) { return false }
        // A file named but unreadable: the command stops on it; SQLite is not assumed.
        return (options.config ?? environment["CAIRN_CONFIG_FILE"]) == nil || file != nil
    }
}

/// Where a process runs its Swift tasks (see `Cairn.main`).
enum ConcurrencyExecutor: UInt8, AtomicRepresentable, CustomStringConvertible {
    /// The Swift runtime's cooperative thread pool.
    case swift
    /// SwiftNIO's event loops.
    case nio

    var description: String { self == .nio ? "nio" : "swift" }
}

/// A command that takes the settings every database command shares.
protocol CommonOptionsCommand {
    /// The command's `--config`, `--data-dir`, `--database-url` and log options.
    var options: CommonOptions { get }
}

/// Settings shared by every command; each maps to a `CAIRN_*` variable and wins over it.
struct CommonOptions: ParsableArguments {
    @Option(help: "JSON configuration file (CAIRN_CONFIG_FILE).") var config: String?
    @Option(help: "Data directory for SQLite and signing keys (CAIRN_DATA_DIR, default ./cairn-data).") var dataDir: String?
    @Option(help: "postgres://user:pass@host:5432/db to use PostgreSQL (CAIRN_DATABASE_URL).") var databaseURL: String?
    @Option(help: "Log format: text or json (CAIRN_LOG_FORMAT).") var logFormat: String?
    @Option(help: "Log level (CAIRN_LOG_LEVEL, default info).") var logLevel: String?

    /// The flag of each setting a command line can give, by its key.
    static let flagNames = [
        "config.file": "--config", "data.dir": "--data-dir", "database.url": "--database-url", "log.format": "--log-format",
        "log.level": "--log-level", "http.host": "--host", "http.port": "--port",
    ]

    var flags: [String: String] {
        var flags: [String: String] = [:]
        flags["config.file"] = config
        flags["data.dir"] = dataDir
        flags["database.url"] = databaseURL
        flags["log.format"] = logFormat
        flags["log.level"] = logLevel
        return flags
    }

    /// Loads the configuration and bootstraps logging; a bad value prints one line and exits 2, a
    /// resource bundle missing beside the binary (see `ResourceBundles`) exits 1.
    func load(extra: [String: String] = [:]) async throws -> (CairnConfiguration, Logger) {
        let missing = ResourceBundles.missing()
        guard missing.isEmpty else {
            FileHandle.standardError.write(
                Data(
                    "cairn: missing beside \(Bundle.main.bundlePath): \(missing.joined(separator: ", ")) (copy the build's Cairn_*.resources folders next to the binary)\n"
                        .utf8))
            throw ExitCode(1)
        }
        let configuration: CairnConfiguration
        let given = flags.merging(extra) { $1 }
        do {
            configuration = try await CairnConfiguration.load(flags: given)
        } catch var error as ConfigurationError {
            // A value from a flag is named by the flag (`--port`), not by the variable it won over.
            if let key = given.keys.first(where: { "CAIRN_" + $0.replacingOccurrences(of: ".", with: "_").uppercased() == error.setting }),
                let flag = Self.flagNames[key]
            {
                error.setting = flag
            }
            FileHandle.standardError.write(Data("cairn: \(error.description)\n".utf8))
            throw ExitCode(2)
        }
        let level = Logger.Level(rawValue: configuration.logLevel) ?? .info
        let json = configuration.logFormat == "json"
        LoggingSystem.bootstrap(
            { label, provider in
                var handler: any LogHandler =
                    json ? JSONLogHandler(label: label, metadataProvider: provider) : TextLogHandler(label: label, metadataProvider: provider)
                handler.logLevel = level
                return handler
            }, metadataProvider: TracingBootstrap.logMetadataProvider)
        let logger = Logger(label: "cairn")
        // A warning, not a stop: scripts and other tools may share the prefix.
        for variable in configuration.unknownVariables(in: ProcessInfo.processInfo.environment) {
            logger.warning(
                "unknown environment variable \(variable) ignored: no setting reads it", metadata: ["variable": .string(variable.name)])
        }
        return (configuration, logger)
    }
}

/// Prints a start-up failure as one line and exits 1 (2 for a wrong or unreadable master key
/// or a data directory that cannot be made, as for any other bad setting).
func fail(_ error: any Error) -> ExitCode {
    let text: String
    switch error {
    case let error as MasterKeyError:
        FileHandle.standardError.write(Data("cairn: \(error.description)\n".utf8))
        return ExitCode(2)
    case let error as ConfigurationError:
        FileHandle.standardError.write(Data("cairn: \(error.description)\n".utf8))
        return ExitCode(2)
    case let error as AppError:
        text =
            "\(error.code): \(error.detail ?? "")"
            + (error.errors.isEmpty ? "" : " " + error.errors.map { "\($0.field) \($0.issue)" }.joined(separator: "; "))
    case let error as StorageError: text = error.description
    case let error as KeyRingError: text = error.description
    default: text = String(describing: error).prefix(300).description
    }
    FileHandle.standardError.write(Data("cairn: \(text)\n".utf8))
    return ExitCode(1)
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the HTTP server (applies pending migrations first).")

    @OptionGroup var options: CommonOptions
    @Option(help: "Listen address (CAIRN_HTTP_HOST, default 127.0.0.1).") var host: String?
    @Option(help: "Listen port (CAIRN_HTTP_PORT, default 8080).") var port: String?
    @Flag(help: "Do not apply pending migrations; leave them to `cairn migrate`.") var noMigrate = false

    func run() async throws {
        // Before the configuration is read: the default connection limit follows the raised one.
        let descriptors = FileDescriptorLimit.raiseToHardLimit()
        var extra: [String: String] = [:]
        extra["http.host"] = host
        extra["http.port"] = port
        var (configuration, logger) = try await options.load(extra: extra)
        configuration.migrateOnStart = !noMigrate
        logger.info(
            "starting cairn",
            metadata: [
                "database": .string(configuration.databaseURL == nil ? "sqlite" : "postgres"), "data_dir": .string(configuration.dataDir),
                "executor": .stringConvertible(Cairn.executor.load(ordering: .relaxed)),
                "open_files": .string(descriptors.after.map(String.init) ?? "unlimited"),
                "max_connections": .stringConvertible(configuration.http.maxConnections),
            ])
        if descriptors.before != descriptors.after, let before = descriptors.before {
            logger.info("open-file limit raised to the hard limit", metadata: ["from": .stringConvertible(before)])
        }
        let tracing: (any Service)?
        do {
            tracing = try TracingBootstrap.bootstrap(logger: logger)
        } catch let error as ConfigurationError {
            FileHandle.standardError.write(Data("cairn: \(error.description)\n".utf8))
            throw ExitCode(2)
        } catch {
            FileHandle.standardError.write(Data("cairn: OTEL_* settings: \(String(describing: error).prefix(300))\n".utf8))
            throw ExitCode(2)
        }
        let components: CairnComponents
        do {
            components = try await buildComponents(configuration: configuration, logger: logger)
        } catch {
            throw fail(error)
        }
        do {
            try await runNode(components: components, services: tracing.map { [$0] } ?? [])
        } catch {
            // Most often the address: in use, or a host name that does not resolve.
            await components.database.close()
            let address = "\(configuration.httpHost):\(configuration.httpPort)"
            FileHandle.standardError.write(
                Data("cairn: cannot serve on \(address) (CAIRN_HTTP_HOST/CAIRN_HTTP_PORT): \(String(describing: error).prefix(200))\n".utf8))
            throw ExitCode(2)
        }
    }
}

/// One phase of a pipeline run under hard limits, started by the server itself (hidden: never
/// run by hand). See `PipelineSandbox`.
struct PipelineSandboxCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: PipelineSandbox.commandName, shouldDisplay: false)

    func run() throws {
        PipelineSandbox.main()
    }
}

struct Migrate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Apply pending database migrations and exit.")
    @OptionGroup var options: CommonOptions

    func run() async throws {
        let (configuration, logger) = try await options.load()
        do {
            // Only SQLite keeps its file there: on PostgreSQL, migrating leaves no empty folder behind.
            if configuration.databaseURL == nil {
                try configuration.createDataDir(permissions: nil)
            }
            let database = try await Database.open(url: configuration.databaseURL, sqlitePath: configuration.sqlitePath, logger: logger)
            defer { Task { await database.close() } }
            let applied = try await Migrator(database: database, migrations: allMigrations(), logger: logger).migrate()
            print(applied.isEmpty ? "no pending migrations" : "applied \(applied.count): \(applied.joined(separator: ", "))")
            await database.close()
        } catch {
            throw fail(error)
        }
    }
}

/// Runs `body` with wired components, closing the database afterwards.
func withComponents(_ options: CommonOptions, _ body: (CairnComponents) async throws -> Void) async throws {
    let (configuration, logger) = try await options.load()
    do {
        let components = try await buildComponents(configuration: configuration, logger: logger)
        do {
            try await body(components)
        } catch {
            await components.database.close()
            throw error
        }
        await components.database.close()
    } catch let error as ExitCode {
        throw error
    } catch {
        throw fail(error)
    }
}

struct TenantCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "tenant", abstract: "Manage tenants.", subcommands: [Create.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a tenant and print its id.")
        @OptionGroup var options: CommonOptions
        @Option(help: "Tenant name.") var name: String

        func run() async throws {
            guard let clean = AccountRules.normalizeName(name) else {
                throw ValidationError("--name must be 1 to 100 characters without bidirectional control characters")
            }
            try await withComponents(options) { components in
                print(try await components.accounts.store.createTenant(name: clean))
            }
        }
    }
}

struct UserCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "user", abstract: "Manage users.", subcommands: [Create.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a user. Without --tenant, creates a new tenant with the user as owner.",
            discussion: "The password comes from --password-stdin, or CAIRN_USER_PASSWORD; otherwise one is generated and printed once.")
        @OptionGroup var options: CommonOptions
        @Option(help: "Email address.") var email: String
        @Option(help: "Display name (default: the part of the email before @).") var name: String?
        @Option(help: "Tenant id to add the user to.") var tenant: String?
        @Flag(help: "Make the user an admin (owner when a new tenant is created).") var admin = false
        @Flag(help: "Read the password from standard input.") var passwordStdin = false

        func run() async throws {
            var password = ProcessInfo.processInfo.environment["CAIRN_USER_PASSWORD"]
            var generated = false
            if passwordStdin {
                password = readLine(strippingNewline: true)
            }
            if password == nil {
                var generator = SystemRandomNumberGenerator()
                password = Base64URL.encode((0..<18).map { _ in UInt8.random(in: .min ... .max, using: &generator) })
                generated = true
            }
            let displayName = name ?? String(email.split(separator: "@").first ?? "user")
            try await withComponents(options) { components in
                let user: User
                if let tenant {
                    user = try await components.accounts.createUser(
                        operatorTenantId: tenant, email: email, name: displayName, role: admin ? .admin : .member, password: password!)
                } else {
                    user = try await components.accounts.register(email: email, password: password!, name: displayName, tenantName: nil)
                }
                print("created user \(user.id) in tenant \(user.tenantId) with role \(user.role.rawValue)")
                if generated { print("password: \(password!)") }
            }
        }
    }
}

struct KeysCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keys", abstract: "Manage JWT signing keys and the master key.", subcommands: [Rotate.self, RotateMaster.self])

    struct Rotate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Add a new Ed25519 signing key; older keys stay for verification until their tokens expire.")
        @OptionGroup var options: CommonOptions

        func run() async throws {
            try await withComponents(options) { components in
                let settings = components.accounts.tokens.settings
                let kid = try await TokenService.rotate(settings)
                let shared = settings.keyDatabase == nil ? "sharing this key file" : "on this database"
                print("new signing key \(kid); running nodes \(shared) pick it up within 5 seconds")
            }
        }
    }

    /// `cairn keys rotate-master`: every sealed secret re-encrypted under a new master key, in
    /// one transaction.
    struct RotateMaster: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "rotate-master",
            abstract: "Re-encrypt every secret at rest under a new master key.",
            discussion: """
                The new key comes from CAIRN_NEW_MASTER_KEY (32 bytes, base64) or is generated. Without CAIRN_MASTER_KEY, \
                it replaces <data dir>/master.key; with it, set CAIRN_MASTER_KEY to the new key on every node and restart them.
                """)
        @OptionGroup var options: CommonOptions

        func run() async throws {
            let fresh: MasterKey
            if let text = ProcessInfo.processInfo.environment["CAIRN_NEW_MASTER_KEY"] {
                guard let key = try? MasterKey(base64: text) else {
                    FileHandle.standardError.write(Data("cairn: invalid configuration: CAIRN_NEW_MASTER_KEY must be 32 bytes in base64\n".utf8))
                    throw ExitCode(2)
                }
                fresh = key
            } else {
                fresh = MasterKey.generate()
            }
            try await withComponents(options) { components in
                let old = components.secrets
                let new = SecretBox(master: fresh)
                let keyFile = components.configuration.masterKey == nil ? components.configuration.masterKeyFile : nil
                // The new key reaches the disk before the database uses it, so no crash leaves
                // secrets sealed under a key that exists nowhere.
                if let keyFile { try fresh.save(to: keyFile + ".new") }
                let sealed = try await components.database.transaction { db in
                    let outbound = try await OutboundChannels.resealSecrets(from: old, to: new, on: db)
                    let keys = try await TokenService.resealKeys(from: old, to: new, on: db)
                    try await MasterKeyCheck.reseal(new, on: db)
                    return outbound + keys
                }
                // The ring file (SQLite) after the database: a failed transaction leaves it as it was.
                let fileKeys = try TokenService.resealKeyFile(components.accounts.tokens.settings, from: old, to: new)
                let count = sealed + fileKeys
                if let keyFile {
                    guard rename(keyFile + ".new", keyFile) == 0 else {
                        throw MasterKeyError("re-sealed under the key in \(keyFile).new, but cannot rename it to \(keyFile): rename it by hand")
                    }
                    print("re-sealed \(count) secrets under master key \(fresh.id), saved in \(keyFile); restart the node")
                } else {
                    print("re-sealed \(count) secrets under master key \(fresh.id); set CAIRN_MASTER_KEY on every node and restart them:")
                    if ProcessInfo.processInfo.environment["CAIRN_NEW_MASTER_KEY"] == nil { print(fresh.base64) }
                }
            }
        }
    }
}

extension Serve: CommonOptionsCommand {}
extension Migrate: CommonOptionsCommand {}
extension TenantCommand.Create: CommonOptionsCommand {}
extension UserCommand.Create: CommonOptionsCommand {}
extension KeysCommand.Rotate: CommonOptionsCommand {}
extension KeysCommand.RotateMaster: CommonOptionsCommand {}
extension Seed: CommonOptionsCommand {}
