import CairnFormats
import Foundation
import Testing

/// An entity reference whose name is not UTF-8 once trapped inside FoundationXML (found by
/// fuzzing): the reader refuses it as malformed instead.
@Suite("XML entity names")
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
}
