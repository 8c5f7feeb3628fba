package import Logging

/// Keeps every line logged through the loggers it makes (level, message and metadata as
/// text), so a test can read what was logged and await a line the code logs when something
/// happens.
package final class CapturedLog: Sendable {
    private let lines = Observed<[String]>([])

    /// An empty log.
    package init() {}

    /// A logger writing here, at every level from `level` up.
    package func logger(label: String = "cairn-capture", level: Logger.Level = .trace) -> Logger {
        var logger = Logger(label: label, factory: { [lines] _ in Handler(lines: lines) })
        logger.logLevel = level
        return logger
    }

    /// Every line so far, one per entry.
    package var text: String { lines.value.joined(separator: "\n") }

    /// Returns the lines once one of them contains `fragment`, re-checked as lines arrive.
    /// - Throws: ``WaitTimeout`` after `timeout`.
    @discardableResult
    package func wait(forLineContaining fragment: String, timeout: Duration = .seconds(30)) async throws -> [String] {
        try await lines.wait("a log line containing '\(fragment)'", timeout: timeout) { $0.contains { $0.contains(fragment) } }
    }

    private struct Handler: LogHandler {
        let lines: Observed<[String]>
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            let all = metadata.merging(event.metadata ?? [:], uniquingKeysWith: { $1 })
            let line =
                "\(event.level) \(event.message) \(all.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "))"
            lines.update { $0.append(line) }
        }
    }
}
