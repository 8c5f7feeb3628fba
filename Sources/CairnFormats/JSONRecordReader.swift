#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A field value read from a JSON or XML record.
package enum FieldValue: Sendable, Equatable {
    /// JSON `null` (or a missing member).
    case null
    /// `true` or `false`.
    case bool(Bool)
    /// A number written without fraction or exponent that fits 64 bits.
    case integer(Int64)
    /// Any other number.
    case real(Double)
    /// A string.
    case text(String)
    /// A nested array or object kept as compact JSON text.
    case json(String)
}

/// How JSON input is laid out and how nesting is handled (the pipeline's `input.options`).
package struct JSONOptions: Sendable, Equatable {
    /// The layout of the input.
    package enum Layout: String, Sendable {
        /// One top-level array of objects (RFC 8259).
        case array
        /// One object per line (NDJSON / JSON Lines).
        case lines
    }
    /// `array` or `lines`.
    package var layout: Layout = .array
    /// Nested objects become dotted columns (`address.city`) when true; JSON text when false.
    /// Arrays are always kept as JSON text.
    package var flatten = true
    /// The largest record accepted, in bytes (default 16 MiB); larger is `tooLarge`. For NDJSON
    /// this bounds the whole line (the record and the blanks after it).
    package var maxRecordBytes = 16 << 20
    /// The most fields one record may have, nested objects' dotted fields included (default
    /// 10,000); more is `tooLarge`. Bounds a record's field table, which 16 MiB of tiny members
    /// would otherwise grow to millions of entries.
    package var maxFields = 10_000
    /// The deepest nesting accepted (default 64).
    package var maxDepth = 64

    /// Creates the defaults.
    package init() {}
}

