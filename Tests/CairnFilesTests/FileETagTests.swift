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

    /// `GET /files/{id}/content` answers `If-None-Match` as `GET /files/{id}` does (304 with
    /// the tag and no body on a match), and serves a `Range` only when `If-Range` names the
    /// file's strong tag: another tag, a weak one or a date gets the whole file with 200 (RFC
    /// 9110 §13.1.5). Before, both headers were ignored there (found by a fresh-user trial).
    @Test(arguments: TestEngine.available)
    func contentAnswersIfNoneMatchAndIfRange(engine: TestEngine) async throws {
        try await withTestApp(engine, owner: "content-etags@example.com") { client, _, token in
            let bytes = Array("a,b\n1,2\n3,4\n".utf8)
            let created = try await upload(client, token: token, bytes)
            let id = try #require(created.object["id"] as? String)
            let tag = "\"\(try #require(created.object["sha256"] as? String))\""
            let path = "/files/\(id)/content"
            for condition in [tag, "W/\(tag)", "\"other\", \(tag)", "*"] {
                let answer = try await client.json(.get, path, token: token, headers: [.ifNoneMatch: condition])
                #expect(answer.status == .notModified, "\(condition)")
                #expect(answer.body.readableBytes == 0, "\(condition)")
                #expect(answer.headers[.eTag] == tag, "\(condition)")
            }
            let changed = try await client.json(.get, path, token: token, headers: [.ifNoneMatch: "\"other\""])
            #expect(changed.status == .ok)
            #expect(Array(changed.body.readableBytesView) == bytes)

            let resumed = try await client.json(.get, path, token: token, headers: [.range: "bytes=4-", .ifRange: tag])
            #expect(resumed.status == .partialContent)
            #expect(Array(resumed.body.readableBytesView) == Array(bytes[4...]))
            for validator in ["\"other\"", "W/\(tag)", "Sun, 06 Dec 2026 07:00:00 GMT"] {
                let whole = try await client.json(.get, path, token: token, headers: [.range: "bytes=4-", .ifRange: validator])
                #expect(whole.status == .ok, "\(validator)")
                #expect(whole.headers[.contentRange] == nil, "\(validator)")
                #expect(Array(whole.body.readableBytesView) == bytes, "\(validator)")
            }
        }
    }
}
