import CairnFiles
package import CairnFormats
package import CairnHTTP
import CairnJobs
import CairnSandbox
package import CairnStorage
import Foundation
import HTTPTypes
import SQLKit

/// What a pipeline does: how to read its input, the tenant's SQL over the table `input`, how to
/// write the result, and optionally when to run by itself. Stored as JSON; a run keeps the
/// specification it started with in its checkpoint, so editing a pipeline never changes a run
/// in flight.
package struct PipelineSpec: Codable, Sendable, Equatable {
    /// Input formats.
    package enum InputFormat: String, Codable, Sendable, CaseIterable, JSONEnum {
        /// RFC 4180 CSV.
        case csv
        /// A top-level JSON array of objects (RFC 8259).
        case json
        /// One JSON object per line.
        case ndjson
        /// Elements at `recordPath`.
        case xml
    }

    /// Output formats.
    package enum OutputFormat: String, Codable, Sendable, CaseIterable, JSONEnum {
        /// RFC 4180 CSV with a header row.
        case csv
        /// One JSON object per line.
        case ndjson
        /// One JSON array of objects.
        case json
    }

    /// What a record that cannot be loaded does to the run.
    package enum RowErrorPolicy: String, Codable, Sendable, CaseIterable, JSONEnum {
        /// The run fails at the first bad record.
        case fail
        /// Bad records are counted, the first 1,000 reported, and left out.
        case skip
    }

    /// Parser options (`input.options`). CSV: `delimiter`, `quote`, `header`, `nullValues`;
    /// JSON and NDJSON: `flatten`.
    package struct Options: Codable, Sendable, Equatable {
        /// One character; detected among `,` `;` tab `|` when absent.
        package var delimiter: String?
        /// One character (default `"`).
        package var quote: String?
        /// Whether the first record names the columns (default true).
        package var header: Bool?
        /// Unquoted values read as null (default `""`, `NA`, `NULL`).
        package var nullValues: [String]?
        /// Nested objects as dotted columns (default true) or JSON text.
        package var flatten: Bool?
    }

    /// A declared column of `input`.
    package struct Column: Codable, Sendable, Equatable {
        /// The column's name (the CSV header's, the JSON member's or the XML field's).
        package var name: String
        /// Its type.
        package var type: ColumnType
    }

    /// `input`.
    package struct Input: Codable, Sendable, Equatable {
        /// The file's format.
        package var format: InputFormat
        /// Parser options.
        package var options: Options?
        /// XML only: the path of the record elements, e.g. `/iso_3166_entries/iso_3166_entry`.
        package var recordPath: String?
        /// Declared columns; inferred from the first 1,000 records when absent.
        package var columns: [Column]?
    }

    /// `output`.
    package struct Output: Codable, Sendable, Equatable {
        /// The result file's format.
        package var format: OutputFormat
    }

    /// `schedule`: runs through the job system's cron scheduler.
    package struct Schedule: Codable, Sendable, Equatable {
        /// Five-field cron expression.
        package var cron: String
        /// IANA time zone the cron is read in (default UTC).
        package var timeZone: String?
        /// `latest` (the newest uploaded file of the input format) or `namePattern`; either way
        /// only files a user uploaded are candidates, never pipeline outputs.
        package var source: String?
        /// With `source: namePattern`: a shell glob (`fnmatch(3)`) on the file's name.
        package var namePattern: String?
    }

    /// How to read the file.
    package var input: Input
    /// One SQLite `SELECT` (or `WITH … SELECT`) over the table `input`.
    package var sql: String
    /// How to write the result.
    package var output: Output
    /// What a bad record does.
    package var onRowError: RowErrorPolicy
    /// When the pipeline runs by itself.
    package var schedule: Schedule?

    /// Compact JSON text.
    var json: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: (try? encoder.encode(self)) ?? Data("{}".utf8), as: UTF8.self)
    }

    /// Parses stored JSON text.
    static func parse(_ text: String) -> PipelineSpec? {
        try? JSONDecoder().decode(PipelineSpec.self, from: Data(text.utf8))
    }

    /// The CSV reader options this specification asks for.
    var csvOptions: CSVOptions {
        var options = CSVOptions()
        if let delimiter = input.options?.delimiter?.utf8.first { options.delimiter = delimiter }
        if let quote = input.options?.quote?.utf8.first { options.quote = quote }
        if let header = input.options?.header { options.header = header }
        if let nulls = input.options?.nullValues { options.nullValues = Set(nulls) }
        return options
    }

    /// The JSON reader options this specification asks for.
    var jsonOptions: JSONOptions {
        var options = JSONOptions()
        options.layout = input.format == .ndjson ? .lines : .array
        if let flatten = input.options?.flatten { options.flatten = flatten }
        return options
    }
}

