import CairnServer
import CairnStorage
import CairnTestSupport
import Foundation
import HTTPTypes
import HummingbirdTesting
import NIOCore
import SQLKit
import Testing

/// A file name holding a bidirectional control (`U+202E` shows `cod.exe` as `exe.doc`) is
/// refused on every way in: `POST /files` (`Content-Disposition` and `?name=`), its multipart
/// form, and tus `Upload-Metadata`; nothing is stored.
@Suite("Files: names with bidirectional controls")
struct BidiFileNameTests {
    @Test(arguments: TestEngine.available)
    func aBidiControlInAFileNameIsRefusedOnEveryWayIn(engine: TestEngine) async throws {
        try await withTestApp(engine, owner: "bidi-files@example.com") { client, components, token in
            let auth: HTTPFields = [.authorization: "Bearer \(token)"]
            func post(_ uri: String, _ headers: HTTPFields, _ body: String) async throws -> TestResponse {
                var all = auth
                for field in headers { all[field.name] = field.value }
                return try await client.execute(uri: uri, method: .post, headers: all, body: ByteBuffer(string: body))
            }
            let answers = [
                try await post(
                    "/files?format=csv", [.contentType: "text/csv", .contentDisposition: "attachment; filename*=UTF-8''report%E2%80%AEvsc.exe"],
                    "a\n1\n"),
                try await post("/files?format=csv&name=report%E2%81%A7.csv", [.contentType: "text/csv"], "a\n1\n"),
                try await post(
                    "/files", [.contentType: "multipart/form-data; boundary=XyZ"],
                    "--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename*=UTF-8''a%E2%80%AEvsc.exe\r\nContent-Type: text/csv\r\n\r\na,b\n1,2\n\r\n--XyZ--\r\n"
                ),
                try await client.execute(
                    uri: "/uploads", method: .post,
                    headers: [
                        .authorization: "Bearer \(token)", tus: "1.0.0", uploadLength: "5",
                        uploadMetadata: "filename \(base64("a\u{202E}vsc.exe"))",
                    ], body: nil),
            ]
            for (index, answer) in answers.enumerated() {
                #expect(answer.status == .badRequest, "way \(index): \(answer.status) \(answer.text)")
                #expect(answer.code == "invalid_input", "way \(index)")
            }
            #expect(try await components.database.rowCount("files") == 0)
            #expect(try await components.database.rowCount("uploads") == 0)
            // Other non-ASCII names still pass.
            #expect(try await post("/files?format=csv&name=caf%C3%A9.csv", [.contentType: "text/csv"], "a\n1\n").status == .created)
        }
    }
}
