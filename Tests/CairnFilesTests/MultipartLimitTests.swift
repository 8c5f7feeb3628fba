import CairnServer
import CairnTestSupport
import Foundation
import HTTPTypes
import HummingbirdTesting
import NIOCore
import Testing

/// A `multipart/form-data` upload holds everything but the file's bytes to a few KiB: too many
/// parts, a long field, a long header line or too many bytes besides the file answer 413
/// `payload_too_large` naming the limit, and nothing is kept.
@Suite("Files: multipart/form-data limits")
struct MultipartLimitTests {
    static let file = "--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.csv\"\r\nContent-Type: text/csv\r\n\r\na,b\n1,2\n\r\n"

    static func field(_ name: String, _ value: String) -> String {
        "--XyZ\r\nContent-Disposition: form-data; name=\"\(name)\"\r\n\r\n\(value)\r\n"
    }

    @Test(arguments: TestEngine.available)
    func formsPastALimitAre413AndLeaveNothing(engine: TestEngine) async throws {
        try await withTestApp(engine, owner: "form-limits@example.com", mode: .live, runServices: false) { app, token in
            let client = app.client
            let folder = FileManager.default.temporaryDirectory.appendingPathComponent("cairn-multipart-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: folder) }

            // As measured on main: 600,000 tiny fields (about 40 MB), sent by curl over real HTTP.
            let tiny = "--XyZ\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\nx\r\n"
            var flood = Data(Self.file.utf8)
            flood.append(Data(String(repeating: tiny, count: 600_000).utf8))
            flood.append(Data("--XyZ--\r\n".utf8))
            let floodPath = folder.appendingPathComponent("flood").path
            try flood.write(to: URL(fileURLWithPath: floodPath))
            let output = try await runProcess(
                "/usr/bin/curl",
                [
                    "-sS", "-o", "-", "-w", "\n%{http_code}", "-H", "Authorization: Bearer \(token)", "-H",
                    "Content-Type: multipart/form-data; boundary=XyZ", "--data-binary", "@\(floodPath)", "\(app.baseURL)/files",
                ])
            let lines = String(decoding: output, as: UTF8.self).split(separator: "\n")
            #expect(lines.last == "413", "\(lines)")
            let first = String(lines.first ?? "")
            let problem = try JSONSerialization.jsonObject(with: Data(first.utf8)) as? [String: Any]
            #expect(problem?["code"] as? String == "payload_too_large")
            #expect((problem?["detail"] as? String)?.contains("more than 100 parts") == true, "\(problem ?? [:])")

            func form(_ body: String) async throws -> TestResponse {
                try await client.execute(
                    uri: "/files", method: .post,
                    headers: [.authorization: "Bearer \(token)", .contentType: "multipart/form-data; boundary=XyZ"],
                    body: ByteBuffer(string: body))
            }
            let cases: [(label: String, body: String, limit: String)] = [
                ("a long field", Self.file + Self.field("name", String(repeating: "n", count: 5000)) + "--XyZ--\r\n", "4096 bytes"),
                (
                    "a long header line",
                    Self.file
                        + "--XyZ\r\nContent-Disposition: form-data; name=\"x\"\r\nX-Pad: \(String(repeating: "p", count: 10_000))\r\n\r\nv\r\n--XyZ--\r\n",
                    "8192 bytes"
                ),
                ("a header line that never ends", Self.file + "--XyZ\r\nX-Pad: " + String(repeating: "p", count: 4 << 20), "8192 bytes"),
                (
                    "many medium fields",
                    Self.file + (1...40).map { Self.field("f\($0)", String(repeating: "v", count: 2000)) }.joined() + "--XyZ--\r\n",
                    "65536 bytes"
                ),
                ("101 parts", Self.file + String(repeating: Self.field("f", "x"), count: 100) + "--XyZ--\r\n", "100 parts"),
            ]
            for (label, body, limit) in cases {
                let refused = try await form(body)
                #expect(refused.status == .contentTooLarge, "\(label): \(refused.status)")
                #expect(refused.code == "payload_too_large", "\(label)")
                #expect(refused.headers[.contentType] == "application/problem+json", "\(label)")
                #expect((refused.object["detail"] as? String)?.contains(limit) == true, "\(label): \(refused.text)")
            }
            // At the limits a form is fine: 99 fields besides the file, a field of 4096 bytes.
            var atLimits: String = Self.file
            atLimits += Self.field("name", String(repeating: "n", count: 200))
            atLimits += Self.field("note", String(repeating: "v", count: 4096))
            atLimits += String(repeating: Self.field("f", "x"), count: 97) + "--XyZ--\r\n"
            let accepted = try await form(atLimits)
            #expect(accepted.status == .created, "\(accepted.text)")
            #expect(try await client.json(.delete, "/files/\(accepted.object["id"] as? String ?? "")", token: token).status == .noContent)

            let items = try await client.json(.get, "/files", token: token).object["items"] as? [[String: Any]]
            #expect(items?.isEmpty == true, "refused forms leave no file")
            let blobs = FileManager.default.enumerator(atPath: app.components.configuration.dataDir + "/blobs")?.allObjects as? [String] ?? []
            #expect(blobs.filter { !$0.contains("/.") && $0.contains("/") }.isEmpty, "and no blob: \(blobs)")
        }
    }
}
