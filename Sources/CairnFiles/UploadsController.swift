package import CairnHTTP
package import CairnObjects
import CairnStorage
import Crypto
import Foundation
import HTTPTypes
package import Hummingbird
package import Logging
import NIOCore

/// `/uploads`: resumable uploads with the tus 1.0.0 protocol (https://tus.io/protocols/resumable-upload)
/// — core, creation, creation-with-upload, termination, expiration and checksum (sha256, sha1,
/// md5). A finished upload becomes a `StoredFile` with the upload's id (`Cairn-File-Id`).
/// Every route but `OPTIONS` is tenant-scoped; another tenant's upload is 404. Errors are
/// problem+json, also for the status codes tus fixes (409, 412, 415, 460).
package struct UploadsController: Sendable {
    let uploads: UploadStore
    let files: FileStore
    let blobs: any BlobStore
    let quotas: FileQuotas
    let expirySeconds: Int
    let logger: Logger

    /// Creates the controller; uploads not finished within `expirySeconds` of their creation expire.
    package init(
        uploads: UploadStore, files: FileStore, blobs: any BlobStore, quotas: FileQuotas, expirySeconds: Int, logger: Logger
    ) {
        self.uploads = uploads
        self.files = files
        self.blobs = blobs
        self.quotas = quotas
        self.expirySeconds = expirySeconds
        self.logger = logger
    }

    static let tusResumable = HTTPField.Name("Tus-Resumable")!
    static let tusVersion = HTTPField.Name("Tus-Version")!
    static let tusExtension = HTTPField.Name("Tus-Extension")!
    static let tusMaxSize = HTTPField.Name("Tus-Max-Size")!
    static let tusChecksumAlgorithm = HTTPField.Name("Tus-Checksum-Algorithm")!
    static let uploadOffset = HTTPField.Name("Upload-Offset")!
    static let uploadLength = HTTPField.Name("Upload-Length")!
    static let uploadDeferLength = HTTPField.Name("Upload-Defer-Length")!
    static let uploadMetadata = HTTPField.Name("Upload-Metadata")!
    static let uploadExpires = HTTPField.Name("Upload-Expires")!
    static let uploadChecksum = HTTPField.Name("Upload-Checksum")!
    static let fileIdHeader = HTTPField.Name("Cairn-File-Id")!
    static let extensions = "creation,creation-with-upload,termination,expiration,checksum"
    static let offsetStream = "application/offset+octet-stream"
    /// A PATCH's lease on its upload, renewed at every checkpoint.
    static let leaseMilliseconds: Int64 = 60_000
    /// Bytes and time between checkpoints (fsync, then commit the offset) within one PATCH.
    static let checkpointBytes: Int64 = 8 << 20
    static let checkpointMilliseconds: Int64 = 20_000

    /// Adds `OPTIONS` (public: it tells capabilities only) and the tenant-scoped routes.
    package func addRoutes(to router: Router<CairnRequestContext>, authenticated group: RouterGroup<AuthenticatedContext>) {
        router.on("uploads", method: .options, use: options)
        router.on("uploads/:id", method: .options, use: options)
        group.group("uploads")
            .post(use: postUpload)
            .head(":id", use: headUpload)
            .patch(":id", use: patchUpload)
            .delete(":id", use: deleteUpload)
    }

    /// `OPTIONS /uploads[/{id}]`: the server's tus capabilities.
    @Sendable func options(_ request: Request, context: CairnRequestContext) async throws -> Response {
        Response(
            status: .noContent,
            headers: [
                Self.tusResumable: "1.0.0", Self.tusVersion: "1.0.0", Self.tusExtension: Self.extensions,
                Self.tusMaxSize: String(maxSize), Self.tusChecksumAlgorithm: "sha256,sha1,md5",
            ])
    }

    /// `Tus-Max-Size`: the largest upload the quotas could ever take, in bytes (the smallest of
    /// the file size limit, the tenant's total quota and its hourly volume).
    var maxSize: Int64 { min(quotas.maxFileBytes, quotas.maxTotalBytes, quotas.maxBytesPerHour) }

    /// `POST /uploads`: creation, and creation-with-upload when a body comes along.
    @Sendable func postUpload(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        try await tus(request) { try await create(request, context: context) }
    }

    /// `HEAD /uploads/{id}`: the offset to resume from.
    @Sendable func headUpload(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        try await tus(request) {
            var upload = try await find(context)
            if upload.fileId == nil && upload.offset == upload.length {
                // Every byte arrived but the completion stopped short (a crash, a failed write):
                // finish it now, or a client that trusts this offset would never see its file.
                if let (leased, token) = try? await lease(upload, busy: "") { upload = try await finish(leased, token: token) }
            }
            var headers = state(upload)
            headers[.cacheControl] = "no-store"
            headers[Self.uploadLength] = String(upload.length)
            // tus 1.0.0 core, HEAD: the creation's metadata, as the client sent it.
            if let metadata = upload.metadata { headers[Self.uploadMetadata] = metadata }
            return Response(status: .ok, headers: headers)
        }
    }

    /// `PATCH /uploads/{id}`: appends the body at `Upload-Offset`.
    @Sendable func patchUpload(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        try await tus(request) { try await patch(request, context: context) }
    }

    /// `DELETE /uploads/{id}`: termination.
    @Sendable func deleteUpload(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        try await tus(request) {
            let upload = try await find(context)
            // The bytes first, so a store that is away (503) leaves the row for a retry or the
            // expiry sweep: the multipart upload as last committed, whichever node started it.
            if upload.fileId == nil {
                try await FilesController.storeCall {
                    try await blobs.removePartial(tenantId: upload.tenantId, id: upload.id, multipartId: upload.multipartId)
                }
            }
            guard let deleted = try await uploads.delete(id: upload.id, tenantId: upload.tenantId) else { throw AppError.notFound("No such upload.") }
            if deleted.fileId == nil, deleted.multipartId != upload.multipartId || deleted.offset != upload.offset {
                // A PATCH stored more in between (its commit now fails): remove that too.
                try? await blobs.removePartial(tenantId: deleted.tenantId, id: deleted.id, multipartId: deleted.multipartId)
            }
            return Response(status: .noContent)
        }
    }

    /// Checks `Tus-Resumable` (412 with `Tus-Version` unless 1.0.0) and puts `Tus-Resumable` on
    /// every answer, errors included.
    private func tus(_ request: Request, _ body: () async throws -> Response) async throws -> Response {
        do {
            guard request.headers[Self.tusResumable] == "1.0.0" else {
                throw AppError(
                    .preconditionFailed, code: .preconditionFailed, detail: "This server speaks tus 1.0.0 (send Tus-Resumable: 1.0.0).",
                    headers: [Self.tusVersion: "1.0.0"])
            }
            var response = try await body()
            response.headers[Self.tusResumable] = "1.0.0"
            return response
        } catch var error as AppError {
            error.headers[Self.tusResumable] = "1.0.0"
            throw error
        }
    }

    /// `Upload-Offset`, `Upload-Expires` and, once complete, `Cairn-File-Id`.
    private func state(_ upload: TusUpload) -> HTTPFields {
        var headers: HTTPFields = [Self.uploadOffset: String(upload.offset), Self.uploadExpires: Self.httpDate(upload.expiresAt)]
        if let fileId = upload.fileId { headers[Self.fileIdHeader] = fileId }
        return headers
    }

    /// An RFC 9110 §5.6.7 IMF-fixdate.
    static func httpDate(_ milliseconds: Int64) -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss 'GMT'"
        return formatter.string(from: Date(timeIntervalSince1970: Double(milliseconds) / 1000))
    }

    /// The caller's live upload; expired ones are gone (404) even before the sweeper removes them.
    /// Only its uploader (the user or service token that created it) and the tenant's owners and
    /// admins may see, resume or terminate it, as with files and jobs.
    /// - Throws: 404 `not_found` (no such upload in the tenant, or expired); 403 `forbidden`
    ///   for anyone else in the tenant.
    private func find(_ context: AuthenticatedContext) async throws -> TusUpload {
        guard let upload = try await uploads.get(id: try context.parameters.require("id"), tenantId: context.identity.tenantId),
            upload.expiresAt >= WallClock.milliseconds()
        else { throw AppError.notFound("No such upload.") }
        let identity = context.identity
        guard upload.createdBy == identity.userId || (identity.role.isAdmin && !identity.isServiceToken) else {
            throw AppError.forbidden("Only admins and the upload's uploader can use it.")
        }
        return upload
    }

    // MARK: Creation

    private func create(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        let length = try Self.uploadLength(request)
        let tenantId = context.identity.tenantId
        try await checkQuotas(tenantId: tenantId, length: length)
        let described = try Self.describedUpload(request)
        // Read before the upload is recorded and leased: a malformed header must leave nothing.
        let checksum = described.hasBody || length == 0 ? try Self.checksum(request) : nil
        // An upload whose bytes could not be stored must not be recorded: the client would
        // learn of the outage only at its first PATCH, with a row left to expire.
        try await FilesController.storeCall { try await blobs.checkReachable() }
        let now = WallClock.milliseconds()
        var upload = TusUpload(
            id: UUIDv7.make(), tenantId: tenantId, createdBy: context.identity.userId, length: length, offset: 0, name: described.name,
            contentType: described.contentType, format: described.format, fileId: nil,
            expiresAt: now + Int64(expirySeconds) * 1000, createdAt: now,
            metadata: request.headers[Self.uploadMetadata].flatMap { $0.isEmpty ? nil : $0 })
        try await record(upload)
        if described.hasBody || length == 0 {
            let (leased, token) = try await lease(upload, busy: "The upload is busy.")
            upload = try await append(leased, token: token, body: request.body, checksum: checksum)
        }
        var headers = state(upload)
        headers[.location] = "/uploads/\(upload.id)"
        return Response(status: .created, headers: headers)
    }

    /// Records `upload`, reserving its length against the tenant's total quota in the same
    /// transaction (its bytes are stored from its first PATCH on).
    /// - Throws: 413 `payload_too_large` when files and unfinished uploads would pass the quota.
    private func record(_ upload: TusUpload) async throws {
        do {
            try await uploads.create(upload, quotas: quotas)
        } catch {
            if error is FileStore.QuotaExceeded {
                throw FilesController.tooLarge("The tenant's files and unfinished uploads would exceed their \(quotas.maxTotalBytes)-byte quota.")
            }
            throw error
        }
    }

    /// `Upload-Length` of a creation (deferred lengths are not offered).
    /// - Throws: 400 `invalid_input` on `Upload-Defer-Length` or `Upload-Length`; 413
    ///   `payload_too_large` for a length of digits past `Int64.max` (past any `Tus-Max-Size`).
    package static func uploadLength(_ request: Request) throws -> Int64 {
        if request.headers[Self.uploadDeferLength] != nil {
            throw AppError.invalidField("Upload-Defer-Length", "not supported: send Upload-Length")
        }
        if let text = request.headers[Self.uploadLength], !text.isEmpty, text.utf8.allSatisfy({ (0x30...0x39).contains($0) }), Int64(text) == nil {
            throw AppError(.contentTooLarge, code: .payloadTooLarge, detail: "Upload-Length is larger than Tus-Max-Size.")
        }
        guard let text = request.headers[Self.uploadLength], let length = Int64(text), length >= 0 else {
            throw AppError.invalidField("Upload-Length", "must be a non-negative integer")
        }
        return length
    }

    /// What a creation says of its file (name, media type, format, from `Upload-Metadata`) and
    /// whether its body holds the first bytes (creation-with-upload). The file must pass the
    /// allow-list of `POST /files` (``FileFormats``): an allow-listed `filetype` (or
    /// `application/octet-stream`, or none), a name whose suffix, if any, is allow-listed, and a
    /// format from `format`, `filetype` or the name. The media type kept is `filetype` when
    /// allow-listed, else the format's own.
    /// - Throws: 400 `invalid_input` on `Upload-Metadata` (also when its `format`, `filetype` and
    ///   `filename` suffix name different formats); 415 `unsupported_media_type` for a type,
    ///   name or format outside the allow-list, or a body not typed as tus says.
    package static func describedUpload(_ request: Request) throws -> (name: String, contentType: String, format: String, hasBody: Bool) {
        let metadata = try Self.metadata(request.headers[Self.uploadMetadata] ?? "")
        let declared = metadata["filetype"].map(FileFormats.mediaType).flatMap { $0.isEmpty ? nil : $0 }
        if let declared { try FileFormats.checkDeclared(type: declared) }
        let name = try FilesController.checkedName(metadata["filename"] ?? "upload")
        if let suffix = FileFormats.suffix(of: name), FileFormats.suffixes[suffix] == nil {
            throw AppError(
                .unsupportedMediaType, code: .unsupportedMediaType,
                detail: "The file name's suffix .\(suffix) is not a CSV, JSON, NDJSON or XML file's (.csv, .json, .ndjson, .jsonl, .xml).")
        }
        let format = try Self.format(asked: metadata["format"], contentType: declared, name: name)
        let contentType = declared.flatMap { FileFormats.mediaTypes[$0] == nil ? nil : $0 } ?? FileFormats.canonicalType[format] ?? ""
        // creation-with-upload: a body is the first bytes when typed as tus says.
        let hasBody = request.headers[.contentType] == Self.offsetStream
        if !hasBody && (request.headers[.contentLength].flatMap { Int64($0) } ?? 0) > 0 {
            throw AppError(
                .unsupportedMediaType, code: .unsupportedMediaType, detail: "A body on POST /uploads must be \(Self.offsetStream).")
        }
        return (name, contentType, format, hasBody)
    }

    /// Refuses an upload of `length` bytes the tenant's quotas cannot take (413, or 429 for the
    /// hourly volume), before anything is stored. A quick first look: the total is checked
    /// again, and reserved, atomically when the upload is recorded.
    private func checkQuotas(tenantId: String, length: Int64) async throws {
        // tus 1.0 core: an Upload-Length past Tus-Max-Size is 413, never a 429 that no wait cures.
        if length > maxSize {
            throw FilesController.tooLarge("Upload-Length \(length) is larger than Tus-Max-Size (\(maxSize) bytes).")
        }
        if try await files.usedBytes(tenantId: tenantId) + length > quotas.maxTotalBytes {
            throw FilesController.totalQuotaExceeded(quotas)
        }
        let hour = WallClock.milliseconds() / 3_600_000
        if try await files.uploaded(tenantId: tenantId, hour: hour) + length > quotas.maxBytesPerHour {
            throw FilesController.hourlyLimit(quotas, hour: hour)
        }
    }

    /// The upload's format: `Upload-Metadata`'s `format`, else its `filetype`'s, else the file
    /// name's suffix's.
    /// - Throws: 415 `unsupported_media_type` when none of them names an allow-listed format;
    ///   400 `invalid_input` on `Upload-Metadata` when two of them name different formats.
    static func format(asked: String?, contentType: String?, name: String) throws -> String {
        // Hints that disagree (`format: json` on `flights.csv`) leave the file's format a guess:
        // refused, naming both, rather than one silently winning.
        var hints: [(said: String, format: String)] = []
        if let asked, FileFormats.names.contains(asked) { hints.append(("format \(asked)", asked)) }
        if let type = contentType, let format = FileFormats.mediaTypes[type] { hints.append(("filetype \(type)", format)) }
        if let suffix = FileFormats.suffix(of: name), let format = FileFormats.suffixes[suffix] {
            hints.append(("the filename's suffix .\(suffix)", format))
        }
        if let first = hints.first, let other = hints.first(where: { $0.format != first.format }) {
            throw AppError.invalidField(
                "Upload-Metadata", "\(first.said) (\(first.format)) and \(other.said) (\(other.format)) name different formats")
        }
        if let format = asked ?? contentType.flatMap({ FileFormats.mediaTypes[$0] })
            ?? FileFormats.suffix(of: name).flatMap({
                FileFormats.suffixes[$0]
            }), FileFormats.names.contains(format)
        {
            return format
        }
        throw AppError(
            .unsupportedMediaType, code: .unsupportedMediaType,
            detail:
                "Name the file's format (csv, json, ndjson or xml) in Upload-Metadata: format, an allow-listed filetype, or the filename's suffix.")
    }

    /// `Upload-Metadata`: comma-separated `key base64value` pairs (value optional), keys unique.
    /// - Throws: 400 `invalid_input` on `Upload-Metadata`.
    package static func metadata(_ header: String) throws -> [String: String] {
        var result: [String: String] = [:]
        for pair in header.split(separator: ",") {
            let parts = pair.trimmingCharacters(in: .whitespaces).split(separator: " ", omittingEmptySubsequences: true)
            guard (1...2).contains(parts.count), result[String(parts[0])] == nil else {
                throw AppError.invalidField("Upload-Metadata", "must be comma-separated 'key base64value' pairs with unique keys")
            }
            if parts.count == 1 {
                result[String(parts[0])] = ""
                continue
            }
            guard let data = Data(base64Encoded: String(parts[1])), let value = String(data: data, encoding: .utf8) else {
                throw AppError.invalidField("Upload-Metadata", "the value of \(parts[0]) is not base64 of UTF-8 text")
            }
            result[String(parts[0])] = value
        }
        return result
    }

    private func patch(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        let offset = try Self.patchOffset(request)
        let checksum = try Self.checksum(request)
        let upload = try await find(context)
        try Self.checkResumable(upload, at: offset)
        // A declared body that cannot fit is refused before a byte is read (or kept).
        if let declared = request.headers[.contentLength].flatMap({ Int64($0) }), declared > upload.length - offset {
            throw Self.pastLength(upload)
        }
        let (leased, token) = try await lease(
            upload, busy: "Another PATCH of this upload is in progress, or its offset moved; ask HEAD for the offset.")
        let finished = try await append(leased, token: token, body: request.body, checksum: checksum)
        return Response(status: .noContent, headers: state(finished))
    }

    /// A PATCH whose body goes past the upload's `Upload-Length`: 413 `payload_too_large`, as
    /// tus 1.0.0 answers a request larger than the server takes (RFC 9110 §15.5.14). What
    /// arrived before the excess (a chunked body) is kept, and HEAD tells its offset.
    static func pastLength(_ upload: TusUpload) -> AppError {
        AppError(
            .contentTooLarge, code: .payloadTooLarge,
            detail: "The body goes past Upload-Length (\(upload.length) bytes); ask HEAD for the offset and send the rest only.")
    }

    /// A PATCH's `Upload-Offset`, once its body is typed as tus says.
    /// - Throws: 415 for another body type; 400 `invalid_input` on `Upload-Offset`.
    package static func patchOffset(_ request: Request) throws -> Int64 {
        guard request.headers[.contentType] == Self.offsetStream else {
            throw AppError(.unsupportedMediaType, code: .unsupportedMediaType, detail: "A PATCH body must be \(Self.offsetStream).")
        }
        guard let text = request.headers[Self.uploadOffset], let offset = Int64(text), offset >= 0 else {
            throw AppError.invalidField("Upload-Offset", "must be a non-negative integer")
        }
        return offset
    }

    /// Whether `upload` takes bytes at `offset`.
    /// - Throws: 409 `conflict` with the upload's `Upload-Offset` when it is complete or the
    ///   offsets differ.
    static func checkResumable(_ upload: TusUpload, at offset: Int64) throws {
        if upload.fileId != nil {
            throw AppError(
                .conflict, code: .conflict, detail: "The upload is complete (\(upload.offset) bytes); it accepts no more data.",
                headers: [Self.uploadOffset: String(upload.offset)])
        }
        guard offset == upload.offset else {
            throw AppError(
                .conflict, code: .conflict, detail: "Upload-Offset \(offset) does not match the upload's offset \(upload.offset).",
                headers: [Self.uploadOffset: String(upload.offset)])
        }
    }

    /// Takes the upload's write lease at its current offset, for one request.
    /// - Returns: the leased upload and the lease's token.
    /// - Throws: 409 `conflict` saying `busy` when another request holds it or the offset moved.
    private func lease(_ upload: TusUpload, busy: String) async throws -> (TusUpload, token: String) {
        let now = WallClock.milliseconds()
        let token = UUID().uuidString
        guard
            let leased = try await uploads.lease(
                id: upload.id, tenantId: upload.tenantId, offset: upload.offset, token: token, until: now + Self.leaseMilliseconds, now: now)
        else { throw AppError.conflict(busy) }
        return (leased, token)
    }

    /// Appends `body` at the upload's committed offset under the lease `token` (see
    /// ``TusAppend``), and completes the upload when it reaches its length.
    /// - Throws: 460 `checksum_mismatch`; 413 past `Upload-Length`; 409 when the lease was lost;
    ///   the body's error when the connection was cut (after keeping what arrived); the
    ///   completion's errors.
    private func append(_ upload: TusUpload, token: String, body: RequestBody, checksum: Checksum?) async throws -> TusUpload {
        let uploads = self.uploads
        // Every byte arrived and an earlier completion stopped short: finish that one.
        if upload.offset == upload.length && upload.length > 0 { return try await finish(upload, token: token) }
        let commit = TusAppend.committer(uploads: uploads, id: upload.id, token: token)
        let (written, failure, durable): (Int64, (any Error)?, PartialBlob)
        do {
            (written, failure, durable) = try await FilesController.storeCall {
                try await blobs.appendPartial(tenantId: upload.tenantId, id: upload.id, from: upload.partial, commit: commit) { writer in
                    var append = TusAppend(upload: upload, token: token, checksum: checksum, uploads: uploads, writer: writer)
                    let failure = await append.write(body)
                    return (append.offset, failure, writer.durable)
                }
            }
        } catch {
            _ = try? await uploads.commit(id: upload.id, token: token, offset: upload.offset, until: 0)
            if error is PartialBlobMissing {
                // Never make up the received bytes (zeros in their place would pass every check).
                throw AppError(
                    .gone, code: .notFound, detail: "The upload's received bytes are gone from the store; create a new upload.",
                    headers: [Self.uploadOffset: String(upload.offset)])
            }
            throw error
        }
        // A store that went away mid-body is a 503, as before the body.
        if let failure { try await FilesController.storeCall { () -> Void in throw failure } }
        var result = upload
        // The parts this PATCH committed: a completion names them all.
        (result.offset, result.multipartId, result.parts) = (written, durable.multipartId, durable.parts)
        if written == upload.length { result = try await finish(result, token: token) }
        return result
    }

    /// Turns a complete upload into a file: makes its partial blob the upload's blob (a rename
    /// on the file system; the tail as the last part and a completed multipart upload on an
    /// object store), hashes the blob by streaming it once (the PATCHes may have come to several
    /// nodes, and a SHA-256 state cannot travel between them), and records the file and the
    /// upload's completion in one transaction, with the usual quota checks. Safe to repeat after
    /// it stopped anywhere: once the blob exists its bytes are complete, and the record is all or
    /// nothing.
    /// - Throws: 413/429 when the tenant's quotas no longer allow it (the upload is removed);
    ///   503 `unavailable` when the record could not be written or the store is unreachable (the
    ///   bytes stay, and the next HEAD or PATCH finishes it); 410 when the bytes are nowhere.
    private func finish(_ upload: TusUpload, token: String) async throws -> TusUpload {
        let (tenantId, id) = (upload.tenantId, upload.id)
        do {
            if try await FilesController.storeCall({ try await blobs.size(tenantId: tenantId, id: id) }) == nil {
                try await FilesController.storeCall { try await blobs.completePartial(tenantId: tenantId, id: id, state: upload.partial) }
            }
        } catch {
            _ = try? await uploads.commit(id: id, token: token, offset: upload.offset, until: 0)
            if error is PartialBlobMissing {
                throw AppError(.gone, code: .notFound, detail: "The upload's bytes are gone from the store; create a new upload.")
            }
            throw error
        }
        var hasher = SHA256()
        do {
            try await FilesController.storeCall {
                for try await chunk in try await blobs.read(tenantId: tenantId, id: id, range: 0..<upload.length) {
                    chunk.withUnsafeReadableBytes { hasher.update(bufferPointer: $0) }
                }
            }
        } catch {
            _ = try? await uploads.commit(id: id, token: token, offset: upload.offset, until: 0)
            throw error
        }
        let sha256 = hasher.finalize().map { String(format: "%02x", $0) }.joined()
        let file = StoredFile(
            id: id, tenantId: tenantId, name: upload.name, size: upload.length, sha256: sha256, contentType: upload.contentType,
            format: upload.format, createdBy: upload.createdBy, createdAt: WallClock.milliseconds())
        try await record(file, of: upload, token: token)
        var result = upload
        result.fileId = file.id
        return result
    }

    /// Records the finished upload's file, counting it against the tenant's quotas, and marks
    /// the upload complete in the same transaction.
    /// - Throws: 413/429 when the quotas no longer allow it (the blob and the upload are then
    ///   removed); 503 `unavailable` on any other error: a fully received upload is never
    ///   deleted for a database that failed once, and its lease is given back for the next try.
    private func record(_ file: StoredFile, of upload: TusUpload, token: String) async throws {
        let hour = WallClock.milliseconds() / 3_600_000
        do {
            try await files.insert(file, quotas: quotas, hour: hour, completingUpload: (upload.id, token))
        } catch let exceeded as FileStore.QuotaExceeded {
            try? await blobs.delete(tenantId: upload.tenantId, id: upload.id)
            _ = try? await uploads.delete(id: upload.id, tenantId: upload.tenantId)
            switch exceeded {
            case .total: throw FilesController.totalQuotaExceeded(quotas)
            case .hourly: throw FilesController.hourlyLimit(quotas, hour: hour)
            }
        } catch {
            logger.warning(
                "recording a finished upload failed; the next HEAD or PATCH finishes it",
                metadata: ["upload_id": .string(upload.id), "error.type": .string(String(reflecting: type(of: error)))])
            _ = try? await uploads.commit(id: upload.id, token: token, offset: upload.length, until: 0)
            throw AppError(
                .serviceUnavailable, code: .unavailable,
                detail: "Every byte arrived, but the file could not be recorded yet; HEAD or PATCH the upload again to finish it.",
                headers: [.retryAfter: "1"])
        }
    }
}
