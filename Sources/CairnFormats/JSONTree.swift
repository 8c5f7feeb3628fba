/// A JSON document parsed strictly per RFC 8259, kept in the shape a request-body decoder needs:
/// numbers keep their integer value exactly (no trip through `Double` for `Int64` fields), and
/// objects keep their members in order with a record of which ones a decoder read.
package indirect enum JSONNode {
    case null
    case bool(Bool)
    /// A number: `integer` is its exact value when it is integral and fits `Int64` (`1.0` and
    /// `1e2` included); `double` is ±infinity beyond the range of `Double` (1e400), which every
    /// field refuses. `plain` is true when it was written as an integer, digits alone (no
    /// fraction or exponent), whatever its size: free-form JSON refuses such integers beyond
    /// what a `Double` holds exactly rather than round them. A number too small for `Double`
    /// that is not zero (`1e-400`) reads as `double` 0 with `integer` nil (a written zero has
    /// `integer` 0): see ``isUnderflow``.
    case number(double: Double, integer: Int64?, plain: Bool)
    case string(String)
    case array([JSONNode])
    case object(JSONObject)

    /// True for a non-zero number too small in magnitude for a `Double` (`1e-400`), which would
    /// read as 0: refused like one too large, rather than stored as another value.
    package var isUnderflow: Bool {
        if case .number(let double, nil, _) = self, double == 0 { return true }
        return false
    }

    /// What the node is, for "must be …" messages: "null", "a string", "an object", ….
    package var kind: String {
        switch self {
        case .null: "null"
        case .bool: "a boolean"
        case .number: "a number"
        case .string: "a string"
        case .array: "an array"
        case .object: "an object"
        }
    }
}

/// The members of a JSON object, in document order, and which of them a decoder has read
/// (a class, so every container opened on the same object shares the record; the members never
/// read after a successful decode are the body's unknown fields).
package final class JSONObject {
    /// Member names, in document order; unique (the parser refuses repeats).
    package let keys: [String]
    /// Member values, parallel to `keys`.
    package let values: [JSONNode]
    /// `read[i]` is true once a decoder asked for `keys[i]`.
    package var read: [Bool]
    /// Name → position, built only for large objects (small ones are scanned: fewer allocations).
    private let index: [String: Int]?

    /// Objects with more members than this get a dictionary index.
    static let indexThreshold = 12

    init(keys: [String], values: [JSONNode], index: [String: Int]?) {
        self.keys = keys
        self.values = values
        self.read = Array(repeating: false, count: keys.count)
        self.index = index
    }

    /// The position of `key`, or nil.
    package func position(of key: String) -> Int? {
        if let index { return index[key] }
        return keys.firstIndex(of: key)
    }
}

/// Why a document is not acceptable JSON, with the byte offset or the repeated key's path.
package enum JSONTreeError: Error, Equatable {
    /// Not RFC 8259 JSON; `offset` is the first byte that does not fit (0-based), or, for a
    /// string that is not UTF-8, the string's first byte after its quote.
    case invalid(offset: Int)
    /// A member name repeated within one object (RFC 8259 §4: names SHOULD be unique; a repeat
    /// lets two readers of the same document see different values). `path` is the dotted path
    /// of the repeated member, e.g. `jobs[0].kind`.
    case duplicateKey(path: String)
}

