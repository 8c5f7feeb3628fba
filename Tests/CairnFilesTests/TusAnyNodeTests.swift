import CairnFiles
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
import SystemPackage
import Testing

/// tus uploads whose PATCHes land on two nodes in turn: the partial bytes live in the blob store
/// (a file beside the blobs, or a multipart upload and a tail object on S3), never on a node.
@Suite("Uploads: tus on any node")
struct TusAnyNodeTests {

    /// Two nodes on one database and one store. On PostgreSQL each node has a data directory of
    /// its own (so nothing a node keeps on disk can help the other); on SQLite they share the
    /// database's. The store is a folder outside both, or a fresh prefix of the test bucket;
    /// with `s3Port`, the nodes reach the bucket's server through that loopback port (a proxy),
    /// while the store handed to `body` reaches it directly.
    static func withTwoNodes(
        _ engine: TestEngine, _ backend: TestBlobBackend, mode: TestAppMode = .router, s3Port: Int? = nil,
        _ body: @Sendable (TestApp, TestApp, _ store: any BlobStore) async throws -> Void
    ) async throws {
        let shared = NSTemporaryDirectory() + "cairn-tus-store-" + UUID().uuidString.lowercased()
        defer { try? FileManager.default.removeItem(atPath: shared) }
        let prefix = "tus-\(UUID().uuidString.lowercased())/"
        let s3 = backend == .s3 ? try TestBlobBackend.s3Configuration() : nil
        if backend == .s3 { _ = try await TestBlobBackend.s3Client() }
        let nodeS3 = try s3.map { s3 in
            try s3Port.map { try S3Configuration(credentials: s3.credentials, region: s3.region, endpoint: "http://127.0.0.1:\($0)") } ?? s3
        }
        let masterKey = try MasterKey(bytes: [UInt8](repeating: 7, count: 32))
        try await withTestDatabase(
            engine,
            configure: {
                $0.masterKey = masterKey
                if let nodeS3 {
                    $0.files.blobLocation = .s3(bucket: TestBlobBackend.bucket, prefix: prefix)
                    $0.files.s3 = nodeS3
                } else {
                    $0.files.blobLocation = .file(path: shared)
                }
            }
        ) { database in
            var other = database
            if engine == .postgres {
                other.configuration.dataDir = NSTemporaryDirectory() + "cairn-test-b-" + UUID().uuidString
                try FileManager.default.createDirectory(
                    atPath: other.configuration.dataDir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            }
            defer { if engine == .postgres { try? FileManager.default.removeItem(atPath: other.configuration.dataDir) } }
            let store: any BlobStore =
                if let s3 {
                    S3BlobStore(client: S3Client(configuration: s3), bucket: TestBlobBackend.bucket, prefix: prefix)
                } else {
                    LocalBlobStore(rootPath: shared)
                }
            let nodeB = other
            try await withTestApp(on: database, mode: mode, runServices: false) { a in
                try await withTestApp(on: nodeB, mode: mode, runServices: false) { b in try await body(a, b, store) }
            }
        }
    }

    static func create(_ client: any TestClientProtocol, token: String, length: Int) async throws -> String {
        let created = try await tusRequest(
            client, .post, "/uploads", token: token,
            headers: [uploadLength: String(length), uploadMetadata: "filename ZGF0YS5jc3Y="])
        #expect(created.status == .created)
        return try #require(created.headers[.location])
    }

    static func patch(_ client: any TestClientProtocol, _ uri: String, token: String, offset: Int, _ bytes: ArraySlice<UInt8>)
        async throws -> TestResponse
    {
        try await CairnFilesTests.patch(client, uri, token: token, offset: offset, Array(bytes))
    }

    /// Signs up `email` on `node` and starts an upload of `length` bytes there with its first
    /// `sending` bytes; returns the access token and the upload's location.
    static func startUpload(on node: TestApp, _ email: String, length: Int, sending: Int) async throws -> (token: String, location: String) {
        let token = try await node.client.registerAndLogin(email: email).tokens.accessToken
        let content = bytes(length)
        let location = try await create(node.client, token: token, length: length)
        #expect(try await patch(node.client, location, token: token, offset: 0, content[0..<sending]).status == .noContent)
        return (token, location)
    }

    /// Deterministic bytes that differ from one offset to the next (a misplaced chunk shows).
    static func bytes(_ count: Int) -> [UInt8] { noiseBytes(count, seed: 0x9E37_79B9_7F4A_7C15) }

    /// What is left in the store of unfinished uploads: partial files, tail objects and
    /// multipart uploads in progress.
    static func leftovers(_ store: any BlobStore) async throws -> [String] {
        if let s3 = store as? S3BlobStore {
            let objects = try await s3.listAll().map(\.key).filter { $0.hasSuffix(".tail") }
            let multipart = try await s3.client.listMultipartUploads(bucket: s3.bucket, prefix: s3.prefix).map { "multipart " + $0.key }
            return objects + multipart
        }
        let root = (store as! LocalBlobStore).root.string
        return (FileManager.default.enumerator(atPath: root)?.allObjects as? [String] ?? []).filter { $0.hasSuffix(".part") }
    }

    /// PATCHes of chunks below and above S3's 5 MiB minimum part, alternating between the
    /// nodes: the file holds exactly the bytes sent, with their SHA-256, and nothing of the
    /// unfinished upload stays in the store.
    @Test(arguments: TestEngine.available, TestBlobBackend.available)
    func patchesAlternatingBetweenNodesMakeTheRightFile(engine: TestEngine, backend: TestBlobBackend) async throws {
        try await Self.withTwoNodes(engine, backend) { a, b, store in
            let token = try await a.client.registerAndLogin(email: "tus-nodes@example.com").tokens.accessToken
            // 3 MiB (a tail), 7 MiB (one 8 MiB part, the tail rest), 5 KiB, 6 MiB (a part
            // again), then 9 MiB: the last PATCH sends a part, then its tail as the last part.
            let sizes = [3 << 20, 7 << 20, 5 << 10, 6 << 20, 9 << 20]
            let content = Self.bytes(sizes.reduce(0, +))
            let location = try await Self.create(a.client, token: token, length: content.count)
            var offset = 0
            for (index, size) in sizes.enumerated() {
                let node = index.isMultiple(of: 2) ? b : a
                let head = try await tusRequest(node.client, .head, location, token: token)
                #expect(head.headers[uploadOffset] == String(offset), "HEAD on either node says the committed offset")
                let answer = try await Self.patch(node.client, location, token: token, offset: offset, content[offset..<offset + size])
                #expect(answer.status == .noContent, "chunk \(index): \(answer.text)")
                offset += size
                #expect(answer.headers[uploadOffset] == String(offset))
            }
            let head = try await tusRequest(a.client, .head, location, token: token)
            let fileId = try #require(head.headers[fileIdHeader])
            let file = try await b.client.json(.get, "/files/\(fileId)", token: token).object
            #expect(file["sha256"] as? String == SigV4Signer.hex(SHA256.hash(data: content)))
            #expect(file["size"] as? Int == content.count)
            let stored = try await b.client.execute(uri: "/files/\(fileId)/content", method: .get, headers: [.authorization: "Bearer \(token)"])
            #expect(Array(stored.body.readableBytesView) == content, "the blob holds exactly the bytes sent")
            #expect(try await Self.leftovers(store).isEmpty, "no tail, partial file or multipart upload stays")
        }
    }

    /// Termination on the other node removes the multipart upload's parts and the tail (or the
    /// partial file): nothing of the upload is left in the store.
    @Test(arguments: TestEngine.available, TestBlobBackend.available)
    func terminationOnAnotherNodeRemovesEveryPart(engine: TestEngine, backend: TestBlobBackend) async throws {
        try await Self.withTwoNodes(engine, backend) { a, b, store in
            // 9 MiB: one part and a 1 MiB tail.
            let (token, location) = try await Self.startUpload(on: a, "tus-terminate@example.com", length: 20 << 20, sending: 9 << 20)
            let inStore = try await Self.leftovers(store)
            #expect(inStore.count == (backend == .s3 ? 2 : 1), "the unfinished upload is in the store: \(inStore)")
            let sweeper = OrphanSweeper(database: b.database, blobs: b.components.blobs, graceSeconds: 0, logger: testLogger)
            try await sweeper.sweep(now: WallClock.milliseconds() + 60_000)
            #expect(try await Self.leftovers(store) == inStore, "the orphan sweeper leaves an upload in progress alone")
            #expect(try await tusRequest(b.client, .delete, location, token: token).status == .noContent)
            #expect(try await Self.leftovers(store).isEmpty, "termination removes every part, whichever node wrote it")
            #expect(try await tusRequest(a.client, .head, location, token: token).status == .notFound)
        }
    }

    /// An expired upload's parts and tail go with it, whichever node sweeps.
    @Test(arguments: TestEngine.available, TestBlobBackend.available)
    func expiryOnAnotherNodeRemovesEveryPart(engine: TestEngine, backend: TestBlobBackend) async throws {
        try await Self.withTwoNodes(engine, backend) { a, b, store in
            let (_, location) = try await Self.startUpload(on: a, "tus-expire@example.com", length: 12 << 20, sending: 10 << 20)
            let id = String(location.dropFirst("/uploads/".count))
            try await b.database.write { db in try await db.raw("UPDATE uploads SET expires_at = 0 WHERE id = \(bind: id)").run() }
            let sweeper = UploadExpiryService(store: UploadStore(database: b.database), blobs: b.components.blobs, logger: testLogger)
            #expect(try await sweeper.sweep() == 1)
            #expect(try await Self.leftovers(store).isEmpty)
        }
    }
}
