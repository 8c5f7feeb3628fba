import NIOCore

/// Finds every part's header block in a `multipart/form-data` stream and rejects a header name
/// holding a byte ≥ 0x80 before the parser sees it.
///
/// Why: multipart-kit 4.7.1 looks each header-name byte up in a 128-entry table, so such a byte
/// traps and takes the node down (found by schemathesis). Header names are RFC 5322 §2.2 field
/// names, printable US-ASCII, so refusing them loses nothing.
///
/// A header block begins after `--boundary` CRLF (RFC 2046 §5.1.1; the parser accepts the first
/// one anywhere in the preamble, later ones after CRLF) and ends at an empty line. The guard
/// looks for `--boundary` CRLF anywhere, a superset of what the parser accepts, so every block the
/// parser reads is checked. The search carries its last bytes over, so a delimiter split across
/// chunks is found.
struct MultipartHeaderGuard {
    /// `--boundary` CRLF.
    let opener: [UInt8]
    /// The last bytes of the stream, fewer than `opener`'s, for a delimiter split across chunks.
    private var carry: [UInt8] = []
    /// Inside a header block.
    private var inHeaders = false
    /// Inside a header line, before its colon.
    private var inName = true
    /// Bytes of the current header line so far.
    private var lineLength = 0
    /// The last byte was the CR ending a header line; the LF the parser expects next is skipped.
    private var afterCR = false

    /// - Parameter boundary: the form's boundary, already checked against RFC 2046's `bchars`.
    init(boundary: String) {
        opener = Array("--\(boundary)\r\n".utf8)
    }

    /// Checks the next chunk of the stream.
    /// - Returns: false when a header name holds a byte ≥ 0x80; the stream is then bad for good.
    mutating func accepts(_ chunk: ByteBuffer) -> Bool {
        var window = carry
        window.append(contentsOf: chunk.readableBytesView)
        // Bytes in the carry were checked in an earlier call: headers are read from past them, and
        // the search starts in them only for a delimiter that ends in the new bytes.
        var index = carry.count
        var searchFrom = 0
        var ok = true
        window.withUnsafeBytes { bytes in
            while index < bytes.count {
                if inHeaders {
                    index = scanHeaders(bytes, from: index, ok: &ok)
                    if !ok { return }
                    searchFrom = index
                } else if let end = openerEnd(bytes, from: searchFrom) {
                    inHeaders = true
                    inName = true
                    lineLength = 0
                    afterCR = false
                    index = end
                } else {
                    index = bytes.count
                }
            }
        }
        carry = Array(window.suffix(opener.count - 1))
        return ok
    }

    /// Reads header lines from `index` until the block ends or the bytes do. Lines end as the
    /// parser ends them: at CR (its LF follows); a bare LF is a value byte to the parser (or a
    /// syntax error in a name), so it must not start a new name here either.
    private mutating func scanHeaders(_ bytes: UnsafeRawBufferPointer, from index: Int, ok: inout Bool) -> Int {
        var index = index
        while index < bytes.count {
            let byte = bytes[index]
            index += 1
            if afterCR {
                afterCR = false
                if byte == 0x0A { continue }
            }
            switch byte {
            case 0x0D:
                // A CR at the start of a line ends the block (RFC 5322 §2.1's empty line).
                if inName && lineLength == 0 {
                    inHeaders = false
                    return index
                }
                inName = true
                lineLength = 0
                afterCR = true
                continue
            case 0x3A where lineLength > 0:
                inName = false
            case 0x80... where inName:
                ok = false
                return index
            default:
                break
            }
            lineLength += 1
        }
        return index
    }

    /// The index just past the first `--boundary` CRLF that starts at or after `start`.
    private func openerEnd(_ bytes: UnsafeRawBufferPointer, from start: Int) -> Int? {
        let first = opener[0]
        var index = start
        while index + opener.count <= bytes.count {
            if bytes[index] == first {
                var matched = 1
                while matched < opener.count && bytes[index + matched] == opener[matched] { matched += 1 }
                if matched == opener.count { return index + opener.count }
            }
            index += 1
        }
        return nil
    }
}
