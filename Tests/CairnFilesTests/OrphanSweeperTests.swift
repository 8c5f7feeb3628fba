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
