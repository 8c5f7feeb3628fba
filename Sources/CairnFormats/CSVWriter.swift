/// Writes CSV per RFC 4180: fields separated by commas, UTF-8, a field quoted (inner quotes
/// doubled) when it holds a comma, a quote, CR or LF. The one CSV writer: reports use it with
/// CRLF record ends and formula neutralising, pipeline outputs with LF and without.
///
/// Null and the empty string are both an empty field: CSV has one empty value, and a field
/// is never quoted only to tell them apart.
///
/// With `neutraliseFormulas`, a text cell starting with `=`, `+`, `-`, `@`, tab or carriage
/// return gets a leading apostrophe (inside the quotes when it is quoted), so spreadsheet
/// programs show it as text instead of running it as a formula (OWASP "CSV Injection").
/// Numbers, booleans, timestamps and `plain` values are never changed.
///
/// Bytes gather in `bytes`; callers hand them on (to a response, a file) and empty the array
/// with `removeAll(keepingCapacity: true)` between chunks.
package struct CSVWriter: Sendable {
    /// How records end.
    package enum LineEnding: Sendable {
        /// CR LF, as RFC 4180 writes it (reports).
        case crlf
        /// LF alone (pipeline outputs, as most programs write CSV).
        case lf
    }

    /// Whether formula-like text cells get a leading apostrophe.
    package var neutraliseFormulas: Bool
    /// How records end.
    package let lineEnding: LineEnding
    /// The output so far.
    package var bytes: [UInt8]
    private var fieldsInRecord = 0

    /// Creates a writer whose output array starts with `capacity` bytes (it grows as needed).
    package init(neutraliseFormulas: Bool, lineEnding: LineEnding = .crlf, capacity: Int = 64 * 1024) {
        self.neutraliseFormulas = neutraliseFormulas
        self.lineEnding = lineEnding
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    private mutating func separator() {
        if fieldsInRecord > 0 { bytes.append(UInt8(ascii: ",")) }
        fieldsInRecord += 1
    }

    /// Ends the current record.
    package mutating func endRecord() {
        if lineEnding == .crlf { bytes.append(0x0D) }
        bytes.append(0x0A)
        fieldsInRecord = 0
    }

    /// Writes a header record: each name quoted as needed, never neutralised (column names
    /// are the server's or the query's, not a cell of user data).
    package mutating func header(_ names: [String]) {
        for name in names {
            var name = name
            name.withUTF8 { field($0, neutralise: false) }
        }
        endRecord()
    }

    /// A text cell: neutralised (when on) and quoted as needed; nil is an empty field.
    package mutating func text(_ value: String?) {
        guard var value else { return null() }
        value.withUTF8 { field($0, neutralise: neutraliseFormulas) }
    }

    /// A text cell from valid UTF-8 bytes (`UTF8Validation.withRepaired` makes them so),
    /// written as `text(_:)` writes a string.
    package mutating func text(utf8: UnsafeBufferPointer<UInt8>) {
        field(utf8, neutralise: neutraliseFormulas)
    }

    /// A value the server generates (ids, codes, numbers it formatted): written as it is,
    /// never neutralised or quoted. Callers pass only text without commas, quotes or line breaks.
    package mutating func plain(_ value: String) {
        separator()
        bytes.append(contentsOf: value.utf8)
    }

    /// ``plain(_:)`` from UTF-8 bytes (a value the server generated, read in place).
    package mutating func plain(utf8: UnsafeBufferPointer<UInt8>) {
        separator()
        bytes.append(contentsOf: utf8)
    }

    /// An empty field (null).
    package mutating func null() {
        separator()
    }

    /// An integer cell.
    package mutating func integer(_ value: Int64) {
        separator()
        if value < 0 { bytes.append(UInt8(ascii: "-")) }
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 20) { digits in
            var rest = value.magnitude
            var start = 20
            repeat {
                start -= 1
                digits[start] = UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: rest % 10)
                rest /= 10
            } while rest > 0
            bytes.append(contentsOf: UnsafeBufferPointer(rebasing: digits[start...]))
        }
    }

    /// A floating-point cell in Swift's shortest round-trip form (`1.5`, `1e-05`, `100.0`);
    /// infinities and NaN as PostgreSQL and ECMAScript write them (`Infinity`, `-Infinity`,
    /// `NaN`, which Python's `float`, Swift's `Double` and JavaScript's `Number` read back): an
    /// empty field would read as NULL.
    package mutating func real(_ value: Double) {
        separator()
        if value.isFinite {
            bytes.append(contentsOf: value.description.utf8)
        } else {
            bytes.append(contentsOf: (value.isNaN ? "NaN" : value < 0 ? "-Infinity" : "Infinity").utf8)
        }
    }

    /// `true` or `false`.
    package mutating func bool(_ value: Bool) {
        separator()
        bytes.append(contentsOf: value ? "true".utf8 : "false".utf8)
    }

    /// An RFC 3339 UTC timestamp with milliseconds, e.g. `2026-01-31T09:05:00.123Z`.
    package mutating func timestamp(milliseconds: Int64) {
        separator()
        Timestamp.append(milliseconds: milliseconds, to: &bytes)
    }

    /// Writes one text field: the apostrophe of a neutralised formula, then the bytes, in
    /// quotes with inner quotes doubled when they hold a comma, quote, CR or LF.
    private mutating func field(_ text: UnsafeBufferPointer<UInt8>, neutralise: Bool) {
        separator()
        guard let first = text.first else { return }
        let formula =
            neutralise
            && (first == UInt8(ascii: "=") || first == UInt8(ascii: "+") || first == UInt8(ascii: "-") || first == UInt8(ascii: "@")
                || first == 0x09 || first == 0x0D)
        let needsQuotes = text.contains { $0 == UInt8(ascii: ",") || $0 == UInt8(ascii: "\"") || $0 == 0x0D || $0 == 0x0A }
        if needsQuotes { bytes.append(UInt8(ascii: "\"")) }
        if formula { bytes.append(UInt8(ascii: "'")) }
        guard needsQuotes else {
            bytes.append(contentsOf: text)
            return
        }
        var start = 0
        for index in 0..<text.count where text[index] == UInt8(ascii: "\"") {
            // The run up to and including the quote, then the quote again.
            bytes.append(contentsOf: UnsafeBufferPointer(rebasing: text[start...index]))
            bytes.append(UInt8(ascii: "\""))
            start = index + 1
        }
        if start < text.count { bytes.append(contentsOf: UnsafeBufferPointer(rebasing: text[start...])) }
        bytes.append(UInt8(ascii: "\""))
    }
}
