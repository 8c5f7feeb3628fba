import CairnFormats
import CairnTestSupport
import Foundation
import Testing

/// What a reader makes of some bytes: each record (its row, the offset it starts at, its
/// fields) or error (row, offset, message), in order, reading on past bad rows as a run with
/// `onRowError: skip` does, and stopping at a stream error.
private enum Outcome: Equatable, CustomStringConvertible {
    case record(row: Int, offset: Int64, fields: [String?])
    case error(row: Int?, offset: Int64?, message: String)

    var description: String {
        switch self {
        case .record(let row, let offset, let fields): return "row \(row) @\(offset) \(fields)"
        case .error(let row, let offset, let message): return "error row \(row ?? -1) @\(offset ?? -1) \(message)"
        }
    }
}

private func outcomes(_ reader: CSVReader) -> [Outcome] {
    var all: [Outcome] = []
    while true {
        let offset = reader.bytesConsumed
        do {
            guard let record = try reader.next() else { break }
            all.append(.record(row: reader.row, offset: offset, fields: record))
        } catch let error as IngestError {
            all.append(.error(row: error.row, offset: error.byteOffset, message: error.message))
            if reader.streamError != nil { break }
        } catch {
            Issue.record("unexpected \(error)")
            break
        }
    }
    return all
}

/// Plans `bytes` in chunks of `target` bytes, reads every chunk on its own (the first with the
/// whole-file reader over its range, the others with the chunk reader) and returns the plan and
/// what the chunks read, in order.
private func readInChunks(_ bytes: [UInt8], target: Int64, options: CSVOptions = CSVOptions()) throws -> (CSVChunkPlan, [Outcome]) {
    let plan = try ChunkPlanner.planCSV(
        open: { MemoryByteSource(Array(bytes[Int($0)...]), chunkSize: 5) }, size: Int64(bytes.count), options: options, targetBytes: target)
    var all: [Outcome] = []
    for chunk in plan.chunks {
        let slice = Array(bytes[Int(chunk.start)..<Int(chunk.end)])
        // The first chunk is read as the whole file's start, with the whole file's delimiter.
        var first = options
        first.delimiter = plan.delimiter
        let reader =
            chunk.index == 0
            ? try CSVReader(source: MemoryByteSource(slice, chunkSize: 3), options: first)
            : try CSVReader(
                source: MemoryByteSource(slice, chunkSize: 3), options: options, chunk: chunk, delimiter: plan.delimiter, columns: plan.columns)
        all += outcomes(reader)
    }
    return (plan, all)
}

/// Checks that every chunk size from 1 byte to past the file's size reads `text` exactly as
/// the whole file reads: the same records, row numbers, offsets and errors; chunks are
/// contiguous and start at record starts.
private func expectChunksReadAsWhole(_ text: String, options: CSVOptions = CSVOptions(), sourceLocation: SourceLocation = #_sourceLocation) throws {
    let bytes = Array(text.utf8)
    let whole = outcomes(try CSVReader(source: MemoryByteSource(bytes), options: options))
    var split = false
    for target in 1...(bytes.count + 2) {
        let (plan, chunked) = try readInChunks(bytes, target: Int64(target), options: options)
        #expect(chunked == whole, "chunks of \(target) bytes: \(plan.chunks)", sourceLocation: sourceLocation)
        #expect(plan.chunks.first?.start == 0 && plan.chunks.last?.end == Int64(bytes.count), sourceLocation: sourceLocation)
        for (previous, next) in zip(plan.chunks, plan.chunks.dropFirst()) {
            #expect(previous.end == next.start && next.start >= Int64(target), sourceLocation: sourceLocation)
        }
        if plan.chunks.count > 1 { split = true }
    }
    #expect(split, "the file split at some chunk size", sourceLocation: sourceLocation)
}

@Suite("Chunk planner: CSV and NDJSON cut at record starts", .dedicatedThreads)
struct ChunkPlannerTests {
    /// Quoted fields hold line feeds, CRLFs, delimiters and doubled quotes; with every chunk
    /// size, some chunk edge falls on each of those bytes, and no record is cut.
    @Test func quotedLineBreaksAtEveryChunkEdge() throws {
        try expectChunksReadAsWhole(
            "id,note,n\n1,\"two\nlines\",5\n2,\"a \"\"quoted\"\" word, and\n3,not a record\",6\n3,plain,7\n4,\"\n\",8\n"
                + "5,\"ends with a quote\"\"\",9\n")
    }

    @Test func crlfLineEndsBlankLinesAndABareCR() throws {
        try expectChunksReadAsWhole("a,b\r\n1,\"x\r\ny\"\r\n\r\n2,z\r\n\n\n3,\"\r\n\"\r4,w\r\n")
    }

    /// The header is read by the first chunk only; without one the first record is data.
    @Test func headerAndNoHeader() throws {
        let text = "name;count\n\"a;b\";1\nc;2\n\"d\ne\";3\n"
        try expectChunksReadAsWhole(text)
        var options = CSVOptions()
        options.header = false
        try expectChunksReadAsWhole(text, options: options)
        // A byte-order mark stays the first chunk's.
        try expectChunksReadAsWhole("\u{FEFF}x,y\n1,\"2\n3\"\n4,5\n", options: options)
        try expectChunksReadAsWhole("\u{FEFF}x,y\n1,\"2\n3\"\n4,5\n")
    }

