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
import Testing

@Suite("Files: orphaned blobs")
struct OrphanSweeperTests {
    /// A blob no row names is removed once older than the grace period, on either store; a
    /// file's blob stays, and so does a young orphan.
    @Test(arguments: TestEngine.available, TestBlobBackend.available)
    func orphansPastTheGraceAreRemoved(engine: TestEngine, backend: TestBlobBackend) async throws {
        try await withTestApp(engine, owner: "sweep@example.com", configure: try await backend.configure()) { app, token in
            let created = try await upload(app.client, token: token, Array("a,b\n1,2\n".utf8))
            let fileId = try #require(created.object["id"] as? String)
            let blobs = app.components.blobs
            let tenantId = try #require(try await blobs.list().first { $0.id == fileId }?.tenantId)
            let orphan = UUIDv7.make()
            _ = try await blobs.write(
                tenantId: tenantId, id: orphan, body: [ByteBuffer(string: "left behind")].async, maxBytes: 100)
            let sweeper = OrphanSweeper(database: app.components.database, blobs: blobs, graceSeconds: 3600, logger: testLogger)
            #expect(try await sweeper.sweep().isEmpty, "within the grace period nothing goes")
            let removed = try await sweeper.sweep(now: WallClock.milliseconds() + 7_200_000)
            #expect(removed == [orphan])
            #expect(try await blobs.size(tenantId: tenantId, id: orphan) == nil)
            #expect(try await blobs.size(tenantId: tenantId, id: fileId) == 8)
        }
    }

    /// Pieces of unfinished uploads no upload names: a partial file or tail object once past
    /// the grace, and (S3) a multipart upload once past its own, longer grace, whether no row
    /// names its blob at all or the row names another multipart upload (a node that died
    /// between starting one and recording its id). The live upload's pieces stay, and it
    /// completes with the right bytes afterwards. (moto dates every multipart upload
    /// 2010-11-10, so there the multipart grace has long passed at any time; the checks below
    /// hold whether the store dates them truly or not.)
    @Test(arguments: TestEngine.available, TestBlobBackend.available)
    func unfinishedPiecesNoUploadNamesAreRemoved(engine: TestEngine, backend: TestBlobBackend) async throws {
        try await withTestApp(engine, configure: try await backend.configure()) { app in
            let (user, tokens) = try await app.client.registerAndLogin(email: "sweep-parts@example.com")
            let token = tokens.accessToken
            let tenantId = user.tenantId
            let blobs = app.components.blobs
            // A live upload holding a part (on S3: a multipart upload) and a tail.
            let content = TusAnyNodeTests.bytes(20 << 20)
            let location = try await TusAnyNodeTests.create(app.client, token: token, length: content.count)
            let first = try await TusAnyNodeTests.patch(app.client, location, token: token, offset: 0, content[0..<(9 << 20)])
            #expect(first.status == .noContent, "\(first.text)")
            let liveId = String(try #require(location.split(separator: "/").last))
            // An orphan of the same shape that no row names (a node died before recording it).
            let orphan = UUIDv7.make()
            _ = try await blobs.appendPartial(tenantId: tenantId, id: orphan, from: PartialBlob(), commit: { _ in }) { writer in
                try await writer.write(ByteBuffer(bytes: TusAnyNodeTests.bytes(9 << 20)))
                try await writer.persist(all: true)
            }
            // On S3, a second multipart upload for the live upload's blob, never recorded.
            var stray: String?
            if let s3 = (blobs as? MeteredBlobStore)?.base as? S3BlobStore {
                stray = try await s3.client.createMultipartUpload(bucket: s3.bucket, key: s3.key(tenantId: tenantId, id: liveId))
            }
            let live = try #require(try await UploadStore(database: app.components.database).get(id: liveId, tenantId: tenantId))
            #expect((live.multipartId != nil) == (backend == .s3))
            let before = try await blobs.listUnfinished()
            #expect(before.filter { $0.id == orphan }.count == (backend == .s3 ? 2 : 1), "\(before)")

            let sweeper = OrphanSweeper(database: app.components.database, blobs: blobs, graceSeconds: 3600, logger: testLogger)
            let now = WallClock.milliseconds()
            if backend == .file { #expect(try await sweeper.sweep(now: now).isEmpty, "within the grace period nothing goes") }
            let early = try await sweeper.sweep(now: now + 7_200_000)
            #expect(early.contains(orphan), "the orphan's tail or partial file")
            let afterHours = try await blobs.listUnfinished()
            #expect(!afterHours.contains { $0.id == orphan && $0.multipartId == nil }, "\(afterHours)")
            #expect(afterHours.contains { $0.id == liveId && $0.multipartId == live.multipartId }, "the live upload's pieces stay: \(afterHours)")
            let removed = early + (try await sweeper.sweep(now: now + 25 * 3_600_000))
            if backend == .s3 { #expect(Set(removed) == [liveId, orphan], "the multipart uploads no row names: \(removed)") }
            let left = try await blobs.listUnfinished()
            #expect(left.allSatisfy { $0.id == liveId }, "\(left)")
            #expect(!left.contains { $0.multipartId != nil && $0.multipartId != live.multipartId }, "\(left)")
            #expect(left.count == (backend == .s3 ? 2 : 1), "the live upload's multipart upload and tail, or its partial file: \(left)")
            #expect(stray == nil || !left.contains { $0.multipartId == stray })

            let last = try await TusAnyNodeTests.patch(app.client, location, token: token, offset: 9 << 20, content[(9 << 20)...])
            #expect(last.status == .noContent, "\(last.text)")
            let fileId = try #require(try await tusRequest(app.client, .head, location, token: token).headers[fileIdHeader])
            let file = try await app.client.json(.get, "/files/\(fileId)", token: token).object
            #expect(file["sha256"] as? String == SigV4Signer.hex(SHA256.hash(data: content)))
            #expect(try await blobs.listUnfinished().isEmpty)
        }
    }

    /// Shutdown is not a failure: the sweep loops (orphaned blobs, expired uploads) cancelled
    /// as graceful shutdown cancels them, whether in their wait or in a sweep, end without a
    /// warning; before, the sweep that followed the cut-short wait logged a CancellationError.
    @Test(arguments: TestEngine.available)
    func cancellingTheSweepsLogsNoFailure(engine: TestEngine) async throws {
        try await withTestApp(engine) { app in
            let log = CapturedLog()
            let orphans = OrphanSweeper(
                database: app.components.database, blobs: app.components.blobs, interval: .milliseconds(1), logger: log.logger())
            let uploads = UploadExpiryService(
                store: UploadStore(database: app.components.database), blobs: app.components.blobs, interval: .milliseconds(1),
                logger: log.logger())
            // Many short lives, so cancellation lands both in a wait and in a sweep.
            for round in 0..<20 {
                let loops = [Task { try await orphans.run() }, Task { try await uploads.run() }]
                if round % 2 == 1 { await Task.yield() }
                for loop in loops {
                    loop.cancel()
                    try await withDeadline(.seconds(30), "a cancelled sweep loop to end") { try await loop.value }
                }
            }
            #expect(!log.text.contains("failed"), "\(log.text)")
            #expect(!log.text.contains("CancellationError"), "\(log.text)")
        }
    }
}

extension Array where Element: Sendable {
    /// The elements as an async sequence.
    fileprivate var async: AsyncStream<Element> {
        AsyncStream { continuation in
            for element in self { continuation.yield(element) }
            continuation.finish()
        }
    }
}
