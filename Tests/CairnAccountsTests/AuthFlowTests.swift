import CairnAccounts
import CairnHTTP
import CairnServer
import CairnStorage
import CairnTestSupport
import Foundation
import HTTPTypes
import HummingbirdTesting
import SQLKit
import Testing

/// A login of `email` with a wrong password: the attempt the login limits count.
private func failedLogin(_ client: any TestClientProtocol, _ email: String, headers: HTTPFields = [:]) async throws -> TestResponse {
    try await client.json(.post, "/auth/login", ["email": email, "password": "wrong password"], headers: headers)
}

/// The client address of every recorded login failure (a row each), sorted.
private func failedLoginClients(_ database: Database) async throws -> [String] {
    try await database.read { db in
        try await db.raw("SELECT client FROM login_failures ORDER BY client").all().map { try $0.decode(column: "client", as: String.self) }
    }
}

@Suite("Registration and login")
struct RegistrationTests {
    @Test(arguments: TestEngine.available)
    func registerCreatesOwnerWithoutLeakingTheHash(engine: TestEngine) async throws {
        try await withTestApp(engine) { client, _ in
            let response = try await client.json(
                .post, "/auth/register", ["email": "  Ada@Example.COM ", "password": "long enough pw", "name": " Ada ", "tenantName": "Analytical"])
            #expect(response.status == .created)
            let user = response.object
            #expect(user["email"] as? String == "Ada@Example.COM")
            #expect(user["name"] as? String == "Ada")
            #expect(user["role"] as? String == "owner")
            #expect(response.headers[.location] == "/users/\(user["id"] as? String ?? "")")
            #expect(!response.text.contains("$2"))  // no bcrypt hash anywhere
            #expect(!response.text.lowercased().contains("password"))
        }
    }

    @Test(arguments: TestEngine.available)
    func emailsDifferingOnlyInCaseOrNormalisationAreOneAccount(engine: TestEngine) async throws {
        try await withTestApp(engine) { client, _ in
            let first = try await client.json(.post, "/auth/register", ["email": "jos\u{E9}@example.com", "password": "long enough pw", "name": "A"])
            #expect(first.status == .created)
            let upper = try await client.json(.post, "/auth/register", ["email": "JOS\u{C9}@EXAMPLE.COM", "password": "long enough pw", "name": "B"])
            #expect(upper.status == .conflict)
            #expect(upper.code == "conflict")
            // "e" + combining acute accent is the same address after NFC normalisation.
            let decomposed = try await client.json(
                .post, "/auth/register", ["email": "jose\u{301}@example.com", "password": "long enough pw", "name": "C"])
            #expect(decomposed.status == .conflict)
            let login = try await client.json(.post, "/auth/login", ["email": "JOSE\u{301}@example.com", "password": "long enough pw"])
            #expect(login.status == .ok)
        }
    }

    @Test(arguments: TestEngine.available)
    func invalidFieldsAreListed(engine: TestEngine) async throws {
        try await withTestApp(engine) { client, _ in
            let response = try await client.json(.post, "/auth/register", ["email": "not-an-email", "password": "short", "name": ""])
            #expect(response.status == .badRequest)
            #expect(response.code == "invalid_input")
            let fields = Set((response.object["errors"] as? [[String: Any]] ?? []).compactMap { $0["field"] as? String })
            #expect(fields == ["email", "password", "name"])
            let long = try await client.json(
                .post, "/auth/register", ["email": "a@b.co", "password": String(repeating: "x", count: 129), "name": "A"])
            #expect(long.status == .badRequest)
            let wrongType = try await client.json(.post, "/auth/register", ["email": "a@b.co", "password": 12345678, "name": "A"])
            #expect(wrongType.status == .badRequest)
            #expect((wrongType.object["errors"] as? [[String: Any]])?.first?["field"] as? String == "password")
        }
    }

    @Test(arguments: TestEngine.available)
    func loginAnswersTheSameForUnknownEmailAndWrongPassword(engine: TestEngine) async throws {
        try await withTestApp(engine) { client, _ in
            _ = try await client.registerAndLogin(email: "bob@example.com")
            let wrong = try await failedLogin(client, "bob@example.com")
            let unknown = try await failedLogin(client, "nobody@example.com")
            #expect(wrong.status == .unauthorized)
            #expect(unknown.status == .unauthorized)
            #expect(wrong.code == "invalid_credentials")
            #expect(wrong.text == unknown.text)
            let ok = try await client.login(email: "BOB@example.com", password: "correct horse battery")
            #expect(ok.tokenType == "Bearer")
            #expect(ok.expiresIn == 900)
        }
    }

