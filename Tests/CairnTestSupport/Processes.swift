package import Foundation
import Subprocess
import Synchronization
import SystemPackage

#if canImport(Glibc)
    import Glibc
#endif

// Every child process the tests start goes through swift-subprocess. Foundation's
// `Process.run()` on Linux (Swift 6.3) over-reads `/proc/self/fd` entries
// (swift-corelibs-foundation#5472) and crashed the whole test bundle once the tests held
// many descriptors open.

/// How a finished child ended and what it printed.
package struct ChildResult: Sendable {
    /// The exit code, or 128 + the signal number when a signal ended it (the shell's rule).
    package var status: Int32
    /// Everything it wrote to standard output.
    package var output: Data
    /// Everything it wrote to standard error.
    package var error: Data

    /// Standard output as UTF-8 text.
    package var text: String { String(decoding: output, as: UTF8.self) }
    /// Standard error as UTF-8 text.
    package var errorText: String { String(decoding: error, as: UTF8.self) }
}

/// The exit code of `status`, or 128 + the signal number.
private func exitCode(_ status: TerminationStatus) -> Int32 {
    switch status {
    case .exited(let code): return code
    case .signaled(let signal): return 128 + signal
    }
}

/// The environment a child gets: this process's, or exactly `environment` when given.
private func childEnvironment(_ environment: [String: String]?) -> Subprocess.Environment {
    guard let environment else { return .inherit }
    var keyed: [Subprocess.Environment.Key: String] = [:]
    for (name, value) in environment {
        if let key = Subprocess.Environment.Key(rawValue: name) { keyed[key] = value }
    }
    return .custom(keyed)
}

/// Runs `executable` with `arguments` to its end and returns its status and output; `input`,
/// when given, is its standard input (otherwise it reads an empty one).
///
/// The child is awaited without blocking a thread of the concurrency pool: a child that talks
/// to this process's in-process server (curl, tuspy, a Python client) needs the pool's
/// threads, two on a 2-core machine, free to answer it.
/// - Parameter environment: the child's whole environment; nil inherits this process's.
/// - Throws: `SubprocessError` when it cannot be started, or when it prints more than 1 GiB.
package func runChild(_ executable: String, _ arguments: [String], environment: [String: String]? = nil, input: Data? = nil)
    async throws -> ChildResult
{
    let limit = 1 << 30
    let result =
        if let input {
            try await Subprocess.run(
                .path(FilePath(executable)), arguments: Arguments(arguments), environment: childEnvironment(environment),
                input: .data(input), output: .data(limit: limit), error: .data(limit: limit))
        } else {
            try await Subprocess.run(
                .path(FilePath(executable)), arguments: Arguments(arguments), environment: childEnvironment(environment),
                input: .none, output: .data(limit: limit), error: .data(limit: limit))
        }
    return ChildResult(status: exitCode(result.terminationStatus), output: result.standardOutput, error: result.standardError)
}

/// Runs `executable` with `arguments` to its end and returns its standard output; `input`,
/// when given, is written to its standard input.
/// - Throws: `TestSetupError` with the end of its standard error unless it exits 0.
@discardableResult
package func runProcess(_ executable: String, _ arguments: [String], input: Data? = nil) async throws -> Data {
    let result = try await runChild(executable, arguments, input: input)
    guard result.status == 0 else {
        throw TestSetupError(
            "\(executable) \(arguments.prefix(2).joined(separator: " ")) exited \(result.status): \(result.errorText.suffix(1500))")
    }
    return result.output
}

/// Runs a Python 3 snippet (`python3 -c code arguments…`) and returns its standard output.
/// - Throws: `TestSetupError` unless it exits 0.
@discardableResult
package func runPython(_ code: String, _ arguments: [String] = []) async throws -> Data {
    try await runProcess("/usr/bin/env", ["python3", "-c", code] + arguments)
}

