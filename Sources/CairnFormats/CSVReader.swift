/// How to read a CSV file (the pipeline's `input.options`).
package struct CSVOptions: Sendable, Equatable {
    /// The field delimiter; nil detects it among `,` `;` tab `|` from the first lines.
    package var delimiter: UInt8?
    /// The quote character (default `"`).
    package var quote: UInt8 = 0x22
    /// Whether the first record names the columns (default true); otherwise the columns are
    /// `column1`, `column2`, … and the first record is data.
    package var header = true
    /// Unquoted field values read as null (default `""`, `NA`, `NULL`). A quoted value is
    /// always text, so `""` in quotes stays an empty string (as PostgreSQL's CSV COPY does).
    package var nullValues: Set<String> = ["", "NA", "NULL"]
    /// The longest record accepted, in bytes (default 64 MiB); longer is `tooLarge`.
    package var maxRecordBytes = 64 << 20
    /// The most fields a record may have (default 10,000): a header with more columns is
    /// `tooLarge`. Bounds the per-record field table, which a 64 MiB record of bare delimiters
    /// would otherwise grow to 64 M entries (1.5 GiB).
    package var maxColumns = 10_000

    /// Creates the defaults.
    package init() {}
}

/// A streaming CSV reader (RFC 4180): records come out one at a time from a `ByteSource`
/// read in 1 MiB chunks, so memory stays flat for any file size.
///
/// Accepts quoted fields holding delimiters, doubled quotes and line breaks; CRLF, LF or CR
/// line ends; a UTF-8 byte-order mark (dropped); blank lines (skipped). Errors name the data row
/// and byte offset: a record with another number of fields than the header, an unterminated
/// quote, text after a closing quote, invalid UTF-8.
///
/// Written over raw bytes rather than with `CSV.swift` (which reads scalar by scalar, reports
/// no offsets and never checks field counts); measured in `Benchmarks/ingest`.
package final class CSVReader: BufferedInput {
    /// The column names (from the header, or `column1`… without one).
    package private(set) var columns: [String] = []
    /// The delimiter in use (given or detected).
    package private(set) var delimiter: UInt8 = 0x2C
    /// Data records returned so far.
    package private(set) var row = 0
    /// The error that stopped reading, if one did: a stream error (a quote never closed, text
    /// after a closing quote, a record or header over a limit, a failed read), past which no
    /// record can be found. Every later read throws it again. A bad row (another number of
    /// fields than the header, invalid UTF-8) leaves this nil: reading goes on with the next.
    package private(set) var streamError: IngestError?
    /// Bytes of input consumed by the records returned so far (a checkpoint to resume from).
    package var bytesConsumed: Int64 { consumedBase + Int64(position) }

    var source: any ByteSource
    private let options: CSVOptions
    var buffer: [UInt8]
    var position = 0
    var end = 0
    var consumedBase: Int64 = 0
    var atEOF = false
    private var pendingFirst: [String?]?  // the first data record when there is no header
    private var fields: [(start: Int, end: Int, quoted: Bool, escaped: Bool)] = []
    /// Fields of the last scanned record beyond `maxColumns` (counted, not kept).
    private var extraFields = 0
    private let nullMarkers: CSVNullMarkers

    /// Opens a reader: detects the delimiter if needed and reads the header.
    /// - Parameter skipping: bytes already processed by an earlier run (a checkpoint's
    ///   `bytesConsumed`); the header is still read first, then reading resumes there.
    /// - Throws: `IngestError` when the header is malformed or the input cannot be read.
    package init(source: any ByteSource, options: CSVOptions = CSVOptions(), resumingAt skipping: Int64 = 0) throws {
        self.source = source
        self.options = options
        self.buffer = [UInt8](repeating: 0, count: 1 << 20)
        self.nullMarkers = CSVNullMarkers(options.nullValues)
        try start()
        delimiter = options.delimiter ?? detectDelimiter()
        guard let first = try readRecord(countRow: false) else { return }
        if options.header {
            columns = first.enumerated().map { index, field in
                guard let name = field, !name.isEmpty else { return "column\(index + 1)" }
                return name
            }
        } else {
            columns = (1...first.count).map { "column\($0)" }
            pendingFirst = first
        }
        if skipping > bytesConsumed {
            pendingFirst = nil
            try skip(to: skipping)
        }
    }

    /// Opens a reader over one chunk of a file after its first (``ChunkPlanner``): `source`
    /// holds the chunk's bytes only, the delimiter and columns are the whole file's, and rows
    /// and byte offsets (`row`, `bytesConsumed`, errors) count as in the whole file.
    /// - Throws: `IngestError` (`io`) when the input cannot be read.
    package init(source: any ByteSource, options: CSVOptions, chunk: InputChunk, delimiter: UInt8, columns: [String]) throws {
        self.source = source
        self.options = options
        self.buffer = [UInt8](repeating: 0, count: 1 << 20)
        self.nullMarkers = CSVNullMarkers(options.nullValues)
        self.delimiter = delimiter
        self.columns = columns
        consumedBase = chunk.start
        row = chunk.firstRow - 1
        // No byte-order mark: a chunk starts at a record.
        _ = try refill(growingUpTo: .max)
    }

    /// The next record, its fields in column order (nil for null markers), or nil at the end.
    /// - Throws: `IngestError` naming the row and byte offset.
    package func next() throws -> [String?]? {
        if let first = pendingFirst {
            pendingFirst = nil
            row += 1
            return first
        }
        guard let record = try readRecord(countRow: true) else { return nil }
        return record
    }

    // MARK: Reading

    /// Reads more input; grows the buffer when one record fills it.
    private func fill() throws {
        guard try refill(growingUpTo: options.maxRecordBytes) else {
            throw IngestError(.tooLarge, "a record is longer than \(options.maxRecordBytes) bytes", row: row + 1, byteOffset: consumedBase)
        }
    }

    private func skip(to offset: Int64) throws {
        while bytesConsumed < offset {
            if position == end {
                try fill()
                if end == 0 && atEOF { return }
            }
            position += min(end - position, Int(offset - bytesConsumed))
        }
    }

    private static let cr: UInt8 = 0x0D
    private static let lf: UInt8 = 0x0A

    /// The next record as bytes, handed to `body` without making strings (the fast path of
    /// bulk loads); nil at the end. The record's bytes are valid only inside `body`, and
    /// `bytesConsumed` and `row` already count the record there.
    /// - Throws: `IngestError` as `next()` does (UTF-8 is checked before `body` runs), or what
    ///   `body` throws.
    package func withNextRecord<R>(_ body: (CSVRawRecord) throws -> R) throws -> R? {
        precondition(pendingFirst == nil, "read the first record of a header-less file with next()")
        guard let next = try scanNextRecord(countRow: true) else { return nil }
        let recordRow = row + 1
        let base = consumedBase
        let fields = self.fields
        let quote = options.quote
        let nullMarkers = self.nullMarkers
        // With ASCII separators the bytes between fields are ASCII, so the record's span is valid
        // UTF-8 exactly when every field is, and its first bad byte is the first bad field's:
        // one check per record instead of one per field.
        let wholeSpan = delimiter < 0x80 && quote < 0x80
        position = next
        row += 1
        return try buffer.withUnsafeBufferPointer { bytes in
            if wholeSpan {
                if let first = fields.first, let last = fields.last {
                    try Self.checkUTF8(UnsafeBufferPointer(rebasing: bytes[first.start..<last.end]), row: recordRow, at: base + Int64(first.start))
                }
            } else {
                for field in fields {
                    try Self.checkUTF8(
                        UnsafeBufferPointer(rebasing: bytes[field.start..<field.end]), row: recordRow, at: base + Int64(field.start))
                }
            }
            return try body(CSVRawRecord(bytes: bytes, fields: fields, quote: quote, nullMarkers: nullMarkers))
        }
    }

    /// Finds the next record's fields (blank lines skipped) and checks their count.
    /// - Returns: the offset after the record, or nil at the end of input.
    private func scanNextRecord(countRow: Bool) throws -> Int? {
        if let streamError { throw streamError }
        while true {
            while true {
                if position == end {
                    if atEOF { return nil }
                    try stopping { try fill() }
                    continue
                }
                let byte = buffer[position]
                if byte == Self.cr || byte == Self.lf { position += 1 } else { break }
            }
            let recordRow = row + 1
            switch try stopping({ try scanRecord(row: recordRow) }) {
            case .needMore:
                try stopping { try fill() }
                continue
            case .record(let next):
                let count = fields.count + extraFields
                if columns.isEmpty && extraFields > 0 {
                    // The header (or a header-less file's first record) sets the column count.
                    let error = IngestError(
                        .tooLarge, "the first record has \(count) fields, more than the limit of \(options.maxColumns) columns", row: recordRow,
                        byteOffset: bytesConsumed)
                    streamError = error
                    throw error
                }
                if !columns.isEmpty && count != columns.count {
                    let start = bytesConsumed
                    position = next  // a caller that skips bad rows goes on with the next one
                    if countRow { row += 1 }
                    throw IngestError(.malformed, "the record has \(count) fields, the header \(columns.count)", row: recordRow, byteOffset: start)
                }
                return next
            }
        }
    }

    /// Runs `body`; an `IngestError` it throws is a stream error (see `streamError`).
    @inline(__always)
    private func stopping<R>(_ body: () throws -> R) throws -> R {
        do {
            return try body()
        } catch let error as IngestError {
            streamError = error
            throw error
        }
    }

    /// Reads one record into `fields` (byte ranges), refilling as needed; converts to strings.
    private func readRecord(countRow: Bool) throws -> [String?]? {
        guard let next = try scanNextRecord(countRow: countRow) else { return nil }
        let recordRow = row + 1
        // Also on a bad value: a caller that skips bad rows goes on with the next one.
        defer {
            position = next
            if countRow { row += 1 }
        }
        return try makeValues(row: recordRow)
    }

    private enum Scan { case needMore, record(next: Int) }

    /// Finds the fields of the record at `position` within the buffer. Returns `.needMore`
    /// when the record continues past the bytes read so far (and the input has more).
    private func scanRecord(row: Int) throws -> Scan {
        // A local array: appending to the stored property would pay a dynamic exclusivity
        // check per field.
        var fields = self.fields
        fields.removeAll(keepingCapacity: true)
        self.fields = []
        var extra = 0
        defer {
            self.fields = fields
            extraFields = extra
        }
        let maxFields = options.maxColumns
        let delimiter = self.delimiter
        let quote = options.quote
        let end = self.end
        let atEOF = self.atEOF
        let base = consumedBase
        return try buffer.withUnsafeBufferPointer { bytes -> Scan in
            var i = position
            while true {
                // One field starting at i.
                if i < end && bytes[i] == quote {
                    let open = i
                    i += 1
                    var escaped = false
                    while true {
                        guard i < end else {
                            if atEOF {
                                throw IngestError(.malformed, "a quoted field is never closed", row: row, byteOffset: base + Int64(open))
                            }
                            return .needMore
                        }
                        if bytes[i] == quote {
                            if i + 1 < end && bytes[i + 1] == quote {
                                escaped = true
                                i += 2
                                continue
                            }
                            if i + 1 == end && !atEOF { return .needMore }
                            break
                        }
                        i += 1
                    }
                    if fields.count < maxFields { fields.append((open + 1, i, true, escaped)) } else { extra += 1 }
                    i += 1  // past the closing quote
                    if i < end {
                        let after = bytes[i]
                        if after != delimiter && after != Self.cr && after != Self.lf {
                            throw IngestError(
                                .malformed, "unexpected text after a closing quote", row: row, byteOffset: base + Int64(i))
                        }
                    }
                } else {
                    let start = i
                    while i < end {
                        let byte = bytes[i]
                        if byte == delimiter || byte == Self.lf || byte == Self.cr { break }
                        i += 1
                    }
                    if i == end && !atEOF { return .needMore }
                    if fields.count < maxFields { fields.append((start, i, false, false)) } else { extra += 1 }
                }
                // After a field: a delimiter, a line end, or the end of input.
                if i >= end {
                    if !atEOF { return .needMore }
                    return .record(next: i)
                }
                let byte = bytes[i]
                if byte == delimiter {
                    i += 1
                    if i == end && !atEOF { return .needMore }
                    if i == end {
                        // A trailing delimiter: one more empty field.
                        if fields.count < maxFields { fields.append((i, i, false, false)) } else { extra += 1 }
                        return .record(next: i)
                    }
                    continue
                }
                if byte == Self.cr {
                    if i + 1 == end && !atEOF { return .needMore }
                    if i + 1 < end && bytes[i + 1] == Self.lf { return .record(next: i + 2) }
                    return .record(next: i + 1)
                }
                return .record(next: i + 1)  // LF
            }
        }
    }

    /// Turns the scanned byte ranges into strings (null markers → nil), checking UTF-8.
    private func makeValues(row: Int) throws -> [String?] {
        let fields = self.fields
        var values: [String?] = []
        values.reserveCapacity(fields.count)
        let quote = options.quote
        let nullMarkers = self.nullMarkers
        let base = consumedBase
        try buffer.withUnsafeBufferPointer { bytes in
            for field in fields {
                let slice = UnsafeBufferPointer(rebasing: bytes[field.start..<field.end])
                if !field.quoted && nullMarkers.matches(slice) {
                    values.append(nil)
                    continue
                }
                try Self.checkUTF8(slice, row: row, at: base + Int64(field.start))
                guard field.escaped else {
                    values.append(String(decoding: slice, as: UTF8.self))
                    continue
                }
                values.append(CSVRawRecord.withUnescaped(slice, escaped: true, quote: quote) { String(decoding: $0, as: UTF8.self) })
            }
        }
        return values
    }

    /// Throws `invalidUTF8` naming the first byte of `field` (which starts at input offset
    /// `offset`) that breaks UTF-8.
    @inline(__always)
    static func checkUTF8(_ field: UnsafeBufferPointer<UInt8>, row: Int, at offset: Int64) throws {
        if let bad = UTF8Validation.firstInvalidByte(field) {
            throw IngestError(.invalidUTF8, "the text is not valid UTF-8", row: row, byteOffset: offset + Int64(bad))
        }
    }

    /// Picks the delimiter among `,` `;` tab `|` that splits the first lines (up to 20 non-blank
    /// ones, counted outside quotes) into the same number of fields, more than one, preferring
    /// more fields and then the order given; `,` when none does.
    private func detectDelimiter() -> UInt8 {
        let candidates: [UInt8] = [0x2C, 0x3B, 0x09, 0x7C]
        var perLine: [[Int]] = []
        var current = [Int](repeating: 0, count: candidates.count)
        var content = false
        var inQuotes = false
        var i = position
        let limit = min(end, position + (64 << 10))
        func endLine() {
            if content { perLine.append(current) }
            current = [Int](repeating: 0, count: candidates.count)
            content = false
        }
        while i < limit && perLine.count < 20 {
            let byte = buffer[i]
            if byte == options.quote {
                inQuotes.toggle()
                content = true
            } else if !inQuotes && (byte == Self.lf || byte == Self.cr) {
                endLine()
            } else {
                content = true
                if !inQuotes, let k = candidates.firstIndex(of: byte) { current[k] += 1 }
            }
            i += 1
        }
        if atEOF && i == end { endLine() }  // a last line without a line end
        var best: (index: Int, count: Int)?
        for k in candidates.indices {
            guard let first = perLine.first?[k], first > 0, perLine.allSatisfy({ $0[k] == first }) else { continue }
            if best == nil || first > best!.count { best = (k, first) }
        }
        return best.map { candidates[$0.index] } ?? 0x2C
    }
}

