package import Foundation

#if canImport(FoundationXML)
    import FoundationXML
#endif

/// How much one XML record may hold (the pipeline's limits; exceeding one is `tooLarge`).
package struct XMLLimits: Sendable, Equatable {
    /// The largest record, in UTF-8 bytes of its field names and values (default 16 MiB).
    package var maxRecordBytes = 16 << 20
    /// The longest text of one element, in UTF-8 bytes (default 8 MiB), counted as it arrives,
    /// whether or not it becomes a field.
    package var maxTextBytes = 8 << 20
    /// The most fields one record may have (default 10,000).
    package var maxFields = 10_000

    /// Creates the defaults.
    package init() {}
}

/// Reads records from XML: each element at `recordPath` (e.g. `/iso_3166_entries/iso_3166_entry`)
/// is one record; its attributes and the text of its child elements become fields (a child's
/// attributes as `child.attribute`), in document order.
///
/// Streams through FoundationXML's `XMLParser` (libxml2's push parser) from a file, so memory
/// stays flat. Safety: before libxml2 sees a byte, the prolog is scanned: an internal DTD
/// subset is tolerated, but an ENTITY declaration or a reference to an external DTD fails with
/// `forbidden`, so billion-laughs and XXE files are refused before anything is expanded or read
/// (FoundationXML on Linux does not report entity declarations to its delegate, so they cannot
/// be caught later). External entities are also switched off in the parser. The DOCTYPE itself
/// is blanked out before parsing (FoundationXML on Linux crashes on some internal subsets, such
/// as the ATTLISTs of Debian's iso-codes files), so DTD attribute defaults do not apply.
package final class XMLRecordReader {
    /// Records delivered so far.
    package private(set) var row = 0

    private let makeStream: () -> InputStream?
    private let path: [String]
    private let limits: XMLLimits

    /// A reader over a file.
    /// - Throws: `IngestError` (`malformed`) when `recordPath` is not `/a/b…`.
    package convenience init(path file: String, recordPath: String, limits: XMLLimits = XMLLimits()) throws {
        try self.init(recordPath: recordPath, limits: limits) { InputStream(fileAtPath: file) }
    }

    /// A reader over bytes in memory (tests).
    package convenience init(data: Data, recordPath: String, limits: XMLLimits = XMLLimits()) throws {
        try self.init(recordPath: recordPath, limits: limits) { InputStream(data: data) }
    }

    private init(recordPath: String, limits: XMLLimits, makeStream: @escaping () -> InputStream?) throws {
        self.limits = limits
        let parts = recordPath.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard parts.count >= 2, parts[0].isEmpty, parts.dropFirst().allSatisfy({ !$0.isEmpty }) else {
            throw IngestError(.malformed, "recordPath must look like /root/record, got '\(recordPath)'")
        }
        self.path = Array(parts.dropFirst())
        self.makeStream = makeStream
    }

    /// Parses the whole input, calling `body` with each record's fields in document order.
    /// - Throws: `IngestError` (`malformed` with the line, `forbidden` for entity declarations,
    ///   `tooLarge` past a limit of `XMLLimits`, `io`), or whatever `body` throws (the parse
    ///   stops at once).
    package func forEachRecord(_ body: ([(name: String, value: FieldValue)]) throws -> Void) throws {
        guard let prolog = makeStream() else { throw IngestError(.io, "cannot open the file") }
        let (doctype, utf8) = try Self.checkProlog(prolog)
        guard let stream = makeStream() else { throw IngestError(.io, "cannot open the file") }
        let inner = doctype.map { BlankingInputStream(stream, blanking: $0) } ?? stream
        // libxml2 transcodes a document declared in another encoding; a UTF-8 one is passed on
        // as it is, so it is checked first, and control characters in any (see `XMLCharGuardStream`).
        let guarded = XMLCharGuardStream(inner, utf8: utf8)
        let parser = XMLParser(stream: guarded)
        parser.shouldResolveExternalEntities = false
        parser.shouldProcessNamespaces = false
        // The delegate holds `body` only while `parse()` runs.
        let (ok, records, failure) = withoutActuallyEscaping(body) { body in
            let delegate = Delegate(path: path, limits: limits, body: body)
            parser.delegate = delegate
            let ok = parser.parse()
            parser.delegate = nil
            return (ok, delegate.records, delegate.failure)
        }
        row = records
        if let offset = guarded.invalidAt {
            let what =
                guarded.emptyInstruction
                ? "a processing instruction without data (<?name?>), which the XML parser cannot read; give it data or remove it"
                : "a byte that is not an XML character (not UTF-8, or a control character; XML 1.0 §2.2)"
            throw IngestError(.malformed, "the XML holds \(what), at byte \(offset)", row: records + 1)
        }
        if let failure { throw failure }
        if !ok {
            let reason = parser.parserError.map { "\($0.localizedDescription)" } ?? "not well-formed"
            throw IngestError(.malformed, "the XML is not well-formed at line \(parser.lineNumber), column \(parser.columnNumber): \(reason)")
        }
    }

    /// Reads the prolog (up to the root element, at most 4 MiB) and refuses ENTITY
    /// declarations and external DTDs. Comments and processing instructions are skipped.
    /// - Returns: the byte range of the DOCTYPE declaration, if there is one, and whether the
    ///   document is UTF-8 (no XML declaration, or one without `encoding` or naming UTF-8).
    static func checkProlog(_ stream: InputStream) throws -> (doctype: Range<Int>?, utf8: Bool) {
        stream.open()
        defer { stream.close() }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 << 10)
        var i = 0
        func need(_ count: Int) -> Bool {
            while bytes.count < i + count {
                guard bytes.count < 4 << 20 else { return false }
                let read = stream.read(&chunk, maxLength: chunk.count)
                if read <= 0 { return false }
                bytes += chunk[0..<read]
            }
            return true
        }
        func starts(_ text: String) -> Bool {
            let pattern = Array(text.utf8)
            return need(pattern.count) && Array(bytes[i..<(i + pattern.count)]) == pattern
        }
        func skip(past text: String) throws {
            while !starts(text) {
                guard need(1) else { throw IngestError(.malformed, "the XML prolog is cut short or too long") }
                i += 1
            }
            i += text.utf8.count
        }
        if starts("\u{FEFF}") { i += 3 }
        var utf8 = true
        if starts("<?xml ") {
            let start = i
            try skip(past: "?>")
            utf8 = Self.declaresUTF8(bytes[start..<i])
        }
        var doctype: Range<Int>?
        var doctypeStart = 0
        while need(1) {
            let byte = bytes[i]
            if byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D {
                i += 1
            } else if starts("<?") {
                try skip(past: "?>")
            } else if starts("<!--") {
                try skip(past: "-->")
            } else if starts("<!DOCTYPE") {
                // One at most (XML 1.0 §2.8): only one is blanked out before the parser reads.
                guard doctype == nil else { throw IngestError(.malformed, "the XML has more than one DOCTYPE") }
                doctypeStart = i
                i += 9
                var inQuote: UInt8?
                var subset = false
                while true {
                    guard need(1) else { throw IngestError(.malformed, "the DOCTYPE is never closed") }
                    let c = bytes[i]
                    if let quote = inQuote {
                        if c == quote { inQuote = nil }
                    } else if c == 0x22 || c == 0x27 {
                        inQuote = c
                    } else if !subset && (starts("SYSTEM") || starts("PUBLIC")) {
                        throw IngestError(.forbidden, "the XML refers to an external DTD; external entities are refused")
                    } else if c == UInt8(ascii: "[") {
                        subset = true
                    } else if subset && starts("<!ENTITY") {
                        throw IngestError(.forbidden, "the XML declares an entity; entity declarations are refused")
                    } else if subset && starts("<!--") {
                        try skip(past: "-->")
                        continue
                    } else if c == UInt8(ascii: "]") {
                        subset = false
                    } else if c == UInt8(ascii: ">") && !subset {
                        i += 1
                        doctype = doctypeStart..<i
                        break
                    }
                    i += 1
                }
            } else {
                return (doctype, utf8)  // the root element: the prolog is clean
            }
        }
        return (doctype, utf8)
    }

    /// Whether the document is read as UTF-8 and so must be checked as UTF-8: unless its XML
    /// declaration (`<?xml … ?>`) names one of the single-byte encodings libxml2 transcodes
    /// (ISO-8859-n, Windows-125n; XML 1.0 §4.3.3), it is. A name that is malformed, unknown or
    /// multi-byte (Shift_JIS…) counts as UTF-8: libxml2 may pass such bytes on untranscoded.
    static func declaresUTF8(_ declaration: ArraySlice<UInt8>) -> Bool {
        let text = String(decoding: declaration, as: UTF8.self)
        guard let range = text.range(of: "encoding") else { return true }
        let rest = text[range.upperBound...].drop { $0 == " " || $0 == "=" || $0 == "\t" }
        guard let quote = rest.first, quote == "\"" || quote == "'" else { return true }
        let name = rest.dropFirst().prefix { $0 != quote }.lowercased()
        let singleByte = (1...16).map { "iso-8859-\($0)" } + (0...8).map { "windows-125\($0)" } + ["latin1", "us-ascii"]
        return !singleByte.contains(name)
    }

    private final class Delegate: NSObject, XMLParserDelegate {
        let path: [String]
        let limits: XMLLimits
        let body: ([(name: String, value: FieldValue)]) throws -> Void
        var stack: [String] = []
        var record: [(name: String, value: FieldValue)]?
        var index: [String: Int] = [:]
        var text = ""
        /// UTF-8 bytes of `text`.
        var textBytes = 0
        /// UTF-8 bytes of the current record's field names and values.
        var recordBytes = 0
        var records = 0
        var failure: (any Error)?

        init(path: [String], limits: XMLLimits, body: @escaping ([(name: String, value: FieldValue)]) throws -> Void) {
            self.path = path
            self.limits = limits
            self.body = body
        }

        /// Stops the parse with `tooLarge` (the first failure wins).
        func refuse(_ parser: XMLParser, _ message: String) {
            if failure == nil { failure = IngestError(.tooLarge, message + " (record \(records + 1), line \(parser.lineNumber))", row: records + 1) }
            record = nil
            text = ""
            parser.abortParsing()
        }

        /// Sets a field of the current record (a repeat keeps the last value), within the limits.
        func set(_ name: String, _ value: String, _ parser: XMLParser) {
            guard record != nil else { return }
            recordBytes += name.utf8.count + value.utf8.count
            if recordBytes > limits.maxRecordBytes {
                refuse(parser, "a record is larger than \(limits.maxRecordBytes) bytes")
                return
            }
            if let existing = index[name] {
                record?[existing].value = .text(value)
            } else {
                guard index.count < limits.maxFields else {
                    refuse(parser, "a record has more than \(limits.maxFields) fields")
                    return
                }
                index[name] = record?.count ?? 0
                record?.append((name, .text(value)))
            }
        }

        /// Appends text of the current element, within the limit.
        func append(_ string: String, _ parser: XMLParser) {
            guard record != nil else { return }
            textBytes += string.utf8.count
            if textBytes > limits.maxTextBytes {
                refuse(parser, "an element's text is longer than \(limits.maxTextBytes) bytes")
                return
            }
            text += string
        }

        func parser(
            _ parser: XMLParser, didStartElement elementName: String, namespaceURI: String?, qualifiedName: String?,
            attributes: [String: String] = [:]
        ) {
            guard failure == nil else { return }
            stack.append(elementName)
            text = ""
            textBytes = 0
            if stack == path {
                record = []
                index = [:]
                recordBytes = 0
                // libxml2 hands attributes over in a dictionary: sort them for a stable order.
                for key in attributes.keys.sorted() { set(key, attributes[key]!, parser) }
            } else if record != nil, stack.count > path.count {
                let name = stack[path.count...].joined(separator: ".")
                for key in attributes.keys.sorted() { set(name + "." + key, attributes[key]!, parser) }
            }
        }

        func parser(_ parser: XMLParser, foundCharacters string: String) {
            append(string, parser)
        }

        func parser(_ parser: XMLParser, foundCDATA CDATABlock: Data) {
            append(String(decoding: CDATABlock, as: UTF8.self), parser)
        }

        func parser(_ parser: XMLParser, didEndElement elementName: String, namespaceURI: String?, qualifiedName: String?) {
            guard failure == nil, !stack.isEmpty else { return }
            defer {
                stack.removeLast()
                text = ""
                textBytes = 0
            }
            guard record != nil else { return }
            if stack.count > path.count {
                // No copy of `record` may be alive here: `set` would then copy all its fields.
                let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
                if !trimmed.isEmpty { set(stack[path.count...].joined(separator: "."), trimmed, parser) }
                return
            }
            guard stack == path, let current = record else { return }
            record = nil
            records += 1
            do { try body(current) } catch {
                failure = error
                parser.abortParsing()
            }
        }

        func parser(_ parser: XMLParser, parseErrorOccurred parseError: any Error) {
            if failure == nil {
                failure = IngestError(
                    .malformed, "the XML is not well-formed at line \(parser.lineNumber), column \(parser.columnNumber)")
            }
        }
    }
}

