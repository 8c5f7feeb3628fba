import CairnFormats
import CairnSandbox
import Foundation

/// How a chunked run's input splits, and the `input` table every chunk loads into: found by
/// the run's plan phase (``PipelineEngine/plan(spec:filePath:targetBytes:control:)``).
struct ChunkedPlan: Codable, Sendable, Equatable {
    /// The chunks, in file order.
    var chunks: [InputChunk]
    /// The whole file's delimiter.
    var delimiter: UInt8
    /// The whole file's column names (its header's).
    var header: [String]
    /// `input`'s columns, as the whole run makes them (declared, or inferred from its sample).
    var columns: [PipelineSpec.Column]
    /// Which field of a record feeds each column.
    var sourceFields: [Int]
}

/// What the load phase of one chunk needs beside the run's spec.
struct ChunkLoad: Codable, Sendable, Equatable {
    /// The chunk (its range, and the row its first record is).
    var chunk: InputChunk
    /// The whole file's delimiter.
    var delimiter: UInt8
    /// The whole file's column names.
    var header: [String]
    /// `input`'s columns.
    var columns: [PipelineSpec.Column]
    /// Which field of a record feeds each column.
    var sourceFields: [Int]
}

extension PipelineEngine {
    /// Plans a chunked run of a CSV file: reads it as the whole run would until `input` exists
    /// (the header, then the type sample or the first record), in a database in memory, so the
    /// columns are the whole run's and every sampled record lies in the first chunk; then cuts
    /// the file at record ends about `targetBytes` apart (``ChunkPlanner``), at most 1,000 chunks.
    /// - Throws: `PipelineFailure` for a file the whole run would fail on in its sample (a bad
    ///   record with `onRowError: fail`, a header that is not CSV); `SandboxError` (`io`).
    static func plan(spec: PipelineSpec, filePath: String, targetBytes: Int64, control: SandboxControl) throws -> ChunkedPlan {
        let db = try SandboxDatabase(path: ":memory:", control: control, cacheBytes: 4 << 20)
        let loader = Loader(spec: spec, db: db, state: LoadState(), control: control, report: { _ in })
        loader.stopAfterSample = true
        try loader.loadCSV(path: filePath)
        let size = PipelineRunner.fileSize(filePath)
        let target = max(targetBytes, size / maxChunks + 1)
        do {
            let plan = try ChunkPlanner.planCSV(
                open: { try FileByteSource(path: filePath, range: $0..<size) }, size: size, options: spec.csvOptions, targetBytes: target,
                firstChunkAtLeast: loader.state.bytesRead)
            return ChunkedPlan(
                chunks: plan.chunks, delimiter: plan.delimiter, header: plan.columns, columns: loader.state.columns,
                sourceFields: loader.state.sourceFields)
        } catch let error as IngestError {
            throw Loader.streamFailure(error, format: "CSV")
        }
    }

    /// The most chunks one run has (a larger file gets larger chunks).
    static let maxChunks: Int64 = 1000

    /// Loads one chunk of a chunked run into a new database at `databasePath`, closed with its
    /// journal folded in so the file alone is the database (it travels through the blob store).
    /// The first chunk is loaded as the whole run loads its start (header, sample, type
    /// inference: the same code, so the same columns, rows and errors); the others with the
    /// plan's columns.
    /// - Throws: as ``load(spec:filePath:databasePath:control:resume:report:)``.
    static func loadChunk(
        spec: PipelineSpec, filePath: String, databasePath: String, control: SandboxControl, chunk: ChunkLoad, report: (LoadState) -> Void
    ) throws -> LoadState {
        let db = try SandboxDatabase(path: databasePath, control: control)
        // The whole file's delimiter: detected from the first chunk's lines alone it could differ.
        var spec = spec
        var options = spec.input.options ?? PipelineSpec.Options()
        options.delimiter = String(UnicodeScalar(chunk.delimiter))
        spec.input.options = options
        let state = try withoutActuallyEscaping(report) { report in
            let loader = Loader(spec: spec, db: db, state: LoadState(), control: control, report: report)
            if chunk.chunk.index == 0 {
                try loader.loadCSV(path: filePath)
            } else {
                try loader.loadCSVChunk(path: filePath, chunk: chunk)
            }
            try loader.finish()
            return loader.state
        }
        try db.execute("PRAGMA journal_mode=DELETE")
        return state
    }

    /// Makes a fresh `input` at `databasePath` with `columns` and appends the rows of each
    /// chunk's database in `pieces`, in order (so rows and row ids are the whole run's); each
    /// piece is removed once read.
    /// - Throws: `SandboxError`.
    static func merge(_ pieces: [String], columns: [PipelineSpec.Column], into databasePath: String, control: SandboxControl) throws {
        PipelineRunner.removeDatabase(databasePath)
        let db = try SandboxDatabase(path: databasePath, control: control)
        let definitions = columns.map { "\(SQLText.quoted($0.name)) \(Loader.declaredType($0.type))" }.joined(separator: ", ")
        try db.execute("CREATE TABLE input (\(definitions))")
        for piece in pieces {
            try db.appendRows(of: "input", fromDatabaseAt: piece)
            PipelineRunner.removeDatabase(piece)
        }
    }
}
