import CairnHTTP
import CairnObjects
import CairnStorage
import Crypto
import Foundation
import HTTPTypes
package import Hummingbird
import NIOCore

extension UploadsController {
    /// `Upload-Checksum: <algorithm> <base64 digest>` of one request's body.
    package struct Checksum {
        var algorithm: String
        var digest: [UInt8]

        func makeHasher() -> ChunkHasher {
            switch algorithm {
            case "sha1": .sha1(Insecure.SHA1())
            case "md5": .md5(Insecure.MD5())
            default: .sha256(SHA256())
            }
        }
    }

    /// The hash functions `Tus-Checksum-Algorithm` advertises.
    enum ChunkHasher {
        case sha256(SHA256), sha1(Insecure.SHA1), md5(Insecure.MD5)

        mutating func update(_ buffer: ByteBuffer) {
            buffer.withUnsafeReadableBytes { bytes in
                switch self {
                case .sha256(var h):
                    h.update(bufferPointer: bytes)
                    self = .sha256(h)
                case .sha1(var h):
                    h.update(bufferPointer: bytes)
                    self = .sha1(h)
                case .md5(var h):
                    h.update(bufferPointer: bytes)
                    self = .md5(h)
                }
            }
        }

        func finalize() -> [UInt8] {
            switch self {
            case .sha256(let h): Array(h.finalize())
            case .sha1(let h): Array(h.finalize())
            case .md5(let h): Array(h.finalize())
            }
        }
    }

    /// - Throws: 400 `invalid_input` for an unknown algorithm or a digest that is not base64.
    package static func checksum(_ request: Request) throws -> Checksum? {
        guard let header = request.headers[Self.uploadChecksum] else { return nil }
        let parts = header.split(separator: " ", omittingEmptySubsequences: true)
        guard parts.count == 2, ["sha256", "sha1", "md5"].contains(parts[0].lowercased()), let digest = Data(base64Encoded: String(parts[1])) else {
            throw AppError.invalidField("Upload-Checksum", "must be '<sha256|sha1|md5> <base64 digest>'")
        }
        return Checksum(algorithm: parts[0].lowercased(), digest: Array(digest))
    }
}

/// One request body appended to an upload's partial blob at the upload's committed offset,
/// under the lease `token`, through the blob store's writer. Bytes are made durable before each
/// new offset is committed (every `checkpointBytes` or `checkpointMilliseconds`, and at the
/// end), so the offset never claims bytes the store does not hold, and a cut request keeps what
/// was durably received. With a checksum nothing is committed until the whole body matched.
struct TusAppend {
    let upload: TusUpload
    let token: String
    let checksum: UploadsController.Checksum?
    let uploads: UploadStore
    let writer: any PartialBlobWriter
    private var hasher: UploadsController.ChunkHasher?
    /// The offset the database holds.
    private var committed: Int64
    /// Received bytes not yet handed to the writer (up to 1 MiB).
    private var pending = ByteBuffer()
    private var leaseUntil: Int64
    private var lastCheckpoint: Int64
    /// `offset` at the last checkpoint.
    private var checkpointedOffset: Int64
    /// Whether the whole body matched `checksum`: only then may a checksummed body be committed.
    private var verified = false

    /// Prepares to append through `writer`, which starts at the upload's committed offset.
    init(upload: TusUpload, token: String, checksum: UploadsController.Checksum?, uploads: UploadStore, writer: any PartialBlobWriter) {
        self.upload = upload
        self.token = token
        self.checksum = checksum
        self.uploads = uploads
        self.writer = writer
        self.hasher = checksum?.makeHasher()
        self.committed = upload.offset
        self.checkpointedOffset = upload.offset
        let now = WallClock.milliseconds()
        self.leaseUntil = now + UploadsController.leaseMilliseconds
        self.lastCheckpoint = now
    }

    /// Bytes taken so far, buffered ones included, from the upload's start.
    var offset: Int64 { writer.written + Int64(pending.readableBytes) }

    /// The commit a writer makes: the state, the offset and a renewed lease in one statement.
    /// - Throws: 409 `conflict` when the upload was terminated or its lease taken over.
    static func committer(uploads: UploadStore, id: String, token: String) -> PartialBlobCommit {
        { state in
            guard
                try await uploads.commit(
                    id: id, token: token, state: state, until: WallClock.milliseconds() + UploadsController.leaseMilliseconds)
            else { throw AppError.conflict("The upload was terminated or taken over by another PATCH.") }
        }
    }

