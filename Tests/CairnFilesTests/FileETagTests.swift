import CairnTestSupport
import Foundation
import HTTPTypes
import HummingbirdTesting
import NIOCore
import Testing

@Suite("Files: conditional reads of a file's metadata")
struct FileETagTests {
    /// `GET /files/{id}` answers `If-None-Match` as every other resource does (RFC 9110
    /// §13.1.2): the tag (the content's SHA-256) matches weakly and in a list, `*` matches any
    /// file that exists, and another tag gets the metadata with the tag.
    @Test(arguments: TestEngine.available)
    func ifNoneMatchComparesWeaklyAndTakesAStar(engine: TestEngine) async throws {
        try await withTestApp(engine, owner: "etags@example.com") { client, _, token in
            let created = try await upload(client, token: token, Array("a,b\n1,2\n".utf8))
            let id = try #require(created.object["id"] as? String)
            let sha = try #require(created.object["sha256"] as? String)
            let path = "/files/\(id)"
            let plain = try await client.json(.get, path, token: token)
            #expect(plain.status == .ok)
            #expect(plain.headers[.eTag] == "\"\(sha)\"")
            for condition in ["\"\(sha)\"", "W/\"\(sha)\"", "\"other\", \"\(sha)\"", "*"] {
                let answer = try await client.json(.get, path, token: token, headers: [.ifNoneMatch: condition])
                #expect(answer.status == .notModified, "\(condition)")
                #expect(answer.body.readableBytes == 0, "\(condition)")
                #expect(answer.headers[.eTag] == "\"\(sha)\"", "\(condition)")
            }
            let other = try await client.json(.get, path, token: token, headers: [.ifNoneMatch: "\"other\""])
            #expect(other.status == .ok)
            #expect(other.object["id"] as? String == id)
            #expect(other.headers[.eTag] == "\"\(sha)\"")
        }
    }
}
