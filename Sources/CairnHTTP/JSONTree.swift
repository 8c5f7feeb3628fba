import NIOCore

/// A request body parsed strictly per RFC 8259, kept in the shape the body decoder needs:
/// numbers keep their integer value exactly (no trip through `Double` for `Int64` fields), and
/// objects keep their members in order with a record of which ones a decoder read.
indirect enum JSONNode {
    case null
    case bool(Bool)
    /// A number: `integer` is its exact value when it has no fraction and fits `Int64`;
    /// `double` is ±infinity beyond the range of `Double` (1e400), which every field refuses.
    case number(double: Double, integer: Int64?)
    case string(String)
    case array([JSONNode])
    case object(JSONObject)

    /// What the node is, for "must be …" messages: "null", "a string", "an object", ….
    var kind: String {
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
final class JSONObject {
    /// Member names, in document order; unique (the parser refuses repeats).
    let keys: [String]
    /// Member values, parallel to `keys`.
    let values: [JSONNode]
    /// `read[i]` is true once a decoder asked for `keys[i]`.
    var read: [Bool]
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
    func position(of key: String) -> Int? {
        if let index { return index[key] }
        return keys.firstIndex(of: key)
    }
}

/// Why a body is not acceptable JSON, with the byte offset or the repeated key's path.
enum JSONSyntaxError: Error, Equatable {
    /// Not RFC 8259 JSON; `offset` is the first byte that does not fit (0-based).
    case invalid(offset: Int)
    /// A member name repeated within one object (RFC 8259 §4: names SHOULD be unique; a repeat
    /// lets two readers of the same body see different values). `path` is the dotted path of
    /// the repeated member, e.g. `jobs[0].kind`.
    case duplicateKey(path: String)
}

/// A strict, single-pass RFC 8259 parser over a byte buffer into ``JSONNode``.
///
/// Depth is bounded by the caller (``JSONDepth`` runs first), so recursion here is bounded too.
/// A leading UTF-8 byte order mark is skipped (RFC 8259 §8.1 allows ignoring it).
struct JSONTreeParser {
    private let bytes: UnsafeRawBufferPointer
    private var position = 0

    /// Parses one JSON text that fills `buffer` (whitespace around it allowed).
    /// - Throws: ``JSONSyntaxError``.
    static func parse(_ buffer: ByteBuffer) throws(JSONSyntaxError) -> JSONNode {
        let result: Result<JSONNode, JSONSyntaxError> = buffer.withUnsafeReadableBytes { bytes in
            var parser = JSONTreeParser(bytes: bytes)
            do throws(JSONSyntaxError) {
                if bytes.count >= 3, bytes[0] == 0xEF, bytes[1] == 0xBB, bytes[2] == 0xBF { parser.position = 3 }
                parser.skipWhitespace()
                let node = try parser.value()
                parser.skipWhitespace()
                guard parser.position == bytes.count else { throw .invalid(offset: parser.position) }
                return .success(node)
            } catch {
                return .failure(error)
            }
        }
        return try result.get()
    }

    private init(bytes: UnsafeRawBufferPointer) {
        self.bytes = bytes
    }

    private var atEnd: Bool { position >= bytes.count }

    private mutating func skipWhitespace() {
        while position < bytes.count {
            switch bytes[position] {
            case 0x20, 0x09, 0x0A, 0x0D: position += 1
            default: return
            }
        }
    }

    private mutating func value() throws(JSONSyntaxError) -> JSONNode {
        guard !atEnd else { throw .invalid(offset: position) }
        switch bytes[position] {
        case UInt8(ascii: "{"): return try object()
        case UInt8(ascii: "["): return try array()
        case UInt8(ascii: "\""): return .string(try string())
        case UInt8(ascii: "t"):
            try literal("true")
            return .bool(true)
        case UInt8(ascii: "f"):
            try literal("false")
            return .bool(false)
        case UInt8(ascii: "n"):
            try literal("null")
            return .null
        default: return try number()
        }
    }

    private mutating func literal(_ word: StaticString) throws(JSONSyntaxError) {
        let count = word.utf8CodeUnitCount
        guard bytes.count - position >= count else { throw .invalid(offset: position) }
        for offset in 0..<count where bytes[position + offset] != word.utf8Start[offset] {
            throw .invalid(offset: position + offset)
        }
        position += count
    }

    private mutating func object() throws(JSONSyntaxError) -> JSONNode {
        position += 1
        var keys: [String] = []
        var values: [JSONNode] = []
        var index: [String: Int]?
        skipWhitespace()
        if !atEnd, bytes[position] == UInt8(ascii: "}") {
            position += 1
            return .object(JSONObject(keys: keys, values: values, index: nil))
        }
        while true {
            guard !atEnd, bytes[position] == UInt8(ascii: "\"") else { throw .invalid(offset: position) }
            let key = try string()
            // Small objects: a linear scan (no dictionary); large ones switch to an index.
            if index != nil {
                if index?.updateValue(keys.count, forKey: key) != nil { throw .duplicateKey(path: key) }
            } else {
                if keys.contains(key) { throw .duplicateKey(path: key) }
                if keys.count == JSONObject.indexThreshold {
                    index = Dictionary(uniqueKeysWithValues: zip(keys + [key], 0...))
                }
            }
            skipWhitespace()
            guard !atEnd, bytes[position] == UInt8(ascii: ":") else { throw .invalid(offset: position) }
            position += 1
            skipWhitespace()
            do throws(JSONSyntaxError) {
                values.append(try value())
            } catch .duplicateKey(let path) {
                throw .duplicateKey(path: path.hasPrefix("[") ? key + path : key + "." + path)
            }
            keys.append(key)
            skipWhitespace()
            guard !atEnd else { throw .invalid(offset: position) }
            if bytes[position] == UInt8(ascii: ",") {
                position += 1
                skipWhitespace()
            } else if bytes[position] == UInt8(ascii: "}") {
                position += 1
                return .object(JSONObject(keys: keys, values: values, index: index))
            } else {
                throw .invalid(offset: position)
            }
        }
    }

    private mutating func array() throws(JSONSyntaxError) -> JSONNode {
        position += 1
        var elements: [JSONNode] = []
        skipWhitespace()
        if !atEnd, bytes[position] == UInt8(ascii: "]") {
            position += 1
            return .array(elements)
        }
        while true {
            do throws(JSONSyntaxError) {
                elements.append(try value())
            } catch .duplicateKey(let path) {
                throw .duplicateKey(path: "[\(elements.count)]" + (path.hasPrefix("[") ? path : "." + path))
            }
            skipWhitespace()
            guard !atEnd else { throw .invalid(offset: position) }
            if bytes[position] == UInt8(ascii: ",") {
                position += 1
                skipWhitespace()
            } else if bytes[position] == UInt8(ascii: "]") {
                position += 1
                return .array(elements)
            } else {
                throw .invalid(offset: position)
            }
        }
    }

    /// A string starting at the opening quote; refuses raw control characters, bad escapes,
    /// unpaired surrogates and invalid UTF-8.
    private mutating func string() throws(JSONSyntaxError) -> String {
        position += 1
        let start = position
        // Fast path: no escapes, so the bytes are the string.
        while position < bytes.count {
            let byte = bytes[position]
            if byte == UInt8(ascii: "\"") {
                let slice = UnsafeRawBufferPointer(rebasing: bytes[start..<position])
                guard let text = String(validating: slice, as: UTF8.self) else { throw .invalid(offset: start) }
                position += 1
                return text
            }
            if byte == UInt8(ascii: "\\") { break }
            if byte < 0x20 { throw .invalid(offset: position) }
            position += 1
        }
        var utf8 = Array(bytes[start..<position])
        while position < bytes.count {
            let byte = bytes[position]
            switch byte {
            case UInt8(ascii: "\""):
                position += 1
                guard let text = String(validating: utf8, as: UTF8.self) else { throw .invalid(offset: start) }
                return text
            case UInt8(ascii: "\\"):
                position += 1
                guard !atEnd else { throw .invalid(offset: position) }
                let escape = bytes[position]
                position += 1
                switch escape {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): utf8.append(escape)
                case UInt8(ascii: "b"): utf8.append(0x08)
                case UInt8(ascii: "f"): utf8.append(0x0C)
                case UInt8(ascii: "n"): utf8.append(0x0A)
                case UInt8(ascii: "r"): utf8.append(0x0D)
                case UInt8(ascii: "t"): utf8.append(0x09)
                case UInt8(ascii: "u"):
                    var scalar = try hex4()
                    if (0xD800...0xDBFF).contains(scalar) {
                        // A high surrogate must be followed by an escaped low one (RFC 8259 §7).
                        guard bytes.count - position >= 6, bytes[position] == UInt8(ascii: "\\"), bytes[position + 1] == UInt8(ascii: "u")
                        else { throw .invalid(offset: position) }
                        position += 2
                        let low = try hex4()
                        guard (0xDC00...0xDFFF).contains(low) else { throw .invalid(offset: position - 4) }
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                    } else if (0xDC00...0xDFFF).contains(scalar) {
                        throw .invalid(offset: position - 4)
                    }
                    guard let unicode = Unicode.Scalar(scalar) else { throw .invalid(offset: position - 4) }
                    utf8.append(contentsOf: UTF8.encode(unicode)!)
                default: throw .invalid(offset: position - 1)
                }
            default:
                if byte < 0x20 { throw .invalid(offset: position) }
                utf8.append(byte)
                position += 1
            }
        }
        throw .invalid(offset: position)
    }

    private mutating func hex4() throws(JSONSyntaxError) -> UInt32 {
        guard bytes.count - position >= 4 else { throw .invalid(offset: position) }
        var value: UInt32 = 0
        for _ in 0..<4 {
            let byte = bytes[position]
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
            default: throw .invalid(offset: position)
            }
            value = value << 4 | UInt32(digit)
            position += 1
        }
        return value
    }

    /// `-? int frac? exp?` (RFC 8259 §6). Integers without fraction or exponent that fit
    /// `Int64` are read exactly; anything else goes through `Double`.
    private mutating func number() throws(JSONSyntaxError) -> JSONNode {
        let start = position
        var negative = false
        if bytes[position] == UInt8(ascii: "-") {
            negative = true
            position += 1
        }
        guard !atEnd, isDigit(bytes[position]) else { throw .invalid(offset: position) }
        var exact: Int64? = 0
        if bytes[position] == UInt8(ascii: "0") {
            position += 1
        } else {
            while !atEnd, isDigit(bytes[position]) {
                let digit = Int64(bytes[position] - UInt8(ascii: "0"))
                if let value = exact {
                    // Accumulate negatively so Int64.min fits too.
                    let (times, overflow1) = value.multipliedReportingOverflow(by: 10)
                    let (sum, overflow2) = times.subtractingReportingOverflow(digit)
                    exact = overflow1 || overflow2 ? nil : sum
                }
                position += 1
            }
        }
        var isInteger = true
        if !atEnd, bytes[position] == UInt8(ascii: ".") {
            isInteger = false
            position += 1
            guard !atEnd, isDigit(bytes[position]) else { throw .invalid(offset: position) }
            while !atEnd, isDigit(bytes[position]) { position += 1 }
        }
        if !atEnd, bytes[position] == UInt8(ascii: "e") || bytes[position] == UInt8(ascii: "E") {
            isInteger = false
            position += 1
            if !atEnd, bytes[position] == UInt8(ascii: "+") || bytes[position] == UInt8(ascii: "-") { position += 1 }
            guard !atEnd, isDigit(bytes[position]) else { throw .invalid(offset: position) }
            while !atEnd, isDigit(bytes[position]) { position += 1 }
        }
        if isInteger, let value = exact {
            if negative { return .number(double: Double(value), integer: value) }
            if value != .min { return .number(double: Double(-value), integer: -value) }
        }
        let text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<position]), as: UTF8.self)
        // 1e400 is JSON grammar beyond any double: it is kept as ±infinity so the decoder can
        // refuse it per field (valid JSON of the wrong range), never as a syntax error.
        guard let double = Double(text) else { throw .invalid(offset: start) }
        // `1.0` and `1e2` are integral: decoders of integer fields accept them exactly.
        let integer: Int64? =
            double.rounded() == double && double >= -9.223_372_036_854_775_808e18 && double < 9.223_372_036_854_775_808e18
            ? Int64(double) : nil
        return .number(double: double, integer: integer)
    }

    private func isDigit(_ byte: UInt8) -> Bool {
        byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")
    }
}
