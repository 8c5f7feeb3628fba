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
