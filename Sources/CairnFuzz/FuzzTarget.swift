import CairnAccounts
import CairnFiles
import CairnFormats
import CairnHTTP
import CairnJobs
import CairnNotifications
import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import NIOCore

/// A parser of untrusted bytes that the fuzzer drives (issue 13): each case feeds the input to
/// the real parser with the limits production uses, and traps when an invariant breaks, so
/// libFuzzer (or a replay) reports it like a crash. Parse errors are expected and ignored.
package enum FuzzTarget: String, CaseIterable, Sendable {
    /// JSON request bodies: `Request.decodeJSON` (depth, NUL and trailing-comma checks) into
    /// `JSONValue`.
    case jsonBody = "json-body"
    /// `CSVReader`; the first byte picks delimiter, header flag and read size.
    case csv
    /// `JSONRecordReader` on a top-level array; the first byte picks flattening and read size.
    case jsonRecords = "json-records"
    /// `JSONRecordReader` on NDJSON lines; the first byte picks flattening and read size.
    case ndjson
    /// `XMLRecordReader`; the first line is the record path, the rest the document.
    case xml
    /// `multipart/form-data` uploads (RFC 7578): the first byte picks the chunk size, the
    /// first line is the `Content-Type`, the rest the body, fed to `MultipartFileBody`'s
    /// collector (MultipartKit behind `MultipartHeaderGuard`).
    case multipart
    /// tus 1.0.0 creation and PATCH headers: lines are `Upload-Length`, `Upload-Metadata`,
    /// `Upload-Offset` and `Upload-Checksum`.
    case tus
    /// `Range: bytes=…` (RFC 9110 §14); the first byte picks the file size.
    case range
    /// Cron expressions (`CronExpression`, then `nextOccurrence`).
    case cron
    /// RFC 3339 timestamps (`Timestamp.parseMilliseconds`), which must round-trip.
    case timestamp
    /// `Authorization: Bearer` (RFC 6750) and the JWT verification behind it (RFC 7519, HS256
    /// with a fixed secret). First byte even: the rest is the header value. Odd: the rest is
    /// `header JSON\npayload JSON`, signed with the secret, so the claims are parsed too.
    case bearer
    /// The `/ws` client message scanner (`ClientMessage.parse`), checked against the full
    /// JSON parser.
    case websocket
    /// Pagination: `?limit=…&cursor=…` query strings and cursors (`PageRequest.parse`,
    /// `Cursor.decode`).
    case pagination

    /// Runs the target on `bytes`. Traps (precondition) when an invariant breaks.
    package func run(_ bytes: [UInt8]) {
        switch self {
        case .jsonBody: FuzzParsers.jsonBody(bytes)
        case .csv: FuzzParsers.csv(bytes)
        case .jsonRecords: FuzzParsers.jsonRecords(bytes, layout: .array)
        case .ndjson: FuzzParsers.jsonRecords(bytes, layout: .lines)
        case .xml: FuzzParsers.xml(bytes)
        case .multipart: FuzzParsers.multipart(bytes)
        case .tus: FuzzParsers.tus(bytes)
        case .range: FuzzParsers.range(bytes)
        case .cron: FuzzParsers.cron(bytes)
        case .timestamp: FuzzParsers.timestamp(bytes)
        case .bearer: FuzzParsers.bearer(bytes)
        case .websocket: FuzzParsers.websocket(bytes)
        case .pagination: FuzzParsers.pagination(bytes)
        }
    }

    /// Replays every file under `root/<target>/` (for each target that has a folder) through
    /// its target, in name order. Call it off Swift's cooperative pool: the `bearer` target
    /// blocks its thread on a task.
    /// - Returns: the number of inputs replayed, by target.
    /// - Throws: when a folder cannot be listed or a file read.
    @discardableResult
    package static func replay(root: String, onInput: (FuzzTarget, String) -> Void = { _, _ in }) throws -> [FuzzTarget: Int] {
        var counts: [FuzzTarget: Int] = [:]
        let manager = FileManager.default
        for target in allCases {
            let folder = root + "/" + target.rawValue
            guard manager.fileExists(atPath: folder) else { continue }
            for name in try manager.contentsOfDirectory(atPath: folder).sorted() where !name.hasPrefix(".") {
                let path = folder + "/" + name
                onInput(target, path)
                target.run(Array(try Data(contentsOf: URL(fileURLWithPath: path))))
                counts[target, default: 0] += 1
            }
        }
        return counts
    }
}

/// The targets' bodies.
enum FuzzParsers {
    /// Read sizes a first byte chooses from: 1-byte reads find bugs at buffer boundaries.
    static func chunkSize(_ byte: UInt8) -> Int {
        [1, 2, 3, 7, 64, 4096, 1 << 20][Int(byte) % 7]
    }

