package import CairnObjects
package import CairnStorage

/// Settings of files and uploads, read from the top of the configuration: the quotas
/// (`CAIRN_FILES_MAX_SIZE`, `CAIRN_FILES_MAX_TOTAL`, `CAIRN_FILES_MAX_PER_HOUR`, in bytes) and
/// `CAIRN_UPLOADS_EXPIRY`; where the bytes live (`CAIRN_BLOB_URL`, `CAIRN_BLOB_PART_SIZE`).
package struct FilesSettings: Sendable {
    /// Size and volume limits per tenant.
    package var quotas = FileQuotas()
    /// Seconds a tus upload may take from creation to its last byte (default 24h); expired
    /// uploads answer 404 and their bytes are removed.
    package var uploadsExpiry = 86_400

    /// Where blobs live (`CAIRN_BLOB_URL`: `file:///path` or `s3://bucket/prefix`); nil for
    /// the default, `<data dir>/blobs`.
    package var blobLocation: BlobLocation?
    /// Bytes per part of a multipart write to S3 (`CAIRN_BLOB_PART_SIZE`, 8–64 MiB, default 8 MiB).
    package var blobPartSize = 8 << 20
    /// The S3 store's endpoint, region and credentials, from the AWS variables, when
    /// `blobLocation` is on S3 (filled by ``readStore(environment:)``).
    package var s3: S3Configuration?

    /// The defaults.
    package init() {}

    /// The blob store these settings describe, the file system's under `dataDir` by default.
    package func makeBlobStore(dataDir: String) -> any BlobStore {
        switch blobLocation {
        case .s3(let bucket, let prefix)?:
            if let s3 { return S3BlobStore(client: S3Client(configuration: s3), bucket: bucket, prefix: prefix, partSize: blobPartSize) }
            return LocalBlobStore(rootPath: dataDir + "/blobs")
        case .file(let path)?: return LocalBlobStore(rootPath: path)
        case nil: return LocalBlobStore(rootPath: dataDir + "/blobs")
        }
    }

    /// Reads the S3 store's AWS variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_SESSION_TOKEN`, `AWS_REGION`, `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL`) when the
    /// blob URL is on S3.
    /// - Throws: `ConfigurationError` naming `CAIRN_BLOB_URL` when they are missing or wrong.
    package mutating func readStore(environment: [String: String]) throws {
        guard case .s3? = blobLocation else { return }
        do {
            s3 = try S3Configuration.fromEnvironment(environment)
        } catch {
            throw ConfigurationError(setting: "CAIRN_BLOB_URL", problem: error.message)
        }
    }

    /// Reads the settings that are set.
    /// - Throws: `ConfigurationError` naming the first bad one.
    package mutating func read(from settings: SettingsReader) throws {
        quotas.maxFileBytes = Int64(try settings.integer("files.max.size", in: 1...(1 << 50), default: Int(quotas.maxFileBytes)))
        quotas.maxTotalBytes = Int64(try settings.integer("files.max.total", in: 1...(1 << 50), default: Int(quotas.maxTotalBytes)))
        quotas.maxBytesPerHour = Int64(try settings.integer("files.max.per.hour", in: 1...(1 << 50), default: Int(quotas.maxBytesPerHour)))
        uploadsExpiry = try settings.seconds("uploads.expiry", default: uploadsExpiry)
        if let url = settings.text("blob.url"), !url.isEmpty {
            do {
                blobLocation = try BlobLocation.parse(url)
            } catch {
                throw settings.invalid("blob.url", error.message)
            }
        }
        blobPartSize = Int(try settings.bytes("blob.part.size", in: Int64(8 << 20)...Int64(64 << 20), default: Int64(blobPartSize)))
    }
}
