import CairnFiles
package import CairnObjects
package import CairnServer
import Foundation
import Testing

/// The blob stores a suite runs on: the file system always, and an S3-compatible server when
/// `CAIRN_TEST_S3_URL` names one (CI starts moto's server and sets it; under `CI` the S3 cases
/// run, and fail without the variable, rather than being skipped).
package enum TestBlobBackend: String, Sendable, CaseIterable, CustomTestStringConvertible {
    case file, s3

    /// The backends available in this run.
    package static var available: [TestBlobBackend] {
        s3Endpoint == nil && ProcessInfo.processInfo.environment["CI"] == nil ? [.file] : [.file, .s3]
    }

    /// The S3 endpoint for tests (`CAIRN_TEST_S3_URL`, e.g. `http://127.0.0.1:5000`).
    package static var s3Endpoint: String? {
        ProcessInfo.processInfo.environment["CAIRN_TEST_S3_URL"].flatMap { $0.isEmpty ? nil : $0 }
    }

    /// The test bucket (`CAIRN_TEST_S3_BUCKET`, default `cairn-test`; created when missing).
    package static var bucket: String {
        ProcessInfo.processInfo.environment["CAIRN_TEST_S3_BUCKET"].flatMap { $0.isEmpty ? nil : $0 } ?? "cairn-test"
    }

    /// Shown in test output, so CI can see both backends ran.
    package var testDescription: String { rawValue }

    /// The test server's configuration (moto takes any key).
    /// - Throws: `TestSetupError` when `CAIRN_TEST_S3_URL` is not set.
    package static func s3Configuration() throws -> S3Configuration {
        guard let endpoint = s3Endpoint else { throw TestSetupError("CAIRN_TEST_S3_URL is not set, and CI requires the S3 suites") }
        return try S3Configuration(
            credentials: SigV4Credentials(accessKeyId: "cairn-test", secretAccessKey: "cairn-test-secret"), region: "us-east-1", endpoint: endpoint)
    }

    /// A client of the test server whose bucket exists.
    /// - Throws: `TestSetupError` without a server; `S3Error` when it does not answer.
    package static func s3Client() async throws -> S3Client {
        let client = S3Client(configuration: try s3Configuration())
        try await client.createBucket(bucket)
        return client
    }

    /// A fresh, empty store: a temporary folder, or a prefix of its own in the test bucket.
    /// - Parameter partSize: bytes per multipart part on S3.
    package func makeStore(partSize: Int = S3BlobStore.minimumPartSize) async throws -> any BlobStore {
        switch self {
        case .file:
            return LocalBlobStore(rootPath: NSTemporaryDirectory() + "cairn-blobs-" + UUID().uuidString.lowercased())
        case .s3:
            return S3BlobStore(
                client: try await Self.s3Client(), bucket: Self.bucket, prefix: "t-\(UUID().uuidString.lowercased())/", partSize: partSize)
        }
    }

    /// A change of a test node's configuration that points it at this backend (S3: a prefix of
    /// its own in the test bucket, which exists).
    /// - Throws: `TestSetupError` without a server.
    package func configure() async throws -> @Sendable (inout CairnConfiguration) -> Void {
        guard self == .s3 else { return { _ in } }
        let s3 = try Self.s3Configuration()
        _ = try await Self.s3Client()
        let prefix = "app-\(UUID().uuidString.lowercased())/"
        return { configuration in
            configuration.files.blobLocation = .s3(bucket: Self.bucket, prefix: prefix)
            configuration.files.s3 = s3
        }
    }
}
