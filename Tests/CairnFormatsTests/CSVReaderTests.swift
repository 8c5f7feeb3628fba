import CairnFormats
import CairnTestSupport
import Foundation
import Testing

func readAll(_ source: some ByteSource, _ options: CSVOptions = CSVOptions()) throws -> (columns: [String], rows: [[String?]]) {
    let reader = try CSVReader(source: source, options: options)
    var rows: [[String?]] = []
    while let row = try reader.next() { rows.append(row) }
    return (reader.columns, rows)
}

/// Runs Python's `csv` module on a file (an independent RFC 4180 reader) and returns its rows.
func pythonCSV(_ path: String, delimiter: String = ",") async throws -> [[String]] {
    let script = """
        import csv, json, sys
        with open(sys.argv[1], newline='', encoding='utf-8-sig') as f:
            json.dump([r for r in csv.reader(f, delimiter=sys.argv[2]) if r], sys.stdout)
        """
    return try JSONSerialization.jsonObject(with: try await runPython(script, [path, delimiter])) as? [[String]] ?? []
}

func temporaryFile(_ bytes: [UInt8]) throws -> String {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("cairn-csv-\(UUID().uuidString).csv").path
    _ = FileManager.default.createFile(atPath: path, contents: Data(bytes))
    return path
}

@Suite("CSV reader (RFC 4180)", .dedicatedThreads)
struct CSVReaderTests {
    @Test func realFilesHaveTheDocumentedRecordCounts() throws {
        for (file, count, columns) in [
            ("weather.csv", 26_115, 15), ("airports.csv", 1_458, 8), ("penguins.csv", 344, 8), ("seattle-weather.csv", 1_461, 6),
        ] {
            let (names, rows) = try readAll(try FileByteSource(path: "\(sharedData)/\(file)"))
            #expect(rows.count == count, "\(file)")
            #expect(names.count == columns, "\(file)")
        }
        // weather.csv writes NA for missing values: they are nulls.
        let (names, rows) = try readAll(try FileByteSource(path: "\(sharedData)/weather.csv"))
        let gust = try #require(names.firstIndex(of: "wind_gust"))
        #expect(rows[0][gust] == nil)
        #expect(rows.contains { $0[gust] != nil })
    }

