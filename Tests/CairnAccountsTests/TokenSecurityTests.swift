import CairnAccounts
import CairnHTTP
import CairnServer
import CairnStorage
import CairnTestSupport
import Crypto
import Foundation
import HTTPTypes
import HummingbirdTesting
import Testing

/// Builds compact JWS strings by hand, to forge what a library would refuse to produce.
enum Forge {
    static func encode(_ object: [String: Any]) -> String {
        Base64URL.encode(try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]))
    }

    static func parts(_ token: String) -> (header: [String: Any], claims: [String: Any], signature: String) {
        let pieces = token.split(separator: ".").map(String.init)
        let header = try! JSONSerialization.jsonObject(with: Data(Base64URL.decode(pieces[0])!)) as! [String: Any]
        let claims = try! JSONSerialization.jsonObject(with: Data(Base64URL.decode(pieces[1])!)) as! [String: Any]
        return (header, claims, pieces[2])
    }

    static func hs256(header: [String: Any], claims: [String: Any], secret: [UInt8]) -> String {
        let input = encode(header) + "." + encode(claims)
        let mac = HMAC<SHA256>.authenticationCode(for: Array(input.utf8), using: SymmetricKey(data: secret))
        return input + "." + Base64URL.encode(Array(mac))
    }

    static func ed25519(header: [String: Any], claims: [String: Any], key: Curve25519.Signing.PrivateKey) -> String {
        let input = encode(header) + "." + encode(claims)
        return input + "." + Base64URL.encode(try! key.signature(for: Array(input.utf8)))
    }
}

