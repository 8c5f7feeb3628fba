package import Configuration
import Foundation
import Synchronization

/// A setting with a bad value: start-up stops with one line naming it, and exit code 2.
package struct ConfigurationError: Error, CustomStringConvertible {
    /// The source naming the setting: its environment variable (`CAIRN_HTTP_PORT`), its flag
    /// (`--port`) or its key in the configuration file (`http.port in --config file`).
    package var setting: String
    /// What is wrong with it.
    package var problem: String

    /// Creates the error.
    package init(setting: String, problem: String) {
        self.setting = setting
        self.problem = problem
    }

    /// `invalid configuration: CAIRN_HTTP_PORT must be …`.
    package var description: String { "invalid configuration: \(setting) \(problem)" }
}

/// Which source gave each setting, so a bad value is named by where it came from: the flag
/// or the environment variable, or the key of the configuration file
/// (`jobs.lease in --config file`), and a file value of the wrong JSON kind (`"port": true`,
/// which swift-configuration reads as the number 1) is refused instead of converted.
package struct SettingSources: Sendable {
    /// The JSON kind of a value in the configuration file.
    package enum FileValue: Sendable, Equatable {
        /// `true` or `false`.
        case boolean
        /// A whole number.
        case number
        /// A string.
        case string
    }

    /// Keys given as flags, dotted (`http.port`).
    package var flags: Set<String>
    /// Environment variables set (`CAIRN_HTTP_PORT`).
    package var environment: Set<String>
    /// The configuration file's values by dotted key, with their kinds.
    package var file: [String: FileValue]
    /// How the file was named: `--config` or `CAIRN_CONFIG_FILE`.
    package var fileSetting: String

    /// Sources as given; the default knows of none, so every value is named by its variable.
    package init(flags: Set<String> = [], environment: Set<String> = [], file: [String: FileValue] = [:], fileSetting: String = "--config") {
        self.flags = flags
        self.environment = environment
        self.file = file
        self.fileSetting = fileSetting
    }
}

