// swift-tools-version: 6.1
import CompilerPluginSupport
import PackageDescription

/// The upcoming features every target builds with (DESIGN.md, code style).
let strictSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

/// Shorthands for the products several targets name.
let httpTypes = Target.Dependency.product(name: "HTTPTypes", package: "swift-http-types")
let hummingbird = Target.Dependency.product(name: "Hummingbird", package: "hummingbird")
let hummingbirdCore = Target.Dependency.product(name: "HummingbirdCore", package: "hummingbird")
let hummingbirdWebSocket = Target.Dependency.product(name: "HummingbirdWebSocket", package: "hummingbird-websocket")
let nioCore = Target.Dependency.product(name: "NIOCore", package: "swift-nio")
let nioPosix = Target.Dependency.product(name: "NIOPosix", package: "swift-nio")
let nioFileSystem = Target.Dependency.product(name: "_NIOFileSystem", package: "swift-nio")
let nioHTTP1 = Target.Dependency.product(name: "NIOHTTP1", package: "swift-nio")
let nioSSL = Target.Dependency.product(name: "NIOSSL", package: "swift-nio-ssl")
let sqlKit = Target.Dependency.product(name: "SQLKit", package: "sql-kit")
let logging = Target.Dependency.product(name: "Logging", package: "swift-log")
let metrics = Target.Dependency.product(name: "Metrics", package: "swift-metrics")
let crypto = Target.Dependency.product(name: "Crypto", package: "swift-crypto")
let jwtKit = Target.Dependency.product(name: "JWTKit", package: "jwt-kit")
let asyncHTTPClient = Target.Dependency.product(name: "AsyncHTTPClient", package: "async-http-client")
let serviceLifecycle = Target.Dependency.product(name: "ServiceLifecycle", package: "swift-service-lifecycle")
let tracing = Target.Dependency.product(name: "Tracing", package: "swift-distributed-tracing")
let w3cTraceContext = Target.Dependency.product(name: "W3CTraceContext", package: "swift-w3c-trace-context")

/// What every feature module (and the composition root) builds on: the HTTP layer, storage,
/// Hummingbird, SQLKit and logging.
let moduleDependencies: [Target.Dependency] = [
    "CairnHTTP", "CairnStorage", httpTypes, hummingbird, hummingbirdCore, nioCore, sqlKit, logging, tracing,
]

/// What every test target needs: the shared test support and the modules it exercises.
let testDependencies: [Target.Dependency] = [
    "CairnTestSupport", "CairnHTTP", "CairnStorage", "CairnServer", "CairnFormats", "CairnObjects", hummingbird,
    .product(name: "HummingbirdTesting", package: "hummingbird"),
    httpTypes, nioCore, sqlKit, logging, tracing,
]

/// A module's migrations, `Migrations/<module>/<version>_<slug>.sql`, read by `Migration.files(in:)`
/// from the module's resource bundle (beside the executable: ship every `*.resources` with it).
let migrationFiles: [Resource] = [.copy("Migrations")]

extension Target {
    /// A test target of the module's own name: ``testDependencies``, then the modules it tests.
    static func testTarget(named name: String, _ modules: [Target.Dependency] = [], exclude: [String] = []) -> Target {
        .testTarget(name: name, dependencies: testDependencies + modules, exclude: exclude, swiftSettings: strictSettings)
    }
}

