import CairnTestSupport
import Foundation
import Testing

@Suite("End to end: configuration errors")
struct ConfigurationEndToEndTests {
    /// A data directory that cannot be made is a configuration error (exit 2) in one line naming
    /// the setting, the directory and the system's reason, instead of Foundation's error text
    /// and exit 1 (found by a fresh-user trial with `--data-dir /proc/nope`).
    @Test func aDataDirectoryThatCannotBeMadeExits2NamingItAndTheReason() async throws {
        let file = try temporaryDirectory() + "/plain-file"
        defer { try? FileManager.default.removeItem(atPath: (file as NSString).deletingLastPathComponent) }
        try Data("x".utf8).write(to: URL(fileURLWithPath: file))
        for (dataDir, reason) in [("/proc/nope", "No such file or directory"), (file + "/data", "Not a directory")] {
            for command in [["serve", "--port", "0"], ["migrate"]] {
                let result = try await runCairn(command + ["--data-dir", dataDir], environment: ["CAIRN_LOG_LEVEL": "error"])
                #expect(result.status == 2, "\(command) \(dataDir): \(result.error)")
                let lines = result.error.split(separator: "\n")
                #expect(lines.count == 1, "\(result.error)")
                #expect(result.error.contains("CAIRN_DATA_DIR") && result.error.contains("'\(dataDir)'"), "\(result.error)")
                #expect(result.error.contains(reason), "\(result.error)")
            }
        }
    }

