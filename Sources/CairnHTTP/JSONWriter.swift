public import NIOCore

/// A minimal, allocation-light JSON writer into a `ByteBuffer` (RFC 8259).
///
/// Foundation's `JSONEncoder` runs at about 48 MB/s on Linux; hot response types (task lists,
/// problem documents) write themselves through this instead. Commas are inserted automatically;
/// callers only pair `objectStart`/`objectEnd`, `arrayStart`/`arrayEnd` and precede values in
/// objects with `key(_:)`.
public struct JSONWriter: Sendable {
    /// The bytes written so far.
    public private(set) var buffer: ByteBuffer
    private var needsComma = false

    /// Creates a writer with an initial capacity in bytes.
    public init(capacity: Int = 256) {
        self.buffer = ByteBufferAllocator().buffer(capacity: capacity)
    }

    private mutating func separator() {
        if needsComma { buffer.writeInteger(UInt8(ascii: ",")) }
    }

    /// Writes `{`.
    public mutating func objectStart() {
        separator()
        buffer.writeInteger(UInt8(ascii: "{"))
        needsComma = false
    }

    /// Writes `}`.
    public mutating func objectEnd() {
        buffer.writeInteger(UInt8(ascii: "}"))
        needsComma = true
    }

    /// Writes `[`.
    public mutating func arrayStart() {
        separator()
        buffer.writeInteger(UInt8(ascii: "["))
        needsComma = false
    }

    /// Writes `]`.
    public mutating func arrayEnd() {
        buffer.writeInteger(UInt8(ascii: "]"))
        needsComma = true
    }

    /// Writes an object key followed by `:`; the next value call writes its value.
    public mutating func key(_ name: StaticString) {
        separator()
        buffer.writeInteger(UInt8(ascii: "\""))
        name.withUTF8Buffer { _ = buffer.writeBytes($0) }
        buffer.writeInteger(UInt8(ascii: "\""))
        buffer.writeInteger(UInt8(ascii: ":"))
        needsComma = false
    }

    /// Writes a string value, escaped per RFC 8259 §7.
    public mutating func string(_ value: String) {
        separator()
        buffer.writeInteger(UInt8(ascii: "\""))
        var value = value
        value.withUTF8 { bytes in
            var runStart = 0
            for index in 0..<bytes.count {
                let byte = bytes[index]
                if byte >= 0x20 && byte != UInt8(ascii: "\"") && byte != UInt8(ascii: "\\") { continue }
                if runStart < index {
                    buffer.writeBytes(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(bytes)[runStart..<index]))
                }
                runStart = index + 1
                switch byte {
                case UInt8(ascii: "\""): buffer.writeStaticString("\\\"")
                case UInt8(ascii: "\\"): buffer.writeStaticString("\\\\")
                case 0x0A: buffer.writeStaticString("\\n")
                case 0x0D: buffer.writeStaticString("\\r")
                case 0x09: buffer.writeStaticString("\\t")
                default:
                    let hex: [UInt8] = Array("0123456789abcdef".utf8)
                    buffer.writeStaticString("\\u00")
                    buffer.writeInteger(hex[Int(byte >> 4)])
                    buffer.writeInteger(hex[Int(byte & 0xF)])
                }
            }
            if runStart < bytes.count {
                buffer.writeBytes(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(bytes)[runStart...]))
            }
        }
        buffer.writeInteger(UInt8(ascii: "\""))
        needsComma = true
    }

    /// Writes a string value, or `null` when nil.
    public mutating func string(_ value: String?) {
        if let value { string(value) } else { null() }
    }

    /// Writes an integer value.
    public mutating func int(_ value: some BinaryInteger) {
        separator()
        buffer.writeString(String(value))
        needsComma = true
    }

    /// Writes `true` or `false`.
    public mutating func bool(_ value: Bool) {
        separator()
        buffer.writeStaticString(value ? "true" : "false")
        needsComma = true
    }

    /// Writes pre-validated JSON text as one value (callers guarantee it is valid JSON).
    mutating func rawValue(_ text: String) {
        separator()
        buffer.writeString(text)
        needsComma = true
    }

    /// Writes epoch milliseconds as an RFC 3339 UTC string with milliseconds, digit by digit
    /// (the same text as `Timestamp.format`, without building a String).
    public mutating func timestamp(milliseconds: Int64) {
        separator()
        let (year, month, day, hour, minute, second, millisecond) = Timestamp.components(milliseconds: milliseconds)
        buffer.writeInteger(UInt8(ascii: "\""))
        digits(year, 4)
        buffer.writeInteger(UInt8(ascii: "-"))
        digits(month, 2)
        buffer.writeInteger(UInt8(ascii: "-"))
        digits(day, 2)
        buffer.writeInteger(UInt8(ascii: "T"))
        digits(hour, 2)
        buffer.writeInteger(UInt8(ascii: ":"))
        digits(minute, 2)
        buffer.writeInteger(UInt8(ascii: ":"))
        digits(second, 2)
        buffer.writeInteger(UInt8(ascii: "."))
        digits(millisecond, 3)
        buffer.writeStaticString("Z\"")
        needsComma = true
    }

    /// Writes `value` zero-padded to `width` digits (plain decimal when it does not fit).
    private mutating func digits(_ value: Int, _ width: Int) {
        var limit = 1
        for _ in 0..<width { limit *= 10 }
        guard value >= 0, value < limit else {
            buffer.writeString(String(value))
            return
        }
        var divisor = limit / 10
        var remainder = value
        while divisor > 0 {
            buffer.writeInteger(UInt8(ascii: "0") + UInt8(remainder / divisor))
            remainder %= divisor
            divisor /= 10
        }
    }

    /// Writes `null`.
    public mutating func null() {
        separator()
        buffer.writeStaticString("null")
        needsComma = true
    }
}

/// A response type that can write itself as JSON without Foundation's encoder.
public protocol JSONWritable {
    /// Writes this value as one JSON value.
    func writeJSON(to writer: inout JSONWriter)
}
