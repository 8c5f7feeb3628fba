import Foundation
package import HTTPTypes
package import HummingbirdTesting
import NIOCore

/// The shared real data (`../shared/data` beside the repository, as DESIGN.md lays it out):
/// `CAIRN_SHARED_DATA` when set, else the first `shared/data` found beside this file's
/// ancestors (a clone may live anywhere), else `/work/shared/data`.
package let sharedData: String = {
    if let dir = ProcessInfo.processInfo.environment["CAIRN_SHARED_DATA"], !dir.isEmpty { return dir }
    var url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    while url.path != "/" {
        let candidate = url.appendingPathComponent("shared/data")
        if FileManager.default.fileExists(atPath: candidate.appendingPathComponent("README.md").path) { return candidate.path }
        url = url.deletingLastPathComponent()
    }
    return "/work/shared/data"
}()

/// Uploads `bytes` with `POST /files` (a plain body of `contentType`), as `token`.
package func upload(
    _ client: any TestClientProtocol, token: String, _ bytes: [UInt8], contentType: String = "text/csv", query: String = "",
    headers extra: HTTPFields = [:]
) async throws -> TestResponse {
    var headers: HTTPFields = [.authorization: "Bearer \(token)", .contentType: contentType]
    for field in extra { headers.append(field) }
    return try await client.execute(uri: "/files\(query)", method: .post, headers: headers, body: ByteBuffer(bytes: bytes))
}

/// Lowercase hexadecimal of a digest.
package func hex(_ digest: some Sequence<UInt8>) -> String { digest.map { String(format: "%02x", $0) }.joined() }
