import CairnTestSupport
import Foundation
import HTTPTypes
import HummingbirdTesting
import NIOCore
import Testing

@testable import CairnFiles

/// A header name with a byte ≥ 0x80 once crashed the node inside multipart-kit (schemathesis found
/// it); the guard must find every header block, wherever the chunks split it, and nothing else.
@Suite("Files: multipart header names")
struct MultipartHeaderGuardTests {
    static let good = Array(
        "preamble é\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"é.csv\"\r\n\r\né--XyZ,b\n--XyZ\r\r\n--XyZ\r\nX-A: ü\r\n\r\nv\r\n--XyZ--\r\nepilogue ö\r\n"
            .utf8)
    static let bad = Array(
        "--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.csv\"\r\n\r\na\r\n--XyZ\r\nX-Ok: 1\r\nÒx: 2\r\n\r\nv\r\n--XyZ--\r\n"
            .utf8)

    /// Feeds `bytes` in chunks of `size`; the verdict of the whole stream.
    static func verdict(_ bytes: [UInt8], chunk size: Int) -> Bool {
        var guardian = MultipartHeaderGuard(boundary: "XyZ")
        var start = 0
        while start < bytes.count {
            let end = min(bytes.count, start + size)
            if !guardian.accepts(ByteBuffer(bytes: bytes[start..<end])) { return false }
            start = end
        }
        return true
    }

    @Test(arguments: [1, 2, 3, 5, 7, 64, 4096])
    func findsEveryHeaderBlockWhereverChunksSplit(size: Int) {
        #expect(Self.verdict(Self.good, chunk: size), "non-ASCII in a preamble, a header value, content or the epilogue is fine")
        #expect(!Self.verdict(Self.bad, chunk: size), "a non-ASCII header name in the second part is refused")
        // The first part's header block, right at the start of the stream.
        #expect(!Self.verdict(Array("--XyZ\r\n\u{D2}: v\r\n\r\nx\r\n--XyZ--\r\n".utf8), chunk: size))
        // The parser ends header lines at CR only: after a bare LF in a value and then CRLF, a
        // new header name begins (found by fuzzing; the guard took the LF for a line end and the
        // CRLF for the empty line).
        #expect(
            !Self.verdict(Array("--XyZ\r\nContent-Disposition: form-data; name=\"f\"\n\r\n\u{D2}x: 2\r\n\r\nv\r\n--XyZ--\r\n".utf8), chunk: size))
    }

    @Test(arguments: TestEngine.available)
    func aNonASCIIHeaderNameIs400AndTheNodeStaysUp(engine: TestEngine) async throws {
        try await withTestApp(engine, owner: "header-names@example.com", mode: .live, runServices: false) { app, token in
            // schemathesis' body, sent by curl over real HTTP as it was.
            var body = Data("--ac8a8cbba50529c0f64f5de92f78af08\r\n\u{D2}".utf8)
            body.append(contentsOf: [0xF3, 0x8D, 0x80, 0xAD, 0xF1, 0x85, 0x8B, 0x8E, 0xF3, 0x8E, 0x8E, 0xB7])
            body.append(Data("»<--ac8a8cbba50529c0f64f5de92f78af08--\r\n".utf8))
            let folder = FileManager.default.temporaryDirectory.appendingPathComponent("cairn-headers-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: folder) }
            let path = folder.appendingPathComponent("body").path
            try body.write(to: URL(fileURLWithPath: path))
            let output = try await runProcess(
                "/usr/bin/curl",
                [
                    "-sS", "-o", "-", "-w", "\n%{http_code}", "-H", "Authorization: Bearer \(token)", "-H",
                    "Content-Type: multipart/form-data; boundary=ac8a8cbba50529c0f64f5de92f78af08", "--data-binary", "@\(path)",
                    "\(app.baseURL)/files?format=csv",
                ])
            let lines = String(decoding: output, as: UTF8.self).split(separator: "\n")
            #expect(lines.last == "400", "\(lines)")
            #expect(lines.first?.contains("not US-ASCII") == true, "\(lines)")
            let after = try await app.client.json(.get, "/files", token: token)
            #expect(after.status == .ok, "the node still answers")
            #expect((after.object["items"] as? [Any])?.isEmpty == true, "and kept nothing")
        }
    }
}