let package = Package(
    name: "Cairn",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "cairn", targets: ["cairn"])
    ],
    dependencies: [
        .package(url: "https://github.com/yaslab/CSV.swift.git", from: "2.5.2"),  // compared against in Benchmarks only
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-auth.git", from: "2.5.0"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
        .package(url: "https://github.com/vapor/postgres-kit.git", from: "2.17.0"),
        .package(url: "https://github.com/vapor/sqlite-kit.git", from: "4.5.2"),
        .package(url: "https://github.com/vapor/sql-kit.git", from: "3.36.0"),
        .package(url: "https://github.com/vapor/jwt-kit.git", from: "5.8.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-configuration.git", from: "1.4.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.4.0"),
        .package(url: "https://github.com/adam-fowler/compress-nio.git", from: "1.5.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-websocket.git", from: "2.8.1"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/vapor/multipart-kit.git", from: "4.7.1"),
        .package(url: "https://github.com/swiftlang/swift-subprocess.git", from: "1.0.0"),  // pipeline sandboxes, the tests' children
        .package(url: "https://github.com/apple/swift-system.git", from: "1.5.0"),  // FilePath, for swift-subprocess
        .package(url: "https://github.com/apple/swift-distributed-tracing.git", from: "1.3.0"),
        // Trace export only (OTLP over HTTP/protobuf, no gRPC); metrics stay on Prometheus.
        .package(url: "https://github.com/swift-otel/swift-otel.git", from: "1.6.0", traits: ["OTLPHTTP"]),
        // swift-otel's own W3C Trace Context types: ids and headers of the spans the sampler drops.
        .package(url: "https://github.com/swift-otel/swift-w3c-trace-context.git", from: "1.0.0"),
        .package(url: "https://github.com/hummingbird-project/swift-mustache.git", from: "2.1.1"),  // notification templates
        // The models' macros (`@MemberwiseInit`, `@JSONObject`): compile-time only, nothing of it links into cairn.
        .package(url: "https://github.com/swiftlang/swift-syntax.git", from: "603.0.1"),
    ],
    targets: [
        // The compiler plug-in behind the models' macros, declared in CairnHTTP (ModelMacros.swift).
        .macro(
            name: "CairnMacros",
            dependencies: [
                .product(name: "SwiftSyntax", package: "swift-syntax"),
                .product(name: "SwiftSyntaxBuilder", package: "swift-syntax"),
                .product(name: "SwiftSyntaxMacros", package: "swift-syntax"),
                .product(name: "SwiftCompilerPlugin", package: "swift-syntax"),
                .product(name: "SwiftDiagnostics", package: "swift-syntax"),
            ],
            swiftSettings: strictSettings
        ),
        .target(
            name: "CairnFormats",
            dependencies: [nioCore],
            swiftSettings: strictSettings
        ),
        // The object store: the BlobStore protocol, the file-system and S3-compatible backends,
        // AWS Signature Version 4 (no app code: Crypto, NIO and AsyncHTTPClient only).
        .target(
            name: "CairnObjects",
            dependencies: [nioCore, nioFileSystem, nioHTTP1, crypto, asyncHTTPClient, logging],
            swiftSettings: strictSettings
        ),
        .target(
            name: "CairnHTTP",
            dependencies: [
                "CairnFormats", "CairnStorage", "CairnMacros", sqlKit, crypto, hummingbird, hummingbirdWebSocket, hummingbirdCore, httpTypes,
                nioCore, logging, tracing,
            ],
            resources: migrationFiles,
            swiftSettings: strictSettings
        ),
        .target(
            name: "CairnStorage",
            dependencies: [
                .product(name: "Configuration", package: "swift-configuration"),
                sqlKit,
                .product(name: "SQLiteKit", package: "sqlite-kit"),
                .product(name: "PostgresKit", package: "postgres-kit"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                nioSSL, nioPosix, logging, serviceLifecycle, crypto, metrics, tracing, w3cTraceContext, "CSQLiteNIOConfig",
            ],
            resources: migrationFiles,
            swiftSettings: strictSettings
        ),
        .target(
            name: "CairnAccounts",
            dependencies: moduleDependencies + [
                .product(name: "HummingbirdBcrypt", package: "hummingbird-auth"), jwtKit, crypto,
            ],
            resources: migrationFiles,
            swiftSettings: strictSettings
        ),
        .target(
            name: "CairnTasks",
            dependencies: moduleDependencies + [
                "CairnAccounts"
            ],
            resources: migrationFiles,
            swiftSettings: strictSettings
        ),
        .target(
            name: "CairnJobs",
            dependencies: moduleDependencies + [
                metrics, serviceLifecycle,
            ],
            resources: migrationFiles,
            swiftSettings: strictSettings
        ),
        // The system SQLite (libsqlite3-dev), for the pipeline sandbox's authorizer, progress
        // handler and limits. A module of its own: its C structs clash with SQLiteNIO's bundled
        // copy in any module that sees both.
        .systemLibrary(name: "CSQLite3", path: "Sources/CSQLite3"),
        // sqlite3_db_config of SQLiteNIO's bundled SQLite, which is variadic (Swift cannot call it).
        .target(name: "CSQLiteNIOConfig"),
        .target(name: "CairnSandbox", dependencies: ["CSQLite3"], swiftSettings: strictSettings),
        .target(
            name: "CairnFiles",
            dependencies: moduleDependencies + [
                "CairnFormats", "CairnObjects", nioFileSystem, nioPosix, metrics, crypto, .product(name: "MultipartKit", package: "multipart-kit"),
                serviceLifecycle,
            ],
            resources: migrationFiles,
            swiftSettings: strictSettings
        ),
        .target(
            name: "CairnPipelines",
            dependencies: moduleDependencies + [
                "CairnJobs", "CairnFormats", "CairnFiles", "CairnObjects", "CairnSandbox", nioFileSystem, metrics, crypto, serviceLifecycle,
                // The sandbox processes of pipeline runs (never Foundation's Process on Linux).
                .product(name: "Subprocess", package: "swift-subprocess"),
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            resources: migrationFiles,
            swiftSettings: strictSettings
        ),
        .target(
            name: "CairnCatalog",
            dependencies: moduleDependencies + [
                "CairnJobs", "CairnFiles", "CairnObjects", "CairnFormats", metrics, serviceLifecycle,
            ],
            swiftSettings: strictSettings
        ),
        .target(
            name: "CairnReports",
            dependencies: moduleDependencies + [
                "CairnFormats", "CairnTasks", "CairnCatalog", "CairnNotifications", metrics, .product(name: "CompressNIO", package: "compress-nio"),
            ],
            swiftSettings: strictSettings
        ),
        .target(
            name: "CairnNotifications",
            dependencies: moduleDependencies + [
                "CairnAccounts", "CairnJobs", "CairnFormats", hummingbirdWebSocket, metrics, crypto, serviceLifecycle, asyncHTTPClient, nioPosix,
                .product(name: "NIOWebSocket", package: "swift-nio"), nioHTTP1, nioSSL, jwtKit,
            ],
            resources: migrationFiles,
            swiftSettings: strictSettings
        ),
        .target(
            name: "CairnOutbound",
            dependencies: moduleDependencies + [
                "CairnAccounts", "CairnJobs", "CairnNotifications", "CairnFormats", metrics, crypto, asyncHTTPClient, nioPosix, nioHTTP1, nioSSL,
                jwtKit,
                .product(name: "Mustache", package: "swift-mustache"),
            ],
            swiftSettings: strictSettings
        ),
        // The browser console (issue 15): static files served at /console, no build step.
        .target(
            name: "CairnConsole",
            dependencies: ["CairnHTTP", hummingbird, httpTypes, nioCore, crypto],
            resources: [.copy("Resources/console")],
            swiftSettings: strictSettings
        ),
        .target(
            name: "CairnServer",
            dependencies: moduleDependencies + [
                "CairnAccounts", "CairnTasks", "CairnJobs", "CairnCatalog", "CairnReports", "CairnNotifications", "CairnOutbound", "CairnFormats",
                "CairnFiles", "CairnObjects", "CairnPipelines", "CairnConsole", hummingbirdWebSocket, nioHTTP1, nioPosix,
                .product(name: "NIOWebSocket", package: "swift-nio"), .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "NIOHTTPTypesHTTP1", package: "swift-nio-extras"),
                .product(name: "HummingbirdWSCompression", package: "hummingbird-websocket"),
                .product(name: "Configuration", package: "swift-configuration"),
                metrics,
                .product(name: "Prometheus", package: "swift-prometheus"), serviceLifecycle,
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "OTel", package: "swift-otel"), w3cTraceContext,
            ],
            resources: [.copy("Resources/openapi.yaml")],
            swiftSettings: strictSettings
        ),
        .executableTarget(
            name: "cairn",
            dependencies: [
                "CairnServer", "CairnStorage", "CairnAccounts", "CairnHTTP",
                "CairnTasks", "CairnCatalog", "CairnPipelines", "CairnOutbound",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                hummingbird, logging, serviceLifecycle, nioCore, nioPosix,
            ],
            swiftSettings: strictSettings
        ),
        // The fuzz targets of every parser of untrusted bytes (issue 13): a library, so tests
        // replay the corpora in-process, and an executable that replays files, or built with
        // CAIRN_LIBFUZZER=1 (below) is the libFuzzer binary (scripts/fuzz.sh).
        .target(
            name: "CairnFuzz",
            dependencies: [
                "CairnAccounts", "CairnFiles", "CairnFormats", "CairnHTTP", "CairnJobs", "CairnNotifications", hummingbird, hummingbirdCore,
                httpTypes, nioCore, crypto,
            ],
            swiftSettings: strictSettings
        ),
        .executableTarget(name: "cairn-fuzz", dependencies: ["CairnFuzz"], swiftSettings: strictSettings),
        .executableTarget(
            name: "cairn-bench",
            dependencies: ["CairnFormats", .product(name: "CSV", package: "CSV.swift")],
            path: "Benchmarks/cairn-bench",
            swiftSettings: strictSettings
        ),
        // The notification benchmark's WebSocket load client: raw NIO, one thread, no task per connection.
        .executableTarget(
            name: "cairn-wsload",
            dependencies: [nioCore, nioPosix, nioHTTP1, .product(name: "NIOWebSocket", package: "swift-nio")],
            path: "Benchmarks/cairn-wsload",
            swiftSettings: strictSettings
        ),
        .target(
            name: "CairnTestSupport",
            dependencies: [
                "CairnServer", "CairnStorage", "CairnAccounts", "CairnHTTP",
                // The row factories insert through these modules' stores.
                "CairnTasks", "CairnJobs", "CairnCatalog", "CairnFiles", "CairnObjects", "CairnPipelines", "CairnNotifications", httpTypes,
                hummingbird,
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                logging, nioCore, tracing,
                .product(name: "PostgresNIO", package: "postgres-nio"),
                sqlKit,
                .product(name: "Subprocess", package: "swift-subprocess"),
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            path: "Tests/CairnTestSupport",
            swiftSettings: strictSettings
        ),
        .testTarget(named: "CairnHTTPTests"),
        .testTarget(
            name: "CairnMacrosTests",
            dependencies: [
                "CairnMacros", .product(name: "SwiftSyntaxMacroExpansion", package: "swift-syntax"),
                .product(name: "SwiftSyntaxMacrosGenericTestSupport", package: "swift-syntax"),
            ],
            swiftSettings: strictSettings
        ),
        .testTarget(named: "CairnStorageTests"),
        // The store conformance suite: every store's operations called directly, on both engines.
        .testTarget(
            named: "CairnStoreTests",
            ["CairnAccounts", "CairnTasks", "CairnJobs", "CairnCatalog", "CairnFiles", "CairnPipelines", "CairnNotifications"]),
        .testTarget(named: "CairnAccountsTests", ["CairnAccounts"]),
        .testTarget(named: "CairnTasksTests", ["CairnTasks", asyncHTTPClient]),
        .testTarget(
            named: "CairnServerTests",
            ["CairnConsole", "CairnAccounts", "CairnCatalog", "CairnFiles", "CairnJobs", "CairnNotifications", "CairnOutbound", "CairnPipelines"]),
        .testTarget(named: "CairnJobsTests", ["CairnJobs"]),
        .testTarget(named: "CairnFormatsTests"),
        .testTarget(named: "CairnFuzzTests", ["CairnFuzz"]),
        .testTarget(named: "CairnFilesTests", ["CairnFiles", "CairnJobs", "CairnAccounts", crypto]),
        .testTarget(named: "CairnObjectsTests", [crypto, asyncHTTPClient, .product(name: "SystemPackage", package: "swift-system")]),
        .testTarget(named: "CairnPipelinesTests", ["CairnPipelines", "CairnFiles", "CairnJobs", "CairnAccounts", crypto]),
        .testTarget(named: "CairnCatalogTests", ["CairnCatalog", "CairnJobs", "CairnFiles", "CairnAccounts"]),
        .testTarget(named: "CairnReportsTests", ["CairnReports", "CairnTasks", "CairnCatalog", "CairnNotifications"]),
        .testTarget(
            named: "CairnNotificationsTests",
            [
                "CairnNotifications", "CairnOutbound", "CairnAccounts", "CairnJobs",
                .product(name: "HummingbirdWSClient", package: "hummingbird-websocket"), .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ], exclude: ["Resources"]),
        .testTarget(
            name: "EndToEndTests",
            dependencies: ["CairnTestSupport"],
            swiftSettings: strictSettings
        ),
    ]
)

// scripts/fuzz.sh's build, `CAIRN_LIBFUZZER=1 swift build --product cairn-fuzz` (issue 13): every
// module of ours is compiled with libFuzzer's coverage instrumentation and AddressSanitizer, and
// cairn-fuzz links libFuzzer with CAIRN_LIBFUZZER defined. Set per target, not with -Xswiftc, which
// also reaches the macro plug-in: a host tool that would link libFuzzer's `main` and fail (no
// LLVMFuzzerTestOneInput). Dependencies stay uninstrumented. Other products do not link this way.
if Context.environment["CAIRN_LIBFUZZER"] == "1" {
    for target in package.targets where target.type == .regular || target.name == "cairn-fuzz" {
        target.swiftSettings = (target.swiftSettings ?? []) + [.unsafeFlags(["-sanitize=fuzzer,address"])]
    }
    for target in package.targets where target.name == "cairn-fuzz" {
        target.swiftSettings = (target.swiftSettings ?? []) + [.define("CAIRN_LIBFUZZER")]
        target.linkerSettings = [.unsafeFlags(["-sanitize=fuzzer,address"])]
    }
}
