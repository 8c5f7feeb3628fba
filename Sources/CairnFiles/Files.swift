package import CairnHTTP
package import CairnStorage
import Foundation
import SQLKit

/// Where a file came from.
package enum FileOrigin: String, Sendable, Equatable {
    /// A user uploaded it (`POST /files`, multipart or tus).
    case upload
    /// A pipeline run wrote it (its output).
    case pipeline
}

/// An uploaded file of a tenant, or a pipeline run's output. Its bytes live in the `BlobStore`
/// under its id.
///
/// As JSON: `{id, name, size, sha256, contentType, format, createdBy, createdAt, origin, pipelineId,
/// jobId}`; `pipelineId` and `jobId` name the run that wrote a pipeline output (null for uploads).
@MemberwiseInit
@JSONObject
@SQLRow
package struct StoredFile: Sendable, Equatable, JSONWritable {
    /// UUIDv7.
    package var id: String
    /// Owning tenant.
    @JSONSkip package var tenantId: String
    /// The name the uploader gave (a label only; never used as a path).
    package var name: String
    /// Bytes.
    package var size: Int64
    /// Lower-case hex SHA-256 of the content.
    package var sha256: String
    /// The media type it was uploaded as.
    package var contentType: String
    /// `csv`, `json`, `ndjson`, `xml`, or `binary`.
    package var format: String
    /// The uploading user.
    package var createdBy: String?
    /// Epoch milliseconds.
    @JSONTimestamp package var createdAt: Int64
    /// Who made it: a user's upload, or a pipeline run. Scheduled pipelines take only uploads,
    /// so no run ever takes its own (or another pipeline's) output as input.
    @JSONRawValue @SQLRawValue package var origin: FileOrigin = .upload
    /// With `origin` `pipeline`: the pipeline that wrote it.
    @JSONKey("pipelineId") package var originPipelineId: String? = nil
    /// With `origin` `pipeline`: the run (a `pipeline.run` job) that wrote it.
    @JSONKey("jobId") package var originJobId: String? = nil
}

/// The files' tables (migration module `ingest`, its name before CairnFiles): `Migrations/ingest/*.sql` among the module's resources.
package enum IngestMigrations {
    /// All migrations of the module, in order.
    package static func all() throws -> [Migration] { try Migration.files(in: .module) }
}

/// Per-tenant limits on files.
package struct FileQuotas: Sendable, Equatable {
    /// The largest single file, in bytes (`CAIRN_FILES_MAX_SIZE`, default 4 GiB).
    package var maxFileBytes: Int64 = 4 << 30
    /// All of a tenant's files together (`CAIRN_FILES_MAX_TOTAL`, default 20 GiB).
    package var maxTotalBytes: Int64 = 20 << 30
    /// Bytes a tenant may upload per clock hour (`CAIRN_FILES_MAX_PER_HOUR`, default 10 GiB).
    package var maxBytesPerHour: Int64 = 10 << 30

    /// Creates the defaults.
    package init() {}
}

