/// JSON string literals (RFC 8259 §7): the one escaper behind every JSON text Cairn writes
/// (`JSONWriter`'s responses and pipeline outputs).
///
/// `"` and `\` are escaped, and so is every control character below U+0020: `\n`, `\r`, `\t`
/// in their short forms, the others as `\u00XX` with lower-case hex. Everything else, DEL and
/// non-ASCII UTF-8 included, is copied as it is, in runs rather than byte by byte.
package enum JSONString {
    /// Appends `text` as a JSON string, quotes included.
    package static func append(_ text: String, to out: inout [UInt8]) {
        var text = text
        text.withUTF8 { append(utf8: $0, to: &out) }
    }

    /// Appends UTF-8 bytes as a JSON string, quotes included. The bytes must be valid UTF-8
    /// (`UTF8Validation.withRepaired` makes them so): they are copied, not checked.
    package static func append(utf8 bytes: UnsafeBufferPointer<UInt8>, to out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        var start = 0
        for index in 0..<bytes.count {
            let byte = bytes[index]
            if byte >= 0x20 && byte != UInt8(ascii: "\"") && byte != UInt8(ascii: "\\") { continue }
            if start < index { out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[start..<index])) }
            start = index + 1
            out.append(UInt8(ascii: "\\"))
            switch byte {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"): out.append(byte)
            case 0x0A: out.append(UInt8(ascii: "n"))
            case 0x0D: out.append(UInt8(ascii: "r"))
            case 0x09: out.append(UInt8(ascii: "t"))
            default:
                out.append(contentsOf: [UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0"), hexDigit(byte >> 4), hexDigit(byte & 0xF)])
            }
        }
        if start < bytes.count { out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[start...])) }
        out.append(UInt8(ascii: "\""))
    }

    /// A lower-case hex digit of a value 0...15.
    private static func hexDigit(_ value: UInt8) -> UInt8 {
        value < 10 ? UInt8(ascii: "0") + value : UInt8(ascii: "a") + value - 10
    }
}
