package import CairnObjects
import Metrics
package import NIOCore
package import NIOFileSystem

/// A blob store whose operations are measured: `cairn_blob_operation_seconds{operation}`
/// (histogram of every call, failed or not) and `cairn_blob_operation_errors_total{operation}`
/// (calls that threw, except a body over its limit, which is the client's doing). A read is timed
/// until its stream is handed out (time to first byte), not while the caller consumes it.
package struct MeteredBlobStore: BlobStore {
    /// The store measured.
    package let base: any BlobStore

    /// Wraps `base`.
    package init(_ base: any BlobStore) {
        self.base = base
    }

    /// See ``BlobStore/write(tenantId:id:body:maxBytes:)``.
    package func write<Body: AsyncSequence & Sendable>(tenantId: String, id: String, body: Body, maxBytes: Int64) async throws -> (
        size: Int64, sha256: String
    ) where Body.Element == ByteBuffer {
        try await BlobMetrics.timed(.write) { try await base.write(tenantId: tenantId, id: id, body: body, maxBytes: maxBytes) }
    }

    /// See ``BlobStore/read(tenantId:id:range:)``.
    package func read(tenantId: String, id: String, range: Range<Int64>?) async throws -> BlobChunks {
        try await BlobMetrics.timed(.read) { try await base.read(tenantId: tenantId, id: id, range: range) }
    }

    /// See ``BlobStore/size(tenantId:id:)``.
    package func size(tenantId: String, id: String) async throws -> Int64? {
        try await BlobMetrics.timed(.size) { try await base.size(tenantId: tenantId, id: id) }
    }

    /// See ``BlobStore/delete(tenantId:id:)``.
    package func delete(tenantId: String, id: String) async throws {
        try await BlobMetrics.timed(.delete) { try await base.delete(tenantId: tenantId, id: id) }
    }

    /// See ``BlobStore/adopt(tenantId:id:movingFileAt:)``.
    package func adopt(tenantId: String, id: String, movingFileAt path: FilePath) async throws {
        try await BlobMetrics.timed(.adopt) { try await base.adopt(tenantId: tenantId, id: id, movingFileAt: path) }
    }

    /// See ``BlobStore/copy(tenantId:id:toLocalFile:)``.
    package func copy(tenantId: String, id: String, toLocalFile path: FilePath) async throws {
        try await BlobMetrics.timed(.copy) { try await base.copy(tenantId: tenantId, id: id, toLocalFile: path) }
    }

    /// See ``BlobStore/appendPartial(tenantId:id:from:commit:_:)``; timed as a whole, body included.
    package func appendPartial<R: Sendable>(
        tenantId: String, id: String, from state: PartialBlob, commit: @escaping PartialBlobCommit,
        _ body: (any PartialBlobWriter) async throws -> R
    ) async throws -> R {
        try await BlobMetrics.timed(.append) { try await base.appendPartial(tenantId: tenantId, id: id, from: state, commit: commit, body) }
    }

    /// See ``BlobStore/completePartial(tenantId:id:state:)``.
    package func completePartial(tenantId: String, id: String, state: PartialBlob) async throws {
        try await BlobMetrics.timed(.complete) { try await base.completePartial(tenantId: tenantId, id: id, state: state) }
    }

    /// See ``BlobStore/removePartial(tenantId:id:multipartId:)``.
    package func removePartial(tenantId: String, id: String, multipartId: String?) async throws {
        try await BlobMetrics.timed(.delete) { try await base.removePartial(tenantId: tenantId, id: id, multipartId: multipartId) }
    }

    /// See ``BlobStore/list()``.
    package func list() async throws -> [BlobEntry] {
        try await BlobMetrics.timed(.list) { try await base.list() }
    }

    /// See ``BlobStore/listUnfinished()``.
    package func listUnfinished() async throws -> [UnfinishedPiece] {
        try await BlobMetrics.timed(.list) { try await base.listUnfinished() }
    }

    /// See ``BlobStore/removeUnfinished(_:)``.
    package func removeUnfinished(_ piece: UnfinishedPiece) async throws {
        try await BlobMetrics.timed(.delete) { try await base.removeUnfinished(piece) }
    }

    /// See ``BlobStore/checkReachable()``; not measured (readiness probes would drown the rest).
    package func checkReachable() async throws {
        try await base.checkReachable()
    }
}

/// The blob-store metrics of ``MeteredBlobStore``.
package enum BlobMetrics {
    /// The operations measured (a closed set: the label stays bounded).
    package enum Operation: String, Sendable, CaseIterable {
        /// A streamed write.
        case write
        /// Opening a (ranged) read.
        case read
        /// A size lookup.
        case size
        /// A delete.
        case delete
        /// Adopting a local file.
        case adopt
        /// Copying a blob to local scratch.
        case copy
        /// Listing the store (the orphan sweeper).
        case list
        /// One PATCH's append to an unfinished upload.
        case append
        /// Completing an unfinished upload into a blob.
        case complete
    }

    /// Runs `body` as one `operation`, recording its duration and whether it failed.
    static func timed<R>(_ operation: Operation, _ body: () async throws -> R) async throws -> R {
        let started = ContinuousClock.now
        defer {
            let elapsed = (ContinuousClock.now - started).components
            // Made per use: metrics made before the Prometheus bootstrap would stay no-ops.
            Timer(label: "cairn_blob_operation_seconds", dimensions: [("operation", operation.rawValue)], preferredDisplayUnit: .seconds)
                .recordNanoseconds(elapsed.seconds * 1_000_000_000 + elapsed.attoseconds / 1_000_000_000)
        }
        do {
            return try await body()
        } catch let error as BlobTooLarge {
            throw error
        } catch {
            Counter(label: "cairn_blob_operation_errors_total", dimensions: [("operation", operation.rawValue)]).increment()
            throw error
        }
    }

    /// Publishes a zero error count for every operation, so the series exist from start-up.
    package static func publishAll() {
        for operation in Operation.allCases {
            Counter(label: "cairn_blob_operation_errors_total", dimensions: [("operation", operation.rawValue)]).increment(by: 0)
        }
    }
}
