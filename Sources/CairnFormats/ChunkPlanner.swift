#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// One piece of an input, loaded on its own: a byte range that starts where a record ended
/// (or at the file's start) and ends where the next piece starts, and the whole file's number of
/// its first data record, so row numbers and byte offsets stay those of the whole file.
package struct InputChunk: Codable, Sendable, Equatable {
    /// The piece's place, from 0.
    package var index: Int
    /// Its first byte, from the start of the file.
    package var start: Int64
    /// One past its last byte.
    package var end: Int64
    /// The data record its first record is, from 1 (a header is not counted).
    package var firstRow: Int

    /// Creates a chunk.
    package init(index: Int, start: Int64, end: Int64, firstRow: Int) {
        self.index = index
        self.start = start
        self.end = end
        self.firstRow = firstRow
    }
}

/// How a CSV file splits into chunks (``ChunkPlanner/planCSV(open:size:options:targetBytes:firstChunkAtLeast:)``).
package struct CSVChunkPlan: Codable, Sendable, Equatable {
    /// The chunks, in file order; the first starts at 0 (its reader reads the header), the last
    /// ends at the file's size.
    package var chunks: [InputChunk]
    /// The delimiter the whole file is read with (given or detected from its first lines).
    package var delimiter: UInt8
    /// The column names (the header's, or `column1`… without one).
    package var columns: [String]
    /// Where the first data record may start: after the byte-order mark and the header.
    package var dataStart: Int64
}

/// Finds where an input may be cut so that each piece holds whole records, for chunked
/// pipeline runs (`CAIRN_PIPELINE_CHUNK`, e.g. 64 MiB a chunk).
///
/// CSV boundaries come from one sequential pass over the bytes with the CSV reader's own state
/// machine (a quote opens a quoted field only at a field's start, `""` inside one is a quote,
/// a line break inside one is data), not speculation verified when chunks meet: the pass is
/// exact for every file the reader reads the same way (a stray quote inside an unquoted field,
/// which plain quote parity would miscount, is data to both), runs at memory speed (it looks
/// for three bytes and counts nothing but records), and needs no second plan when a guess
/// turns out wrong, which would re-run chunks already loaded on other nodes. A file the reader
/// cannot read past (a quote never closed, text after a closing quote) gets no boundary past
/// the last good one: its last chunk fails where the whole file would.
///
/// NDJSON splits after line feeds. A JSON array and XML are not split (their runs load whole).
package enum ChunkPlanner {
    /// The default chunk size: 64 MiB.
    package static let defaultTargetBytes: Int64 = 64 << 20

    /// Plans a CSV file of `size` bytes into chunks of about `targetBytes` (each ends at the
    /// first record end at or past its start plus `targetBytes`, after the record's line break,
    /// where the whole file's reader stands between two records; the first also not before
    /// `firstChunkAtLeast`, so the records a run samples for column types are all in it).
    /// - Parameter open: a source over the file's bytes from the given offset to its end.
    /// - Throws: `IngestError` when the header cannot be read, or a read fails.
    package static func planCSV(
        open: (Int64) throws -> any ByteSource, size: Int64, options: CSVOptions, targetBytes: Int64, firstChunkAtLeast: Int64 = 0
    ) throws -> CSVChunkPlan {
        let header = try CSVReader(source: try open(0), options: options)
        var dataStart = header.bytesConsumed
        if !options.header {
            // The reader has read the first record already; data starts after the mark.
            var mark = [UInt8](repeating: 0, count: 3)
            var source = try open(0)
            let count = try mark.withUnsafeMutableBytes { try source.read(into: $0) }
            dataStart = count == 3 && mark == [0xEF, 0xBB, 0xBF] ? 3 : 0
        }
        var scanner = CSVBoundaryScanner(delimiter: header.delimiter, quote: options.quote)
        var chunks: [InputChunk] = []
        var chunkStart: Int64 = 0
        var firstRow = 1
        var next = max(dataStart + 1, targetBytes, firstChunkAtLeast)
        let stride = max(1, targetBytes)
        if size > next {
            var source = try open(dataStart)
            var buffer = [UInt8](repeating: 0, count: 1 << 20)
            var offset = dataStart
            reading: while true {
                let count = try buffer.withUnsafeMutableBytes { try source.read(into: $0) }
                if count == 0 { break }
                let stopped = buffer.withUnsafeBufferPointer { bytes -> Bool in
                    var from = 0
                    while from < count {
                        // Follow the bytes up to `next`, then to the first record end at or past it.
                        let wanted = next > offset ? Int(min(Int64(count), next - offset)) : 0
                        if wanted > from {
                            if !scanner.scan(UnsafeBufferPointer(rebasing: bytes[from..<wanted])) { return true }
                            from = wanted
                            continue
                        }
                        guard let ended = scanner.nextRecordEnd(UnsafeBufferPointer(rebasing: bytes[from..<count])) else {
                            return scanner.failed
                        }
                        from += ended
                        let at = offset + Int64(from)
                        if at >= size { return true }
                        chunks.append(InputChunk(index: chunks.count, start: chunkStart, end: at, firstRow: firstRow))
                        chunkStart = at
                        firstRow = scanner.records + 1
                        next = at + stride
                    }
                    return false
                }
                if stopped { break reading }
                offset += Int64(count)
            }
        }
        chunks.append(InputChunk(index: chunks.count, start: chunkStart, end: size, firstRow: firstRow))
        return CSVChunkPlan(chunks: chunks, delimiter: header.delimiter, columns: header.columns, dataStart: dataStart)
    }

    /// Plans an NDJSON file of `size` bytes into chunks of about `targetBytes`, each ending
    /// after a line feed; `firstRow` counts the lines before a chunk that hold more than blanks.
    /// - Parameter open: a source over the file's bytes from the given offset to its end.
    /// - Throws: `IngestError` (`io`) when a read fails.
    package static func planLines(open: (Int64) throws -> any ByteSource, size: Int64, targetBytes: Int64) throws -> [InputChunk] {
        var chunks: [InputChunk] = []
        var chunkStart: Int64 = 0
        var firstRow = 1
        var records = 0
        var lineHasContent = false
        let stride = max(1, targetBytes)
        var next = stride
        guard size > next else { return [InputChunk(index: 0, start: 0, end: size, firstRow: 1)] }
        var source = try open(0)
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        var offset: Int64 = 0
        while true {
            let count = try buffer.withUnsafeMutableBytes { try source.read(into: $0) }
            if count == 0 { break }
            buffer.withUnsafeBufferPointer { bytes in
                for index in 0..<count {
                    let byte = bytes[index]
                    if byte == 0x0A {
                        if lineHasContent { records += 1 }
                        lineHasContent = false
                        let at = offset + Int64(index) + 1
                        if at >= next && at < size {
                            chunks.append(InputChunk(index: chunks.count, start: chunkStart, end: at, firstRow: firstRow))
                            chunkStart = at
                            firstRow = records + 1
                            next = at + stride
                        }
                    } else if byte != 0x20 && byte != 0x09 && byte != 0x0D {
                        lineHasContent = true
                    }
                }
            }
            offset += Int64(count)
        }
        chunks.append(InputChunk(index: chunks.count, start: chunkStart, end: size, firstRow: firstRow))
        return chunks
    }
}