/// One module's view of the configuration (swift-configuration's `ConfigReader`, scoped to
/// the module's keys), with the checks every setting needs: each getter returns the default
/// when the key is absent and throws a ``ConfigurationError`` naming the environment variable
/// (`jobs.lease` → `CAIRN_JOBS_LEASE`) when the value is bad. Each module reads its own
/// settings type with it; the server's configuration only wires the scopes together.
///
/// It records every key looked up (``keysRead``), whether set or not: each reader looks up all
/// of its keys on every load, so after a load they are every key the configuration knows, and a
/// key of the configuration file outside them is one nothing reads (a typo).
package struct SettingsReader: Sendable {
    private let reader: ConfigReader
    private let scope: [String]
    private let log: KeyLog
    private let sources: SettingSources

    /// The keys looked up through a reader and every reader scoped from it.
    private final class KeyLog: Sendable {
        let keys = Mutex<Set<String>>([])
        let booleans = Mutex<Set<String>>([])
    }

    /// A reader over the whole configuration, naming bad values by the source in `sources`
    /// that gave them.
    package init(_ reader: ConfigReader, sources: SettingSources = SettingSources()) {
        self.reader = reader
        self.scope = []
        self.log = KeyLog()
        self.sources = sources
    }

    private init(reader: ConfigReader, scope: [String], log: KeyLog, sources: SettingSources) {
        self.reader = reader
        self.scope = scope
        self.log = log
        self.sources = sources
    }

    /// The settings below `key` (`"jobs"`: `lease` then means `jobs.lease`).
    package func scoped(to key: String) -> SettingsReader {
        SettingsReader(reader: reader, scope: scope + Self.components(key), log: log, sources: sources)
    }

    /// Every key looked up so far through this reader or one scoped from it, dotted from the
    /// top (`jobs.lease`), as the configuration file nests them.
    package var keysRead: Set<String> { log.keys.withLock { $0 } }

    /// The keys of ``keysRead`` read as booleans: a boolean in the file for any other is refused.
    package var keysReadAsBooleans: Set<String> { log.booleans.withLock { $0 } }

    private static func components(_ key: String) -> [String] { key.split(separator: ".").map(String.init) }
    private func configKey(_ key: String) -> ConfigKey {
        let components = scope + Self.components(key)
        _ = log.keys.withLock { $0.insert(components.joined(separator: ".")) }
        return ConfigKey(components)
    }

    /// The environment variable of `key` in this scope.
    package func variable(_ key: String) -> String {
        "CAIRN_" + (scope + Self.components(key)).joined(separator: "_").uppercased()
    }

    /// The kind of `key`'s value in the configuration file when the file gives the value used
    /// (no flag or variable wins over it), else nil.
    package func fileValue(_ key: String) -> SettingSources.FileValue? {
        let dotted = (scope + Self.components(key)).joined(separator: ".")
        guard !sources.flags.contains(dotted), !sources.environment.contains(variable(key)) else { return nil }
        return sources.file[dotted]
    }

    /// The source of `key`'s value: `jobs.lease in --config file` when the file gives it, else
    /// the environment variable (a flag's is renamed to the flag where flags are known).
    package func setting(_ key: String) -> String {
        guard fileValue(key) != nil else { return variable(key) }
        return (scope + Self.components(key)).joined(separator: ".") + " in \(sources.fileSetting) file"
    }

    /// An error naming the source of `key`'s value (see ``setting(_:)``).
    package func invalid(_ key: String, _ problem: String) -> ConfigurationError {
        ConfigurationError(setting: setting(key), problem: problem)
    }

    /// Refuses a boolean from the file for a setting that takes `kind`: swift-configuration
    /// reads `true` as the number 1 (`"port": true` would listen on port 1).
    private func refuseFileBoolean(_ key: String, _ kind: String) throws(ConfigurationError) {
        if fileValue(key) == .boolean { throw invalid(key, "must be \(kind), not a boolean") }
    }

    /// The raw value of `key`, if set (numbers given in a JSON file read as their text).
    package func text(_ key: String) -> String? {
        // swift-configuration gives a file's `true` as `1`; a message says what was written.
        if fileValue(key) == .boolean, let flag = reader.bool(forKey: configKey(key)) { return String(flag) }
        if let value = reader.string(forKey: configKey(key)) { return value }
        return reader.int(forKey: configKey(key)).map(String.init)
    }

    /// An integer in `range`.
    /// - Throws: ``ConfigurationError`` when set to anything else.
    package func integer(_ key: String, in range: ClosedRange<Int>, default value: Int) throws -> Int {
        try refuseFileBoolean(key, "an integer from \(range.lowerBound) to \(range.upperBound)")
        guard let raw = text(key) else { return value }
        guard let parsed = Int(raw.trimmingCharacters(in: .whitespaces)), range.contains(parsed) else {
            throw invalid(key, "must be an integer from \(range.lowerBound) to \(range.upperBound), got '\(raw)'")
        }
        return parsed
    }

    /// A boolean: `true` or `false` (any case), as the README documents; a JSON boolean in the
    /// file. `yes`, `1` and the like are refused rather than read as swift-configuration
    /// would, so every source takes the same two words.
    /// - Throws: ``ConfigurationError`` when set to anything else.
    package func boolean(_ key: String, default value: Bool) throws -> Bool {
        let dotted = (scope + Self.components(key)).joined(separator: ".")
        _ = log.booleans.withLock { $0.insert(dotted) }
        switch fileValue(key) {
        case .boolean: return reader.bool(forKey: configKey(key)) ?? value
        case .number: throw invalid(key, "must be true or false, not a number")
        case .string, nil: break
        }
        if let raw = reader.string(forKey: configKey(key)) {
            switch raw.trimmingCharacters(in: .whitespaces).lowercased() {
            case "true": return true
            case "false": return false
            default: throw invalid(key, "must be true or false, got '\(raw)'")
            }
        }
        // A boolean from a provider that holds one (a test's in-memory values).
        if let flag = reader.bool(forKey: configKey(key)) { return flag }
        return value
    }

    /// The range a duration setting takes unless it says otherwise: 1 s to 10 years.
    package static let durationRange: ClosedRange<Duration> = .seconds(1) ... .seconds(10 * 365 * 86_400)

    /// A duration in whole seconds in `range` (default 1 s to 10 years), read as every duration
    /// setting is (see ``duration(_:in:plain:default:)``).
    /// - Throws: ``ConfigurationError`` when set to anything else, or to a duration that is
    ///   not whole seconds (`1500ms`).
    package func seconds(_ key: String, in range: ClosedRange<Int>? = nil, default value: Int) throws -> Int {
        let bounds = range.map { Duration.seconds($0.lowerBound)...Duration.seconds($0.upperBound) } ?? Self.durationRange
        let duration = try self.duration(key, in: bounds, default: .seconds(value))
        guard duration.components.attoseconds == 0 else {
            throw invalid(
                key,
                "must be a whole number of seconds from \(Self.describe(bounds.lowerBound)) to \(Self.describe(bounds.upperBound)) (like 900, 90s, 15m, 12h or 30d), got '\(text(key) ?? "")'"
            )
        }
        return Int(duration.components.seconds)
    }

    /// A duration in `range` (default 1 s to 10 years): a number of `plain` units (seconds
    /// unless the setting's name says otherwise, as `_MS` does), or a whole number with a unit,
    /// `ms`, `s`, `m`, `h` or `d` (`500ms`, `90s`, `15m`, `12h`, `30d`). Every duration setting
    /// is read by this one reader, so each takes the same forms.
    /// - Throws: ``ConfigurationError`` when set to anything else.
    package func duration(
        _ key: String, in range: ClosedRange<Duration> = SettingsReader.durationRange, plain: Duration = .seconds(1), default value: Duration
    ) throws -> Duration {
        try refuseFileBoolean(
            key, "a duration from \(Self.describe(range.lowerBound)) to \(Self.describe(range.upperBound)) (like 500ms, 90s, 15m, 12h, 30d)")
        guard let raw = text(key) else { return value }
        guard let parsed = Self.parseDuration(raw, plain: plain), range.contains(parsed) else {
            // The range always, so a value refused for its size says what would be taken.
            let unit = plain == .milliseconds(1) ? "milliseconds" : "seconds"
            throw invalid(
                key,
                "must be a duration from \(Self.describe(range.lowerBound)) to \(Self.describe(range.upperBound)) (a number of \(unit), or with a unit: 500ms, 90s, 15m, 12h, 30d), got '\(raw)'"
            )
        }
        return parsed
    }

    /// An absolute http(s) URL without a trailing `/`, if set.
    /// - Throws: ``ConfigurationError`` when set to anything else.
    package func baseURL(_ key: String) throws -> String? {
        try refuseFileBoolean(key, "an http(s) URL")
        guard let url = text(key) else { return nil }
        guard let parsed = URL(string: url), parsed.scheme == "https" || parsed.scheme == "http", parsed.host != nil, !url.hasSuffix("/") else {
            throw invalid(key, "must be an http(s) URL without a trailing /")
        }
        return url
    }

    /// A size in bytes, from `536870912`, `512MiB`, `512M`, `64KiB` or `2GiB` (binary units,
    /// with or without the `iB`), in `range`.
    /// - Throws: ``ConfigurationError`` when set to anything else.
    package func bytes(_ key: String, in range: ClosedRange<Int64>, default value: Int64) throws -> Int64 {
        try refuseFileBoolean(key, "a size from \(range.lowerBound) to \(range.upperBound) bytes, like 536870912 or 512MiB")
        guard let raw = text(key) else { return value }
        guard let parsed = Self.parseBytes(raw), range.contains(parsed) else {
            throw invalid(key, "must be a size from \(range.lowerBound) to \(range.upperBound) bytes, like 536870912 or 512MiB, got '\(raw)'")
        }
        return parsed
    }

    /// Bytes from `536870912`, `512MiB`, `512M`, `64KiB`, `2G`…; nil for anything else.
    package static func parseBytes(_ raw: String) -> Int64? {
        var text = raw.trimmingCharacters(in: .whitespaces).lowercased()
        if text.hasSuffix("ib") { text.removeLast(2) } else if text.hasSuffix("b") { text.removeLast() }
        let units: [Character: Int64] = ["k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40]
        var unit: Int64 = 1
        if let last = text.last, let scale = units[last] {
            unit = scale
            text.removeLast()
        }
        guard let value = Int64(text.trimmingCharacters(in: .whitespaces)), value >= 0, value <= Int64.max / unit else { return nil }
        return value * unit
    }

    /// `duration` in the largest unit that writes it whole (`0s`, `10ms`, `90s`, `1h`, `3650d`),
    /// as the settings take it.
    package static func describe(_ duration: Duration) -> String {
        let milliseconds = duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000
        if milliseconds == 0 { return "0s" }
        for (suffix, scale) in [("d", Int64(86_400_000)), ("h", 3_600_000), ("m", 60_000), ("s", 1000)] where milliseconds % scale == 0 {
            return "\(milliseconds / scale)\(suffix)"
        }
        return "\(milliseconds)ms"
    }

    /// A duration from `900` (that many `plain` units, seconds by default), `500ms`, `90s`,
    /// `15m`, `12h` or `30d`; nil for anything else (a negative number, a fraction, an unknown
    /// unit, or more than `Int64.max` milliseconds).
    package static func parseDuration(_ raw: String, plain: Duration = .seconds(1)) -> Duration? {
        let text = raw.trimmingCharacters(in: .whitespaces).lowercased()
        let units: [(suffix: String, milliseconds: Int64)] = [("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000)]
        // `ms` before `s` and `m`: the longest suffix that matches.
        let unit = units.first { text.hasSuffix($0.suffix) }
        let number = unit.map { text.dropLast($0.suffix.count) } ?? Substring(text)
        let scale = unit?.milliseconds ?? plain.components.seconds * 1000 + plain.components.attoseconds / 1_000_000_000_000_000
        guard !number.isEmpty, number.allSatisfy(\.isASCII), number.allSatisfy(\.isNumber), let value = Int64(number), scale > 0,
            value <= Int64.max / scale
        else { return nil }
        return .milliseconds(value * scale)
    }
}
