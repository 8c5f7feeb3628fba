import CairnObjects
import CairnTestSupport
import Crypto
import Foundation
import Testing

/// AWS Signature Version 4 against the published vectors and against botocore's signer.
@Suite struct SigV4Tests {
    /// The AWS SigV4 test suite's key and time (aws-sig-v4-test-suite, as published in the AWS
    /// General Reference's "Signature Version 4 test suite"; also in botocore's
    /// tests/unit/auth/aws4_testsuite): 2015-08-30T12:36:00Z, us-east-1, service "service".
    static let suite = SigV4Signer(
        credentials: SigV4Credentials(accessKeyId: "AKIDEXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"), region: "us-east-1",
        service: "service")
    static let suiteTime: Int64 = 1_440_938_160

    /// One vector: the request as the suite's `.req` file gives it, the signature of its `.authz`.
    struct Vector: Sendable, CustomTestStringConvertible {
        var name: String
        var method: String
        var path: String
        var query: [(name: String, value: String)] = []
        var headers: [(name: String, value: String)] = []
        var body = ""
        var signedHeaders = "host;x-amz-date"
        var signature: String
        var testDescription: String { name }
    }

    static let vectors: [Vector] = [
        Vector(name: "get-vanilla", method: "GET", path: "/", signature: "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"),
        Vector(
            name: "get-vanilla-query-order-key-case", method: "GET", path: "/", query: [("Param2", "value2"), ("Param1", "value1")],
            signature: "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"),
        Vector(name: "post-vanilla", method: "POST", path: "/", signature: "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"),
        Vector(
            name: "post-x-www-form-urlencoded", method: "POST", path: "/", headers: [("Content-Type", "application/x-www-form-urlencoded")],
            body: "Param1=value1", signedHeaders: "content-type;host;x-amz-date",
            signature: "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a"),
        Vector(name: "get-utf8", method: "GET", path: "/ሴ", signature: "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85"),
        Vector(
            name: "get-unreserved", method: "GET", path: "/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
            signature: "07ef7494c76fa4850883e2b006601f940f8a34d404d0cfa977f52a65bbf5f24f"),
    ]

