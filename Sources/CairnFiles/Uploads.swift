import CairnHTTP
package import CairnObjects
package import CairnStorage
import Foundation
package import Logging
import SQLKit
import ServiceLifecycle

/// A resumable upload (tus 1.0): its declared length, the bytes durably received so far, and
/// the file it became once complete.
package struct TusUpload: Sendable, Equatable {
    /// UUIDv7; also the id of the file it becomes.
    package var id: String
    /// Owning tenant.
    package var tenantId: String
    /// The creating user.
    package var createdBy: String?
    /// `Upload-Length`, in bytes.
    package var length: Int64
    /// `Upload-Offset`: bytes received, fsynced and committed.
    package var offset: Int64
    /// The file's name (from `Upload-Metadata` `filename`; a label only).
    package var name: String
    /// The file's media type (`filetype`, or `application/octet-stream`).
    package var contentType: String
    /// `csv`, `json`, `ndjson`, `xml` or `binary`.
    package var format: String
    /// The finished file's id, once complete.
    package var fileId: String?
    /// Epoch milliseconds after which the upload is gone.
    package var expiresAt: Int64
    /// Epoch milliseconds.
    package var createdAt: Int64
    /// The object store's multipart upload holding its bytes, once started.
    package var multipartId: String? = nil
    /// The parts of that multipart upload committed with `offset`.
    package var parts: [PartialBlob.Part] = []
    /// The creation's `Upload-Metadata` header as sent (validated), answered by HEAD as tus
    /// 1.0.0 says; nil when there was none (and for uploads created before it was kept).
    package var metadata: String? = nil

    /// What the blob store holds of its bytes.
    package var partial: PartialBlob { PartialBlob(size: offset, multipartId: multipartId, parts: parts) }
}

