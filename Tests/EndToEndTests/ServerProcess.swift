import CairnTestSupport
import Foundation
import Synchronization
import Testing

/// Locates the `cairn` binary built by `swift build` (or `CAIRN_BINARY`). End-to-end tests
/// build nothing themselves.
func cairnBinary() throws -> String {
    if let path = ProcessInfo.processInfo.environment["CAIRN_BINARY"] { return path }
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    for configuration in ["debug", "release"] {
        let path = root.appendingPathComponent(".build/\(configuration)/cairn").path
        if FileManager.default.isExecutableFile(atPath: path) { return path }
    }
    throw E2EError("the cairn binary is missing: run `swift build` before `swift test`")
}

struct E2EError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// The environment a child `cairn` gets: this process's without its `CAIRN_*` settings, plus
/// `environment`.
func cairnEnvironment(_ environment: [String: String]) -> [String: String] {
    ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("CAIRN_") }.merging(environment) { $1 }
}

/// Runs the binary and captures its output.
func runCairn(_ arguments: [String], environment: [String: String] = [:], stdin: String? = nil) async throws -> (
    status: Int32, output: String, error: String
) {
    let result = try await runChild(
        try cairnBinary(), arguments, environment: cairnEnvironment(environment), input: Data((stdin ?? "").utf8))
    return (result.status, result.text, result.errorText)
}

/// A running `cairn serve` on a free loopback port.
final class ServerProcess: Sendable {
    let child: ChildProcess
    let port: Int
    private let log: LogBuffer

    var baseURL: String { "http://127.0.0.1:\(port)" }
    var output: String { log.text }
    /// The server's process id.
    var pid: pid_t { child.pid }

    private init(child: ChildProcess, port: Int, log: LogBuffer) {
        self.child = child
        self.port = port
        self.log = log
    }

    /// Starts the server with port 0 and reads the bound port from its `listening` log line.
    /// `arguments` follow `serve`'s own.
    /// With `softFileLimit`, the server starts under that soft open-file limit (`ulimit -Sn`).
    static func start(
        dataDir: String, environment: [String: String] = [:], arguments: [String] = [], softFileLimit: Int? = nil
    ) async throws -> ServerProcess {
        let log = LogBuffer()
        var command = [try cairnBinary(), "serve", "--port", "0", "--data-dir", dataDir] + arguments
        if let softFileLimit {
            // The shell sets the limit, then becomes the server (same process id).
            command = ["/bin/sh", "-c", "ulimit -Sn \(softFileLimit) && exec \"$0\" \"$@\""] + command
        }
        let child = try await ChildProcess(
            command[0], Array(command.dropFirst()),
            environment: cairnEnvironment(["CAIRN_BCRYPT_COST": "4"].merging(environment) { $1 }), includeErrors: true
        ) { data in
            if let data { log.append(String(decoding: data, as: UTF8.self)) } else { log.end() }
        }
        // Waits for the `listening` line (or the exit), re-checked as output arrives.
        let started = await log.wait(timeout: .seconds(60)) { text, ended in ended || Self.port(in: text) != nil }
        if let port = Self.port(in: log.text) { return ServerProcess(child: child, port: port, log: log) }
        if started { throw E2EError("cairn exited during start-up:\n\(log.text)") }
        child.signal(SIGKILL)
        throw E2EError("cairn did not start within 60 s:\n\(log.text)")
    }

