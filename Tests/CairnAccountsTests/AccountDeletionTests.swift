import CairnAccounts
import CairnHTTP
import CairnServer
import CairnStorage
import CairnTestSupport
import Foundation
import HTTPTypes
import HummingbirdTesting
import NIOCore
import SQLKit
import Testing

@Suite("Accounts: changing the email and deleting an account need the password")
struct AccountDeletionTests {
    static let password = "correct horse battery"

    /// Rows of `table` whose `column` is `value`.
    static func count(_ database: Database, _ table: String, _ column: String, _ value: String) async throws -> Int {
        try await database.rowCount("\(unsafeRaw: table) WHERE \(unsafeRaw: column) = \(bind: value)")
    }

    /// Seeds one row per personal table for `user` and some tenant content.
    static func seed(_ database: Database, tenant: TenantRow, user: String) async throws {
        _ = try await Factory.notification(on: database, tenant: tenant, user: user)
        _ = try await Factory.preferences(on: database, tenant: tenant, user: user)
        let now = WallClock.milliseconds()
        try await database.write { db in
            try await db.raw(
                """
                INSERT INTO notification_devices (id, tenant_id, user_id, platform, token, created_at, last_seen_at)
                VALUES (\(bind: UUIDv7.make()), \(bind: tenant.id), \(bind: user), 'ios', \(bind: UUIDv7.make()), \(bind: now), \(bind: now))
                """
            ).run()
        }
        _ = try await Factory.task(on: database, tenant: tenant, createdBy: user)
        _ = try await Factory.file(on: database, tenant: tenant, createdBy: user)
        _ = try await Factory.pipeline(on: database, tenant: tenant, createdBy: user)
        _ = try await Factory.product(on: database, tenant: tenant)
        _ = try await Factory.job(on: database, tenant: tenant, createdBy: user)
    }

    /// A new email needs the current password (missing or wrong: 400 naming `currentPassword`);
    /// the name, or the same email in other case, does not.
    @Test(arguments: TestEngine.available)
    func changingTheEmailNeedsTheCurrentPassword(engine: TestEngine) async throws {
        try await withTestApp(engine) { client, _ in
            let (_, tokens) = try await client.registerAndLogin(email: "mail@example.com")
            let token = tokens.accessToken
            let missing = try await client.json(.patch, "/users/me", ["email": "thief@example.com"], token: token)
            #expect(missing.status == .badRequest)
            #expect(missing.text.contains("currentPassword"))
            let wrong = try await client.json(.patch, "/users/me", ["email": "thief@example.com", "currentPassword": "not it at all"], token: token)
            #expect(wrong.status == .badRequest)
            #expect(wrong.text.contains("currentPassword"))
            #expect(try await client.json(.get, "/users/me", token: token).object["email"] as? String == "mail@example.com")
            #expect(try await client.json(.patch, "/users/me", ["name": "Renamed"], token: token).status == .ok)
            // The same address in other case is no new email (emails compare case-insensitively,
            // as at sign-in): no password asked, the spelling as sent, sign-in in either case.
            let recased = try await client.json(.patch, "/users/me", ["email": "MAIL@Example.com"], token: token)
            #expect(recased.status == .ok)
            #expect(recased.object["email"] as? String == "MAIL@Example.com")
            _ = try await client.login(email: "mail@example.com", password: Self.password)
            _ = try await client.login(email: "Mail@EXAMPLE.com", password: Self.password)
            let right = try await client.json(.patch, "/users/me", ["email": "new@example.com", "currentPassword": Self.password], token: token)
            #expect(right.status == .ok)
            #expect(right.object["email"] as? String == "new@example.com")
        }
    }

    /// `DELETE /users/me` with the password ends the member's sessions at once and deletes their
    /// personal rows; the tenant's content and other users' rows stay.
    @Test(arguments: TestEngine.available)
    func deletingYourAccountRemovesYourSessionsAndPersonalData(engine: TestEngine) async throws {
        try await withTestApp(engine) { app in
            let client = app.client
            let (owner, ownerTokens) = try await client.registerAndLogin(email: "boss@example.com")
            let (leaverUser, session) = try await client.addUser(
                email: "leaver@example.com", password: Self.password, name: "Leaver", token: ownerTokens.accessToken)
            let leaver = leaverUser.id
            let tenant = TenantRow(id: owner.tenantId, name: "t")
            try await Self.seed(app.database, tenant: tenant, user: leaver)
            try await Self.seed(app.database, tenant: tenant, user: owner.id)

            // No body at all (`curl -X DELETE`), or an empty one: the field it lacks is named.
            let noBody = try await client.json(.delete, "/users/me", token: session.accessToken)
            #expect(noBody.status == .badRequest)
            #expect(noBody.object["code"] as? String == "invalid_input")
            #expect((noBody.object["errors"] as? [[String: Any]])?.first?["field"] as? String == "currentPassword", "\(noBody.text)")
            let empty = try await client.execute(
                uri: "/users/me", method: .delete, headers: [.authorization: "Bearer \(session.accessToken)", .contentType: "application/json"],
                body: ByteBuffer())
            #expect(empty.status == .badRequest)
            #expect(String(buffer: empty.body).contains("currentPassword"))
            let notJSON = try await client.execute(
                uri: "/users/me", method: .delete, headers: [.authorization: "Bearer \(session.accessToken)", .contentType: "text/plain"],
                body: ByteBuffer(string: "password"))
            #expect(notJSON.status == .unsupportedMediaType, "a body of another type is still 415")
            let wrong = try await client.json(.delete, "/users/me", ["currentPassword": "not it at all"], token: session.accessToken)
            #expect(wrong.status == .badRequest)
            let deleted = try await client.json(.delete, "/users/me", ["currentPassword": Self.password], token: session.accessToken)
            #expect(deleted.status == .noContent)

            #expect(try await client.json(.get, "/users/me", token: session.accessToken).status == .unauthorized)
            #expect(try await client.json(.post, "/auth/refresh-token", ["refreshToken": session.refreshToken]).status == .unauthorized)
            #expect(try await client.json(.post, "/auth/login", ["email": "leaver@example.com", "password": Self.password]).status == .unauthorized)
            for table in DataErasure.cairn.userTables + ["refresh_tokens"] {
                #expect(try await Self.count(app.database, table, "user_id", leaver) == 0, "\(table) kept the deleted user's rows")
            }
            #expect(try await Self.count(app.database, "notifications", "user_id", owner.id) == 1)
            #expect(try await Self.count(app.database, "notification_devices", "user_id", owner.id) == 1)
            #expect(try await Self.count(app.database, "tasks", "created_by", leaver) == 1, "the tenant's task went with its author")
            #expect(try await client.json(.get, "/users/me", token: ownerTokens.accessToken).status == .ok)
        }
    }

