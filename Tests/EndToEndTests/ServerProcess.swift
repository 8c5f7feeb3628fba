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

/// Runs the binary and captures its output.
func runCairn(_ arguments: [String], environment: [String: String] = [:], stdin: String? = nil) throws -> (
    status: Int32, output: String, error: String
) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: try cairnBinary())
    process.arguments = arguments
    process.environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("CAIRN_") }.merging(environment) { $1 }
    let out = Pipe()
    let err = Pipe()
    process.standardOutput = out
    process.standardError = err
    let input = Pipe()
    process.standardInput = input
    try process.run()
    if let stdin { input.fileHandleForWriting.write(Data(stdin.utf8)) }
    try input.fileHandleForWriting.close()
    let output = out.fileHandleForReading.readDataToEndOfFile()
    let error = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: output, as: UTF8.self), String(decoding: error, as: UTF8.self))
}

/// A running `cairn serve` on a free loopback port.
final class ServerProcess: Sendable {
    let process: Process
    let port: Int
    private let log: LogBuffer

    var baseURL: String { "http://127.0.0.1:\(port)" }
    var output: String { log.text }

    private init(process: Process, port: Int, log: LogBuffer) {
        self.process = process
        self.port = port
        self.log = log
    }

    /// Starts the server with port 0 and reads the bound port from its `listening` log line.
    static func start(dataDir: String, environment: [String: String] = [:]) async throws -> ServerProcess {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try cairnBinary())
        process.arguments = ["serve", "--port", "0", "--data-dir", dataDir]
        var env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("CAIRN_") }
        env["CAIRN_BCRYPT_COST"] = "4"
        process.environment = env.merging(environment) { $1 }
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        let log = LogBuffer()
        log.read(pipe.fileHandleForReading, endsAtEOF: false)
        process.terminationHandler = { _ in log.end() }
        try process.run()
        // Waits for the `listening` line (or the exit), re-checked as output arrives.
        let started = await log.wait(timeout: .seconds(60)) { text, ended in ended || Self.port(in: text) != nil }
        if let port = Self.port(in: log.text) { return ServerProcess(process: process, port: port, log: log) }
        if started { throw E2EError("cairn exited during start-up:\n\(log.text)") }
        process.terminate()
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

    /// Sends SIGTERM and waits for the exit status.
    func stop() async throws -> Int32 {
        process.terminate()
        guard await log.wait(timeout: .seconds(30), until: { _, ended in ended }) else {
            kill(process.processIdentifier, SIGKILL)
            throw E2EError("cairn did not exit within 30 s of SIGTERM")
        }
        process.waitUntilExit()  // already exited: returns at once, and terminationStatus is set
        return process.terminationStatus
    }
}

/// An HTTP exchange made with curl, a real client over loopback.
struct CurlResponse {
    var status: Int
    var headers: [String: String]
    var body: String
    var json: [String: Any] { (try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any]) ?? [:] }
}

