import CairnFormats
import CairnTestSupport
import Foundation
import Testing

/// One record of `fields` written by `write`, as text.
func csvRecord(neutralise: Bool = true, lineEnding: CSVWriter.LineEnding = .crlf, _ write: (inout CSVWriter) -> Void) -> String {
    var csv = CSVWriter(neutraliseFormulas: neutralise, lineEnding: lineEnding)
    write(&csv)
    csv.endRecord()
    return String(decoding: csv.bytes, as: UTF8.self)
}

/// Text cells that exercise quoting, line breaks, non-ASCII text and formula injection.
let awkwardCells = [
    "plain", "with, comma", "with \"quotes\"", "\"", ",", "line\nbreak", "cr\rend", "crlf\r\nbreak", "Zürich — 東京 🚀", "=cmd|' /C calc'!A0",
    "+SUM(1,2)", "-2+3", "@HYPERLINK(\"http://x\")", "\tTabbed", "\rCarriage", " lead", "trail ", "'already quoted", "a\"b,c\nd",
]

@Suite("CSV writer (RFC 4180, OWASP neutralising)", .dedicatedThreads)
struct CSVWriterTests {
    @Test func quotesAreDoubledInsideQuotes() {
        #expect(csvRecord { $0.text("say \"hi\"") } == "\"say \"\"hi\"\"\"\r\n")
        #expect(csvRecord { $0.text("\"") } == "\"\"\"\"\r\n")
        #expect(csvRecord { $0.text("a\"b,c\nd") } == "\"a\"\"b,c\nd\"\r\n")
    }

    @Test func lineBreaksAreQuoted() {
        #expect(csvRecord { $0.text("line\nbreak") } == "\"line\nbreak\"\r\n")
        #expect(csvRecord { $0.text("cr\rend") } == "\"cr\rend\"\r\n")
        #expect(csvRecord { $0.text("crlf\r\n") } == "\"crlf\r\n\"\r\n")
    }

    @Test func commasAreQuotedAndSeparateFields() {
        #expect(csvRecord { $0.text("a,b") } == "\"a,b\"\r\n")
        #expect(
            csvRecord {
                $0.text("x")
                $0.text(",")
                $0.text("y")
            } == "x,\",\",y\r\n")
        // Spaces and non-ASCII text need no quotes.
        #expect(csvRecord { $0.text(" Zürich 東京 🚀 ") } == " Zürich 東京 🚀 \r\n")
    }

    @Test(arguments: ["=1+2", "+1", "-1", "@x", "\tTab"])
    func formulaStartsGetAnApostropheUnlessRaw(_ cell: String) {
        #expect(csvRecord { $0.text(cell) } == "'\(cell)\r\n")
        #expect(csvRecord(neutralise: false) { $0.text(cell) } == "\(cell)\r\n")
    }

    @Test func neutralisedCellsThatNeedQuotesKeepTheApostropheInside() {
        #expect(csvRecord { $0.text("=a,b") } == "\"'=a,b\"\r\n")
        #expect(csvRecord { $0.text("=\"q\"") } == "\"'=\"\"q\"\"\"\r\n")
        #expect(csvRecord { $0.text("\rCR") } == "\"'\rCR\"\r\n")
        #expect(csvRecord(neutralise: false) { $0.text("\rCR") } == "\"\rCR\"\r\n")
        // An apostrophe elsewhere, numbers, server values and header names are left alone.
        #expect(csvRecord { $0.text("'q") } == "'q\r\n")
        #expect(
            csvRecord {
                $0.integer(-1)
                $0.plain("-id")
                $0.real(-1.5)
            } == "-1,-id,-1.5\r\n")
        var csv = CSVWriter(neutraliseFormulas: true)
        csv.header(["=sum", "a,b"])
        #expect(String(decoding: csv.bytes, as: UTF8.self) == "=sum,\"a,b\"\r\n")
    }

    @Test func emptyAndNullAreBothAnEmptyField() {
        #expect(
            csvRecord {
                $0.text(nil)
                $0.text("")
                $0.null()
                $0.text(utf8: UnsafeBufferPointer(start: nil, count: 0))
            } == ",,,\r\n")
        #expect(csvRecord { $0.text(nil) } == "\r\n")
    }

    @Test func scalarsAndLineEndings() {
        let fields: (inout CSVWriter) -> Void = {
            $0.plain("p-1")
            $0.integer(.min)
            $0.integer(0)
            $0.integer(42)
            $0.bool(true)
            $0.bool(false)
            $0.real(1e-05)
            $0.real(100)
            $0.real(.infinity)
            $0.real(-.infinity)
            $0.real(.nan)
            $0.timestamp(milliseconds: 1_767_225_600_123)
            $0.timestamp(milliseconds: -1)
        }
        let text = "p-1,-9223372036854775808,0,42,true,false,1e-05,100.0,Infinity,-Infinity,NaN,2026-01-01T00:00:00.123Z,1969-12-31T23:59:59.999Z"
        #expect(csvRecord(fields) == text + "\r\n")
        #expect(csvRecord(lineEnding: .lf, fields) == text + "\n")
    }

    @Test func pythonsCSVModuleReadsBackEveryCell() async throws {
        var csv = CSVWriter(neutraliseFormulas: false)
        csv.header(["cell", "copy"])
        for cell in awkwardCells {
            csv.text(cell)
            var bytes = Array(cell.utf8)
            bytes.withUnsafeMutableBufferPointer { csv.text(utf8: UnsafeBufferPointer($0)) }
            csv.endRecord()
        }
        let path = try temporaryFile(csv.bytes)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let rows = try await pythonCSV(path)
        #expect(rows == [["cell", "copy"]] + awkwardCells.map { [$0, $0] })
        // And our reader, with no null markers, agrees.
        var options = CSVOptions()
        options.nullValues = []
        options.delimiter = UInt8(ascii: ",")
        let (_, ours) = try readAll(MemoryByteSource(csv.bytes, chunkSize: 7), options)
        #expect(ours == awkwardCells.map { [$0, $0] as [String?] })
    }
}

