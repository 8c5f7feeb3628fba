import Foundation
package import Logging
import Synchronization

/// One JSON object per line on standard output (`CAIRN_LOG_FORMAT=json`), for log shippers:
/// `{"ts", "level", "label", "msg", ...metadata}`. Secrets are never put in metadata.
package struct JSONLogHandler: LogHandler {
    /// Metadata attached to every line of this logger.
    package var metadata: Logger.Metadata = [:]
    /// Minimum level.
    package var logLevel: Logger.Level = .info
    let label: String
    private static let output = Mutex(())

    /// Creates a handler for a logger label.
    package init(label: String) {
        self.label = label
    }

    /// Metadata accessor.
    package subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    /// Writes one line.
    package func log(event: LogEvent) {
        var object: [String: Any] = [
            "ts": ISO8601DateFormatter.string(from: Date(), timeZone: .gmt, formatOptions: [.withInternetDateTime, .withFractionalSeconds]),
            "level": event.level.rawValue, "label": label, "msg": event.message.description,
        ]
        for (key, value) in metadata.merging(event.metadata ?? [:], uniquingKeysWith: { $1 }) {
            object[key] = Self.plain(value)
        }
        guard var line = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) else { return }
        line.append(UInt8(ascii: "\n"))
        Self.output.withLock { _ in FileHandle.standardOutput.write(line) }
    }

    static func plain(_ value: Logger.MetadataValue) -> Any {
        switch value {
        case .string(let text): text
        case .stringConvertible(let value): value.description
        case .array(let values): values.map(plain)
        case .dictionary(let values): values.mapValues(plain)
        }
    }
}

/// swift-log's `StreamLogHandler` lines (`CAIRN_LOG_FORMAT=text`, the default), with the
/// metadata formatted when a line is written instead of each time a key is set.
///
/// `StreamLogHandler` re-sorts and re-formats all of its metadata on every
/// `logger[metadataKey:] = …`; the middlewares set three keys on every authenticated request
/// (`request_id`, `user_id`, `tenant_id`) while, at the default level, almost no request writes a
/// line. Output is exactly `StreamLogHandler`'s, which formats it here.
package struct TextLogHandler: LogHandler {
    /// Metadata attached to every line of this logger.
    package var metadata: Logger.Metadata = [:]
    /// Minimum level.
    package var logLevel: Logger.Level = .info
    /// Writes the lines; its own metadata stays empty until a line is written.
    let output: StreamLogHandler

    /// Creates a handler writing to standard output.
    package init(label: String) {
        output = StreamLogHandler.standardOutput(label: label)
    }

    /// Creates a handler writing to `stream` (tests capture lines this way).
    package init(label: String, stream: any TextOutputStream & Sendable) {
        output = StreamLogHandler(label: label, stream: stream)
    }

    /// Metadata accessor; formats nothing.
    package subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    /// Writes one line, as `StreamLogHandler` does.
    package func log(event: LogEvent) {
        var line = output
        line.logLevel = logLevel
        line.metadata = metadata
        line.log(event: event)
    }
}
