import Crypto
import Foundation
package import NIOCore
package import NIOFileSystem

#if canImport(Glibc)
    import Glibc
#else
    import Darwin
#endif

/// Where uploaded bytes live: the local file system (one node, or several on one mounted
/// volume) or an S3-compatible object store. Blobs are named by tenant and file id, never by the
/// user's file name, so a name such as `../../etc/passwd` is only ever a label. Readers and
/// writers stream; no local path of the store is handed out.
package protocol BlobStore: Sendable {
    /// Streams `body` into the blob `id` of `tenantId`, visible only once complete (nothing of a
    /// failed or cancelled write stays), with its SHA-256 computed on the way.
    /// - Parameter maxBytes: more than this many bytes aborts the write (nothing is kept).
    /// - Returns: the size in bytes and the lower-case hex SHA-256.
    /// - Throws: `BlobTooLarge` past `maxBytes`; `BlobStoreUnavailable` when the store cannot be
    ///   reached; the body's errors.
    func write<Body: AsyncSequence & Sendable>(tenantId: String, id: String, body: Body, maxBytes: Int64) async throws -> (
        size: Int64, sha256: String
    ) where Body.Element == ByteBuffer

    /// The bytes of a blob, or of `range` of it, streamed.
    /// - Throws: `BlobNotFound`; `BlobStoreUnavailable`. Reading the sequence may throw either too.
    func read(tenantId: String, id: String, range: Range<Int64>?) async throws -> BlobChunks

    /// A blob's size in bytes, or nil when there is none.
    /// - Throws: `BlobStoreUnavailable`.
    func size(tenantId: String, id: String) async throws -> Int64?

    /// Deletes a blob; a missing one is not an error.
    /// - Throws: `BlobStoreUnavailable`.
    func delete(tenantId: String, id: String) async throws

    /// Makes a complete local file the blob `id` of `tenantId` (replacing a blob of that id),
    /// taking the file away from `path` (a pipeline's output, a finished tus upload): renamed on
    /// the file system, streamed into an object store and then removed.
    /// - Throws: the file system's error or `BlobStoreUnavailable`; the file stays at `path` then.
    func adopt(tenantId: String, id: String, movingFileAt path: FilePath) async throws

    /// Puts a copy of the blob in the local file `path` (scratch space of this node): a hard link
    /// where the store shares the file system, a streamed download otherwise. The copy appears
    /// whole (written beside `path`, then renamed) or not at all.
    /// - Throws: `BlobNotFound`, `BlobStoreUnavailable`, the file system's errors.
    func copy(tenantId: String, id: String, toLocalFile path: FilePath) async throws

    /// Appends to the unfinished blob `id` (a tus upload's bytes, kept in the store so any node
    /// may take the next PATCH) from its last durable `state`: `body` writes through the writer
    /// it is given, whose `persist` stores the bytes and calls `commit` with each new state.
    /// Bytes written but never committed are not part of the blob.
    /// - Throws: `PartialBlobMissing` when the stored bytes do not match `state`;
    ///   `BlobStoreUnavailable`; `body`'s and `commit`'s errors.
    func appendPartial<R: Sendable>(
        tenantId: String, id: String, from state: PartialBlob, commit: @escaping PartialBlobCommit,
        _ body: (any PartialBlobWriter) async throws -> R
    ) async throws -> R

    /// Makes the unfinished blob in `state` (all its bytes received) the blob `id`, and removes
    /// what held it. Repeat it until the blob exists when it fails.
    /// - Throws: `PartialBlobMissing`; `BlobStoreUnavailable`; the file system's errors.
    func completePartial(tenantId: String, id: String, state: PartialBlob) async throws

    /// Removes everything of an unfinished blob (its partial file, or its multipart upload
    /// `multipartId` and tail object), whichever node wrote it; missing pieces are fine.
    /// - Throws: `BlobStoreUnavailable`.
    func removePartial(tenantId: String, id: String, multipartId: String?) async throws

    /// Every blob of the store with its size and last change (for the orphan sweeper), in no
    /// particular order; entries whose names are not blob names are left out.
    /// - Throws: `BlobStoreUnavailable`.
    func list() async throws -> [BlobEntry]

    /// The pieces of unfinished blobs the store holds (partial files; multipart uploads in
    /// progress and tail objects), for the orphan sweeper; names that are not blob names are
    /// left out.
    /// - Throws: `BlobStoreUnavailable`.
    func listUnfinished() async throws -> [UnfinishedPiece]

    /// Removes one piece listed by ``listUnfinished()`` and nothing else (a multipart upload is
    /// aborted; a tail object or partial file deleted); a missing one is fine.
    /// - Throws: `BlobStoreUnavailable`.
    func removeUnfinished(_ piece: UnfinishedPiece) async throws

    /// Whether the store answers (a cheap listing or a look at its folder), for readiness.
    /// - Throws: `BlobStoreUnavailable` when it does not.
    func checkReachable() async throws
}

