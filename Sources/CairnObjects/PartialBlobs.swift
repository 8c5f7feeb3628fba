import Foundation
package import NIOCore
import NIOFileSystem

/// What a store holds of an unfinished, resumable blob (a tus upload), as its owner records it
/// in the database with the upload's offset: the bytes durably stored and, on an object store,
/// the multipart upload and its parts. Any node can append to, complete or remove the blob from
/// this state alone.
package struct PartialBlob: Sendable, Equatable {
    /// Bytes durably stored (the upload's offset).
    package var size: Int64
    /// The object store's multipart upload, once one was started.
    package var multipartId: String?
    /// The parts of the multipart upload, in order; the bytes past them (`size - partsSize`)
    /// are the tail, kept as an object of its own.
    package var parts: [Part]

    /// One uploaded part.
    package struct Part: Sendable, Equatable, Codable {
        /// 1...10000.
        package var number: Int
        /// The ETag the store answered.
        package var etag: String
        /// Its size in bytes.
        package var size: Int64
    }

    /// Creates a state; the default is an empty blob.
    package init(size: Int64 = 0, multipartId: String? = nil, parts: [Part] = []) {
        self.size = size
        self.multipartId = multipartId
        self.parts = parts
    }

    /// The bytes in `parts`.
    package var partsSize: Int64 { parts.reduce(0) { $0 + $1.size } }
}

/// Thrown when the stored bytes of a partial blob are not what its state says (removed, or
/// left on a node's own disk by an older version): the upload cannot go on.
package struct PartialBlobMissing: Error, Sendable {
    /// The blob's id.
    package var id: String
}

/// Records a new durable state of a partial blob (with the upload's offset, atomically);
/// throws when the caller may no longer write (its lease was lost).
package typealias PartialBlobCommit = @Sendable (PartialBlob) async throws -> Void

/// One append to a partial blob (one PATCH), from its last durable state. Use it only inside
/// the ``BlobStore/appendPartial(tenantId:id:from:commit:_:)`` call that handed it out.
package protocol PartialBlobWriter: AnyObject {
    /// Bytes taken so far (stored or buffered), counted from the blob's start.
    var written: Int64 { get }
    /// The last state committed (the one appended to, until a commit).
    var durable: PartialBlob { get }
    /// Takes the next bytes; may store some of them, but commits nothing.
    func write(_ chunk: ByteBuffer) async throws
    /// Makes bytes durable and commits the state that holds them (at least one commit, the
    /// last with the final state). `all` stores every byte taken; otherwise only what is cheap
    /// to make durable now (the file system: everything; an object store: its full parts).
    func persist(all: Bool) async throws
}

extension LocalBlobStore {
    /// The file of an unfinished blob, `<root>/<tenantId>/<id>.part`: beside the blobs, so every
    /// node that mounts the store's folder appends to the same file.
    func partialPath(tenantId: String, id: String) -> FilePath {
        root.appending(Self.checked(tenantId)).appending(Self.checked(id) + ".part")
    }

    /// Opens the partial file (created when the state is empty), cut to the durable size: bytes
    /// of a PATCH that failed after its last commit are not part of the blob.
    package func appendPartial<R: Sendable>(
        tenantId: String, id: String, from state: PartialBlob, commit: @escaping PartialBlobCommit,
        _ body: (any PartialBlobWriter) async throws -> R
    ) async throws -> R {
        let path = partialPath(tenantId: tenantId, id: id)
        if state.size > 0, try await FileSystem.shared.info(forFileAt: path) == nil { throw PartialBlobMissing(id: id) }
        try await FileSystem.shared.createDirectory(
            at: path.removingLastComponent(), withIntermediateDirectories: true, permissions: [.ownerReadWriteExecute])
        return try await FileSystem.shared.withFileHandle(
            forWritingAt: path, options: .modifyFile(createIfNecessary: true, permissions: [.ownerReadWrite])
        ) { handle in
            try await handle.resize(to: .bytes(state.size))
            return try await body(LocalPartialWriter(handle: handle, state: state, commit: commit))
        }
    }

