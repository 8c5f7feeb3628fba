import Crypto

/// The credentials of an S3-compatible store (the AWS SDKs' `AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`). Printing them shows the key id only.
package struct SigV4Credentials: Sendable, CustomStringConvertible {
    /// The access key id (not a secret: it names the key, and appears in every Authorization header).
    package var accessKeyId: String
    /// The secret access key; never logged.
    package var secretAccessKey: String
    /// The session token of temporary credentials, sent as `x-amz-security-token`; never logged.
    package var sessionToken: String?

    /// Creates credentials.
    package init(accessKeyId: String, secretAccessKey: String, sessionToken: String? = nil) {
        self.accessKeyId = accessKeyId
        self.secretAccessKey = secretAccessKey
        self.sessionToken = sessionToken
    }

    /// The key id with the secrets redacted.
    package var description: String { "SigV4Credentials(\(accessKeyId), secret: ***)" }
}

/// AWS Signature Version 4 for requests signed in the `Authorization` header
/// (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv-create-signed-request.html):
/// canonical request, string to sign, the derived signing key (HMAC-SHA256 chain over date,
/// region, service and `aws4_request`), and the header itself.
///
/// Paths are URI-encoded once per segment, as S3 expects (S3 does not normalise or double-encode
/// paths, unlike the other services); query names and values are encoded with `/` too.
package struct SigV4Signer: Sendable {
    /// The lower-case hex SHA-256 of an empty payload.
    package static let emptyPayloadHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    /// The payload hash that tells S3 the body is not signed (its integrity rests on TLS).
    package static let unsignedPayload = "UNSIGNED-PAYLOAD"

    /// Who signs.
    package var credentials: SigV4Credentials
    /// The region of the credential scope (`us-east-1`, ...).
    package var region: String
    /// The service of the credential scope (`s3`).
    package var service: String

    /// Creates a signer for one region and service.
    package init(credentials: SigV4Credentials, region: String, service: String = "s3") {
        self.credentials = credentials
        self.region = region
        self.service = service
    }

    /// One request to sign. `path` is the raw, unencoded path (it starts with `/`), `query` the
    /// raw names and values; ``encodedPath`` and ``canonicalQuery`` are what goes on the wire.
    package struct Request: Sendable {
        /// The method, upper case.
        package var method: String
        /// The unencoded path, starting with `/`.
        package var path: String
        /// The unencoded query parameters, in any order.
        package var query: [(name: String, value: String)]
        /// The headers to sign (names in any case); `host` must be among them.
        package var headers: [(name: String, value: String)]

        /// Creates a request.
        package init(method: String, path: String, query: [(name: String, value: String)] = [], headers: [(name: String, value: String)]) {
            self.method = method
            self.path = path
            self.query = query
            self.headers = headers
        }

        /// The path as sent and signed: each segment URI-encoded, `/` kept.
        package var encodedPath: String { SigV4Signer.uriEncode(path, keepSlash: true) }

        /// The query as sent and signed: names and values URI-encoded, sorted by name then value.
        package var canonicalQuery: String {
            query.map { (SigV4Signer.uriEncode($0.name, keepSlash: false), SigV4Signer.uriEncode($0.value, keepSlash: false)) }
                .sorted { $0.0 == $1.0 ? $0.1 < $1.1 : $0.0 < $1.0 }
                .map { "\($0.0)=\($0.1)" }.joined(separator: "&")
        }
    }

    /// The headers a signed request adds: `x-amz-date`, `x-amz-security-token` with temporary
    /// credentials, `x-amz-content-sha256` when asked (S3 requires it), and `authorization`.
    /// - Parameters:
    ///   - payloadHash: the lower-case hex SHA-256 of the body, or ``unsignedPayload``.
    ///   - time: seconds since 1970-01-01T00:00:00Z.
    ///   - contentHashHeader: whether to add and sign `x-amz-content-sha256`.
    package func sign(_ request: Request, payloadHash: String, time: Int64, contentHashHeader: Bool = true) -> [(name: String, value: String)] {
        let stamp = Self.timestamp(time)
        var added: [(name: String, value: String)] = [("x-amz-date", stamp)]
        if contentHashHeader { added.append(("x-amz-content-sha256", payloadHash)) }
        if let token = credentials.sessionToken { added.append(("x-amz-security-token", token)) }
        var signed = request
        signed.headers += added
        let (canonical, signedHeaders) = canonicalRequest(signed, payloadHash: payloadHash)
        let scope = "\(stamp.prefix(8))/\(region)/\(service)/aws4_request"
        let signature = self.signature(
            stringToSign: stringToSign(canonical: canonical, timestamp: stamp, scope: scope), date: String(stamp.prefix(8)))
        added.append(
            (
                "authorization",
                "AWS4-HMAC-SHA256 Credential=\(credentials.accessKeyId)/\(scope), SignedHeaders=\(signedHeaders), Signature=\(signature)"
            ))
        return added
    }

    /// The canonical request and its `SignedHeaders` list: method, encoded path, canonical query,
    /// canonical headers (lower-case names, sorted, values trimmed with inner runs of spaces
    /// collapsed, repeated names joined with commas), signed header names, payload hash.
    package func canonicalRequest(_ request: Request, payloadHash: String) -> (canonical: String, signedHeaders: String) {
        var merged: [String: [String]] = [:]
        for (name, value) in request.headers {
            merged[name.lowercased(), default: []].append(Self.trimmed(value))
        }
        let names = merged.keys.sorted()
        let headerLines = names.map { "\($0):\(merged[$0]!.joined(separator: ","))\n" }.joined()
        let signedHeaders = names.joined(separator: ";")
        let canonical = [request.method, request.encodedPath, request.canonicalQuery, headerLines, signedHeaders, payloadHash].joined(
            separator: "\n")
        return (canonical, signedHeaders)
    }

    /// `AWS4-HMAC-SHA256`, the timestamp, the scope and the hex SHA-256 of the canonical request.
    package func stringToSign(canonical: String, timestamp: String, scope: String) -> String {
        "AWS4-HMAC-SHA256\n\(timestamp)\n\(scope)\n\(Self.hex(SHA256.hash(data: Array(canonical.utf8))))"
    }

    /// The hex HMAC-SHA256 of `stringToSign` under the key derived for `date` (`yyyyMMdd`).
    package func signature(stringToSign: String, date: String) -> String {
        func hmac(_ key: [UInt8], _ text: String) -> [UInt8] {
            Array(HMAC<SHA256>.authenticationCode(for: Array(text.utf8), using: SymmetricKey(data: key)))
        }
        let key = hmac(hmac(hmac(hmac(Array("AWS4\(credentials.secretAccessKey)".utf8), date), region), service), "aws4_request")
        return Self.hex(hmac(key, stringToSign))
    }

    /// `yyyyMMdd'T'HHmmss'Z'` (ISO 8601 basic format, UTC) of a Unix time.
    package static func timestamp(_ time: Int64) -> String {
        // Days to civil date (proleptic Gregorian), after Howard Hinnant's public-domain algorithm.
        let days = time >= 0 ? time / 86_400 : (time - 86_399) / 86_400
        let seconds = time - days * 86_400
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let mp = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        func two(_ value: Int64) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return "\(year)\(two(month))\(two(day))T\(two(seconds / 3600))\(two(seconds % 3600 / 60))\(two(seconds % 60))Z"
    }

    /// URI-encodes per SigV4: every byte but the unreserved `A-Z a-z 0-9 - . _ ~` becomes `%XX`
    /// (upper-case hex, UTF-8), `/` kept when `keepSlash` (paths) and encoded otherwise.
    package static func uriEncode(_ text: String, keepSlash: Bool) -> String {
        let hexDigits = Array("0123456789ABCDEF".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(text.utf8.count)
        for byte in text.utf8 {
            switch byte {
            case 0x41...0x5A, 0x61...0x7A, 0x30...0x39, 0x2D, 0x2E, 0x5F, 0x7E: out.append(byte)
            case 0x2F where keepSlash: out.append(byte)
            default: out += [0x25, hexDigits[Int(byte >> 4)], hexDigits[Int(byte & 0x0F)]]
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Lower-case hex of bytes.
    package static func hex<Bytes: Sequence>(_ bytes: Bytes) -> String where Bytes.Element == UInt8 {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        for byte in bytes { out += [digits[Int(byte >> 4)], digits[Int(byte & 0x0F)]] }
        return String(decoding: out, as: UTF8.self)
    }

    /// A header value as canonical headers hold it: trimmed, inner runs of spaces made one.
    static func trimmed(_ value: String) -> String {
        var out: [UInt8] = []
        var pendingSpace = false
        for byte in value.utf8 {
            if byte == 0x20 || byte == 0x09 {
                pendingSpace = !out.isEmpty
            } else {
                if pendingSpace { out.append(0x20) }
                pendingSpace = false
                out.append(byte)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}