    /// A value out of its range stops `cairn serve` with exit 2 and one line naming the setting
    /// and the range it takes (a fresh-user trial's `CAIRN_HTTP_DRAIN_TIMEOUT=0` was refused
    /// without either saying what would do).
    @Test func anOutOfRangeValueExits2NamingTheSettingAndItsRange() async throws {
        let dataDir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dataDir) }
        let result = try await runCairn(
            ["serve", "--port", "0", "--data-dir", dataDir], environment: ["CAIRN_HTTP_DRAIN_TIMEOUT": "0", "CAIRN_LOG_LEVEL": "error"])
        #expect(result.status == 2, "\(result.error)")
        #expect(result.error.split(separator: "\n").count == 1, "\(result.error)")
        #expect(result.error.contains("CAIRN_HTTP_DRAIN_TIMEOUT") && result.error.contains("from 1s to 3650d"), "\(result.error)")
    }

    /// `cairn serve` with `environment` and `arguments`, on a fresh data directory, until it
    /// exits or listens: its exit status (nil when it started, and was then stopped) and its
    /// output, JSON log lines and standard error together.
    func serveUntilItExitsOrListens(environment: [String: String], arguments: [String] = []) async throws -> (status: Int32?, output: String) {
        let dataDir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dataDir) }
        let log = LogBuffer()
        let child = try await ChildProcess(
            try cairnBinary(), ["serve", "--port", "0", "--data-dir", dataDir] + arguments,
            environment: cairnEnvironment(["CAIRN_LOG_FORMAT": "json", "CAIRN_BCRYPT_COST": "4"].merging(environment) { $1 }), includeErrors: true
        ) { data in
            if let data { log.append(String(decoding: data, as: UTF8.self)) } else { log.end() }
        }
        _ = await log.wait(timeout: .seconds(60)) { text, ended in ended || text.contains("\"listening\"") }
        if log.text.contains("\"listening\"") {
            child.signal(SIGTERM)
            _ = await child.waitForExit(timeout: .seconds(30))
            return (nil, log.text)
        }
        return (await child.waitForExit(timeout: .seconds(30)), log.text)
    }

    /// The lines of `output` that are not JSON log lines: what `cairn` printed as an error.
    func errorLines(_ output: String) -> [Substring] {
        output.split(separator: "\n").filter { !$0.hasPrefix("{") }
    }

    /// A malformed OTLP endpoint stops `cairn serve` with exit 2 and one line naming the
    /// variable: a fresh-user trial's `OTEL_EXPORTER_OTLP_ENDPOINT=notaurl` was taken at start
    /// and every export then failed.
    @Test func aMalformedOTLPEndpointExits2NamingTheVariable() async throws {
        for (name, value) in [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "notaurl"), ("OTEL_EXPORTER_OTLP_ENDPOINT", "localhost:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "ftp://127.0.0.1/v1/traces"), ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http:///v1/traces"),
        ] {
            let (status, output) = try await serveUntilItExitsOrListens(environment: [name: value])
            #expect(status == 2, "\(name)=\(value): \(output)")
            let errors = errorLines(output)
            #expect(errors.count == 1, "\(name)=\(value): \(output)")
            #expect(errors.first?.contains(name) == true && errors.first?.contains("http or https URL with a host") == true, "\(output)")
        }
    }

    /// A `--config` file with a key no setting reads stops `cairn serve` with exit 2 and one line
    /// naming the key and the one meant: a fresh-user trial's `jobs.concurency` was dropped
    /// without a word.
    @Test func aConfigurationFileWithAnUnknownKeyExits2NamingIt() async throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("cairn-config-\(UUID().uuidString).json").path
        defer { try? FileManager.default.removeItem(atPath: file) }
        try JSONSerialization.data(withJSONObject: ["jobs": ["concurency": 1]]).write(to: URL(fileURLWithPath: file))
        let (status, output) = try await serveUntilItExitsOrListens(environment: [:], arguments: ["--config", file])
        #expect(status == 2, "\(output)")
        let errors = errorLines(output)
        #expect(errors.count == 1, "\(output)")
        #expect(
            errors.first?.contains("--config") == true && errors.first?.contains("jobs.concurency (did you mean jobs.concurrency?)") == true,
            "\(output)")
    }

    /// A `--config` file that is not strict JSON stops `cairn serve` with exit 2 and one line
    /// saying where: a fresh-user trial's trailing comma was taken, a repeated member silently
    /// took the last value, and a top-level array was only "missing or not valid JSON".
    @Test func aConfigurationFileThatIsNotStrictJSONExits2SayingWhere() async throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("cairn-config-\(UUID().uuidString).json").path
        defer { try? FileManager.default.removeItem(atPath: file) }
        for (text, fragment) in [
            ("{\n  \"jobs\": {\"concurrency\": 1,}\n}", "is not valid JSON at line 2, column 28: a trailing comma"),
            ("{\n  \"jobs\": {\"concurrency\": 1},\n  \"jobs\": {\"lease\": 30}\n}", "repeats the key jobs at line 3, column 3"),
            (#"[{"jobs": {"concurrency": 1}}]"#, "holds an array at line 1, column 1: the configuration file must hold a JSON object"),
        ] {
            try Data(text.utf8).write(to: URL(fileURLWithPath: file))
            let (status, output) = try await serveUntilItExitsOrListens(environment: [:], arguments: ["--config", file])
            #expect(status == 2, "\(text): \(output)")
            let errors = errorLines(output)
            #expect(errors.count == 1, "\(output)")
            #expect(errors.first?.contains("--config '\(file)' \(fragment)") == true, "\(output)")
        }
    }

    /// An OTLP endpoint whose port is outside 1–65535 stops `cairn serve` with exit 2 naming the
    /// variable, as a malformed one does (a fresh-user trial's `:99999` and `:0` were taken).
    @Test func anOTLPEndpointPortOutOfRangeExits2() async throws {
        for (name, port) in [("OTEL_EXPORTER_OTLP_ENDPOINT", "99999"), ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "0")] {
            let (status, output) = try await serveUntilItExitsOrListens(environment: [name: "http://127.0.0.1:\(port)"])
            #expect(status == 2, "\(name): \(output)")
            let errors = errorLines(output)
            #expect(errors.count == 1, "\(output)")
            #expect(errors.first?.contains("\(name) has port \(port), out of range: a port is from 1 to 65535") == true, "\(output)")
        }
    }

    /// What `cairn serve` warns about at start names what the operator set: a `CAIRN_*`
    /// variable no setting reads, with the one meant (a fresh-user trial's
    /// `CAIRN_JOBS_CONCURENCY=8` was ignored without a word), and an invalid
    /// `OTEL_EXPORTER_OTLP_TIMEOUT`, which swift-otel reported as `OTEL_EXPORTER_OTLP_LOGS_TIMEOUT`
    /// (and twice more). Both are warnings: the node starts.
    /// A node started under systemd's soft limit of 1,024 open files (here 512) raises it to the
    /// hard limit, and sizes its connection limit from that.
    @Test func theOpenFileLimitIsRaisedToTheHardLimit() async throws {
        var limit = rlimit()
        try #require(getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0)
        // Nothing to raise where the hard limit is this low (never on a Linux default).
        guard limit.rlim_max != rlim_t.max, limit.rlim_max > 1024 else { return }
        let hard = Int(limit.rlim_max)
        let server = try await ServerProcess.start(dataDir: try temporaryDirectory(), softFileLimit: 512)
        let limits = try String(contentsOfFile: "/proc/\(server.pid)/limits", encoding: .utf8)
        let line = try #require(limits.split(separator: "\n").first { $0.hasPrefix("Max open files") })
        let numbers = line.split(separator: " ").compactMap { Int($0) }
        #expect(numbers == [hard, hard], "\(line)")
        #expect(server.output.contains("open-file limit raised to the hard limit"), "\(server.output)")
        let start = try #require(server.output.split(separator: "\n").first { $0.contains("starting cairn") })
        #expect(start.contains("max_connections") && start.contains("\(FileDescriptorLimitFormula.maxConnections(hard))"), "\(start)")
        #expect(try await server.stop() == 0)
    }

    /// At `CAIRN_HTTP_MAX_CONNECTIONS` the server stops accepting: a flood of idle connections
    /// cannot exhaust the node's file descriptors (a trial crashed a node with a soft limit of
    /// 1,024 by opening 1,200). A connection over the limit waits in the kernel's queue and is
    /// served once another closes. (End to end: Hummingbird's test server drops the limit.)
    @Test func connectionsOverTheLimitWaitUntilOneCloses() async throws {
        let server = try await ServerProcess.start(dataDir: try temporaryDirectory(), environment: ["CAIRN_HTTP_MAX_CONNECTIONS": "16"])
        var idle: [Int32] = []
        for _ in 0..<16 { idle.append(try loopbackSocket(port: server.port)) }
        #expect(await server.waitForOutput(timeout: .seconds(30)) { $0.contains("at the connection limit") }, "\(server.output)")
        let late = try loopbackSocket(port: server.port)
        await sendAll(Array("GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".utf8), on: late)
        close(idle.removeFirst())
        let answer = await offThePool {
            // Reads to the end of the response (the server closes after it), for at most 30 s.
            var received: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 4096)
            let start = ContinuousClock.now
            while ContinuousClock.now - start < .seconds(30) {
                var poller = pollfd(fd: late, events: Int16(POLLIN), revents: 0)
                guard poll(&poller, 1, 1000) > 0 else { continue }
                let count = chunk.withUnsafeMutableBytes { recv(late, $0.baseAddress, $0.count, 0) }
                if count <= 0 { break }
                received += chunk[0..<count]
            }
            return String(decoding: received, as: UTF8.self)
        }
        #expect(answer.hasPrefix("HTTP/1.1 200"), "\(answer)")
        close(late)
        for fd in idle { close(fd) }
        #expect(try await server.stop() == 0)
    }

    @Test func startWarningsNameTheVariablesSet() async throws {
        let (status, output) = try await serveUntilItExitsOrListens(environment: [
            "CAIRN_JOBS_CONCURENCY": "8", "CAIRN_TEST_ANYTHING": "1", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "-5",
        ])
        #expect(status == nil, "\(output)")
        let warnings = output.split(separator: "\n").filter { $0.contains(#""level":"warning""#) }
        #expect(
            warnings.contains { $0.contains("unknown environment variable CAIRN_JOBS_CONCURENCY (did you mean CAIRN_JOBS_CONCURRENCY?)") },
            "\(output)")
        #expect(warnings.contains { $0.contains("OTEL_EXPORTER_OTLP_TIMEOUT ignored") }, "\(output)")
        #expect(!output.contains("CAIRN_TEST_ANYTHING"), "\(output)")
        #expect(!output.contains("OTEL_EXPORTER_OTLP_LOGS_TIMEOUT") && !output.contains("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"), "\(output)")
    }

    /// A bad value given by a flag is named by the flag, exit 2; an unknown option is a usage
    /// error, exit 64 (sysexits(3) EX_USAGE, as swift-argument-parser exits); `cairn --help`
    /// says which status means what.
    @Test func exitStatusesAreDocumentedAndFlagsNamed() async throws {
        let dataDir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dataDir) }
        let badPort = try await runCairn(["serve", "--port", "eighty", "--data-dir", dataDir], environment: ["CAIRN_LOG_LEVEL": "error"])
        #expect(badPort.status == 2, "\(badPort.error)")
        #expect(badPort.error.hasPrefix("cairn: invalid configuration: --port must be an integer from 0 to 65535"), "\(badPort.error)")
        let unknown = try await runCairn(["serve", "--prot", "8080"])
        #expect(unknown.status == 64, "\(unknown.error)")
        #expect(unknown.error.contains("Unknown option '--prot'"), "\(unknown.error)")
        let help = try await runCairn(["--help"])
        #expect(help.status == 0)
        let text = help.output.split(whereSeparator: \.isWhitespace).joined(separator: " ")
        #expect(text.contains("Exit status: 0 done; 1 a failure while running"), "\(help.output)")
        #expect(text.contains("2 a setting with a bad value") && text.contains("64 a command line that does not parse"), "\(help.output)")
    }

    /// A database URL without a database name, or with a parameter Cairn does not read, stops
    /// `cairn serve` with exit 2 before anything is made (the data directory included).
    @Test func aDatabaseURLWithoutADatabaseOrWithAnUnknownParameterExits2() async throws {
        let dataDir = try temporaryDirectory() + "/never-made"
        // Port 1: nothing listens there, so without the check the start fails later (exit 1)
        // instead of migrating whatever database the URL falls back to.
        for url in ["postgres://postgres@127.0.0.1:1", "postgres://postgres@127.0.0.1:1/cairn?sslmod=require"] {
            let result = try await runCairn(
                ["serve", "--port", "0", "--data-dir", dataDir], environment: ["CAIRN_DATABASE_URL": url, "CAIRN_LOG_LEVEL": "error"])
            #expect(result.status == 2, "\(url): \(result.error)")
            #expect(result.error.contains("CAIRN_DATABASE_URL"), "\(result.error)")
            #expect(!FileManager.default.fileExists(atPath: dataDir))
        }
    }

    /// `CAIRN_DATABASE_URL=` (empty, as Compose writes `${VAR:-}`) beside a `--config` file that
    /// names PostgreSQL: the node runs on that PostgreSQL, with the executor chosen for it, as
    /// without the variable. Before, the empty variable hid the file's URL and the node started
    /// on a SQLite file in its data directory.
    @Test func anEmptyDatabaseURLVariableLeavesTheFilesPostgreSQL() async throws {
        guard E2EEngine.available.contains(.postgres) else { return }
        let url = try #require(try await E2EEngine.postgres.environment()["CAIRN_DATABASE_URL"])
        let dataDir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dataDir) }
        let file = dataDir + "/cairn.json"
        try JSONSerialization.data(withJSONObject: ["database": ["url": url]]).write(to: URL(fileURLWithPath: file))
        let server = try await ServerProcess.start(dataDir: dataDir, environment: ["CAIRN_DATABASE_URL": ""], arguments: ["--config", file])
        let output = server.output
        #expect(try await server.stop() == 0)
        #expect(output.contains("database=postgres"), "\(output)")
        #expect(output.contains("executor=swift"), "\(output)")
        #expect(!FileManager.default.fileExists(atPath: dataDir + "/cairn.sqlite"), "a SQLite file was made")
    }
}

/// The default connection limit for `limit` open files, as README states it.
private enum FileDescriptorLimitFormula {
    static func maxConnections(_ limit: Int) -> Int { max(16, limit - max(256, limit / 8)) }
}