/// SQL for `uploads`, written once for both engines. A PATCH holds a lease on its upload
/// (`lock_token`, `locked_until`), so two PATCHes of one upload never interleave on any node.
@MemberwiseInit
package struct UploadStore: Sendable {
    /// The database.
    package let database: Database

    static let columns =
        "id, tenant_id, created_by, length, upload_offset, name, content_type, format, file_id, expires_at, created_at, multipart_id, store_parts, metadata"

    static func upload(from row: any SQLRow) throws -> TusUpload {
        TusUpload(
            id: try row.decode(column: "id", as: String.self), tenantId: try row.decode(column: "tenant_id", as: String.self),
            createdBy: try row.decode(column: "created_by", as: String?.self), length: try row.decode(column: "length", as: Int64.self),
            offset: try row.decode(column: "upload_offset", as: Int64.self), name: try row.decode(column: "name", as: String.self),
            contentType: try row.decode(column: "content_type", as: String.self), format: try row.decode(column: "format", as: String.self),
            fileId: try row.decode(column: "file_id", as: String?.self), expiresAt: try row.decode(column: "expires_at", as: Int64.self),
            createdAt: try row.decode(column: "created_at", as: Int64.self),
            multipartId: try row.decode(column: "multipart_id", as: String?.self),
            parts: try JSONDecoder().decode([PartialBlob.Part].self, from: Data(try row.decode(column: "store_parts", as: String.self).utf8)),
            metadata: try row.decode(column: "metadata", as: String?.self))
    }

    /// Records a new upload at offset 0. With `quotas`, its `length` is reserved against the
    /// tenant's total quota in the same transaction, under the lock `FileStore.insert` takes,
    /// so uploads created at the same moment (on any node) cannot together overshoot it.
    /// - Throws: `FileStore.QuotaExceeded.total` (nothing recorded), or the database's error.
    package func create(_ upload: TusUpload, quotas: FileQuotas? = nil) async throws {
        try await database.withExclusiveLock(key: FileStore.lockKey(tenantId: upload.tenantId)) { db in
            if let quotas {
                let used = try await FileStore.usedBytes(tenantId: upload.tenantId, excludingUpload: nil, on: db)
                if used + upload.length > quotas.maxTotalBytes { throw FileStore.QuotaExceeded.total }
            }
            try await db.raw(
                """
                INSERT INTO uploads (id, tenant_id, created_by, length, upload_offset, name, content_type, format, file_id, lock_token,
                locked_until, expires_at, created_at, metadata) VALUES (\(bind: upload.id), \(bind: upload.tenantId), \(bind: upload.createdBy),
                \(bind: upload.length), 0, \(bind: upload.name), \(bind: upload.contentType), \(bind: upload.format), NULL, NULL, 0,
                \(bind: upload.expiresAt), \(bind: upload.createdAt), \(bind: upload.metadata))
                """
            ).run()
        }
    }

    /// One upload of the tenant, or nil (also for another tenant's).
    package func get(id: String, tenantId: String) async throws -> TusUpload? {
        guard UUIDv7.isValid(id) else { return nil }
        return try await database.read { db in
            try await db.raw("SELECT \(unsafeRaw: Self.columns) FROM uploads WHERE id = \(bind: id) AND tenant_id = \(bind: tenantId)").first()
                .map(Self.upload(from:))
        }
    }

    /// Takes the upload's lease for this node when its committed offset is `offset` and no live
    /// lease is held. A lease is live until `locked_until` while the node that took it lives: a
    /// crashed node's lease is free at once (see `Database.livenessPredicate(ofColumn:)`), and
    /// a cut client connection gives its lease back as its PATCH ends.
    /// - Returns: the upload, or nil when it is leased by another PATCH or at another offset.
    package func lease(id: String, tenantId: String, offset: Int64, token: String, until: Int64, now: Int64) async throws -> TusUpload? {
        let (node, alive) = (database.instanceKey, database.livenessPredicate(ofColumn: "lock_node"))
        return try await database.write { db in
            try await db.raw(
                """
                UPDATE uploads SET lock_token = \(bind: token), locked_until = \(bind: until), lock_node = \(bind: node)
                WHERE id = \(bind: id) AND tenant_id = \(bind: tenantId) AND upload_offset = \(bind: offset) AND file_id IS NULL
                AND (locked_until < \(bind: now) OR lock_token IS NULL OR NOT (
                """ + alive + ")) RETURNING \(unsafeRaw: Self.columns)"
            ).first().map(Self.upload(from:))
        }
    }

    /// Commits a durable offset and extends (or, with `until` 0, releases) the lease.
    /// - Returns: false when the lease was lost (nothing committed).
    package func commit(id: String, token: String, offset: Int64, until: Int64) async throws -> Bool {
        try await database.write { db in
            try await db.raw(
                """
                UPDATE uploads SET upload_offset = \(bind: offset), locked_until = \(bind: until),
                lock_token = \(unsafeRaw: until == 0 ? "NULL" : "lock_token")
                WHERE id = \(bind: id) AND lock_token = \(bind: token) RETURNING id
                """
            ).first() != nil
        }
    }

    /// Commits a durable state of the upload's bytes (offset, multipart upload and parts, in one
    /// statement) and extends the lease to `until`.
    /// - Returns: false when the lease was lost (nothing committed).
    package func commit(id: String, token: String, state: PartialBlob, until: Int64) async throws -> Bool {
        let parts = String(decoding: try JSONEncoder().encode(state.parts), as: UTF8.self)
        return try await database.write { db in
            try await db.raw(
                """
                UPDATE uploads SET upload_offset = \(bind: state.size), multipart_id = \(bind: state.multipartId),
                store_parts = \(bind: parts), locked_until = \(bind: until)
                WHERE id = \(bind: id) AND lock_token = \(bind: token) RETURNING id
                """
            ).first() != nil
        }
    }

    /// Deletes an upload's row.
    /// - Returns: the upload deleted, nil when there was none.
    @discardableResult
    package func delete(id: String, tenantId: String) async throws -> TusUpload? {
        guard UUIDv7.isValid(id) else { return nil }
        return try await database.write { db in
            try await db.raw(
                "DELETE FROM uploads WHERE id = \(bind: id) AND tenant_id = \(bind: tenantId) RETURNING \(unsafeRaw: Self.columns)"
            ).first().map(Self.upload(from:))
        }
    }

    /// Deletes the rows of uploads expired at `now` whose lease is not live, and returns them.
    package func expire(now: Int64, limit: Int = 500) async throws -> [TusUpload] {
        try await database.write { db in
            try await db.raw(
                """
                DELETE FROM uploads WHERE id IN (SELECT id FROM uploads WHERE expires_at < \(bind: now) AND locked_until < \(bind: now)
                LIMIT \(bind: limit)) RETURNING \(unsafeRaw: Self.columns)
                """
            ).all().map(Self.upload(from:))
        }
    }
}

/// Deletes expired tus uploads and their partial bytes in the blob store (tus 1.0 expiration
/// extension: the multipart upload and the tail, whichever node wrote them), every `interval`,
/// until graceful shutdown.
package struct UploadExpiryService: Service {
    let store: UploadStore
    let blobs: any BlobStore
    let interval: Duration
    let logger: Logger

    /// Creates the service.
    package init(store: UploadStore, blobs: any BlobStore, interval: Duration = .seconds(60), logger: Logger) {
        self.store = store
        self.blobs = blobs
        self.interval = interval
        self.logger = logger
    }

    /// Sweeps once: deletes the uploads expired at `now` (epoch milliseconds) and their bytes.
    /// - Returns: how many were removed.
    @discardableResult
    package func sweep(now: Int64 = WallClock.milliseconds()) async throws -> Int {
        var removed = 0
        while true {
            let expired = try await store.expire(now: now)
            for upload in expired where upload.fileId == nil {
                try? await blobs.removePartial(tenantId: upload.tenantId, id: upload.id, multipartId: upload.multipartId)
            }
            removed += expired.count
            if expired.count < 500 { return removed }
        }
    }

    /// Runs the sweep loop until graceful shutdown.
    package func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                do {
                    let removed = try await sweep()
                    if removed > 0 { logger.info("expired uploads removed", metadata: ["count": .stringConvertible(removed)]) }
                } catch {
                    // A sweep that shutdown interrupted has not failed.
                    if Task.isCancelled || error is CancellationError { break }
                    logger.warning("sweeping expired uploads failed", metadata: ["error": .string(String(describing: type(of: error)))])
                }
                try? await Task.sleep(for: interval)
            }
        }
    }
}
