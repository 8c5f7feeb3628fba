import AsyncHTTPClient
import Logging
package import NIOCore
package import NIOFileSystem

/// Blobs as objects `<prefix><tenantId>/<fileId>` of one bucket of an S3-compatible store.
///
/// Writes stream: the body is cut into parts of `partSize` bytes sent as a multipart upload
/// (one part on the wire while the next fills, so at most two parts are in memory), hashed on
/// the way; a body smaller than one part is one `PutObject`. A write that fails, is too large or
/// is cancelled aborts its multipart upload, so no object and no parts stay. Reads stream a
/// `GetObject`, with `Range` for part of a blob.
package struct S3BlobStore: BlobStore {
    /// The client.
    package let client: S3Client
    /// The bucket.
    package let bucket: String
    /// The key prefix: empty, or ending in `/`.
    package let prefix: String
    /// Bytes per multipart part (S3 needs at least 5 MiB for every part but the last).
    package let partSize: Int

    /// The smallest part S3 accepts (but for the last).
    package static let minimumPartSize = 5 << 20

    /// Creates a store; `prefix` gets a trailing `/` when it has none.
    package init(client: S3Client, bucket: String, prefix: String, partSize: Int = 8 << 20) {
        self.client = client
        self.bucket = bucket
        let trimmed = prefix.drop { $0 == "/" }
        self.prefix = trimmed.isEmpty || trimmed.hasSuffix("/") ? String(trimmed) : trimmed + "/"
        self.partSize = max(partSize, Self.minimumPartSize)
    }

    /// The object key of a blob.
    package func key(tenantId: String, id: String) -> String {
        prefix + LocalBlobStore.checked(tenantId) + "/" + LocalBlobStore.checked(id)
    }

    /// Runs one store operation, turning the store's failures into `BlobStoreUnavailable`.
    func available<T>(_ operation: () async throws -> T) async throws -> T {
        do {
            return try await operation()
        } catch let error as S3Error {
            throw BlobStoreUnavailable(reason: error.description)
        }
    }

    package func write<Body: AsyncSequence & Sendable>(tenantId: String, id: String, body: Body, maxBytes: Int64) async throws -> (
        size: Int64, sha256: String
    ) where Body.Element == ByteBuffer {
        let key = key(tenantId: tenantId, id: id)
        let client = self.client
        let bucket = self.bucket
        var counter = HashingCounter(maxBytes: maxBytes)
        var part = ByteBuffer()
        var uploadId: String?
        var etags: [(number: Int, etag: String)] = []
        var inFlight: Task<(number: Int, etag: String), any Error>?
        // Sends the filled part while the body goes on filling the next one.
        func send(_ buffer: ByteBuffer) async throws {
            if uploadId == nil { uploadId = try await available { try await client.createMultipartUpload(bucket: bucket, key: key) } }
            if let previous = inFlight { etags.append(try await available { try await previous.value }) }
            let number = etags.count + 1
            let id = uploadId!
            inFlight = Task { (number, try await client.uploadPart(bucket: bucket, key: key, uploadId: id, number: number, body: buffer)) }
        }
        do {
            for try await element in body {
                try counter.add(element)
                var chunk = element
                while chunk.readableBytes > 0 {
                    if part.capacity < partSize { part.reserveCapacity(partSize) }
                    part.writeImmutableBuffer(chunk.readSlice(length: min(chunk.readableBytes, partSize - part.readableBytes))!)
                    if part.readableBytes == partSize {
                        try await send(part)
                        part = ByteBuffer()
                    }
                }
            }
            try Task.checkCancellation()
            if uploadId == nil {
                try await available { try await client.putObject(bucket: bucket, key: key, body: part) }
            } else {
                if part.readableBytes > 0 { try await send(part) }
                if let last = inFlight {
                    etags.append(try await available { try await last.value })
                    inFlight = nil
                }
                let id = uploadId!
                let parts = etags
                try await available { try await client.completeMultipartUpload(bucket: bucket, key: key, uploadId: id, parts: parts) }
            }
            return (counter.size, counter.digest())
        } catch {
            if let uploadId {
                let pending = inFlight
                // Not in this (possibly cancelled) task: the abort must go out regardless.
                await Task {
                    pending?.cancel()
                    _ = try? await pending?.value
                    if (try? await client.abortMultipartUpload(bucket: bucket, key: key, uploadId: uploadId)) == nil {
                        Self.abortLater(client: client, bucket: bucket, key: key, uploadId: uploadId)
                    }
                }.value
            }
            throw error
        }
    }

    /// Retries the abort of a failed write's multipart upload in the background (after 1, 2, 4 …
    /// up to 60 s, for about 10 minutes): the write usually failed because the store went away,
    /// so its abort failed too, and the parts would otherwise stay until the orphan sweep's
    /// one-day limit.
    static func abortLater(client: S3Client, bucket: String, key: String, uploadId: String) {
        Task.detached {
            var delay = 1
            var waited = 0
            while waited < 600 {
                try? await Task.sleep(for: .seconds(delay))
                waited += delay
                if (try? await client.abortMultipartUpload(bucket: bucket, key: key, uploadId: uploadId)) != nil { return }
                delay = min(delay * 2, 60)
            }
            Logger(label: "cairn.blobs").warning(
                "a failed write's multipart upload could not be aborted; the orphan sweep removes it", metadata: ["key": .string(key)])
        }
    }

    package func read(tenantId: String, id: String, range: Range<Int64>?) async throws -> BlobChunks {
        if let range, range.isEmpty { return .empty }
        let body: HTTPClientResponseBodyReader
        do {
            body = HTTPClientResponseBodyReader(try await client.getObject(bucket: bucket, key: key(tenantId: tenantId, id: id), range: range).body)
        } catch let error as S3Error where error.status == 404 && error.code != "NoSuchBucket" {
            throw BlobNotFound(id: id)
        } catch let error as S3Error {
            // A missing bucket (also a 404) is a store nobody can use, not a missing object.
            throw BlobStoreUnavailable(reason: error.description)
        }
        return BlobChunks {
            let iterator = body.iterator()
            return { try await iterator.next() }
        }
    }

    package func size(tenantId: String, id: String) async throws -> Int64? {
        try await available { try await client.headObject(bucket: bucket, key: key(tenantId: tenantId, id: id)) }
    }

    package func delete(tenantId: String, id: String) async throws {
        try await available { try await client.deleteObject(bucket: bucket, key: key(tenantId: tenantId, id: id)) }
    }

    /// Streams the file into the store, then removes it.
    package func adopt(tenantId: String, id: String, movingFileAt path: FilePath) async throws {
        _ = try await FileSystem.shared.withFileHandle(forReadingAt: path) { handle in
            try await write(tenantId: tenantId, id: id, body: handle.readChunks(chunkLength: .mebibytes(1)), maxBytes: .max)
        }
        _ = try? await FileSystem.shared.removeItem(at: path, strategy: .platformDefault, recursively: false)
    }

    /// Streams the object into a file created beside `path` and renamed over it when complete.
    package func copy(tenantId: String, id: String, toLocalFile path: FilePath) async throws {
        let chunks = try await read(tenantId: tenantId, id: id, range: nil)
        try await FileSystem.shared.withFileHandle(forWritingAt: path, options: .newFile(replaceExisting: true, permissions: [.ownerReadWrite])) {
            handle in
            try await handle.withBufferedWriter(capacity: .mebibytes(1)) { writer in
                for try await chunk in chunks { try await writer.write(contentsOf: chunk) }
                try await writer.flush()
            }
        }
    }

    /// Every object under the prefix named `<tenant>/<id>`.
    package func list() async throws -> [BlobEntry] {
        try await listAll().compactMap { object in
            let parts = object.key.dropFirst(prefix.count).split(separator: "/", omittingEmptySubsequences: false)
            guard parts.count == 2, isBlobName(parts[0]), isBlobName(parts[1]) else { return nil }
            return BlobEntry(tenantId: String(parts[0]), id: String(parts[1]), size: object.size, modifiedAt: object.lastModified ?? 0)
        }
    }

    /// One listing of at most one key under the prefix.
    package func checkReachable() async throws {
        _ = try await available { try await client.listObjects(bucket: bucket, prefix: prefix, maxKeys: 1) }
    }

    /// The keys of every object under the prefix with their sizes (for the orphan sweeper and tests).
    /// - Throws: `BlobStoreUnavailable`.
    package func listAll() async throws -> [S3ObjectSummary] {
        var all: [S3ObjectSummary] = []
        var token: String?
        repeat {
            let page = try await available { try await client.listObjects(bucket: bucket, prefix: prefix, continuation: token) }
            all += page.objects
            token = page.next
        } while token != nil
        return all
    }
}

/// A GetObject body read once, its transport errors turned into `BlobStoreUnavailable`.
struct HTTPClientResponseBodyReader: Sendable {
    let body: S3Client.ResponseBody

    init(_ body: S3Client.ResponseBody) {
        self.body = body
    }

    /// A fresh iterator over the body.
    func iterator() -> Iterator { Iterator(body.makeAsyncIterator()) }

    /// Holds the body's iterator between calls.
    final class Iterator {
        var base: S3Client.ResponseBody.AsyncIterator

        init(_ base: S3Client.ResponseBody.AsyncIterator) {
            self.base = base
        }

        /// The next buffer: the network's small reads gathered up to 256 KiB, so a consumer
        /// (an HTTP response) writes a few large buffers rather than many small ones.
        func next() async throws -> ByteBuffer? {
            do {
                guard var gathered = try await base.next() else { return nil }
                while gathered.readableBytes < 256 << 10, let more = try await base.next() {
                    gathered.writeImmutableBuffer(more)
                }
                return gathered
            } catch is CancellationError {
                throw CancellationError()
            } catch {
                throw BlobStoreUnavailable(reason: "the object's body broke off: \(S3Client.describe(error))")
            }
        }
    }
}