/// A tenant's pipeline as stored and shown.
package struct Pipeline: Sendable, Versioned, JSONWritable {
    /// UUIDv7.
    package var id: String
    /// Owning tenant.
    package var tenantId: String
    /// A label, 1 to 100 characters.
    package var name: String
    /// What it does.
    package var spec: PipelineSpec
    /// The job-system schedule that runs it, when `spec.schedule` is set.
    package var scheduleId: String?
    /// The newest file a scheduled run has taken (the next one takes only newer files).
    package var lastScheduledFileId: String?
    /// The creating user.
    package var createdBy: String?
    /// Epoch milliseconds.
    package var createdAt: Int64
    /// Epoch milliseconds.
    package var updatedAt: Int64
    /// Grows with every change (the `ETag`).
    package var version: Int

    /// `{id, name, input, sql, output, onRowError, schedule, createdBy, createdAt, updatedAt}`.
    package func writeJSON(to writer: inout JSONWriter) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        func raw(_ value: some Encodable) -> String {
            String(decoding: (try? encoder.encode(value)) ?? Data("null".utf8), as: UTF8.self)
        }
        writer.objectStart()
        writer.field("id", id)
        writer.field("name", name)
        writer.field("input", json: raw(spec.input))
        writer.field("sql", spec.sql)
        writer.field("output", json: raw(spec.output))
        writer.field("onRowError", spec.onRowError.rawValue)
        writer.field("schedule", json: spec.schedule.map { raw($0) })
        writer.field("createdBy", createdBy)
        writer.field("createdAt", timestamp: createdAt)
        writer.field("updatedAt", timestamp: updatedAt)
        writer.objectEnd()
    }
}

/// The pipelines' tables (a migration module of their own, beside the files'): `Migrations/pipelines/*.sql` among the module's resources.
package enum PipelineMigrations {
    /// All migrations of the module, in order.
    package static func all() throws -> [Migration] { try Migration.files(in: .module) }
}

/// SQL for `pipelines`, written once for both engines.
@MemberwiseInit
package struct PipelineStore: Sendable {
    /// The database.
    package let database: Database

    static let columns = "id, tenant_id, name, spec, schedule_id, last_scheduled_file_id, created_by, created_at, updated_at, version"

    static func pipeline(from row: any SQLRow) throws -> Pipeline {
        let specText = try row.decode(column: "spec", as: String.self)
        guard let spec = PipelineSpec.parse(specText) else {
            throw AppError(.internalServerError, code: .internal, detail: "A stored pipeline is unreadable.")
        }
        return Pipeline(
            id: try row.decode(column: "id", as: String.self), tenantId: try row.decode(column: "tenant_id", as: String.self),
            name: try row.decode(column: "name", as: String.self), spec: spec, scheduleId: try row.decode(column: "schedule_id", as: String?.self),
            lastScheduledFileId: try row.decode(column: "last_scheduled_file_id", as: String?.self),
            createdBy: try row.decode(column: "created_by", as: String?.self), createdAt: try row.decode(column: "created_at", as: Int64.self),
            updatedAt: try row.decode(column: "updated_at", as: Int64.self), version: try row.decode(column: "version", as: Int.self))
    }

    /// Inserts a pipeline on `db` (the caller's transaction).
    static func insert(_ pipeline: Pipeline, on db: any SQLDatabase) async throws {
        try await db.raw(
            """
            INSERT INTO pipelines (\(unsafeRaw: columns)) VALUES (\(bind: pipeline.id), \(bind: pipeline.tenantId), \(bind: pipeline.name),
            \(bind: pipeline.spec.json), \(bind: pipeline.scheduleId), NULL, \(bind: pipeline.createdBy), \(bind: pipeline.createdAt),
            \(bind: pipeline.updatedAt), 1)
            """
        ).run()
    }

    /// Replaces name, specification and schedule when the stored version is `expected`.
    /// - Returns: false when another change came first.
    static func update(_ pipeline: Pipeline, expected: Int, on db: any SQLDatabase) async throws -> Bool {
        try await db.raw(
            """
            UPDATE pipelines SET name = \(bind: pipeline.name), spec = \(bind: pipeline.spec.json), schedule_id = \(bind: pipeline.scheduleId),
                updated_at = \(bind: pipeline.updatedAt), version = version + 1
            WHERE id = \(bind: pipeline.id) AND tenant_id = \(bind: pipeline.tenantId) AND version = \(bind: expected)
            RETURNING id
            """
        ).first() != nil
    }

    /// Deletes a pipeline on `db`.
    static func delete(id: String, tenantId: String, on db: any SQLDatabase) async throws {
        try await db.raw("DELETE FROM pipelines WHERE id = \(bind: id) AND tenant_id = \(bind: tenantId)").run()
    }

    /// A pipeline of the tenant, or nil.
    package func get(id: String, tenantId: String) async throws -> Pipeline? {
        guard UUIDv7.isValid(id) else { return nil }
        return try await database.read { db in
            try await db.raw("SELECT \(unsafeRaw: Self.columns) FROM pipelines WHERE id = \(bind: id) AND tenant_id = \(bind: tenantId)").first()
        }.map(Self.pipeline)
    }

    /// A page of the tenant's pipelines, newest first.
    package func list(tenantId: String, page: PageRequest) async throws -> Page<Pipeline> {
        let rows = try await database.read { db in
            var query: SQLQueryString = "SELECT \(unsafeRaw: Self.columns) FROM pipelines WHERE tenant_id = \(bind: tenantId)"
            if let after = page.after { query = query + " AND id < \(bind: after)" }
            return try await db.raw(query + " ORDER BY id DESC LIMIT \(bind: page.limit + 1)").all()
        }
        return Page(fetched: try rows.map(Self.pipeline), page: page, sortKey: \.id)
    }

    /// Records the file a scheduled run took, if it is newer than the one recorded.
    func recordScheduledFile(pipelineId: String, tenantId: String, fileId: String) async throws {
        try await database.write { db in
            try await db.raw(
                """
                UPDATE pipelines SET last_scheduled_file_id = \(bind: fileId)
                WHERE id = \(bind: pipelineId) AND tenant_id = \(bind: tenantId)
                  AND (last_scheduled_file_id IS NULL OR last_scheduled_file_id < \(bind: fileId))
                """
            ).run()
        }
    }
}

