import CairnFormats
import CairnTestSupport
import Foundation
import Testing

func xmlRecords(_ text: String, _ path: String) throws -> [[(name: String, value: FieldValue)]] {
    var records: [[(name: String, value: FieldValue)]] = []
    try XMLRecordReader(data: Data(text.utf8), recordPath: path).forEachRecord { records.append($0) }
    return records
}

@Suite("XML records", .dedicatedThreads)
struct XMLRecordReaderTests {
    @Test func isoCountriesGive249RecordsWithTheirAttributes() throws {
        var records: [[(name: String, value: FieldValue)]] = []
        let reader = try XMLRecordReader(path: "\(sharedData)/iso_3166-1.xml", recordPath: "/iso_3166_entries/iso_3166_entry")
        try reader.forEachRecord { records.append($0) }
        #expect(records.count == 249)
        #expect(reader.row == 249)
        let norway = records.first { $0.contains { $0.name == "alpha_2_code" && $0.value == .text("NO") } }
        #expect(norway?.first { $0.name == "alpha_3_code" }?.value == .text("NOR"))
        #expect(norway?.first { $0.name == "name" }?.value == .text("Norway"))
        var currencies = 0
        try XMLRecordReader(path: "\(sharedData)/iso_4217.xml", recordPath: "/iso_4217_entries/iso_4217_entry").forEachRecord { _ in
            currencies += 1
        }
        #expect(currencies >= 181)
    }

    @Test func childTextAndChildAttributesBecomeFields() throws {
        let records = try xmlRecords(
            """
            <?xml version="1.0"?>
            <shop><items>
              <item sku="A-1"><name>Tea &amp; cake</name><price currency="EUR">4.50</price></item>
              <item sku="B-2"><name><![CDATA[<raw>]]></name></item>
            </items><other><item sku="ignored"/></other></shop>
            """, "/shop/items/item")
        #expect(records.count == 2)
        #expect(records[0].map(\.name) == ["sku", "name", "price.currency", "price"], "\(records)")
        try #require(records[0].count == 4 && records[1].count >= 2)
        #expect(records[0][1].value == .text("Tea & cake"))
        #expect(records[0][3].value == .text("4.50"))
        #expect(records[1][1].value == .text("<raw>"))
    }

    @Test func billionLaughsAndXXEAreRefusedBeforeExpansion() throws {
        let laughs = """
            <?xml version="1.0"?>
            <!DOCTYPE lolz [
              <!ENTITY lol "lol">
              <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
              <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
              <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
              <!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
            ]>
            <lolz><row><v>&lol9;</v></row></lolz>
            """
        #expect {
            try xmlRecords(laughs, "/lolz/row")
        } throws: { ($0 as? IngestError)?.kind == .forbidden }

        let secret = FileManager.default.temporaryDirectory.appendingPathComponent("cairn-xxe-\(UUID().uuidString).txt")
        _ = FileManager.default.createFile(atPath: secret.path, contents: Data("TOP-SECRET".utf8))
        defer { try? FileManager.default.removeItem(at: secret) }
        let xxe = """
            <?xml version="1.0"?>
            <!DOCTYPE r [ <!ENTITY xxe SYSTEM "file://\(secret.path)"> ]>
            <r><row><v>&xxe;</v></row></r>
            """
        var leaked = false
        #expect {
            try XMLRecordReader(data: Data(xxe.utf8), recordPath: "/r/row").forEachRecord { record in
                leaked = record.contains { $0.value == .text("TOP-SECRET") }
            }
        } throws: { ($0 as? IngestError)?.kind == .forbidden }
        #expect(!leaked)
    }

    @Test func malformedXMLAndBadPathsAreClearErrors() throws {
        #expect {
            try xmlRecords("<a><row><v>1</v></row>", "/a/row")
        } throws: { ($0 as? IngestError)?.kind == .malformed }
        #expect(throws: IngestError.self) { try XMLRecordReader(data: Data(), recordPath: "a/row") }
    }
}
