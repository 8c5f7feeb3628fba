import CairnTestSupport
import Foundation
import HTTPTypes
import HummingbirdTesting
import NIOCore
import Testing

@Suite("Body limit answers")
struct BodyLimitTests {
    /// A body past the 1 MiB limit is 413 `payload_too_large` whose `detail` names the limit in
    /// bytes, over real HTTP where the body streams in (found by a fresh-user trial: the 413
    /// had no `detail`), on a public route, an authenticated one and one that reads its body
    /// without decoding it.
    @Test(arguments: TestEngine.available)
    func a413NamesTheLimitInBytes(engine: TestEngine) async throws {
        try await withTestApp(engine, owner: "big-body@example.com", mode: .live) { app, token in
            let client = app.client
            let limit = 1 << 20
            let body = ByteBuffer(string: #"{"title":"t"}"# + String(repeating: " ", count: limit))
            let json: HTTPFields = [.contentType: "application/json", .authorization: "Bearer \(token)"]
            for (method, path) in [(HTTPRequest.Method.post, "/auth/register"), (.post, "/tasks"), (.delete, "/users/me")] {
                let answer = try await client.execute(uri: path, method: method, headers: json, body: body)
                #expect(answer.status == .contentTooLarge, "\(path): \(answer.text)")
                #expect(answer.code == "payload_too_large", "\(path)")
                let detail = answer.object["detail"] as? String
                #expect(detail?.contains("\(limit) bytes") == true, "\(path): \(answer.text)")
            }
        }
    }
}