    /// The port of the `listening` line in `text`: text logs say `port=8080`, JSON logs
    /// `"port":"8080"`.
    private static func port(in text: String) -> Int? {
        guard
            let line = text.split(separator: "\n").first(where: {
                $0.contains("listening") && $0.range(of: #"port(=|":")\d+"#, options: .regularExpression) != nil
            }),
            let range = line.range(of: #"port(=|":")\d+"#, options: .regularExpression),
            let port = Int(line[range].filter(\.isNumber)), port > 0
        else { return nil }
        return port
    }

    /// Waits until the server's output so far satisfies `done`, or `timeout` passes; whether it did.
    func waitForOutput(timeout: Duration, until done: @escaping @Sendable (String) -> Bool) async -> Bool {
        await log.wait(timeout: timeout) { text, _ in done(text) }
    }

    /// Sends SIGTERM and waits for the exit status.
    func stop() async throws -> Int32 {
        child.signal(SIGTERM)
        guard let status = await child.waitForExit(timeout: .seconds(30)) else {
            child.signal(SIGKILL)
            throw E2EError("cairn did not exit within 30 s of SIGTERM")
        }
        return status
    }

    /// Sends SIGKILL (a crash) and waits for the exit.
    func kill() async {
        child.signal(SIGKILL)
        _ = await child.waitForExit()
    }
}

/// An HTTP exchange made with curl, a real client over loopback.
struct CurlResponse {
    var status: Int
    var headers: [String: String]
    var body: String
    var json: [String: Any] { (try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any]) ?? [:] }
}

func curl(_ method: String, _ url: String, json: [String: Any]? = nil, token: String? = nil, headers extra: [String: String] = [:])
    async throws -> CurlResponse
{
    let headerFile = FileManager.default.temporaryDirectory.appendingPathComponent("h-\(UUID().uuidString)").path
    defer { try? FileManager.default.removeItem(atPath: headerFile) }
    var arguments = ["curl", "-s", "-S", "-X", method, "-D", headerFile, "--max-time", "30"]
    if json != nil { arguments += ["-H", "Content-Type: application/json", "--data-binary", "@-"] }
    if let token { arguments += ["-H", "Authorization: Bearer \(token)"] }
    for (name, value) in extra { arguments += ["-H", "\(name): \(value)"] }
    arguments.append(url)
    let input = try json.map { try JSONSerialization.data(withJSONObject: $0) }
    let result = try await runChild("/usr/bin/env", arguments, input: input)
    guard result.status == 0 else { throw E2EError("curl failed with \(result.status) for \(method) \(url): \(result.errorText)") }
    let body = result.output
    let (status, headers) = parseResponseHead((try? String(contentsOfFile: headerFile, encoding: .utf8)) ?? "")
    return CurlResponse(status: status, headers: headers, body: String(decoding: body, as: UTF8.self))
}

/// Output collected from a child process as it arrives; a test
/// awaits what it expects, re-checked as each chunk arrives (never on a timer).
final class LogBuffer: Sendable {
    private let state = Observed((text: "", ended: false))

    var text: String { state.value.text }

    func append(_ chunk: String) {
        state.update { $0.text += chunk }
    }

    /// Marks the end of the output (the child exited).
    func end() {
        state.update { $0.ended = true }
    }

    /// Returns true once `predicate` holds for (text, ended), false after `timeout`.
    func wait(timeout: Duration, until predicate: @escaping @Sendable (String, Bool) -> Bool) async -> Bool {
        do {
            try await state.wait("the child's output", timeout: timeout) { predicate($0.text, $0.ended) }
            return true
        } catch {
            return false
        }
    }
}

/// Follows `GET /jobs/{id}/events` (Server-Sent Events, one per change of the job) with
/// `curl -N`, and returns the first state of the job that satisfies `predicate`.
/// - Throws: `E2EError` when no event satisfies it within `timeout`.
func followJob(
    _ base: String, _ id: String, token: String, timeout: Duration = .seconds(60), until predicate: @escaping @Sendable ([String: Any]) -> Bool
) async throws -> [String: Any] {
    let received = LogBuffer()
    let curl = try await ChildProcess("/usr/bin/curl", ["-sN", "-H", "Authorization: Bearer \(token)", "\(base)/jobs/\(id)/events"]) {
        data in
        if let data { received.append(String(decoding: data, as: UTF8.self)) } else { received.end() }
    }
    defer { curl.signal(SIGKILL) }
    let states = { @Sendable (text: String) in
        text.components(separatedBy: "\n\n").compactMap { block -> [String: Any]? in
            guard let line = block.split(separator: "\n").first(where: { $0.hasPrefix("data: ") }) else { return nil }
            return try? JSONSerialization.jsonObject(with: Data(line.dropFirst(6).utf8)) as? [String: Any]
        }
    }
    _ = await received.wait(timeout: timeout) { text, ended in ended || states(text).contains(where: predicate) }
    let all = states(received.text)
    guard let found = all.first(where: predicate) else {
        throw E2EError("job \(id): no event matched within \(timeout); last: \(all.last.map { "\($0)" } ?? "none")")
    }
    return found
}