/// Checks a pipeline body and turns it into a specification, listing every problem at once.
enum PipelineValidation {
    /// The one column `input` has when a query is compiled before its columns are known.
    static let unknownColumns = "cairn: columns known at run time"

    /// Compiles the specification's SQL as a run would, in a sandbox database (the system
    /// SQLite behind the run's authorizer and limits, in memory) whose empty `input` table has
    /// the declared columns, so an unknown table or column, a syntax error or a refused action
    /// fails when the pipeline is written, not when it runs. Without declared columns (they are
    /// inferred from each run's file) only "no such column" cannot be judged yet: it is left to
    /// the run, which compiles the query against the inferred columns before it loads a row.
    /// Compiling executes nothing: it takes microseconds for the longest SQL allowed.
    /// - Returns: nil when the query compiles; otherwise SQLite's or the authorizer's message.
    static func compileProblem(_ spec: PipelineSpec) -> String? {
        guard let db = try? SandboxDatabase(path: ":memory:", control: SandboxControl(), cacheBytes: 1 << 20) else { return nil }
        let columns = spec.input.columns ?? []
        let definitions =
            columns.isEmpty
            ? SQLText.quoted(unknownColumns)
            : columns.map { "\(SQLText.quoted($0.name)) \(PipelineEngine.Loader.declaredType($0.type))" }.joined(separator: ", ")
        do {
            try db.execute("CREATE TABLE input (\(definitions))")
        } catch {
            // Declared names that cannot form a table are reported on input.columns already.
            return nil
        }
        do {
            _ = try db.columnsRead(by: spec.sql)
            return nil
        } catch let error as SandboxError {
            if columns.isEmpty && error.kind == .sql && error.message.hasPrefix("no such column") { return nil }
            return error.message
        } catch {
            return nil
        }
    }

    /// Longest SQL text, bytes.
    static let maxSQLBytes = 64 << 10

    /// The issue of a pipeline name, if any.
    static func nameIssue(_ name: String) -> FieldIssue? {
        (1...100).contains(TextSafety.length(name.trimmingCharacters(in: .whitespaces)))
            ? nil : FieldIssue(field: "name", issue: "must be 1 to 100 characters")
    }

