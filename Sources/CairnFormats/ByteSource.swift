#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Bytes read in chunks, front to back: a file, a decompressed stream, or memory in tests.
/// Parsers pull from a source so that memory stays flat whatever the input's size.
package protocol ByteSource {
    /// Fills the start of `buffer` with the next bytes; returns how many (0 only at the end).
    /// - Throws: `IngestError` (`io`) when the underlying read fails.
    mutating func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int
}

/// A file read with POSIX `read(2)`, whole or one byte range of it (a chunk of a chunked
/// pipeline run); closed when the source is released.
package final class FileByteSource: ByteSource {
    private let descriptor: Int32
    /// Bytes left to read in the range; nil reads to the end of the file.
    private var remaining: Int64?

    /// Opens `path` for reading; with `range`, only those bytes are read (the source ends at
    /// the range's end, or the file's if that comes first).
    /// - Throws: `IngestError` (`io`) when the file cannot be opened.
    package init(path: String, range: Range<Int64>? = nil) throws {
        descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw IngestError(.io, "cannot open the file (errno \(errno))") }
        if let range {
            guard lseek(descriptor, off_t(range.lowerBound), SEEK_SET) >= 0 else {
                close(descriptor)
                throw IngestError(.io, "cannot seek in the file (errno \(errno))")
            }
            remaining = range.upperBound - range.lowerBound
        }
    }

    deinit { close(descriptor) }

    /// Reads the next bytes, retrying reads interrupted by signals.
    package func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        let wanted = remaining.map { Int(min(Int64(buffer.count), max(0, $0))) } ?? buffer.count
        if wanted == 0 { return 0 }
        while true {
            let count = Glibc.read(descriptor, buffer.baseAddress, wanted)
            if count >= 0 {
                if let left = remaining { remaining = left - Int64(count) }
                return count
            }
            if errno == EINTR { continue }
            throw IngestError(.io, "reading the file failed (errno \(errno))")
        }
    }
}

/// A streaming reader's input: bytes pulled from a `ByteSource` into one growable buffer, of
/// which `position..<end` is not yet consumed and `buffer[0]` is at input offset
/// `consumedBase`. CSVReader and JSONRecordReader share its refill.
protocol BufferedInput: AnyObject {
    var source: any ByteSource { get set }
    var buffer: [UInt8] { get set }
    /// The next unread byte.
    var position: Int { get set }
    /// The bytes valid in `buffer`.
    var end: Int { get set }
    /// The input offset of `buffer[0]`.
    var consumedBase: Int64 { get set }
    var atEOF: Bool { get set }
}

extension BufferedInput {
    /// Reads the first chunk and steps over a UTF-8 byte-order mark.
    func start() throws {
        _ = try refill(growingUpTo: .max)
        if end >= 3 && buffer[0] == 0xEF && buffer[1] == 0xBB && buffer[2] == 0xBF { position = 3 }
    }

    /// Moves the unread bytes to the front and reads more (until 64 KiB are unread, the buffer
    /// is full or the input ends). When the unread bytes already fill the buffer, it first
    /// doubles, to at most `limit` bytes.
    /// - Returns: false, reading nothing, when the buffer is full and at `limit`.
    /// - Throws: the source's `IngestError` (`io`).
    func refill(growingUpTo limit: Int) throws -> Bool {
        if position > 0 {
            let unread = end - position
            if unread > 0 {
                let from = position
                buffer.withUnsafeMutableBytes { raw in raw.baseAddress!.copyMemory(from: raw.baseAddress! + from, byteCount: unread) }
            }
            consumedBase += Int64(position)
            end = unread
            position = 0
        }
        if end == buffer.count {
            guard buffer.count < limit else { return false }
            buffer.append(contentsOf: repeatElement(0, count: min(buffer.count, limit - buffer.count)))
        }
        while end < buffer.count && !atEOF {
            let from = end
            let count = try buffer.withUnsafeMutableBytes { raw in try source.read(into: UnsafeMutableRawBufferPointer(rebasing: raw[from...])) }
            if count == 0 { atEOF = true } else { end += count }
            if count > 0 && end - position >= 64 << 10 { break }  // enough to work on
        }
        return true
    }
}

/// Bytes held in memory, handed out in chunks of at most `chunkSize` (tests use small chunks
/// to exercise records that straddle reads). A string's UTF-8 is read where it is, not copied.
package struct MemoryByteSource: ByteSource {
    private enum Storage {
        case bytes([UInt8])
        case text(String)
    }

    private let storage: Storage
    private let count: Int
    private var offset = 0
    private let chunkSize: Int

    /// Creates a source over `bytes`.
    package init(_ bytes: [UInt8], chunkSize: Int = 1 << 20) {
        storage = .bytes(bytes)
        count = bytes.count
        self.chunkSize = max(1, chunkSize)
    }

    /// Creates a source over a string's UTF-8 bytes.
    package init(_ text: String, chunkSize: Int = 1 << 20) {
        var text = text
        text.makeContiguousUTF8()
        storage = .text(text)
        count = text.utf8.count
        self.chunkSize = max(1, chunkSize)
    }

    /// Copies the next chunk.
    package mutating func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        let length = min(buffer.count, chunkSize, count - offset)
        guard length > 0 else { return 0 }
        let range = offset..<(offset + length)
        switch storage {
        case .bytes(let bytes): bytes.withUnsafeBytes { buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[range])) }
        case .text(let text):
            // Contiguous since `init`, so the closure always runs.
            _ = text.utf8.withContiguousStorageIfAvailable {
                buffer.copyMemory(from: UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: $0[range])))
            }
        }
        offset += length
        return length
    }
}

/// An error while reading or parsing input, with where it happened. `row` counts data records
/// from 1 (a header is not counted); `byteOffset` is from the start of the input (a byte-order
/// mark included).
package struct IngestError: Error, CustomStringConvertible, Sendable, Equatable {
    /// What went wrong, as a stable code.
    package enum Kind: String, Sendable {
        /// The input could not be read.
        case io
        /// The input is not well-formed for its format (quotes, field counts, syntax).
        case malformed
        /// The bytes are not valid UTF-8.
        case invalidUTF8 = "invalid_utf8"
        /// A record, field or document exceeds a limit.
        case tooLarge = "too_large"
        /// The input asks for something refused on purpose (external entities, entity expansion).
        case forbidden
    }

    /// The kind of problem.
    package var kind: Kind
    /// A human-readable explanation (no file contents beyond a few bytes).
    package var message: String
    /// The data record the problem is in, when known (1-based; the header is not counted).
    package var row: Int?
    /// The offset of the offending byte (or of the record's start), when known.
    package var byteOffset: Int64?

    /// Creates an error.
    package init(_ kind: Kind, _ message: String, row: Int? = nil, byteOffset: Int64? = nil) {
        self.kind = kind
        self.message = message
        self.row = row
        self.byteOffset = byteOffset
    }

    /// `message (row N, byte M)`.
    package var description: String {
        var where_: [String] = []
        if let row { where_.append("row \(row)") }
        if let byteOffset { where_.append("byte \(byteOffset)") }
        return where_.isEmpty ? message : "\(message) (\(where_.joined(separator: ", ")))"
    }
}
