import CairnObjects
import CairnServer
import CairnStorage
import CairnTestSupport
import Crypto
import Foundation
import NIOCore
import SystemPackage
import Testing

/// What a failing test body throws.
struct BodyFailure: Error {}

/// A body of `size` deterministic bytes in chunks of `chunk`, which throws once `failAt` bytes
/// were sent (when set).
struct PatternBody: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    var size: Int
    var chunk = 256 << 10
    var failAt: Int?

    /// The bytes of the whole body.
    func bytes() -> [UInt8] { patternBytes(0..<size) }

    struct AsyncIterator: AsyncIteratorProtocol {
        let body: PatternBody
        var sent = 0
        mutating func next() async throws -> ByteBuffer? {
            if let failAt = body.failAt, sent >= failAt { throw BodyFailure() }
            guard sent < body.size else { return nil }
            let count = Swift.min(body.chunk, body.size - sent)
            let buffer = ByteBuffer(bytes: patternBytes(sent..<(sent + count)))
            sent += count
            return buffer
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(body: self) }
}

/// The blob store conformance suite: every backend (the file system, and S3 through moto's
/// server when `CAIRN_TEST_S3_URL` is set) writes, reads, ranges, deletes and aborts alike.
@Suite struct BlobStoreTests {
    let tenant = "0190a0b0-0000-7000-8000-000000000001"

    static func collect(_ chunks: BlobChunks) async throws -> [UInt8] {
        var out: [UInt8] = []
        for try await chunk in chunks { out += chunk.readableBytesView }
        return out
    }

    static func hex(_ bytes: [UInt8]) -> String { SigV4Signer.hex(SHA256.hash(data: bytes)) }

    /// Nothing of blob `id` is visible: no object, no file, and on S3 no multipart upload pending.
    static func expectNothingLeft(_ store: any BlobStore, tenant: String, id: String) async throws {
        #expect(try await store.size(tenantId: tenant, id: id) == nil)
        if let s3 = store as? S3BlobStore {
            let pending = try await s3.client.listMultipartUploads(bucket: s3.bucket, prefix: s3.prefix)
            #expect(pending.isEmpty, "pending multipart uploads: \(pending.map(\.key))")
            #expect(try await s3.listAll().isEmpty)
        } else if let local = store as? LocalBlobStore {
            let folder = local.root.appending(tenant).string
            let left = (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []
            #expect(left.isEmpty, "files left: \(left)")
        }
    }

    /// Small (one PutObject), exactly one part, and several parts with a tail: sizes, digests,
    /// whole and ranged reads (within a part and across a part boundary), then delete.
    @Test(arguments: TestBlobBackend.available)
    func writesReadsRangesAndDeletes(backend: TestBlobBackend) async throws {
        let store = try await backend.makeStore()
        let part = S3BlobStore.minimumPartSize
        for (index, size) in [100, part, 2 * part + 123].enumerated() {
            let id = "0190a0b0-0000-7000-8000-00000000010\(index)"
            let body = PatternBody(size: size)
            let bytes = body.bytes()
            let written = try await store.write(tenantId: tenant, id: id, body: body, maxBytes: 1 << 40)
            #expect(written.size == Int64(size))
            #expect(written.sha256 == Self.hex(bytes))
            #expect(try await store.size(tenantId: tenant, id: id) == Int64(size))
            #expect(try await Self.collect(try await store.read(tenantId: tenant, id: id, range: nil)) == bytes)
            #expect(try await Self.collect(try await store.read(tenantId: tenant, id: id, range: 10..<20)) == Array(bytes[10..<20]))
            let across = (size / 2 - 7)..<min(size, size / 2 + (1 << 20))
            #expect(
                try await Self.collect(try await store.read(tenantId: tenant, id: id, range: Int64(across.lowerBound)..<Int64(across.upperBound)))
                    == Array(bytes[across]))
            #expect(try await Self.collect(try await store.read(tenantId: tenant, id: id, range: 5..<5)).isEmpty)
            try await store.delete(tenantId: tenant, id: id)
            #expect(try await store.size(tenantId: tenant, id: id) == nil)
            await #expect(throws: BlobNotFound.self) { _ = try await store.read(tenantId: tenant, id: id, range: nil) }
            try await store.delete(tenantId: tenant, id: id)  // a missing blob is fine
        }
        try await Self.expectNothingLeft(store, tenant: tenant, id: "0190a0b0-0000-7000-8000-000000000100")
    }