    @Test(arguments: vectors)
    func matchesTheAWSTestSuite(vector: Vector) {
        let request = SigV4Signer.Request(
            method: vector.method, path: vector.path, query: vector.query, headers: [("Host", "example.amazonaws.com")] + vector.headers)
        let payloadHash = SigV4Signer.hex(SHA256.hash(data: Array(vector.body.utf8)))
        let added = Self.suite.sign(request, payloadHash: payloadHash, time: Self.suiteTime, contentHashHeader: false)
        let authorization = added.first { $0.name == "authorization" }?.value
        #expect(
            authorization
                == "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=\(vector.signedHeaders), Signature=\(vector.signature)"
        )
        #expect(added.first { $0.name == "x-amz-date" }?.value == "20150830T123600Z")
    }

    /// get-vanilla's canonical request and string to sign, exactly as the suite's `.creq` and `.sts`.
    @Test func reproducesTheCanonicalRequestAndStringToSign() {
        let request = SigV4Signer.Request(
            method: "GET", path: "/", headers: [("Host", "example.amazonaws.com"), ("X-Amz-Date", "20150830T123600Z")])
        let (canonical, signed) = Self.suite.canonicalRequest(request, payloadHash: SigV4Signer.emptyPayloadHash)
        #expect(
            canonical
                == "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        )
        #expect(signed == "host;x-amz-date")
        #expect(
            Self.suite.stringToSign(canonical: canonical, timestamp: "20150830T123600Z", scope: "20150830/us-east-1/service/aws4_request")
                == "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\nbb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63"
        )
    }

    /// The GET Object example of the S3 documentation ("Signature Calculations for the
    /// Authorization Header", sig-v4-header-based-auth): Range and `x-amz-content-sha256` signed.
    @Test func matchesTheS3DocumentationsGetObjectExample() {
        let signer = SigV4Signer(
            credentials: SigV4Credentials(accessKeyId: "AKIAIOSFODNN7EXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
            region: "us-east-1")
        let request = SigV4Signer.Request(
            method: "GET", path: "/test.txt", headers: [("Host", "examplebucket.s3.amazonaws.com"), ("Range", "bytes=0-9")])
        let added = signer.sign(request, payloadHash: SigV4Signer.emptyPayloadHash, time: 1_369_353_600)
        #expect(
            added.first { $0.name == "authorization" }?.value
                == "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        )
    }

    @Test func formatsTimestampsInUTC() {
        #expect(SigV4Signer.timestamp(0) == "19700101T000000Z")
        #expect(SigV4Signer.timestamp(951_782_400) == "20000229T000000Z")  // a leap day of a year divisible by 400
        #expect(SigV4Signer.timestamp(4_102_444_799) == "20991231T235959Z")
        #expect(SigV4Signer.timestamp(4_107_542_399) == "21000228T235959Z")  // 2100 is no leap year
        #expect(SigV4Signer.timestamp(-1) == "19691231T235959Z")
    }

    @Test func encodesLikeS3() {
        #expect(SigV4Signer.uriEncode("/a b/ü+=&~._-/c", keepSlash: true) == "/a%20b/%C3%BC%2B%3D%26~._-/c")
        #expect(SigV4Signer.uriEncode("a/b", keepSlash: false) == "a%2Fb")
        // Already-encoded text is encoded again: S3 signs the path as sent, once.
        #expect(SigV4Signer.uriEncode("%41", keepSlash: true) == "%2541")
    }

    @Test func credentialsNeverPrintTheirSecrets() {
        let credentials = SigV4Credentials(accessKeyId: "AKID", secretAccessKey: "very-secret", sessionToken: "session-secret")
        let text = "\(credentials) \(String(reflecting: credentials))"
        #expect(!text.contains("very-secret") && !text.contains("session-secret"))
    }

    /// The same requests signed by botocore's `S3SigV4Auth` (the AWS SDK for Python's signer,
    /// time fixed): the Authorization headers are equal, with a session token, an odd key (space,
    /// `+`, non-ASCII), a query that needs encoding, and a signed payload or UNSIGNED-PAYLOAD.
    @Test(arguments: [false, true])
    func agreesWithBotocore(unsigned: Bool) async throws {
        let credentials = SigV4Credentials(accessKeyId: "AKIDTEST", secretAccessKey: "s3cr3t/+key", sessionToken: "token/with+chars=")
        let signer = SigV4Signer(credentials: credentials, region: "eu-central-1")
        let body = "hello, store"
        let payloadHash = unsigned ? SigV4Signer.unsignedPayload : SigV4Signer.hex(SHA256.hash(data: Array(body.utf8)))
        let request = SigV4Signer.Request(
            method: "PUT", path: "/bucket/ten ant/a b+ü=c.csv", query: [("uploadId", "x/y+z="), ("partNumber", "2")],
            headers: [("Host", "127.0.0.1:9000"), ("Content-Type", "text/csv"), ("Range", "bytes=0-9")])
        let time: Int64 = 1_796_385_600
        let added = signer.sign(request, payloadHash: payloadHash, time: time)
        let ours = try #require(added.first { $0.name == "authorization" }?.value)
        let order: [String: Any] = [
            // botocore signs UNSIGNED-PAYLOAD only over https, with S3 payload signing off.
            "url": (unsigned ? "https" : "http") + "://127.0.0.1:9000" + request.encodedPath, "unsigned": unsigned,
            "query": request.query.map { [$0.name, $0.value] },
            "path": request.path, "encodedPath": request.encodedPath,
            "headers": ["Content-Type": "text/csv", "Range": "bytes=0-9", "X-Amz-Content-SHA256": payloadHash], "body": body,
            "time": time,
        ]
        let script = """
            import datetime, json, sys, urllib.parse
            from unittest import mock
            import botocore.auth, botocore.config
            from botocore.awsrequest import AWSRequest
            from botocore.credentials import Credentials
            o = json.loads(sys.argv[1])
            # botocore's serializer encodes keys with quote(key, safe='/~'): the path must agree.
            assert urllib.parse.quote(o["path"], safe="/~") == o["encodedPath"], urllib.parse.quote(o["path"], safe="/~")
            req = AWSRequest(method="PUT", url=o["url"], params=[tuple(p) for p in o["query"]], data=o["body"].encode(), headers=o["headers"])
            req.context["client_config"] = botocore.config.Config(s3={"payload_signing_enabled": not o["unsigned"]})
            auth = botocore.auth.S3SigV4Auth(Credentials("AKIDTEST", "s3cr3t/+key", "token/with+chars="), "s3", "eu-central-1")
            when = datetime.datetime.fromtimestamp(o["time"], tz=datetime.timezone.utc)
            with mock.patch("botocore.auth.get_current_datetime", return_value=when):
                auth.add_auth(req)
            print(json.dumps({"authorization": req.headers["Authorization"], "token": req.headers["X-Amz-Security-Token"]}))
            """
        let data = try JSONSerialization.data(withJSONObject: order)
        let output = try await runPython(script, [String(decoding: data, as: UTF8.self)])
        let theirs = try #require(try JSONSerialization.jsonObject(with: output) as? [String: String])
        #expect(ours == theirs["authorization"])
        #expect(added.first { $0.name == "x-amz-security-token" }?.value == theirs["token"])
    }
}