/// The unquoted values a CSV reader reads as null, with the set of their lengths kept as bits:
/// most fields are ruled out by their length alone, without comparing bytes.
@usableFromInline
struct CSVNullMarkers: Sendable {
    /// Bit n set: some marker is n bytes long (n < 64).
    @usableFromInline let lengths: UInt64
    /// Whether some marker is 64 bytes or longer.
    @usableFromInline let long: Bool
    @usableFromInline let markers: [[UInt8]]

    init(_ values: Set<String>) {
        markers = values.map { Array($0.utf8) }
        lengths = markers.reduce(0) { $1.count < 64 ? $0 | 1 << UInt64($1.count) : $0 }
        long = markers.contains { $0.count >= 64 }
    }

    /// Whether `bytes` are one of the markers.
    @inlinable
    func matches(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        let length = bytes.count
        if length < 64 ? lengths & (1 << UInt64(length)) == 0 : !long { return false }
        for marker in markers where marker.count == length {
            if marker.withUnsafeBufferPointer({ $0.elementsEqual(bytes) }) { return true }
        }
        return false
    }
}

/// One CSV record's fields as bytes (see `CSVReader.withNextRecord`).
///
/// Its accessors are inlinable: the bulk loader calls them for every field of every record.
package struct CSVRawRecord {
    @usableFromInline let bytes: UnsafeBufferPointer<UInt8>
    @usableFromInline let fields: [(start: Int, end: Int, quoted: Bool, escaped: Bool)]
    @usableFromInline let quote: UInt8
    @usableFromInline let nullMarkers: CSVNullMarkers

    init(
        bytes: UnsafeBufferPointer<UInt8>, fields: [(start: Int, end: Int, quoted: Bool, escaped: Bool)], quote: UInt8, nullMarkers: CSVNullMarkers
    ) {
        self.bytes = bytes
        self.fields = fields
        self.quote = quote
        self.nullMarkers = nullMarkers
    }

    /// The number of fields.
    @inlinable
    package var count: Int { fields.count }

    /// Whether field `index` holds doubled quotes, so that ``withField(_:_:)`` hands out a
    /// copy rather than the reader's own bytes.
    @inlinable
    package func isEscaped(_ index: Int) -> Bool { fields[index].escaped }

    /// Whether field `index` is unquoted and one of the null markers.
    @inlinable
    package func isNull(_ index: Int) -> Bool {
        let field = fields[index]
        guard !field.quoted else { return false }
        return nullMarkers.matches(UnsafeBufferPointer(rebasing: bytes[field.start..<field.end]))
    }

    /// Field `index` as the reader's own bytes (doubled quotes still doubled: see
    /// ``isEscaped(_:)``), valid as long as the record is.
    @inlinable
    package func rawField(_ index: Int) -> UnsafeBufferPointer<UInt8> {
        let field = fields[index]
        return UnsafeBufferPointer(rebasing: bytes[field.start..<field.end])
    }

    /// Calls `body` with field `index`'s bytes (doubled quotes undone).
    package func withField<R>(_ index: Int, _ body: (UnsafeBufferPointer<UInt8>) throws -> R) rethrows -> R {
        let field = fields[index]
        return try Self.withUnescaped(UnsafeBufferPointer(rebasing: bytes[field.start..<field.end]), escaped: field.escaped, quote: quote, body)
    }

    /// Calls `body` with a field's bytes, its doubled quotes undone when `escaped`.
    @inline(__always)
    static func withUnescaped<R>(
        _ field: UnsafeBufferPointer<UInt8>, escaped: Bool, quote: UInt8, _ body: (UnsafeBufferPointer<UInt8>) throws -> R
    ) rethrows -> R {
        guard escaped else { return try body(field) }
        var unescaped: [UInt8] = []
        unescaped.reserveCapacity(field.count)
        var k = 0
        while k < field.count {
            unescaped.append(field[k])
            k += field[k] == quote ? 2 : 1
        }
        return try unescaped.withUnsafeBufferPointer(body)
    }

    /// Field `index` as a string (nil for a null marker).
    package func string(_ index: Int) -> String? {
        isNull(index) ? nil : withField(index) { String(decoding: $0, as: UTF8.self) }
    }
}
