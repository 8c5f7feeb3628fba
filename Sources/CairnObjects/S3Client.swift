package import AsyncHTTPClient
import Crypto
import Foundation
package import NIOCore
import NIOHTTP1

/// Where an S3-compatible store is and who talks to it, from the AWS SDKs' standard variables.
package struct S3Configuration: Sendable {
    /// `https` or `http`.
    package var scheme: String
    /// The endpoint's host (a name or an address); nil for AWS S3 itself.
    package var endpointHost: String?
    /// The endpoint's port; nil for the scheme's default.
    package var endpointPort: Int?
    /// The region requests are signed for (`AWS_REGION`, default `us-east-1`).
    package var region: String
    /// The credentials.
    package var credentials: SigV4Credentials

    /// Creates a configuration; with no endpoint, AWS S3 of `region` (virtual-hosted addressing).
    package init(credentials: SigV4Credentials, region: String = "us-east-1", endpoint: String? = nil) throws(S3ConfigurationError) {
        self.credentials = credentials
        self.region = region
        self.scheme = "https"
        if let endpoint {
            guard let components = URLComponents(string: endpoint), let scheme = components.scheme?.lowercased(),
                scheme == "http" || scheme == "https",
                let host = components.host, !host.isEmpty
            else { throw S3ConfigurationError(message: "the S3 endpoint must be an http(s) URL") }
            self.scheme = scheme
            self.endpointHost = host
            self.endpointPort = components.port
        }
    }

    /// Reads `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`
    /// (or `AWS_DEFAULT_REGION`; default `us-east-1`) and `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL`.
    /// - Throws: `S3ConfigurationError` when the keys are missing or the endpoint is not a URL.
    package static func fromEnvironment(_ environment: [String: String]) throws(S3ConfigurationError) -> S3Configuration {
        func value(_ name: String) -> String? { environment[name].flatMap { $0.isEmpty ? nil : $0 } }
        guard let key = value("AWS_ACCESS_KEY_ID"), let secret = value("AWS_SECRET_ACCESS_KEY") else {
            throw S3ConfigurationError(message: "an s3:// CAIRN_BLOB_URL needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
        }
        return try S3Configuration(
            credentials: SigV4Credentials(accessKeyId: key, secretAccessKey: secret, sessionToken: value("AWS_SESSION_TOKEN")),
            region: value("AWS_REGION") ?? value("AWS_DEFAULT_REGION") ?? "us-east-1",
            endpoint: value("AWS_ENDPOINT_URL_S3") ?? value("AWS_ENDPOINT_URL"))
    }
}

/// A configuration that cannot work; the message names no secret.
package struct S3ConfigurationError: Error, Sendable, CustomStringConvertible {
    /// What is wrong.
    package var message: String
    /// The message.
    package var description: String { message }
}

/// An error answer of the store (its XML `<Error>` body) or a failed exchange. It carries the
/// operation, the status, S3's code and message and the request id, never a header or secret.
package struct S3Error: Error, Sendable, CustomStringConvertible {
    /// The operation (`PutObject`, ...).
    package var operation: String
    /// The HTTP status; 0 when no answer arrived (connection refused, timeout).
    package var status: Int
    /// S3's error code (`NoSuchKey`, `SlowDown`, ...), or a transport error's type.
    package var code: String
    /// S3's message, cut to 200 characters.
    package var message: String
    /// S3's request id, for the operator.
    package var requestId: String?

    /// Whether trying again may work, as the AWS SDKs' standard retry mode decides: no answer,
    /// 500, 502, 503 or 504, throttling (429, `SlowDown`), or `RequestTimeout`.
    package var isTransient: Bool {
        status == 0 || [500, 502, 503, 504, 429].contains(status) || code == "SlowDown" || code == "RequestTimeout"
    }

    /// One line for logs.
    package var description: String {
        "S3 \(operation) failed: \(status == 0 ? "no answer" : "status \(status)") \(code)\(message.isEmpty ? "" : ": \(message)")\(requestId.map { " (request \($0))" } ?? "")"
    }
}

/// One object in a listing.
package struct S3ObjectSummary: Sendable, Equatable {
    /// The key.
    package var key: String
    /// Its size in bytes.
    package var size: Int64
    /// When it was last written, epoch milliseconds (nil when the answer did not say).
    package var lastModified: Int64? = nil
}

/// One multipart upload in progress, as ListMultipartUploads names it.
package struct S3MultipartSummary: Sendable, Equatable {
    /// The object key it will write.
    package var key: String
    /// Its id.
    package var uploadId: String
    /// When it was started, epoch milliseconds (nil when the answer did not say).
    package var initiated: Int64?
}

/// How often and how patiently an ``S3Client`` repeats a request that failed transiently
/// (``S3Error/isTransient``), after the AWS SDKs' standard retry mode: at most `maxAttempts`
/// attempts, waiting a random time up to `baseDelay` × 2^(retry − 1) (at most `maxDelay`)
/// before each retry ("full jitter"), so clients that failed together do not retry together.
package struct S3RetryPolicy: Sendable {
    /// Attempts in all, the first included (1: never retry).
    package var maxAttempts: Int
    /// The bound of the first retry's wait; it doubles with each further retry.
    package var baseDelay: Duration
    /// The longest wait before a retry.
    package var maxDelay: Duration

    /// Creates a policy.
    package init(maxAttempts: Int, baseDelay: Duration, maxDelay: Duration = .seconds(20)) {
        self.maxAttempts = max(1, maxAttempts)
        self.baseDelay = baseDelay
        self.maxDelay = maxDelay
    }

    /// The SDKs' standard mode: 3 attempts, waits of up to 100 ms, then 200 ms.
    package static let standard = S3RetryPolicy(maxAttempts: 3, baseDelay: .milliseconds(100))

    /// The wait before retry number `retry` (1 for the first).
    func delay(beforeRetry retry: Int) -> Duration {
        let bound = min(maxDelay, baseDelay * (1 << min(retry - 1, 20)))
        let microseconds = bound.components.seconds * 1_000_000 + bound.components.attoseconds / 1_000_000_000_000
        return .microseconds(Int64.random(in: 0...max(0, microseconds)))
    }
}

/// A small S3 client over AsyncHTTPClient, signing with ``SigV4Signer``: the object, multipart
/// and listing operations a blob store needs. Path-style addressing (`endpoint/bucket/key`)
/// whenever a custom endpoint is configured; virtual-hosted (`bucket.s3.region.amazonaws.com`)
/// for AWS itself. TLS certificates are verified (AsyncHTTPClient's default).
package struct S3Client: Sendable {
    /// The store's location and credentials.
    package let configuration: S3Configuration
    let httpClient: HTTPClient
    /// Reads the time for signatures (seconds since 1970); tests may fix it.
    let now: @Sendable () -> Int64
    /// When a transiently failed request is sent again.
    package let retry: S3RetryPolicy

    /// The process's client: no redirects, 5 s to connect, 60 s of silence ends an exchange.
    /// It lives as long as the process, like `HTTPClient.shared` (a released client traps).
    private static let sharedClient: HTTPClient = {
        var configuration = HTTPClient.Configuration()
        configuration.redirectConfiguration = .disallow
        configuration.timeout = .init(connect: .seconds(5), read: .seconds(60))
        configuration.connectionPool = .init(idleTimeout: .seconds(30))
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }()

    /// Creates a client.
    package init(
        configuration: S3Configuration, httpClient: HTTPClient? = nil, now: (@Sendable () -> Int64)? = nil, retry: S3RetryPolicy = .standard
    ) {
        self.configuration = configuration
        self.httpClient = httpClient ?? Self.sharedClient
        self.now = now ?? { Int64(Date().timeIntervalSince1970) }
        self.retry = retry
    }

    // MARK: Operations

    /// `PUT /bucket` (CreateBucket; tests and first set-up). An existing bucket of ours is fine.
    /// - Throws: `S3Error`.
    package func createBucket(_ bucket: String) async throws {
        do {
            _ = try await send("CreateBucket", method: .PUT, bucket: bucket, key: nil, collect: true)
        } catch let error as S3Error where error.code == "BucketAlreadyOwnedByYou" {
        }
    }

    /// `PUT` an object whole (PutObject), its payload hash signed.
    /// - Throws: `S3Error`.
    package func putObject(bucket: String, key: String, body: ByteBuffer) async throws {
        _ = try await send("PutObject", method: .PUT, bucket: bucket, key: key, body: body, collect: true)
    }

    /// Starts a multipart upload (CreateMultipartUpload).
    /// - Returns: the upload id.
    /// - Throws: `S3Error`.
    package func createMultipartUpload(bucket: String, key: String) async throws -> String {
        let answer = try await send("CreateMultipartUpload", method: .POST, bucket: bucket, key: key, query: [("uploads", "")], collect: true)
        guard let id = XMLScan(answer.body).first("UploadId") else {
            throw S3Error(operation: "CreateMultipartUpload", status: answer.status, code: "MalformedAnswer", message: "no UploadId")
        }
        return id
    }

    /// Uploads part `number` (1...10000) of a multipart upload (UploadPart).
    /// - Returns: the part's ETag, for ``completeMultipartUpload(bucket:key:uploadId:parts:)``.
    /// - Throws: `S3Error`.
    package func uploadPart(bucket: String, key: String, uploadId: String, number: Int, body: ByteBuffer) async throws -> String {
        let answer = try await send(
            "UploadPart", method: .PUT, bucket: bucket, key: key, query: [("partNumber", String(number)), ("uploadId", uploadId)], body: body,
            collect: true)
        guard let etag = answer.headers.first(name: "etag") else {
            throw S3Error(operation: "UploadPart", status: answer.status, code: "MalformedAnswer", message: "no ETag")
        }
        return etag
    }

    /// Completes a multipart upload: the object appears whole, at once.
    /// - Parameter parts: part numbers and ETags, in order.
    /// - Throws: `S3Error`, also for an error S3 sends in a 200 answer.
    package func completeMultipartUpload(bucket: String, key: String, uploadId: String, parts: [(number: Int, etag: String)]) async throws {
        var xml = "<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
        for part in parts { xml += "<Part><PartNumber>\(part.number)</PartNumber><ETag>\(XMLScan.escape(part.etag))</ETag></Part>" }
        xml += "</CompleteMultipartUpload>"
        let answer = try await send(
            "CompleteMultipartUpload", method: .POST, bucket: bucket, key: key, query: [("uploadId", uploadId)], body: ByteBuffer(string: xml),
            contentType: "application/xml", collect: true)
        // S3 may answer 200 and report a failure in the body.
        if XMLScan(answer.body).first("Error") != nil || answer.body.contains("<Error>") {
            throw Self.error("CompleteMultipartUpload", status: 500, body: answer.body)
        }
    }

    /// Abandons a multipart upload and its parts (AbortMultipartUpload); a missing one is fine.
    /// - Throws: `S3Error`.
    package func abortMultipartUpload(bucket: String, key: String, uploadId: String) async throws {
        do {
            _ = try await send("AbortMultipartUpload", method: .DELETE, bucket: bucket, key: key, query: [("uploadId", uploadId)], collect: true)
        } catch let error as S3Error where error.status == 404 {
        }
    }

    /// The multipart uploads in progress under `prefix` (ListMultipartUploads, every page).
    /// - Throws: `S3Error`.
    package func listMultipartUploads(bucket: String, prefix: String) async throws -> [S3MultipartSummary] {
        var all: [S3MultipartSummary] = []
        var markers: (key: String, uploadId: String)?
        repeat {
            var query: [(String, String)] = [("uploads", ""), ("prefix", prefix)]
            if let markers { query += [("key-marker", markers.key), ("upload-id-marker", markers.uploadId)] }
            let answer = try await send("ListMultipartUploads", method: .GET, bucket: bucket, key: nil, query: query, collect: true)
            let scan = XMLScan(answer.body)
            all += scan.elements("Upload").compactMap { upload in
                let entry = XMLScan(upload)
                guard let key = entry.first("Key"), let id = entry.first("UploadId") else { return nil }
                return S3MultipartSummary(key: key, uploadId: id, initiated: entry.first("Initiated").flatMap(Self.parseTime))
            }
            markers = nil
            if scan.first("IsTruncated") == "true", let key = scan.first("NextKeyMarker"), let id = scan.first("NextUploadIdMarker") {
                markers = (key, id)
            }
        } while markers != nil
        return all
    }

    /// An object's size, or nil when there is none (HeadObject).
    /// - Throws: `S3Error` for anything but 404.
    package func headObject(bucket: String, key: String) async throws -> Int64? {
        do {
            let answer = try await send("HeadObject", method: .HEAD, bucket: bucket, key: key, collect: true)
            return answer.headers.first(name: "content-length").flatMap { Int64($0) }
        } catch let error as S3Error where error.status == 404 {
            return nil
        }
    }

    /// An object's bytes (GetObject), streamed: the answer's head has arrived, the body follows.
    /// - Parameter range: the bytes wanted (`Range: bytes=first-last`, not empty); nil for all.
    /// - Returns: the body's length and the body; the caller reads it to the end or drops it.
    /// - Throws: `S3Error` (404 `NoSuchKey` for a missing object).
    package func getObject(bucket: String, key: String, range: Range<Int64>? = nil) async throws -> (length: Int64?, body: HTTPClientResponse.Body) {
        var headers: [(name: String, value: String)] = []
        if let range { headers.append(("range", "bytes=\(range.lowerBound)-\(range.upperBound - 1)")) }
        let answer = try await send("GetObject", method: .GET, bucket: bucket, key: key, extraHeaders: headers, collect: false)
        return (answer.headers.first(name: "content-length").flatMap { Int64($0) }, answer.stream!)
    }

    /// Deletes an object (DeleteObject); a missing one is fine.
    /// - Throws: `S3Error`.
    package func deleteObject(bucket: String, key: String) async throws {
        do {
            _ = try await send("DeleteObject", method: .DELETE, bucket: bucket, key: key, collect: true)
        } catch let error as S3Error where error.status == 404 {
        }
    }

    /// One page of the objects under `prefix` (ListObjectsV2, up to 1000).
    /// - Returns: the objects and the token of the next page, if any.
    /// - Throws: `S3Error`.
    package func listObjects(bucket: String, prefix: String, continuation: String? = nil, maxKeys: Int = 1000) async throws -> (
        objects: [S3ObjectSummary], next: String?
    ) {
        var query: [(String, String)] = [("list-type", "2"), ("prefix", prefix), ("max-keys", String(maxKeys))]
        if let continuation { query.append(("continuation-token", continuation)) }
        let answer = try await send("ListObjectsV2", method: .GET, bucket: bucket, key: nil, query: query, collect: true)
        let scan = XMLScan(answer.body)
        let objects = scan.elements("Contents").compactMap { item -> S3ObjectSummary? in
            let entry = XMLScan(item)
            guard let key = entry.first("Key") else { return nil }
            return S3ObjectSummary(
                key: key, size: entry.first("Size").flatMap { Int64($0) } ?? 0, lastModified: entry.first("LastModified").flatMap(Self.parseTime))
        }
        let truncated = scan.first("IsTruncated") == "true"
        return (objects, truncated ? scan.first("NextContinuationToken") : nil)
    }

    // MARK: The exchange

    /// A streamed answer body.
    package typealias ResponseBody = HTTPClientResponse.Body

    /// A collected or streaming answer.
    struct Answer {
        var status: Int
        var headers: HTTPHeaders
        var body: String
        var stream: HTTPClientResponse.Body?
    }

    /// Signs and sends one request, again after a transient failure as ``retry`` allows (every
    /// operation here is safe to repeat: a body is a buffer sent whole each time). Any status
    /// outside 2xx becomes an `S3Error` (its XML body read, at most 64 KiB), as does a failed
    /// exchange (status 0); the last attempt's error is thrown.
    func send(
        _ operation: String, method: HTTPMethod, bucket: String, key: String?, query: [(String, String)] = [],
        extraHeaders: [(name: String, value: String)] = [], body: ByteBuffer? = nil, contentType: String? = nil, collect: Bool
    ) async throws -> Answer {
        var attempt = 1
        while true {
            do {
                return try await sendOnce(
                    operation, method: method, bucket: bucket, key: key, query: query, extraHeaders: extraHeaders, body: body,
                    contentType: contentType, collect: collect)
            } catch let error as S3Error where error.isTransient && attempt < retry.maxAttempts {
                try await Task.sleep(for: retry.delay(beforeRetry: attempt))
                attempt += 1
            }
        }
    }

    /// One signed exchange (signed anew, so a retry's signature carries its own time).
    private func sendOnce(
        _ operation: String, method: HTTPMethod, bucket: String, key: String?, query: [(String, String)],
        extraHeaders: [(name: String, value: String)], body: ByteBuffer?, contentType: String?, collect: Bool
    ) async throws -> Answer {
        let (host, path) = address(bucket: bucket, key: key)
        var headers: [(name: String, value: String)] = [("host", host)] + extraHeaders
        if let contentType { headers.append(("content-type", contentType)) }
        let payloadHash =
            body.map { buffer in
                buffer.withUnsafeReadableBytes { SigV4Signer.hex(SHA256.hash(data: $0)) }
            } ?? SigV4Signer.emptyPayloadHash
        let request = SigV4Signer.Request(method: method.rawValue, path: path, query: query.map { ($0.0, $0.1) }, headers: headers)
        let signer = SigV4Signer(credentials: configuration.credentials, region: configuration.region)
        let signed = signer.sign(request, payloadHash: payloadHash, time: now())
        let canonicalQuery = request.canonicalQuery
        var http = HTTPClientRequest(
            url: "\(configuration.scheme)://\(host)\(request.encodedPath)\(canonicalQuery.isEmpty ? "" : "?" + canonicalQuery)")
        http.method = method
        for (name, value) in headers + signed { http.headers.add(name: name, value: value) }
        if let body {
            http.headers.add(name: "content-length", value: String(body.readableBytes))
            http.body = .bytes(body)
        }
        let response: HTTPClientResponse
        do {
            // The deadline bounds a whole exchange; streamed reads are bounded by the read timeout.
            response = try await httpClient.execute(http, deadline: .now() + .hours(6))
        } catch {
            throw S3Error(operation: operation, status: 0, code: String(describing: type(of: error)), message: Self.describe(error))
        }
        let status = Int(response.status.code)
        guard (200..<300).contains(status) else {
            let text = (try? await response.body.collect(upTo: 64 << 10)).map { String(buffer: $0) } ?? ""
            throw Self.error(operation, status: status, body: text)
        }
        guard collect else { return Answer(status: status, headers: response.headers, body: "", stream: response.body) }
        do {
            let text = try await response.body.collect(upTo: 16 << 20)
            return Answer(status: status, headers: response.headers, body: String(buffer: text), stream: nil)
        } catch {
            throw S3Error(operation: operation, status: 0, code: String(describing: type(of: error)), message: Self.describe(error))
        }
    }

    /// The host and unencoded path of a bucket or object: path-style with a custom endpoint,
    /// virtual-hosted on AWS.
    func address(bucket: String, key: String?) -> (host: String, path: String) {
        if let host = configuration.endpointHost {
            let hostPort = configuration.endpointPort.map { "\(host):\($0)" } ?? host
            return (hostPort, "/\(bucket)" + (key.map { "/" + $0 } ?? ""))
        }
        let host = configuration.region == "us-east-1" ? "\(bucket).s3.amazonaws.com" : "\(bucket).s3.\(configuration.region).amazonaws.com"
        return (host, "/" + (key ?? ""))
    }

    /// An `S3Error` from an error answer's XML body (`<Error><Code>…</Code><Message>…`).
    static func error(_ operation: String, status: Int, body: String) -> S3Error {
        let scan = XMLScan(body)
        let fallback = status == 404 ? "NotFound" : status == 403 ? "AccessDenied" : "HTTP\(status)"
        return S3Error(
            operation: operation, status: status, code: scan.first("Code") ?? fallback, message: String((scan.first("Message") ?? "").prefix(200)),
            requestId: scan.first("RequestId"))
    }

    /// Epoch milliseconds of an ISO 8601 time as S3 lists them (`2026-12-04T23:00:00.000Z`).
    static func parseTime(_ text: String) -> Int64? {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = text.contains(".") ? [.withInternetDateTime, .withFractionalSeconds] : [.withInternetDateTime]
        return formatter.date(from: text).map { Int64($0.timeIntervalSince1970 * 1000) }
    }

    /// A transport error's text, cut short (AsyncHTTPClient's errors name hosts, never headers).
    static func describe(_ error: any Error) -> String {
        String(String(describing: error).prefix(200))
    }
}

/// Reads the few elements S3's XML answers carry (no attributes, no nesting of the same name);
/// a full parser is not needed for `<Code>`, `<UploadId>`, `<Key>`, `<Size>` and the like.
struct XMLScan {
    let text: String

    init(_ text: String) {
        self.text = text
    }

    /// The unescaped text of the first `<name>` element.
    func first(_ name: String) -> String? {
        elements(name).first.map(Self.unescape)
    }

    /// The raw contents of every `<name>` element, in order.
    func elements(_ name: String) -> [String] {
        var found: [String] = []
        var rest = text[...]
        let open = "<\(name)>"
        let close = "</\(name)>"
        while let start = rest.range(of: open) {
            guard let end = rest.range(of: close, range: start.upperBound..<rest.endIndex) else { break }
            found.append(String(rest[start.upperBound..<end.lowerBound]))
            rest = rest[end.upperBound...]
        }
        return found
    }

    /// XML's five predefined entities and numeric references, decoded.
    static func unescape(_ text: String) -> String {
        guard text.contains("&") else { return text }
        var out = ""
        var rest = text[...]
        while let amp = rest.firstIndex(of: "&") {
            out += rest[..<amp]
            guard let semi = rest[amp...].firstIndex(of: ";") else { break }
            let entity = rest[rest.index(after: amp)..<semi]
            switch entity {
            case "amp": out += "&"
            case "lt": out += "<"
            case "gt": out += ">"
            case "quot": out += "\""
            case "apos": out += "'"
            default:
                let number =
                    entity.hasPrefix("#x") ? UInt32(entity.dropFirst(2), radix: 16) : entity.hasPrefix("#") ? UInt32(entity.dropFirst()) : nil
                if let number, let scalar = Unicode.Scalar(number) { out.unicodeScalars.append(scalar) } else { out += "&\(entity);" }
            }
            rest = rest[rest.index(after: semi)...]
        }
        return out + rest
    }

    /// Text made safe inside an element.
    static func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
            .replacingOccurrences(of: "\"", with: "&quot;")
    }
}
