import CairnFiles
import CairnServer
import CairnTestSupport
import Foundation
import HTTPTypes
import HummingbirdTesting
import NIOCore
import Testing

/// Unfinished tus uploads hold their declared length against the tenant's total quota from the
/// moment they are created, so many of them cannot fill the disk, and creations racing each
/// other cannot together overshoot the quota.
@Suite("Uploads: quotas count unfinished uploads")
struct UploadQuotaTests {
    static func create(_ client: any TestClientProtocol, token: String, length: Int) async throws -> TestResponse {
        try await client.execute(
            uri: "/uploads", method: .post,
            headers: [
                .authorization: "Bearer \(token)", tus: "1.0.0", uploadLength: String(length),
                uploadMetadata: "filename ZGF0YS5jc3Y=",
            ])
    }

    @Test(arguments: TestEngine.available)
    func unfinishedUploadsHoldTheirLengthAgainstTheQuota(engine: TestEngine) async throws {
        try await withTotalQuota(engine, 1000, owner: "tus-quota@example.com") { app, token in
            let client = app.client
            let first = try await Self.create(client, token: token, length: 600)
            #expect(first.status == .created)
            let location = try #require(first.headers[.location])
            // Nothing is written yet, but the 600 bytes are spoken for.
            let second = try await Self.create(client, token: token, length: 600)
            #expect(second.status == .contentTooLarge)
            #expect(second.code == "payload_too_large")
            let raw = try await upload(client, token: token, [UInt8](repeating: 0x61, count: 500))
            #expect(raw.status == .contentTooLarge, "a plain upload sees the reservation too")
            #expect(try await Self.create(client, token: token, length: 400).status == .created)

            // Terminating an upload gives its room back.
            let deleted = try await client.execute(uri: location, method: .delete, headers: [.authorization: "Bearer \(token)", tus: "1.0.0"])
            #expect(deleted.status == .noContent)
            let third = try await Self.create(client, token: token, length: 600)
            #expect(third.status == .created)

            // Completing an upload turns its reservation into its file, counted once.
            let thirdLocation = try #require(third.headers[.location])
            let patched = try await client.execute(
                uri: thirdLocation, method: .patch,
                headers: [
                    .authorization: "Bearer \(token)", tus: "1.0.0", .contentType: "application/offset+octet-stream", uploadOffset: "0",
                ],
                body: ByteBuffer(bytes: [UInt8](repeating: 0x62, count: 600)))
            #expect(patched.status == .noContent, "\(patched.text)")
            #expect(try await app.components.files.usedBytes(tenantId: try await tenantId(client, token)) == 1000)
            #expect(try await Self.create(client, token: token, length: 1).status == .contentTooLarge)
        }
    }

    @Test(arguments: TestEngine.available)
    func concurrentCreationsCannotOvershootTheQuota(engine: TestEngine) async throws {
        try await withTotalQuota(engine, 1000, owner: "tus-race@example.com") { app, token in
            // 20 creations of 100 bytes at once from separate curl processes: 10 fit.
            let script = """
                for i in $(seq 1 20); do
                  curl -s -o /dev/null -w '%{http_code}\\n' -X POST -H "Authorization: Bearer $1" -H 'Tus-Resumable: 1.0.0' \
                    -H 'Upload-Length: 100' -H 'Upload-Metadata: filename ZGF0YS5jc3Y=' "$2/uploads" &
                done
                wait
                """
            let output = try await runProcess("/bin/sh", ["-c", script, "sh", token, app.baseURL])
            let codes = String(decoding: output, as: UTF8.self).split(separator: "\n").map(String.init)
            #expect(codes.count == 20)
            #expect(codes.filter { $0 == "201" }.count == 10, "\(codes.sorted())")
            #expect(codes.filter { $0 == "413" }.count == 10, "\(codes.sorted())")
            #expect(try await app.components.files.usedBytes(tenantId: try await tenantId(app.client, token)) == 1000)
        }
    }

    func tenantId(_ client: any TestClientProtocol, _ token: String) async throws -> String {
        try #require(try await client.json(.get, "/users/me", token: token).object["tenantId"] as? String)
    }
}