/// A streaming JSON record reader: each element of a top-level array (or each line of NDJSON)
/// is one record, read and parsed alone, so a file of any size never sits in memory whole.
/// Records must be objects; members come out in document order (a repeated key keeps its last
/// value). Errors name the record (from 1) and the byte offset.
package final class JSONRecordReader: BufferedInput {
    /// Records returned so far.
    package private(set) var row = 0
    /// Bytes of input consumed by the records returned so far.
    package var bytesConsumed: Int64 { consumedBase + Int64(position) }

    var source: any ByteSource
    private let options: JSONOptions
    var buffer = [UInt8](repeating: 0, count: 1 << 20)
    var position = 0
    var end = 0
    var consumedBase: Int64 = 0
    var atEOF = false
    private var started = false
    private var finished = false

    /// The first field name the last record returned repeated (its last value is the one
    /// returned), or nil: for readers that refuse repeats rather than pick one.
    package private(set) var repeatedName: String?

    /// Creates a reader.
    package init(source: any ByteSource, options: JSONOptions = JSONOptions()) throws {
        self.source = source
        self.options = options
        try start()
    }

    /// The next record's fields in document order, or nil at the end.
    /// - Throws: `IngestError` naming the record and byte offset.
    package func next() throws -> [(name: String, value: FieldValue)]? {
        guard !finished else { return nil }
        if options.layout == .array && !started {
            guard try skipWhitespace(), buffer[position] == UInt8(ascii: "[") else {
                throw IngestError(.malformed, "the document is not a JSON array", byteOffset: bytesConsumed)
            }
            position += 1
            started = true
            guard try skipWhitespace() else { throw IngestError(.malformed, "the array is never closed", byteOffset: bytesConsumed) }
            if buffer[position] == UInt8(ascii: "]") { return try finish() }
        } else if options.layout == .array {
            guard try skipWhitespace() else { throw IngestError(.malformed, "the array is never closed", byteOffset: bytesConsumed) }
            switch buffer[position] {
            case UInt8(ascii: ","): position += 1
            case UInt8(ascii: "]"): return try finish()
            default: throw IngestError(.malformed, "expected , or ] between records", row: row, byteOffset: bytesConsumed)
            }
        }
        guard try skipWhitespace() else {
            if options.layout == .lines {
                finished = true
                return nil
            }
            throw IngestError(.malformed, "the array is never closed", byteOffset: bytesConsumed)
        }
        let recordRow = row + 1
        let start = bytesConsumed
        let length = try elementLength(row: recordRow)
        var parser = Parser(options: options, row: recordRow, base: start)
        let fields = try buffer.withUnsafeBufferPointer { bytes in
            try parser.record(UnsafeBufferPointer(rebasing: bytes[position..<(position + length)]))
        }
        position += length
        repeatedName = parser.repeated
        if options.layout == .lines { try checkLineEnd(row: recordRow, recordLength: length) }
        row += 1
        return fields
    }

    /// NDJSON only: drops the rest of the line the last failed record started on and counts
    /// it as a record, so reading can go on past a bad line (`onRowError: skip`). The skipped
    /// bytes are never held whole, however long the line.
    /// - Throws: `IngestError` when the source cannot be read.
    package func skipLine() throws {
        precondition(options.layout == .lines, "only NDJSON lines can be skipped")
        row += 1
        while true {
            while position < end {
                let byte = buffer[position]
                position += 1
                if byte == 0x0A { return }
            }
            if atEOF {
                finished = true
                return
            }
            try fill()
        }
    }

    /// NDJSON: only spaces, tabs and a CR may follow a record on its line, and the line (of
    /// which `recordLength` bytes came before `position`) may not pass `maxRecordBytes`. The
    /// blanks are consumed as they are read, so they never pile up in the buffer.
    private func checkLineEnd(row: Int, recordLength: Int) throws {
        var lineBytes = recordLength
        while true {
            while position < end {
                switch buffer[position] {
                case 0x20, 0x09, 0x0D:
                    position += 1
                    lineBytes += 1
                    if lineBytes > options.maxRecordBytes {
                        throw IngestError(.tooLarge, "a line is longer than \(options.maxRecordBytes) bytes", row: row, byteOffset: bytesConsumed)
                    }
                case 0x0A: return
                default:
                    throw IngestError(.malformed, "text after the record on its line", row: row, byteOffset: bytesConsumed)
                }
            }
            if atEOF { return }
            try fill()
        }
    }

    private func finish() throws -> [(name: String, value: FieldValue)]? {
        position += 1
        if try skipWhitespace() {
            throw IngestError(.malformed, "text after the closing ]", byteOffset: bytesConsumed)
        }
        finished = true
        return nil
    }

    /// Skips whitespace (and, for NDJSON, line ends); false at the end of input.
    private func skipWhitespace() throws -> Bool {
        while true {
            while position < end {
                switch buffer[position] {
                case 0x20, 0x09, 0x0A, 0x0D: position += 1
                default: return true
                }
            }
            if atEOF { return false }
            try fill()
        }
    }

    /// The index of the first LF at or after `start` in the buffer, or `end` when none is there yet.
    private func lineEnd(from start: Int) -> Int {
        buffer.withUnsafeBytes { raw in
            guard start < end, let found = memchr(raw.baseAddress! + start, 0x0A, end - start) else { return end }
            return raw.baseAddress!.distance(to: UnsafeRawPointer(found))
        }
    }

    /// The length of the JSON value at `position`, refilling until it is all in the buffer.
    private func elementLength(row: Int) throws -> Int {
        while true {
            var depth = 0
            var inString = false
            var escaped = false
            var i = position
            var complete: Int?
            guard buffer[position] == 0x7B else {
                throw IngestError(.malformed, "the record is not a JSON object", row: row, byteOffset: bytesConsumed)
            }
            // NDJSON: the record must end on its line, so the scan stops at the line's end.
            let limit = options.layout == .lines ? lineEnd(from: position) : end
            scan: while i < limit {
                let byte = buffer[i]
                if inString {
                    if escaped {
                        escaped = false
                    } else if byte == 0x5C {
                        escaped = true
                    } else if byte == 0x22 {
                        inString = false
                        if depth == 0 {
                            complete = i + 1
                            break scan
                        }
                    }
                } else {
                    switch byte {
                    case 0x22: inString = true
                    case 0x7B, 0x5B:
                        depth += 1
                        if depth > options.maxDepth {
                            throw IngestError(.malformed, "nesting deeper than \(options.maxDepth)", row: row, byteOffset: consumedBase + Int64(i))
                        }
                    case 0x7D, 0x5D:
                        depth -= 1
                        if depth == 0 {
                            complete = i + 1
                            break scan
                        }
                        if depth < 0 { throw IngestError(.malformed, "unbalanced brackets", row: row, byteOffset: consumedBase + Int64(i)) }
                    default: break
                    }
                }
                i += 1
            }
            if let complete { return complete - position }
            if atEOF || limit < end {
                throw IngestError(.malformed, "the record is cut short", row: row, byteOffset: consumedBase + Int64(position))
            }
            if end - position >= options.maxRecordBytes {
                let what = options.layout == .lines ? "a line is longer than" : "a record is larger than"
                throw IngestError(.tooLarge, "\(what) \(options.maxRecordBytes) bytes", row: row, byteOffset: bytesConsumed)
            }
            try fill()
        }
    }

    /// Reads more input, growing the buffer without a limit (`elementLength` enforces
    /// `maxRecordBytes`).
    private func fill() throws {
        _ = try refill(growingUpTo: .max)
    }
}

