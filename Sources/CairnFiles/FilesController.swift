package import CairnHTTP
package import CairnObjects
import CairnStorage
import Foundation
import HTTPTypes
package import Hummingbird
package import Logging
import Metrics
import NIOCore

/// `/files`: upload (the raw body, streamed to disk while hashed), list, read, download (with
/// single `Range` requests, RFC 9110 §14) and delete; all scoped to the caller's tenant.
package struct FilesController: Sendable {
    let store: FileStore
    let blobs: any BlobStore
    let quotas: FileQuotas
    let logger: Logger

    /// Creates the controller.
    package init(store: FileStore, blobs: any BlobStore, quotas: FileQuotas, logger: Logger) {
        self.store = store
        self.blobs = blobs
        self.quotas = quotas
        self.logger = logger
        // The refusal counters exist from start-up, at zero.
        for limit in ["size", "hourly"] { Counter(label: "cairn_files_quota_refusals_total", dimensions: [("limit", limit)]).increment(by: 0) }
    }

    /// Adds the routes to the authenticated group.
    package func addRoutes(to group: RouterGroup<AuthenticatedContext>) {
        group.group("files")
            .resource(list: list, create: upload, show: show, delete: delete)
            .get(":id/content", use: content)
    }

    /// `GET /files`: a page of the tenant's files.
    @Sendable func list(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        let page = try PageRequest.parse(request.uri, validateKey: UUIDv7.isValid)
        return .json(try await store.list(tenantId: context.identity.tenantId, page: page))
    }

    /// `GET /files/{id}`: the file's metadata; its `ETag` is the content's SHA-256.
    @Sendable func show(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        let file = try await find(context)
        return ETag.conditional(request, file, etag: "\"\(file.sha256)\"")
    }

    /// `GET /files/{id}/content`: the bytes, with single `Range` requests.
    @Sendable func content(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        try await download(request, file: try await find(context))
    }

    /// `DELETE /files/{id}`: members delete what they uploaded; owners and admins anything.
    @Sendable func delete(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        let file = try await find(context)
        let (id, tenantId) = (file.id, file.tenantId)
        try context.identity.requireAdminOrCreator(file.createdBy, "Only admins and the file's uploader can delete it.")
        guard try await store.delete(id: id, tenantId: tenantId) else { throw AppError.notFound("No such file.") }
        do { try await blobs.delete(tenantId: tenantId, id: id) } catch {
            logger.warning("deleting a blob failed; it is orphaned", metadata: ["file_id": .string(id)])
        }
        return Response(status: .noContent)
    }

    private func find(_ context: AuthenticatedContext) async throws -> StoredFile {
        guard let file = try await store.get(id: try context.parameters.require("id"), tenantId: context.identity.tenantId) else {
            throw AppError.notFound("No such file.")
        }
        return file
    }

    // MARK: Upload

    /// `POST /files`: the raw body (or one multipart part), streamed to the blob store.
    @Sendable func upload(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        let tenantId = context.identity.tenantId
        let mediaType =
            (request.headers[.contentType] ?? "").split(separator: ";").first.map {
                $0.trimmingCharacters(in: .whitespaces).lowercased()
            } ?? ""
        // A multipart body proves its own end (its closing delimiter), so it may come chunked.
        if mediaType == "multipart/form-data" { return try await uploadForm(request, context: context) }
        guard let declared = request.headers[.contentLength].flatMap({ Int64($0) }) else { throw Self.lengthRequired }
        var format: String
        if mediaType == "application/octet-stream" {
            guard let asked = request.uri.queryParameters.get("format").map({ String($0) }), FileFormats.names.contains(asked) else {
                throw AppError.invalidField("format", "must be csv, json, ndjson or xml for an application/octet-stream body")
            }
            format = asked
        } else if let known = FileFormats.mediaTypes[mediaType] {
            format = known
        } else {
            throw AppError(
                .unsupportedMediaType, code: .unsupportedMediaType,
                detail:
                    "Send the file as text/csv, application/json, application/x-ndjson, application/xml, or application/octet-stream with ?format=.")
        }
        if let asked = request.uri.queryParameters.get("format").map({ String($0) }), mediaType != "application/octet-stream" {
            guard FileFormats.names.contains(asked) else { throw AppError.invalidField("format", "must be csv, json, ndjson or xml") }
            format = asked
        }
        let name = try Self.fileName(request, format: format)
        return try await store(
            tenantId: tenantId, userId: context.identity.userId, declared: declared,
            write: { id, limit in
                let written = try await blobs.write(
                    tenantId: tenantId, id: id, body: DeclaredLengthBody(base: request.body, declared: declared), maxBytes: limit)
                return (written.size, written.sha256, name, mediaType, format)
            })
    }

    /// 411 `length_required`: a raw body without `Content-Length`. Hummingbird ends a request
    /// body quietly when its connection closes, so a chunked body cut off before its last
    /// chunk would read as a shorter, complete file; only an announced length tells the two
    /// apart (S3's PutObject asks for one too).
    package static var lengthRequired: AppError {
        AppError(
            .lengthRequired, code: .lengthRequired,
            detail: "Send the file with a Content-Length header (or as multipart/form-data, or through tus at /uploads).")
    }

    /// What an upload's writer reports: the stored bytes and the file's labels.
    typealias Written = (size: Int64, sha256: String, name: String, contentType: String, format: String)

    /// Checks the quotas, runs `write` (which streams the bytes into the blob `id`, at most
    /// `limit` of them), and records the file; shared by raw and multipart uploads.
    func store(
        tenantId: String, userId: String?, declared: Int64?, write: (_ id: String, _ limit: Int64) async throws -> Written
    ) async throws -> Response {
        let admission = try await admit(tenantId: tenantId, declared: declared)
        let id = UUIDv7.make()
        let written = try await writeBlob(limit: admission.limit) { try await write(id, $0) }
        let file = StoredFile(
            id: id, tenantId: tenantId, name: written.name, size: written.size, sha256: written.sha256, contentType: written.contentType,
            format: written.format, createdBy: userId, createdAt: WallClock.milliseconds())
        try await record(file, hour: admission.hour)
        var response = Response.json(file, status: .created)
        response.headers[.location] = "/files/\(id)"
        return response
    }

    /// What the quotas leave an upload: the most bytes it may write, and the clock hour its
    /// bytes count against.
    typealias Admission = (limit: Int64, hour: Int64)

    /// Checks the quotas before anything is read, with `Content-Length` when the client sent
    /// one.
    /// - Throws: 413 past the size limit or the tenant's total quota; 429 past the hourly volume.
    func admit(tenantId: String, declared: Int64?) async throws -> Admission {
        if let declared, declared > quotas.maxFileBytes { throw Self.fileTooLarge(quotas) }
        let room = quotas.maxTotalBytes - (try await store.usedBytes(tenantId: tenantId))
        if let declared, declared > room { throw Self.totalQuotaExceeded(quotas) }
        let hour = WallClock.milliseconds() / 3_600_000
        let uploaded = try await store.uploaded(tenantId: tenantId, hour: hour)
        if uploaded + (declared ?? 1) > quotas.maxBytesPerHour { throw Self.hourlyLimit(quotas, hour: hour) }
        return (min(quotas.maxFileBytes, room), hour)
    }

    /// Runs an upload's blob write, answering the store's refusals in HTTP terms.
    /// - Throws: 503 when the blob store is unreachable; 413 when the bytes pass `limit` (naming
    ///   whichever limit it is: the file size, or the tenant's room); 400 `invalid_input` on
    ///   `body` when the body ended before its `Content-Length`.
    func writeBlob(limit: Int64, _ write: (_ limit: Int64) async throws -> Written) async throws -> Written {
        do {
            return try await write(limit)
        } catch is BlobStoreUnavailable {
            throw Self.storeUnavailable
        } catch is BlobTooLarge {
            throw limit == quotas.maxFileBytes ? Self.fileTooLarge(quotas) : Self.totalQuotaExceeded(quotas)
        } catch let error as IncompleteBody {
            // The client is most likely gone; the answer is for the log and any client left.
            throw AppError.invalidField("body", "\(error.description); nothing was stored")
        }
    }

    /// Records a written file, counting its bytes against the quotas in the same transaction;
    /// when that fails, the blob is removed again.
    /// - Throws: 413 or 429 when a concurrent upload took the room first.
    func record(_ file: StoredFile, hour: Int64) async throws {
        do {
            try await store.insert(file, quotas: quotas, hour: hour)
        } catch {
            try? await blobs.delete(tenantId: file.tenantId, id: file.id)
            switch error as? FileStore.QuotaExceeded {
            case .total: throw Self.totalQuotaExceeded(quotas)
            case .hourly: throw Self.hourlyLimit(quotas, hour: hour)
            case nil: throw error
            }
        }
    }

    /// 503 `unavailable` with `Retry-After`: the blob store cannot be reached.
    package static var storeUnavailable: AppError {
        AppError(
            .serviceUnavailable, code: .unavailable, detail: "The file store is not reachable; try again shortly.", headers: [.retryAfter: "5"])
    }

    /// Runs a blob store call, answering 503 when the store is unreachable and 404 when the
    /// blob read is missing.
    /// - Throws: ``storeUnavailable`` for `BlobStoreUnavailable`; ``contentMissing`` for
    ///   `BlobNotFound`; other errors as they are.
    package static func storeCall<T>(_ call: () async throws -> T) async throws -> T {
        do {
            return try await call()
        } catch let error as BlobStoreUnavailable {
            // The operator's one sign of an outage besides the metric (the reason names no secret).
            Logger(label: "cairn.files").warning("the blob store is unavailable", metadata: ["reason": .string(error.reason)])
            throw storeUnavailable
        } catch let error as BlobNotFound {
            Logger(label: "cairn.files").error("a recorded file has no blob in the store", metadata: ["file_id": .string(error.id)])
            throw contentMissing
        }
    }

    /// 404 `not_found` for a file whose row exists but whose bytes the store does not have (an
    /// object deleted behind Cairn's back). Not 503: the store answered, and asking again will
    /// not bring the bytes back, so a client must not be told to retry; the error log tells
    /// the operator.
    package static var contentMissing: AppError {
        AppError.notFound("The file's content is missing from the file store.")
    }

    /// The refusal of an upload past the tenant's hourly volume (429); counted in
    /// `cairn_files_quota_refusals_total{limit="hourly"}`.
    static func hourlyLimit(_ quotas: FileQuotas, hour: Int64) -> AppError {
        Counter(label: "cairn_files_quota_refusals_total", dimensions: [("limit", "hourly")]).increment()
        let retryAfter = Int((hour + 1) * 3600 - WallClock.milliseconds() / 1000)
        return AppError.rateLimited(
            retryAfter: max(1, retryAfter), policy: "\(quotas.maxBytesPerHour);w=3600", detail: "Hourly upload volume reached for this tenant.")
    }

    /// 413 for a file past the size limit.
    static func fileTooLarge(_ quotas: FileQuotas) -> AppError {
        tooLarge("The file exceeds the \(quotas.maxFileBytes)-byte limit.")
    }

    /// 413 for a file that would take the tenant's files past their total quota.
    static func totalQuotaExceeded(_ quotas: FileQuotas) -> AppError {
        tooLarge("The tenant's files would exceed their \(quotas.maxTotalBytes)-byte quota.")
    }

    /// The refusal of an upload past the file size limit or the tenant's total quota (413);
    /// counted in `cairn_files_quota_refusals_total{limit="size"}`.
    static func tooLarge(_ detail: String) -> AppError {
        Counter(label: "cairn_files_quota_refusals_total", dimensions: [("limit", "size")]).increment()
        return AppError(.contentTooLarge, code: .payloadTooLarge, detail: detail)
    }

    /// The file's name: `Content-Disposition`'s `filename*` (RFC 8187, UTF-8 or ISO-8859-1) or
    /// `filename` (RFC 6266, token or quoted string), else `?name=`, else `upload.<format>`.
    /// 1–255 characters, no control characters and no U+FFFD (what undecodable bytes become).
    /// - Throws: 400 `invalid_input` on `name` for a malformed header or a bad name.
    static func fileName(_ request: Request, format: String) throws -> String {
        var name: String?
        if let disposition = request.headers[.contentDisposition] {
            guard let parameters = dispositionParameters(disposition) else {
                throw AppError.invalidField("name", "Content-Disposition is malformed (RFC 6266)")
            }
            if let extended = parameters["filename*"] {
                guard let decoded = decodeExtended(extended) else {
                    throw AppError.invalidField("name", "filename* must be UTF-8 or ISO-8859-1 percent-encoding (RFC 8187)")
                }
                name = decoded
            } else {
                name = parameters["filename"]
            }
        }
        if name == nil, let asked = request.uri.queryParameters.get("name") { name = String(asked) }
        guard let name else { return "upload.\(format)" }
        return try checkedName(name)
    }

    /// `name` if it is 1–255 characters without control characters, bidirectional control
    /// characters (``TextSafety/isBidiControl(_:)``) or U+FFFD.
    /// - Throws: 400 `invalid_input` on `name`.
    static func checkedName(_ name: String) throws -> String {
        let scalars = name.unicodeScalars
        guard (1...255).contains(scalars.count),
            !scalars.contains(where: { $0.properties.generalCategory == .control || $0 == "\u{FFFD}" || TextSafety.isBidiControl($0) })
        else {
            throw AppError.invalidField("name", "must be 1 to 255 characters without control or bidirectional control characters")
        }
        return name
    }

    /// The parameters of a `Content-Disposition` value (names lower-cased; quoted strings
    /// unescaped), or nil when it does not parse.
    static func dispositionParameters(_ header: String) -> [String: String]? {
        var result: [String: String] = [:]
        let bytes = Array(header.utf8)
        var i = 0
        func skipSpace() { while i < bytes.count, bytes[i] == 0x20 || bytes[i] == 0x09 { i += 1 } }
        func token() -> String {
            let start = i
            while i < bytes.count, bytes[i] != 0x3B, bytes[i] != 0x3D, bytes[i] != 0x20, bytes[i] != 0x09, bytes[i] != 0x22 { i += 1 }
            return String(decoding: bytes[start..<i], as: UTF8.self)
        }
        skipSpace()
        guard !token().isEmpty else { return nil }  // the disposition type
        while true {
            skipSpace()
            if i == bytes.count { return result }
            guard bytes[i] == 0x3B else { return nil }
            i += 1
            skipSpace()
            if i == bytes.count { return result }
            let key = token().lowercased()
            skipSpace()
            guard !key.isEmpty, i < bytes.count, bytes[i] == 0x3D else { return nil }
            i += 1
            skipSpace()
            var value: [UInt8] = []
            if i < bytes.count && bytes[i] == 0x22 {
                guard let quoted = quotedString(bytes, at: &i) else { return nil }
                value = quoted
            } else {
                value = Array(token().utf8)
                guard !value.isEmpty else { return nil }
            }
            result[key] = String(decoding: value, as: UTF8.self)
        }
    }

    /// The unescaped content of the quoted string (RFC 9110 §5.6.4) whose opening quote is at
    /// `bytes[i]`; `i` moves past the closing quote. Nil when the string is not closed.
    static func quotedString(_ bytes: [UInt8], at i: inout Int) -> [UInt8]? {
        var value: [UInt8] = []
        i += 1
        while i < bytes.count {
            if bytes[i] == 0x5C && i + 1 < bytes.count {
                value.append(bytes[i + 1])
                i += 2
            } else if bytes[i] == 0x22 {
                i += 1
                return value
            } else {
                value.append(bytes[i])
                i += 1
            }
        }
        return nil
    }

    /// `UTF-8''na%C3%AFve.csv` → `naïve.csv`, `ISO-8859-1''%E9t%E9.csv` → `été.csv` (RFC 8187
    /// §3.2); nil for another charset, bad percent-encoding or invalid UTF-8.
    static func decodeExtended(_ value: String) -> String? {
        let parts = value.split(separator: "'", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 3 else { return nil }
        var bytes: [UInt8] = []
        var iterator = Array(parts[2].utf8).makeIterator()
        while let byte = iterator.next() {
            guard byte == 0x25 else {
                bytes.append(byte)
                continue
            }
            guard let high = iterator.next(), let low = iterator.next(), let value = UInt8(String(decoding: [high, low], as: UTF8.self), radix: 16)
            else { return nil }
            bytes.append(value)
        }
        switch parts[0].lowercased() {
        case "utf-8": return String(validating: bytes, as: UTF8.self)
        case "iso-8859-1": return String(String.UnicodeScalarView(bytes.map { Unicode.Scalar($0) }))
        default: return nil
        }
    }

    // MARK: Download

    private func download(_ request: Request, file: StoredFile) async throws -> Response {
        // Never rendered on Cairn's origin (stored XSS): an allow-listed type or octet-stream, no
        // sniffing, saved as an attachment, and sandboxed should a browser render it anyway.
        var headers: HTTPFields = [
            .contentType: FileFormats.servedType(contentType: file.contentType, format: file.format), .acceptRanges: "bytes",
            .eTag: "\"\(file.sha256)\"", .xContentTypeOptions: "nosniff", .contentDisposition: FileFormats.attachment(name: file.name),
            .contentSecurityPolicy: "sandbox; default-src 'none'",
        ]
        let etag = "\"\(file.sha256)\""
        // If-None-Match comes before Range (RFC 9110 §13.2.2), as on `GET /files/{id}`.
        if ETag.notModified(request, etag: etag) {
            return Response(status: .notModified, headers: [.eTag: etag, .acceptRanges: "bytes"])
        }
        var range: Range<Int64> = 0..<file.size
        var status = HTTPResponse.Status.ok
        if let header = request.headers[.range], Self.rangeApplies(ifRange: request.headers[.ifRange], etag: etag) {
            switch Self.parseRange(header, size: file.size) {
            case .whole: break
            case .unsatisfiable:
                throw AppError(
                    .rangeNotSatisfiable, code: .rangeNotSatisfiable, detail: "The file has \(file.size) bytes.",
                    headers: [.contentRange: "bytes */\(file.size)"])
            case .range(let asked):
                range = asked
                status = .partialContent
                headers[.contentRange] = "bytes \(asked.lowerBound)-\(asked.upperBound - 1)/\(file.size)"
            }
        }
        headers[.contentLength] = String(range.count)
        // Opened before the answer starts, so an unreachable store is still a 503.
        let chunks = try await Self.storeCall { try await blobs.read(tenantId: file.tenantId, id: file.id, range: range) }
        let body = ResponseBody(contentLength: range.count) { writer in
            for try await chunk in chunks { try await writer.write(chunk) }
            try await writer.finish(nil)
        }
        return Response(status: status, headers: headers, body: body)
    }

    package enum RangeAnswer: Equatable { case whole, unsatisfiable, range(Range<Int64>) }

    /// Whether a `Range` is to be served given the request's `If-Range` (RFC 9110 §13.1.5):
    /// always without one; with one, only when it is exactly the file's strong `etag` (a weak
    /// tag never matches, and a date cannot, as files send no `Last-Modified`). Otherwise the
    /// whole file is sent with 200, so a client resuming a download of other bytes restarts it.
    package static func rangeApplies(ifRange: String?, etag: String) -> Bool {
        guard let ifRange else { return true }
        return ifRange.trimmingCharacters(in: .whitespaces) == etag
    }

    /// One `bytes=` range (first-last, first-, or -suffix; digits only). Several ranges, other
    /// units or bad syntax are answered with the whole file, as RFC 9110 §14.2 allows; a first
    /// position at or past the end (however large) is unsatisfiable.
    package static func parseRange(_ header: String, size: Int64) -> RangeAnswer {
        let trimmed = header.trimmingCharacters(in: .whitespaces)
        guard trimmed.lowercased().hasPrefix("bytes="), !trimmed.contains(",") else { return .whole }
        let spec = trimmed.dropFirst(6).split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false).map {
            $0.trimmingCharacters(in: .whitespaces)
        }
        guard spec.count == 2, spec.allSatisfy({ $0.utf8.allSatisfy { (0x30...0x39).contains($0) } }) else { return .whole }
        // Positions beyond Int64 are simply "very large".
        func position(_ text: String) -> Int64 { Int64(text) ?? .max }
        if spec[0].isEmpty {
            guard !spec[1].isEmpty else { return .whole }
            let suffix = position(spec[1])
            if suffix == 0 || size == 0 { return .unsatisfiable }
            return .range(max(0, size - suffix)..<size)
        }
        let first = position(spec[0])
        let last = spec[1].isEmpty ? size - 1 : min(position(spec[1]), size - 1)
        guard first < size else { return .unsatisfiable }
        guard spec[1].isEmpty || position(spec[1]) >= first else { return .whole }
        return .range(first..<(last + 1))
    }
}
