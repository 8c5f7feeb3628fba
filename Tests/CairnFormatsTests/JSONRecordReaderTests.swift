import CairnFormats
import CairnTestSupport
import Foundation
import Testing

func readRecords(_ source: some ByteSource, _ options: JSONOptions = JSONOptions()) throws -> [[(name: String, value: FieldValue)]] {
    let reader = try JSONRecordReader(source: source, options: options)
    var records: [[(name: String, value: FieldValue)]] = []
    while let record = try reader.next() { records.append(record) }
    return records
}

@Suite("JSON and NDJSON records", .dedicatedThreads)
struct JSONRecordReaderTests {
    @Test func carsJSONMatchesPythonsJSONModule() throws {
        let records = try readRecords(try FileByteSource(path: "\(sharedData)/cars.json"))
        #expect(records.count == 406)
        let data = try Data(contentsOf: URL(fileURLWithPath: "\(sharedData)/cars.json"))
        let reference = try JSONSerialization.jsonObject(with: data) as! [[String: Any]]
        for (record, expected) in zip(records, reference) {
            #expect(Set(record.map(\.name)) == Set(expected.keys))
            for (name, value) in record {
                switch value {
                case .null: #expect(expected[name] is NSNull, "\(name)")
                case .integer(let number): #expect((expected[name] as? NSNumber)?.int64Value == number, "\(name)")
                case .real(let number): #expect((expected[name] as? NSNumber)?.doubleValue == number, "\(name)")
                case .text(let text): #expect(expected[name] as? String == text, "\(name)")
                default: Issue.record("unexpected \(value) for \(name)")
                }
            }
        }
        // Document order is kept.
        #expect(records[0].map(\.name).prefix(3) == ["Name", "Miles_per_Gallon", "Cylinders"])
        #expect(records.contains { $0.contains { $0.name == "Miles_per_Gallon" && $0.value == .null } })
    }

    @Test func nestingIsFlattenedOrKeptAsJSONAndEscapesAreDecoded() throws {
        let text = #"""
            [ {"id": 1, "who": {"name": "Zoë \"Z\"", "address": {"city": "Oslo"}}, "tags": ["a", {"b": 2}], "ok": true},
              {"id": 2, "who": {}, "tags": [], "ok": false, "note": "tab\there \u00e9 \ud83d\ude00", "n": -1.5e3} ]
            """#
        for chunk in [1, 3, 8, 1 << 20] {
            let flat = try readRecords(MemoryByteSource(text, chunkSize: chunk))
            #expect(flat.count == 2)
            #expect(flat[0].map(\.name) == ["id", "who.name", "who.address.city", "tags", "ok"])
            #expect(flat[0][1].value == .text("Zoë \"Z\""))
            #expect(flat[0][3].value == .json(#"["a",{"b":2}]"#))
            #expect(flat[1][1].value == .json("{}"))
            #expect(flat[1].first { $0.name == "note" }?.value == .text("tab\there é 😀"))
            #expect(flat[1].first { $0.name == "n" }?.value == .real(-1500))
        }
        var options = JSONOptions()
        options.flatten = false
        let kept = try readRecords(MemoryByteSource(text), options)
        #expect(kept[0][1].name == "who")
        #expect(kept[0][1].value == .json(#"{"name":"Zoë \"Z\"","address":{"city":"Oslo"}}"#))
    }

    @Test func ndjsonReadsOneObjectPerLine() throws {
        var options = JSONOptions()
        options.layout = .lines
        let records = try readRecords(MemoryByteSource("{\"a\":1}\n\n{\"a\":2,\"b\":null}\r\n{\"a\":3}", chunkSize: 4), options)
        #expect(records.map { $0[0].value } == [.integer(1), .integer(2), .integer(3)])
        #expect(records[1][1].value == .null)
    }

    @Test func ndjsonHoldsOneRecordPerLineAndReadsOnPastABadOne() throws {
        var options = JSONOptions()
        options.layout = .lines
        for chunk in [1, 3, 1 << 20] {
            let text = "{\"a\":1} {\"a\":2}\n{\"a\":\n3}\n{\"a\":4} \r\n"
            let reader = try JSONRecordReader(source: MemoryByteSource(text, chunkSize: chunk), options: options)
            #expect(throws: IngestError(.malformed, "text after the record on its line", row: 1, byteOffset: 8)) { try reader.next() }
            try reader.skipLine()
            #expect(throws: IngestError(.malformed, "the record is cut short", row: 2, byteOffset: 16)) { try reader.next() }
            try reader.skipLine()
            #expect(throws: IngestError(.malformed, "the record is not a JSON object", row: 3, byteOffset: 22)) { try reader.next() }
            try reader.skipLine()
            #expect(try reader.next()?.first?.value == .integer(4), "spaces and a CR may end a line")
            #expect(try reader.next() == nil)
            #expect(reader.row == 4)
        }
    }

    @Test func errorsNameTheRecordAndOffset() throws {
        #expect(throws: IngestError(.malformed, "the document is not a JSON array", byteOffset: 0)) {
            try readRecords(MemoryByteSource("{\"a\":1}"))
        }
        #expect(throws: IngestError(.malformed, "the record is not a JSON object", row: 2, byteOffset: 10)) {
            try readRecords(MemoryByteSource("[{\"a\":1}, 5]"))
        }
        #expect(throws: IngestError(.malformed, "not true, false or null", row: 1, byteOffset: 7)) {
            try readRecords(MemoryByteSource("[{\"a\": nope}]"))
        }
        #expect(throws: IngestError(.malformed, "the record is cut short", row: 1, byteOffset: 1)) {
            try readRecords(MemoryByteSource("[{\"a\": [1, 2"))
        }
        var bad = Array("[{\"a\": \"ok\"}, {\"a\": \"x".utf8)
        bad += [0xFF, 0x22, 0x7D, 0x5D]
        #expect(throws: IngestError(.invalidUTF8, "the text is not valid UTF-8", row: 2, byteOffset: 22)) {
            try readRecords(MemoryByteSource(bad))
        }
        let deep = "[" + String(repeating: "{\"a\":", count: 100) + "1" + String(repeating: "}", count: 100) + "]"
        #expect(throws: IngestError.self) { try readRecords(MemoryByteSource(deep)) }
    }
}
