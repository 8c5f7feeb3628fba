/// Where blobs live, as `CAIRN_BLOB_URL` says: `file:///path` or `s3://bucket/prefix`.
package enum BlobLocation: Sendable, Equatable {
    /// A folder of the file system.
    case file(path: String)
    /// A bucket of an S3-compatible store, under a key prefix (empty, or ending in `/`).
    case s3(bucket: String, prefix: String)

    /// Parses a blob URL.
    /// - Throws: `S3ConfigurationError` for another scheme, a relative file path, or a bucket
    ///   name S3 would refuse (3–63 characters of `a-z 0-9 . -`).
    package static func parse(_ url: String) throws(S3ConfigurationError) -> BlobLocation {
        if url.hasPrefix("file://") {
            let path = String(url.dropFirst(7))
            guard path.hasPrefix("/") else { throw S3ConfigurationError(message: "file:// needs an absolute path (file:///path)") }
            return .file(path: path.count > 1 && path.hasSuffix("/") ? String(path.dropLast()) : path)
        }
        if url.hasPrefix("s3://") {
            let rest = url.dropFirst(5)
            let bucket = String(rest.prefix { $0 != "/" })
            var prefix = String(rest.dropFirst(bucket.count).drop { $0 == "/" })
            guard (3...63).contains(bucket.count),
                bucket.utf8.allSatisfy({ (0x61...0x7A).contains($0) || (0x30...0x39).contains($0) || $0 == 0x2E || $0 == 0x2D })
            else { throw S3ConfigurationError(message: "s3:// needs a valid bucket name (3-63 of a-z, 0-9, '.', '-')") }
            if !prefix.isEmpty && !prefix.hasSuffix("/") { prefix += "/" }
            return .s3(bucket: bucket, prefix: prefix)
        }
        throw S3ConfigurationError(message: "must start with file:// or s3://")
    }
}
