import CairnFormats
import CairnHTTP
public import NIOCore

/// Writes CSV per RFC 4180 into a `ByteBuffer`: fields separated by commas, records ended by
/// CRLF, UTF-8, a field quoted (with inner quotes doubled) when it holds a comma, a quote, CR
/// or LF.
///
/// With `neutralise` (the default for reports), a text cell starting with `=`, `+`, `-`, `@`,
/// tab or carriage return gets a leading apostrophe, so spreadsheet programs show it as text
/// instead of running it as a formula (OWASP "CSV Injection").
public struct CSVEncoder: Sendable {
    /// Whether formula-like text cells are neutralised.
    public var neutralise: Bool
    /// The output so far.
    public var buffer: ByteBuffer
    private var fieldsInRecord = 0

    /// Creates an encoder writing into a buffer of `capacity` bytes (it grows as needed).
    public init(neutralise: Bool, capacity: Int = 64 * 1024) {
        self.neutralise = neutralise
        self.buffer = ByteBufferAllocator().buffer(capacity: capacity)
    }

    private mutating func separator() {
        if fieldsInRecord > 0 { buffer.writeInteger(UInt8(ascii: ",")) }
        fieldsInRecord += 1
    }

    /// Ends the current record with CRLF.
    public mutating func endRecord() {
        buffer.writeInteger(UInt16(0x0D0A))
        fieldsInRecord = 0
    }

    /// Writes a record of fixed header names.
    public mutating func header(_ names: [StaticString]) {
        for name in names {
            separator()
            name.withUTF8Buffer { _ = buffer.writeBytes($0) }
        }
        endRecord()
    }

    /// A user-supplied text cell: neutralised (when on) and quoted as needed; nil is empty.
    public mutating func text(_ value: String?) {
        separator()
        guard var value else { return }
        value.withUTF8 { bytes in
            guard let first = bytes.first else { return }
            let risky =
                neutralise
                && (first == UInt8(ascii: "=") || first == UInt8(ascii: "+") || first == UInt8(ascii: "-") || first == UInt8(ascii: "@")
                    || first == 0x09 || first == 0x0D)
            var needsQuotes = false
            for byte in bytes where byte == UInt8(ascii: ",") || byte == UInt8(ascii: "\"") || byte == 0x0D || byte == 0x0A {
                needsQuotes = true
                break
            }
            if !needsQuotes {
                if risky { buffer.writeInteger(UInt8(ascii: "'")) }
                buffer.writeBytes(bytes)
                return
            }
            buffer.writeInteger(UInt8(ascii: "\""))
            if risky { buffer.writeInteger(UInt8(ascii: "'")) }
            var start = 0
            for index in 0..<bytes.count where bytes[index] == UInt8(ascii: "\"") {
                buffer.writeBytes(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(bytes)[start...index]))
                buffer.writeInteger(UInt8(ascii: "\""))
                start = index + 1
            }
            if start < bytes.count { buffer.writeBytes(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(bytes)[start...])) }
            buffer.writeInteger(UInt8(ascii: "\""))
        }
    }

    /// A value the server generates (ids, codes): written as is, never neutralised or quoted.
    /// Callers pass only text without commas, quotes or line breaks.
    public mutating func plain(_ value: String) {
        separator()
        buffer.writeString(value)
    }

    /// An integer cell.
    public mutating func integer(_ value: Int64) {
        separator()
        if value < 0 {
            buffer.writeInteger(UInt8(ascii: "-"))
            writeDigits(value.magnitude)
        } else {
            writeDigits(UInt64(value))
        }
    }

    /// `true` or `false`.
    public mutating func bool(_ value: Bool) {
        separator()
        buffer.writeStaticString(value ? "true" : "false")
    }

    /// An RFC 3339 UTC timestamp with milliseconds, e.g. `2026-01-31T09:05:00.123Z`.
    public mutating func timestamp(milliseconds: Int64) {
        separator()
        let (year, month, day, hour, minute, second, millisecond) = Timestamp.components(milliseconds: milliseconds)
        // Formatted on the stack and written once: per-byte buffer writes cost more than the digits.
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 24) { text in
            func put(_ value: Int, width: Int, at offset: Int) {
                var rest = max(0, value)
                for index in stride(from: offset + width - 1, through: offset, by: -1) {
                    text[index] = UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: rest % 10)
                    rest /= 10
                }
            }
            put(year, width: 4, at: 0)
            text[4] = UInt8(ascii: "-")
            put(month, width: 2, at: 5)
            text[7] = UInt8(ascii: "-")
            put(day, width: 2, at: 8)
            text[10] = UInt8(ascii: "T")
            put(hour, width: 2, at: 11)
            text[13] = UInt8(ascii: ":")
            put(minute, width: 2, at: 14)
            text[16] = UInt8(ascii: ":")
            put(second, width: 2, at: 17)
            text[19] = UInt8(ascii: ".")
            put(millisecond, width: 3, at: 20)
            text[23] = UInt8(ascii: "Z")
            buffer.writeBytes(UnsafeRawBufferPointer(text))
        }
    }

    private mutating func writeDigits(_ value: UInt64) {
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 20) { digits in
            var rest = value
            var start = 20
            repeat {
                start -= 1
                digits[start] = UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: rest % 10)
                rest /= 10
            } while rest > 0
            buffer.writeBytes(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(digits)[start...]))
        }
    }
}