func curl(_ method: String, _ url: String, json: [String: Any]? = nil, token: String? = nil, headers extra: [String: String] = [:]) throws
    -> CurlResponse
{
    let headerFile = FileManager.default.temporaryDirectory.appendingPathComponent("h-\(UUID().uuidString)").path
    defer { try? FileManager.default.removeItem(atPath: headerFile) }
    var arguments = ["-s", "-S", "-X", method, "-D", headerFile, "--max-time", "30"]
    if let json {
        arguments += ["-H", "Content-Type: application/json", "--data-binary", "@-"]
        _ = json
    }
    if let token { arguments += ["-H", "Authorization: Bearer \(token)"] }
    for (name, value) in extra { arguments += ["-H", "\(name): \(value)"] }
    arguments.append(url)
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = ["curl"] + arguments
    let out = Pipe()
    let input = Pipe()
    process.standardOutput = out
    process.standardInput = input
    try process.run()
    if let json { input.fileHandleForWriting.write(try JSONSerialization.data(withJSONObject: json)) }
    try input.fileHandleForWriting.close()
    let body = out.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else { throw E2EError("curl failed with \(process.terminationStatus) for \(method) \(url)") }
    let rawHeaders = (try? String(contentsOfFile: headerFile, encoding: .utf8)) ?? ""
    var status = 0
    var headers: [String: String] = [:]
    for line in rawHeaders.split(separator: "\r\n") {
        if line.hasPrefix("HTTP/") {
            status = Int(line.split(separator: " ")[1]) ?? 0
        } else if let colon = line.firstIndex(of: ":") {
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
    }
    return CurlResponse(status: status, headers: headers, body: String(decoding: body, as: UTF8.self))
}

/// Output collected from a child process, appended from the pipe's handler thread; a test
/// awaits what it expects, re-checked as each chunk arrives (never on a timer).
final class LogBuffer: Sendable {
    private struct State {
        var text = ""
        var ended = false
        var waiters: [UInt64: AsyncStream<Void>.Continuation] = [:]
        var nextWaiter: UInt64 = 0
    }
    private let storage = Mutex(State())

    var text: String { storage.withLock { $0.text } }

    func append(_ chunk: String) {
        let waiters = storage.withLock { state in
            state.text += chunk
            return Array(state.waiters.values)
        }
        for waiter in waiters { waiter.yield() }
    }

    /// Appends what `handle` delivers, read on a thread of its own with plain `read(2)`
    /// retried on `EINTR` (`FileHandle.availableData` traps on it, and the tests' many child
    /// processes' SIGCHLDs cause it); with `endsAtEOF`, the end of file ends the output.
    func read(_ handle: FileHandle, endsAtEOF: Bool) {
        Thread {
            var buffer = [UInt8](repeating: 0, count: 65536)
            while true {
                // Through `handle`, which the thread keeps alive: it closes its descriptor when
                // released, and another pipe could then get the same number.
                let count = buffer.withUnsafeMutableBytes { Glibc.read(handle.fileDescriptor, $0.baseAddress, $0.count) }
                if count < 0 && errno == EINTR { continue }
                guard count > 0 else {
                    if endsAtEOF { self.end() }
                    return
                }
                self.append(String(decoding: buffer[0..<count], as: UTF8.self))
            }
        }.start()
    }

    /// Marks the end of the output (the child exited).
    func end() {
        let waiters = storage.withLock { state in
            state.ended = true
            return Array(state.waiters.values)
        }
        for waiter in waiters { waiter.yield() }
    }

    /// Returns true once `predicate` holds for (text, ended), false after `timeout`.
    func wait(timeout: Duration, until predicate: @escaping @Sendable (String, Bool) -> Bool) async -> Bool {
        let (wakeUps, continuation) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        let id = storage.withLock { state -> UInt64 in
            state.nextWaiter += 1
            state.waiters[state.nextWaiter] = continuation
            return state.nextWaiter
        }
        defer { _ = storage.withLock { $0.waiters.removeValue(forKey: id) } }
        return await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                if self.storage.withLock({ predicate($0.text, $0.ended) }) { return true }
                for await _ in wakeUps where self.storage.withLock({ predicate($0.text, $0.ended) }) { return true }
                return false
            }
            group.addTask {
                // The deadline: a bound on a failure, never a wait a passing test sits through.
                try? await Task.sleep(for: timeout)
                return false
            }
            let first = await group.next() ?? false
            group.cancelAll()
            return first
        }
    }
}

/// Follows `GET /jobs/{id}/events` (Server-Sent Events, one per change of the job) with
/// `curl -N`, and returns the first state of the job that satisfies `predicate`.
/// - Throws: `E2EError` when no event satisfies it within `timeout`.
func followJob(
    _ base: String, _ id: String, token: String, timeout: Duration = .seconds(60), until predicate: @escaping @Sendable ([String: Any]) -> Bool
) async throws -> [String: Any] {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
    process.arguments = ["-sN", "-H", "Authorization: Bearer \(token)", "\(base)/jobs/\(id)/events"]
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = FileHandle.nullDevice
    let received = LogBuffer()
    received.read(pipe.fileHandleForReading, endsAtEOF: true)
    try process.run()
    defer { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
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
