import CairnFormats
import CairnSandbox
import Crypto
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A buffered, hashed, size-bounded file writer for pipeline outputs (RFC 4180 CSV and JSON).
final class OutputWriter {
    private let descriptor: Int32
    private var buffer: [UInt8] = []
    private var hasher = SHA256()
    private var written: Int64 = 0
    private let maxBytes: Int64
    private(set) var failed = false

    init(path: String, maxBytes: Int64) throws {
        descriptor = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw SandboxError(.io, "the output file could not be created") }
        self.maxBytes = maxBytes
        buffer.reserveCapacity(1 << 20)
    }

    deinit { if descriptor >= 0 { Glibc.close(descriptor) } }

    @inline(__always) func byte(_ value: UInt8) { buffer.append(value) }

    func bytes(_ values: [UInt8]) {
        buffer.append(contentsOf: values)
        if buffer.count >= 1 << 20 { flush() }
    }

    private func flush() {
        guard !buffer.isEmpty, !failed else { return }
        written += Int64(buffer.count)
        if written > maxBytes {
            failed = true
            return
        }
        buffer.withUnsafeBytes { raw in
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
        buffer.removeAll(keepingCapacity: true)
    }

    /// Flushes, syncs and closes; returns the size and lower-case hex SHA-256.
    /// - Throws: `PipelineFailure` past the size limit, `SandboxError` (`io`) on a write error.
    func close() throws -> (Int64, String) {
        flush()
        if written > maxBytes { throw PipelineFailure(message: "the output exceeds the \(maxBytes)-byte file limit") }
        if failed || fsync(descriptor) != 0 { throw SandboxError(.io, "writing the output file failed") }
        let digest = hasher.finalize().map { String(format: "%02x", $0) }.joined()
        return (written, digest)
    }

    // MARK: Values

    func csvValue(_ statement: SandboxStatement, _ index: Int32) {
        switch statement.kind(index) {
        case .null: break
        case .integer: buffer.append(contentsOf: String(statement.int64(index)).utf8)
        case .real:
            let value = statement.double(index)
            if value.isFinite { buffer.append(contentsOf: "\(value)".utf8) }
        case .text: csvText(Self.validUTF8(statement.bytes(index)))
        case .blob: buffer.append(contentsOf: Data(statement.bytes(index)).base64EncodedString().utf8)
        }
        if buffer.count >= 1 << 20 { flush() }
    }

    /// A field, quoted when it holds a comma, quote or line break (RFC 4180 §2).
    func csvText(_ text: some Collection<UInt8>) {
        let needsQuotes = text.contains { $0 == UInt8(ascii: ",") || $0 == UInt8(ascii: "\"") || $0 == 0x0A || $0 == 0x0D }
        guard needsQuotes else {
            buffer.append(contentsOf: text)
            return
        }
        buffer.append(UInt8(ascii: "\""))
        for byte in text {
            if byte == UInt8(ascii: "\"") { buffer.append(byte) }
            buffer.append(byte)
        }
        buffer.append(UInt8(ascii: "\""))
    }

    func jsonValue(_ statement: SandboxStatement, _ index: Int32, boolean: Bool) {
        switch statement.kind(index) {
        case .null: buffer.append(contentsOf: "null".utf8)
        case .integer:
            let value = statement.int64(index)
            if boolean && (value == 0 || value == 1) {
                buffer.append(contentsOf: (value == 1 ? "true" : "false").utf8)
            } else {
                buffer.append(contentsOf: String(value).utf8)
            }
        case .real:
            let value = statement.double(index)
            buffer.append(contentsOf: (value.isFinite ? "\(value)" : "null").utf8)
        case .text: buffer.append(contentsOf: Self.jsonString(Self.validUTF8(statement.bytes(index))))
        case .blob: buffer.append(contentsOf: Self.jsonString(Array(Data(statement.bytes(index)).base64EncodedString().utf8)))
        }
        if buffer.count >= 1 << 20 { flush() }
    }

    /// A JSON string (RFC 8259 §7).
    static func jsonString(_ text: some Collection<UInt8>) -> [UInt8] {
        var out: [UInt8] = [UInt8(ascii: "\"")]
        out.reserveCapacity(text.count + 2)
        let hex = Array("0123456789abcdef".utf8)
        for byte in text {
            switch byte {
            case UInt8(ascii: "\""): out += [UInt8(ascii: "\\"), UInt8(ascii: "\"")]
            case UInt8(ascii: "\\"): out += [UInt8(ascii: "\\"), UInt8(ascii: "\\")]
            case 0x0A: out += [UInt8(ascii: "\\"), UInt8(ascii: "n")]
            case 0x0D: out += [UInt8(ascii: "\\"), UInt8(ascii: "r")]
            case 0x09: out += [UInt8(ascii: "\\"), UInt8(ascii: "t")]
            case 0..<0x20: out += [UInt8(ascii: "\\"), UInt8(ascii: "u"), 0x30, 0x30, hex[Int(byte >> 4)], hex[Int(byte & 0xF)]]
            default: out.append(byte)
            }
        }
        out.append(UInt8(ascii: "\""))
        return out
    }

    /// SQL can make text that is not UTF-8 (`CAST(x'ff' AS TEXT)`); outputs carry U+FFFD then.
    static func validUTF8(_ bytes: UnsafeRawBufferPointer) -> [UInt8] {
        if !bytes.contains(where: { $0 >= 0x80 }) || String(validating: bytes, as: UTF8.self) != nil { return Array(bytes) }
        return Array(String(decoding: bytes, as: UTF8.self).utf8)
    }
}
