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
    /// Metadata added to every line when it is written: the current span's `trace_id` and
    /// `span_id` (``TracingBootstrap/logMetadataProvider``).
    package var metadataProvider: Logger.MetadataProvider?
    let label: String
    private static let output = Mutex(())

    /// Creates a handler for a logger label, with the process's metadata provider if any.
    package init(label: String, metadataProvider: Logger.MetadataProvider? = nil) {
        self.label = label
        self.metadataProvider = metadataProvider
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
        var all = metadata
        if let provided = metadataProvider?.get(), !provided.isEmpty { all.merge(provided, uniquingKeysWith: { $1 }) }
        for (key, value) in all.merging(event.metadata ?? [:], uniquingKeysWith: { $1 }) {
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
    var output: StreamLogHandler

    /// Metadata added to every line when it is written (the current span's `trace_id` and
    /// `span_id`); `StreamLogHandler` merges it.
    package var metadataProvider: Logger.MetadataProvider? {
        get { output.metadataProvider }
        set { output.metadataProvider = newValue }
    }

    /// Creates a handler writing to standard output, with the process's metadata provider if any.
    package init(label: String, metadataProvider: Logger.MetadataProvider? = nil) {
        output = StreamLogHandler.standardOutput(label: label, metadataProvider: metadataProvider)
    }

    /// Creates a handler writing to `stream` (tests capture lines this way).
    package init(label: String, stream: any TextOutputStream & Sendable, metadataProvider: Logger.MetadataProvider? = nil) {
        output = StreamLogHandler(label: label, stream: stream, metadataProvider: metadataProvider)
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
