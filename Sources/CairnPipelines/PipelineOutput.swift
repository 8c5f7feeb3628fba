import CairnFormats
import CairnSandbox
import Crypto
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A hashed, size-bounded output file: encoders gather bytes and hand them over in chunks of
/// about `chunkBytes`; the file counts, hashes and writes them.
final class OutputWriter {
    /// Bytes an encoder gathers before they are written.
    static let chunkBytes = 1 << 20

    private let descriptor: Int32
    private var hasher = SHA256()
    private var written: Int64 = 0
    private let maxBytes: Int64
    private(set) var failed = false

    init(path: String, maxBytes: Int64) throws {
        descriptor = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw SandboxError(.io, "the output file could not be created") }
        self.maxBytes = maxBytes
    }

    deinit { if descriptor >= 0 { Glibc.close(descriptor) } }

    /// Writes `bytes` and empties them once they hold at least `threshold` bytes. Past the size
    /// limit or after a write error nothing more is written and `failed` is set.
    func drain(_ bytes: inout [UInt8], atLeast threshold: Int = OutputWriter.chunkBytes) {
        guard bytes.count >= threshold, !bytes.isEmpty, !failed else { return }
        written += Int64(bytes.count)
        if written > maxBytes {
            failed = true
            return
        }
        bytes.withUnsafeBytes { raw in
            hasher.update(bufferPointer: raw)
            var offset = 0
            while offset < raw.count {
                let count = Glibc.write(descriptor, raw.baseAddress! + offset, raw.count - offset)
                if count < 0 {
                    if errno == EINTR { continue }
                    failed = true
                    return
                }
                offset += count
            }
        }
        bytes.removeAll(keepingCapacity: true)
    }

    /// Syncs and closes (after the last `drain`); returns the size and lower-case hex SHA-256.
    /// - Throws: `PipelineFailure` past the size limit, `SandboxError` (`io`) on a write error.
    func close() throws -> (Int64, String) {
        if written > maxBytes { throw PipelineFailure(message: "output limit of \(PipelineSettings.describe(bytes: maxBytes)) reached") }
        if failed || fsync(descriptor) != 0 { throw SandboxError(.io, "writing the output file failed") }
        let digest = hasher.finalize().map { String(format: "%02x", $0) }.joined()
        return (written, digest)
    }
}

/// Encodes a query's result rows in one output format into an output file.
protocol ResultEncoder {
    /// Appends the row the statement is on.
    mutating func row(_ statement: SandboxStatement)
    /// Appends what follows the last row.
    mutating func finish()
    /// Hands the bytes gathered so far to `file` (see `OutputWriter.drain`).
    mutating func drain(into file: OutputWriter, atLeast threshold: Int)
}

/// Result rows as CSV through the shared `CSVWriter`: RFC 4180 with LF record ends and a header
/// of the column names. Text is never neutralised (outputs are data for programs); NULL and
/// non-finite reals are empty fields, blobs base64, invalid UTF-8 replaced by U+FFFD.
struct CSVResultEncoder: ResultEncoder {
    private var csv = CSVWriter(neutraliseFormulas: false, lineEnding: .lf, capacity: OutputWriter.chunkBytes)
    private let columns: Int32

    init(columns names: [String]) {
        columns = Int32(names.count)
        csv.header(names)
    }

    mutating func row(_ statement: SandboxStatement) {
        for index in 0..<columns {
            switch statement.kind(index) {
            case .null: csv.null()
            case .integer: csv.integer(statement.int64(index))
            case .real: csv.real(statement.double(index))
            case .text: UTF8Validation.withRepaired(statement.bytes(index)) { csv.text(utf8: $0) }
            case .blob: csv.plain(Data(statement.bytes(index)).base64EncodedString())
            }
        }
        csv.endRecord()
    }

    mutating func finish() {}

    mutating func drain(into file: OutputWriter, atLeast threshold: Int) { file.drain(&csv.bytes, atLeast: threshold) }
}

/// Result rows as JSON objects keyed by column name, one per line (NDJSON) or in one array,
/// strings escaped by the shared `JSONString`. A BOOLEAN column's 0 and 1 are `false` and
/// `true`; non-finite reals are `null`; blobs base64 strings; invalid UTF-8 U+FFFD.
struct JSONResultEncoder: ResultEncoder {
    private var bytes: [UInt8] = []
    /// Each column's `"name":`.
    private let keys: [[UInt8]]
    private let booleans: [Bool]
    private let lines: Bool
    private var rows = 0

    init(columns names: [String], booleans: [Bool], lines: Bool) {
        keys = names.map { name in
            var key: [UInt8] = []
            JSONString.append(name, to: &key)
            key.append(UInt8(ascii: ":"))
            return key
        }
        self.booleans = booleans
        self.lines = lines
        bytes.reserveCapacity(OutputWriter.chunkBytes)
        if !lines { bytes.append(UInt8(ascii: "[")) }
    }

    mutating func row(_ statement: SandboxStatement) {
        if !lines && rows > 0 { bytes.append(UInt8(ascii: ",")) }
        bytes.append(UInt8(ascii: "{"))
        for index in keys.indices {
            if index > 0 { bytes.append(UInt8(ascii: ",")) }
            bytes.append(contentsOf: keys[index])
            value(statement, Int32(index), boolean: booleans[index])
        }
        bytes.append(UInt8(ascii: "}"))
        if lines { bytes.append(0x0A) }
        rows += 1
    }

    private mutating func value(_ statement: SandboxStatement, _ index: Int32, boolean: Bool) {
        switch statement.kind(index) {
        case .null: bytes.append(contentsOf: "null".utf8)
        case .integer:
            let value = statement.int64(index)
            if boolean && (value == 0 || value == 1) {
                bytes.append(contentsOf: (value == 1 ? "true" : "false").utf8)
            } else {
                bytes.append(contentsOf: String(value).utf8)
            }
        case .real:
            let value = statement.double(index)
            bytes.append(contentsOf: (value.isFinite ? value.description : "null").utf8)
        case .text: UTF8Validation.withRepaired(statement.bytes(index)) { JSONString.append(utf8: $0, to: &bytes) }
        case .blob: JSONString.append(Data(statement.bytes(index)).base64EncodedString(), to: &bytes)
        }
    }

    mutating func finish() {
        if !lines { bytes.append(contentsOf: "]\n".utf8) }
    }

    mutating func drain(into file: OutputWriter, atLeast threshold: Int) { file.drain(&bytes, atLeast: threshold) }
}