/// A stream that replaces a byte range with spaces (keeping line breaks, so line numbers in
/// errors stay true): how the DOCTYPE is hidden from libxml2.
private final class BlankingInputStream: InputStream {
    private let inner: InputStream
    private let range: Range<Int>
    private var offset = 0

    init(_ inner: InputStream, blanking range: Range<Int>) {
        self.inner = inner
        self.range = range
        super.init(data: Data())
    }

    override func open() { inner.open() }
    override func close() { inner.close() }
    override var hasBytesAvailable: Bool { inner.hasBytesAvailable }
    override var streamStatus: Stream.Status { inner.streamStatus }
    override var streamError: (any Error)? { inner.streamError }

    override func read(_ buffer: UnsafeMutablePointer<UInt8>, maxLength length: Int) -> Int {
        let count = inner.read(buffer, maxLength: length)
        if count > 0 {
            if offset < range.upperBound && offset + count > range.lowerBound {
                for k in max(0, range.lowerBound - offset)..<min(count, range.upperBound - offset) where buffer[k] != 0x0A && buffer[k] != 0x0D {
                    buffer[k] = 0x20
                }
            }
            offset += count
        }
        return count
    }
}

/// Ends the stream (a read error) at the first byte that cannot be an XML character: one that
/// is not UTF-8 (in a document read as UTF-8), or a control character other than tab, LF and CR
/// (XML 1.0 §2.2), before libxml2 hands a name or string holding it to FoundationXML; and at a
/// processing instruction without data, which FoundationXML cannot take either.
///
/// Why: FoundationXML (Swift 6.3.1) force-unwraps names decoded as UTF-8 in its entity and
/// element callbacks, so `&a\u{C2}\u{CA};` or an element name of `0xFF` bytes traps and takes the
/// process down, and a NUL cuts the C strings it hands on (found by fuzzing). Such a document is
/// not well-formed XML anyway, so refusing it loses nothing.
private final class XMLCharGuardStream: InputStream {
    private let inner: InputStream
    /// Whether the bytes must be UTF-8 (a document libxml2 does not transcode).
    private let utf8: Bool
    /// The stream offset of the first invalid byte, once seen; the parse then fails and the
    /// reader says why.
    private(set) var invalidAt: Int64?
    /// Bytes of a sequence cut by the end of the last read, checked with the next one.
    private var carry: [UInt8] = []
    /// Bytes passed on so far.
    private var offset: Int64 = 0

