// swift-tools-version: 6.1
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

/// What every test target needs: the shared test support and the modules it exercises.
let testDependencies: [Target.Dependency] = [
    "CairnTestSupport", "CairnHTTP", "CairnStorage", "CairnServer", "CairnFormats",
    .product(name: "Hummingbird", package: "hummingbird"),
    .product(name: "HummingbirdTesting", package: "hummingbird"),
    .product(name: "HTTPTypes", package: "swift-http-types"),
    .product(name: "NIOCore", package: "swift-nio"),
    .product(name: "SQLKit", package: "sql-kit"),
    .product(name: "Logging", package: "swift-log"),
]

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
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.4.0"),
        .package(url: "https://github.com/adam-fowler/compress-nio.git", from: "1.5.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-websocket.git", from: "2.8.1"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/vapor/multipart-kit.git", from: "4.7.1"),
        .package(url: "https://github.com/swiftlang/swift-subprocess.git", from: "1.0.0"),  // pipeline sandboxes, the tests' children
        .package(url: "https://github.com/apple/swift-system.git", from: "1.5.0"),  // FilePath, for swift-subprocess
    ],
    targets: [
        .target(
            name: "CairnFormats",
            dependencies: [.product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "CairnHTTP",
            dependencies: [
                "CairnFormats", "CairnStorage",
                .product(name: "SQLKit", package: "sql-kit"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "CairnStorage",
            dependencies: [
                .product(name: "Configuration", package: "swift-configuration"),
                .product(name: "SQLKit", package: "sql-kit"),
                .product(name: "SQLiteKit", package: "sqlite-kit"),
                .product(name: "PostgresKit", package: "postgres-kit"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "CairnAccounts",
            dependencies: [
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "SQLKit", package: "sql-kit"),
                .product(name: "Logging", package: "swift-log"),
                "CairnHTTP", "CairnStorage",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdBcrypt", package: "hummingbird-auth"),
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "CairnTasks",
            dependencies: [
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "SQLKit", package: "sql-kit"),
                .product(name: "Logging", package: "swift-log"),
                "CairnHTTP", "CairnStorage", "CairnAccounts",
                .product(name: "Hummingbird", package: "hummingbird"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "CairnJobs",
            dependencies: [
                "CairnHTTP", "CairnStorage",
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "SQLKit", package: "sql-kit"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        // The system SQLite (libsqlite3-dev), for the pipeline sandbox's authorizer, progress
        // handler and limits. A module of its own: its C structs clash with SQLiteNIO's bundled
        // copy in any module that sees both.
        .systemLibrary(name: "CSQLite3", path: "Sources/CSQLite3"),
        .target(name: "CairnSandbox", dependencies: ["CSQLite3"], swiftSettings: swiftSettings),
        .target(
            name: "CairnFiles",
            dependencies: [
                "CairnHTTP", "CairnStorage", "CairnFormats",
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "_NIOFileSystem", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "SQLKit", package: "sql-kit"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "MultipartKit", package: "multipart-kit"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "CairnPipelines",
            dependencies: [
                "CairnHTTP", "CairnStorage", "CairnJobs", "CairnFormats", "CairnFiles", "CairnSandbox",
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "_NIOFileSystem", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "SQLKit", package: "sql-kit"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                // The sandbox processes of pipeline runs (never Foundation's Process on Linux).
                .product(name: "Subprocess", package: "swift-subprocess"),
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "CairnCatalog",
            dependencies: [
                "CairnHTTP", "CairnStorage", "CairnJobs", "CairnFiles", "CairnFormats",
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "SQLKit", package: "sql-kit"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "CairnReports",
            dependencies: [
                "CairnHTTP", "CairnStorage", "CairnFormats", "CairnTasks", "CairnCatalog", "CairnNotifications",
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "CompressNIO", package: "compress-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "CairnNotifications",
            dependencies: [
                "CairnHTTP", "CairnStorage", "CairnAccounts", "CairnJobs",
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "SQLKit", package: "sql-kit"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "JWTKit", package: "jwt-kit"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "CairnOutbound",
            dependencies: [
                "CairnHTTP", "CairnStorage", "CairnAccounts", "CairnJobs", "CairnNotifications",
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "SQLKit", package: "sql-kit"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "JWTKit", package: "jwt-kit"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "CairnServer",
            dependencies: [
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "SQLKit", package: "sql-kit"),
                .product(name: "Logging", package: "swift-log"),
                "CairnHTTP", "CairnStorage", "CairnAccounts", "CairnTasks", "CairnJobs",
                "CairnCatalog", "CairnReports", "CairnNotifications", "CairnOutbound", "CairnFormats", "CairnFiles",
                "CairnPipelines",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                .product(name: "Configuration", package: "swift-configuration"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            resources: [.copy("Resources/openapi.yaml")],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "cairn",
            dependencies: [
                "CairnServer", "CairnStorage", "CairnAccounts", "CairnHTTP",
                "CairnTasks", "CairnCatalog", "CairnPipelines",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "cairn-bench",
            dependencies: ["CairnFormats", .product(name: "CSV", package: "CSV.swift")],
            path: "Benchmarks/cairn-bench",
            swiftSettings: swiftSettings
        ),
        .target(
            name: "CairnTestSupport",
            dependencies: [
                "CairnServer", "CairnStorage", "CairnAccounts", "CairnHTTP",
                // The row factories insert through these modules' stores.
                "CairnTasks", "CairnJobs", "CairnCatalog", "CairnFiles", "CairnPipelines", "CairnNotifications",
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "SQLKit", package: "sql-kit"),
                .product(name: "Subprocess", package: "swift-subprocess"),
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            path: "Tests/CairnTestSupport",
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "CairnHTTPTests",
            dependencies: testDependencies,
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "CairnStorageTests",
            dependencies: testDependencies,
            swiftSettings: swiftSettings
        ),
        // The store conformance suite: every store's operations called directly, on both engines.
        .testTarget(
            name: "CairnStoreTests",
            dependencies: testDependencies + [
                "CairnAccounts", "CairnTasks", "CairnJobs", "CairnCatalog", "CairnFiles", "CairnPipelines", "CairnNotifications",
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "CairnAccountsTests",
            dependencies: testDependencies + ["CairnAccounts"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "CairnTasksTests",
            dependencies: testDependencies + ["CairnTasks"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "CairnServerTests",
            dependencies: testDependencies + [
                "CairnAccounts", "CairnCatalog", "CairnFiles", "CairnJobs", "CairnNotifications", "CairnOutbound", "CairnPipelines",
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "CairnJobsTests",
            dependencies: testDependencies + ["CairnJobs"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "CairnFormatsTests",
            dependencies: testDependencies,
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "CairnFilesTests",
            dependencies: testDependencies + ["CairnFiles", "CairnJobs", "CairnAccounts", .product(name: "Crypto", package: "swift-crypto")],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "CairnPipelinesTests",
            dependencies: testDependencies + [
                "CairnPipelines", "CairnFiles", "CairnJobs", "CairnAccounts", .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "CairnCatalogTests",
            dependencies: testDependencies + ["CairnCatalog", "CairnJobs", "CairnFiles", "CairnAccounts"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "CairnReportsTests",
            dependencies: testDependencies + ["CairnReports", "CairnTasks", "CairnCatalog", "CairnNotifications"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "CairnNotificationsTests",
            dependencies: testDependencies + [
                "CairnNotifications", "CairnOutbound", "CairnAccounts", "CairnJobs",
                .product(name: "HummingbirdWSClient", package: "hummingbird-websocket"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
            ],
            exclude: ["Resources"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "EndToEndTests",
            dependencies: ["CairnTestSupport"],
            swiftSettings: swiftSettings
        ),
    ]
)