/// A recursive-descent JSON parser (RFC 8259) over one record's bytes.
private struct Parser {
    let options: JSONOptions
    let row: Int
    let base: Int64
    var i = 0
    /// UTF-8 bytes of the record's field names so far.
    var nameBytes = 0
    /// The first name the record repeated, if any.
    var repeated: String?

    init(options: JSONOptions, row: Int, base: Int64) {
        self.options = options
        self.row = row
        self.base = base
    }

    func fail(_ message: String, _ at: Int) -> IngestError {
        IngestError(.malformed, message, row: row, byteOffset: base + Int64(at))
    }

    mutating func record(_ b: UnsafeBufferPointer<UInt8>) throws -> [(name: String, value: FieldValue)] {
        skipSpace(b)
        guard i < b.count, b[i] == 0x7B else { throw fail("the record is not a JSON object", i) }
        var fields: [(name: String, value: FieldValue)] = []
        var index: [String: Int] = [:]
        try object(b, prefix: "", into: &fields, index: &index)
        skipSpace(b)
        guard i == b.count else { throw fail("unexpected text after the record", i) }
        return fields
    }

    mutating func skipSpace(_ b: UnsafeBufferPointer<UInt8>) {
        while i < b.count, b[i] == 0x20 || b[i] == 0x09 || b[i] == 0x0A || b[i] == 0x0D { i += 1 }
    }

    /// Reads an object at `i` into flattened fields.
    mutating func object(
        _ b: UnsafeBufferPointer<UInt8>, prefix: String, into fields: inout [(name: String, value: FieldValue)], index: inout [String: Int]
    ) throws {
        let open = i
        if try opensEmpty(b, closing: 0x7D) {
            if !prefix.isEmpty { try set(String(prefix.dropLast()), .json("{}"), &fields, &index, at: open) }
            return
        }
        repeat {
            let key = try memberName(b)
            skipSpace(b)
            guard i < b.count else { throw fail("the record is cut short", i) }
            if b[i] == 0x7B && options.flatten {
                try object(b, prefix: prefix + key + ".", into: &fields, index: &index)
            } else if b[i] == 0x7B || b[i] == 0x5B {
                let start = i
                try skipValue(b)
                try set(prefix + key, .json(try compact(b, start..<i)), &fields, &index, at: start)
            } else {
                let start = i
                try set(prefix + key, try scalar(b), &fields, &index, at: start)
            }
        } while try continues(b, closing: 0x7D)
    }

    /// Steps past the `{` or `[` at `i`; true (and past the closing bracket too) when the
    /// object or array is empty.
    @inline(__always)
    mutating func opensEmpty(_ b: UnsafeBufferPointer<UInt8>, closing: UInt8) throws -> Bool {
        i += 1
        skipSpace(b)
        guard i < b.count, b[i] == closing else { return false }
        i += 1
        return true
    }

    /// Reads `"name":` at `i` (after optional whitespace) and returns the name.
    @inline(__always)
    mutating func memberName(_ b: UnsafeBufferPointer<UInt8>) throws -> String {
        skipSpace(b)
        guard i < b.count, b[i] == 0x22 else { throw fail("expected a member name", i) }
        let name = try string(b)
        skipSpace(b)
        guard i < b.count, b[i] == 0x3A else { throw fail("expected :", i) }
        i += 1
        return name
    }

