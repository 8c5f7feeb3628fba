import CairnHTTP
import CairnServer
import CairnTestSupport
import Foundation
import HTTPTypes
import HummingbirdTesting
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Bodies whose connection is cut before their end, sent over a raw socket to a live node:
/// Hummingbird ends a request body quietly when its connection closes, so a chunked body cut
/// before its last chunk looked complete and was stored (or imported) shorter. Routes that
/// store a body whole therefore ask for `Content-Length` (411 without) and hold the body to it.
@Suite("Cut-off request bodies store nothing")
struct CutOffBodyTests {
    static let rows = "sku,name\nA-1,first\nA-2,second\n"

    /// A request head (`Host`, `Authorization`, the given fields) for `POST path`.
    static func head(_ path: String, token: String, _ fields: [String]) -> String {
        (["POST \(path) HTTP/1.1", "Host: 127.0.0.1", "Authorization: Bearer \(token)"] + fields).joined(separator: "\r\n") + "\r\n\r\n"
    }

    /// Sends `bytes`, closes the sending half (what a killed client's kernel does, short of a
    /// reset), and reads until the node ends the connection: its handler has finished then.
    static func sendAndCut(port: Int, _ bytes: [UInt8]) async throws -> String {
        let fd = try loopbackSocket(port: port)
        defer { close(fd) }
        await sendAll(bytes, on: fd)
        shutdown(fd, Int32(SHUT_WR))
        let answer = await receive(fd, deadline: .seconds(30))
        #expect(answer.ended, "the node ends the connection")
        return String(decoding: answer.bytes, as: UTF8.self)
    }

    /// Sends a whole request and reads its answer (head and `Content-Length` body).
    static func exchange(port: Int, _ request: String) async throws -> String {
        let fd = try loopbackSocket(port: port)
        defer { close(fd) }
        await sendAll(Array(request.utf8), on: fd)
        let answer = await receive(fd, deadline: .seconds(30)) { bytes in
            let text = String(decoding: bytes, as: UTF8.self)
            guard let split = text.range(of: "\r\n\r\n") else { return false }
            let length =
                text[..<split.lowerBound].split(separator: "\r\n").first { $0.lowercased().hasPrefix("content-length:") }
                .flatMap { Int($0.dropFirst(15).trimmingCharacters(in: .whitespaces)) } ?? 0
            return text[split.upperBound...].utf8.count >= length
        }
        return String(decoding: answer.bytes, as: UTF8.self)
    }

    /// The status line's code of a raw answer (0 when there is none).
    static func status(_ answer: String) -> Int {
        Int(answer.split(separator: " ", maxSplits: 2).dropFirst().first ?? "") ?? 0
    }

    @Test(arguments: TestEngine.available)
    func aChunkedFileUploadIsRefusedAndACutOneStoresNothing(engine: TestEngine) async throws {
        try await withTestApp(engine, mode: .live) { app in
            let port = try #require(app.port)
            let token = try await app.client.registerAndLogin(email: "cut-chunked@example.com").tokens.accessToken
            let head = Self.head("/files", token: token, ["Content-Type: text/csv", "Transfer-Encoding: chunked"])
            let chunk = String(Self.rows.utf8.count, radix: 16) + "\r\n" + Self.rows + "\r\n"

            // Cut before the terminating zero-length chunk: nothing is stored.
            let cut = try await Self.sendAndCut(port: port, Array((head + chunk).utf8))
            #expect(Self.status(cut) != 201, "\(cut)")
            let listed = try await app.client.json(.get, "/files", token: token).object["items"] as? [[String: Any]]
            #expect(listed?.isEmpty == true, "no file from a cut-off chunked body")

            // Complete, but chunked: 411 length_required, as problem+json.
            let whole = try await Self.exchange(port: port, head + chunk + "0\r\n\r\n")
            #expect(Self.status(whole) == 411, "\(whole)")
            #expect(whole.contains("application/problem+json") && whole.contains("\"code\":\"length_required\""), "\(whole)")

            // With Content-Length, raw and multipart alike, uploads work.
            let raw = try await Self.exchange(
                port: port, Self.head("/files", token: token, ["Content-Type: text/csv", "Content-Length: \(Self.rows.utf8.count)"]) + Self.rows)
            #expect(Self.status(raw) == 201, "\(raw)")
            let form =
                "--b0\r\nContent-Disposition: form-data; name=\"file\"; filename=\"rows.csv\"\r\nContent-Type: text/csv\r\n\r\n\(Self.rows)\r\n--b0--\r\n"
            let multipart = try await Self.exchange(
                port: port,
                Self.head("/files", token: token, ["Content-Type: multipart/form-data; boundary=b0", "Content-Length: \(form.utf8.count)"]) + form)
            #expect(Self.status(multipart) == 201, "\(multipart)")
            // A multipart body proves its own end, so it may come chunked; cut, it stores nothing.
            let formChunk = String(form.utf8.count, radix: 16) + "\r\n" + form + "\r\n0\r\n\r\n"
            let chunkedForm = try await Self.exchange(
                port: port,
                Self.head("/files", token: token, ["Content-Type: multipart/form-data; boundary=b0", "Transfer-Encoding: chunked"]) + formChunk)
            #expect(Self.status(chunkedForm) == 201, "\(chunkedForm)")
            let half =
                String(form.utf8.count / 2, radix: 16) + "\r\n" + String(decoding: Array(form.utf8).prefix(form.utf8.count / 2), as: UTF8.self)
                + "\r\n"
            let cutForm = try await Self.sendAndCut(
                port: port,
                Array(
                    (Self.head("/files", token: token, ["Content-Type: multipart/form-data; boundary=b0", "Transfer-Encoding: chunked"]) + half).utf8)
            )
            #expect(Self.status(cutForm) != 201, "\(cutForm)")
            let after = try await app.client.json(.get, "/files", token: token).object["items"] as? [[String: Any]]
            #expect(after?.count == 3, "the raw upload, the multipart one and the chunked multipart one")
        }
    }

    @Test(arguments: TestEngine.available)
    func productRowsCutOffImportNothing(engine: TestEngine) async throws {
        try await withTestApp(engine, mode: .live) { app in
            let port = try #require(app.port)
            let token = try await app.client.registerAndLogin(email: "cut-import@example.com").tokens.accessToken
            let chunk = String(Self.rows.utf8.count, radix: 16) + "\r\n" + Self.rows + "\r\n"
            let chunked = Self.head("/products:import", token: token, ["Content-Type: text/csv", "Transfer-Encoding: chunked"])
            let cutChunked = try await Self.sendAndCut(port: port, Array((chunked + chunk).utf8))
            #expect(Self.status(cutChunked) != 202, "\(cutChunked)")
            let whole = try await Self.exchange(port: port, chunked + chunk + "0\r\n\r\n")
            #expect(Self.status(whole) == 411 && whole.contains("\"code\":\"length_required\""), "\(whole)")
            // Fewer bytes than Content-Length announced, then the connection is cut.
            let declared = Self.head("/products:import", token: token, ["Content-Type: text/csv", "Content-Length: \(Self.rows.utf8.count + 100)"])
            let cutDeclared = try await Self.sendAndCut(port: port, Array((declared + Self.rows).utf8))
            #expect(Self.status(cutDeclared) != 202, "\(cutDeclared)")
            let jobs = try await app.client.json(.get, "/jobs", token: token).object["items"] as? [[String: Any]]
            #expect(jobs?.isEmpty == true, "no import job: \(jobs ?? [])")
        }
    }
}
