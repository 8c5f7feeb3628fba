import Crypto
import Metrics
package import NIOCore
package import NIOFileSystem

/// Where uploaded bytes live. Blobs are named by tenant and file id, never by the user's file
/// name, so a name such as `../../etc/passwd` is only ever a label.
package protocol BlobStore: Sendable {
    /// Streams `body` into the blob `id` of `tenantId`: visible only once complete (written to a
    /// temporary path, synced, renamed), with its SHA-256 computed on the way.
    /// - Parameter maxBytes: more than this many bytes aborts the write (nothing is kept).
    /// - Returns: the size in bytes and the lower-case hex SHA-256.
    /// - Throws: `BlobTooLarge` past `maxBytes`; the body's or the file system's errors.
    func write<Body: AsyncSequence & Sendable>(tenantId: String, id: String, body: Body, maxBytes: Int64) async throws -> (
        size: Int64, sha256: String
    ) where Body.Element == ByteBuffer

    /// The local path of a blob, for streaming readers and parsers.
    func path(tenantId: String, id: String) -> FilePath

    /// Deletes a blob; a missing one is not an error.
    func delete(tenantId: String, id: String) async throws

    /// Makes a complete, synced local file the blob `id` of `tenantId` (replacing a blob of
    /// that id), taking the file away from `path` (a pipeline's output).
    /// - Throws: the file system's error; the file stays at `path` then.
    func adopt(tenantId: String, id: String, movingFileAt path: FilePath) async throws
}

/// Thrown by `BlobStore.write` when the body exceeds its limit.
package struct BlobTooLarge: Error, Sendable {
    /// The limit that was exceeded, in bytes.
    package var limit: Int64
}

/// Blobs under `<root>/<tenantId>/<fileId>` on the local disk (the data directory's `blobs`).
package struct LocalBlobStore: BlobStore {
    /// The folder holding one folder per tenant.
    package let root: FilePath

    /// Creates a store rooted at `root` (created on first write).
    package init(root: FilePath) {
        self.root = root
    }

    /// Creates a store rooted at the folder `path`.
    package init(rootPath path: String) {
        self.root = FilePath(path)
    }

    /// Ids are server-made UUIDv7s; anything else could step outside the root, so it is refused.
    private static func checked(_ part: String) -> String {
        precondition(!part.isEmpty && part.utf8.allSatisfy { $0 == 0x2D || (0x30...0x39).contains($0) || (0x61...0x66).contains($0) })
        return part
    }

    /// The blob's path.
    package func path(tenantId: String, id: String) -> FilePath {
        root.appending(Self.checked(tenantId)).appending(Self.checked(id))
    }

    /// Streams the body to disk (NIOFileSystem's transactional creation: a hidden temporary
    /// file renamed into place on success, removed on failure), fsyncs it, and hashes it.
    package func write<Body: AsyncSequence & Sendable>(tenantId: String, id: String, body: Body, maxBytes: Int64) async throws -> (
        size: Int64, sha256: String
    ) where Body.Element == ByteBuffer {
        try await BlobMetrics.timed(.write) { try await writeUnmeasured(tenantId: tenantId, id: id, body: body, maxBytes: maxBytes) }
    }

    private func writeUnmeasured<Body: AsyncSequence & Sendable>(tenantId: String, id: String, body: Body, maxBytes: Int64) async throws -> (
        size: Int64, sha256: String
    ) where Body.Element == ByteBuffer {
        let directory = root.appending(Self.checked(tenantId))
        try await FileSystem.shared.createDirectory(at: directory, withIntermediateDirectories: true, permissions: [.ownerReadWriteExecute])
        var hasher = SHA256()
        var size: Int64 = 0
        try await FileSystem.shared.withFileHandle(
            forWritingAt: directory.appending(Self.checked(id)), options: .newFile(replaceExisting: false, permissions: [.ownerReadWrite])
        ) { handle in
            try await handle.withBufferedWriter(capacity: .mebibytes(1)) { writer in
                for try await chunk in body {
                    size += Int64(chunk.readableBytes)
                    if size > maxBytes { throw BlobTooLarge(limit: maxBytes) }
                    chunk.withUnsafeReadableBytes { hasher.update(bufferPointer: $0) }
                    try await writer.write(contentsOf: chunk)
                }
                try await writer.flush()
            }
            try await handle.synchronize()
        }
        let digest = hasher.finalize().map { byte in
            let hex = Array("0123456789abcdef".utf8)
            return String(decoding: [hex[Int(byte >> 4)], hex[Int(byte & 0x0F)]], as: UTF8.self)
        }.joined()
        return (size, digest)
    }

    /// Renames the file into place (the work folder and the blobs share the data directory's
    /// file system).
    package func adopt(tenantId: String, id: String, movingFileAt source: FilePath) async throws {
        try await BlobMetrics.timed(.adopt) { try await adoptUnmeasured(tenantId: tenantId, id: id, movingFileAt: source) }
    }

    private func adoptUnmeasured(tenantId: String, id: String, movingFileAt source: FilePath) async throws {
        let directory = root.appending(Self.checked(tenantId))
        try await FileSystem.shared.createDirectory(at: directory, withIntermediateDirectories: true, permissions: [.ownerReadWriteExecute])
        let target = directory.appending(Self.checked(id))
        _ = try? await FileSystem.shared.removeItem(at: target, strategy: .platformDefault, recursively: false)
        try await FileSystem.shared.moveItem(at: source, to: target)
    }

    /// Removes the blob file.
    package func delete(tenantId: String, id: String) async throws {
        try await BlobMetrics.timed(.delete) {
            _ = try await FileSystem.shared.removeItem(at: path(tenantId: tenantId, id: id), strategy: .platformDefault, recursively: false)
        }
    }
}

extension BlobStore {
    /// A whole blob in memory, for small files only (at most `limit` bytes).
    /// - Throws: the file system's error, also when the blob is larger than `limit`.
    package func read(tenantId: String, id: String, limit: Int) async throws -> ByteBuffer {
        try await BlobMetrics.timed(.read) {
            try await FileSystem.shared.withFileHandle(forReadingAt: path(tenantId: tenantId, id: id)) { handle in
                try await handle.readToEnd(maximumSizeAllowed: .bytes(Int64(limit)))
            }
        }
    }
}

/// Blob-store latency and errors by operation: `cairn_blob_operation_seconds{operation}`
/// (histogram of every call, failed or not) and `cairn_blob_operation_errors_total{operation}`
/// (calls that threw, except a body over its limit, which is the client's doing). Streaming
/// reads by path (downloads, parsers) are the file system's and are not counted here.
package enum BlobMetrics {
    /// The operations measured (a closed set: the label stays bounded).
    package enum Operation: String, Sendable, CaseIterable {
        /// ``BlobStore/write(tenantId:id:body:maxBytes:)``.
        case write
        /// ``BlobStore/read(tenantId:id:limit:)``.
        case read
        /// ``BlobStore/delete(tenantId:id:)``.
        case delete
        /// ``BlobStore/adopt(tenantId:id:movingFileAt:)``.
        case adopt
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