@Suite("JSON string escaper (RFC 8259 §7)", .dedicatedThreads)
struct JSONStringTests {
    static let awkward: [String] =
        awkwardCells + [
            "", "\\", "back\\slash \\\" both", "nul\u{0}inside", "all controls: " + String((0..<0x20).map { Character(Unicode.Scalar(UInt8($0))) }),
            "del \u{7F} stays", "e\u{301} decomposed", "</script>", "\u{2028}\u{2029} separators",
            "emoji \u{1F469}\u{200D}\u{1F4BB} \u{1F1EB}\u{1F1F7}",
        ]

    static func escaped(_ text: String) -> String {
        var out: [UInt8] = []
        JSONString.append(text, to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    @Test(arguments: awkward)
    func foundationDecodesExactlyTheString(_ text: String) throws {
        let json = Self.escaped(text)
        #expect(!json.utf8.contains { $0 < 0x20 }, "no raw control character")
        let decoded = try JSONSerialization.jsonObject(with: Data(json.utf8), options: [.fragmentsAllowed]) as? String
        #expect(decoded.map { Array($0.unicodeScalars) } == Array(text.unicodeScalars))
    }

    @Test func shortFormsLowerCaseHexAndEverythingElseAsItIs() {
        #expect(Self.escaped("\"\\\n\r\t\u{0}\u{1F}\u{8}\u{C}") == #""\"\\\n\r\t\u0000\u001f\u0008\u000c""#)
        #expect(Self.escaped("/ \u{7F} caf\u{E9} \u{1F600}") == "\"/ \u{7F} caf\u{E9} \u{1F600}\"")
        #expect(Self.escaped("") == "\"\"")
    }

    @Test func invalidUTF8IsRepairedBeforeEscaping() throws {
        let bytes: [UInt8] = [0x41, 0xFF, 0x22, 0xC3, 0x28, 0xED, 0xA0, 0x80, 0x42]  // a stray byte, a broken pair, a surrogate
        var out: [UInt8] = []
        bytes.withUnsafeBytes { raw in UTF8Validation.withRepaired(raw) { JSONString.append(utf8: $0, to: &out) } }
        let decoded = try JSONSerialization.jsonObject(with: Data(out), options: [.fragmentsAllowed]) as? String
        #expect(decoded == String(decoding: bytes, as: UTF8.self))
        #expect(decoded?.contains("\u{FFFD}") == true)
        // Valid text is handed on as it is.
        let valid = Array("ok \u{E9}".utf8)
        valid.withUnsafeBytes { raw in
            UTF8Validation.withRepaired(raw) { #expect($0.baseAddress == raw.baseAddress?.assumingMemoryBound(to: UInt8.self)) }
        }
    }
}