    /// A body that throws midway (after two parts went out) leaves no object and no pending
    /// multipart upload.
    @Test(arguments: TestBlobBackend.available)
    func aBodyThatFailsMidwayLeavesNothing(backend: TestBlobBackend) async throws {
        let store = try await backend.makeStore()
        let id = "0190a0b0-0000-7000-8000-000000000200"
        let body = PatternBody(size: 4 * S3BlobStore.minimumPartSize, failAt: 2 * S3BlobStore.minimumPartSize + (1 << 20))
        await #expect(throws: BodyFailure.self) { _ = try await store.write(tenantId: tenant, id: id, body: body, maxBytes: 1 << 40) }
        try await Self.expectNothingLeft(store, tenant: tenant, id: id)
    }

    /// Past `maxBytes` the write stops with `BlobTooLarge`, and nothing stays.
    @Test(arguments: TestBlobBackend.available)
    func aTooLargeBodyLeavesNothing(backend: TestBlobBackend) async throws {
        let store = try await backend.makeStore()
        let id = "0190a0b0-0000-7000-8000-000000000300"
        let limit = Int64(S3BlobStore.minimumPartSize + 1000)
        await #expect(throws: BlobTooLarge.self) {
            _ = try await store.write(tenantId: tenant, id: id, body: PatternBody(size: 3 * S3BlobStore.minimumPartSize), maxBytes: limit)
        }
        try await Self.expectNothingLeft(store, tenant: tenant, id: id)
        // Exactly at the limit is fine.
        let written = try await store.write(tenantId: tenant, id: id, body: PatternBody(size: Int(limit)), maxBytes: limit)
        #expect(written.size == limit)
        try await store.delete(tenantId: tenant, id: id)
    }

    /// A write whose task is cancelled midway leaves nothing either.
    @Test(arguments: TestBlobBackend.available)
    func aCancelledWriteLeavesNothing(backend: TestBlobBackend) async throws {
        let store = try await backend.makeStore()
        let id = "0190a0b0-0000-7000-8000-000000000400"
        let started = AsyncStream<Void>.makeStream()
        let body = SignallingBody(
            base: PatternBody(size: 64 * S3BlobStore.minimumPartSize), signalAt: S3BlobStore.minimumPartSize + 1, signal: started.continuation)
        let task = Task { try await store.write(tenantId: tenant, id: id, body: body, maxBytes: 1 << 40) }
        for await _ in started.stream { break }
        task.cancel()
        _ = await task.result
        try await Self.expectNothingLeft(store, tenant: tenant, id: id)
    }

    /// `adopt` moves a local file into the store; `copy` brings a blob back into a local file.
    @Test(arguments: TestBlobBackend.available)
    func adoptsAndCopiesLocalFiles(backend: TestBlobBackend) async throws {
        let store = try await backend.makeStore()
        let id = "0190a0b0-0000-7000-8000-000000000500"
        let folder = NSTemporaryDirectory() + "cairn-adopt-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let bytes = PatternBody(size: S3BlobStore.minimumPartSize + 4321).bytes()
        try Data(bytes).write(to: URL(fileURLWithPath: folder + "/out"))
        try await store.adopt(tenantId: tenant, id: id, movingFileAt: .init(folder + "/out"))
        #expect(!FileManager.default.fileExists(atPath: folder + "/out"))
        #expect(try await Self.collect(try await store.read(tenantId: tenant, id: id, range: nil)) == bytes)
        try await store.copy(tenantId: tenant, id: id, toLocalFile: .init(folder + "/in"))
        #expect(try Data(contentsOf: URL(fileURLWithPath: folder + "/in")) == Data(bytes))
        try await store.delete(tenantId: tenant, id: id)
        await #expect(throws: BlobNotFound.self) { try await store.copy(tenantId: tenant, id: id, toLocalFile: .init(folder + "/gone")) }
    }

    /// A store nobody answers for: every call is `BlobStoreUnavailable`, naming no secret.
    @Test func anUnreachableStoreIsUnavailable() async throws {
        // Port 1 on loopback: nothing listens there, so connections are refused at once.
        let port = 1
        let client = S3Client(
            configuration: try S3Configuration(
                credentials: SigV4Credentials(accessKeyId: "AKIDUNREACHABLE", secretAccessKey: "never-printed"), endpoint: "http://127.0.0.1:\(port)")
        )
        let store = S3BlobStore(client: client, bucket: "cairn-test", prefix: "x/")
        let id = "0190a0b0-0000-7000-8000-000000000600"
        let tenant = self.tenant
        // Concurrently: each waits out the client's connect timeout (5 s).
        try await withThrowingTaskGroup(of: Void.self) { group in
            for operation in ["write", "read", "size", "delete", "reachable"] {
                group.addTask {
                    do {
                        switch operation {
                        case "write": _ = try await store.write(tenantId: tenant, id: id, body: PatternBody(size: 10), maxBytes: 100)
                        case "read": _ = try await store.read(tenantId: tenant, id: id, range: nil)
                        case "size": _ = try await store.size(tenantId: tenant, id: id)
                        case "delete": try await store.delete(tenantId: tenant, id: id)
                        default: try await store.checkReachable()
                        }
                        Issue.record("\(operation) succeeded against a closed port")
                    } catch let error as BlobStoreUnavailable {
                        #expect(!error.description.contains("never-printed"))
                    }
                }
            }
            try await group.waitForAll()
        }
    }

    /// S3's XML error answers become typed errors: status, code, request id; no secret.
    @Test func s3ErrorsAreParsedWithoutSecrets() async throws {
        guard TestBlobBackend.available.contains(.s3) else { return }
        let client = try await TestBlobBackend.s3Client()
        do {
            _ = try await client.getObject(bucket: TestBlobBackend.bucket, key: "missing/\(UUID().uuidString)")
            Issue.record("a missing object was found")
        } catch let error as S3Error {
            #expect(error.status == 404)
            #expect(error.code == "NoSuchKey")
            #expect(!error.description.contains("cairn-test-secret") && !error.description.lowercased().contains("authorization"))
        }
        do {
            _ = try await client.headObject(bucket: "no-such-bucket-\(UUID().uuidString.prefix(8).lowercased())", key: "k")
        } catch let error as S3Error {
            #expect(error.status == 404)
        }
    }
}