    static func jsonBody(_ bytes: [UInt8]) {
        _ = try? Request.decodeJSON(JSONValue.self, from: ByteBuffer(bytes: bytes))
        if let value = JSONValue(text: String(decoding: bytes, as: UTF8.self)) {
            // What was parsed is written back as JSON that parses to the same value.
            precondition(JSONValue(text: value.text) == value, "JSONValue text does not round-trip")
        }
    }

    static func csv(_ bytes: [UInt8]) {
        guard let first = bytes.first else { return }
        var options = CSVOptions()
        options.delimiter = [nil, 0x2C, 0x3B, 0x09][Int(first >> 4) % 4]
        options.header = first & 0x08 != 0
        let input = Array(bytes.dropFirst())
        guard let reader = try? CSVReader(source: MemoryByteSource(input, chunkSize: chunkSize(first)), options: options) else { return }
        readAll(
            "CSV", of: input, maxFields: (options.maxColumns, "maxColumns"), next: { try reader.next()?.count },
            consumed: { reader.bytesConsumed })
    }

    static func jsonRecords(_ bytes: [UInt8], layout: JSONOptions.Layout) {
        guard let first = bytes.first else { return }
        var options = JSONOptions()
        options.layout = layout
        options.flatten = first & 0x08 == 0
        let input = Array(bytes.dropFirst())
        guard let reader = try? JSONRecordReader(source: MemoryByteSource(input, chunkSize: chunkSize(first)), options: options) else { return }
        readAll(
            "JSON", of: input, maxFields: (options.maxFields, "maxFields"), next: { try reader.next()?.count },
            consumed: { reader.bytesConsumed })
    }

    /// Reads every record of a streaming `format` reader over `input` (`next` gives a record's
    /// field count, nil at the end) and checks what holds for any input: no record has more
    /// fields than its limit, and the reader neither returns records without consuming input
    /// nor consumes more bytes than it was given. A parse error ends the reading.
    static func readAll(
        _ format: String, of input: [UInt8], maxFields limit: (Int, name: String), next: () throws -> Int?, consumed: () -> Int64
    ) {
        do {
            var records = 0
            while let fields = try next() {
                records += 1
                precondition(fields <= limit.0, "a \(format) record has more fields than \(limit.name)")
                // Every record consumes input, so there are never more records than bytes.
                precondition(records <= input.count + 1, "the \(format) reader returns records without consuming input")
            }
            precondition(consumed() <= Int64(input.count), "the \(format) reader consumed more bytes than it was given")
        } catch {}
    }

    static func xml(_ bytes: [UInt8]) {
        let newline = bytes.firstIndex(of: 0x0A) ?? bytes.endIndex
        let recordPath = String(decoding: bytes[..<newline], as: UTF8.self)
        let document = Data(bytes[min(newline + 1, bytes.endIndex)...])
        let limits = XMLLimits()
        do {
            let reader = try XMLRecordReader(data: document, recordPath: recordPath, limits: limits)
            var records = 0
            try reader.forEachRecord { record in
                records += 1
                precondition(record.count <= limits.maxFields, "an XML record has more fields than maxFields")
                precondition(records <= document.count + 1, "the XML reader returns records without consuming input")
            }
        } catch {}
    }

    static func multipart(_ bytes: [UInt8]) {
        guard let first = bytes.first else { return }
        let rest = bytes.dropFirst()
        let newline = rest.firstIndex(of: 0x0A) ?? rest.endIndex
        typealias Body = MultipartFileBody<AsyncStream<ByteBuffer>>
        guard let boundary = Body.boundary(of: String(decoding: rest[..<newline], as: UTF8.self)) else { return }
        precondition((1...70).contains(boundary.utf8.count), "a multipart boundary outside RFC 2046's 1–70 characters")
        var body = ByteBuffer(bytes: rest[min(newline + 1, rest.endIndex)...])
        let total = body.readableBytes
        let collector = Body.Collector(boundary: boundary)
        var fileBytes = 0
        do {
            while body.readableBytes > 0 {
                let chunk = body.readSlice(length: min(body.readableBytes, first == 0 ? total : Int(first)))!
                try collector.feed(chunk)
                fileBytes += collector.pending.reduce(0) { $0 + $1.readableBytes }
                collector.pending.removeAll()
            }
            try collector.finish()
            precondition(fileBytes <= total, "the multipart file part has more bytes than the body")
            precondition(collector.parts <= Body.maxParts, "a multipart form passed maxParts")
            precondition(
                collector.result.fields.values.allSatisfy { $0.utf8.count <= Body.fieldLimit }, "a multipart field passed fieldLimit")
        } catch {}
    }