    /// The last owner gets 409 unless `?tenant=delete`, which deletes the tenant with every
    /// user and every row of it in every module; another tenant is untouched.
    @Test(arguments: TestEngine.available)
    func theLastOwnerDeletesTheTenantOnlyWhenAskedTo(engine: TestEngine) async throws {
        try await withTestApp(engine) { app in
            let client = app.client
            let (owner, ownerTokens) = try await client.registerAndLogin(email: "last@example.com")
            let (other, _) = try await client.registerAndLogin(email: "neighbour@example.com")
            let (member, memberSession) = try await client.addUser(
                email: "member@example.com", password: Self.password, token: ownerTokens.accessToken)
            let memberId = member.id
            let tenant = TenantRow(id: owner.tenantId, name: "t")
            try await Self.seed(app.database, tenant: tenant, user: owner.id)
            try await Self.seed(app.database, tenant: tenant, user: memberId)
            try await Self.seed(app.database, tenant: TenantRow(id: other.tenantId, name: "n"), user: other.id)

            let refused = try await client.json(.delete, "/users/me", ["currentPassword": Self.password], token: ownerTokens.accessToken)
            #expect(refused.status == .conflict)
            #expect(refused.text.contains("tenant=delete"))
            let bad = try await client.json(.delete, "/users/me?tenant=yes", ["currentPassword": Self.password], token: ownerTokens.accessToken)
            #expect(bad.status == .badRequest)
            let byMember = try await client.json(
                .delete, "/users/me?tenant=delete", ["currentPassword": Self.password], token: memberSession.accessToken)
            #expect(byMember.status == .forbidden)

            let deleted = try await client.json(
                .delete, "/users/me?tenant=delete", ["currentPassword": Self.password], token: ownerTokens.accessToken)
            #expect(deleted.status == .noContent)
            for table in DataErasure.cairn.tenantTables + ["users", "refresh_tokens", "service_tokens"] {
                #expect(try await Self.count(app.database, table, "tenant_id", owner.tenantId) == 0, "\(table) kept the deleted tenant's rows")
            }
            for table in ["tasks", "files", "pipelines", "products", "jobs", "notifications", "notification_preferences", "notification_devices"] {
                #expect(try await Self.count(app.database, table, "tenant_id", other.tenantId) == 1, "\(table) lost another tenant's rows")
            }
            #expect(try await Self.count(app.database, "tenants", "id", owner.tenantId) == 0)
            #expect(try await client.json(.get, "/users/me", token: memberSession.accessToken).status == .unauthorized)
            #expect(try await client.json(.post, "/auth/login", ["email": "last@example.com", "password": Self.password]).status == .unauthorized)
            #expect(try await client.login(email: "neighbour@example.com", password: Self.password).accessToken.isEmpty == false)
        }
    }

    /// Every table of the migrated schema with a `user_id` or `tenant_id` column is deleted
    /// with its user or tenant: listed in ``DataErasure/cairn`` or one of the accounts
    /// module's own tables.
    @Test(arguments: TestEngine.available)
    func everyTableWithAUserOrTenantIsErased(engine: TestEngine) async throws {
        try await withTestApp(engine) { app in
            let columns = try await app.database.read { db -> [(String, String)] in
                if app.database.dialect == .postgres {
                    return try await db.raw(
                        """
                        SELECT table_name AS t, column_name AS c FROM information_schema.columns
                        WHERE table_schema = current_schema() AND column_name IN ('user_id', 'tenant_id')
                        """
                    ).all().map { (try $0.decode(column: "t", as: String.self), try $0.decode(column: "c", as: String.self)) }
                }
                var found: [(String, String)] = []
                let tables = try await db.raw("SELECT name FROM sqlite_master WHERE type = 'table'").all().map {
                    try $0.decode(column: "name", as: String.self)
                }
                for table in tables {
                    for row in try await db.raw("SELECT name FROM pragma_table_info(\(bind: table))").all() {
                        let column = try row.decode(column: "name", as: String.self)
                        if column == "user_id" || column == "tenant_id" { found.append((table, column)) }
                    }
                }
                return found
            }
            #expect(columns.count > 10)
            let own: Set<String> = ["users", "refresh_tokens", "service_tokens"]
            for (table, column) in columns where !own.contains(table) {
                let listed = column == "user_id" ? DataErasure.cairn.userTables : DataErasure.cairn.tenantTables
                #expect(listed.contains(table), "\(table).\(column) is not erased with its \(column == "user_id" ? "user" : "tenant")")
            }
        }
    }
}