    /// Bad rows keep their whole-file row numbers and offsets in later chunks; a quote inside an
    /// unquoted field is data (plain quote parity would think a quoted field opened there); a
    /// file that stops being CSV fails in its last chunk where the whole file does.
    @Test func badRowsStrayQuotesAndStreamErrors() throws {
        try expectChunksReadAsWhole("a,b\n1,2\n3\n4,5,6\n7,8\n\u{FF}x,9\n10,11\n")
        try expectChunksReadAsWhole("a,b\n1,x\"y\n2,\"z\nw\"\n3,q\"\"\n4,5\n")
        try expectChunksReadAsWhole("a,b\n1,2\n3,\"4\n5,6\n7,8\n")
        try expectChunksReadAsWhole("a,b\n1,2\n3,\"4\"x\n5,6\n")
    }

    @Test func aFileSmallerThanAChunkIsOneChunk() throws {
        let bytes = Array("a,b\n1,\"2\n3\"\n".utf8)
        let (plan, _) = try readInChunks(bytes, target: ChunkPlanner.defaultTargetBytes)
        #expect(plan.chunks == [InputChunk(index: 0, start: 0, end: Int64(bytes.count), firstRow: 1)])
        #expect(plan.columns == ["a", "b"])
        let empty = try ChunkPlanner.planCSV(open: { _ in MemoryByteSource([UInt8]()) }, size: 0, options: CSVOptions(), targetBytes: 1)
        #expect(empty.chunks == [InputChunk(index: 0, start: 0, end: 0, firstRow: 1)])
    }

    /// The first chunk holds at least `firstChunkAtLeast` bytes (the records a run samples for
    /// column types); later chunks are cut by the target alone.
    @Test func theFirstChunkHoldsTheSample() throws {
        let text = "n\n" + (1...100).map { "\($0)\n" }.joined()
        let bytes = Array(text.utf8)
        let plan = try ChunkPlanner.planCSV(
            open: { MemoryByteSource(Array(bytes[Int($0)...])) }, size: Int64(bytes.count), options: CSVOptions(), targetBytes: 20,
            firstChunkAtLeast: 150)
        #expect(plan.chunks[0].end >= 150 && plan.chunks[1].end - plan.chunks[1].start < 25, "\(plan.chunks)")
        #expect(plan.dataStart == 2)
    }

    /// flights.csv (31 MB) planned in 4 MiB chunks from the file: records, rows and offsets as
    /// the whole file's, and the chunks about 4 MiB each.
    @Test func flightsInChunksReadAsTheWholeFile() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("cairn-chunk-flights-\(getpid()).csv").path
        try await runProcess("/bin/sh", ["-c", "gunzip -c \"$0\" > \"$1\"", "\(sharedData)/flights.csv.gz", path])
        defer { try? FileManager.default.removeItem(atPath: path) }
        let size = (try FileManager.default.attributesOfItem(atPath: path)[.size] as! NSNumber).int64Value
        let plan = try ChunkPlanner.planCSV(
            open: { try FileByteSource(path: path, range: $0..<size) }, size: size, options: CSVOptions(), targetBytes: 4 << 20)
        #expect(plan.chunks.count == Int((size + (4 << 20) - 1) / (4 << 20)), "\(plan.chunks)")
        let whole = try CSVReader(source: FileByteSource(path: path))
        for chunk in plan.chunks {
            let source = try FileByteSource(path: path, range: chunk.start..<chunk.end)
            let reader =
                chunk.index == 0
                ? try CSVReader(source: source)
                : try CSVReader(source: source, options: CSVOptions(), chunk: chunk, delimiter: plan.delimiter, columns: plan.columns)
            while let record = try reader.next() {
                let expected = try #require(try whole.next())
                #expect(record == expected && reader.row == whole.row && reader.bytesConsumed == whole.bytesConsumed)
                if record != expected { return }
            }
            #expect(reader.bytesConsumed == chunk.end)
        }
        #expect(try whole.next() == nil)
        #expect(whole.row == 336_776)
    }

    /// NDJSON splits after line feeds; `firstRow` skips blank lines as the reader does.
    @Test func ndjsonSplitsAfterLineFeeds() throws {
        let bytes = Array("{\"a\":1}\n\n{\"a\":2}\n  \n{\"a\":3}\r\n{\"a\":4}".utf8)
        let chunks = try ChunkPlanner.planLines(
            open: { MemoryByteSource(Array(bytes[Int($0)...]), chunkSize: 4) }, size: Int64(bytes.count), targetBytes: 9)
        #expect(chunks.map(\.firstRow) == [1, 2, 3, 4], "\(chunks)")
        for chunk in chunks.dropFirst() { #expect(bytes[Int(chunk.start) - 1] == 0x0A) }
        #expect(chunks.last?.end == Int64(bytes.count))
        #expect(try ChunkPlanner.planLines(open: { _ in MemoryByteSource(bytes) }, size: Int64(bytes.count), targetBytes: 1 << 20).count == 1)
    }
}
