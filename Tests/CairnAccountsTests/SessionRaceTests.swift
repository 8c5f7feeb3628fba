import CairnAccounts
import CairnHTTP
import CairnServer
import CairnTestSupport
import HummingbirdTesting
import Testing

@Suite("Accounts: refresh racing logout-all")
struct SessionRaceTests {
    /// Sixteen sessions of one user rotate their refresh tokens as fast as they can while one
    /// `logout-all` runs in the middle (issue 13). A rotation committed before the logout-all
    /// is revoked by it; one racing it must not leave a successor behind: every session stops
    /// rotating soon after, and no token any of them was last given still works.
    @Test(arguments: TestEngine.available)
    func refreshesRacingLogoutAllLeaveNoLiveSession(engine: TestEngine) async throws {
        try await withTestApp(engine) { app in
            let accounts = app.components.accounts
            let (user, first) = try await app.client.registerAndLogin(email: "race@example.com")
            var tokens = [first.refreshToken]
            for _ in 1..<16 { tokens.append(try await app.client.login(email: "race@example.com", password: "correct horse battery").refreshToken) }
            let rotations = Observed(0)
            let loggedOut = Observed(false)
            let identity = Identity(userId: user.id, tenantId: user.tenantId, role: .owner, tokenId: "test")
            let last = try await withThrowingTaskGroup(of: (String, Int)?.self) { group in
                for token in tokens {
                    group.addTask {
                        // Rotates until refused; counts the rotations that succeeded after the
                        // logout-all had returned (a live family would go on to the cap).
                        var current = token
                        var afterLogout = 0
                        while afterLogout < 200 {
                            let done = loggedOut.value
                            guard let pair = try? await accounts.refresh(token: current) else { break }
                            current = pair.refreshToken
                            rotations.update { $0 += 1 }
                            if done { afterLogout += 1 }
                        }
                        return (current, afterLogout)
                    }
                }
                group.addTask {
                    try await rotations.wait("rotations under way") { $0 >= 48 }
                    try await accounts.logoutAll(identity)
                    loggedOut.update { $0 = true }
                    return nil
                }
                var last: [(String, Int)] = []
                for try await result in group { if let result { last.append(result) } }
                return last
            }
            #expect(last.count == 16)
            #expect(last.allSatisfy { $0.1 == 0 }, "no session rotated after logout-all returned: \(last.map(\.1))")
            for (token, _) in last {
                await #expect(throws: AppError.self) { try await accounts.refresh(token: token) }
            }
        }
    }
}
