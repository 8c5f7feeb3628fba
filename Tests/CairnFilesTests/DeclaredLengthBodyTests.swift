import CairnFiles
import CairnObjects
import Foundation
import NIOCore
import Testing

/// The body of a plain `POST /files`, held to its `Content-Length`: Hummingbird ends a body
/// quietly when the connection closes mid-upload, and a blob write must not take that for a
/// complete file (found by a fresh user: a killed `curl --data-binary` left a shorter file).
@Suite struct DeclaredLengthBodyTests {
    private static func chunks(_ sizes: [Int]) -> AsyncStream<ByteBuffer> {
        AsyncStream { continuation in
            for size in sizes { continuation.yield(ByteBuffer(repeating: UInt8(ascii: "a"), count: size)) }
            continuation.finish()
        }
    }

    @Test func aBodyThatEndsEarlyThrowsAndTheBlobIsNotKept() async throws {
        let (tenant, file) = (UUID().uuidString.lowercased(), UUID().uuidString.lowercased())
        let store = LocalBlobStore(rootPath: NSTemporaryDirectory() + "cairn-blobs-" + UUID().uuidString.lowercased())
        let body = DeclaredLengthBody(base: Self.chunks([4000, 4004]), declared: 80_040)
        let error = await #expect(throws: IncompleteBody.self) {
            _ = try await store.write(tenantId: tenant, id: file, body: body, maxBytes: 1 << 20)
        }
        #expect(error?.received == 8004)
        #expect(error?.declared == 80_040)
        #expect(try await store.size(tenantId: tenant, id: file) == nil, "nothing of the cut-off body is stored")
    }

    @Test func aWholeBodyIsWritten() async throws {
        let (tenant, file) = (UUID().uuidString.lowercased(), UUID().uuidString.lowercased())
        let store = LocalBlobStore(rootPath: NSTemporaryDirectory() + "cairn-blobs-" + UUID().uuidString.lowercased())
        let body = DeclaredLengthBody(base: Self.chunks([4000, 4004]), declared: 8004)
        let written = try await store.write(tenantId: tenant, id: file, body: body, maxBytes: 1 << 20)
        #expect(written.size == 8004)
        #expect(try await store.size(tenantId: tenant, id: file) == 8004)
    }
}