/// The CSV reader's record grammar, without the fields: follows the bytes given in order,
/// counting records (a blank line is none), and finds where records end.
struct CSVBoundaryScanner {
    private enum State {
        /// Between records: line breaks here are blank lines.
        case recordStart
        /// After a delimiter.
        case fieldStart
        /// Inside an unquoted field.
        case unquoted
        /// Inside a quoted field.
        case quoted
        /// After a quote inside a quoted field: a second quote is data, anything else closes it.
        case quoteInQuoted
        /// After a closing quote: a delimiter or a line break must follow.
        case closed
        /// After a carriage return that ended a record: a line feed next belongs to it.
        case afterCR
    }

    private enum Step { case more, recordEnded, failed }

    private var state = State.recordStart
    let delimiter: UInt8
    let quote: UInt8
    /// Records started so far.
    private(set) var records = 0
    /// The bytes cannot be read as CSV past this point.
    private(set) var failed = false

    init(delimiter: UInt8, quote: UInt8) {
        self.delimiter = delimiter
        self.quote = quote
    }

    /// Follows `bytes`; false once the bytes stopped being CSV.
    mutating func scan(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        var index = 0
        while index < bytes.count {
            if step(bytes, &index) == .failed { return false }
        }
        return true
    }

    /// Follows `bytes` up to the end of the first record that ends in them (its line break
    /// included: both bytes of a CRLF), and returns the index after it: where the reader of the
    /// whole file stands between that record and the next. Nil when no record ends in `bytes`
    /// (all followed), or they stopped being CSV (`failed`).
    mutating func nextRecordEnd(_ bytes: UnsafeBufferPointer<UInt8>) -> Int? {
        var index = 0
        while index < bytes.count {
            switch step(bytes, &index) {
            case .more: continue
            case .recordEnded: return index
            case .failed: return nil
            }
        }
        return nil
    }

    /// A delimiter or line-break byte where a field may end: the state it leads to, and the
    /// step to report; nil for any other byte.
    @inline(__always)
    private mutating func separator(_ byte: UInt8) -> Step? {
        if byte == delimiter {
            state = .fieldStart
            return .more
        } else if byte == 0x0A {
            state = .recordStart
            return .recordEnded
        } else if byte == 0x0D {
            state = .afterCR
            return .more
        }
        return nil
    }

    /// Follows one byte (or a run of field bytes) at `index`, moving it on.
    @inline(__always)
    private mutating func step(_ bytes: UnsafeBufferPointer<UInt8>, _ index: inout Int) -> Step {
        let byte = bytes[index]
        switch state {
        case .recordStart, .fieldStart:
            if state == .recordStart {
                if byte == 0x0A || byte == 0x0D {
                    index += 1
                    return .more
                }
                records += 1
            }
            index += 1
            if byte == quote {
                state = .quoted
            } else if let step = separator(byte) {
                return step
            } else {
                state = .unquoted
            }
        case .unquoted:
            // The run of field bytes up to a delimiter or a line break (a quote is data here).
            var at = index
            while at < bytes.count {
                let next = bytes[at]
                if next == delimiter || next == 0x0A || next == 0x0D { break }
                at += 1
            }
            index = at
            guard at < bytes.count else { return .more }
            index += 1
            switch bytes[at] {
            case delimiter: state = .fieldStart
            case 0x0A:
                state = .recordStart
                return .recordEnded
            default: state = .afterCR
            }
        case .quoted:
            let rest = bytes.count - index
            if let found = memchr(bytes.baseAddress! + index, Int32(quote), rest) {
                index = bytes.baseAddress!.distance(to: UnsafePointer(found.assumingMemoryBound(to: UInt8.self))) + 1
                state = .quoteInQuoted
            } else {
                index = bytes.count
            }
        case .quoteInQuoted:
            if byte == quote {
                state = .quoted
                index += 1
            } else {
                state = .closed
            }
        case .closed:
            index += 1
            if let step = separator(byte) {
                return step
            } else {
                failed = true
                return .failed
            }
        case .afterCR:
            if byte == 0x0A { index += 1 }
            state = .recordStart
            return .recordEnded
        }
        return .more
    }
}
