import CairnFormats
import CairnSandbox
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A record that could not be loaded: where it is and why.
struct RowError: Codable, Sendable, Equatable {
    /// The data record, from 1 (a header is not counted).
    var row: Int
    /// The byte offset of the problem (or the record), when the format knows it.
    var byteOffset: Int64?
    /// The column, for a value that does not fit its column's type.
    var column: String?
    /// What is wrong.
    var message: String

    var text: String {
        var place = "row \(row)"
        if let byteOffset { place += " (byte \(byteOffset))" }
        if let column { place += ", column \(column)" }
        return "\(place): \(message)"
    }
}

/// How far loading got: saved as part of the run's checkpoint after every committed batch.
struct LoadState: Codable, Sendable, Equatable {
    /// The `input` table's columns (empty until the table exists).
    var columns: [PipelineSpec.Column] = []
    /// For CSV: which field of a record feeds each column.
    var sourceFields: [Int] = []
    /// Records read (loaded or not).
    var recordsRead = 0
    /// Rows committed to `input`.
    var rowsLoaded = 0
    /// Input bytes behind the committed rows (CSV and JSON).
    var bytesRead: Int64 = 0
    /// Bad records met.
    var errorCount = 0
    /// The first `PipelineEngine.maxErrors` of them.
    var errors: [RowError] = []
    /// Whether the whole file is loaded.
    var done = false
}

/// Thrown when the work database does not match the checkpoint (a lost write): the load
/// starts again from the beginning.
struct LoadRestart: Error {}

extension PipelineEngine {
    // MARK: Load

    /// Loads `filePath` into `input` of the database at `databasePath`, resuming after `resume`.
    /// `report` gets the state after every commit.
    /// - Throws: `PipelineFailure` (bad data with `onRowError: fail`, or a file that cannot be
    ///   parsed), `LoadRestart`, `SandboxError` (`cancelled`, `io`).
    static func load(
        spec: PipelineSpec, filePath: String, databasePath: String, control: SandboxControl, resume: LoadState?,
        report: (LoadState) -> Void
    ) throws -> LoadState {
        let db = try SandboxDatabase(path: databasePath, control: control)
        // The loader lives only for this call.
        return try withoutActuallyEscaping(report) { report in
            let loader = Loader(spec: spec, db: db, state: resume ?? LoadState(), control: control, report: report)
            if let resume, !resume.columns.isEmpty { try loader.reopen(expectedRows: resume.rowsLoaded) }
            switch spec.input.format {
            case .csv: try loader.loadCSV(path: filePath)
            case .json, .ndjson: try loader.loadJSON(path: filePath)
            case .xml: try loader.loadXML(path: filePath)
            }
            try loader.finish()
            return loader.state
        }
    }

    /// Appends rows to `input` and keeps the load state.
    final class Loader {
        let spec: PipelineSpec
        let db: SandboxDatabase
        var state: LoadState
        let control: SandboxControl
        let report: (LoadState) -> Void
        var insert: SandboxStatement?
        var types: [ColumnType] = []
        var inBatch = 0
        var columnIndex: [String: Int] = [:]  // JSON/XML field name → column
        /// Each column's parameter of `insert`, or 0 for a column the query does not read: those
        /// are left NULL (projection pushdown, learnt from the authorizer while compiling the
        /// query against the new table). The insert names only the loaded columns, so SQLite
        /// copies, and clears after each row, only those.
        var parameters: [Int32] = []
        let recordsAlreadyRead: Int
        /// Stop once the table exists and the records read to make it (the type sample, or the
        /// first record with declared columns) are in: planning a chunked run learns its
        /// columns, and where its first chunk may end, exactly as the whole run would.
        var stopAfterSample = false

        init(spec: PipelineSpec, db: SandboxDatabase, state: LoadState, control: SandboxControl, report: @escaping (LoadState) -> Void) {
            self.spec = spec
            self.db = db
            self.state = state
            self.control = control
            self.report = report
            self.recordsAlreadyRead = state.recordsRead
        }

        /// A resumed load: the table must hold at least the checkpoint's rows; rows committed
        /// after the last saved checkpoint are removed (their records are read again).
        func reopen(expectedRows: Int) throws {
            let count = try db.prepare("SELECT count(*) FROM input")
            guard try count.step() else { throw LoadRestart() }
            let rows = Int(count.int64(0))
            if rows < expectedRows { throw LoadRestart() }
            if rows > expectedRows { try db.execute("DELETE FROM input WHERE rowid > \(expectedRows)") }
            try prepareInsert()
            try db.execute("BEGIN")
        }