    /// Cuts the partial file to the durable size, fsyncs it and renames it into the blob's place.
    package func completePartial(tenantId: String, id: String, state: PartialBlob) async throws {
        let path = partialPath(tenantId: tenantId, id: id)
        guard try await FileSystem.shared.info(forFileAt: path) != nil else { throw PartialBlobMissing(id: id) }
        try await FileSystem.shared.withFileHandle(forWritingAt: path, options: .modifyFile(createIfNecessary: false, permissions: nil)) { handle in
            try await handle.resize(to: .bytes(state.size))
            try await handle.synchronize()
        }
        try await FileSystem.shared.moveItem(at: path, to: self.path(tenantId: tenantId, id: id))
    }

    /// Removes the partial file; a missing one is fine.
    package func removePartial(tenantId: String, id: String, multipartId: String?) async throws {
        _ = try await FileSystem.shared.removeItem(at: partialPath(tenantId: tenantId, id: id), strategy: .platformDefault, recursively: false)
    }

    /// Every partial file, `<root>/<tenant>/<id>.part`.
    package func listUnfinished() async throws -> [UnfinishedPiece] {
        let root = self.root.string
        let manager = FileManager.default
        var pieces: [UnfinishedPiece] = []
        for tenant in (try? manager.contentsOfDirectory(atPath: root)) ?? [] where isBlobName(tenant) {
            for name in (try? manager.contentsOfDirectory(atPath: root + "/" + tenant)) ?? [] where name.hasSuffix(".part") {
                let id = name.dropLast(".part".count)
                guard isBlobName(id), let attributes = try? manager.attributesOfItem(atPath: root + "/" + tenant + "/" + name) else { continue }
                let modified = (attributes[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0
                pieces.append(UnfinishedPiece(tenantId: tenant, id: String(id), modifiedAt: Int64(modified * 1000)))
            }
        }
        return pieces
    }

    /// Removes the partial file.
    package func removeUnfinished(_ piece: UnfinishedPiece) async throws {
        try await removePartial(tenantId: piece.tenantId, id: piece.id, multipartId: nil)
    }
}

/// Appends at the end of the partial file; a commit follows an fsync.
final class LocalPartialWriter: PartialBlobWriter {
    let handle: WriteFileHandle
    let commit: PartialBlobCommit
    private(set) var written: Int64
    private(set) var durable: PartialBlob

    init(handle: WriteFileHandle, state: PartialBlob, commit: @escaping PartialBlobCommit) {
        self.handle = handle
        self.commit = commit
        self.written = state.size
        self.durable = state
    }

    func write(_ chunk: ByteBuffer) async throws {
        try await handle.write(contentsOf: chunk, toAbsoluteOffset: written)
        written += Int64(chunk.readableBytes)
    }

    func persist(all: Bool) async throws {
        try await handle.synchronize()
        let state = PartialBlob(size: written)
        try await commit(state)
        durable = state
    }
}

extension S3BlobStore {
    /// The tail object of an unfinished blob: the bytes past its full parts.
    package func tailKey(tenantId: String, id: String) -> String { key(tenantId: tenantId, id: id) + ".tail" }

    /// The first `length` bytes of the tail object.
    /// - Throws: `PartialBlobMissing` when it is missing or shorter.
    func readTail(tenantId: String, id: String, length: Int64) async throws -> ByteBuffer {
        var tail = ByteBuffer()
        guard length > 0 else { return tail }
        let body: HTTPClientResponseBodyReader
        do {
            body = HTTPClientResponseBodyReader(
                try await client.getObject(bucket: bucket, key: tailKey(tenantId: tenantId, id: id), range: 0..<length).body)
        } catch let error as S3Error where error.status == 404 || error.status == 416 {
            throw PartialBlobMissing(id: id)
        } catch let error as S3Error {
            throw BlobStoreUnavailable(reason: error.description)
        }
        let iterator = body.iterator()
        while let chunk = try await iterator.next() { tail.writeImmutableBuffer(chunk) }
        guard tail.readableBytes == length else { throw PartialBlobMissing(id: id) }
        return tail
    }

    /// Reads the committed tail, then appends: see ``S3PartialWriter``.
    package func appendPartial<R: Sendable>(
        tenantId: String, id: String, from state: PartialBlob, commit: @escaping PartialBlobCommit,
        _ body: (any PartialBlobWriter) async throws -> R
    ) async throws -> R {
        let tail = try await readTail(tenantId: tenantId, id: id, length: state.size - state.partsSize)
        return try await body(S3PartialWriter(store: self, tenantId: tenantId, id: id, state: state, tail: tail, commit: commit))
    }

    /// Sends the tail as the last part and completes the multipart upload (or, for a blob that
    /// never filled a part, puts the tail as the blob), then deletes the tail. Safe to repeat
    /// until the blob exists: the tail goes only once the blob is there.
    package func completePartial(tenantId: String, id: String, state: PartialBlob) async throws {
        let key = key(tenantId: tenantId, id: id)
        let tail = try await readTail(tenantId: tenantId, id: id, length: state.size - state.partsSize)
        try await available {
            if let multipartId = state.multipartId {
                var parts = state.parts.map { (number: $0.number, etag: $0.etag) }
                if tail.readableBytes > 0 {
                    let number = parts.count + 1
                    let etag = try await client.uploadPart(bucket: bucket, key: key, uploadId: multipartId, number: number, body: tail)
                    parts.append((number: number, etag: etag))
                }
                try await client.completeMultipartUpload(bucket: bucket, key: key, uploadId: multipartId, parts: parts)
            } else {
                try await client.putObject(bucket: bucket, key: key, body: tail)
            }
        }
        try? await available { try await client.deleteObject(bucket: bucket, key: tailKey(tenantId: tenantId, id: id)) }
    }

    /// The multipart uploads in progress under the prefix and the tail objects (`<id>.tail`).
    package func listUnfinished() async throws -> [UnfinishedPiece] {
        let uploads = try await available { try await client.listMultipartUploads(bucket: bucket, prefix: prefix) }
        // An upload the store does not date counts as started now: never aborted for want of a date.
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        var pieces = uploads.compactMap { upload -> UnfinishedPiece? in
            guard let (tenantId, id) = blobName(upload.key) else { return nil }
            return UnfinishedPiece(tenantId: tenantId, id: id, multipartId: upload.uploadId, modifiedAt: upload.initiated ?? now)
        }
        for object in try await listAll() where object.key.hasSuffix(".tail") {
            guard let (tenantId, id) = blobName(String(object.key.dropLast(".tail".count))) else { continue }
            pieces.append(UnfinishedPiece(tenantId: tenantId, id: id, modifiedAt: object.lastModified ?? 0))
        }
        return pieces
    }

    /// Aborts the multipart upload, or deletes the tail object.
    package func removeUnfinished(_ piece: UnfinishedPiece) async throws {
        let key = key(tenantId: piece.tenantId, id: piece.id)
        try await available {
            if let multipartId = piece.multipartId {
                try await client.abortMultipartUpload(bucket: bucket, key: key, uploadId: multipartId)
            } else {
                try await client.deleteObject(bucket: bucket, key: key + ".tail")
            }
        }
    }

    /// The tenant and blob id of `key` (`<prefix><tenant>/<id>`), when it is a blob's key.
    func blobName(_ key: String) -> (tenantId: String, id: String)? {
        guard key.hasPrefix(prefix) else { return nil }
        let parts = key.dropFirst(prefix.count).split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, isBlobName(parts[0]), isBlobName(parts[1]) else { return nil }
        return (String(parts[0]), String(parts[1]))
    }

    /// Aborts the multipart upload (its parts go, whichever node sent them) and deletes the tail.
    package func removePartial(tenantId: String, id: String, multipartId: String?) async throws {
        let key = key(tenantId: tenantId, id: id)
        try await available {
            if let multipartId { try await client.abortMultipartUpload(bucket: bucket, key: key, uploadId: multipartId) }
            try await client.deleteObject(bucket: bucket, key: tailKey(tenantId: tenantId, id: id))
        }
    }
}

/// Appends to a blob held as one multipart upload plus a tail object (as tusd's s3store does):
/// the committed tail and the new bytes are cut into parts of `partSize` bytes, and what is left
/// at the end of a PATCH becomes a part when it reaches S3's 5 MiB minimum, or else the new tail.
///
/// Crash safety: a part sent but not committed is ignored (the next PATCH sends its number
/// again, and completion names committed parts only). The parts are committed (the offset then
/// ends where they end) before a new tail is written, and a tail always starts where the
/// committed parts end, so the committed tail length names a prefix of the tail object
/// whatever step a node died at.
final class S3PartialWriter: PartialBlobWriter {
    let store: S3BlobStore
    let tenantId: String
    let id: String
    let commit: PartialBlobCommit
    private(set) var durable: PartialBlob
    /// Parts sent (committed or not), and the multipart upload.
    private var state: PartialBlob
    /// Bytes past `state.parts`: the committed tail, then what arrived.
    private var buffer: ByteBuffer
    /// Whether `buffer` differs from the tail object.
    private var tailChanged = false

    init(store: S3BlobStore, tenantId: String, id: String, state: PartialBlob, tail: ByteBuffer, commit: @escaping PartialBlobCommit) {
        self.store = store
        self.tenantId = tenantId
        self.id = id
        self.commit = commit
        self.durable = state
        self.state = state
        self.buffer = tail
    }

    var written: Int64 { state.partsSize + Int64(buffer.readableBytes) }

    func write(_ chunk: ByteBuffer) async throws {
        var chunk = chunk
        tailChanged = tailChanged || chunk.readableBytes > 0
        while chunk.readableBytes > 0 {
            let room = store.partSize - buffer.readableBytes
            buffer.writeImmutableBuffer(chunk.readSlice(length: min(room, chunk.readableBytes))!)
            if buffer.readableBytes >= store.partSize { try await sendPart() }
        }
    }

    /// Sends the buffer as the next part, starting the multipart upload first (committed at
    /// once, so any node can abort it).
    private func sendPart() async throws {
        let (client, bucket, key) = (store.client, store.bucket, store.key(tenantId: tenantId, id: id))
        if state.multipartId == nil {
            let multipartId = try await store.available { try await client.createMultipartUpload(bucket: bucket, key: key) }
            var recorded = durable
            recorded.multipartId = multipartId
            do {
                try await commit(recorded)
            } catch {
                try? await store.available { try await client.abortMultipartUpload(bucket: bucket, key: key, uploadId: multipartId) }
                throw error
            }
            durable = recorded
            state.multipartId = multipartId
        }
        let (number, body, uploadId) = (state.parts.count + 1, buffer, state.multipartId!)
        let etag = try await store.available {
            try await client.uploadPart(bucket: bucket, key: key, uploadId: uploadId, number: number, body: body)
        }
        state.parts.append(PartialBlob.Part(number: number, etag: etag, size: Int64(body.readableBytes)))
        buffer = ByteBuffer()
        tailChanged = true
    }

    func persist(all: Bool) async throws {
        if all && buffer.readableBytes >= S3BlobStore.minimumPartSize { try await sendPart() }
        if state.parts.count > durable.parts.count || !all {
            // The parts first, with no tail: a tail object written before a crash then names nothing.
            var parts = state
            parts.size = state.partsSize
            if !all && parts.parts == durable.parts { parts.size = durable.size }
            try await commit(parts)
            durable = parts
        }
        guard all else { return }
        let (client, bucket, tailKey) = (store.client, store.bucket, store.tailKey(tenantId: tenantId, id: id))
        if buffer.readableBytes > 0 && tailChanged {
            let body = buffer
            try await store.available { try await client.putObject(bucket: bucket, key: tailKey, body: body) }
        } else if buffer.readableBytes == 0 && tailChanged {
            // The old tail went into a part.
            try? await store.available { try await client.deleteObject(bucket: bucket, key: tailKey) }
        }
        tailChanged = false
        var final = state
        final.size = written
        try await commit(final)
        durable = final
    }
}
