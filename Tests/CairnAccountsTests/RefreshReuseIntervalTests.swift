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

@Suite("Accounts: refresh-token reuse interval")
struct RefreshReuseIntervalTests {
    /// Presents `token` to `POST /auth/refresh-token`.
    func refresh(_ client: any TestClientProtocol, _ token: String) async throws -> TestResponse {
        try await client.json(.post, "/auth/refresh-token", ["refreshToken": token])
    }

    /// A token presented again up to 10 s (the default interval) after its rotation answers the
    /// same successor and a working access token; 1 ms later it is reuse, and the family ends.
    @Test(arguments: TestEngine.available)
    func aRotatedTokenGivesTheSameSuccessorUntilTheIntervalEnds(engine: TestEngine) async throws {
        let clock = TestClock()
        try await withTestApp(engine, clock: clock) { app in
            let (_, login) = try await app.client.registerAndLogin(email: "tabs@example.com")
            let first = try await refresh(app.client, login.refreshToken)
            #expect(first.status == .ok)
            let successor = try #require(first.object["refreshToken"] as? String)

            clock.advance(by: .seconds(10))
            let again = try await refresh(app.client, login.refreshToken)
            #expect(again.status == .ok)
            #expect(again.object["refreshToken"] as? String == successor)
            let access = try #require(again.object["accessToken"] as? String)
            #expect(try await app.client.json(.get, "/users/me", token: access).status == .ok)

            clock.advance(by: .milliseconds(1))
            let late = try await refresh(app.client, login.refreshToken)
            #expect(late.status == .unauthorized)
            #expect(late.code == "refresh_token_reused")
            #expect(try await refresh(app.client, successor).code == "invalid_refresh_token")
            #expect(try await app.client.json(.get, "/users/me", token: access).status == .unauthorized)
        }
    }

    /// When the successor was itself rotated within the interval (one tab refreshed twice), the
    /// old token answers the family's newest token, not a used one; no refresh token is stored in
    /// plain text, only hashes and random salts.
    @Test(arguments: TestEngine.available)
    func theOldTokenFollowsTheChainToTheNewestSuccessor(engine: TestEngine) async throws {
        let clock = TestClock()
        try await withTestApp(engine, clock: clock) { app in
            let (_, login) = try await app.client.registerAndLogin(email: "chain@example.com")
            let second = try #require(try await refresh(app.client, login.refreshToken).object["refreshToken"] as? String)
            clock.advance(by: .seconds(4))
            let third = try #require(try await refresh(app.client, second).object["refreshToken"] as? String)
            clock.advance(by: .seconds(4))
            let retried = try await refresh(app.client, login.refreshToken)
            #expect(retried.status == .ok)
            #expect(retried.object["refreshToken"] as? String == third)
            let fourth = try await refresh(app.client, third)
            #expect(fourth.status == .ok)

            let stored = try await app.database.read { db in
                try await db.raw("SELECT token_hash, successor_salt FROM refresh_tokens").all().map { row in
                    [try row.decode(column: "token_hash", as: String.self), try row.decode(column: "successor_salt", as: String?.self) ?? ""]
                }
            }
            let text = stored.flatMap { $0 }.joined(separator: " ")
            for token in [login.refreshToken, second, third] { #expect(!text.contains(token)) }
        }
    }

    /// A tab that logs out within the interval ends the session; the other tab's retry of the
    /// old token is then `invalid_refresh_token`, not a theft alarm that would end the user's
    /// other sessions too.
    @Test(arguments: TestEngine.available)
    func aLogoutWithinTheIntervalIsNoTheftAlarm(engine: TestEngine) async throws {
        let clock = TestClock()
        try await withTestApp(engine, clock: clock) { app in
            let (_, login) = try await app.client.registerAndLogin(email: "logout-tab@example.com")
            let phone = try await app.client.login(email: "logout-tab@example.com", password: "correct horse battery")
            let successor = try #require(try await refresh(app.client, login.refreshToken).object["refreshToken"] as? String)
            clock.advance(by: .seconds(2))
            #expect(try await app.client.json(.post, "/auth/logout", ["refreshToken": successor]).status == .noContent)
            clock.advance(by: .seconds(2))
            let retried = try await refresh(app.client, login.refreshToken)
            #expect(retried.status == .unauthorized)
            #expect(retried.code == "invalid_refresh_token")
            #expect(try await refresh(app.client, phone.refreshToken).status == .ok, "the phone's session was ended")
        }
    }

    /// Eight real HTTP clients present one refresh token at the same moment (Python threads
    /// released by a barrier): every one gets 200 and the same successor, every access token
    /// works, and the successor rotates on. Before the interval, seven got `refresh_token_reused`
    /// and the winner's session was revoked with them.
    @Test(arguments: TestEngine.available)
    func concurrentHTTPRefreshesWithOneTokenAllSucceed(engine: TestEngine) async throws {
        try await withTestApp(engine, mode: .live, runServices: false) { app in
            let (_, login) = try await app.client.registerAndLogin(email: "parallel@example.com")
            let script = """
                import json, sys, threading, urllib.request, urllib.error
                base, token, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
                barrier = threading.Barrier(n)
                results = [None] * n
                def go(i):
                    request = urllib.request.Request(base + "/auth/refresh-token", data=json.dumps({"refreshToken": token}).encode(),
                                                     headers={"Content-Type": "application/json"}, method="POST")
                    barrier.wait()
                    try:
                        with urllib.request.urlopen(request, timeout=60) as response:
                            results[i] = {"status": response.status, "body": json.load(response)}
                    except urllib.error.HTTPError as error:
                        results[i] = {"status": error.code, "body": json.load(error)}
                threads = [threading.Thread(target=go, args=(i,)) for i in range(n)]
                for thread in threads: thread.start()
                for thread in threads: thread.join()
                print(json.dumps(results))
                """
            let output = try await runPython(script, [app.baseURL, login.refreshToken, "8"])
            let results = try #require(try JSONSerialization.jsonObject(with: output) as? [[String: Any]])
            #expect(results.count == 8)
            let statuses = results.map { $0["status"] as? Int }
            #expect(statuses.allSatisfy { $0 == 200 }, "\(results)")
            let bodies = results.compactMap { $0["body"] as? [String: Any] }
            let successors = Set(bodies.compactMap { $0["refreshToken"] as? String })
            #expect(successors.count == 1)
            for access in bodies.compactMap({ $0["accessToken"] as? String }) {
                #expect(try await app.client.json(.get, "/users/me", token: access).status == .ok)
            }
            let successor = try #require(successors.first)
            #expect(try await refresh(app.client, successor).status == .ok)
        }
    }
}