        func createTable(_ columns: [PipelineSpec.Column]) throws {
            state.columns = columns
            let definitions = columns.map { "\(SQLText.quoted($0.name)) \(Self.declaredType($0.type))" }.joined(separator: ", ")
            try db.execute("CREATE TABLE input (\(definitions))")
            try prepareInsert()
            try db.execute("BEGIN")
        }

        private func prepareInsert() throws {
            // The query is compiled once here, so an SQL error or a refusal ends the run before
            // the file is loaded.
            let read = try db.columnsRead(by: spec.sql)
            let loaded = state.columns.map { read?.contains($0.name.lowercased()) ?? true }
            types = state.columns.map(\.type)
            for (index, column) in state.columns.enumerated() { columnIndex[column.name] = index }
            var names: [String] = []
            parameters = loaded.enumerated().map { index, isLoaded in
                guard isLoaded else { return 0 }
                names.append(SQLText.quoted(state.columns[index].name))
                return Int32(names.count)
            }
            if names.isEmpty {
                insert = try db.prepare("INSERT INTO input DEFAULT VALUES")
            } else {
                let marks = Array(repeating: "?", count: names.count).joined(separator: ", ")
                insert = try db.prepare("INSERT INTO input (\(names.joined(separator: ", "))) VALUES (\(marks))")
            }
        }

        /// SQLite declared types; `BOOLEAN` and `TIMESTAMP` survive into query results'
        /// declared types, so JSON output can write booleans as `true`/`false`.
        static func declaredType(_ type: ColumnType) -> String {
            switch type {
            case .integer: return "INTEGER"
            case .real: return "REAL"
            case .boolean: return "BOOLEAN"
            case .timestamp: return "TIMESTAMP"
            case .text: return "TEXT"
            }
        }

        /// Counts a bad record; with `fail` the run ends here.
        func rowError(_ error: RowError) throws {
            if spec.onRowError == .fail {
                state.errorCount += 1
                state.errors.append(error)
                throw PipelineFailure(message: "the input has a bad record: \(error.text)")
            }
            state.errorCount += 1
            if state.errors.count < maxErrors { state.errors.append(error) }
        }

        /// Runs the insert once its parameters are bound; commits a batch when full.
        /// - Parameter keepingBindings: the caller binds every parameter of every row, so the
        ///   bindings need not be cleared (clearing frees SQLite's value buffers each row).
        func commitRow(bytesRead: Int64?, keepingBindings: Bool = false) throws {
            guard let insert else { return }
            _ = try insert.step()
            if keepingBindings { insert.resetKeepingBindings() } else { insert.reset() }
            state.rowsLoaded += 1
            inBatch += 1
            if inBatch >= batchRows {
                if let bytesRead { state.bytesRead = bytesRead }
                try commit()
            }
        }

        func commit() throws {
            try db.execute("COMMIT")
            inBatch = 0
            report(state)
            if control.isCancelled { throw SandboxError(.cancelled, "the run was cancelled") }
            try db.execute("BEGIN")
        }

        func finish() throws {
            if insert == nil { try createTable(state.columns.isEmpty ? [PipelineSpec.Column(name: "value", type: .text)] : state.columns) }
            state.done = true
            try db.execute("COMMIT")
            report(state)
        }

        // MARK: Binding

        /// Binds a text value (CSV or XML) to column `index` by its type; a column the query
        /// does not read is only checked.
        /// - Returns: the problem, when it does not fit.
        func bind(text value: String, to index: Int) -> String? {
            guard let insert else { return nil }
            let parameter = parameters[index]
            let bind = parameter > 0
            switch types[index] {
            case .text:
                if bind { insert.bind(parameter, value) }
            case .integer:
                guard let number = Int64(value) ?? Int64(value.trimmingCharacters(in: .whitespaces)) else {
                    return "'\(Self.excerpt(value))' is not an integer"
                }
                if bind { insert.bind(parameter, number) }
            case .real:
                guard ColumnTypeInference.fits(value, .real), let number = Double(value) else { return "'\(Self.excerpt(value))' is not a number" }
                if bind { insert.bind(parameter, number) }
            case .boolean:
                switch value.lowercased() {
                case "true": if bind { insert.bind(parameter, Int64(1)) }
                case "false": if bind { insert.bind(parameter, Int64(0)) }
                default: return "'\(Self.excerpt(value))' is not true or false"
                }
            case .timestamp:
                guard ColumnTypeInference.fits(value, .timestamp) else { return "'\(Self.excerpt(value))' is not an RFC 3339 timestamp or date" }
                if bind { insert.bind(parameter, value) }
            }
            return nil
        }