    @Test func passwordsAreComparedWhollyNotCutAtBcrypts72BytesOrAtNUL() async throws {
        try await withTestApp(.sqlite) { client, _ in
            let long = String(repeating: "a", count: 72)
            _ = try await client.registerAndLogin(email: "long@example.com", password: long + "XYZ")
            let differentTail = try await client.json(.post, "/auth/login", ["email": "long@example.com", "password": long + "different"])
            #expect(differentTail.status == .unauthorized)
            let nul = try await client.json(.post, "/auth/register", ["email": "nul@example.com", "password": "abcdefgh\u{0}xyz", "name": "N"])
            #expect(nul.status == .badRequest)  // NUL never reaches storage or bcrypt
            let multibyte = String(repeating: "é", count: 40)  // 80 bytes
            _ = try await client.registerAndLogin(email: "mb@example.com", password: multibyte + "1")
            let cut = try await client.json(.post, "/auth/login", ["email": "mb@example.com", "password": multibyte + "2"])
            #expect(cut.status == .unauthorized)
        }
    }

    @Test(arguments: TestEngine.available)
    func loginIsRateLimitedPerEmailInTheDatabase(engine: TestEngine) async throws {
        try await withTestApp(engine) { client, components in
            _ = try await client.registerAndLogin(email: "carol@example.com")
            for _ in 0..<5 {
                let response = try await failedLogin(client, "carol@example.com")
                #expect(response.status == .unauthorized)
            }
            // Even the right password is refused now.
            let limited = try await client.json(.post, "/auth/login", ["email": "Carol@example.com", "password": "correct horse battery"])
            #expect(limited.status == .tooManyRequests)
            #expect(limited.code == "rate_limited")
            let retryAfter = Int(limited.headers[.retryAfter] ?? "") ?? 0
            #expect(retryAfter > 800 && retryAfter <= 900)
            #expect(limited.headers[HTTPField.Name("RateLimit-Policy")!] == "5;w=900")
            // The counters live in the database, where every node reads them.
            let count = try await components.database.rowCount("login_failures")
            #expect(count == 5)
        }
    }

    @Test(arguments: TestEngine.available)
    func concurrentWrongLoginsForOneEmailAreCountedOneByOne(engine: TestEngine) async throws {
        try await withTestApp(engine, mode: .live, configure: { $0.accounts.loginMaxPerEmail = 4 }, runServices: false) { app in
            let client = app.client
            _ = try await client.registerAndLogin(email: "dave@example.com")
            let answers = try await withThrowingTaskGroup(of: TestResponse.self) { group in
                for _ in 0..<40 {
                    group.addTask { try await failedLogin(client, "dave@example.com") }
                }
                return try await group.reduce(into: [TestResponse]()) { $0.append($1) }
            }
            // Exactly the configured number reach bcrypt; the rest are refused before it.
            #expect(answers.filter { $0.status == .unauthorized }.count == 4)
            let limited = answers.filter { $0.status == .tooManyRequests }
            #expect(limited.count == 36)
            #expect(limited.allSatisfy { $0.code == "rate_limited" && (Int($0.headers[.retryAfter] ?? "") ?? 0) > 0 })
            let recorded = try await app.database.rowCount("login_failures")
            #expect(recorded == 4)
        }
    }