@Suite("Bearer tokens (RFC 6750, RFC 8725)")
struct TokenSecurityTests {
    /// The `Authorization` value's token is accepted exactly when every character is one of
    /// RFC 6750 §2.1's `b64token` set: each ASCII character and a few beyond it, alone and
    /// inside a token; the scheme is case-insensitive and surrounding spaces are dropped.
    @Test func bearerTokensAcceptExactlyTheB64TokenCharacters() {
        let allowed = Set("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-._~+/=".unicodeScalars)
        for value in UInt32(0)..<128 {
            let scalar = Unicode.Scalar(value)!
            let char = String(Character(scalar))
            #expect(BearerMiddleware.isB64Token(char[...].utf8) == allowed.contains(scalar), "\(value)")
            #expect(BearerMiddleware.isB64Token("abc\(char)def"[...].utf8) == allowed.contains(scalar), "\(value)")
        }
        for text in ["é", "a\u{00A0}b", "\u{1F600}", ""] { #expect(!BearerMiddleware.isB64Token(text[...].utf8), "\(text)") }
        #expect(BearerMiddleware.bearerToken("bEaReR  eyJ.a-b_c~d+e/f==  ") == "eyJ.a-b_c~d+e/f==")
        #expect(BearerMiddleware.bearerToken("Bearer eyJ a") == nil)
        #expect(BearerMiddleware.bearerToken("Bearer é") == nil)
        #expect(BearerMiddleware.bearerToken("Basic abc") == nil)
    }

    /// Registers, logs in, and checks a forged variant of the token is refused with `code`.
    func expectRefused(
        _ engine: TestEngine, code: String = "invalid_token",
        forge: @escaping @Sendable (_ token: String, _ components: CairnComponents) async throws -> String
    ) async throws {
        try await withTestApp(engine) { client, components in
            let (_, tokens) = try await client.registerAndLogin(email: "mallory@example.com")
            let genuine = tokens.accessToken
            #expect(try await client.json(.get, "/users/me", token: genuine).status == .ok)
            let forged = try await forge(genuine, components)
            let response = try await client.json(.get, "/users/me", token: forged)
            #expect(response.status == .unauthorized)
            #expect(response.code == code)
            #expect(response.headers[.wwwAuthenticate]?.hasPrefix("Bearer") == true)
            if code == "invalid_token" || code == "token_expired" {
                #expect(response.headers[.wwwAuthenticate]?.contains("error=\"invalid_token\"") == true)
            }
        }
    }

    @Test(arguments: TestEngine.available)
    func algNoneIsRefused(engine: TestEngine) async throws {
        try await expectRefused(engine) { token, _ in
            var (header, claims, _) = Forge.parts(token)
            header["alg"] = "none"
            return Forge.encode(header) + "." + Forge.encode(claims) + "."
        }
    }

    @Test(arguments: TestEngine.available)
    func tamperedClaimsAreRefused(engine: TestEngine) async throws {
        try await expectRefused(engine) { token, _ in
            var (header, claims, signature) = Forge.parts(token)
            claims["role"] = "admin"
            claims["tid"] = UUIDv7.make()
            return Forge.encode(header) + "." + Forge.encode(claims) + "." + signature
        }
    }

    @Test(arguments: TestEngine.available)
    func tamperedSignatureIsRefused(engine: TestEngine) async throws {
        try await expectRefused(engine) { token, _ in
            var bytes = Array(token.utf8)
            let index = bytes.count - 5
            bytes[index] = bytes[index] == UInt8(ascii: "A") ? UInt8(ascii: "B") : UInt8(ascii: "A")
            return String(decoding: bytes, as: UTF8.self)
        }
    }

    @Test(arguments: TestEngine.available)
    func tokenSignedWithAnotherKeyIsRefused(engine: TestEngine) async throws {
        try await expectRefused(engine) { token, _ in
            let (header, claims, _) = Forge.parts(token)
            return Forge.ed25519(header: header, claims: claims, key: Curve25519.Signing.PrivateKey())
        }
    }

    @Test(arguments: TestEngine.available)
    func hs256SignedWithThePublicKeyIsRefused(engine: TestEngine) async throws {
        // The classic algorithm-confusion attack: HMAC keyed with the published public key.
        try await expectRefused(engine) { token, components in
            var (header, claims, _) = Forge.parts(token)
            header["alg"] = "HS256"
            let x = components.accounts.tokens.jwks.first!["x"]!
            return Forge.hs256(header: header, claims: claims, secret: Base64URL.decode(x)!)
        }
    }

    @Test(arguments: TestEngine.available)
    func unknownKeyIdIsRefused(engine: TestEngine) async throws {
        try await expectRefused(engine) { token, _ in
            var (header, claims, signature) = Forge.parts(token)
            header["kid"] = "ed25519-unknown"
            return Forge.encode(header) + "." + Forge.encode(claims) + "." + signature
        }
    }

    @Test(arguments: TestEngine.available)
    func expiredTokenIsTokenExpiredBeyondTheLeeway(engine: TestEngine) async throws {
        try await expectRefused(engine, code: "token_expired") { token, components in
            let claims = Forge.parts(token).claims
            let issued = Date().addingTimeInterval(-900 - 61)
            return try await components.accounts.tokens.issueAccessToken(
                userId: claims["sub"] as! String, tenantId: claims["tid"] as! String, role: .owner, sessionId: claims["sid"] as! String,
                now: issued
            ).token
        }
        // Within the 60 s leeway the token is still accepted.
        try await withTestApp(engine) { client, components in
            let (user, _) = try await client.registerAndLogin(email: "leeway@example.com")
            let token = try await components.accounts.tokens.issueAccessToken(
                userId: user.id, tenantId: user.tenantId, role: .owner, sessionId: UUIDv7.make(),
                now: Date().addingTimeInterval(-900 - 30)
            ).token
            #expect(try await client.json(.get, "/users/me", token: token).status == .ok)
        }
    }

    @Test(arguments: TestEngine.available)
    func wrongAudienceAndIssuerAreRefused(engine: TestEngine) async throws {
        for field in ["aud", "iss"] {
            try await expectRefused(engine) { token, components in
                let directory = components.accounts.tokens.settings.keyFile
                var settings = TokenSettings(keyFile: directory)
                settings.keyFileSecrets = components.accounts.tokens.settings.keyFileSecrets
                if field == "aud" { settings.audience = "another-service" } else { settings.issuer = "someone-else" }
                let other = try await TokenService(settings: settings)  // same keys, other claims
                let claims = Forge.parts(token).claims
                return try await other.issueAccessToken(
                    userId: claims["sub"] as! String, tenantId: claims["tid"] as! String, role: .owner, sessionId: claims["sid"] as! String
                ).token
            }
        }
    }

    @Test(arguments: TestEngine.available)
    func malformedHeadersAreRefusedAndSchemeIsCaseInsensitive(engine: TestEngine) async throws {
        try await withTestApp(engine) { client, _ in
            let (_, tokens) = try await client.registerAndLogin(email: "hdr@example.com")
            let token = tokens.accessToken
            let missing = try await client.execute(uri: "/users/me", method: .get)
            #expect(missing.status == .unauthorized)
            #expect(missing.code == "unauthorized")
            #expect(missing.headers[.wwwAuthenticate] == "Bearer realm=\"cairn\"")
            for value in ["Bearer", "Bearer not a token", "Bearer a.b", "Bearer ....", "Bearer \(token)x\u{7F}"] {
                let response = try await client.execute(uri: "/users/me", method: .get, headers: [.authorization: value])
                #expect(response.status == .unauthorized, "\(value)")
                #expect(response.code == "invalid_token", "\(value)")
            }
            let lower = try await client.execute(uri: "/users/me", method: .get, headers: [.authorization: "bearer \(token)"])
            #expect(lower.status == .ok)
        }
    }

    /// A token has one spelling: the same signature with `=` padding, or with other unused low
    /// bits in its last character (which a lenient base64url decoder maps to the same bytes),
    /// is 401 `invalid_token` (RFC 7515 §2: base64url without padding).
    @Test(arguments: TestEngine.available)
    func aTokenIsAcceptedInItsOneSpellingOnly(engine: TestEngine) async throws {
        try await withTestApp(engine) { client, _ in
            let (_, tokens) = try await client.registerAndLogin(email: "spelling@example.com")
            let token = tokens.accessToken
            let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
            let signature = String(token.split(separator: ".")[2])
            let last = try #require(alphabet.firstIndex(of: signature.last!))
            // The last character's low bits the signature's length leaves unused.
            let unusedBits = (6 * signature.count) % 8
            #expect(unusedBits > 0)
            let respellings = (0..<(1 << unusedBits)).map { alphabet[(last & ~((1 << unusedBits) - 1)) | $0] }.filter { $0 != signature.last! }
            #expect(!respellings.isEmpty)
            for spelling in respellings.map({ String(token.dropLast()) + String($0) }) + [token + "=", token + "=="] {
                let response = try await client.execute(uri: "/users/me", method: .get, headers: [.authorization: "Bearer \(spelling)"])
                #expect(response.status == .unauthorized, "\(spelling.suffix(4))")
                #expect(response.code == "invalid_token", "\(spelling.suffix(4))")
            }
            #expect(try await client.json(.get, "/users/me", token: token).status == .ok)
        }
    }

    /// Two `Authorization` fields are not one credential (RFC 9110 §5.3: only list-valued
    /// fields repeat), even when each alone is a valid token: 401 `invalid_token`.
    @Test(arguments: TestEngine.available)
    func twoAuthorizationFieldsAreRefused(engine: TestEngine) async throws {
        try await withTestApp(engine) { client, _ in
            let (_, tokens) = try await client.registerAndLogin(email: "twice@example.com")
            var headers = HTTPFields()
            headers.append(HTTPField(name: .authorization, value: "Bearer \(tokens.accessToken)"))
            headers.append(HTTPField(name: .authorization, value: "Bearer \(tokens.accessToken)"))
            let response = try await client.execute(uri: "/users/me", method: .get, headers: headers)
            #expect(response.status == .unauthorized)
            #expect(response.code == "invalid_token")
            let once = try await client.execute(uri: "/users/me", method: .get, headers: [.authorization: "Bearer \(tokens.accessToken)"])
            #expect(once.status == .ok)
        }
    }

    /// `Authorization: Basic …` (or any scheme but Bearer) carries no Bearer credential: 401
    /// `unauthorized` with a bare `WWW-Authenticate: Bearer` challenge, as without a header
    /// (RFC 6750 §3.1: no error code when the client used another authentication method).
    @Test(arguments: TestEngine.available)
    func anotherSchemeIsAskedForABearerTokenWithoutAnErrorCode(engine: TestEngine) async throws {
        try await withTestApp(engine) { client, _ in
            _ = try await client.registerAndLogin(email: "basic@example.com")
            for value in ["Basic dXNlcjpwYXNz", "basic Y29ycmVjdA==", "Digest username=\"a\"", "Bearer2 abc", "Token abc"] {
                let response = try await client.execute(uri: "/users/me", method: .get, headers: [.authorization: value])
                #expect(response.status == .unauthorized, "\(value)")
                #expect(response.code == "unauthorized", "\(value)")
                #expect(response.headers[.wwwAuthenticate] == "Bearer realm=\"cairn\"", "\(value)")
            }
        }
    }

    /// A tab between `Bearer` and the token makes a malformed Bearer header, not another scheme:
    /// RFC 9110 §11.4 separates scheme and credentials by spaces only (`1*SP`), so the header
    /// is refused (401 `invalid_token`, saying so) rather than read leniently. It was answered
    /// `unauthorized`, as for `Basic …`, which told the client to send a Bearer token it had sent.
    @Test(arguments: TestEngine.available)
    func aTabAfterTheSchemeIsAMalformedBearerHeader(engine: TestEngine) async throws {
        try await withTestApp(engine) { client, _ in
            let (_, tokens) = try await client.registerAndLogin(email: "tab@example.com")
            let token = tokens.accessToken
            for value in ["Bearer\t\(token)", "bearer\t\t\(token)", "Bearer\t \(token)", "Bearer \t\(token)"] {
                let response = try await client.execute(uri: "/users/me", method: .get, headers: [.authorization: value])
                #expect(response.status == .unauthorized, "\(value.prefix(9).debugDescription)")
                #expect(response.code == "invalid_token", "\(value.prefix(9).debugDescription)")
                #expect(response.headers[.wwwAuthenticate] == #"Bearer realm="cairn", error="invalid_token""#)
                #expect(response.text.contains("spaces only"), "\(response.text)")
            }
            #expect(try await client.json(.get, "/users/me", token: token).status == .ok)
        }
        #expect(BearerMiddleware.isBearerScheme("Bearer\tabc"))
        #expect(BearerMiddleware.bearerToken("Bearer\tabc") == nil)
        #expect(!BearerMiddleware.isBearerScheme("Basic\tabc"))
    }

    /// `access_token` given twice is refused, as a query token beside an Authorization header
    /// is: which one is the credential would be a guess (RFC 6750 §2.3 sends one token, §3.1
    /// calls a repeated parameter an invalid request). 400 `invalid_input` on `access_token`;
    /// the first value used to win.
    @Test(arguments: TestEngine.available)
    func aRepeatedAccessTokenParameterIsRefused(engine: TestEngine) async throws {
        try await withTestApp(engine) { client, _ in
            let (_, tokens) = try await client.registerAndLogin(email: "repeat@example.com")
            let token = tokens.accessToken
            // The first value is not a token: before the fix it was the one read, and refused
            // (401), so no stream opens whichever way this goes.
            for query in ["access_token=not*a*token&access_token=\(token)", "access_token=x&since=0&access_token=y&access_token=z"] {
                let response = try await client.execute(uri: "/notifications/stream?\(query)", method: .get)
                #expect(response.status == .badRequest, "\(query.prefix(30))")
                #expect(response.code == "invalid_input", "\(query.prefix(30))")
                #expect(response.text.contains("access_token"), "\(response.text)")
                #expect(!response.text.contains(token))
            }
            // Once is still fine where the query token counts: a malformed one is looked at.
            #expect(try await client.execute(uri: "/notifications/stream?access_token=not*a*token", method: .get).code == "invalid_token")
        }
    }

    /// curl's own `-u user:password` (HTTP Basic) against a Bearer route, over real HTTP: 401
    /// `unauthorized` and the bare challenge a client needs to switch to a Bearer token.
    @Test func curlWithBasicCredentialsIsToldToUseBearer() async throws {
        try await withTestApp(.sqlite, mode: .live, runServices: false) { app in
            let output = try await runProcess(
                "/usr/bin/curl", ["-sS", "-i", "-u", "ada:correct horse battery", "\(app.baseURL)/users/me"])
            let text = String(decoding: output, as: UTF8.self)
            #expect(text.hasPrefix("HTTP/1.1 401"), "\(text)")
            #expect(text.lowercased().contains("www-authenticate: bearer realm=\"cairn\"\r\n"), "\(text)")
            #expect(text.contains(#""code":"unauthorized""#), "\(text)")
        }
    }

    @Test func hs256ModeSignsWithTheSecretAndPublishesNoKeys() async throws {
        try await withTestApp(.sqlite, configure: { $0.accounts.jwtSecret = String(repeating: "s", count: 40) }) { client, components in
            let (_, tokens) = try await client.registerAndLogin(email: "hmac@example.com")
            let token = tokens.accessToken
            #expect(Forge.parts(token).header["alg"] as? String == "HS256")
            #expect(try await client.json(.get, "/users/me", token: token).status == .ok)
            #expect(components.accounts.tokens.jwks.isEmpty)
            // An EdDSA token is refused by an HS256 node even if well-formed.
            var (header, claims, _) = Forge.parts(token)
            header["alg"] = "EdDSA"
            let forged = Forge.ed25519(header: header, claims: claims, key: Curve25519.Signing.PrivateKey())
            #expect(try await client.json(.get, "/users/me", token: forged).code == "invalid_token")
        }
    }

    @Test func shortHMACSecretIsRejected() async throws {
        var settings = TokenSettings(keyFile: "/nonexistent")
        settings.hmacSecret = "too short"
        await #expect(throws: KeyRingError.self) { try await TokenService(settings: settings) }
    }

    @Test func keyRotationKeepsOldTokensValidAndPublishesBothKeys() async throws {
        let clock = TestClock()
        try await withTestApp(.sqlite, clock: clock) { app in
            let (client, components) = (app.client, app.components)
            let (_, tokens) = try await client.registerAndLogin(email: "rot@example.com")
            let old = tokens.accessToken
            let keyFile = components.accounts.tokens.settings.keyFile
            let attributes = try FileManager.default.attributesOfItem(atPath: keyFile)
            #expect((attributes[.posixPermissions] as? Int) == 0o600)
            let newKid = try await TokenService.rotate(components.accounts.tokens.settings)
            let rotated = try await TokenService(settings: components.accounts.tokens.settings)
            #expect(Set(rotated.jwks.compactMap { $0["kid"] }).count == 2)
            let claims = try await rotated.verify(old)
            #expect(claims.sub == Forge.parts(old).claims["sub"] as? String)
            let fresh = try await rotated.issueAccessToken(userId: claims.sub, tenantId: claims.tid, role: .owner, sessionId: claims.sid)
            #expect(Forge.parts(fresh.token).header["kid"] as? String == newKid)
            // The running node had only the old key; it learns the new one from the ring file,
            // which it re-reads at most every 5 s of its clock.
            clock.advance(by: .seconds(6))
            #expect(try await client.json(.get, "/users/me", token: fresh.token).status == .ok)
        }
    }
}