    init(_ inner: InputStream, utf8: Bool) {
        self.inner = inner
        self.utf8 = utf8
        super.init(data: Data())
    }

    override func open() { inner.open() }
    override func close() { inner.close() }
    override var hasBytesAvailable: Bool { invalidAt == nil && inner.hasBytesAvailable }
    override var streamStatus: Stream.Status { invalidAt != nil ? .error : inner.streamStatus }
    // The parser asks for the error once a read fails; the inner stream has none to give.
    override var streamError: (any Error)? {
        invalidAt != nil ? IngestError(.malformed, "the XML holds a byte that is not an XML character") : inner.streamError
    }

    override func read(_ buffer: UnsafeMutablePointer<UInt8>, maxLength length: Int) -> Int {
        guard invalidAt == nil else { return -1 }
        let count = inner.read(buffer, maxLength: length)
        for k in 0..<max(count, 0) where !accept(buffer[k]) {
            invalidAt = offset + Int64(k)
            return -1
        }
        guard utf8 else {
            offset += Int64(max(count, 0))
            return count
        }
        guard count > 0 else {
            // The input ended inside a sequence.
            if count == 0 && !carry.isEmpty { invalidAt = offset - Int64(carry.count) }
            return invalidAt == nil ? count : -1
        }
        let bytes = carry + UnsafeBufferPointer(start: buffer, count: count)
        // A sequence may be cut by the end of this read: up to 3 trailing bytes wait for the next.
        var checked = bytes.count
        if let lead = bytes.suffix(3).lastIndex(where: { $0 >= 0xC0 }), bytes.count - lead < Self.length(of: bytes[lead]) {
            checked = lead
        }
        if let bad = bytes.withUnsafeBufferPointer({ UTF8Validation.firstInvalidByte(UnsafeBufferPointer(rebasing: $0[0..<checked])) }) {
            invalidAt = offset - Int64(carry.count) + Int64(bad)
            return -1
        }
        carry = Array(bytes[checked...])
        offset += Int64(count)
        return count
    }

