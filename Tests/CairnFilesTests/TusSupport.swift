import CairnFiles
import CairnServer
import CairnTestSupport
import Foundation
import HTTPTypes
import HummingbirdTesting
import NIOCore

// The tus 1.0 headers (https://tus.io/protocols/resumable-upload) and Cairn's own, as the
// upload tests send and read them.

/// `Tus-Resumable`: the protocol version every tus request names.
let tus = HTTPField.Name("Tus-Resumable")!
/// `Upload-Length`: the size an upload declares at creation.
let uploadLength = HTTPField.Name("Upload-Length")!
/// `Upload-Offset`: where a `PATCH` appends, and how far an upload got.
let uploadOffset = HTTPField.Name("Upload-Offset")!
/// `Upload-Metadata`: comma-separated `key base64(value)` pairs.
let uploadMetadata = HTTPField.Name("Upload-Metadata")!
/// `Cairn-File-Id`: the file a finished upload became.
let fileIdHeader = HTTPField.Name("Cairn-File-Id")!

/// `text` in base64, as `Upload-Metadata` values are written.
func base64(_ text: String) -> String { Data(text.utf8).base64EncodedString() }

/// Runs `body` on a live node that only serves (no background services), with a tenant quota of
/// `maxTotalBytes` in all and an owner registered as `owner`: the opening of the quota tests
/// that upload over real HTTP.
func withTotalQuota(
    _ engine: TestEngine, _ maxTotalBytes: Int64, owner: String, _ body: @Sendable (TestApp, _ token: String) async throws -> Void
) async throws {
    try await withTestApp(engine, owner: owner, mode: .live, configure: { $0.files.quotas.maxTotalBytes = maxTotalBytes }, runServices: false, body)
}

/// A tus request: Bearer token, `Tus-Resumable: 1.0.0`, plus `extra`.
func tusRequest(
    _ client: any TestClientProtocol, _ method: HTTPRequest.Method, _ uri: String, token: String, headers extra: HTTPFields = [:],
    body: [UInt8]? = nil
) async throws -> TestResponse {
    var headers: HTTPFields = [.authorization: "Bearer \(token)", tus: "1.0.0"]
    for field in extra { headers[field.name] = field.value }
    return try await client.execute(uri: uri, method: method, headers: headers, body: body.map { ByteBuffer(bytes: $0) })
}

/// A tus `PATCH` appending `bytes` at `offset`, plus `extra` headers.
func patch(_ client: any TestClientProtocol, _ uri: String, token: String, offset: Int, _ bytes: [UInt8], extra: HTTPFields = [:])
    async throws -> TestResponse
{
    var headers: HTTPFields = [.contentType: "application/offset+octet-stream", uploadOffset: String(offset)]
    for field in extra { headers[field.name] = field.value }
    return try await tusRequest(client, .patch, uri, token: token, headers: headers, body: bytes)
}
