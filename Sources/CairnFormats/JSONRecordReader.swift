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
    /// The byte offset where the last record returned starts.
    package private(set) var recordStart: Int64 = 0

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
        let (fields, repeated) = try buffer.withUnsafeBufferPointer { bytes in
            var parser = Parser(
                options: options, row: recordRow, base: start, bytes: UnsafeBufferPointer(rebasing: bytes[position..<(position + length)]))
            return (try parser.record(), parser.repeated)
        }
        position += length
        repeatedName = repeated
        recordStart = start
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
/// One record's fields, read from its bytes with ``JSONScanner``: nested objects flattened
/// (or kept as JSON text), arrays kept as JSON text.
private struct Parser {
    let options: JSONOptions
    let row: Int
    let base: Int64
    var scanner: JSONScanner
    /// UTF-8 bytes of the record's field names so far.
    var nameBytes = 0
    /// The first name the record repeated, if any.
    var repeated: String?

    init(options: JSONOptions, row: Int, base: Int64, bytes: UnsafeBufferPointer<UInt8>) {
        self.options = options
        self.row = row
        self.base = base
        // A lone surrogate becomes U+FFFD: a record of a file is kept rather than refused for it.
        self.scanner = JSONScanner(bytes, loneSurrogates: .replace, stringFaults: .wholeStringFirst)
    }

    func fail(_ message: String, _ at: Int) -> IngestError {
        IngestError(.malformed, message, row: row, byteOffset: base + Int64(at))
    }

    /// The record's fields in document order (a repeated name keeps its last value).
    /// - Throws: `IngestError` naming the row and byte.
    mutating func record() throws -> [(name: String, value: FieldValue)] {
        var fields: [(name: String, value: FieldValue)] = []
        do {
            scanner.skipWhitespace()
            guard !scanner.atEnd, scanner.current == UInt8(ascii: "{") else { throw fail("the record is not a JSON object", scanner.position) }
            var index: [String: Int] = [:]
            try object(prefix: "", into: &fields, index: &index)
            scanner.skipWhitespace()
            guard scanner.atEnd else { throw fail("unexpected text after the record", scanner.position) }
        } catch let error as JSONScanError {
            throw ingestError(error)
        }
        return fields
    }

    /// The scanner's error as a row error of this record, at the byte it names.
    func ingestError(_ error: JSONScanError) -> IngestError {
        if error.reason == .invalidUTF8 {
            return IngestError(.invalidUTF8, "the text is not valid UTF-8", row: row, byteOffset: base + Int64(error.offset))
        }
        // A record cut short is said so; the other reasons as the scanner words them.
        let (message, offset) = error.reason == .unexpectedEnd ? ("the record is cut short", error.offset) : error.explanation
        return fail(message, offset)
    }

    /// Reads the object at the scanner into flattened fields.
    mutating func object(prefix: String, into fields: inout [(name: String, value: FieldValue)], index: inout [String: Int]) throws {
        let open = scanner.position
        if scanner.enter(closing: UInt8(ascii: "}")) {
            if !prefix.isEmpty { try set(String(prefix.dropLast()), .json("{}"), &fields, &index, at: open) }
            return
        }
        repeat {
            let key = try scanner.memberName()
            try scanner.colon()
            guard !scanner.atEnd else { throw JSONScanError(.unexpectedEnd, at: scanner.position) }
            let start = scanner.position
            switch scanner.current {
            case UInt8(ascii: "{") where options.flatten:
                try object(prefix: prefix + key + ".", into: &fields, index: &index)
            case UInt8(ascii: "{"), UInt8(ascii: "["):
                try scanner.skipValue()
                try set(prefix + key, .json(compact(start..<scanner.position)), &fields, &index, at: start)
            default:
                let value: FieldValue =
                    switch try scanner.scalar() {
                    case .null: .null
                    case .bool(let flag): .bool(flag)
                    case .number(.integer(let number)): .integer(number)
                    case .number(.real(let number)): .real(number)
                    case .string(let text): .text(text)
                    }
                try set(prefix + key, value, &fields, &index, at: start)
            }
        } while try scanner.next(closing: UInt8(ascii: "}"))
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

    /// The text of the value in `range` without insignificant whitespace (escapes kept as written).
    func compact(_ range: Range<Int>) -> String {
        let b = scanner.bytes
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