    /// Where a processing instruction's start stands: 0 outside, 1 after `<`, 2 in `<?name`.
    private var instruction = 0
    /// Whether the stream ended at a processing instruction without data (not a bad byte).
    private(set) var emptyInstruction = false

    /// Whether `byte` may come next: not a control character other than tab, LF and CR, and
    /// not the `?` that would end a processing instruction with a target and no data
    /// (`<?name?>`, legal XML whose null data FoundationXML hands to `strlen`; found by
    /// fuzzing). Such an instruction is refused wherever it stands, in CDATA too.
    private func accept(_ byte: UInt8) -> Bool {
        if byte < 0x20 && byte != 0x09 && byte != 0x0A && byte != 0x0D { return false }
        switch (instruction, byte) {
        case (2, 0x3F):
            emptyInstruction = true
            return false
        case (2, 0x20), (2, 0x09), (2, 0x0A), (2, 0x0D): instruction = 0
        case (2, _): break
        case (1, 0x3F): instruction = 2
        case (_, 0x3C): instruction = 1
        default: instruction = 0
        }
        return true
    }

    /// The length of the UTF-8 sequence a lead byte starts (1 for anything else).
    private static func length(of lead: UInt8) -> Int {
        switch lead {
        case 0xC0...0xDF: 2
        case 0xE0...0xEF: 3
        case 0xF0...0xF7: 4
        default: 1
        }
    }
}