        /// Binds a JSON value to column `index` by its type; a column the query does not read
        /// is only checked. Strings are read as text would be (`"5"` fits an integer column),
        /// other JSON values must match.
        func bind(_ value: FieldValue, to index: Int) -> String? {
            guard let insert else { return nil }
            let parameter = parameters[index]
            let type = types[index]
            let target = parameter > 0 ? insert : nil  // nil: only checked
            switch value {
            case .null: return nil
            case .text(let text):
                return bind(text: text, to: index)
            case .integer(let number):
                switch type {
                case .integer: target?.bind(parameter, number)
                case .real: target?.bind(parameter, Double(number))
                case .text: target?.bind(parameter, String(number))
                default: return "a number does not fit a \(type.rawValue) column"
                }
            case .real(let number):
                switch type {
                case .real: target?.bind(parameter, number)
                case .text: target?.bind(parameter, "\(number)")
                default: return "\(number) does not fit a \(type.rawValue) column"
                }
            case .bool(let flag):
                switch type {
                case .boolean: target?.bind(parameter, Int64(flag ? 1 : 0))
                case .text: target?.bind(parameter, flag ? "true" : "false")
                default: return "a boolean does not fit a \(type.rawValue) column"
                }
            case .json(let text):
                guard type == .text else { return "an array or object does not fit a \(type.rawValue) column" }
                target?.bind(parameter, text)
            }
            return nil
        }

        static func excerpt(_ value: String) -> String {
            value.count > 40 ? String(value.prefix(40)) + "…" : value
        }

        // MARK: CSV

        func loadCSV(path: String) throws {
            let reader: CSVReader
            do {
                reader = try CSVReader(source: try FileByteSource(path: path), options: spec.csvOptions, resumingAt: state.bytesRead)
            } catch let error as IngestError {
                throw Self.openFailure(error, format: "CSV")
            }
            var sample: [(fields: [String?], row: Int, offset: Int64)] = []
            var inference: ColumnTypeInference?
            if state.columns.isEmpty {
                let (columns, fields, declared) = try csvColumns(header: reader.columns)
                state.sourceFields = fields
                if declared {
                    try createTable(columns)
                } else {
                    state.columns = columns
                    inference = ColumnTypeInference(columns: columns.count, limit: sampleRecords)
                }
            }
            var ended = false  // the input is done
            while true {
                let offset = reader.bytesConsumed
                let record: [String?]
                do {
                    guard let next = try reader.next() else {
                        ended = true
                        break
                    }
                    record = next
                } catch let error as IngestError {
                    // Only a bad row may be skipped; past a stream error the rest of the file is
                    // unreadable, and a run that stopped there would succeed on part of it.
                    if reader.streamError != nil { throw Self.streamFailure(error, format: "CSV") }
                    let row = recordsAlreadyRead + (error.row ?? reader.row)
                    state.recordsRead = max(recordsAlreadyRead + reader.row, row)
                    try rowError(RowError(row: row, byteOffset: error.byteOffset, column: nil, message: error.message))
                    continue
                }
                state.recordsRead = recordsAlreadyRead + reader.row
                if inference != nil {
                    inference!.add(state.sourceFields.map { $0 < record.count ? record[$0] : nil })
                    sample.append((record, state.recordsRead, offset))
                    if inference!.wantsMore { continue }
                    try flushCSVSample(&sample, inference: &inference, reader: reader)
                    break
                }
                try insertCSV(record, row: state.recordsRead, offset: offset, bytesAfter: reader.bytesConsumed)
                if insert != nil { break }  // the table exists: the fast path takes over
            }
            if !ended && inference == nil && insert != nil && !stopAfterSample { try loadCSVRecords(reader) }
            if inference != nil { try flushCSVSample(&sample, inference: &inference, reader: reader) }
            state.bytesRead = reader.bytesConsumed
        }

