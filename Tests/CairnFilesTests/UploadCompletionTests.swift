import CairnFiles
import CairnServer
import CairnStorage
import CairnTestSupport
import Crypto
import Foundation
import HTTPTypes
import HummingbirdTesting
import NIOCore
import SQLKit
import SystemPackage
import Testing

/// Completing a tus upload survives a database that fails at the worst moment: every byte has
/// arrived and moved into the blob store, but the file is not recorded. That is also the state
/// a crash between the two leaves. The bytes stay, and the next HEAD or PATCH finishes it.
@Suite("Uploads: completion after a failure")
struct UploadCompletionTests {
    @Test(arguments: TestEngine.available)
    func aFailedRecordKeepsEveryByteAndTheNextHeadOrPatchFinishesIt(engine: TestEngine) async throws {
        try await withTestApp(engine, owner: "tus-finish@example.com") { client, components, token in
            let bytes = Array("id,name\n1,one\n2,two\n".utf8)
            var locations: [String] = []
            for _ in 0..<2 {
                let created = try await tusRequest(
                    client, .post, "/uploads", token: token,
                    headers: [uploadLength: String(bytes.count), uploadMetadata: "filename ZGF0YS5jc3Y="])
                locations.append(try #require(created.headers[.location]))
            }

            try await injectDatabaseFailure(components.database, engine: engine, name: "refuse_files", on: "INSERT", of: "files")
            for location in locations {
                let failed = try await patch(client, location, token: token, offset: 0, bytes)
                #expect(failed.status == .serviceUnavailable, "\(failed.status) \(failed.text)")
                #expect(failed.code == "unavailable")
                // While the database still fails, a HEAD's attempt to finish fails the same way.
                #expect(try await tusRequest(client, .head, location, token: token).status == .serviceUnavailable)
            }
            // Not deleted: the uploads are still there, every byte received, their leases given back.
            let waiting = try await components.database.read { db in
                try await db.raw("SELECT upload_offset, length, lock_token FROM uploads WHERE file_id IS NULL").all()
            }
            #expect(waiting.count == 2)
            for row in waiting {
                #expect(try row.decode(column: "upload_offset", as: Int.self) == bytes.count)
                #expect(try row.decode(column: "lock_token", as: String?.self) == nil)
            }
            try await removeDatabaseFailure(components.database, engine: engine, name: "refuse_files", of: "files")

            // One is finished by a HEAD (what tuspy sends on resuming), the other by an empty PATCH
            // at its length; neither is made up from zeros.
            let byHead = try await tusRequest(client, .head, locations[0], token: token)
            #expect(byHead.status == .ok)
            let empty = try await patch(client, locations[1], token: token, offset: bytes.count, [])
            #expect(empty.status == .noContent, "\(empty.status) \(empty.text)")
            for id in [byHead.headers[fileIdHeader], empty.headers[fileIdHeader]] {
                let fileId = try #require(id)
                let file = try await client.json(.get, "/files/\(fileId)", token: token).object
                #expect(file["sha256"] as? String == SHA256.hash(data: Data(bytes)).map { String(format: "%02x", $0) }.joined())
                let content = try await client.execute(uri: "/files/\(fileId)/content", method: .get, headers: [.authorization: "Bearer \(token)"])
                #expect(Array(content.body.readableBytesView) == bytes)
            }
            // And the quota counts each file once (no reservation left beside it).
            let uploads = try await components.database.rowCount("uploads WHERE file_id IS NULL")
            #expect(uploads == 0)
        }
    }

    /// A PATCH that finds no partial file behind a non-zero offset (removed, or left on a
    /// node's disk by an earlier version) is refused: it used to create one cut to the offset, zeros, and complete it.
    @Test(arguments: TestEngine.available)
    func aPatchWithoutItsReceivedBytesIsGoneNotZeros(engine: TestEngine) async throws {
        try await withTestApp(engine) { client, components in
            let (user, tokens) = try await client.registerAndLogin(email: "tus-lost@example.com")
            let token = tokens.accessToken
            let created = try await tusRequest(
                client, .post, "/uploads", token: token, headers: [uploadLength: "8", uploadMetadata: "filename ZGF0YS5jc3Y="])
            let location = try #require(created.headers[.location])
            #expect(try await patch(client, location, token: token, offset: 0, Array("abcd".utf8)).status == .noContent)
            let id = String(location.split(separator: "/").last ?? "")
            // The file store's partial file, beside the blobs.
            try FileManager.default.removeItem(atPath: components.configuration.dataDir + "/blobs/\(user.tenantId)/\(id).part")

            let refused = try await patch(client, location, token: token, offset: 4, Array("efgh".utf8))
            #expect(refused.status == .gone, "\(refused.status) \(refused.text)")
            let files = try await client.json(.get, "/files", token: token).object["items"] as? [[String: Any]]
            #expect(files?.isEmpty == true, "no file made of zeros")
        }
    }
}