    /// Adds every problem of `name` and `spec` to `issues`.
    /// - Parameter compile: whether to compile the SQL (``compileProblem(_:)``): on create, and
    ///   on an update that changes the SQL or the input, so a stored pipeline whose SQL no longer
    ///   compiles can still be renamed or rescheduled.
    static func validate(name: String?, spec: PipelineSpec, compile: Bool = true, issues: inout [FieldIssue]) {
        if let name, let issue = nameIssue(name) { issues.append(issue) }
        let input = spec.input
        if let options = input.options {
            let isCSV = input.format == .csv
            let isJSON = input.format == .json || input.format == .ndjson
            for (field, present, allowed) in [
                ("delimiter", options.delimiter != nil, isCSV), ("quote", options.quote != nil, isCSV), ("header", options.header != nil, isCSV),
                ("nullValues", options.nullValues != nil, isCSV), ("flatten", options.flatten != nil, isJSON),
            ] where present && !allowed {
                issues.append(FieldIssue(field: "input.options.\(field)", issue: "does not apply to \(input.format.rawValue) input"))
            }
            for (field, value) in [("delimiter", options.delimiter), ("quote", options.quote)] {
                guard let value else { continue }
                if value.utf8.count != 1 || value == "\n" || value == "\r" {
                    issues.append(FieldIssue(field: "input.options.\(field)", issue: "must be one ASCII character other than a line break"))
                }
            }
            if let delimiter = options.delimiter, delimiter == (options.quote ?? "\"") {
                issues.append(FieldIssue(field: "input.options.delimiter", issue: "must differ from the quote character"))
            }
            if let nulls = options.nullValues, nulls.count > 100 || nulls.contains(where: { $0.utf8.count > 64 }) {
                issues.append(FieldIssue(field: "input.options.nullValues", issue: "must be at most 100 values of at most 64 bytes"))
            }
        }
        if input.format == .xml {
            let path = input.recordPath ?? ""
            let parts = path.split(separator: "/", omittingEmptySubsequences: false)
            if parts.count < 2 || !parts[0].isEmpty || parts.dropFirst().contains(where: \.isEmpty) || path.utf8.count > 512 {
                issues.append(FieldIssue(field: "input.recordPath", issue: "is required for xml input and must look like /root/record"))
            }
        } else if input.recordPath != nil {
            issues.append(FieldIssue(field: "input.recordPath", issue: "applies to xml input only"))
        }
        if let columns = input.columns {
            if columns.isEmpty || columns.count > 2000 {
                issues.append(FieldIssue(field: "input.columns", issue: "must list 1 to 2000 columns"))
            }
            var seen = Set<String>()
            for (index, column) in columns.enumerated() {
                if column.name.isEmpty || column.name.utf8.count > 256 {
                    issues.append(FieldIssue(field: "input.columns[\(index)].name", issue: "must be 1 to 256 bytes"))
                } else if !seen.insert(column.name.lowercased()).inserted {
                    issues.append(FieldIssue(field: "input.columns[\(index)].name", issue: "repeats another column's name (names ignore case)"))
                }
            }
        }
        if spec.sql.utf8.count > maxSQLBytes || spec.sql.contains("\u{0}") {
            issues.append(FieldIssue(field: "sql", issue: "must be at most \(maxSQLBytes) bytes"))
        } else if !SQLText.isSingleQuery(spec.sql) {
            issues.append(FieldIssue(field: "sql", issue: "must be one SELECT (or WITH … SELECT) statement"))
        } else if compile, let problem = compileProblem(spec) {
            issues.append(FieldIssue(field: "sql", issue: problem))
        }
        if let schedule = spec.schedule {
            do { _ = try CronExpression(schedule.cron) } catch let error as AppError {
                issues += error.errors.map { FieldIssue(field: "schedule.cron", issue: $0.issue) }
            } catch {
                issues.append(FieldIssue(field: "schedule.cron", issue: "is not a valid cron expression"))
            }
            if let zone = schedule.timeZone, zone.isEmpty || zone.count > 64 || TimeZone(identifier: zone) == nil {
                issues.append(FieldIssue(field: "schedule.timeZone", issue: "must be an IANA time zone such as Europe/Paris"))
            }
            switch schedule.source ?? "latest" {
            case "latest":
                if schedule.namePattern != nil {
                    issues.append(FieldIssue(field: "schedule.namePattern", issue: "applies only with source namePattern"))
                }
            case "namePattern":
                if (schedule.namePattern ?? "").isEmpty || (schedule.namePattern ?? "").utf8.count > 256 {
                    issues.append(FieldIssue(field: "schedule.namePattern", issue: "is required with source namePattern (1 to 256 bytes)"))
                }
            default:
                issues.append(FieldIssue(field: "schedule.source", issue: "must be latest or namePattern"))
            }
        }
    }
}

/// Column types in pipeline specs list their allowed values when a body names another.
extension ColumnType: JSONEnum {}