    static func tus(_ bytes: [UInt8]) {
        let lines = bytes.split(separator: 0x0A, maxSplits: 3, omittingEmptySubsequences: false).map {
            String(decoding: $0, as: UTF8.self)
        }
        func value(_ index: Int) -> String? { index < lines.count ? lines[index] : nil }
        var fields = HTTPFields()
        fields[.contentType] = "application/offset+octet-stream"
        for (index, name) in ["Upload-Length", "Upload-Metadata", "Upload-Offset", "Upload-Checksum"].enumerated() {
            if let text = value(index) { fields[HTTPField.Name(name)!] = text }
        }
        let request = Request(
            head: HTTPRequest(method: .post, scheme: "http", authority: "localhost", path: "/uploads", headerFields: fields),
            body: RequestBody(buffer: ByteBuffer()))
        if let length = try? UploadsController.uploadLength(request) { precondition(length >= 0, "a negative Upload-Length") }
        _ = try? UploadsController.describedUpload(request)
        _ = try? UploadsController.metadata(value(1) ?? "")
        if let offset = try? UploadsController.patchOffset(request) { precondition(offset >= 0, "a negative Upload-Offset") }
        _ = try? UploadsController.checksum(request)
    }

    static func range(_ bytes: [UInt8]) {
        guard let first = bytes.first else { return }
        let size: Int64 = [0, 1, 2, 100, 1 << 40, .max - 1, .max][Int(first) % 7]
        let header = String(decoding: bytes.dropFirst(), as: UTF8.self)
        if case .range(let range) = FilesController.parseRange(header, size: size) {
            precondition(range.lowerBound >= 0 && range.upperBound <= size && !range.isEmpty, "a Range outside the file")
        }
    }

    static func cron(_ bytes: [UInt8]) {
        guard let expression = try? CronExpression(String(decoding: bytes, as: UTF8.self)) else { return }
        precondition(expression.minutes.allSatisfy { (0...59).contains($0) }, "a cron minute outside 0–59")
        precondition(expression.hours.allSatisfy { (0...23).contains($0) }, "a cron hour outside 0–23")
        precondition(expression.daysOfMonth.allSatisfy { (1...31).contains($0) }, "a cron day outside 1–31")
        precondition(expression.months.allSatisfy { (1...12).contains($0) }, "a cron month outside 1–12")
        precondition(expression.daysOfWeek.allSatisfy { (0...7).contains($0) }, "a cron weekday outside 0–7")
        let start = Date(timeIntervalSince1970: 1_767_225_600)  // 2026-01-01T00:00:00Z
        if let next = expression.nextOccurrence(after: start, in: TimeZone(identifier: "UTC")!) {
            precondition(next > start, "a cron occurrence not after the instant")
        }
    }

    static func timestamp(_ bytes: [UInt8]) {
        guard let milliseconds = Timestamp.parseMilliseconds(String(decoding: bytes, as: UTF8.self)) else { return }
        // Cairn's own format of what was parsed parses back to the same instant.
        precondition(Timestamp.parseMilliseconds(Timestamp.format(milliseconds: milliseconds)) == milliseconds, "a timestamp does not round-trip")
    }

    static func bearer(_ bytes: [UInt8]) {
        guard let first = bytes.first else { return }
        let rest = bytes.dropFirst()
        let token: String
        if first & 1 == 0 {
            guard let found = BearerMiddleware.bearerToken(String(decoding: rest, as: UTF8.self)) else { return }
            precondition(BearerMiddleware.isB64Token(Substring(found).utf8), "a bearer token outside RFC 6750's b64token")
            token = found
        } else {
            let newline = rest.firstIndex(of: 0x0A) ?? rest.endIndex
            let signingInput = Base64URL.encode(rest[..<newline]) + "." + Base64URL.encode(rest[min(newline + 1, rest.endIndex)...])
            let signature = HMAC<SHA256>.authenticationCode(for: Array(signingInput.utf8), using: FuzzJWT.key)
            token = signingInput + "." + Base64URL.encode(Array(signature))
        }
        let now = Date(timeIntervalSince1970: 1_767_225_600)
        let outcome = blockingWait { try? await FuzzJWT.service.verify(token, now: now) }
        if let claims = outcome {
            precondition(now.timeIntervalSince1970 < claims.exp + FuzzJWT.service.settings.leeway, "an expired token verified")
        }
    }

    static func websocket(_ bytes: [UInt8]) {
        let text = String(decoding: bytes, as: UTF8.self)
        _ = ClientMessage.parse(text)
        // The short scanner is a fast path: whatever it accepts, the full parser reads the same.
        if let flat = ClientMessage.flatObject(text) {
            precondition(ClientMessage.fullMembers(text) == flat, "the WebSocket scanner and the JSON parser disagree")
        }
    }

    static func pagination(_ bytes: [UInt8]) {
        let text = String(decoding: bytes, as: UTF8.self)
        if let key = Cursor.decode(text) {
            precondition(Cursor.decode(Cursor.encode(key)) == key, "a cursor does not round-trip")
        }
        if let page = try? PageRequest.parse(URI("/items?" + text), validateKey: { _ in true }) {
            precondition((1...100).contains(page.limit), "a page limit outside 1–100")
        }
    }
}