    /// After a member or element: true past a `,` (another follows), false past the closing
    /// bracket.
    @inline(__always)
    mutating func continues(_ b: UnsafeBufferPointer<UInt8>, closing: UInt8) throws -> Bool {
        skipSpace(b)
        guard i < b.count else { throw fail("the record is cut short", i) }
        if b[i] == 0x2C {
            i += 1
            return true
        }
        guard b[i] == closing else { throw fail(closing == 0x7D ? "expected , or }" : "expected , or ]", i) }
        i += 1
        return false
    }

    /// Sets field `name` (a repeat keeps the last value); `at` is where its value starts.
    /// - Throws: `tooLarge` when a new field would pass `maxFields`, or the names together
    ///   `maxRecordBytes`.
    mutating func set(
        _ name: String, _ value: FieldValue, _ fields: inout [(name: String, value: FieldValue)], _ index: inout [String: Int], at: Int
    ) throws {
        if let existing = index[name] {
            if repeated == nil { repeated = name }
            fields[existing].value = value
        } else {
            guard fields.count < options.maxFields else {
                throw IngestError(.tooLarge, "a record has more than \(options.maxFields) fields", row: row, byteOffset: base + Int64(at))
            }
            // Flattened names repeat their parents' names, so deep nesting under a long key
            // could make the names far larger than the record: they share its limit.
            nameBytes += name.utf8.count
            guard nameBytes <= options.maxRecordBytes else {
                throw IngestError(
                    .tooLarge, "a record's field names take more than \(options.maxRecordBytes) bytes", row: row, byteOffset: base + Int64(at))
            }
            index[name] = fields.count
            fields.append((name, value))
        }
    }

    mutating func scalar(_ b: UnsafeBufferPointer<UInt8>) throws -> FieldValue {
        switch b[i] {
        case 0x22: return .text(try string(b))
        case UInt8(ascii: "t"):
            try literal(b, "true")
            return .bool(true)
        case UInt8(ascii: "f"):
            try literal(b, "false")
            return .bool(false)
        case UInt8(ascii: "n"):
            try literal(b, "null")
            return .null
        default: return try number(b)
        }
    }

    mutating func literal(_ b: UnsafeBufferPointer<UInt8>, _ word: StaticString) throws {
        let count = word.utf8CodeUnitCount
        guard i + count <= b.count else { throw fail("invalid literal", i) }
        for k in 0..<count where b[i + k] != word.utf8Start[k] { throw fail("invalid literal", i) }
        i += count
    }

    mutating func number(_ b: UnsafeBufferPointer<UInt8>) throws -> FieldValue {
        let start = i
        if i < b.count && b[i] == UInt8(ascii: "-") { i += 1 }
        guard i < b.count, (0x30...0x39).contains(b[i]) else { throw fail("invalid value", start) }
        if b[i] == 0x30 {
            i += 1
        } else {
            while i < b.count, (0x30...0x39).contains(b[i]) { i += 1 }
        }
        var integral = true
        if i < b.count && b[i] == UInt8(ascii: ".") {
            integral = false
            i += 1
            guard i < b.count, (0x30...0x39).contains(b[i]) else { throw fail("invalid number", start) }
            while i < b.count, (0x30...0x39).contains(b[i]) { i += 1 }
        }
        if i < b.count && (b[i] == UInt8(ascii: "e") || b[i] == UInt8(ascii: "E")) {
            integral = false
            i += 1
            if i < b.count && (b[i] == UInt8(ascii: "+") || b[i] == UInt8(ascii: "-")) { i += 1 }
            guard i < b.count, (0x30...0x39).contains(b[i]) else { throw fail("invalid number", start) }
            while i < b.count, (0x30...0x39).contains(b[i]) { i += 1 }
        }
        let text = String(decoding: UnsafeBufferPointer(rebasing: b[start..<i]), as: UTF8.self)
        if integral, let value = Int64(text) { return .integer(value) }
        guard let value = Double(text) else { throw fail("invalid number", start) }
        return .real(value)
    }

