import CairnFiles
import CairnObjects
import CairnServer
import CairnStorage
import CairnTestSupport
import Foundation
import NIOCore
import Testing

@Suite("Files: orphaned blobs")
struct OrphanSweeperTests {
    /// A blob no row names is removed once older than the grace period, on either store; a
    /// file's blob stays, and so does a young orphan.
    @Test(arguments: TestEngine.available, TestBlobBackend.available)
    func orphansPastTheGraceAreRemoved(engine: TestEngine, backend: TestBlobBackend) async throws {
        try await withTestApp(engine, configure: try await backend.configure()) { app in
            let token = try await app.client.registerAndLogin(email: "sweep@example.com").tokens.accessToken
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