    /// A login refused only because other attempts for the email are still being checked (a
    /// burst of logins with the right password, say) is told to retry in a second, not after
    /// the window; attempts found wrong, or left unsettled for 30 s by a node that stopped,
    /// count as failures and the window applies. Then concurrent right logins all get in.
    @Test(arguments: TestEngine.available)
    func loginsRefusedForAttemptsInFlightRetryInASecond(engine: TestEngine) async throws {
        try await withTestApp(engine, mode: .live, configure: { $0.accounts.loginMaxPerEmail = 3 }, runServices: false) { app in
            let (client, database) = (app.client, app.database)
            _ = try await client.registerAndLogin(email: "erin@example.com")
            let right = ["email": "erin@example.com", "password": "correct horse battery"]
            #expect(try await failedLogin(client, "erin@example.com").status == .unauthorized)
            let failure = try #require(
                try await database.read { db in try await db.raw("SELECT email_key, client, at, settled_at FROM login_failures").first() })
            #expect(try failure.decode(column: "settled_at", as: Int64?.self) != nil, "a wrong password settles its attempt as a failure")
            let (key, address) = (try failure.decode(column: "email_key", as: String.self), try failure.decode(column: "client", as: String.self))
            let now = Int64(Date().timeIntervalSince1970 * 1000)
            // Two attempts in flight beside the failure (as concurrent logins leave them).
            func attempt(at: Int64, settled: Int64? = nil) async throws {
                try await database.write { db in
                    try await db.raw(
                        """
                        INSERT INTO login_failures (id, email_key, client, at, settled_at)
                        VALUES (\(bind: UUID().uuidString), \(bind: key), \(bind: address), \(bind: at), \(bind: settled))
                        """
                    ).run()
                }
            }
            try await attempt(at: now)
            try await attempt(at: now)
            let busy = try await client.json(.post, "/auth/login", right)
            #expect(busy.status == .tooManyRequests && busy.code == "rate_limited")
            #expect(busy.headers[.retryAfter] == "1", "\(busy.headers)")
            // Found wrong, the same attempts are failures: the window applies.
            try await database.write { db in try await db.raw("UPDATE login_failures SET settled_at = \(bind: now)").run() }
            let locked = try await client.json(.post, "/auth/login", right)
            #expect(locked.status == .tooManyRequests && (Int(locked.headers[.retryAfter] ?? "") ?? 0) > 800)
            // Attempts never settled by a node that stopped count as failures after 30 s.
            try await database.write { db in try await db.raw("DELETE FROM login_failures").run() }
            for _ in 0..<3 { try await attempt(at: now - 31_000) }
            let stranded = try await client.json(.post, "/auth/login", right)
            #expect(stranded.status == .tooManyRequests && (Int(stranded.headers[.retryAfter] ?? "") ?? 0) > 800)

            // Concurrent right logins: every one gets in, at once or after the retry it is told.
            try await database.write { db in try await db.raw("DELETE FROM login_failures").run() }
            let statuses = try await withThrowingTaskGroup(of: HTTPResponse.Status.self) { group in
                for _ in 0..<12 {
                    group.addTask {
                        for _ in 0..<20 {
                            let answer = try await client.json(.post, "/auth/login", right)
                            guard answer.status == .tooManyRequests, answer.headers[.retryAfter] == "1" else { return answer.status }
                        }
                        return .tooManyRequests
                    }
                }
                return try await group.reduce(into: [HTTPResponse.Status]()) { $0.append($1) }
            }
            #expect(statuses.allSatisfy { $0 == .ok }, "\(statuses)")
            #expect(try await database.rowCount("login_failures") == 0)
        }
    }

    @Test(arguments: TestEngine.available)
    func registrationIsRateLimitedPerClientAddress(engine: TestEngine) async throws {
        try await withTestApp(engine, configure: { $0.accounts.registerMaxPerClient = 2 }) { client, _ in
            for index in 0..<2 {
                let created = try await client.json(
                    .post, "/auth/register", ["email": "owner\(index)@example.com", "password": "correct horse battery", "name": "Owner"])
                #expect(created.status == .created)
            }
            let limited = try await client.json(
                .post, "/auth/register", ["email": "owner9@example.com", "password": "correct horse battery", "name": "Owner"])
            #expect(limited.status == .tooManyRequests)
            #expect(limited.code == "rate_limited")
            #expect((Int(limited.headers[.retryAfter] ?? "") ?? 0) > 3500)
            #expect(limited.headers[HTTPField.Name("RateLimit-Policy")!] == "2;w=3600")
            // Bad input is still answered as such, and costs nothing.
            let invalid = try await client.json(.post, "/auth/register", ["email": "nope", "password": "x", "name": "Owner"])
            #expect(invalid.status == .badRequest)
        }
    }

    @Test(arguments: TestEngine.available)
    func wrongCurrentPasswordsAreRateLimitedPerUser(engine: TestEngine) async throws {
        try await withTestApp(engine, configure: { $0.accounts.passwordChangeMaxFailures = 2 }) { client, _ in
            let (_, tokens) = try await client.registerAndLogin(email: "frank@example.com")
            let token = tokens.accessToken
            // A right current password does not use up the allowance.
            let (_, other) = try await client.registerAndLogin(email: "grace@example.com")
            let changed = try await client.json(
                .put, "/users/me/password", ["currentPassword": "correct horse battery", "newPassword": "another long one"],
                token: other.accessToken)
            #expect(changed.status == .ok)
            for _ in 0..<2 {
                let wrong = try await client.json(
                    .put, "/users/me/password", ["currentPassword": "wrong password", "newPassword": "another long one"], token: token)
                #expect(wrong.status == .badRequest)
            }
            // Now even the right one waits: a stolen access token is no password oracle.
            let limited = try await client.json(
                .put, "/users/me/password", ["currentPassword": "correct horse battery", "newPassword": "another long one"], token: token)
            #expect(limited.status == .tooManyRequests)
            #expect(limited.code == "rate_limited")
            #expect((Int(limited.headers[.retryAfter] ?? "") ?? 0) > 800)
            let grace = try await client.json(
                .put, "/users/me/password", ["currentPassword": "another long one", "newPassword": "a third long one"],
                token: try await client.login(email: "grace@example.com", password: "another long one").accessToken)
            #expect(grace.status == .ok)
        }
    }

    @Test(arguments: TestEngine.available)
    func aFullHashingQueueAnswers503AtOnceAndCountsNothing(engine: TestEngine) async throws {
        let gate = Gate()
        try await withTestApp(engine, configure: { $0.accounts.bcryptQueue = 1 }) { client, components in
            _ = try await client.registerAndLogin(email: "hana@example.com")
            components.accounts.hasher.holdAdmittedWork { try await gate.wait() }
            async let held = client.json(.post, "/auth/login", ["email": "hana@example.com", "password": "correct horse battery"])
            try await gate.waitForArrivals(1, timeout: .seconds(10))
            // The one slot is taken: other logins and registrations are refused, not queued.
            let login = try await failedLogin(client, "ivan@example.com")
            let register = try await client.json(
                .post, "/auth/register", ["email": "ivan@example.com", "password": "correct horse battery", "name": "Ivan"])
            for refused in [login, register] {
                #expect(refused.status == .serviceUnavailable)
                #expect(refused.code == "unavailable")
                #expect(refused.headers[.retryAfter] == "1")
            }
            #expect(gate.arrived == 1)
            gate.open()
            #expect(try await held.status == .ok)
            #expect(components.accounts.hasher.inFlight == 0)
            // Refused attempts were never evaluated, so they use up no allowance.
            #expect(try await components.database.rowCount("login_failures") == 0)
            #expect(try await components.database.rowCount("auth_attempts") == 1)  // hana's own registration
        }
    }

    @Test(arguments: TestEngine.available)
    func aClientCannotChooseItsAddressWithoutTrustedProxies(engine: TestEngine) async throws {
        try await withTestApp(engine, mode: .live, configure: { $0.accounts.loginMaxPerClient = 2 }, runServices: false) { app in
            for index in 0..<2 {
                let spoofed = HTTPFields([
                    HTTPField(name: HTTPField.Name("X-Forwarded-For")!, value: "203.0.113.\(index)"),
                    HTTPField(name: HTTPField.Name("Forwarded")!, value: "for=198.51.100.\(index)"),
                ])
                let wrong = try await failedLogin(app.client, "user\(index)@example.com", headers: spoofed)
                #expect(wrong.status == .unauthorized)
            }
            let limited = try await failedLogin(app.client, "other@example.com", headers: [HTTPField.Name("X-Forwarded-For")!: "192.0.2.99"])
            #expect(limited.status == .tooManyRequests)
            #expect(Set(try await failedLoginClients(app.database)) == ["127.0.0.1"])
        }
    }

    @Test(arguments: TestEngine.available)
    func aTrustedProxysForwardedClientIsCountedSeparately(engine: TestEngine) async throws {
        try await withTestApp(
            engine, mode: .live,
            configure: {
                $0.accounts.loginMaxPerClient = 2
                $0.trustedProxies = try! TrustedProxies(parsing: "127.0.0.0/8, ::1")
            }, runServices: false
        ) { app in
            for index in 0..<3 {
                let wrong = try await failedLogin(
                    app.client, "user\(index)@example.com", headers: [HTTPField.Name("Forwarded")!: "for=\"[2001:db8::\(index)]:4711\""])
                #expect(wrong.status == .unauthorized)
            }
            #expect(try await failedLoginClients(app.database) == ["2001:db8::", "2001:db8::1", "2001:db8::2"])
        }
    }

    @Test(arguments: TestEngine.available)
    func loginIsRateLimitedPerClientAddress(engine: TestEngine) async throws {
        try await withTestApp(engine) { client, _ in
            for index in 0..<20 {
                _ = try await failedLogin(client, "user\(index)@example.com")
            }
            let limited = try await failedLogin(client, "fresh@example.com")
            #expect(limited.status == .tooManyRequests)
            #expect(limited.headers[HTTPField.Name("RateLimit-Policy")!] == "20;w=900")
        }
    }
}

