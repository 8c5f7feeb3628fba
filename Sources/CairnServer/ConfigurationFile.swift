import CairnFormats
package import CairnStorage
import Foundation
import SystemPackage

/// The JSON configuration file (`--config` / `CAIRN_CONFIG_FILE`), read strictly as RFC 8259
/// JSON before swift-configuration reads it.
///
/// swift-configuration parses the file with Foundation's `JSONSerialization`, which takes a
/// trailing comma (`{"jobs": {"lease": 30,}}`) and a member named twice (the value it keeps
/// is whichever its dictionary gives last), and says only that a top-level array is not
/// an object. Here the file is read by Cairn's own strict scanner (the one request bodies go
/// through), so each of those stops start-up in one line with the line and column.
package struct ConfigurationFile: Sendable {
    /// A value that is not an object, told apart as far as the checks need.
    package enum Kind: Sendable, Equatable {
        /// A string: what settings take.
        case string
        /// `true` or `false`: what boolean settings take.
        case boolean
        /// A whole number: what number settings take.
        case integer
        /// A number with a fraction or an exponent (`4.5`, `1e3`).
        case decimal
        /// An array.
        case list
        /// `null`.
        case null

        /// What this value is when no setting can take it (settings are strings, whole
        /// numbers and booleans), or nil.
        var noSettingTakes: String? {
            switch self {
            case .string, .boolean, .integer: nil
            case .decimal: "a decimal number"
            case .list: "a list"
            case .null: "null"
            }
        }
    }

    /// Where a member starts in the file: 1-based line, and 1-based column in characters.
    package struct Position: Sendable, Equatable, CustomStringConvertible {
        /// The line, from 1.
        package var line: Int
        /// The column, from 1, counted in characters (UTF-8 sequences), not bytes.
        package var column: Int

        /// `line 3, column 5`.
        package var description: String { "line \(line), column \(column)" }
    }

    /// Why the text is not a configuration file, with where.
    package struct Problem: Error, Equatable, CustomStringConvertible {
        /// What is wrong, where: `is not valid JSON at line 2, column 14: expected , or }`.
        package var description: String
        /// Where, when a place can be named.
        package var position: Position?
    }

    /// Every member that is not an object, by its dotted path as swift-configuration's JSON
    /// provider names it (`{"jobs": {"lease": 30}}` and `{"jobs.lease": 30}` are both
    /// `jobs.lease`), with its kind and where its name starts.
    package let leaves: [String: (kind: Kind, position: Position)]

    /// Nesting deeper than this is refused (a configuration file needs three levels); the
    /// reader recurses, so it is bounded before it can exhaust the stack.
    static let maximumDepth = 64

    /// The largest file read: a configuration is a few KiB, and `--config /dev/zero` must not
    /// read forever.
    static let maximumSize = 1 << 20

    /// Reads and checks the file at `path`.
    /// - Throws: ``ConfigurationError`` naming `setting` (`--config` or `CAIRN_CONFIG_FILE`),
    ///   the file and the problem: unreadable (with the system's reason), larger than 1 MiB,
    ///   not JSON, a repeated member, nesting deeper than 64, or a top level that is not an
    ///   object; each with the line and column where it can say.
    package static func read(_ path: String, setting: String) throws(ConfigurationError) -> ConfigurationFile {
        let bytes: [UInt8]
        do {
            bytes = try contents(of: path)
        } catch {
            throw ConfigurationError(setting: setting, problem: "names a file that cannot be read: '\(path)': \(error.message)")
        }
        do {
            return try parse(bytes)
        } catch {
            throw ConfigurationError(setting: setting, problem: "'\(path)' \(error)")
        }
    }

    /// A file that cannot be read, in the operating system's words.
    struct ReadFailure: Error {
        var message: String
    }

    /// The bytes of the file at `path`, with the system's reason when it cannot be read
    /// (Foundation's `FileManager` gives none).
    static func contents(of path: String) throws(ReadFailure) -> [UInt8] {
        do {
            let descriptor = try FileDescriptor.open(FilePath(path), .readOnly, options: [.closeOnExec])
            return try descriptor.closeAfter {
                var bytes: [UInt8] = []
                var chunk = [UInt8](repeating: 0, count: 64 * 1024)
                while true {
                    let count = try chunk.withUnsafeMutableBytes { try descriptor.read(into: $0) }
                    if count == 0 { return bytes }
                    bytes += chunk[0..<count]
                    guard bytes.count <= maximumSize else { throw ReadFailure(message: "larger than 1 MiB, which no configuration is") }
                }
            }
        } catch let error as ReadFailure {
            throw error
        } catch let error as Errno {
            throw ReadFailure(message: String(cString: strerror(error.rawValue)))
        } catch {
            throw ReadFailure(message: "\(error)")
        }
    }

    /// Parses a configuration file's text.
    /// - Throws: ``Problem``.
    package static func parse(_ bytes: [UInt8]) throws(Problem) -> ConfigurationFile {
        let result = bytes.withUnsafeBufferPointer { buffer in
            Result { () throws(Problem) in
                var parser = Parser(scanner: JSONScanner(buffer, loneSurrogates: .refuse, stringFaults: .inOrder))
                try parser.document()
                return parser.leaves
            }
        }
        return ConfigurationFile(leaves: try result.get())
    }

    /// Line and column of byte `offset` in `bytes`.
    static func position(of offset: Int, in bytes: UnsafeBufferPointer<UInt8>) -> Position {
        var line = 1
        var column = 1
        // A byte order mark is no character an editor shows.
        let start = bytes.count >= 3 && bytes[0] == 0xEF && bytes[1] == 0xBB && bytes[2] == 0xBF ? 3 : 0
        for byte in bytes[min(start, offset)..<min(offset, bytes.count)] {
            if byte == UInt8(ascii: "\n") {
                line += 1
                column = 1
            } else if byte & 0xC0 != 0x80 {
                // A continuation byte belongs to the character before it.
                column += 1
            }
        }
        return Position(line: line, column: column)
    }

    /// A recursive walk over ``JSONScanner``'s tokens, recording leaves and refusing repeats.
    private struct Parser {
        var scanner: JSONScanner
        var leaves: [String: (kind: Kind, position: Position)] = [:]
        /// Where each leaf's member name starts (byte offset), for "first at" in a repeat.
        var starts: [String: Int] = [:]

        /// A problem at byte `offset`: `message` with ` at line L, column C` put where it says `{at}`.
        func problem(_ message: String, at offset: Int?) -> Problem {
            let position = offset.map { ConfigurationFile.position(of: $0, in: scanner.bytes) }
            return Problem(description: message.replacingOccurrences(of: "{at}", with: position.map { " at \($0)" } ?? ""), position: position)
        }

        /// Runs one step of the scanner, its syntax error as a ``Problem``.
        mutating func scan<T>(_ step: (inout JSONScanner) throws(JSONScanError) -> T) throws(Problem) -> T {
            do {
                return try step(&scanner)
            } catch {
                throw syntaxProblem(error)
            }
        }

        /// The scanner's error in words, at the byte it names.
        func syntaxProblem(_ error: JSONScanError) -> Problem {
            let bytes = scanner.bytes
            if error.offset < bytes.count, bytes[error.offset] == UInt8(ascii: "}") || bytes[error.offset] == UInt8(ascii: "]") {
                // `{"a": 1,}` and `[1,]`: Foundation takes them, RFC 8259 does not.
                var before = error.offset - 1
                while before >= 0, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[before]) { before -= 1 }
                if before >= 0, bytes[before] == UInt8(ascii: ",") {
                    return problem("is not valid JSON{at}: a trailing comma (JSON has none)", at: before)
                }
            }
            if error.offset < bytes.count, bytes[error.offset] == UInt8(ascii: "/"), error.reason != .invalidUTF8 {
                return problem("is not valid JSON{at}: a comment (JSON has none)", at: error.offset)
            }
            let (message, offset) = error.explanation
            return problem("is not valid JSON{at}: " + message, at: offset)
        }

        mutating func document() throws(Problem) {
            let bytes = scanner.bytes
            // RFC 8259 §8.1 lets a reader ignore a byte order mark.
            if bytes.count >= 3, bytes[0] == 0xEF, bytes[1] == 0xBB, bytes[2] == 0xBF { scanner.position = 3 }
            scanner.skipWhitespace()
            guard !scanner.atEnd else {
                throw problem("is empty: the configuration file must hold a JSON object, like {\"http\": {\"port\": 8080}}", at: nil)
            }
            let start = scanner.position
            guard scanner.current == UInt8(ascii: "{") else {
                let kind =
                    switch scanner.current {
                    case UInt8(ascii: "["): "an array"
                    case UInt8(ascii: "\""): "a string"
                    case UInt8(ascii: "t"), UInt8(ascii: "f"): "a boolean"
                    case UInt8(ascii: "n"): "null"
                    case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): "a number"
                    default: "no JSON value"
                    }
                if kind == "no JSON value" { try scan { scanner throws(JSONScanError) in _ = try scanner.scalar() } }
                throw problem(
                    "holds \(kind){at}: the configuration file must hold a JSON object, like {\"http\": {\"port\": 8080}}", at: start)
            }
            try object(under: "", depth: 1)
            scanner.skipWhitespace()
            guard scanner.atEnd else {
                let what = scanner.current == UInt8(ascii: "/") ? "a comment (JSON has none)" : "more text after the object"
                throw problem("is not valid JSON{at}: " + what, at: scanner.position)
            }
        }

        /// The object at the scanner, its members' paths under `prefix`.
        mutating func object(under prefix: String, depth: Int) throws(Problem) {
            guard depth <= ConfigurationFile.maximumDepth else {
                throw problem("nests deeper than \(ConfigurationFile.maximumDepth) levels{at}", at: scanner.position)
            }
            if scanner.enter(closing: UInt8(ascii: "}")) { return }
            var names: [String: Int] = [:]
            repeat {
                let start = scanner.position
                let name = try scan { scanner throws(JSONScanError) in try scanner.memberName() }
                let path = prefix.isEmpty ? name : prefix + "." + name
                // RFC 8259 §4: names SHOULD be unique; with a repeat, readers disagree on which
                // value counts (Foundation's keeps one of them, unsaid).
                if let first = names.updateValue(start, forKey: name) { throw repeated(path, at: start, first: first) }
                try scan { scanner throws(JSONScanError) in try scanner.colon() }
                guard !scanner.atEnd else { throw syntaxProblem(JSONScanError(.unexpectedEnd, at: scanner.position)) }
                switch scanner.current {
                case UInt8(ascii: "{"):
                    try object(under: path, depth: depth + 1)
                case UInt8(ascii: "["):
                    try skipArray(depth: depth + 1)
                    try leaf(path, .list, at: start)
                default:
                    let kind: Kind
                    switch try scan({ scanner throws(JSONScanError) in try scanner.scalar() }) {
                    case .null: kind = .null
                    case .number(.real): kind = .decimal
                    case .bool: kind = .boolean
                    case .string: kind = .string
                    case .number(.integer): kind = .integer
                    }
                    try leaf(path, kind, at: start)
                }
            } while try scan({ scanner throws(JSONScanError) in try scanner.next(closing: UInt8(ascii: "}")) })
        }

        /// Records a leaf, refusing a path given twice: `{"jobs": {"lease": 30}, "jobs.lease": 45}`
        /// names one setting twice, and swift-configuration keeps either value.
        mutating func leaf(_ path: String, _ kind: Kind, at start: Int) throws(Problem) {
            if let first = starts.updateValue(start, forKey: path) { throw repeated(path, at: start, first: first) }
            leaves[path] = (kind, ConfigurationFile.position(of: start, in: scanner.bytes))
        }

        func repeated(_ path: String, at start: Int, first: Int) -> Problem {
            let earlier = ConfigurationFile.position(of: first, in: scanner.bytes)
            return problem("repeats the key \(path){at} (first at \(earlier)): give each setting once", at: start)
        }

        /// Steps over the array at the scanner, checking its syntax (no setting takes a list, so
        /// its contents are not recorded).
        mutating func skipArray(depth: Int) throws(Problem) {
            guard depth <= ConfigurationFile.maximumDepth else {
                throw problem("nests deeper than \(ConfigurationFile.maximumDepth) levels{at}", at: scanner.position)
            }
            if scanner.enter(closing: UInt8(ascii: "]")) { return }
            repeat {
                guard !scanner.atEnd else { throw syntaxProblem(JSONScanError(.unexpectedEnd, at: scanner.position)) }
                switch scanner.current {
                case UInt8(ascii: "["): try skipArray(depth: depth + 1)
                case UInt8(ascii: "{"):
                    var inner = Parser(scanner: scanner)
                    try inner.object(under: "", depth: depth + 1)
                    scanner.position = inner.scanner.position
                default: _ = try scan({ scanner throws(JSONScanError) in try scanner.scalar() })
                }
            } while try scan({ scanner throws(JSONScanError) in try scanner.next(closing: UInt8(ascii: "]")) })
        }
    }
}