    @Test func flightsParseWithTheirEmptyDepartureTimes() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cairn-flights-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try await runProcess("/bin/sh", ["-c", "gzip -dc '\(sharedData)/flights.csv.gz' > '\(dir)/flights.csv'"])
        let reader = try CSVReader(source: try FileByteSource(path: "\(dir)/flights.csv"))
        let depTime = try #require(reader.columns.firstIndex(of: "dep_time"))
        var rows = 0
        var empty = 0
        while let row = try reader.next() {
            rows += 1
            if row[depTime] == nil { empty += 1 }
        }
        #expect(reader.columns.count == 19)
        #expect(rows == 336_776)
        #expect(empty == 8_255)
    }

    @Test func agreesWithPythonsCSVModuleOnQuotesLineBreaksAndUnicode() async throws {
        let text =
            "\u{FEFF}id,name,note\r\n1,\"Smith, Jane\",\"said \"\"hi\"\"\"\r\n2,Zoë,\"two\r\nlines\"\r\n\r\n3,\"\",plain\n4,東京,\"a\nb\"\n5,x,\"\"\"quoted\"\"\""
        let path = try temporaryFile(Array(text.utf8))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let expected = try await pythonCSV(path)
        // Every chunk size, so records and quotes straddle reads at every position.
        for chunk in [1, 2, 3, 5, 7, 64, 1 << 20] {
            let (columns, rows) = try readAll(
                MemoryByteSource(text, chunkSize: chunk),
                {
                    var options = CSVOptions()
                    options.nullValues = []
                    return options
                }())
            #expect([columns] + rows.map { $0.map { $0 ?? "<null>" } } == expected, "chunk \(chunk)")
        }
        let (_, rows) = try readAll(MemoryByteSource(text))
        #expect(rows[2][1] == "", "a quoted empty field is text, not null")
        #expect(rows[0][1] == "Smith, Jane")
    }

    @Test func detectsTheDelimiter() throws {
        for (delimiter, name) in [(";", "semicolon"), ("\t", "tab"), ("|", "pipe"), (",", "comma")] {
            let text = ["a", "b", "c"].joined(separator: delimiter) + "\n" + ["1", "\"x\(delimiter)y\"", "3"].joined(separator: delimiter) + "\n"
            let reader = try CSVReader(source: MemoryByteSource(text))
            #expect(reader.delimiter == Array(delimiter.utf8)[0], "\(name)")
            #expect(try reader.next() == ["1", "x\(delimiter)y", "3"], "\(name)")
        }
        // Commas inside a semicolon file's fields do not fool it.
        let reader = try CSVReader(source: MemoryByteSource("price;note\n1,5;\"a, b, c\"\n2,0;d\n"))
        #expect(reader.delimiter == UInt8(ascii: ";"))
    }

    @Test func errorsNameTheRowAndByteOffset() throws {
        // A ragged row: row 2 (the header is not counted), starting at byte 10.
        let ragged = try CSVReader(source: MemoryByteSource("a,b\n1,2\n3,4,5\n6,7\n"))
        #expect(try ragged.next() == ["1", "2"])
        #expect(throws: IngestError(.malformed, "the record has 3 fields, the header 2", row: 2, byteOffset: 8)) { try ragged.next() }
        // The reader can go on after a bad row (onRowError: skip).
        #expect(try ragged.next() == ["6", "7"])

        let unterminated = try CSVReader(source: MemoryByteSource("a,b\n1,\"open\n2,3\n"))
        #expect(throws: IngestError(.malformed, "a quoted field is never closed", row: 1, byteOffset: 6)) { try unterminated.next() }

        var invalid = Array("a,b\n1,ok\n2,caf".utf8)
        invalid += [0xC3, 0x28]  // a broken two-byte sequence at byte 14
        let badUTF8 = try CSVReader(source: MemoryByteSource(invalid))
        #expect(try badUTF8.next() == ["1", "ok"])
        #expect(throws: IngestError(.invalidUTF8, "the text is not valid UTF-8", row: 2, byteOffset: 14)) { try badUTF8.next() }

        let afterQuote = try CSVReader(source: MemoryByteSource("a,b\n\"x\"y,2\n"))
        #expect(throws: IngestError(.malformed, "unexpected text after a closing quote", row: 1, byteOffset: 7)) { try afterQuote.next() }
    }

    @Test func withoutAHeaderColumnsAreNumbered() throws {
        var options = CSVOptions()
        options.header = false
        let (columns, rows) = try readAll(MemoryByteSource("1,2\n3,4\n"), options)
        #expect(columns == ["column1", "column2"])
        #expect(rows == [["1", "2"], ["3", "4"]])
    }

    @Test func aCheckpointResumesAfterTheLastRecordRead() throws {
        let text = "n,sq\n" + (1...500).map { "\($0),\"\($0 * $0)\"" }.joined(separator: "\r\n") + "\r\n"
        let first = try CSVReader(source: MemoryByteSource(text, chunkSize: 97))
        for _ in 0..<123 { _ = try first.next() }
        let checkpoint = first.bytesConsumed
        let resumed = try CSVReader(source: MemoryByteSource(text, chunkSize: 89), resumingAt: checkpoint)
        #expect(resumed.columns == ["n", "sq"])
        var rest: [[String?]] = []
        while let row = try resumed.next() { rest.append(row) }
        #expect(rest.count == 377)
        #expect(rest.first == ["124", "15376"])
        #expect(rest.last == ["500", "250000"])
    }

    @Test func aRecordLongerThanTheLimitIsRefused() throws {
        var options = CSVOptions()
        options.maxRecordBytes = 1 << 20
        let text = "a\n\"" + String(repeating: "x", count: 3 << 20) + "\"\n"
        let reader = try CSVReader(source: MemoryByteSource(text, chunkSize: 1 << 16), options: options)
        #expect(throws: IngestError.self) { try reader.next() }
    }
}

@Suite("Column type inference", .dedicatedThreads)
struct ColumnTypeInferenceTests {
    @Test func narrowestTypeEverySampleFits() {
        var inference = ColumnTypeInference(columns: 7)
        inference.add(["1", "1.5", "true", "2013-01-01T06:00:00Z", "x", nil, "7"])
        inference.add(["-20", "2", "FALSE", "2013-01-01", "y", nil, "8.25"])
        inference.add([nil, "-3e2", "true", nil, "1", nil, "nan"])
        #expect(inference.types == [.integer, .real, .boolean, .timestamp, .text, .text, .text])
        // Infinity as Cairn's CSV output writes it is a number; Double's other spellings are not.
        var infinite = ColumnTypeInference(columns: 3)
        infinite.add(["Infinity", "inf", "1.5"])
        infinite.add(["-Infinity", "-inf", "+Infinity"])
        #expect(infinite.types == [.real, .text, .real])
    }

