import CairnHTTP
import CairnObjects
import Hummingbird
import MultipartKit
package import NIOCore
import Synchronization

/// What a `multipart/form-data` body (RFC 7578) carried besides the file's bytes, known once the
/// whole body has been read.
package struct MultipartOutcome: Sendable {
    /// The file part's `filename*` (RFC 8187) or `filename`, if it had one.
    package var fileName: String?
    /// The file part's media type (lower-cased, parameters dropped), if it had one.
    package var fileContentType: String?
    /// Small text fields (`name`, `format`, …) by field name.
    package var fields: [String: String] = [:]
}

/// Thrown while streaming a multipart body: the body is malformed, or passes one of
/// `MultipartFileBody`'s limits, in the way `issue` says.
package struct MultipartProblem: Error, Sendable {
    /// `file`, `body` or the form field at fault.
    var field: String
    /// What is wrong, for the client (a limit is named with its value).
    var issue: String
    /// Whether a limit was passed (413 `payload_too_large`) rather than the form being
    /// malformed (400 `invalid_input`).
    var tooLarge = false
}

/// The bytes of the single file part of a `multipart/form-data` body, as they arrive: the body
/// runs through MultipartKit's streaming parser and only the file part's content comes out, so
/// memory stays flat whatever the part's size. When iteration ends normally the body was
/// complete (closing delimiter seen) with exactly one file part, and `outcome` holds the rest;
/// otherwise iteration throws `MultipartProblem`.
package struct MultipartFileBody<Base: AsyncSequence & Sendable>: AsyncSequence, Sendable where Base.Element == ByteBuffer {
    package typealias Element = ByteBuffer

    let base: Base
    let boundary: String
    /// Filled in when the body is complete; read after iteration.
    let outcome = OutcomeBox()

    /// Holds the outcome across the copies of the sequence and its iterator.
    final class OutcomeBox: Sendable {
        let value = Mutex(MultipartOutcome())
    }

    init(base: Base, boundary: String) {
        self.base = base
        self.boundary = boundary
    }

    package func makeAsyncIterator() -> Iterator {
        Iterator(base: base.makeAsyncIterator(), collector: Collector(boundary: boundary), sink: self)
    }

    // The form's parts other than the file are names and formats, not content, so everything
    // but the file's bytes is held to a few KiB: a form of 600,000 tiny fields, or a header line
    // that never ends, is refused before it costs memory.

    /// Bytes of one text field's value (4 KiB).
    package static var fieldLimit: Int { 4096 }
    /// Parts in one form, the file part included.
    package static var maxParts: Int { 100 }
    /// Bytes of one header line of a part (8 KiB), its CRLF included; also bounds a preamble line.
    static var maxHeaderLine: Int { 8192 }
    /// Bytes of the body that are not the file's content (64 KiB): headers, fields, boundaries.
    static var maxNonFileBytes: Int { 65_536 }

    package struct Iterator: AsyncIteratorProtocol {
        var base: Base.AsyncIterator
        let collector: Collector
        let sink: MultipartFileBody

        package mutating func next() async throws -> ByteBuffer? {
            while true {
                if !collector.pending.isEmpty { return collector.pending.removeFirst() }
                if collector.ended { return nil }
                guard let chunk = try await base.next() else {
                    try collector.finish()
                    let result = collector.result
                    sink.outcome.value.withLock { $0 = result }
                    collector.ended = true
                    return nil
                }
                try collector.feed(chunk)
            }
        }
    }

    /// The parser's callbacks land here (the parser is synchronous; the iterator owns it).
    package final class Collector {
        let parser: MultipartParser
        /// `CRLF--boundary--`: once seen after a part ends, the body is complete.
        let closeDelimiter: [UInt8]
        var headerGuard: MultipartHeaderGuard
        var tail: [UInt8] = []
        package var pending: [ByteBuffer] = []
        package var result = MultipartOutcome()
        var failure: MultipartProblem?
        var ended = false
        var sawFile = false
        var sawClose = false
        /// A part ended and no header of a next one has arrived yet.
        var betweenParts = false
        var headers: [String: String] = [:]
        var kind: Kind?
        var field = ""
        var fieldBytes: [UInt8] = []
        /// Parts begun so far.
        package var parts = 0
        /// Bytes fed that were not the file part's content.
        var nonFileBytes = 0
        /// File content bytes delivered during the current `feed`.
        var fileBytesInChunk = 0
        /// Inside a part's content (between its blank line and its boundary).
        var inBody = false
        /// Bytes since the last line feed, counted outside part contents.
        var lineBytes = 0

        enum Kind { case file, field }

        package init(boundary: String) {
            parser = MultipartParser(boundary: boundary)
            headerGuard = MultipartHeaderGuard(boundary: boundary)
            closeDelimiter = Array("\r\n--\(boundary)--".utf8)
            parser.onHeader = { [unowned self] name, value in
                guard failure == nil else { return }
                if betweenParts || parts == 0 {
                    parts += 1
                    if parts > MultipartFileBody.maxParts {
                        tooLarge("body", "the form has more than \(MultipartFileBody.maxParts) parts")
                        return
                    }
                }
                betweenParts = false
                // The line was held whole by the parser; the running count in `feed` keeps that
                // to about one limit, and this check is exact.
                if name.utf8.count + value.utf8.count + 4 > MultipartFileBody.maxHeaderLine {
                    tooLarge("body", "a part's header line is longer than \(MultipartFileBody.maxHeaderLine) bytes")
                    return
                }
                headers[name.lowercased()] = value
            }
            parser.onBody = { [unowned self] buffer in
                guard failure == nil else { return }
                inBody = true
                if kind == nil { classify() }
                switch kind {
                case .file:
                    fileBytesInChunk += buffer.readableBytes
                    pending.append(buffer)
                case .field:
                    fieldBytes.append(contentsOf: buffer.readableBytesView)
                    if fieldBytes.count > MultipartFileBody.fieldLimit {
                        tooLarge(field, "the form field \(field) is longer than \(MultipartFileBody.fieldLimit) bytes")
                    }
                case nil: break
                }
            }
            parser.onPartComplete = { [unowned self] in
                guard failure == nil else { return }
                if parts == 0 { parts = 1 }  // a part with no header lines at all
                if kind == nil { classify() }
                if kind == .field { result.fields[field] = String(decoding: fieldBytes, as: UTF8.self) }
                headers = [:]
                kind = nil
                fieldBytes = []
                betweenParts = true
                inBody = false
                lineBytes = 0
            }
        }

        func fail(_ field: String, _ issue: String) {
            if failure == nil { failure = MultipartProblem(field: field, issue: issue) }
        }

        func tooLarge(_ field: String, _ issue: String) {
            if failure == nil { failure = MultipartProblem(field: field, issue: issue, tooLarge: true) }
        }

        /// Decides from the part's headers whether it is the file or a text field (RFC 7578 §4.2:
        /// every part has `Content-Disposition: form-data; name=…`; a file part has a filename).
        func classify() {
            guard let disposition = headers["content-disposition"], let parameters = FilesController.dispositionParameters(disposition),
                disposition.lowercased().hasPrefix("form-data"), let name = parameters["name"]
            else {
                fail("body", "every part needs Content-Disposition: form-data with a name (RFC 7578)")
                return
            }
            if parameters["filename*"] != nil || parameters["filename"] != nil {
                guard !sawFile else {
                    fail("file", "the form has more than one file part; send exactly one")
                    return
                }
                sawFile = true
                kind = .file
                if let extended = parameters["filename*"] {
                    guard let decoded = FilesController.decodeExtended(extended) else {
                        fail("name", "filename* must be UTF-8 or ISO-8859-1 percent-encoding (RFC 8187)")
                        return
                    }
                    result.fileName = decoded
                } else {
                    result.fileName = parameters["filename"]
                }
                result.fileContentType = headers["content-type"].flatMap {
                    $0.split(separator: ";").first.map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
                }
            } else {
                kind = .field
                field = name
            }
        }

        package func feed(_ chunk: ByteBuffer) throws {
            // After the close delimiter comes the epilogue, which the parser ignores.
            guard sawClose || headerGuard.accepts(chunk) else {
                throw MultipartProblem(field: "body", issue: "a part's header name is not US-ASCII (RFC 5322 §2.2)")
            }
            // Within a part's content the parser holds nothing, so the chunk goes in whole.
            // Elsewhere it may hold a header line until its end: it gets small slices, each
            // counted first, so an endless line is stopped near the limit.
            var rest = chunk
            while rest.readableBytes > 0 {
                let slice: ByteBuffer
                if inBody || sawClose {
                    slice = rest
                    rest = ByteBuffer()
                } else {
                    slice = rest.readSlice(length: Swift.min(rest.readableBytes, 1024))!
                    for byte in slice.readableBytesView {
                        lineBytes = byte == 0x0A ? 0 : lineBytes + 1
                        if lineBytes > MultipartFileBody.maxHeaderLine {
                            tooLarge("body", "a part's header line is longer than \(MultipartFileBody.maxHeaderLine) bytes")
                            throw failure!
                        }
                    }
                }
                fileBytesInChunk = 0
                do {
                    try parser.execute(slice)
                } catch {
                    throw MultipartProblem(field: "body", issue: "the multipart body is malformed (RFC 7578)")
                }
                if let failure { throw failure }
                // After the close delimiter comes the epilogue, which the parser ignores.
                if !sawClose {
                    nonFileBytes += slice.readableBytes - fileBytesInChunk
                    if nonFileBytes > MultipartFileBody.maxNonFileBytes {
                        tooLarge("body", "the form's parts other than the file take more than \(MultipartFileBody.maxNonFileBytes) bytes")
                        throw failure!
                    }
                }
            }
            // The close delimiter can only follow a completed part (content never contains the
            // boundary), so it is looked for only then: cheap, since parts end rarely.
            if betweenParts && !sawClose {
                let window = tail + Array(chunk.readableBytesView)
                sawClose =
                    window.count >= closeDelimiter.count
                    && (0...(window.count - closeDelimiter.count)).contains { start in
                        window[start..<(start + closeDelimiter.count)].elementsEqual(closeDelimiter)
                    }
            }
            let keep = closeDelimiter.count - 1
            tail = Array((tail + chunk.readableBytesView.suffix(keep)).suffix(keep))
        }

        package func finish() throws {
            guard sawClose && betweenParts else {
                throw MultipartProblem(field: "body", issue: "the body ends before the closing boundary (truncated)")
            }
            guard sawFile else {
                throw MultipartProblem(field: "file", issue: "the form has no file part (a part with a filename)")
            }
        }
    }

    /// The `boundary` parameter of a `multipart/form-data` content type: 1–70 characters of
    /// RFC 2046 §5.1.1's `bchars`, not ending in a space; nil when missing or invalid.
    package static func boundary(of contentType: String) -> String? {
        guard let parameters = FilesController.dispositionParameters(contentType), let boundary = parameters["boundary"] else { return nil }
        let allowed = Set("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'()+_,-./:=? ".utf8)
        guard (1...70).contains(boundary.utf8.count), boundary.utf8.allSatisfy(allowed.contains), boundary.last != " " else { return nil }
        return boundary
    }
}

