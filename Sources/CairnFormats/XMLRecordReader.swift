package import Foundation

#if canImport(FoundationXML)
    import FoundationXML
#endif

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

    /// A reader over a file.
    /// - Throws: `IngestError` (`malformed`) when `recordPath` is not `/a/b…`.
    package convenience init(path file: String, recordPath: String) throws {
        try self.init(recordPath: recordPath) { InputStream(fileAtPath: file) }
    }

    /// A reader over bytes in memory (tests).
    package convenience init(data: Data, recordPath: String) throws {
        try self.init(recordPath: recordPath) { InputStream(data: data) }
    }

    private init(recordPath: String, makeStream: @escaping () -> InputStream?) throws {
        let parts = recordPath.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard parts.count >= 2, parts[0].isEmpty, parts.dropFirst().allSatisfy({ !$0.isEmpty }) else {
            throw IngestError(.malformed, "recordPath must look like /root/record, got '\(recordPath)'")
        }
        self.path = Array(parts.dropFirst())
        self.makeStream = makeStream
    }

    /// Parses the whole input, calling `body` with each record's fields in document order.
    /// - Throws: `IngestError` (`malformed` with the line, `forbidden` for entity declarations,
    ///   `io`), or whatever `body` throws (the parse stops at once).
    package func forEachRecord(_ body: ([(name: String, value: FieldValue)]) throws -> Void) throws {
        guard let prolog = makeStream() else { throw IngestError(.io, "cannot open the file") }
        let doctype = try Self.checkProlog(prolog)
        guard let stream = makeStream() else { throw IngestError(.io, "cannot open the file") }
        let parser = XMLParser(stream: doctype.map { BlankingInputStream(stream, blanking: $0) } ?? stream)
        parser.shouldResolveExternalEntities = false
        parser.shouldProcessNamespaces = false
        // The delegate holds `body` only while `parse()` runs.
        let (ok, records, failure) = withoutActuallyEscaping(body) { body in
            let delegate = Delegate(path: path, body: body)
            parser.delegate = delegate
            let ok = parser.parse()
            parser.delegate = nil
            return (ok, delegate.records, delegate.failure)
        }
        row = records
        if let failure { throw failure }
        if !ok {
            let reason = parser.parserError.map { "\($0.localizedDescription)" } ?? "not well-formed"
            throw IngestError(.malformed, "the XML is not well-formed at line \(parser.lineNumber), column \(parser.columnNumber): \(reason)")
        }
    }

    /// Reads the prolog (up to the root element, at most 4 MiB) and refuses ENTITY
    /// declarations and external DTDs. Comments and processing instructions are skipped.
    /// - Returns: the byte range of the DOCTYPE declaration, if there is one.
    static func checkProlog(_ stream: InputStream) throws -> Range<Int>? {
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
                return doctype  // the root element: the prolog is clean
            }
        }
        return doctype
    }

    private final class Delegate: NSObject, XMLParserDelegate {
        let path: [String]
        let body: ([(name: String, value: FieldValue)]) throws -> Void
        var stack: [String] = []
        var record: [(name: String, value: FieldValue)]?
        var index: [String: Int] = [:]
        var text = ""
        var records = 0
        var failure: (any Error)?

        init(path: [String], body: @escaping ([(name: String, value: FieldValue)]) throws -> Void) {
            self.path = path
            self.body = body
        }

        func set(_ name: String, _ value: String) {
            if let existing = index[name] {
                record?[existing].value = .text(value)
            } else {
                index[name] = record?.count ?? 0
                record?.append((name, .text(value)))
            }
        }

        func parser(
            _ parser: XMLParser, didStartElement elementName: String, namespaceURI: String?, qualifiedName: String?,
            attributes: [String: String] = [:]
        ) {
            stack.append(elementName)
            text = ""
            if stack == path {
                record = []
                index = [:]
                // libxml2 hands attributes over in a dictionary: sort them for a stable order.
                for key in attributes.keys.sorted() { set(key, attributes[key]!) }
            } else if record != nil, stack.count > path.count {
                let name = stack[path.count...].joined(separator: ".")
                for key in attributes.keys.sorted() { set(name + "." + key, attributes[key]!) }
            }
        }

        func parser(_ parser: XMLParser, foundCharacters string: String) {
            if record != nil { text += string }
        }

        func parser(_ parser: XMLParser, foundCDATA CDATABlock: Data) {
            if record != nil { text += String(decoding: CDATABlock, as: UTF8.self) }
        }

        func parser(_ parser: XMLParser, didEndElement elementName: String, namespaceURI: String?, qualifiedName: String?) {
            defer {
                stack.removeLast()
                text = ""
            }
            guard let current = record else { return }
            if stack.count > path.count {
                let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
                if !trimmed.isEmpty { set(stack[path.count...].joined(separator: "."), trimmed) }
                return
            }
            guard stack == path else { return }
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