/// One blob in a listing.
package struct BlobEntry: Sendable, Equatable {
    /// The tenant's id.
    package var tenantId: String
    /// The blob's id.
    package var id: String
    /// Its size in bytes.
    package var size: Int64
    /// When it was last written, epoch milliseconds.
    package var modifiedAt: Int64
}

/// One piece of an unfinished blob in a store: its partial file or tail object, or a
/// multipart upload in progress.
package struct UnfinishedPiece: Sendable, Equatable {
    /// The tenant's id.
    package var tenantId: String
    /// The blob's (upload's) id.
    package var id: String
    /// The multipart upload's id; nil for a partial file or tail object.
    package var multipartId: String?
    /// When it was started (a multipart upload) or last written, epoch milliseconds.
    package var modifiedAt: Int64
}

/// Whether a name is an id the stores use (UUIDs: lower-case hex and `-`).
func isBlobName(_ part: some StringProtocol) -> Bool {
    !part.isEmpty && part.utf8.allSatisfy { $0 == 0x2D || (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }
}

/// Thrown by `BlobStore.write` when the body exceeds its limit.
package struct BlobTooLarge: Error, Sendable {
    /// The limit that was exceeded, in bytes.
    package var limit: Int64
}

/// Thrown when the blob asked for does not exist.
package struct BlobNotFound: Error, Sendable {
    /// The blob's id.
    package var id: String
}

/// Thrown when the store cannot be reached or fails (a 5xx, a refused connection, a timeout):
/// the caller answers 503 or retries later. `reason` names no secret.
package struct BlobStoreUnavailable: Error, Sendable, CustomStringConvertible {
    /// What failed, for logs.
    package var reason: String
    /// Creates the error.
    package init(reason: String) {
        self.reason = reason
    }
    /// The reason.
    package var description: String { "blob store unavailable: \(reason)" }
}

/// The bytes of one blob read, as an async sequence of buffers (at most 1 MiB each from the file
/// system; as the network delivers them from an object store). Iterate it once.
package struct BlobChunks: AsyncSequence, Sendable {
    /// A buffer of the blob's bytes, in order.
    package typealias Element = ByteBuffer

    let makeNext: @Sendable () -> (() async throws -> ByteBuffer?)

    /// A sequence whose iterator calls the function `makeNext` returns until it answers nil.
    package init(_ makeNext: @escaping @Sendable () -> (() async throws -> ByteBuffer?)) {
        self.makeNext = makeNext
    }

    /// No bytes.
    package static var empty: BlobChunks { BlobChunks { { nil } } }

    /// The iterator.
    package struct AsyncIterator: AsyncIteratorProtocol {
        let nextChunk: () async throws -> ByteBuffer?
        /// The next buffer, nil at the end.
        package mutating func next() async throws -> ByteBuffer? { try await nextChunk() }
    }

    /// Starts reading.
    package func makeAsyncIterator() -> AsyncIterator { AsyncIterator(nextChunk: makeNext()) }
}

/// Streams an async sequence of buffers into a SHA-256 and a byte count, refusing more than a
/// limit; shared by the stores' writes.
struct HashingCounter {
    var hasher = SHA256()
    var size: Int64 = 0
    let maxBytes: Int64

    /// Counts and hashes one buffer.
    /// - Throws: `BlobTooLarge` once the total passes `maxBytes`.
    mutating func add(_ chunk: ByteBuffer) throws {
        size += Int64(chunk.readableBytes)
        if size > maxBytes { throw BlobTooLarge(limit: maxBytes) }
        chunk.withUnsafeReadableBytes { hasher.update(bufferPointer: $0) }
    }

    /// The lower-case hex digest.
    func digest() -> String { SigV4Signer.hex(hasher.finalize()) }
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
    static func checked(_ part: String) -> String {
        precondition(!part.isEmpty && part.utf8.allSatisfy { $0 == 0x2D || (0x30...0x39).contains($0) || (0x61...0x66).contains($0) })
        return part
    }

    /// The blob's path (inside this store only).
    func path(tenantId: String, id: String) -> FilePath {
        root.appending(Self.checked(tenantId)).appending(Self.checked(id))
    }

    /// Streams the body to disk (NIOFileSystem's transactional creation: a hidden temporary
    /// file renamed into place on success, removed on failure), fsyncs it, and hashes it.
    package func write<Body: AsyncSequence & Sendable>(tenantId: String, id: String, body: Body, maxBytes: Int64) async throws -> (
        size: Int64, sha256: String
    ) where Body.Element == ByteBuffer {
        let directory = root.appending(Self.checked(tenantId))
        try await FileSystem.shared.createDirectory(at: directory, withIntermediateDirectories: true, permissions: [.ownerReadWriteExecute])
        var counter = HashingCounter(maxBytes: maxBytes)
        try await FileSystem.shared.withFileHandle(
            forWritingAt: directory.appending(Self.checked(id)), options: .newFile(replaceExisting: false, permissions: [.ownerReadWrite])
        ) { handle in
            try await handle.withBufferedWriter(capacity: .mebibytes(1)) { writer in
                for try await chunk in body {
                    try counter.add(chunk)
                    try await writer.write(contentsOf: chunk)
                }
                try await writer.flush()
            }
            try await handle.synchronize()
        }
        return (counter.size, counter.digest())
    }

    /// Reads the file a chunk of 1 MiB at a time, each from a handle of its own (so a reader
    /// that stops early leaves no open file behind).
    package func read(tenantId: String, id: String, range: Range<Int64>?) async throws -> BlobChunks {
        let path = path(tenantId: tenantId, id: id)
        guard let info = try await FileSystem.shared.info(forFileAt: path) else { throw BlobNotFound(id: id) }
        let wanted = range ?? 0..<info.size
        return BlobChunks {
            var position = wanted.lowerBound
            return {
                guard position < wanted.upperBound else { return nil }
                let length = min(Int64(1 << 20), wanted.upperBound - position)
                let chunk = try await FileSystem.shared.withFileHandle(forReadingAt: path) { handle in
                    try await handle.readChunk(fromAbsoluteOffset: position, length: .bytes(length))
                }
                guard chunk.readableBytes > 0 else { throw BlobNotFound(id: id) }
                position += Int64(chunk.readableBytes)
                return chunk
            }
        }
    }

    /// The file's size.
    package func size(tenantId: String, id: String) async throws -> Int64? {
        try await FileSystem.shared.info(forFileAt: path(tenantId: tenantId, id: id))?.size
    }

    /// Renames the file into place (the work folders and the blobs share the data directory's
    /// file system).
    package func adopt(tenantId: String, id: String, movingFileAt source: FilePath) async throws {
        let directory = root.appending(Self.checked(tenantId))
        try await FileSystem.shared.createDirectory(at: directory, withIntermediateDirectories: true, permissions: [.ownerReadWriteExecute])
        let target = directory.appending(Self.checked(id))
        _ = try? await FileSystem.shared.removeItem(at: target, strategy: .platformDefault, recursively: false)
        try await FileSystem.shared.moveItem(at: source, to: target)
    }

    /// A hard link (blobs never change once written: a replacement is a new file renamed over
    /// the name), or a copy when the target is on another file system.
    package func copy(tenantId: String, id: String, toLocalFile target: FilePath) async throws {
        let source = path(tenantId: tenantId, id: id)
        guard try await FileSystem.shared.info(forFileAt: source) != nil else { throw BlobNotFound(id: id) }
        _ = try? await FileSystem.shared.removeItem(at: target, strategy: .platformDefault, recursively: false)
        // One quick system call (no NIOFileSystem counterpart); it fails across file systems.
        if link(source.string, target.string) != 0 {
            let temporary = FilePath(target.string + ".partial")
            _ = try? await FileSystem.shared.removeItem(at: temporary, strategy: .platformDefault, recursively: false)
            try await FileSystem.shared.copyItem(at: source, to: temporary)
            try await FileSystem.shared.moveItem(at: temporary, to: target)
        }
    }

    /// Removes the blob file.
    package func delete(tenantId: String, id: String) async throws {
        _ = try await FileSystem.shared.removeItem(at: path(tenantId: tenantId, id: id), strategy: .platformDefault, recursively: false)
    }

    /// Walks `<root>/<tenant>/<id>`; hidden temporary files of writes in progress are left out.
    package func list() async throws -> [BlobEntry] {
        let root = self.root.string
        var entries: [BlobEntry] = []
        let manager = FileManager.default
        for tenant in (try? manager.contentsOfDirectory(atPath: root)) ?? [] where isBlobName(tenant) {
            for id in (try? manager.contentsOfDirectory(atPath: root + "/" + tenant)) ?? [] where isBlobName(id) {
                guard let attributes = try? manager.attributesOfItem(atPath: root + "/" + tenant + "/" + id) else { continue }
                let modified = (attributes[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0
                entries.append(
                    BlobEntry(
                        tenantId: tenant, id: id, size: (attributes[.size] as? NSNumber)?.int64Value ?? 0, modifiedAt: Int64(modified * 1000)))
            }
        }
        return entries
    }

    /// The root is a folder, or can become one (a new data directory).
    package func checkReachable() async throws {
        do {
            try await FileSystem.shared.createDirectory(at: root, withIntermediateDirectories: true, permissions: [.ownerReadWriteExecute])
        } catch {
            throw BlobStoreUnavailable(reason: "the blob folder cannot be created")
        }
    }
}

extension BlobStore {
    /// A whole blob in memory, for small files only (at most `limit` bytes).
    /// - Throws: `BlobNotFound`, `BlobStoreUnavailable`, `BlobTooLarge` past `limit`.
    package func read(tenantId: String, id: String, limit: Int) async throws -> ByteBuffer {
        var collected = ByteBuffer()
        for try await chunk in try await read(tenantId: tenantId, id: id, range: nil) {
            guard collected.readableBytes + chunk.readableBytes <= limit else { throw BlobTooLarge(limit: Int64(limit)) }
            collected.writeImmutableBuffer(chunk)
        }
        return collected
    }
}
