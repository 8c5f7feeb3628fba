package import CairnHTTP
import CairnStorage
import Foundation
import HTTPTypes
package import Hummingbird
import Logging
import SQLKit

/// The scopes a service token may hold (RFC 6749 §3.3 scope tokens). A route group opens to
/// service tokens by naming one in its ``TokenPolicy`` where its routes are declared.
package enum ServiceTokenScope {
    /// `POST /notifications`: publish to users of the token's tenant.
    package static let notificationsPublish = "notifications:publish"
    /// Every scope a token may be given.
    package static let all: Set<String> = [notificationsPublish]
}

/// A tenant's API key for servers (the Supabase service key, PocketBase's API tokens): an
/// opaque secret `cairn_st_<43 base64url characters>` (256 random bits) with a name and scopes.
/// Only its SHA-256 is stored; the secret is shown once, on creation.
@SQLRow
package struct ServiceToken: Sendable, Equatable, JSONWritable {
    /// UUIDv7.
    package var id: String
    /// The tenant the token acts for.
    package var tenantId: String
    /// A label for people (1 to 100 characters).
    package var name: String
    /// Granted scopes, sorted.
    @SQLSpaceSeparated package var scopes: [String]
    /// The secret's first characters (`cairn_st_AbCd`), to recognise it in a list.
    package var hint: String
    /// The user who created it.
    package var createdBy: String
    /// Epoch milliseconds.
    package var createdAt: Int64

    /// `{id, name, scopes, hint, createdBy, createdAt}` (never the secret).
    package func writeJSON(to writer: inout JSONWriter) {
        writer.objectStart()
        writeFields(to: &writer)
        writer.objectEnd()
    }

    func writeFields(to writer: inout JSONWriter) {
        writer.field("id", id)
        writer.field("name", name)
        writer.field("scopes", strings: scopes)
        writer.field("hint", hint)
        writer.field("createdBy", createdBy)
        writer.field("createdAt", timestamp: createdAt)
    }
}

/// The answer to `POST /service-tokens`: the token and, this once, its secret.
struct CreatedServiceToken: JSONWritable {
    var token: ServiceToken
    var secret: String

    func writeJSON(to writer: inout JSONWriter) {
        writer.objectStart()
        token.writeFields(to: &writer)
        writer.field("token", secret)
        writer.objectEnd()
    }
}

extension AccountStore {
    func insertServiceToken(_ token: ServiceToken, secret: String) async throws {
        try await database.write { db in
            try await db.raw(
                """
                INSERT INTO service_tokens (id, tenant_id, name, scopes, token_hash, hint, created_by, created_at)
                VALUES (\(bind: token.id), \(bind: token.tenantId), \(bind: token.name), \(bind: token.scopes.joined(separator: " ")),
                \(bind: Self.hash(secret)), \(bind: token.hint), \(bind: token.createdBy), \(bind: token.createdAt))
                """
            ).run()
        }
    }

    func serviceTokens(tenantId: String, page: PageRequest) async throws -> Page<ServiceToken> {
        let rows = try await database.read { db in
            try await db.raw(
                """
                SELECT \(unsafeRaw: ServiceToken.sqlColumns) FROM service_tokens
                WHERE tenant_id = \(bind: tenantId) AND id > \(bind: page.after ?? "") ORDER BY id LIMIT \(bind: page.limit + 1)
                """
            ).all()
        }
        return Page(fetched: try rows.map(ServiceToken.init(row:)), page: page, sortKey: \.id)
    }

    func serviceToken(secret: String) async throws -> ServiceToken? {
        try await database.read { db in
            try await db.raw("SELECT \(unsafeRaw: ServiceToken.sqlColumns) FROM service_tokens WHERE token_hash = \(bind: Self.hash(secret))")
                .first().map(ServiceToken.init(row:))
        }
    }

    func deleteServiceToken(id: String, tenantId: String) async throws -> Bool {
        guard UUIDv7.isValid(id) else { return false }
        return try await database.write { db in
            try await db.raw("DELETE FROM service_tokens WHERE id = \(bind: id) AND tenant_id = \(bind: tenantId) RETURNING id").first() != nil
        }
    }
}

extension AccountService {
    /// The prefix of every service-token secret (recognisable by people and secret scanners).
    package static let serviceTokenPrefix = "cairn_st_"

