import CairnObjects
import CairnTestSupport
import Hummingbird
import HummingbirdTesting
import NIOCore
import Synchronization
import Testing

/// The S3 client's retries, against a store on loopback that answers a scripted status per
/// request (then an empty listing), as S3 answers 500 `InternalError` or 503 `SlowDown` now and
/// then (moto did, under load, while another request deleted a key it was listing).
@Suite struct S3RetryTests {
    /// Runs `body` with a client of the fake store answering `statuses` in turn, and a reader of
    /// the requests it received.
    func withFakeStore(
        answering statuses: [Int], _ body: @Sendable (S3Client, _ requests: @Sendable () -> Int) async throws -> Void
    ) async throws {
        let received = Mutex(0)
        let router = Router()
        router.get("/{bucket}") { _, _ -> Response in
            let index = received.withLock { count in
                count += 1
                return count - 1
            }
            guard index < statuses.count else {
                let listing = #"<?xml version="1.0"?><ListBucketResult><IsTruncated>false</IsTruncated></ListBucketResult>"#
                return Response(status: .ok, body: .init(byteBuffer: ByteBuffer(string: listing)))
            }
            let code = statuses[index] == 503 ? "SlowDown" : statuses[index] == 403 ? "AccessDenied" : "InternalError"
            let error = "<Error><Code>\(code)</Code><Message>scripted</Message></Error>"
            return Response(status: .init(code: statuses[index]), body: .init(byteBuffer: ByteBuffer(string: error)))
        }
        try await Application(router: router).test(.live) { client in
            let port = try #require(client.port)
            let s3 = S3Client(
                configuration: try S3Configuration(
                    credentials: SigV4Credentials(accessKeyId: "AKIDFAKE", secretAccessKey: "fake"), endpoint: "http://127.0.0.1:\(port)"),
                retry: S3RetryPolicy(maxAttempts: 3, baseDelay: .milliseconds(1)))
            try await body(s3, { received.withLock { $0 } })
        }
    }

    /// A 500 and then a 503 are tried again: the third attempt's listing is the answer.
    @Test func transientErrorsAreRetried() async throws {
        try await withFakeStore(answering: [500, 503]) { s3, requests in
            let listing = try await s3.listObjects(bucket: "cairn", prefix: "t/")
            #expect(listing.objects.isEmpty)
            #expect(requests() == 3)
        }
    }

    /// The attempts stop at the policy's limit, with the last answer's error.
    @Test func attemptsStopAtTheLimit() async throws {
        try await withFakeStore(answering: [500, 500, 503, 500]) { s3, requests in
            let error = await #expect(throws: S3Error.self) { try await s3.listObjects(bucket: "cairn", prefix: "t/") }
            #expect(error?.status == 503 && error?.code == "SlowDown")
            #expect(requests() == 3)
        }
    }

    /// A refusal is final: a 403 is not sent again.
    @Test func aRefusalIsNotRetried() async throws {
        try await withFakeStore(answering: [403]) { s3, requests in
            let error = await #expect(throws: S3Error.self) { try await s3.listObjects(bucket: "cairn", prefix: "t/") }
            #expect(error?.status == 403)
            #expect(requests() == 1)
        }
    }
}
