import CairnFormats
import CairnTestSupport
import Foundation
import Testing

/// An entity reference or an element whose name is not UTF-8 once trapped inside FoundationXML
/// (found by fuzzing): the reader refuses a UTF-8 document holding bytes that are not UTF-8 as
/// malformed instead, and leaves documents declared in another encoding to libxml2's transcoding.
@Suite("XML names that are not UTF-8", .dedicatedThreads)
struct XMLEntityNameTests {
    /// Reads `document` with records at `/r/row`.
    static func read(_ document: [UInt8]) throws -> Int {
        var count = 0
        try XMLRecordReader(data: Data(document), recordPath: "/r/row").forEachRecord { _ in count += 1 }
        return count
    }

    @Test(arguments: [[0xC2, 0xCA], [0xED, 0xA0, 0x80], [0xE9], [0xC3]])
    func aNameThatIsNotUTF8IsRefused(_ name: [UInt8]) {
        let document = Array("<r><row><a>&a".utf8) + name + Array(";</a></row></r>".utf8)
        #expect(throws: IngestError.self) { try Self.read(document) }
    }

    @Test func characterReferencesAndUTF8NamesAreLeftToTheParser() throws {
        #expect(try Self.read(Array("<r><row><a>&#xE9;&amp;&#233;é</a></row><row/></r>".utf8)) == 2)
        // An undefined entity is the parser's own error, not a trap.
        #expect(throws: IngestError.self) { try Self.read(Array("<r><row><a>&aé;</a></row></r>".utf8)) }
    }

    @Test(arguments: [[0xFF, 0xFF], [0xC3], [0xE9, 0x80], [0xF4, 0x90, 0x80, 0x80]])
    func anElementNameThatIsNotUTF8IsRefused(_ name: [UInt8]) {
        let document = Array("<r><row><".utf8) + name + Array("/></row></r>".utf8)
        #expect {
            try Self.read(document)
        } throws: { error in
            (error as? IngestError)?.message.contains("not an XML character") == true
        }
    }

    /// A sequence cut between two reads of the stream is still checked whole.
    @Test func aSequenceSplitAcrossReadsIsJudgedWhole() throws {
        let padding = String(repeating: "x", count: (64 << 10) - 14)
        let valid = Array("<r><row><a>\(padding)é€😀</a></row></r>".utf8)
        #expect(try Self.read(valid) == 1)
        var broken = Array("<r><row><a>\(padding)".utf8)
        broken += [0xE2, 0x82]  // € without its last byte
        broken += Array("</a></row></r>".utf8)
        #expect(throws: IngestError.self) { try Self.read(broken) }
    }

    @Test func aDocumentDeclaredInAnotherEncodingIsTranscodedNotRefused() throws {
        // ISO-8859-1: 0xE9 is é, in a name and in text.
        let document =
            Array("<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><r><row><caf".utf8) + [0xE9] + Array(">x".utf8) + [0xE9]
            + Array("</caf".utf8) + [0xE9] + Array("></row></r>".utf8)
        var fields: [(name: String, value: FieldValue)] = []
        try XMLRecordReader(data: Data(document), recordPath: "/r/row").forEachRecord { fields = $0 }
        #expect(fields.first?.name == "café")
    }

    /// A NUL (or another control character) cut the C strings FoundationXML hands on; a second
    /// DOCTYPE was passed to the parser unchecked (found by fuzzing, with NULs in both).
    @Test(arguments: [
        "<r><row><a>x\u{0}y</a></row></r>", "<r><row><a>\u{1B}</a></row></r>", "<r><row \u{0}/></r>", "<?pi?><r><row/></r>",
        "<r><row><?pi?></row></r>", "<r><??><row/></r>",
    ])
    func controlCharactersAreRefused(_ document: String) {
        #expect(throws: IngestError.self) { try Self.read(Array(document.utf8)) }
    }

    @Test func anInstructionWithoutDataIsRefusedSayingSo() {
        #expect {
            try Self.read(Array("<r><row><?pi?></row></r>".utf8))
        } throws: { error in
            (error as? IngestError)?.message.contains("processing instruction without data") == true
        }
    }

    @Test func aSecondDoctypeIsRefused() {
        #expect {
            try Self.read(Array("<!DOCTYPE r><!DOCTYPE r><r><row/></r>".utf8))
        } throws: { error in
            (error as? IngestError)?.message.contains("more than one DOCTYPE") == true
        }
        #expect((try? Self.read(Array("<!DOCTYPE r>\t\r\n<r><row/></r>".utf8))) == 1, "tab, CR and LF are characters")
        #expect((try? Self.read(Array("<?pi data?><r><?pi ?><row/><a><b/></a></r>".utf8))) == 1, "instructions with data are read")
    }
}
