import CairnFiles
import CairnHTTP
import CairnObjects
import CairnServer
import CairnStorage
import CairnTestSupport
import Crypto
import Foundation
import HTTPTypes
import HummingbirdTesting
import NIOCore
import SQLKit
import Testing

/// Files on the S3-compatible store (moto's server in CI): the whole app, two nodes sharing one
/// database and one bucket, and an unreachable store.
@Suite("Files: on the object store")
struct ObjectStoreFilesTests {
    /// The database several nodes can share: PostgreSQL when there is one.
    static var sharedEngine: TestEngine { TestEngine.available.last! }

    /// Whether this run has an S3 server (under CI it must).
    static var hasS3: Bool { TestBlobBackend.available.contains(.s3) }

    /// A file uploaded on node A is downloaded (whole and with `Range`) on node B, the bytes
    /// are in the bucket and not on the nodes' disk, and deleting it on B removes the object.
    @Test func aFileUploadedOnOneNodeIsReadOnAnotherAndDeletedFromTheBucket() async throws {
        guard Self.hasS3 else { return }
        let s3 = try TestBlobBackend.s3Configuration()
        _ = try await TestBlobBackend.s3Client()
        let prefix = "app-\(UUID().uuidString.lowercased())/"
        try await withTestDatabase(
            Self.sharedEngine,
            configure: {
                $0.files.blobLocation = .s3(bucket: TestBlobBackend.bucket, prefix: prefix)
                $0.files.s3 = s3
            }
        ) { database in
            let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: "\(sharedData)/penguins.csv")))
            let (token, id) = try await withTestApp(on: database) { app in
                let ready = try await app.client.execute(uri: "/health/ready", method: .get)
                #expect(ready.status == .ok)
                #expect(ready.object["blobs"] as? String == "ok")
                let token = try await app.client.registerAndLogin(email: "s3-files@example.com").tokens.accessToken
                let created = try await upload(app.client, token: token, bytes)
                #expect(created.status == .created)
                #expect(created.object["sha256"] as? String == SigV4Signer.hex(SHA256.hash(data: bytes)))
                return (token, try #require(created.object["id"] as? String))
            }
            let store = S3BlobStore(client: S3Client(configuration: s3), bucket: TestBlobBackend.bucket, prefix: prefix)
            let objects = try await store.listAll()
            #expect(objects.count == 1 && objects.first?.key.hasSuffix("/" + id) == true && objects.first?.size == Int64(bytes.count))
            let onDisk = FileManager.default.enumerator(atPath: database.configuration.dataDir + "/blobs")?.allObjects ?? []
            #expect(onDisk.isEmpty, "no blob on the node's disk")
            try await withTestApp(on: database) { app in
                let auth: HTTPFields = [.authorization: "Bearer \(token)"]
                let whole = try await app.client.execute(uri: "/files/\(id)/content", method: .get, headers: auth)
                #expect(whole.status == .ok)
                #expect(Array(whole.body.readableBytesView) == bytes)
                var ranged = auth
                ranged[.range] = "bytes=100-1099"
                let part = try await app.client.execute(uri: "/files/\(id)/content", method: .get, headers: ranged)
                #expect(part.status == .partialContent)
                #expect(Array(part.body.readableBytesView) == Array(bytes[100...1099]))
                #expect(part.headers[.contentRange] == "bytes 100-1099/\(bytes.count)")
                #expect(try await app.client.json(.delete, "/files/\(id)", token: token).status == .noContent)
            }
            #expect(try await store.listAll().isEmpty, "the object is gone")
        }
    }

    /// A store nobody answers for: uploads and downloads answer 503 `unavailable` with
    /// `Retry-After` (nothing recorded), and the node is not ready.
    @Test(arguments: TestEngine.available)
    func anUnreachableStoreAnswers503(engine: TestEngine) async throws {
        // Port 1 on loopback: nothing listens there, so connections are refused.
        let unreachable = try S3Configuration(
            credentials: SigV4Credentials(accessKeyId: "AKIDUNREACHABLE", secretAccessKey: "never-in-a-response"), endpoint: "http://127.0.0.1:1")
        try await withTestDatabase(engine) { database in
            // The file is recorded by a node on the file store; the other node's store is away.
            let (token, id) = try await withTestApp(on: database) { app in
                let token = try await app.client.registerAndLogin(email: "s3-away@example.com").tokens.accessToken
                let created = try await upload(app.client, token: token, Array("a,b\n1,2\n".utf8))
                return (token, try #require(created.object["id"] as? String))
            }
            var away = database
            away.configuration.files.blobLocation = .s3(bucket: "cairn-test", prefix: "away/")
            away.configuration.files.s3 = unreachable
            try await withTestApp(on: away) { app in
                let refused = try await upload(app.client, token: token, Array("a,b\n3,4\n".utf8))
                #expect(refused.status == .serviceUnavailable)
                #expect(refused.object["code"] as? String == "unavailable")
                #expect(refused.headers[.retryAfter] != nil)
                #expect(!refused.text.contains("never-in-a-response"))
                let listed = try await app.client.json(.get, "/files", token: token).object["items"] as? [[String: Any]]
                #expect(listed?.count == 1, "nothing recorded")
                let download = try await app.client.execute(
                    uri: "/files/\(id)/content", method: .get, headers: [.authorization: "Bearer \(token)"])
                #expect(download.status == .serviceUnavailable)
                #expect(download.headers[.retryAfter] != nil)
                let ready = try await app.client.execute(uri: "/health/ready", method: .get)
                #expect(ready.status == .serviceUnavailable)
                // A tus creation too: refused before anything is recorded.
                let created = try await app.client.execute(
                    uri: "/uploads", method: .post,
                    headers: [
                        .authorization: "Bearer \(token)", HTTPField.Name("Tus-Resumable")!: "1.0.0", HTTPField.Name("Upload-Length")!: "10",
                        HTTPField.Name("Upload-Metadata")!: "filename YS5jc3Y=",
                    ])
                #expect(created.status == .serviceUnavailable, "\(created.text)")
                #expect(created.object["code"] as? String == "unavailable")
                #expect(created.headers[.retryAfter] != nil)
                #expect(created.headers[HTTPField.Name("Tus-Resumable")!] == "1.0.0")
                let uploads = try await app.components.database.rowCount("uploads")
                #expect(uploads == 0, "no upload row")
            }
        }
    }

    /// A bucket that does not exist makes the store unusable: downloads, uploads and tus
    /// creations answer 503 `unavailable` with `Retry-After` (S3 answers 404 `NoSuchBucket`,
    /// which once read as a missing object and answered 500), and the node is not ready. An
    /// object gone behind Cairn's back, in a bucket that exists, is a 404.
    @Test(arguments: TestEngine.available)
    func aMissingBucketIsAnOutageAndAMissingObjectA404(engine: TestEngine) async throws {
        guard Self.hasS3 else { return }
        let s3 = try TestBlobBackend.s3Configuration()
        _ = try await TestBlobBackend.s3Client()
        let prefix = "gone-\(UUID().uuidString.lowercased())/"
        try await withTestDatabase(
            engine,
            configure: {
                $0.files.blobLocation = .s3(bucket: TestBlobBackend.bucket, prefix: prefix)
                $0.files.s3 = s3
            }
        ) { database in
            let bytes = Array("a,b\n1,2\n".utf8)
            let (token, kept, removed) = try await withTestApp(on: database) { app in
                let token = try await app.client.registerAndLogin(email: "s3-gone@example.com").tokens.accessToken
                let kept = try #require(try await upload(app.client, token: token, bytes).object["id"] as? String)
                let removed = try #require(try await upload(app.client, token: token, bytes).object["id"] as? String)
                let store = S3BlobStore(client: S3Client(configuration: s3), bucket: TestBlobBackend.bucket, prefix: prefix)
                let tenantId = try #require(try await store.list().first?.tenantId)
                try await store.delete(tenantId: tenantId, id: removed)
                let missing = try await app.client.execute(
                    uri: "/files/\(removed)/content", method: .get, headers: [.authorization: "Bearer \(token)"])
                #expect(missing.status == .notFound, "\(missing.text)")
                #expect(missing.object["code"] as? String == "not_found")
                return (token, kept, removed)
            }
            var noBucket = database
            noBucket.configuration.files.blobLocation = .s3(
                bucket: "cairn-no-such-bucket-\(UUID().uuidString.prefix(8).lowercased())", prefix: prefix)
            try await withTestApp(on: noBucket) { app in
                let auth: HTTPFields = [.authorization: "Bearer \(token)"]
                for id in [kept, removed] {
                    let download = try await app.client.execute(uri: "/files/\(id)/content", method: .get, headers: auth)
                    #expect(download.status == .serviceUnavailable, "\(download.text)")
                    #expect(download.object["code"] as? String == "unavailable")
                    #expect(download.headers[.retryAfter] != nil)
                }
                let refused = try await upload(app.client, token: token, bytes)
                #expect(refused.status == .serviceUnavailable, "\(refused.text)")
                var tus = auth
                tus[HTTPField.Name("Tus-Resumable")!] = "1.0.0"
                tus[HTTPField.Name("Upload-Length")!] = "10"
                tus[HTTPField.Name("Upload-Metadata")!] = "filename YS5jc3Y="  // a.csv
                let created = try await app.client.execute(uri: "/uploads", method: .post, headers: tus)
                #expect(created.status == .serviceUnavailable, "\(created.text)")
                let ready = try await app.client.execute(uri: "/health/ready", method: .get)
                #expect(ready.status == .serviceUnavailable)
                #expect(ready.object["blobs"] as? String != "ok", "\(ready.text)")
            }
        }
    }

    /// Two nodes reach the bucket through a proxy that goes down while node A streams an
    /// upload (its first 8 MiB part is in, the second is on the wire): the upload answers 503
    /// `unavailable` with `Retry-After`, and nothing of it is visible (no file row, no object);
    /// both nodes refuse uploads and are not ready while the store is away. When the proxy is
    /// back, uploads on both nodes succeed and read back, with no node restarted.
    @Test(arguments: TestEngine.available)
    func theStoreStoppingMidUploadLeavesNothingAndServiceResumesByItself(engine: TestEngine) async throws {
        guard Self.hasS3, let moto = URLComponents(string: TestBlobBackend.s3Endpoint ?? "")?.port else { return }
        let proxy = try TCPProxy(upstreamPort: moto)
        defer { proxy.close() }
        try await TusAnyNodeTests.withTwoNodes(engine, .s3, s3Port: proxy.port) { a, b, store in
            let token = try await a.client.registerAndLogin(email: "s3-outage@example.com").tokens.accessToken
            let big = TusAnyNodeTests.bytes(20 << 20)
            proxy.goDown(afterForwarding: 12 << 20)
            let refused = try await upload(a.client, token: token, big)
            #expect(refused.status == .serviceUnavailable, "\(refused.text)")
            #expect(refused.object["code"] as? String == "unavailable")
            #expect(refused.headers[.retryAfter] != nil)
            #expect(!proxy.isUp, "the store went away mid-upload")
            for node in [a, b] {
                let small = try await upload(node.client, token: token, Array("a,b\n1,2\n".utf8))
                #expect(small.status == .serviceUnavailable)
                #expect(small.headers[.retryAfter] != nil)
                #expect(try await node.client.execute(uri: "/health/ready", method: .get).status == .serviceUnavailable)
            }
            let listed = try await b.client.json(.get, "/files", token: token).object["items"] as? [[String: Any]]
            #expect(listed?.isEmpty == true, "no file row")
            #expect(try await store.list().isEmpty, "no object")

            proxy.comeUp()
            // The cut write's abort failed with the store away: it is retried once it is back.
            // The store announces nothing, so this reads it, bounded by a deadline.
            try await pollUntil(
                "the cut write's multipart upload is aborted once the store is back", every: .milliseconds(250), timeout: .seconds(60)
            ) {
                try await store.listUnfinished().isEmpty
            }
            var ids: [String] = []
            for (node, bytes) in [(b, big), (a, Array(big.prefix(3 << 20)))] {
                let created = try await upload(node.client, token: token, bytes)
                #expect(created.status == .created, "\(created.text)")
                #expect(created.object["sha256"] as? String == SigV4Signer.hex(SHA256.hash(data: bytes)))
                ids.append(try #require(created.object["id"] as? String))
                #expect(try await node.client.execute(uri: "/health/ready", method: .get).status == .ok)
            }
            let back = try await a.client.execute(uri: "/files/\(ids[0])/content", method: .get, headers: [.authorization: "Bearer \(token)"])
            #expect(back.status == .ok)
            #expect(Array(back.body.readableBytesView) == big)
            #expect(Set(try await store.list().map(\.id)) == Set(ids))
        }
    }
}
