public import Foundation

/// Runs `executable` with `arguments` to its end and returns its standard output; `input`, when
/// given, is written to its standard input.
///
/// The wait happens on a Dispatch thread, never on the Swift concurrency pool: a child that
/// talks to this process's in-process server (curl, tuspy, a Python client) needs the pool's
/// threads — two on a 2-core machine — free to answer it, so one blocking wait per test could
/// deadlock the suite.
/// - Throws: `TestSetupError` with the end of its standard error unless it exits 0.
@discardableResult
public func runProcess(_ executable: String, _ arguments: [String], input: Data? = nil) async throws -> Data {
    try await withCheckedThrowingContinuation { continuation in
        DispatchQueue.global().async {
            continuation.resume(with: Result { try runProcessBlocking(executable, arguments, input: input) })
        }
    }
}

/// Runs a Python 3 snippet (`python3 -c code arguments…`) and returns its standard output.
/// - Throws: `TestSetupError` unless it exits 0.
@discardableResult
public func runPython(_ code: String, _ arguments: [String] = []) async throws -> Data {
    try await runProcess("/usr/bin/env", ["python3", "-c", code] + arguments)
}

private func runProcessBlocking(_ executable: String, _ arguments: [String], input: Data?) throws -> Data {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    let output = Pipe()
    // Standard error goes to a file: a pipe nobody reads while standard output is read to its
    // end would stall a chatty child.
    let errors = FileManager.default.temporaryDirectory.appendingPathComponent("cairn-run-\(UUID().uuidString).err")
    _ = FileManager.default.createFile(atPath: errors.path, contents: nil)
    defer { try? FileManager.default.removeItem(at: errors) }
    process.standardOutput = output
    process.standardError = try FileHandle(forWritingTo: errors)
    let stdin = Pipe()
    process.standardInput = input == nil ? FileHandle.nullDevice : stdin
    try process.run()
    if let input {
        // Written from another thread, so a child that answers before reading all of it cannot
        // fill both pipes and stall.
        DispatchQueue.global().async {
            stdin.fileHandleForWriting.write(input)
            try? stdin.fileHandleForWriting.close()
        }
    }
    let data = output.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else {
        let text = (try? String(contentsOf: errors, encoding: .utf8)) ?? ""
        throw TestSetupError("\(executable) \(arguments.prefix(2).joined(separator: " ")) exited \(process.terminationStatus): \(text.suffix(1500))")
    }
    return data
}
