package import CairnObjects
package import CairnStorage
package import Logging
import ServiceLifecycle

/// Removes blobs that no file and no upload names, once they are older than a grace period (a
/// write completes before its row is recorded, and a pipeline's output is stored before its file
/// is: the grace covers that gap); likewise the pieces of unfinished blobs: partial files and
/// tail objects no upload names, and multipart uploads in progress no upload names. A multipart
/// upload's age counts from its start and a plain write (`POST /files`) streams through one for
/// as long as its body lasts, so those wait longer (a day by default), as S3's own lifecycle
/// rule for incomplete multipart uploads would. On PostgreSQL one node at a time sweeps (the others wait for
/// its database-wide lock, then find little left); on SQLite there is one node.
package struct OrphanSweeper: Service {
    let database: Database
    let blobs: any BlobStore
    /// Milliseconds a blob without a row is left alone.
    let graceMilliseconds: Int64
    /// Milliseconds a multipart upload no upload names is left alone.
    let multipartGraceMilliseconds: Int64
    let interval: Duration
    let logger: Logger

    /// The lock key: "cairn-blob-sweeper" folded to 63 bits (FNV-1a).
    static let lockKey: Int64 = {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in "cairn-blob-sweeper".utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        return Int64(bitPattern: hash & 0x7FFF_FFFF_FFFF_FFFF)
    }()

    /// Creates the sweeper: every `interval`, blobs, partial files and tail objects older than
    /// `graceSeconds` (default 1 h), and multipart uploads started longer than
    /// `multipartGraceSeconds` ago (default 24 h), that no row names are removed.
    package init(
        database: Database, blobs: any BlobStore, graceSeconds: Int = 3600, multipartGraceSeconds: Int = 86_400,
        interval: Duration = .seconds(3600), logger: Logger
    ) {
        self.database = database
        self.blobs = blobs
        self.graceMilliseconds = Int64(graceSeconds) * 1000
        self.multipartGraceMilliseconds = Int64(max(graceSeconds, multipartGraceSeconds)) * 1000
        self.interval = interval
        self.logger = logger
    }

    /// Sweeps once at `now` (epoch milliseconds).
    /// - Returns: the ids of the blobs removed.
    /// - Throws: `BlobStoreUnavailable`; the database's errors.
    @discardableResult
    package func sweep(now: Int64 = WallClock.milliseconds()) async throws -> [String] {
        if database.dialect == .postgres {
            let sweeper = self
            return try await database.withExclusiveLock(key: Self.lockKey) { _ in try await sweeper.sweepUnlocked(now: now) }
        }
        return try await sweepUnlocked(now: now)
    }

    private func sweepUnlocked(now: Int64) async throws -> [String] {
        let files = FileStore(database: database)
        let uploads = UploadStore(database: database)
        var removed: [String] = []
        for entry in try await blobs.list() where now - entry.modifiedAt > graceMilliseconds {
            if try await files.get(id: entry.id, tenantId: entry.tenantId) != nil { continue }
            if try await uploads.get(id: entry.id, tenantId: entry.tenantId) != nil { continue }
            try await blobs.delete(tenantId: entry.tenantId, id: entry.id)
            removed.append(entry.id)
        }
        // Pieces of unfinished blobs: a partial file or tail object that no upload names, and a
        // multipart upload that is not its upload's (a node that died between starting it and
        // recording its id, or a plain write whose abort never reached the store).
        for piece in try await blobs.listUnfinished()
        where now - piece.modifiedAt > (piece.multipartId == nil ? graceMilliseconds : multipartGraceMilliseconds) {
            let upload = try await uploads.get(id: piece.id, tenantId: piece.tenantId)
            if let multipartId = piece.multipartId {
                if upload?.multipartId == multipartId { continue }
            } else if upload != nil {
                continue
            }
            try await blobs.removeUnfinished(piece)
            removed.append(piece.id)
        }
        return removed
    }

    /// Runs the sweep loop until graceful shutdown.
    package func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                // Shutdown cuts the sleep short: no sweep then, and none that shutdown
                // interrupted is a failure worth a warning.
                if Task.isCancelled { break }
                do {
                    let removed = try await sweep()
                    if !removed.isEmpty { logger.info("orphaned blobs removed", metadata: ["count": .stringConvertible(removed.count)]) }
                } catch {
                    if Task.isCancelled || error is CancellationError { break }
                    logger.warning("sweeping orphaned blobs failed", metadata: ["error.type": .string(String(reflecting: type(of: error)))])
                }
            }
        }
    }
}