        /// Creates the table from the sampled types and loads the sampled records.
        private func flushCSVSample(
            _ sample: inout [(fields: [String?], row: Int, offset: Int64)], inference: inout ColumnTypeInference?, reader: CSVReader
        ) throws {
            guard let types = inference?.types else { return }
            inference = nil
            try createTable(zip(state.columns, types).map { PipelineSpec.Column(name: $0.name, type: $1) })
            for (index, entry) in sample.enumerated() {
                let after = index + 1 < sample.count ? sample[index + 1].offset : reader.bytesConsumed
                try insertCSV(entry.fields, row: entry.row, offset: entry.offset, bytesAfter: after)
            }
            sample.removeAll()
        }

        /// What an error opening the file becomes: a failed open is retried (`SandboxError` `io`:
        /// the file may be readable on the next attempt); a start that is not the format ends
        /// the run.
        static func openFailure(_ error: IngestError, format: String) -> any Error {
            if error.kind == .io { return SandboxError(.io, "opening the input failed: \(error)") }
            return PipelineFailure(message: "the file cannot be read as \(format): \(error)")
        }

        /// What a reader error the file cannot be read past becomes: a failed read is retried
        /// (`SandboxError` `io`); anything else (a quote never closed, a limit passed) ends the
        /// run, whatever `onRowError` says.
        static func streamFailure(_ error: IngestError, format: String) -> any Error {
            if error.kind == .io { return SandboxError(.io, "reading the input failed: \(error)") }
            return PipelineFailure(message: "the file cannot be read as \(format) past this point: \(error)")
        }

        private func insertCSV(_ record: [String?], row: Int, offset: Int64, bytesAfter: Int64) throws {
            for (column, field) in state.sourceFields.enumerated() {
                guard field < record.count, let value = record[field] else { continue }
                if let problem = bind(text: value, to: column) {
                    insert?.reset()
                    try rowError(RowError(row: row, byteOffset: offset, column: state.columns[column].name, message: problem))
                    return
                }
            }
            try commitRow(bytesRead: bytesAfter)
        }

        /// One chunk after the first of a chunked run (``PipelineEngine/loadChunk(spec:filePath:databasePath:control:chunk:report:)``):
        /// the file holds the chunk's bytes only; the table has the columns the plan found in
        /// the first chunk, and every record is loaded as the whole run loads those past its
        /// sample, with the whole file's row numbers and byte offsets.
        func loadCSVChunk(path: String, chunk: ChunkLoad) throws {
            let reader: CSVReader
            do {
                reader = try CSVReader(
                    source: try FileByteSource(path: path), options: spec.csvOptions, chunk: chunk.chunk, delimiter: chunk.delimiter,
                    columns: chunk.header)
            } catch let error as IngestError {
                throw Self.openFailure(error, format: "CSV")
            }
            state.sourceFields = chunk.sourceFields
            try createTable(chunk.columns)
            try loadCSVRecords(reader)
            state.bytesRead = reader.bytesConsumed
        }

        /// What the bulk loader does with one column of `input`, worked out once per load.
        struct CSVColumnPlan {
            /// The column (in `input`).
            var column: Int
            /// The record's field that feeds it.
            var field: Int
            /// The insert's parameter, or 0 for a column the query does not read.
            var parameter: Int32
            var type: ColumnType
        }

        /// The rest of the file, bound from the reader's bytes without making strings.
        private func loadCSVRecords(_ reader: CSVReader) throws {
            guard let insert else { return }
            // Text is bound borrowing the reader's buffer: no binding may outlive it.
            defer { insert.reset() }
            // A text column the query does not read takes any value (null included) and is left
            // NULL: nothing to do for it. Every other value is checked against its column's type.
            let plan = state.sourceFields.enumerated().compactMap { column, field -> CSVColumnPlan? in
                let plan = CSVColumnPlan(column: column, field: field, parameter: parameters[column], type: types[column])
                return plan.parameter == 0 && plan.type == .text ? nil : plan
            }
            try plan.withUnsafeBufferPointer { plan in
                while true {
                    let offset = reader.bytesConsumed
                    do {
                        let more = try reader.withNextRecord { record -> Bool in
                            state.recordsRead = recordsAlreadyRead + reader.row
                            try insertRaw(
                                record, plan: plan, insert: insert, row: state.recordsRead, offset: offset, bytesAfter: reader.bytesConsumed)
                            return true
                        }
                        if more == nil { break }
                    } catch let error as IngestError {
                        if reader.streamError != nil { throw Self.streamFailure(error, format: "CSV") }
                        let row = recordsAlreadyRead + (error.row ?? reader.row)
                        state.recordsRead = max(recordsAlreadyRead + reader.row, row)
                        try rowError(RowError(row: row, byteOffset: error.byteOffset, column: nil, message: error.message))
                    }
                }
            }
        }

