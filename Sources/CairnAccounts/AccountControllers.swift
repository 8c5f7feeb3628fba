public import CairnHTTP
import CairnStorage
import Foundation
import HTTPTypes
public import Hummingbird

/// `/auth/*`: register, login, refresh-token rotation, logout; and `/.well-known/jwks.json`.
public struct AuthController: Sendable {
    let accounts: AccountService

    /// Creates the controller.
    public init(accounts: AccountService) {
        self.accounts = accounts
    }

    struct RegisterBody: Decodable {
        var email: String
        var password: String
        var name: String
        var tenantName: String?
    }
    struct LoginBody: Decodable {
        var email: String
        var password: String
    }
    struct RefreshBody: Decodable {
        var refreshToken: String
    }

    /// Adds the public routes to `router` and `POST /auth/logout-all` to `authenticated`.
    public func addRoutes(to router: Router<CairnRequestContext>, authenticated: RouterGroup<AuthenticatedContext>) {
        let auth = router.group("auth")
        auth.post("register") { request, context -> Response in
            var request = request
            let body = try await request.decodeJSON(as: RegisterBody.self, context: context)
            let user = try await accounts.register(email: body.email, password: body.password, name: body.name, tenantName: body.tenantName)
            return .json(user, status: .created, headers: [.location: "/users/\(user.id)", .eTag: ETag.of(version: user.version)])
        }
        auth.post("login") { request, context -> Response in
            var request = request
            let body = try await request.decodeJSON(as: LoginBody.self, context: context)
            let pair = try await accounts.login(email: body.email, password: body.password, client: context.clientAddress)
            return .json(pair, headers: [.cacheControl: "no-store"])
        }
        auth.post("refresh-token") { request, context -> Response in
            var request = request
            let body = try await request.decodeJSON(as: RefreshBody.self, context: context)
            let pair = try await accounts.refresh(token: body.refreshToken)
            return .json(pair, headers: [.cacheControl: "no-store"])
        }
        auth.post("logout") { request, context -> Response in
            var request = request
            let body = try await request.decodeJSON(as: RefreshBody.self, context: context)
            try await accounts.logout(refreshToken: body.refreshToken)
            return Response(status: .noContent)
        }
        authenticated.post("auth/logout-all") { _, context -> Response in
            try await accounts.logoutAll(context.identity)
            return Response(status: .noContent)
        }
        router.get(".well-known/jwks.json") { _, _ -> Response in
            let body = try JSONSerialization.data(withJSONObject: ["keys": await accounts.tokens.currentJWKS()], options: [.sortedKeys])
            return Response(
                status: .ok, headers: [.contentType: "application/json", .cacheControl: "public, max-age=300"],
                body: .init(byteBuffer: ByteBuffer(bytes: body)))
        }
    }
}

/// `/users/me` for everyone; `/users` and `/users/{id}` for owners and admins.
public struct UsersController: Sendable {
    let accounts: AccountService

    /// Creates the controller.
    public init(accounts: AccountService) {
        self.accounts = accounts
    }

    struct ProfilePatch: Decodable {
        var name: PatchField<String>
        var email: PatchField<String>
        var role: PatchField<String>

        enum CodingKeys: String, CodingKey { case name, email, role }

        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            name = try container.decodePatch(String.self, forKey: .name)
            email = try container.decodePatch(String.self, forKey: .email)
            role = try container.decodePatch(String.self, forKey: .role)
            var issues: [FieldIssue] = []
            for (field, value) in [
                ("name", name.isPresent && name.value == nil), ("email", email.isPresent && email.value == nil),
                ("role", role.isPresent && role.value == nil),
            ] where value {
                issues.append(FieldIssue(field: field, issue: "must be a string, not null"))
            }
            if !issues.isEmpty { throw AppError.invalidInput(issues) }
        }
    }
    struct PasswordBody: Decodable {
        var currentPassword: String
        var newPassword: String
    }
    struct CreateBody: Decodable {
        var email: String
        var name: String
        var role: String
        var password: String
    }

    static func userResponse(_ user: User, status: HTTPResponse.Status = .ok) -> Response {
        .json(user, status: status, headers: [.eTag: ETag.of(version: user.version)])
    }

    /// Adds the routes to the authenticated group.
    public func addRoutes(to group: RouterGroup<AuthenticatedContext>) {
        group.get("users/me") { request, context -> Response in
            let user = try await accounts.me(context.identity)
            let etag = ETag.of(version: user.version)
            if ETag.notModified(request, etag: etag) { return ETag.notModifiedResponse(etag: etag) }
            return Self.userResponse(user)
        }
        group.patch("users/me") { request, context -> Response in
            var request = request
            let body = try await request.decodeJSON(as: ProfilePatch.self, context: context)
            if body.role.isPresent { throw AppError.invalidField("role", "cannot be changed on your own account") }
            let user = try await accounts.updateMe(context.identity, name: body.name.value, email: body.email.value)
            return Self.userResponse(user)
        }
        group.put("users/me/password") { request, context -> Response in
            var request = request
            let body = try await request.decodeJSON(as: PasswordBody.self, context: context)
            let pair = try await accounts.changePassword(context.identity, current: body.currentPassword, new: body.newPassword)
            return .json(pair, headers: [.cacheControl: "no-store"])
        }
        group.get("users") { request, context -> Response in
            try context.identity.requireAdmin()
            let page = try PageRequest.parse(request.uri, validateKey: UUIDv7.isValid)
            return .json(try await accounts.listUsers(context.identity, page: page))
        }
        group.post("users") { request, context -> Response in
            try context.identity.requireAdmin()
            var request = request
            let body = try await request.decodeJSON(as: CreateBody.self, context: context)
            let user = try await accounts.createUser(context.identity, email: body.email, name: body.name, role: body.role, password: body.password)
            var response = Self.userResponse(user, status: .created)
            response.headers[.location] = "/users/\(user.id)"
            return response
        }
        group.get("users/:id") { request, context -> Response in
            let user = try await accounts.user(context.identity, id: try context.parameters.require("id"))
            let etag = ETag.of(version: user.version)
            if ETag.notModified(request, etag: etag) { return ETag.notModifiedResponse(etag: etag) }
            return Self.userResponse(user)
        }
        group.patch("users/:id") { request, context -> Response in
            try context.identity.requireAdmin()
            let expected = try ETag.expectedVersion(request)
            var request = request
            let body = try await request.decodeJSON(as: ProfilePatch.self, context: context)
            let user = try await accounts.updateUser(
                context.identity, id: try context.parameters.require("id"), expectedVersion: expected,
                name: body.name.value, email: body.email.value, role: body.role.value)
            return Self.userResponse(user)
        }
        group.delete("users/:id") { request, context -> Response in
            try await accounts.deleteUser(
                context.identity, id: try context.parameters.require("id"), expectedVersion: try ETag.expectedVersion(request))
            return Response(status: .noContent)
        }
    }
}
