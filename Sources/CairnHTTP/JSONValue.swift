package import CairnFormats
import Foundation
import NIOCore

/// Any JSON value (RFC 8259), for free-form payloads such as job arguments, progress and
/// checkpoints. Stored as JSON text; decoded only where a handler needs it.
package enum JSONValue: Sendable, Equatable, Codable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    /// Decodes any JSON value.
    package init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Double.self) {
            self = .number(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([JSONValue].self) {
            self = .array(value)
        } else {
            self = .object(try container.decode([String: JSONValue].self))
        }
    }

    /// Encodes the value.
    package func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .null: try container.encodeNil()
        case .bool(let value): try container.encode(value)
        case .number(let value): try container.encode(value)
        case .string(let value): try container.encode(value)
        case .array(let value): try container.encode(value)
        case .object(let value): try container.encode(value)
        }
    }

    /// Parses JSON text; nil when it is not JSON.
    package init?(text: String) {
        guard let value = try? JSONDecoder().decode(JSONValue.self, from: Data(text.utf8)) else { return nil }
        self = value
    }

    /// Parses JSON text as request bodies are read: nil when it is not JSON (RFC 8259), nests
    /// deeper than ``maximumJSONDepth``, or repeats a member name within one object (RFC 8259
    /// §4: readers disagree on which value counts). Numbers are doubles, as in ``init(text:)``.
    package init?(strictText text: String) {
        guard let node = try? JSONNode(strictText: text) else { return nil }
        self = BodyDecodingState.jsonValue(node)
    }

    /// Compact JSON text (RFC 8259) with members sorted by name (stable, so equal values give
    /// equal text). It is the text Foundation's `JSONEncoder` wrote for these values with
    /// `[.sortedKeys, .withoutEscapingSlashes]` (what earlier versions stored), written
    /// directly: names in `String` order, numbers as Swift prints a `Double` without a trailing
    /// `.0`, strings through ``JSONString`` (the one escaper; it writes backspace and form feed
    /// as `\u0008` and `\u000c`, where `JSONEncoder` wrote `\b` and `\f`). A number that is
    /// not finite, which JSON cannot hold, is written `null`.
    package var text: String {
        var out: [UInt8] = []
        out.reserveCapacity(64)
        write(to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// Appends ``text`` to `out` as UTF-8.
    package func write(to out: inout [UInt8]) {
        switch self {
        case .null: out.append(contentsOf: "null".utf8)
        case .bool(let flag): out.append(contentsOf: (flag ? "true" : "false").utf8)
        case .number(let number): Self.write(number, to: &out)
        case .string(let string): JSONString.append(string, to: &out)
        case .array(let items):
            out.append(UInt8(ascii: "["))
            for (index, item) in items.enumerated() {
                if index > 0 { out.append(UInt8(ascii: ",")) }
                item.write(to: &out)
            }
            out.append(UInt8(ascii: "]"))
        case .object(let members):
            out.append(UInt8(ascii: "{"))
            for (index, member) in members.sorted(by: { $0.key < $1.key }).enumerated() {
                if index > 0 { out.append(UInt8(ascii: ",")) }
                JSONString.append(member.key, to: &out)
                out.append(UInt8(ascii: ":"))
                member.value.write(to: &out)
            }
            out.append(UInt8(ascii: "}"))
        }
    }

    /// A number as `JSONEncoder` writes a `Double`: its shortest round-tripping text, without
    /// a trailing `.0` (`100`, `1.5`, `1e+16`, `-0`).
    private static func write(_ number: Double, to out: inout [UInt8]) {
        guard number.isFinite else { return out.append(contentsOf: "null".utf8) }
        // Whole numbers up to 2^53 print as digits and `.0` (larger ones with an exponent): the
        // integer's digits are the same.
        if number.rounded(.towardZero) == number, number.magnitude <= 0x1p53, !(number == 0 && number.sign == .minus) {
            out.append(contentsOf: String(Int64(number)).utf8)
            return
        }
        var text = number.description
        if text.hasSuffix(".0") { text.removeLast(2) }
        out.append(contentsOf: text.utf8)
    }

    /// The member of an object, or nil.
    package subscript(key: String) -> JSONValue? {
        if case .object(let members) = self { return members[key] }
        return nil
    }

    /// The number as an integer, when it is one.
    package var int: Int? {
        if case .number(let value) = self, value.rounded() == value, abs(value) < 1e15 { return Int(value) }
        return nil
    }

    /// The string, when it is one.
    package var string: String? {
        if case .string(let value) = self { return value }
        return nil
    }
}

extension JSONNode {
    /// Parses JSON text as request bodies are read (RFC 8259), keeping what ``JSONValue`` drops:
    /// whether a number is an integer, and which member name a refused text repeats.
    /// - Throws: ``JSONTreeError``: `duplicateKey` naming a member repeated within one object
    ///   (RFC 8259 §4); `invalid` for text that is not JSON or nests deeper than
    ///   ``maximumJSONDepth``.
    package init(strictText text: String) throws(JSONTreeError) {
        let buffer = ByteBuffer(string: text)
        guard JSONDepth.scan(buffer.readableBytesView, limit: maximumJSONDepth) != .tooDeep else { throw .invalid(offset: 0) }
        let parsed = buffer.withUnsafeReadableBytes { raw in
            raw.withMemoryRebound(to: UInt8.self) { bytes in Result { () throws(JSONTreeError) in try JSONTree.parse(bytes) } }
        }
        self = try parsed.get()
    }
}

extension JSONWriter {
    /// Writes JSON text that is already valid (for example a stored payload) as one value.
    package mutating func raw(json text: String) {
        rawValue(text)
    }
}