@Suite("Refresh tokens")
struct RefreshTokenTests {
    @Test(arguments: TestEngine.available)
    func refreshRotatesAndReuseRevokesTheFamily(engine: TestEngine) async throws {
        let clock = TestClock()
        try await withTestApp(engine, clock: clock) { app in
            let client = app.client
            let (_, tokens) = try await client.registerAndLogin(email: "dan@example.com")
            let first = tokens.refreshToken
            let rotated = try await client.json(.post, "/auth/refresh-token", ["refreshToken": first])
            #expect(rotated.status == .ok)
            #expect(rotated.headers[.cacheControl] == "no-store")
            let second = rotated.object["refreshToken"] as! String
            #expect(second != first)
            clock.advance(by: .seconds(11))  // past the reuse interval (10 s)
            let reused = try await client.json(.post, "/auth/refresh-token", ["refreshToken": first])
            #expect(reused.status == .unauthorized)
            #expect(reused.code == "refresh_token_reused")
            // The whole family is revoked: the newest token no longer works either.
            let afterReuse = try await client.json(.post, "/auth/refresh-token", ["refreshToken": second])
            #expect(afterReuse.status == .unauthorized)
            let unknown = try await client.json(.post, "/auth/refresh-token", ["refreshToken": "made-up"])
            #expect(unknown.code == "invalid_refresh_token")
        }
    }

