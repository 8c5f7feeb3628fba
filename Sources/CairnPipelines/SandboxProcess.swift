import CairnSandbox
import Foundation
import Subprocess
import SystemPackage

#if canImport(Glibc)
    import Glibc
#endif

/// Starts a `cairn pipeline-sandbox` process for one phase of a run and follows it to its end.
///
/// The process is started through swift-subprocess (never Foundation's `Process`, which
/// crashes on Linux: swift-corelibs-foundation#5472), which closes every descriptor but its
/// standard three in the child. It gets an empty environment (no database URL, key or secret
/// of the server reaches tenant code), the run's work folder as its working directory, and a
/// process group of its own. Cancelling the awaiting task kills it (SIGKILL), as does the
/// wall-clock deadline.
enum SandboxProcess {
    /// How a sandbox process ended.
    struct Ending: Sendable {
        /// The phase's last report: `loaded`, `queried`, `planned` or `failed`; nil when it died first.
        var last: SandboxReport?
        /// Its termination status.
        var status: TerminationStatus
        /// Whether the deadline passed and it was killed.
        var timedOut: Bool
        /// The end of what it wrote to standard error (a runtime's crash message).
        var errors: String
    }

    /// Runs `order` in a sandbox process in `folder`.
    /// - Parameter report: called with every intermediate report (`started`, once the limits
    ///   are in place, then `committed`, `restarted`, `rows`), in order.
    /// - Throws: `SubprocessError` when the process cannot be started; `CancellationError`.
    static func run(
        executable: String, folder: String, order: SandboxOrder, deadline: Duration?, report: @escaping @Sendable (SandboxReport) -> Void
    ) async throws -> Ending {
        var line = try JSONEncoder().encode(order)
        line.append(0x0A)
        let orderLine = [UInt8](line)
        var options = PlatformOptions()
        options.processGroupID = 0
        return try await ChildMetrics.tracking {
            try await Self.spawn(executable: executable, folder: folder, options: options, orderLine: orderLine, deadline: deadline, report: report)
        }
    }

    /// Starts the process and follows its output to its end; see ``run(executable:folder:order:deadline:report:)``.
    private static func spawn(
        executable: String, folder: String, options: PlatformOptions, orderLine: [UInt8], deadline: Duration?,
        report: @escaping @Sendable (SandboxReport) -> Void
    ) async throws -> Ending {
        let result = try await Subprocess.run(
            .path(FilePath(executable)), arguments: [PipelineSandbox.commandName], environment: .custom([:]),
            workingDirectory: FilePath(folder), platformOptions: options, input: .inputWriter, output: .sequence, error: .sequence
        ) { execution -> (SandboxReport?, Bool, String) in
            // Standard input stays open until the process ends: its end of file tells the
            // process that this server has gone.
            _ = try await execution.standardInputWriter.write(orderLine)
            return try await withThrowingTaskGroup(of: Part.self) { group in
                group.addTask { .output(try await Self.follow(execution.standardOutput, report: report)) }
                group.addTask { .errors(try await Self.tail(execution.standardError)) }
                if let deadline {
                    group.addTask {
                        try await Task.sleep(for: deadline)
                        return .deadline
                    }
                }
                var last: SandboxReport?
                var errors = ""
                var streams = 2
                var timedOut = false
                while streams > 0, let part = try await group.next() {
                    switch part {
                    case .output(let report):
                        last = report
                        streams -= 1
                    case .errors(let text):
                        errors = text
                        streams -= 1
                    case .deadline:
                        timedOut = true
                        try? execution.send(signal: .kill)
                    }
                }
                group.cancelAll()
                return (last, timedOut, errors)
            }
        }
        let (last, timedOut, errors) = result.closureResult
        return Ending(last: last, status: result.terminationStatus, timedOut: timedOut, errors: errors)
    }

    private enum Part: Sendable {
        case output(SandboxReport?)
        case errors(String)
        case deadline
    }

    /// Reads report lines until end of file; hands intermediate ones to `report` and returns
    /// the final one (`loaded`, `queried`, `planned`, `failed`), if any.
    private static func follow(_ output: SubprocessOutputSequence, report: @Sendable (SandboxReport) -> Void) async throws -> SandboxReport? {
        let decoder = JSONDecoder()
        var pending: [UInt8] = []
        var last: SandboxReport?
        for try await buffer in output {
            buffer.withUnsafeBytes { pending.append(contentsOf: $0) }
            var start = 0
            while let end = pending[start...].firstIndex(of: 0x0A) {
                if let line = try? decoder.decode(SandboxReport.self, from: Data(pending[start..<end])) {
                    switch line.event {
                    case .loaded, .queried, .planned, .failed: last = line
                    default: report(line)
                    }
                }
                start = end + 1
            }
            pending.removeFirst(start)
            // A report is one line of at most a few hundred KiB; anything longer is not one.
            if pending.count > 16 << 20 { pending.removeAll() }
        }
        return last
    }

    /// The last 4 KiB of a stream.
    private static func tail(_ stream: SubprocessOutputSequence) async throws -> String {
        var kept: [UInt8] = []
        for try await buffer in stream {
            buffer.withUnsafeBytes { kept.append(contentsOf: $0) }
            if kept.count > 4096 { kept.removeFirst(kept.count - 4096) }
        }
        return String(decoding: kept, as: UTF8.self)
    }
}