        /// Binds every loaded column of the record (NULL included, so bindings need not be
        /// cleared between rows; text borrows the reader's bytes, valid until the step) and
        /// inserts it.
        private func insertRaw(
            _ record: CSVRawRecord, plan: UnsafeBufferPointer<CSVColumnPlan>, insert: SandboxStatement, row: Int, offset: Int64, bytesAfter: Int64
        ) throws {
            let count = record.count
            for entry in plan {
                let field = entry.field
                let parameter = entry.parameter
                guard field < count && !record.isNull(field) else {
                    if parameter > 0 { insert.bindNull(parameter) }
                    continue
                }
                // Only the columns the query reads are bound (the others stay NULL, which it
                // never sees). An escaped field's bytes are a copy that ends with the closure.
                let fits =
                    record.isEscaped(field)
                    ? record.withField(field) { bindChecked($0, entry.type, parameter, insert, borrow: false, column: entry.column) }
                    : bindChecked(record.rawField(field), entry.type, parameter, insert, borrow: true, column: entry.column)
                if !fits {
                    let problem = self.bind(text: record.string(field) ?? "", to: entry.column) ?? "does not fit its column"
                    insert.reset()
                    try rowError(RowError(row: row, byteOffset: offset, column: state.columns[entry.column].name, message: problem))
                    return
                }
            }
            try commitRow(bytesRead: bytesAfter, keepingBindings: true)
        }

        /// Checks a field's bytes against its column's type and binds them to `parameter`
        /// (unless it is 0); `borrow` binds text without copying it.
        /// - Returns: whether the value fits.
        @inline(__always)
        private func bindChecked(
            _ bytes: UnsafeBufferPointer<UInt8>, _ type: ColumnType, _ parameter: Int32, _ insert: SandboxStatement, borrow: Bool, column: Int
        ) -> Bool {
            let bind = parameter > 0
            switch type {
            case .text:
                if bind { if borrow { insert.bind(parameter, borrowing: bytes) } else { insert.bind(parameter, utf8: bytes) } }
                return true
            case .integer:
                guard let value = Self.integer(bytes) else { return false }
                if bind { insert.bind(parameter, value) }
                return true
            case .real:
                guard let value = Self.real(bytes) else { return false }
                if bind { insert.bind(parameter, value) }
                return true
            case .timestamp:
                // Stored as the text it was given (as `bind(text:to:)` does).
                guard ColumnTypeInference.fitsTimestamp(utf8: bytes) else { return false }
                if bind { if borrow { insert.bind(parameter, borrowing: bytes) } else { insert.bind(parameter, utf8: bytes) } }
                return true
            case .boolean:
                let text = String(decoding: bytes, as: UTF8.self)
                guard ColumnTypeInference.fits(text, type) else { return false }
                return !bind || self.bind(text: text, to: column) == nil
            }
        }

        /// A decimal integer (optional sign, surrounding spaces) that fits 64 bits.
        static func integer(_ bytes: UnsafeBufferPointer<UInt8>) -> Int64? {
            var start = 0
            var end = bytes.count
            while start < end && bytes[start] == 0x20 { start += 1 }
            while end > start && bytes[end - 1] == 0x20 { end -= 1 }
            guard start < end else { return nil }
            var negative = false
            if bytes[start] == UInt8(ascii: "-") || bytes[start] == UInt8(ascii: "+") {
                negative = bytes[start] == UInt8(ascii: "-")
                start += 1
                guard start < end else { return nil }
            }
            var value: Int64 = 0
            for index in start..<end {
                let digit = bytes[index] &- 0x30
                guard digit < 10 else { return nil }
                let (times, overflow) = value.multipliedReportingOverflow(by: 10)
                let (sum, overflow2) = negative ? times.subtractingReportingOverflow(Int64(digit)) : times.addingReportingOverflow(Int64(digit))
                if overflow || overflow2 { return nil }
                value = sum
            }
            return value
        }