    /// With the reuse interval off (`CAIRN_REFRESH_REUSE_INTERVAL=0`), detection is strict:
    /// of eight concurrent presentations of one token exactly one rotates it.
    @Test(arguments: TestEngine.available)
    func withoutAReuseIntervalConcurrentRefreshesLetExactlyOneSucceed(engine: TestEngine) async throws {
        try await withTestApp(engine, configure: { $0.accounts.refreshReuseInterval = 0 }) { client, _ in
            for round in 0..<3 {
                let (_, tokens) = try await client.registerAndLogin(email: "race\(round)@example.com")
                let token = tokens.refreshToken
                let statuses = try await withThrowingTaskGroup(of: HTTPResponse.Status.self) { group in
                    for _ in 0..<8 {
                        group.addTask { try await client.json(.post, "/auth/refresh-token", ["refreshToken": token]).status }
                    }
                    return try await group.reduce(into: [HTTPResponse.Status]()) { $0.append($1) }
                }
                #expect(statuses.filter { $0 == .ok }.count == 1)
                #expect(statuses.filter { $0 == .unauthorized }.count == 7)
            }
        }
    }

    @Test(arguments: TestEngine.available)
    func logoutRevokesTheFamilyAndLogoutAllEveryAccessToken(engine: TestEngine) async throws {
        try await withTestApp(engine) { client, _ in
            let (_, session1) = try await client.registerAndLogin(email: "erin@example.com")
            let session2 = try await client.login(email: "erin@example.com", password: "correct horse battery")
            let logout = try await client.json(.post, "/auth/logout", ["refreshToken": session1.refreshToken])
            #expect(logout.status == .noContent)
            let refused = try await client.json(.post, "/auth/refresh-token", ["refreshToken": session1.refreshToken])
            #expect(refused.status == .unauthorized)
            // The other session is untouched by a single logout.
            let access2 = session2.accessToken
            #expect(try await client.json(.get, "/users/me", token: access2).status == .ok)
            let all = try await client.json(.post, "/auth/logout-all", token: access2)
            #expect(all.status == .noContent)
            let afterAll = try await client.json(.get, "/users/me", token: access2)
            #expect(afterAll.status == .unauthorized)
            #expect(afterAll.code == "invalid_token")
            #expect(
                try await client.json(.post, "/auth/refresh-token", ["refreshToken": session2.refreshToken]).status == .unauthorized)
            // A new login works again.
            let fresh = try await client.login(email: "erin@example.com", password: "correct horse battery")
            #expect(try await client.json(.get, "/users/me", token: fresh.accessToken).status == .ok)
        }
    }
}