/// SQL for `files`, written once for both engines.
@MemberwiseInit
package struct FileStore: Sendable {
    /// The database.
    package let database: Database

    /// Why a completely written file could not be recorded.
    package enum QuotaExceeded: Error, Sendable {
        /// The tenant's files would exceed `maxTotalBytes`.
        case total
        /// The tenant's uploads this hour would exceed `maxBytesPerHour`.
        case hourly
    }

    /// Records a completely written file, checking the tenant's total and hourly quotas in the
    /// same transaction under a per-tenant lock, so uploads that finish at the same moment (on
    /// any node) cannot together exceed them. The total counts the tenant's files and the
    /// declared lengths of its unfinished tus uploads (see `usedBytes`).
    /// - Parameters:
    ///   - countsAsUpload: false for files the server made (pipeline outputs), which count
    ///     towards the total but not towards the hourly upload quota.
    ///   - completingUpload: the tus upload this file completes and the token of its lease: its
    ///     reservation is this file's own (not counted twice), and it is marked complete in the
    ///     same transaction, so no crash leaves a recorded file beside an unfinished upload.
    /// - Throws: `QuotaExceeded` (nothing recorded); `UploadLeaseLost` when the upload's lease
    ///   was taken over (nothing recorded); the database's error.
    package func insert(
        _ file: StoredFile, quotas: FileQuotas, hour: Int64, countsAsUpload: Bool = true,
        completingUpload: (id: String, token: String)? = nil
    ) async throws {
        try await database.withExclusiveLock(key: Self.lockKey(tenantId: file.tenantId)) { db in
            let total = try await Self.usedBytes(tenantId: file.tenantId, excludingUpload: completingUpload?.id, on: db)
            if total + file.size > quotas.maxTotalBytes { throw QuotaExceeded.total }
            if countsAsUpload {
                try await Self.countUpload(file, quotas: quotas, hour: hour, on: db)
            }
            try await db.raw(
                """
                INSERT INTO files (\(unsafeRaw: StoredFile.sqlColumns)) VALUES (\(bind: file.id), \(bind: file.tenantId), \(bind: file.name),
                \(bind: file.size), \(bind: file.sha256), \(bind: file.contentType), \(bind: file.format), \(bind: file.createdBy),
                \(bind: file.createdAt), \(bind: file.origin.rawValue), \(bind: file.originPipelineId), \(bind: file.originJobId))
                """
            ).run()
            if let (uploadId, token) = completingUpload {
                let completed = try await db.raw(
                    """
                    UPDATE uploads SET file_id = \(bind: file.id), upload_offset = length, lock_token = NULL, locked_until = 0
                    WHERE id = \(bind: uploadId) AND lock_token = \(bind: token) RETURNING id
                    """
                ).first()
                if completed == nil { throw UploadLeaseLost() }
            }
        }
    }

    /// The upload a file was to complete is no longer leased by the completing request.
    package struct UploadLeaseLost: Error {}

    private static func countUpload(_ file: StoredFile, quotas: FileQuotas, hour: Int64, on db: any SQLDatabase) async throws {
        let uploaded =
            try await db.raw(
                """
                INSERT INTO file_upload_usage (tenant_id, hour, bytes) VALUES (\(bind: file.tenantId), \(bind: hour), \(bind: file.size))
                ON CONFLICT (tenant_id, hour) DO UPDATE SET bytes = file_upload_usage.bytes + excluded.bytes
                RETURNING bytes
                """
            ).first()?.decode(column: "bytes", as: Int64.self) ?? file.size
        if uploaded > quotas.maxBytesPerHour { throw QuotaExceeded.hourly }
    }

    /// The advisory-lock key of a tenant's file quota: FNV-1a of `files:<tenant>`, folded to 63 bits.
    static func lockKey(tenantId: String) -> Int64 {
        Database.lockKey("files:" + tenantId)
    }

    /// One file of the tenant, or nil.
    package func get(id: String, tenantId: String) async throws -> StoredFile? {
        guard UUIDv7.isValid(id) else { return nil }
        return try await database.read { db in
            try await db.raw("SELECT \(unsafeRaw: StoredFile.sqlColumns) FROM files WHERE id = \(bind: id) AND tenant_id = \(bind: tenantId)").first()
                .map(StoredFile.init(row:))
        }
    }

    /// A page of the tenant's files, newest first.
    package func list(tenantId: String, page: PageRequest) async throws -> Page<StoredFile> {
        let rows = try await database.read { db in
            var query: SQLQueryString = "SELECT \(unsafeRaw: StoredFile.sqlColumns) FROM files WHERE tenant_id = \(bind: tenantId)"
            if let after = page.after { query = query + " AND id < \(bind: after)" }
            query = query + " ORDER BY id DESC LIMIT \(bind: page.limit + 1)"
            return try await db.raw(query).all()
        }
        return Page(fetched: try rows.map(StoredFile.init(row:)), page: page, sortKey: \.id)
    }

    /// The tenant's newest uploaded files of `format` created after the file `afterId` (all
    /// when nil), newest first, at most `limit` (for scheduled pipeline runs). Pipeline outputs
    /// are never among them: a schedule that took them would process its own last result on
    /// every tick, for ever.
    package func newest(tenantId: String, format: String, after afterId: String?, limit: Int = 500) async throws -> [StoredFile] {
        try await database.read { db in
            var query: SQLQueryString =
                "SELECT \(unsafeRaw: StoredFile.sqlColumns) FROM files WHERE tenant_id = \(bind: tenantId) AND format = \(bind: format) AND origin = 'upload'"
            if let afterId { query = query + " AND id > \(bind: afterId)" }
            return try await db.raw(query + " ORDER BY id DESC LIMIT \(bind: limit)").all()
        }.map(StoredFile.init(row:))
    }

    /// Deletes a file's row; false when there was none.
    package func delete(id: String, tenantId: String) async throws -> Bool {
        guard UUIDv7.isValid(id) else { return false }
        return try await database.write { db in
            try await db.raw("DELETE FROM files WHERE id = \(bind: id) AND tenant_id = \(bind: tenantId) RETURNING id").first() != nil
        }
    }

    /// Bytes counted against the tenant's total quota: its files, plus the declared length
    /// (`Upload-Length`) of each unfinished tus upload, reserved from its creation so that
    /// unfinished uploads cannot fill the disk past the quota.
    package func usedBytes(tenantId: String) async throws -> Int64 {
        try await database.read { db in try await Self.usedBytes(tenantId: tenantId, excludingUpload: nil, on: db) }
    }

    /// `usedBytes` on `db` (inside the caller's transaction), leaving out the upload
    /// `excludingUpload`'s reservation.
    static func usedBytes(tenantId: String, excludingUpload: String?, on db: any SQLDatabase) async throws -> Int64 {
        // An expired upload still holds its partial bytes until the sweeper removes it, so it
        // counts until then.
        try await db.raw(
            """
            SELECT CAST((SELECT COALESCE(SUM(size), 0) FROM files WHERE tenant_id = \(bind: tenantId))
            + (SELECT COALESCE(SUM(length), 0) FROM uploads WHERE tenant_id = \(bind: tenantId) AND file_id IS NULL
            AND id <> \(bind: excludingUpload ?? "")) AS BIGINT) AS total
            """
        ).first()?.decode(column: "total", as: Int64.self) ?? 0
    }

    /// Bytes the tenant's files take (finished files only; see `usedBytes` for the quota).
    package func totalBytes(tenantId: String) async throws -> Int64 {
        try await database.read { db in
            try await db.raw("SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) AS total FROM files WHERE tenant_id = \(bind: tenantId)").first()?.decode(
                column: "total", as: Int64.self) ?? 0
        }
    }

    /// Bytes the tenant uploaded in the given hour.
    package func uploaded(tenantId: String, hour: Int64) async throws -> Int64 {
        try await database.read { db in
            try await db.raw("SELECT bytes FROM file_upload_usage WHERE tenant_id = \(bind: tenantId) AND hour = \(bind: hour)").first()?
                .decode(column: "bytes", as: Int64.self) ?? 0
        }
    }
}
