import CairnAccounts
import CairnHTTP
import CairnServer
import CairnStorage
import CairnTestSupport
import Foundation
import HTTPTypes
import HummingbirdTesting
import Testing

@Suite("Accounts: wrong passwords do not lock the real user out")
struct LoginLockoutTests {
    /// Five wrong passwords from one address throttle that address for the email (even with
    /// the right password), but the real user on another address logs in at once, and doing so
    /// does not give the guesser a fresh allowance (OWASP Authentication Cheat Sheet).
    @Test(arguments: TestEngine.available)
    func guessesFromOneClientDoNotLockAnotherOut(engine: TestEngine) async throws {
        try await withTestApp(
            engine, mode: .live, configure: { $0.trustedProxies = try! TrustedProxies(parsing: "127.0.0.0/8, ::1") }, runServices: false
        ) {
            app in
            _ = try await app.client.registerAndLogin(email: "victim@example.com")
            func login(_ password: String, from address: String) async throws -> TestResponse {
                try await app.client.json(
                    .post, "/auth/login", ["email": "victim@example.com", "password": password],
                    headers: [HTTPField.Name("Forwarded")!: "for=\(address)"])
            }
            for _ in 0..<5 { #expect(try await login("wrong password", from: "198.51.100.66").status == .unauthorized) }
            let attacker = try await login("correct horse battery", from: "198.51.100.66")
            #expect(attacker.status == .tooManyRequests)
            #expect(attacker.headers[HTTPField.Name("RateLimit-Policy")!] == "5;w=900")

            let owner = try await login("correct horse battery", from: "203.0.113.7")
            #expect(owner.status == .ok, "the real user was locked out: \(owner.text)")
            #expect(try await login("wrong password", from: "198.51.100.66").status == .tooManyRequests)
        }
    }
}