    /// Appends `body`, then verifies its checksum and keeps or drops what arrived.
    /// - Returns: the error that ended the append (460 `checksum_mismatch`; 413 past
    ///   `Upload-Length`; 409 when the lease was lost; the body's error when the connection was
    ///   cut), or nil when the whole body was written and committed.
    mutating func write(_ body: RequestBody) async -> (any Error)? {
        var failure: (any Error)?
        do {
            for try await chunk in body { try await receive(chunk) }
        } catch {
            failure = error
        }
        if failure == nil { failure = verifyChecksum() }
        return await end(after: failure)
    }

    /// Takes one chunk of the body: checkpoints first when the lease runs short or a checkpoint
    /// is due, refuses bytes past `Upload-Length`, hashes and buffers the chunk.
    private mutating func receive(_ chunk: ByteBuffer) async throws {
        let now = WallClock.milliseconds()
        // Never write without a live lease: renew it first when it runs short.
        if now > leaseUntil - 15_000 || now - lastCheckpoint > UploadsController.checkpointMilliseconds { try await checkpoint(all: false) }
        if offset + Int64(chunk.readableBytes) > upload.length {
            throw UploadsController.pastLength(upload)
        }
        hasher?.update(chunk)
        pending.writeImmutableBuffer(chunk)
        if pending.readableBytes >= 1 << 20 { try await flush() }
        if checksum == nil && offset - checkpointedOffset >= UploadsController.checkpointBytes { try await checkpoint(all: false) }
    }

    /// Compares the whole body's digest with `Upload-Checksum` (nothing to do without one).
    /// - Returns: 460 `checksum_mismatch` when they differ.
    private mutating func verifyChecksum() -> (any Error)? {
        guard let hasher, let checksum else { return nil }
        guard hasher.finalize() == checksum.digest else {
            return AppError(
                HTTPResponse.Status(code: 460, reasonPhrase: "Checksum Mismatch"), code: .checksumMismatch,
                detail: "The body does not match Upload-Checksum; it was not kept.")
        }
        verified = true
        return nil
    }

    /// Ends the append after `failure` (nil when the whole body arrived and matched): a failed
    /// checksummed body is dropped, anything else is stored and committed, and the lease is
    /// released unless the upload is now complete (its completion still needs the lease).
    /// - Returns: `failure`, or the final checkpoint's error.
    private mutating func end(after failure: (any Error)?) async -> (any Error)? {
        if failure != nil, checksum != nil {
            // An unverified body is dropped whole; only the lease is given back.
            pending.clear()
            _ = try? await uploads.commit(id: upload.id, token: token, offset: committed, until: 0)
            return failure
        }
        let complete = failure == nil && offset == upload.length
        // What arrived is kept, also when the connection was cut (tus: SHOULD keep partial data).
        do {
            try await checkpoint(all: true)
            if !complete { _ = try await uploads.commit(id: upload.id, token: token, offset: committed, until: 0) }
        } catch {
            // The lease goes back at the last committed offset (a store away, a lost lease).
            _ = try? await uploads.commit(id: upload.id, token: token, offset: committed, until: 0)
            return error
        }
        return failure
    }

    /// Hands the buffered bytes to the writer.
    private mutating func flush() async throws {
        guard pending.readableBytes > 0 else { return }
        try await writer.write(pending)
        pending.clear()
    }

    /// Makes bytes durable and commits them (`all`: every byte taken), or, under a checksum
    /// not yet verified, only renews the lease.
    /// - Throws: 409 `conflict` when the upload was terminated or its lease taken over.
    private mutating func checkpoint(all: Bool) async throws {
        try await flush()
        if checksum == nil || verified {
            try await writer.persist(all: all)
        } else {
            try await Self.committer(uploads: uploads, id: upload.id, token: token)(writer.durable)
        }
        committed = writer.durable.size
        checkpointedOffset = offset
        let now = WallClock.milliseconds()
        leaseUntil = now + UploadsController.leaseMilliseconds
        lastCheckpoint = now
    }
}
