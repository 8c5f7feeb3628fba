import CairnFormats
package import NIOCore

/// A minimal, allocation-light JSON writer (RFC 8259).
///
/// Foundation's `JSONEncoder` runs at about 48 MB/s on Linux; hot response types (task lists,
/// problem documents) write themselves through this instead. Bytes are gathered in an array
/// (appending a byte is cheap) and copied into one `ByteBuffer` at the end. Commas are inserted
/// automatically; callers only pair `objectStart`/`objectEnd`, `arrayStart`/`arrayEnd` and
/// precede values in objects with `key(_:)`, or write a member in one call with `field(_:_:)`.
package struct JSONWriter: Sendable {
    private var bytes: [UInt8]
    private var needsComma = false

    /// The bytes written so far.
    package var buffer: ByteBuffer { ByteBuffer(bytes: bytes) }

    /// Creates a writer with an initial capacity in bytes.
    package init(capacity: Int = 1024) {
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
    package mutating func objectStart() { open(UInt8(ascii: "{")) }

    /// Writes `}`.
    package mutating func objectEnd() { close(UInt8(ascii: "}")) }

    /// Writes `[`.
    package mutating func arrayStart() { open(UInt8(ascii: "[")) }

    /// Writes `]`.
    package mutating func arrayEnd() { close(UInt8(ascii: "]")) }

    private mutating func open(_ bracket: UInt8) {
        separator()
        bytes.append(bracket)
        needsComma = false
    }

    private mutating func close(_ bracket: UInt8) {
        bytes.append(bracket)
        needsComma = true
    }

    /// Writes an object key followed by `:`; the next value call writes its value.
    package mutating func key(_ name: StaticString) {
        separator()
        bytes.append(UInt8(ascii: "\""))
        append(name)
        bytes.append(UInt8(ascii: "\""))
        bytes.append(UInt8(ascii: ":"))
        needsComma = false
    }

    /// Writes a string value, escaped per RFC 8259 §7 (by `JSONString`).
    package mutating func string(_ value: String) {
        separator()
        JSONString.append(value, to: &bytes)
        needsComma = true
    }

    /// Writes a string value, or `null` when nil.
    package mutating func string(_ value: String?) {
        if let value { string(value) } else { null() }
    }

    /// Writes an integer value.
    package mutating func int(_ value: some BinaryInteger) {
        separator()
        bytes.append(contentsOf: String(value).utf8)
        needsComma = true
    }

    /// Writes `true` or `false`.
    package mutating func bool(_ value: Bool) {
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
    /// (`Timestamp.append`: the text of `Timestamp.format`, without building a String).
    package mutating func timestamp(milliseconds: Int64) {
        separator()
        bytes.append(UInt8(ascii: "\""))
        Timestamp.append(milliseconds: milliseconds, to: &bytes)
        bytes.append(UInt8(ascii: "\""))
        needsComma = true
    }

    /// Writes `null`.
    package mutating func null() {
        separator()
        append("null")
        needsComma = true
    }
}

// MARK: Object members: a key and its value in one call

extension JSONWriter {
    /// Writes the member `"name": "value"`.
    package mutating func field(_ name: StaticString, _ value: String) {
        key(name)
        string(value)
    }

    /// Writes the member `"name": "value"`, or `"name": null` when `value` is nil.
    package mutating func field(_ name: StaticString, _ value: String?) {
        key(name)
        string(value)
    }

    /// Writes the member `"name": value` for an integer.
    package mutating func field(_ name: StaticString, _ value: some BinaryInteger) {
        key(name)
        int(value)
    }

    /// Writes the member `"name": value` for an integer, or `"name": null` when `value` is nil.
    package mutating func field(_ name: StaticString, _ value: (some BinaryInteger)?) {
        key(name)
        if let value { int(value) } else { null() }
    }

    /// Writes the member `"name": true` or `"name": false`.
    package mutating func field(_ name: StaticString, _ value: Bool) {
        key(name)
        bool(value)
    }

    /// Writes the member `"name": ["…", …]` for a list of strings.
    package mutating func field(_ name: StaticString, strings values: [String]) {
        key(name)
        arrayStart()
        for value in values { string(value) }
        arrayEnd()
    }

    /// Writes the member `"name": "<RFC 3339 time>"` for epoch milliseconds, or `"name": null`
    /// when `milliseconds` is nil.
    package mutating func field(_ name: StaticString, timestamp milliseconds: Int64?) {
        key(name)
        if let milliseconds { timestamp(milliseconds: milliseconds) } else { null() }
    }

    /// Writes the member `"name": <text>` for JSON text that is already valid (a stored payload),
    /// or `"name": null` when `text` is nil.
    package mutating func field(_ name: StaticString, json text: String?) {
        key(name)
        if let text { rawValue(text) } else { null() }
    }
}

/// A response type that can write itself as JSON without Foundation's encoder.
package protocol JSONWritable {
    /// Writes this value as one JSON value.
    func writeJSON(to writer: inout JSONWriter)
}
