import CairnFiles
import CairnHTTP
import CairnServer
import CairnStorage
import CairnTestSupport
import Foundation
import HTTPTypes
import HummingbirdTesting
import NIOCore
import SQLKit
import Testing

/// Issue 20, "What a new user found": one file-format allow-list for every way in, and
/// downloads that can never run as a page on Cairn's origin (stored cross-site scripting).
@Suite("Files: one allow-list, safe downloads, Tus-Max-Size")
struct FileAllowListTests {
    /// A tus creation whose declared type, name or format is outside `POST /files`' allow-list is
    /// refused (415) and records nothing; before, a `text/html` upload was stored as `binary`
    /// and served back as `text/html`.
    @Test(arguments: TestEngine.available)
    func tusCreationAppliesTheAllowList(engine: TestEngine) async throws {
        try await withTestApp(engine, owner: "allow@example.com") { client, components, token in
            func create(_ metadata: String?) async throws -> TestResponse {
                var headers: HTTPFields = [.authorization: "Bearer \(token)", tus: "1.0.0", uploadLength: "5"]
                if let metadata { headers[uploadMetadata] = metadata }
                return try await client.execute(uri: "/uploads", method: .post, headers: headers)
            }
            let refused: [String?] = [
                "filename \(base64("page.html")),filetype \(base64("text/html"))",
                "filename \(base64("data.csv")),filetype \(base64("text/html"))",
                "filename \(base64("page.html")),filetype \(base64("text/csv"))",
                "filename \(base64("image.svg"))",
                "filename \(base64("data.csv")),format \(base64("binary"))",
                "filename \(base64("data"))",
                nil,
            ]
            for metadata in refused {
                let answer = try await create(metadata)
                #expect(answer.status == .unsupportedMediaType, "\(metadata ?? "no metadata"): \(answer.status)")
                #expect(answer.code == "unsupported_media_type")
                #expect(answer.headers[tus] == "1.0.0")
            }
            let recorded = try await components.database.rowCount("uploads")
            #expect(recorded == 0)

            // Allowed: a listed filetype; octet-stream with a format; a name's suffix alone.
            for metadata in [
                "filename \(base64("data.csv")),filetype \(base64("text/csv"))",
                "filename \(base64("data")),filetype \(base64("application/octet-stream")),format \(base64("json"))",
                "filename \(base64("events.JSONL"))",
            ] {
                #expect(try await create(metadata).status == .created, "\(metadata)")
            }
        }
    }

    /// A tus creation whose format hints disagree (`format`, `filetype` and the `filename`'s
    /// suffix naming different allow-listed formats) is refused with 400 `invalid_input` on
    /// `Upload-Metadata`, naming both hints, and records nothing; before, one of them silently
    /// won. Hints that agree, or one hint alone, still pass.
    @Test(arguments: TestEngine.available)
    func tusCreationRefusesFormatHintsThatDisagree(engine: TestEngine) async throws {
        try await withTestApp(engine) { client, components in
            let token = try await client.registerAndLogin(email: "hints@example.com").tokens.accessToken
            func create(_ metadata: String) async throws -> TestResponse {
                try await client.execute(
                    uri: "/uploads", method: .post,
                    headers: [.authorization: "Bearer \(token)", tus: "1.0.0", uploadLength: "5", uploadMetadata: metadata])
            }
            let conflicts: [(metadata: String, names: [String])] = [
                ("filename \(base64("data.csv")),filetype \(base64("application/json"))", ["filetype application/json", ".csv"]),
                ("filename \(base64("data.csv")),format \(base64("xml"))", ["format xml", ".csv"]),
                ("filename \(base64("data")),filetype \(base64("text/csv")),format \(base64("json"))", ["format json", "filetype text/csv"]),
                ("filename \(base64("events.jsonl")),filetype \(base64("application/json"))", ["filetype application/json", ".jsonl"]),
            ]
            for (metadata, names) in conflicts {
                let answer = try await create(metadata)
                #expect(answer.status == .badRequest, "\(metadata): \(answer.status)")
                #expect(answer.code == "invalid_input")
                let problem = try answer.decode(ProblemBody.self)
                #expect(problem.fields == ["Upload-Metadata"])
                let issue = problem.errors?.first?.issue ?? ""
                #expect(names.allSatisfy(issue.contains), "\(issue)")
                #expect(answer.headers[tus] == "1.0.0")
            }
            let recorded = try await components.database.rowCount("uploads")
            #expect(recorded == 0)
            for metadata in [
                "filename \(base64("data.csv")),filetype \(base64("text/csv")),format \(base64("csv"))",
                "filename \(base64("events.jsonl")),filetype \(base64("application/x-ndjson"))",
                "filename \(base64("data.xml")),filetype \(base64("application/octet-stream"))",
            ] {
                #expect(try await create(metadata).status == .created, "\(metadata)")
            }
        }
    }

