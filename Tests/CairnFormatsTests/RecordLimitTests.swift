import CairnFormats
import CairnTestSupport
import Foundation
import Testing

/// Every reader bounds what one record can hold, so hostile input fails with `tooLarge` (naming
/// the limit) instead of growing memory without end.
@Suite("Record limits of the readers", .dedicatedThreads)
struct RecordLimitTests {
    @Test func theDefaultsAreTheDocumentedOnes() {
        #expect(CSVOptions().maxRecordBytes == 64 << 20)
        #expect(CSVOptions().maxColumns == 10_000)
        #expect(JSONOptions().maxRecordBytes == 16 << 20)
        #expect(JSONOptions().maxFields == 10_000)
        #expect(XMLLimits().maxRecordBytes == 16 << 20)
        #expect(XMLLimits().maxTextBytes == 8 << 20)
        #expect(XMLLimits().maxFields == 10_000)
    }

    @Test func aCSVHeaderWithMoreColumnsThanTheLimitIsRefused() throws {
        let atLimit = (1...10_000).map { "c\($0)" }.joined(separator: ",") + "\n" + String(repeating: "1,", count: 9_999) + "1\n"
        let reader = try CSVReader(source: MemoryByteSource(atLimit))
        #expect(reader.columns.count == 10_000)
        #expect(try reader.next()?.count == 10_000)

        let over = (1...10_001).map { "c\($0)" }.joined(separator: ",") + "\n"
        #expect {
            try CSVReader(source: MemoryByteSource(over))
        } throws: { error in
            let error = error as? IngestError
            return error?.kind == .tooLarge && error?.message.contains("10000 columns") == true
        }
        // Without a header, the first record sets the columns: the same limit.
        var options = CSVOptions()
        options.header = false
        #expect(throws: IngestError.self) { try CSVReader(source: MemoryByteSource(String(repeating: ",", count: 20_000)), options: options) }
    }

    @Test func aRecordOfBareDelimitersIsABadRowNotAMillionFields() throws {
        // 2 MiB of commas: two million fields if kept; counted past the limit instead, and the
        // row is skippable (the reader is past it).
        let text = "a,b\n1,2\n" + String(repeating: ",", count: 2 << 20) + "\n3,4\n"
        let reader = try CSVReader(source: MemoryByteSource(text, chunkSize: 1 << 16))
        #expect(try reader.next() == ["1", "2"])
        #expect(throws: IngestError(.malformed, "the record has \((2 << 20) + 1) fields, the header 2", row: 2, byteOffset: 8)) {
            try reader.next()
        }
        #expect(reader.streamError == nil)
        #expect(try reader.next() == ["3", "4"])
    }

    @Test func aStreamErrorStopsTheCSVReaderForGoodABadRowDoesNot() throws {
        let ragged = try CSVReader(source: MemoryByteSource("a,b\n1\n2,3\n"))
        #expect(throws: IngestError.self) { try ragged.next() }
        #expect(ragged.streamError == nil)
        #expect(try ragged.next() == ["2", "3"])

        for text in ["a,b\n1,2\n3,\"open\n4,5\n", "a,b\n1,2\n\"x\"y,2\n4,5\n"] {
            let broken = try CSVReader(source: MemoryByteSource(text))
            #expect(try broken.next() == ["1", "2"])
            let first = #expect(throws: IngestError.self) { try broken.next() }
            #expect(broken.streamError == first)
            #expect(first?.kind == .malformed)
            // Asked again, it throws the same error: never a later record, never a quiet end.
            #expect(throws: first!) { try broken.next() }
            #expect(throws: first!) { try broken.withNextRecord { _ in 0 } }
        }

        var options = CSVOptions()
        options.maxRecordBytes = 1 << 20
        let long = try CSVReader(
            source: MemoryByteSource("a\n" + String(repeating: "x", count: 3 << 20) + "\n1\n", chunkSize: 1 << 16), options: options)
        let tooLarge = #expect(throws: IngestError.self) { try long.next() }
        #expect(tooLarge?.kind == .tooLarge)
        #expect(tooLarge?.message.contains("\(1 << 20) bytes") == true)
        #expect(long.streamError != nil)
    }

    @Test func aJSONRecordWithTooManyFieldsIsRefused() throws {
        let members = (1...10_001).map { "\"f\($0)\":1" }.joined(separator: ",")
        let error = #expect(throws: IngestError.self) { try readRecords(MemoryByteSource("[{\(members)}]")) }
        #expect(error?.kind == .tooLarge)
        #expect(error?.message == "a record has more than 10000 fields")
        #expect(error?.row == 1)
        let atLimit = (1...10_000).map { "\"f\($0)\":1" }.joined(separator: ",")
        #expect(try readRecords(MemoryByteSource("[{\(atLimit)}]")).first?.count == 10_000)
    }

    @Test func flattenedNamesShareTheRecordLimit() throws {
        // Every field under a long key repeats it: 200 fields × 100 KiB of names from a record
        // of about 100 KiB.
        var options = JSONOptions()
        options.maxRecordBytes = 1 << 20
        let key = String(repeating: "k", count: 100 << 10)
        let inner = (1...200).map { "\"\($0)\":{}" }.joined(separator: ",")
        let error = #expect(throws: IngestError.self) { try readRecords(MemoryByteSource("[{\"\(key)\":{\(inner)}}]"), options) }
        #expect(error?.kind == .tooLarge)
        #expect(error?.message.contains("field names") == true)
    }

    @Test func anNDJSONLineLongerThanTheLimitIsRefused() throws {
        var options = JSONOptions()
        options.layout = .lines
        options.maxRecordBytes = 1 << 20
        // A record that never ends on its line.
        let long = "{\"a\":\"" + String(repeating: "x", count: 2 << 20) + "\"}\n{\"a\":1}\n"
        let error = #expect(throws: IngestError.self) { try readRecords(MemoryByteSource(long, chunkSize: 1 << 16), options) }
        #expect(error?.kind == .tooLarge)
        #expect(error?.message == "a line is longer than \(1 << 20) bytes")

        // A short record followed by blanks that never end: the line is what is bounded.
        let blanks = "{\"a\":1}" + String(repeating: " ", count: 2 << 20) + "\n{\"a\":2}\n"
        let reader = try JSONRecordReader(source: MemoryByteSource(blanks, chunkSize: 1 << 16), options: options)
        let blank = #expect(throws: IngestError.self) { try reader.next() }
        #expect(blank?.kind == .tooLarge)
        #expect(blank?.message == "a line is longer than \(1 << 20) bytes")
        // Within the limit, blanks after a record are fine.
        #expect(try readRecords(MemoryByteSource("{\"a\":1}   \t\r\n{\"a\":2}\n"), options).count == 2)
    }

    @Test func anXMLElementsTextIsBoundedEvenInPieces() throws {
        var limits = XMLLimits()
        limits.maxTextBytes = 1 << 16
        // Comments split the text into pieces, each small: the element's whole text counts.
        let pieces = String(repeating: String(repeating: "x", count: 1000) + "<!---->", count: 100)
        let error = #expect(throws: IngestError.self) {
            try XMLRecordReader(data: Data("<r><row><a>\(pieces)</a></row></r>".utf8), recordPath: "/r/row", limits: limits).forEachRecord { _ in }
        }
        #expect(error?.kind == .tooLarge)
        #expect(error?.message.contains("text is longer than 65536 bytes") == true)
        // CDATA counts too.
        let cdata = "<r><row><a><![CDATA[" + String(repeating: "y", count: 70_000) + "]]></a></row></r>"
        #expect(throws: IngestError.self) {
            try XMLRecordReader(data: Data(cdata.utf8), recordPath: "/r/row", limits: limits).forEachRecord { _ in }
        }
        // Text within the limit is a field as before.
        var records: [[(name: String, value: FieldValue)]] = []
        try XMLRecordReader(
            data: Data("<r><row><a>\(String(repeating: "z", count: 60_000))</a></row></r>".utf8), recordPath: "/r/row", limits: limits
        )
        .forEachRecord { records.append($0) }
        #expect(records.first?.first?.value == .text(String(repeating: "z", count: 60_000)))
    }

    @Test func anXMLRecordIsBoundedInSizeAndFields() throws {
        var limits = XMLLimits()
        limits.maxRecordBytes = 1 << 16
        limits.maxFields = 100
        let big = "<r><row>" + (1...20).map { "<f\($0)>\(String(repeating: "v", count: 4000))</f\($0)>" }.joined() + "</row></r>"
        var delivered = 0
        let size = #expect(throws: IngestError.self) {
            try XMLRecordReader(data: Data(big.utf8), recordPath: "/r/row", limits: limits).forEachRecord { _ in delivered += 1 }
        }
        #expect(size?.kind == .tooLarge)
        #expect(size?.message.contains("a record is larger than 65536 bytes") == true)
        #expect(size?.row == 1)
        #expect(delivered == 0)

        let wide = "<r><row>" + (1...101).map { "<f\($0)>1</f\($0)>" }.joined() + "</row></r>"
        let fields = #expect(throws: IngestError.self) {
            try XMLRecordReader(data: Data(wide.utf8), recordPath: "/r/row", limits: limits).forEachRecord { _ in }
        }
        #expect(fields?.message.contains("more than 100 fields") == true)
        // Attributes are fields too.
        let attributes = "<r><row " + (1...101).map { "a\($0)=\"1\"" }.joined(separator: " ") + "/></r>"
        #expect(throws: IngestError.self) {
            try XMLRecordReader(data: Data(attributes.utf8), recordPath: "/r/row", limits: limits).forEachRecord { _ in }
        }
    }
}