    /// Reads a string at `i` (on its opening quote), decoding escapes and checking UTF-8.
    mutating func string(_ b: UnsafeBufferPointer<UInt8>) throws -> String {
        let open = i
        i += 1
        let start = i
        var plain = true
        while i < b.count && b[i] != 0x22 {
            if b[i] == 0x5C {
                plain = false
                i += 2
                continue
            }
            if b[i] < 0x20 { throw fail("a control character inside a string", i) }
            i += 1
        }
        guard i < b.count else { throw fail("a string is never closed", open) }
        let raw = UnsafeBufferPointer(rebasing: b[start..<i])
        i += 1
        if let bad = UTF8Validation.firstInvalidByte(raw) {
            throw IngestError(.invalidUTF8, "the text is not valid UTF-8", row: row, byteOffset: base + Int64(start + bad))
        }
        if plain { return String(decoding: raw, as: UTF8.self) }
        var out: [UInt8] = []
        out.reserveCapacity(raw.count)
        var k = 0
        while k < raw.count {
            let byte = raw[k]
            guard byte == 0x5C else {
                out.append(byte)
                k += 1
                continue
            }
            guard k + 1 < raw.count else { throw fail("invalid escape", start + k) }
            let escape = raw[k + 1]
            k += 2
            switch escape {
            case 0x22, 0x5C, 0x2F: out.append(escape)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                var scalar = try hex4(raw, k, start)
                k += 4
                if (0xD800...0xDBFF).contains(scalar), k + 6 <= raw.count, raw[k] == 0x5C, raw[k + 1] == UInt8(ascii: "u") {
                    let low = try hex4(raw, k + 2, start)
                    if (0xDC00...0xDFFF).contains(low) {
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                        k += 6
                    }
                }
                // A lone surrogate cannot be UTF-8: it becomes U+FFFD, as most decoders do.
                out.append(contentsOf: Array(String(Character(Unicode.Scalar(scalar) ?? "\u{FFFD}")).utf8))
            default: throw fail("invalid escape", start + k - 2)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    func hex4(_ raw: UnsafeBufferPointer<UInt8>, _ at: Int, _ start: Int) throws -> UInt32 {
        guard at + 4 <= raw.count else { throw fail("invalid \\u escape", start + at) }
        var value: UInt32 = 0
        for k in at..<(at + 4) {
            let c = raw[k]
            let digit: UInt32
            switch c {
            case 0x30...0x39: digit = UInt32(c - 0x30)
            case 0x41...0x46: digit = UInt32(c - 0x41 + 10)
            case 0x61...0x66: digit = UInt32(c - 0x61 + 10)
            default: throw fail("invalid \\u escape", start + at)
            }
            value = value << 4 | digit
        }
        return value
    }

    /// Skips a whole value (validating its structure).
    mutating func skipValue(_ b: UnsafeBufferPointer<UInt8>) throws {
        skipSpace(b)
        guard i < b.count else { throw fail("the record is cut short", i) }
        switch b[i] {
        case 0x7B:
            if try opensEmpty(b, closing: 0x7D) { return }
            repeat {
                _ = try memberName(b)
                try skipValue(b)
            } while try continues(b, closing: 0x7D)
        case 0x5B:
            if try opensEmpty(b, closing: 0x5D) { return }
            repeat { try skipValue(b) } while try continues(b, closing: 0x5D)
        default:
            _ = try scalar(b)
        }
    }

    /// The value's text without insignificant whitespace.
    func compact(_ b: UnsafeBufferPointer<UInt8>, _ range: Range<Int>) throws -> String {
        var out: [UInt8] = []
        out.reserveCapacity(range.count)
        var inString = false
        var escaped = false
        for k in range {
            let c = b[k]
            if inString {
                out.append(c)
                if escaped { escaped = false } else if c == 0x5C { escaped = true } else if c == 0x22 { inString = false }
            } else if c == 0x22 {
                inString = true
                out.append(c)
            } else if c != 0x20 && c != 0x09 && c != 0x0A && c != 0x0D {
                out.append(c)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}
