import CairnFormats
public import NIOCore

/// A minimal, allocation-light JSON writer (RFC 8259).
///
/// Foundation's `JSONEncoder` runs at about 48 MB/s on Linux; hot response types (task lists,
/// problem documents) write themselves through this instead. Bytes are gathered in an array
/// (appending a byte is cheap) and copied into one `ByteBuffer` at the end. Commas are inserted
/// automatically; callers only pair `objectStart`/`objectEnd`, `arrayStart`/`arrayEnd` and
/// precede values in objects with `key(_:)`.
public struct JSONWriter: Sendable {
    private var bytes: [UInt8]
    private var needsComma = false

    /// The bytes written so far.
    public var buffer: ByteBuffer { ByteBuffer(bytes: bytes) }

    /// Creates a writer with an initial capacity in bytes.
    public init(capacity: Int = 1024) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    private mutating func separator() {
        if needsComma { bytes.append(UInt8(ascii: ",")) }
    }

    private mutating func append(_ text: StaticString) {
        text.withUTF8Buffer { bytes.append(contentsOf: $0) }
    }

    /// Writes `{`.
    public mutating func objectStart() {
        separator()
        bytes.append(UInt8(ascii: "{"))
        needsComma = false
    }

    /// Writes `}`.
    public mutating func objectEnd() {
        bytes.append(UInt8(ascii: "}"))
        needsComma = true
    }

    /// Writes `[`.
    public mutating func arrayStart() {
        separator()
        bytes.append(UInt8(ascii: "["))
        needsComma = false
    }

    /// Writes `]`.
    public mutating func arrayEnd() {
        bytes.append(UInt8(ascii: "]"))
        needsComma = true
    }

    /// Writes an object key followed by `:`; the next value call writes its value.
    public mutating func key(_ name: StaticString) {
        separator()
        bytes.append(UInt8(ascii: "\""))
        append(name)
        bytes.append(UInt8(ascii: "\""))
        bytes.append(UInt8(ascii: ":"))
        needsComma = false
    }

    /// Writes a string value, escaped per RFC 8259 §7.
    public mutating func string(_ value: String) {
        separator()
        bytes.append(UInt8(ascii: "\""))
        let hex: StaticString = "0123456789abcdef"
        for byte in value.utf8 {
            if byte >= 0x20 && byte != UInt8(ascii: "\"") && byte != UInt8(ascii: "\\") {
                bytes.append(byte)
                continue
            }
            switch byte {
            case UInt8(ascii: "\""): append("\\\"")
            case UInt8(ascii: "\\"): append("\\\\")
            case 0x0A: append("\\n")
            case 0x0D: append("\\r")
            case 0x09: append("\\t")
            default:
                append("\\u00")
                hex.withUTF8Buffer { digits in
                    bytes.append(digits[Int(byte >> 4)])
                    bytes.append(digits[Int(byte & 0xF)])
                }
            }
        }
        bytes.append(UInt8(ascii: "\""))
        needsComma = true
    }

    /// Writes a string value, or `null` when nil.
    public mutating func string(_ value: String?) {
        if let value { string(value) } else { null() }
    }

    /// Writes an integer value.
    public mutating func int(_ value: some BinaryInteger) {
        separator()
        bytes.append(contentsOf: String(value).utf8)
        needsComma = true
    }

    /// Writes `true` or `false`.
    public mutating func bool(_ value: Bool) {
        separator()
        append(value ? "true" : "false")
        needsComma = true
    }

    /// Writes pre-validated JSON text as one value (callers guarantee it is valid JSON).
    mutating func rawValue(_ text: String) {
        separator()
        bytes.append(contentsOf: text.utf8)
        needsComma = true
    }

    /// Writes epoch milliseconds as an RFC 3339 UTC string with milliseconds, digit by digit
    /// (the same text as `Timestamp.format`, without building a String).
    public mutating func timestamp(milliseconds: Int64) {
        separator()
        let (year, month, day, hour, minute, second, millisecond) = Timestamp.components(milliseconds: milliseconds)
        bytes.append(UInt8(ascii: "\""))
        digits(year, 4)
        bytes.append(UInt8(ascii: "-"))
        digits(month, 2)
        bytes.append(UInt8(ascii: "-"))
        digits(day, 2)
        bytes.append(UInt8(ascii: "T"))
        digits(hour, 2)
        bytes.append(UInt8(ascii: ":"))
        digits(minute, 2)
        bytes.append(UInt8(ascii: ":"))
        digits(second, 2)
        bytes.append(UInt8(ascii: "."))
        digits(millisecond, 3)
        append("Z\"")
        needsComma = true
    }

    /// Writes `value` zero-padded to `width` digits (plain decimal when it does not fit).
    private mutating func digits(_ value: Int, _ width: Int) {
        var limit = 1
        for _ in 0..<width { limit *= 10 }
        guard value >= 0, value < limit else {
            bytes.append(contentsOf: String(value).utf8)
            return
        }
        var divisor = limit / 10
        var remainder = value
        while divisor > 0 {
            bytes.append(UInt8(ascii: "0") + UInt8(remainder / divisor))
            remainder %= divisor
            divisor /= 10
        }
    }

    /// Writes `null`.
    public mutating func null() {
        separator()
        append("null")
        needsComma = true
    }
}

/// A response type that can write itself as JSON without Foundation's encoder.
public protocol JSONWritable {
    /// Writes this value as one JSON value.
    func writeJSON(to writer: inout JSONWriter)
}