        /// A finite decimal number or a spelling of infinity, as `ColumnTypeInference.fits(_:.real)` accepts.
        static func real(_ bytes: UnsafeBufferPointer<UInt8>) -> Double? {
            if bytes.count <= 9, bytes.last == UInt8(ascii: "y") {
                let text = String(decoding: bytes, as: UTF8.self)
                if ColumnTypeInference.infinities.contains(text) { return text.hasPrefix("-") ? -.infinity : .infinity }
            }
            guard !bytes.isEmpty, bytes.count < 64,
                bytes.allSatisfy({ (0x30...0x39).contains($0) || $0 == 0x2E || $0 == 0x2D || $0 == 0x2B || $0 == 0x65 || $0 == 0x45 })
            else { return nil }
            return withUnsafeTemporaryAllocation(of: CChar.self, capacity: bytes.count + 1) { text -> Double? in
                for index in 0..<bytes.count { text[index] = CChar(bitPattern: bytes[index]) }
                text[bytes.count] = 0
                var end: UnsafeMutablePointer<CChar>?
                let value = strtod(text.baseAddress!, &end)
                guard end == text.baseAddress! + bytes.count, value.isFinite else { return nil }
                return value
            }
        }

        /// The table's columns from the CSV header: the declared ones (found by name, ignoring
        /// case; by position without a header), or every header name made unique.
        private func csvColumns(header: [String]) throws -> ([PipelineSpec.Column], [Int], Bool) {
            if let declared = spec.input.columns {
                var fields: [Int] = []
                let hasHeader = spec.input.options?.header ?? true
                for (position, column) in declared.enumerated() {
                    if hasHeader {
                        guard let index = header.firstIndex(where: { $0.lowercased() == column.name.lowercased() }) else {
                            throw PipelineFailure(message: "the declared column \(column.name) is not in the file's header")
                        }
                        fields.append(index)
                    } else {
                        guard position < header.count else {
                            throw PipelineFailure(message: "the file has \(header.count) columns but \(declared.count) are declared")
                        }
                        fields.append(position)
                    }
                }
                return (declared, fields, true)
            }
            let names = Self.unique(header.isEmpty ? ["value"] : header)
            return (names.map { PipelineSpec.Column(name: $0, type: .text) }, Array(names.indices), false)
        }

        /// Names made unique ignoring case (SQLite's rule): a repeat gets `_2`, `_3`, ….
        static func unique(_ names: [String]) -> [String] {
            var seen = Set<String>()
            return names.map { name in
                var candidate = name.isEmpty ? "column" : name
                var suffix = 2
                while seen.contains(candidate.lowercased()) {
                    candidate = "\(name)_\(suffix)"
                    suffix += 1
                }
                seen.insert(candidate.lowercased())
                return candidate
            }
        }

        // MARK: JSON and XML (named fields)

        private var sampleNamed: [(fields: [(name: String, value: FieldValue)], row: Int)] = []
        private var discovered: [String] = []
        private var discoveredSet = Set<String>()

        func loadJSON(path: String) throws {
            let reader: JSONRecordReader
            do {
                reader = try JSONRecordReader(source: try FileByteSource(path: path), options: spec.jsonOptions)
            } catch let error as IngestError {
                throw Self.openFailure(error, format: "JSON")
            }
            var skipped = 0
            // NDJSON is one record per line, so a bad line can be left out (with `skip`) and
            // reading resumes at the next; a JSON array cannot be read past a syntax error.
            let linesSkippable = spec.input.format == .ndjson && spec.onRowError == .skip
            do {
                while true {
                    let record: [(name: String, value: FieldValue)]
                    do {
                        guard let next = try reader.next() else { break }
                        record = next
                    } catch let error as IngestError where linesSkippable && error.kind != .io && error.kind != .tooLarge {
                        if skipped < recordsAlreadyRead {
                            skipped += 1
                        } else {
                            state.recordsRead += 1
                            try rowError(RowError(row: state.recordsRead, byteOffset: error.byteOffset, column: nil, message: error.message))
                        }
                        try reader.skipLine()
                        continue
                    }
                    if skipped < recordsAlreadyRead {
                        skipped += 1
                        continue
                    }
                    state.recordsRead += 1
                    if let name = reader.repeatedName {
                        // One column cannot hold two values, and keeping either would drop the
                        // other unseen: a bad record (RFC 8259 §4 leaves repeated names' meaning open).
                        try rowError(
                            RowError(
                                row: state.recordsRead, byteOffset: reader.recordStart, column: name, message: Self.repeatedField))
                        continue
                    }
                    try addNamed(record, untyped: false, bytesAfter: reader.bytesConsumed)
                }
            } catch let error as IngestError {
                // A JSON document that stops being JSON cannot be read past the problem.
                if error.kind == .io || error.kind == .tooLarge {
                    throw Self.streamFailure(error, format: spec.input.format == .ndjson ? "NDJSON" : "JSON")
                }
                throw PipelineFailure(message: "the file is not valid \(spec.input.format == .ndjson ? "NDJSON" : "JSON"): \(error)")
            }
            try flushNamedSample(untyped: false)
            state.bytesRead = reader.bytesConsumed
        }