    /// A multipart file part typed as something outside the allow-list is refused (415), even
    /// with a `format` field: before, a `text/html` part was stored with that type.
    @Test(arguments: TestEngine.available)
    func aMultipartPartOutsideTheAllowListIsRefused(engine: TestEngine) async throws {
        try await withTestApp(engine, owner: "allow-form@example.com") { client, _, token in
            let body =
                "--XyZ\r\nContent-Disposition: form-data; name=\"format\"\r\n\r\ncsv\r\n"
                + "--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.csv\"\r\nContent-Type: text/html\r\n\r\n<script>x</script>\r\n--XyZ--\r\n"
            let answer = try await client.execute(
                uri: "/files", method: .post,
                headers: [.authorization: "Bearer \(token)", .contentType: "multipart/form-data; boundary=XyZ"], body: ByteBuffer(string: body))
            #expect(answer.status == .unsupportedMediaType, "\(answer.status) \(answer.text)")
            #expect(answer.code == "unsupported_media_type")
        }
    }

    /// A download is an attachment (RFC 6266, the name in `filename*` per RFC 8187), never
    /// sniffed, sandboxed by CSP, and typed by the allow-list: a finished tus upload comes back
    /// with its format's own type, and a file stored before the allow-list with an active type
    /// comes back as `application/octet-stream`.
    @Test(arguments: TestEngine.available)
    func downloadsAreAttachmentsThatNeverRenderOnTheOrigin(engine: TestEngine) async throws {
        try await withTestApp(engine, owner: "allow-dl@example.com") { client, components, token in
            let created = try await client.execute(
                uri: "/uploads", method: .post,
                headers: [
                    .authorization: "Bearer \(token)", tus: "1.0.0", uploadLength: "4", .contentType: "application/offset+octet-stream",
                    uploadMetadata: "filename \(base64("naïve \"q\".csv")),filetype \(base64("application/octet-stream")),format \(base64("csv"))",
                ], body: ByteBuffer(string: "a,b\n"))
            #expect(created.status == .created)
            let id = try #require(created.headers[fileIdHeader])
            let download = try await client.execute(uri: "/files/\(id)/content", method: .get, headers: [.authorization: "Bearer \(token)"])
            #expect(download.status == .ok)
            #expect(download.headers[.contentType] == "text/csv")
            #expect(download.headers[.xContentTypeOptions] == "nosniff")
            #expect(download.headers[.contentDisposition] == "attachment; filename=\"na_ve _q_.csv\"; filename*=UTF-8''na%C3%AFve%20%22q%22.csv")
            #expect(download.headers[.contentSecurityPolicy]?.hasPrefix("sandbox") == true)
            let part = try await client.execute(
                uri: "/files/\(id)/content", method: .get, headers: [.authorization: "Bearer \(token)", .range: "bytes=0-1"])
            #expect(part.status == .partialContent)
            #expect(part.headers[.xContentTypeOptions] == "nosniff")
            #expect(part.headers[.contentDisposition]?.hasPrefix("attachment;") == true)

            // As a tus upload declared `text/html` was stored before this fix.
            try await components.database.write { db in
                try await db.raw("UPDATE files SET content_type = 'text/html', format = 'binary' WHERE id = \(bind: id)").run()
            }
            let legacy = try await client.execute(uri: "/files/\(id)/content", method: .get, headers: [.authorization: "Bearer \(token)"])
            #expect(legacy.headers[.contentType] == "application/octet-stream")
            #expect(legacy.headers[.xContentTypeOptions] == "nosniff")
        }
    }

    /// tus 1.0 core: an `Upload-Length` above `Tus-Max-Size` answers 413, also when it does not
    /// fit 64 bits and when the smallest limit is the hourly volume (before: 400 and a 429 that
    /// no wait could cure); `Tus-Max-Size` names that smallest limit.
    @Test(arguments: TestEngine.available)
    func anUploadLengthAboveTusMaxSizeIs413(engine: TestEngine) async throws {
        try await withTestApp(engine, owner: "allow-max@example.com", configure: { $0.files.quotas.maxBytesPerHour = 500 }) { client, _, token in
            let options = try await client.execute(uri: "/uploads", method: .options, headers: [:])
            #expect(options.headers[HTTPField.Name("Tus-Max-Size")!] == "500")
            for length in ["501", "99999999999999999999999"] {
                let answer = try await client.execute(
                    uri: "/uploads", method: .post,
                    headers: [
                        .authorization: "Bearer \(token)", tus: "1.0.0", uploadLength: length, uploadMetadata: "filename \(base64("big.csv"))",
                    ])
                #expect(answer.status == .contentTooLarge, "\(length): \(answer.status)")
                #expect(answer.code == "payload_too_large")
                #expect(answer.headers[tus] == "1.0.0")
            }
        }
    }

    /// The `Content-Disposition` of a download: an ASCII fallback and the exact UTF-8 name.
    @Test func attachmentHeadersQuoteAndEncodeNames() {
        #expect(FileFormats.attachment(name: "a.csv") == "attachment; filename=\"a.csv\"; filename*=UTF-8''a.csv")
        #expect(FileFormats.attachment(name: "x\\y;\r.csv") == "attachment; filename=\"x_y;_.csv\"; filename*=UTF-8''x%5Cy%3B%0D.csv")
        #expect(FileFormats.servedType(contentType: "image/svg+xml", format: "binary") == "application/octet-stream")
        #expect(FileFormats.servedType(contentType: "application/xml", format: "xml") == "application/xml")
    }
}