extension FilesController {
    /// `POST /files` with a `multipart/form-data` body (RFC 7578): exactly one file part, whose
    /// bytes stream to disk and are hashed like a raw body's; its `filename*`/`filename` or a
    /// `name` field names the file, a `format` field (or `?format=`) or the part's media type
    /// gives the format. Same quotas and answers as a raw upload.
    /// - Throws: 400 `invalid_input` for a bad boundary, a second or missing file part, a
    ///   malformed or truncated body; 413 `payload_too_large` past a limit of the form (more
    ///   than `maxParts` parts, a field over `fieldLimit`, a header line over `maxHeaderLine`,
    ///   more than `maxNonFileBytes` besides the file) or, as for raw uploads, of the quotas;
    ///   429 as for raw uploads. Nothing is kept when it throws.
    func uploadForm(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        guard let boundary = MultipartFileBody<RequestBody>.boundary(of: request.headers[.contentType] ?? "") else {
            throw AppError.invalidField("Content-Type", "multipart/form-data needs a boundary of 1 to 70 characters (RFC 2046)")
        }
        let query = request.uri.queryParameters
        let tenantId = context.identity.tenantId
        // The body's length includes the form's framing, so only the streamed count is checked.
        return try await store(
            tenantId: tenantId, userId: context.identity.userId, declared: nil,
            write: { id, limit in
                let body = MultipartFileBody(base: request.body, boundary: boundary)
                let written: (size: Int64, sha256: String)
                do {
                    written = try await blobs.write(tenantId: tenantId, id: id, body: body, maxBytes: limit)
                } catch let problem as MultipartProblem where problem.tooLarge {
                    throw AppError(
                        .contentTooLarge, code: .payloadTooLarge, detail: "The form passes a limit: \(problem.issue).",
                        errors: [FieldIssue(field: problem.field, issue: problem.issue)])
                } catch let problem as MultipartProblem {
                    throw AppError.invalidField(problem.field, problem.issue)
                }
                do {
                    let described = try Self.describeFormFile(body.outcome.value.withLock { $0 }, query: query)
                    return (written.size, written.sha256, described.name, described.mediaType, described.format)
                } catch {
                    // The blob is complete on disk by now; a refused form must not leave it.
                    try? await blobs.delete(tenantId: tenantId, id: id)
                    throw error
                }
            })
    }

    /// The name, media type and format of a form's file: the format from a `format` field (or
    /// `?format=`), else from the file part's media type; the name from the part's filename, a
    /// `name` field, `?name=`, or `upload.<format>`.
    /// - Throws: 400 `invalid_input` for an unknown or undeterminable format or a bad name.
    static func describeFormFile(
        _ outcome: MultipartOutcome, query: Parameters
    ) throws -> (name: String, mediaType: String, format: String) {
        let mediaType = outcome.fileContentType ?? "application/octet-stream"
        try FileFormats.checkDeclared(type: mediaType)
        let asked = outcome.fields["format"] ?? query.get("format").map { String($0) }
        let format: String
        if let asked {
            guard FileFormats.names.contains(asked) else {
                throw AppError.invalidField("format", "must be csv, json, ndjson or xml")
            }
            format = asked
        } else if let known = FileFormats.mediaTypes[mediaType] {
            format = known
        } else {
            throw AppError.invalidField("format", "give a format field (csv, json, ndjson or xml) or the file part's Content-Type")
        }
        let name = try checkedName(outcome.fileName ?? outcome.fields["name"] ?? query.get("name").map { String($0) } ?? "upload.\(format)")
        return (name, mediaType, format)
    }
}