        /// Why a JSON record naming a field twice is refused (the row error names the field).
        static let repeatedField =
            "the field appears more than once in the record (a repeated member name, names that differ only in Unicode "
            + "normalization, or a nested object's flattened name that another member already has)"

        func loadXML(path: String) throws {
            let reader: XMLRecordReader
            do {
                reader = try XMLRecordReader(path: path, recordPath: spec.input.recordPath ?? "/")
            } catch let error as IngestError {
                throw Self.openFailure(error, format: "XML")
            }
            var skipped = 0
            do {
                try reader.forEachRecord { record in
                    if skipped < recordsAlreadyRead {
                        skipped += 1
                        return
                    }
                    state.recordsRead += 1
                    try addNamed(record, untyped: true, bytesAfter: nil)
                }
            } catch let error as IngestError {
                if error.kind == .io { throw Self.streamFailure(error, format: "XML") }
                throw PipelineFailure(message: "the file is not usable XML: \(error)")
            }
            try flushNamedSample(untyped: true)
        }

        private var namedInference: ColumnTypeInference?

        private func addNamed(_ record: [(name: String, value: FieldValue)], untyped: Bool, bytesAfter: Int64?) throws {
            if insert == nil {
                if let declared = spec.input.columns {
                    try createTable(declared)
                } else {
                    for field in record where !discoveredSet.contains(field.name) && discovered.count < 2000 {
                        discoveredSet.insert(field.name)
                        discovered.append(field.name)
                    }
                    sampleNamed.append((record, state.recordsRead))
                    if sampleNamed.count < sampleRecords { return }
                    try flushNamedSample(untyped: untyped)
                    return
                }
            }
            try insertNamed(record, row: state.recordsRead, untyped: untyped, bytesAfter: bytesAfter)
        }

        /// Creates the table from the fields seen in the sample and their types, and loads it.
        private func flushNamedSample(untyped: Bool) throws {
            guard insert == nil, !sampleNamed.isEmpty || spec.input.columns != nil else { return }
            if let declared = spec.input.columns {
                try createTable(declared)
                return
            }
            let names = Self.unique(discovered)
            var inference = ColumnTypeInference(columns: names.count, limit: sampleRecords)
            var position: [String: Int] = [:]
            for (index, name) in discovered.enumerated() { position[name] = index }
            for (fields, _) in sampleNamed {
                var values = [FieldValue?](repeating: nil, count: names.count)
                for field in fields { if let index = position[field.name] { values[index] = field.value } }
                if untyped {
                    inference.add(
                        values.map { value -> String? in
                            if case .text(let text)? = value { return text }
                            return nil
                        })
                } else {
                    inference.add(json: values)
                }
            }
            try createTable(zip(names, inference.types).map { PipelineSpec.Column(name: $0, type: $1) })
            // Fields are matched by their name in the file, which `unique` may have renamed.
            columnIndex = position
            let sample = sampleNamed
            sampleNamed = []
            for (fields, row) in sample { try insertNamed(fields, row: row, untyped: untyped, bytesAfter: nil) }
        }

        private func insertNamed(_ record: [(name: String, value: FieldValue)], row: Int, untyped: Bool, bytesAfter: Int64?) throws {
            for field in record {
                guard let index = columnIndex[field.name] ?? (spec.input.columns == nil ? nil : columnIndexIgnoringCase(field.name)) else {
                    continue
                }
                if let problem = bind(field.value, to: index) {
                    insert?.reset()
                    try rowError(RowError(row: row, byteOffset: nil, column: state.columns[index].name, message: problem))
                    return
                }
            }
            try commitRow(bytesRead: bytesAfter)
        }

        private func columnIndexIgnoringCase(_ name: String) -> Int? {
            state.columns.firstIndex { $0.name.lowercased() == name.lowercased() }
        }
    }
}
