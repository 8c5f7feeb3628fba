import Foundation
import Testing

@Suite("End to end: cairn seed")
struct SeedEndToEndTests {
    @Test func seedFillsATenantThatTheServerThenServes() async throws {
        let dataDir = try temporaryDirectory()
        // Migrations first, so the next commands print only their own output.
        try #require(try await runCairn(["migrate", "--data-dir", dataDir]).status == 0)
        let tenant = try await runCairn(["tenant", "create", "--name", "Demo", "--data-dir", dataDir])
        try #require(tenant.status == 0)
        let tenantId = tenant.output.trimmingCharacters(in: .whitespacesAndNewlines)
        let user = try await runCairn(
            ["user", "create", "--email", "demo@example.com", "--tenant", tenantId, "--admin", "--password-stdin", "--data-dir", dataDir],
            environment: ["CAIRN_BCRYPT_COST": "4"], stdin: "demo password\n")
        try #require(user.status == 0)

        let seed = try await runCairn(["seed", "--tenant", tenantId, "--products", "1200", "--tasks", "2500", "--data-dir", dataDir])
        #expect(seed.status == 0, "\(seed.error)")
        #expect(seed.output.contains("seeded 1200 products and 2500 tasks"))
        // Products are upserted by SKU: seeding again updates them instead of adding more.
        #expect(try await runCairn(["seed", "--tenant", tenantId, "--products", "1200", "--data-dir", dataDir]).status == 0)
        let unknown = try await runCairn(["seed", "--tenant", "01900000-0000-7000-8000-00000000beef", "--tasks", "1", "--data-dir", dataDir])
        #expect(unknown.status != 0)

        let server = try await ServerProcess.start(dataDir: dataDir)
        do {
            let login = try await curl("POST", server.baseURL + "/auth/login", json: ["email": "demo@example.com", "password": "demo password"])
            let token = try #require(login.json["accessToken"] as? String)
            let page = try await curl("GET", server.baseURL + "/products?limit=100&sort=price", token: token)
            #expect(page.status == 200)
            #expect((page.json["items"] as? [Any])?.count == 100)
            let tasks = try await curl("GET", server.baseURL + "/reports/tasks.csv", token: token)
            #expect(tasks.status == 200)
            #expect(tasks.body.components(separatedBy: "\r\n").filter { !$0.isEmpty }.count == 2501)
            let products = try await curl("GET", server.baseURL + "/reports/products.csv", token: token)
            #expect(products.body.components(separatedBy: "\r\n").filter { !$0.isEmpty }.count == 1201)
            let search = try await curl("GET", server.baseURL + "/products?q=oak&limit=5", token: token)
            #expect(((search.json["items"] as? [[String: Any]]) ?? []).allSatisfy { ($0["name"] as? String)?.contains("Oak") == true })
        } catch {
            _ = try? await server.stop()
            throw error
        }
        #expect(try await server.stop() == 0)
    }
}