/// A child that runs alongside a test (a server, `curl -N`, a Python peer): its output is handed
/// to `received` as it arrives, nil once it is closed, and the test stops it when done.
///
/// A child inherits no blocked signals (swift-subprocess resets the mask), so SIGTERM reaches
/// it even though ServiceLifecycle blocks SIGTERM in the test process.
package final class ChildProcess: Sendable {
    private struct State {
        var pid: Int32?
        var status: Int32?
        var started: CheckedContinuation<Int32, any Error>?
        var exitWaiters: [Int: CheckedContinuation<Int32?, Never>] = [:]
        var nextWaiter = 0
    }
    private let state = Mutex(State())

    /// Starts `executable` with `arguments`.
    /// - Parameters:
    ///   - environment: the child's whole environment; nil inherits this process's.
    ///   - includeErrors: standard error joins standard output (`2>&1`); otherwise discarded.
    ///   - received: each chunk of output, then nil once the child closed it.
    /// - Throws: `SubprocessError` when it cannot be started.
    package init(
        _ executable: String, _ arguments: [String], environment: [String: String]? = nil, includeErrors: Bool = false,
        received: @escaping @Sendable (Data?) -> Void
    ) async throws {
        let configuration = Subprocess.Configuration(
            executable: .path(FilePath(executable)), arguments: Arguments(arguments), environment: childEnvironment(environment))
        _ = try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Int32, any Error>) in
            state.withLock { $0.started = continuation }
            Task { await self.supervise(configuration, includeErrors: includeErrors, received: received) }
        }
    }

    /// Runs the child to its end: hands its output to `received`, then records how it exited.
    private func supervise(_ configuration: Subprocess.Configuration, includeErrors: Bool, received: @escaping @Sendable (Data?) -> Void)
        async
    {
        var status: Int32 = 255
        do {
            if includeErrors {
                let result = try await Subprocess.run(configuration, input: .none, output: .sequence, error: .combinedWithOutput) {
                    execution in
                    await self.pump(execution.processIdentifier.value, execution.standardOutput, received)
                }
                status = exitCode(result.terminationStatus)
            } else {
                let result = try await Subprocess.run(configuration, input: .none, output: .sequence, error: .discarded) { execution in
                    await self.pump(execution.processIdentifier.value, execution.standardOutput, received)
                }
                status = exitCode(result.terminationStatus)
            }
        } catch {
            failedToStart(error)
            received(nil)
        }
        didExit(status)
    }

    /// Reports the start, then hands each chunk of `output` to `received`, nil at its end.
    private func pump(_ pid: Int32, _ output: SubprocessOutputSequence, _ received: @Sendable (Data?) -> Void) async {
        didStart(pid)
        do {
            for try await buffer in output {
                received(buffer.withUnsafeBytes { Data($0) })
            }
        } catch {}
        received(nil)
    }

    private func didStart(_ pid: Int32) {
        let continuation = state.withLock { state in
            state.pid = pid
            defer { state.started = nil }
            return state.started
        }
        continuation?.resume(returning: pid)
    }

    private func failedToStart(_ error: any Error) {
        state.withLock { state in
            defer { state.started = nil }
            return state.started
        }?.resume(throwing: error)
    }

    private func didExit(_ status: Int32) {
        let waiters = state.withLock { state in
            state.status = status
            defer { state.exitWaiters = [:] }
            return state.exitWaiters
        }
        for waiter in waiters.values { waiter.resume(returning: status) }
    }

    /// The child's process id.
    package var pid: Int32 { state.withLock { $0.pid ?? 0 } }

    /// True until the child has exited and its output has been read to the end.
    package var isRunning: Bool { state.withLock { $0.status == nil } }

    /// Sends `signal` (SIGTERM, SIGKILL…) unless the child has exited.
    package func signal(_ signal: Int32) {
        state.withLock { state in
            if state.status == nil, let pid = state.pid { _ = kill(pid, signal) }
        }
    }

    /// Waits for the child to exit; returns its exit code (or 128 + the signal number).
    package func waitForExit() async -> Int32 {
        await waitForExit(timeout: nil) ?? 255
    }

    /// Waits up to `timeout` for the child to exit; returns its exit code (or 128 + the signal
    /// number), or nil if it is still running then.
    package func waitForExit(timeout: Duration?) async -> Int32? {
        await withCheckedContinuation { (continuation: CheckedContinuation<Int32?, Never>) in
            let waiter = state.withLock { state -> Int? in
                guard state.status == nil else { return nil }
                state.nextWaiter += 1
                state.exitWaiters[state.nextWaiter] = continuation
                return state.nextWaiter
            }
            guard let waiter else { return continuation.resume(returning: state.withLock { $0.status }) }
            guard let timeout else { return }
            Task {
                // The deadline: a bound on a failure, never a wait a passing test sits through.
                try? await Task.sleep(for: timeout)
                state.withLock { $0.exitWaiters.removeValue(forKey: waiter) }?.resume(returning: nil)
            }
        }
    }

    deinit {
        state.withLock { state in
            if state.status == nil, let pid = state.pid { _ = kill(pid, SIGKILL) }
        }
    }
}