/// A whole JSON document read into ``JSONNode``s, through ``JSONScanner``.
package enum JSONTree {
    /// Parses one JSON text that fills `bytes` (whitespace around it allowed). A leading UTF-8
    /// byte order mark is skipped (RFC 8259 §8.1 allows ignoring it). Nesting is not bounded
    /// here: the caller bounds it before (the request body's depth scan), so recursion is too.
    /// - Throws: ``JSONTreeError``.
    package static func parse(_ bytes: UnsafeBufferPointer<UInt8>) throws(JSONTreeError) -> JSONNode {
        var builder = Builder(scanner: JSONScanner(bytes, loneSurrogates: .refuse, stringFaults: .inOrder))
        if bytes.count >= 3, bytes[0] == 0xEF, bytes[1] == 0xBB, bytes[2] == 0xBF { builder.scanner.position = 3 }
        builder.scanner.skipWhitespace()
        let node = try builder.value()
        builder.scanner.skipWhitespace()
        guard builder.scanner.atEnd else { throw .invalid(offset: builder.scanner.position) }
        return node
    }

    private struct Builder {
        var scanner: JSONScanner

        /// True when the number token ending before `end` has no fraction or exponent (an
        /// integer too large for `Int64`, which the scanner reads through `Double`).
        func isPlainInteger(endingAt end: Int) -> Bool {
            var index = end - 1
            while index >= 0, scanner.bytes[index] >= UInt8(ascii: "0"), scanner.bytes[index] <= UInt8(ascii: "9") { index -= 1 }
            // Digits preceded by a sign or anything but `.`, `e`, `E`, `+` (an exponent's sign).
            guard index >= 0 else { return true }
            let before = scanner.bytes[index]
            return before != UInt8(ascii: ".") && before != UInt8(ascii: "e") && before != UInt8(ascii: "E") && before != UInt8(ascii: "+")
                && !(before == UInt8(ascii: "-") && index > 0 && (scanner.bytes[index - 1] | 0x20) == UInt8(ascii: "e"))
        }

        /// True when the number token in `start..<end` has a digit 1–9 before its exponent.
        func hasNonZeroDigit(from start: Int, to end: Int) -> Bool {
            var index = start
            while index < end {
                let byte = scanner.bytes[index]
                if byte == UInt8(ascii: "e") || byte == UInt8(ascii: "E") { return false }
                if byte >= UInt8(ascii: "1"), byte <= UInt8(ascii: "9") { return true }
                index += 1
            }
            return false
        }

        /// Runs one step of the scanner, its syntax error as ``JSONTreeError/invalid(offset:)``.
        @inline(__always)
        mutating func scan<T>(_ step: (inout JSONScanner) throws(JSONScanError) -> T) throws(JSONTreeError) -> T {
            do {
                return try step(&scanner)
            } catch {
                // A string that is not UTF-8 is reported where it starts, as bodies always were.
                throw .invalid(offset: error.reason == .invalidUTF8 ? error.tokenStart : error.offset)
            }
        }

        mutating func value() throws(JSONTreeError) -> JSONNode {
            guard !scanner.atEnd else { throw .invalid(offset: scanner.position) }
            switch scanner.current {
            case UInt8(ascii: "{"): return try object()
            case UInt8(ascii: "["): return try array()
            default:
                let start = scanner.position
                switch try scan({ scanner throws(JSONScanError) in try scanner.scalar() }) {
                case .null: return .null
                case .bool(let flag): return .bool(flag)
                case .string(let text): return .string(text)
                case .number(.integer(let value)): return .number(double: Double(value), integer: value, plain: true)
                case .number(.real(let double)):
                    if double == 0, hasNonZeroDigit(from: start, to: scanner.position) {
                        return .number(double: 0, integer: nil, plain: false)  // underflow (see isUnderflow)
                    }
                    // `1.0` and `1e2` are integral: decoders of integer fields accept them exactly.
                    let integer: Int64? =
                        double.rounded() == double && double >= -9.223_372_036_854_775_808e18 && double < 9.223_372_036_854_775_808e18
                        ? Int64(double) : nil
                    return .number(double: double, integer: integer, plain: isPlainInteger(endingAt: scanner.position))
                }
            }
        }

        mutating func object() throws(JSONTreeError) -> JSONNode {
            var keys: [String] = []
            var values: [JSONNode] = []
            var index: [String: Int]?
            if scanner.enter(closing: UInt8(ascii: "}")) { return .object(JSONObject(keys: keys, values: values, index: nil)) }
            repeat {
                let key = try scan { scanner throws(JSONScanError) in try scanner.memberName() }
                // Small objects: a linear scan (no dictionary); large ones switch to an index.
                if index != nil {
                    if index?.updateValue(keys.count, forKey: key) != nil { throw .duplicateKey(path: key) }
                } else {
                    if keys.contains(key) { throw .duplicateKey(path: key) }
                    if keys.count == JSONObject.indexThreshold {
                        index = Dictionary(uniqueKeysWithValues: zip(keys + [key], 0...))
                    }
                }
                try scan { scanner throws(JSONScanError) in try scanner.colon() }
                do throws(JSONTreeError) {
                    values.append(try value())
                } catch .duplicateKey(let path) {
                    throw .duplicateKey(path: path.hasPrefix("[") ? key + path : key + "." + path)
                }
                keys.append(key)
            } while try scan({ scanner throws(JSONScanError) in try scanner.next(closing: UInt8(ascii: "}")) })
            return .object(JSONObject(keys: keys, values: values, index: index))
        }

        mutating func array() throws(JSONTreeError) -> JSONNode {
            var elements: [JSONNode] = []
            if scanner.enter(closing: UInt8(ascii: "]")) { return .array(elements) }
            repeat {
                do throws(JSONTreeError) {
                    elements.append(try value())
                } catch .duplicateKey(let path) {
                    throw .duplicateKey(path: "[\(elements.count)]" + (path.hasPrefix("[") ? path : "." + path))
                }
            } while try scan({ scanner throws(JSONScanError) in try scanner.next(closing: UInt8(ascii: "]")) })
            return .array(elements)
        }
    }
}