/// A body that signals once `signalAt` bytes went out, then goes on.
struct SignallingBody: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    let base: PatternBody
    let signalAt: Int
    let signal: AsyncStream<Void>.Continuation

    struct AsyncIterator: AsyncIteratorProtocol {
        var base: PatternBody.AsyncIterator
        let signalAt: Int
        let signal: AsyncStream<Void>.Continuation
        var sent = 0
        mutating func next() async throws -> ByteBuffer? {
            let chunk = try await base.next()
            sent += chunk?.readableBytes ?? 0
            if sent >= signalAt { signal.yield() }
            try Task.checkCancellation()
            return chunk
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(base: base.makeAsyncIterator(), signalAt: signalAt, signal: signal) }
}

/// A bad `CAIRN_BLOB_URL` is one line naming the setting once, with what is wrong.
@Suite struct BlobURLTests {
    @Test(arguments: [
        ("ftp://bucket", "invalid configuration: CAIRN_BLOB_URL must start with file:// or s3://"),
        ("file://relative/path", "invalid configuration: CAIRN_BLOB_URL file:// needs an absolute path (file:///path)"),
        ("s3://B_d", "invalid configuration: CAIRN_BLOB_URL s3:// needs a valid bucket name (3-63 of a-z, 0-9, '.', '-')"),
    ])
    func badBlobURLsAreNamedOnce(url: String, message: String) async throws {
        let error = await #expect(throws: ConfigurationError.self) {
            _ = try await CairnConfiguration.load(environment: ["CAIRN_BLOB_URL": url])
        }
        #expect(error?.description == message)
    }
}