    /// Creates a service token of the caller's tenant (owners and admins).
    /// - Returns: the token and its secret, which is not stored and cannot be shown again.
    /// - Throws: 403 `forbidden`; 400 `invalid_input` for a bad name or unknown scopes.
    package func createServiceToken(_ identity: Identity, name: String, scopes: [String]) async throws -> (ServiceToken, String) {
        try identity.requireAdmin()
        let issues = Self.serviceTokenIssues(name: name, scopes: scopes)
        guard issues.isEmpty, let cleanName = AccountRules.normalizeName(name) else { throw AppError.invalidInput(issues) }
        let secret = Self.serviceTokenPrefix + Self.newRefreshToken()
        let token = ServiceToken(
            id: UUIDv7.make(), tenantId: identity.tenantId, name: cleanName, scopes: Array(Set(scopes)).sorted(),
            hint: String(secret.prefix(Self.serviceTokenPrefix.count + 4)), createdBy: identity.userId, createdAt: WallClock.milliseconds())
        try await store.insertServiceToken(token, secret: secret)
        logger.info("service token created", metadata: ["service_token_id": .string(token.id), "tenant_id": .string(token.tenantId)])
        return (token, secret)
    }

    /// The issues of a new service token's name and scopes.
    static func serviceTokenIssues(name: String, scopes: [String]) -> [FieldIssue] {
        var issues: [FieldIssue] = []
        if AccountRules.normalizeName(name) == nil { issues.append(FieldIssue(field: "name", issue: "must be 1 to 100 characters")) }
        if scopes.isEmpty { issues.append(FieldIssue(field: "scopes", issue: "must list at least one scope")) }
        for (index, scope) in scopes.enumerated() where !ServiceTokenScope.all.contains(scope) {
            issues.append(FieldIssue(field: "scopes[\(index)]", issue: "must be one of: \(ServiceTokenScope.all.sorted().joined(separator: ", "))"))
        }
        return issues
    }

    /// A page of the tenant's service tokens, oldest first, without secrets (owners and admins).
    package func listServiceTokens(_ identity: Identity, page: PageRequest) async throws -> Page<ServiceToken> {
        try identity.requireAdmin()
        return try await store.serviceTokens(tenantId: identity.tenantId, page: page)
    }

    /// Revokes (deletes) a service token; every node refuses it from the next request on, since
    /// service tokens are looked up in the database on each use.
    /// - Throws: 403 `forbidden`; 404 `not_found`, also for another tenant's token.
    package func revokeServiceToken(_ identity: Identity, id: String) async throws {
        try identity.requireAdmin()
        guard try await store.deleteServiceToken(id: id, tenantId: identity.tenantId) else { throw AppError.notFound() }
        logger.info("service token revoked", metadata: ["service_token_id": .string(id), "tenant_id": .string(identity.tenantId)])
    }

    /// The identity of a service-token secret: the token's id as `userId`, role `member`, and
    /// its scopes (which alone decide what it may call).
    /// - Throws: 401 `invalid_token` for an unknown or revoked secret.
    package func authenticate(serviceToken secret: String) async throws -> Identity {
        guard secret.utf8.count <= 256, let token = try await store.serviceToken(secret: secret) else {
            throw AppError.unauthorized(code: .invalidToken, detail: "The service token is not valid.", invalidToken: true)
        }
        return Identity(userId: token.id, tenantId: token.tenantId, role: .member, tokenId: token.id, scopes: Set(token.scopes))
    }
}

/// `/service-tokens`: the tenant's API keys for servers (owners and admins).
package struct ServiceTokensController: Sendable {
    let accounts: AccountService

    /// Creates the controller.
    package init(accounts: AccountService) {
        self.accounts = accounts
    }

    struct CreateBody: Decodable, ValueChecked {
        var name: String
        var scopes: [String]

        func valueIssues() -> [FieldIssue] { AccountService.serviceTokenIssues(name: name, scopes: scopes) }
    }

    /// Adds `POST/GET /service-tokens` and `DELETE /service-tokens/{id}`, for owners and admins.
    package func addRoutes(to group: RouterGroup<AuthenticatedContext>) {
        group.group("service-tokens").add(middleware: RequireAdmin())
            .post(use: create)
            .get(use: list)
            .delete(":id", use: revoke)
    }

    /// `POST /service-tokens`: the token and, this once, its secret.
    @Sendable func create(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        var request = request
        let body = try await request.decodeJSON(as: CreateBody.self, context: context)
        let (token, secret) = try await accounts.createServiceToken(context.identity, name: body.name, scopes: body.scopes)
        return .json(
            CreatedServiceToken(token: token, secret: secret), status: .created,
            headers: [.location: "/service-tokens/\(token.id)", .cacheControl: "no-store"])
    }

    /// `GET /service-tokens`: a page of the tenant's tokens, without secrets.
    @Sendable func list(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        let page = try PageRequest.parse(request.uri, validateKey: UUIDv7.isValid)
        return .json(try await accounts.listServiceTokens(context.identity, page: page))
    }

    /// `DELETE /service-tokens/{id}`: revokes a token on every node at once.
    @Sendable func revoke(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        try await accounts.revokeServiceToken(context.identity, id: try context.parameters.require("id"))
        return Response(status: .noContent)
    }
}