    @Test func weatherColumnsAreInferredFromTheFirstThousandRecords() throws {
        let reader = try CSVReader(source: try FileByteSource(path: "\(sharedData)/weather.csv"))
        var inference = ColumnTypeInference(columns: reader.columns.count)
        while inference.wantsMore, let row = try reader.next() { inference.add(row) }
        let types = Dictionary(uniqueKeysWithValues: zip(reader.columns, inference.types))
        #expect(types["origin"] == .text)
        #expect(types["year"] == .integer)
        #expect(types["temp"] == .real)
        #expect(types["wind_gust"] == .real, "NA is null, not text")
        #expect(types["time_hour"] == .timestamp)
        #expect(inference.samples == 1000)
    }

    /// Every record of `bytes` as the bulk loader's raw path sees it (`withNextRecord`: null
    /// markers as nil, doubled quotes undone) or the error it throws, reading on past bad rows.
    static func rawRecords(_ bytes: [UInt8], _ options: CSVOptions) throws -> [Result<[String?], IngestError>] {
        let reader = try CSVReader(source: MemoryByteSource(bytes, chunkSize: 7), options: options)
        var out: [Result<[String?], IngestError>] = []
        while true {
            do {
                guard let record = try reader.withNextRecord({ record in (0..<record.count).map { record.string($0) } }) else { break }
                out.append(.success(record))
            } catch let error as IngestError {
                out.append(.failure(error))
                if reader.streamError != nil { break }
            }
        }
        return out
    }

    /// The same through `next()`, which checks and converts field by field.
    static func stringRecords(_ bytes: [UInt8], _ options: CSVOptions) throws -> [Result<[String?], IngestError>] {
        let reader = try CSVReader(source: MemoryByteSource(bytes, chunkSize: 7), options: options)
        var out: [Result<[String?], IngestError>] = []
        while true {
            do {
                guard let record = try reader.next() else { break }
                out.append(.success(record))
            } catch let error as IngestError {
                out.append(.failure(error))
                if reader.streamError != nil { break }
            }
        }
        return out
    }

    @Test func theRawPathFindsTheNullsAndBadBytesThatStringsFind() throws {
        // The raw path checks UTF-8 once over a record's span and rules null markers out by
        // their length: it must agree with the field-by-field path on every byte.
        let lines: [[UInt8]] = [
            Array("1,ok,NA,\"q\"\"x\"\n".utf8),
            Array("2,caf".utf8) + [0xC3] + Array(",x,y\n".utf8),  // a sequence cut by the delimiter
            Array("3,a,".utf8) + [0xE2, 0x82] + Array(",z\n".utf8),
            Array("4,\"".utf8) + [0xFF] + Array("\",,\n".utf8),  // in quotes
            Array("5,\"a\"\"b\",NULL,".utf8) + [0xF0, 0x9F, 0x98, 0x80] + Array("\n".utf8),
            Array("6,,\"\",LONGNULLMARKERLONGNULLMARKERLONGNULLMARKERLONGNULLMARKERLONGNULLMARKER\n".utf8),
            Array("7,,\"NA\",N\n".utf8),
            Array("8,x,y,".utf8) + [0xED, 0xA0, 0x80] + Array("\n".utf8),  // a surrogate
        ]
        let bytes = Array("a,b,c,d\n".utf8) + lines.joined()
        var options = CSVOptions()
        for nulls: Set<String> in [["", "NA", "NULL"], ["N", String(repeating: "LONGNULLMARKER", count: 5)], []] {
            options.nullValues = nulls
            let raw = try Self.rawRecords(bytes, options)
            let strings = try Self.stringRecords(bytes, options)
            #expect(raw.count == 8)
            #expect(raw == strings, "null values \(nulls)")
        }
        options.nullValues = ["", "NA", "NULL"]
        #expect(try Self.rawRecords(bytes, options)[1] == .failure(IngestError(.invalidUTF8, "the text is not valid UTF-8", row: 2, byteOffset: 28)))
    }

    @Test func timestampBytesFitAsTheirTextDoes() {
        let values = [
            "2013-01-01T10:00:00Z", "2024-02-29", "2023-02-29", "2024-02-29T23:59:59.9999+01:00", "2024-13-01", "2024-01-01T24:00:00Z",
            "2024-01-01t10:00:00Z", "2024-01-01 10:00:00Z", "20240101", "2024-01-0", "9999-12-31T23:59:59.9996Z", "", "x", "2024-01-01T10:00:00",
            "0000-01-01", "２０２４-01-01",
        ]
        for value in values {
            var text = value
            let bytes = text.withUTF8 { ColumnTypeInference.fitsTimestamp(utf8: $0) }
            #expect(bytes == ColumnTypeInference.fits(value, .timestamp), "\(value)")
        }
        #expect(ColumnTypeInference.fits("2024-02-29", .timestamp))
        #expect(!ColumnTypeInference.fits("2023-02-29", .timestamp))
    }
}
