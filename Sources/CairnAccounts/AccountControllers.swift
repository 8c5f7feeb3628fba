package import CairnHTTP
import CairnStorage
import Foundation
import HTTPTypes
package import Hummingbird

/// `/auth/*`: register, login, refresh-token rotation, logout; and `/.well-known/jwks.json`.
@MemberwiseInit
package struct AuthController: Sendable {
    let accounts: AccountService

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
        /// Absent when the console's cookie carries the token (``RefreshCookie``).
        var refreshToken: String?
    }

    /// Adds the public `/auth/*` routes and the JWKS, and `POST /auth/logout-all` for
    /// authenticated callers.
    package func addRoutes(to routes: RouteGroups) {
        routes.router.group("auth")
            .post("register", use: register)
            .post("login", use: login)
            .post("refresh-token", use: refresh)
            .post("logout", use: logout)
        routes.authenticated("auth")
            .post("logout-all", use: logoutAll)
        routes.router.get(".well-known/jwks.json", use: jwks)
    }

    /// `POST /auth/register`: a new user (and a new tenant unless one is named).
    @Sendable func register(_ request: Request, context: CairnRequestContext) async throws -> Response {
        var request = request
        let body = try await request.decodeJSON(as: RegisterBody.self, context: context)
        let user = try await accounts.register(
            email: body.email, password: body.password, name: body.name, tenantName: body.tenantName, client: context.clientAddress)
        return .versioned(user, status: .created, location: "/users/\(user.id)")
    }

    /// `POST /auth/login`: an access and refresh token pair.
    @Sendable func login(_ request: Request, context: CairnRequestContext) async throws -> Response {
        var request = request
        let body = try await request.decodeJSON(as: LoginBody.self, context: context)
        let pair = try await accounts.login(email: body.email, password: body.password, client: context.clientAddress)
        return RefreshCookie.response(
            pair, request: request, secure: context.forwardedHTTPS, maxAge: accounts.tokens.settings.refreshTokenTTL)
    }

    /// The refresh token of a refresh or logout: the body's, else the console's cookie (after
    /// the cookie's CSRF checks); nil when there is neither.
    /// - Throws: 403 `csrf_rejected` (``RefreshCookie/checkSameOrigin(_:)``).
    func presentedToken(_ body: RefreshBody, request: Request) throws -> (token: String, fromCookie: Bool)? {
        if let token = body.refreshToken { return (token, false) }
        guard let token = RefreshCookie.token(in: request) else { return nil }
        try RefreshCookie.checkSameOrigin(request)
        return (token, true)
    }

    /// `POST /auth/refresh-token`: rotates the refresh token (from the body, or the console's
    /// cookie). A refused cookie is cleared.
    @Sendable func refresh(_ request: Request, context: CairnRequestContext) async throws -> Response {
        var request = request
        let body = try await request.decodeJSON(as: RefreshBody.self, context: context)
        guard let presented = try presentedToken(body, request: request) else {
            throw AppError.invalidField("refreshToken", "is required (or the console's refresh-token cookie)")
        }
        do {
            let pair = try await accounts.refresh(token: presented.token)
            return RefreshCookie.response(
                pair, request: request, secure: context.forwardedHTTPS, maxAge: accounts.tokens.settings.refreshTokenTTL)
        } catch var error as AppError where presented.fromCookie {
            error.headers[.setCookie] = RefreshCookie.clearing(secure: context.forwardedHTTPS)
            throw error
        }
    }

    /// `POST /auth/logout`: revokes one session (the body's token, or the console's cookie),
    /// and clears the cookie when the request carried it or asked for it.
    @Sendable func logout(_ request: Request, context: CairnRequestContext) async throws -> Response {
        var request = request
        let body = try await request.decodeJSON(as: RefreshBody.self, context: context)
        guard let presented = try presentedToken(body, request: request) else {
            throw AppError.invalidField("refreshToken", "is required (or the console's refresh-token cookie)")
        }
        try await accounts.logout(refreshToken: presented.token)
        var response = Response(status: .noContent)
        if presented.fromCookie || RefreshCookie.isRequested(by: request) {
            response.headers[.setCookie] = RefreshCookie.clearing(secure: context.forwardedHTTPS)
        }
        return response
    }

    /// `POST /auth/logout-all`: revokes every session of the caller (and clears the console's
    /// cookie when the request carried it).
    @Sendable func logoutAll(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        try await accounts.logoutAll(context.identity)
        var response = Response(status: .noContent)
        if RefreshCookie.token(in: request) != nil || RefreshCookie.isRequested(by: request) {
            response.headers[.setCookie] = RefreshCookie.clearing(secure: context.forwardedHTTPS)
        }
        return response
    }

    /// `GET /.well-known/jwks.json`: the public signing keys.
    @Sendable func jwks(_ request: Request, context: CairnRequestContext) async throws -> Response {
        let body = try JSONSerialization.data(withJSONObject: ["keys": await accounts.tokens.currentJWKS()], options: [.sortedKeys])
        return Response(
            status: .ok, headers: [.contentType: "application/json", .cacheControl: "public, max-age=300"],
            body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }
}

/// `/users/me` for everyone; `/users` and `/users/{id}` for owners and admins.
@MemberwiseInit
package struct UsersController: Sendable {
    let accounts: AccountService

    struct ProfilePatch: Decodable {
        var name: PatchField<String>
        var email: PatchField<String>
        var role: PatchField<String>
        /// The caller's phone (E.164), or null to remove it; only `PATCH /users/me` reads it.
        var phone: PatchField<String>
        /// The caller's locale (BCP 47), or null to remove it; only `PATCH /users/me` reads it.
        var locale: PatchField<String>
        /// The caller's password, required by `PATCH /users/me` to change the email.
        var currentPassword: String?

        enum CodingKeys: String, CodingKey { case name, email, role, phone, locale, currentPassword }

        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            do {
                phone = try container.decodePatch(String.self, forKey: .phone)
            } catch is DecodingError {
                throw AppError.invalidField("phone", "must be a string or null")
            }
            do {
                locale = try container.decodePatch(String.self, forKey: .locale)
            } catch is DecodingError {
                throw AppError.invalidField("locale", "must be a string or null")
            }
            do {
                currentPassword = try container.decodeIfPresent(String.self, forKey: .currentPassword)
            } catch is DecodingError {
                throw AppError.invalidField("currentPassword", "must be a string")
            }
            name = try container.decodePatch(String.self, forKey: .name)
            email = try container.decodePatch(String.self, forKey: .email)
            role = try container.decodePatch(String.self, forKey: .role)
        }
    }
    struct PasswordBody: Decodable {
        var currentPassword: String
        var newPassword: String
    }
    struct DeleteMeBody: Decodable {
        var currentPassword: String
    }
    struct CreateBody: Decodable {
        var email: String
        var name: String
        var role: String
        var password: String
    }

    /// Adds the routes: the caller's own profile for everyone, the tenant's users for owners
    /// and admins.
    package func addRoutes(to group: RouterGroup<AuthenticatedContext>) {
        group.group("users/me")
            .get(use: me)
            .patch(use: updateMe)
            .delete(use: deleteMe)
            .put("password", use: changePassword)
        group.group("users").add(middleware: RequireAdmin())
            .resource(list: list, create: create, show: show, update: update, delete: delete)
    }

    /// `GET /users/me`.
    @Sendable func me(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        let user = try await accounts.me(context.identity)
        return ETag.conditional(request, user)
    }

    /// `PATCH /users/me`: name, email (with `currentPassword`), phone and locale (not the role).
    @Sendable func updateMe(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        var request = request
        let body = try await request.decodeJSON(as: ProfilePatch.self, context: context)
        if body.role.isPresent { throw AppError.invalidField("role", "cannot be changed on your own account") }
        let user = try await accounts.updateMe(
            context.identity, name: body.name.value, email: body.email.value, phone: body.phone.nullableChange,
            locale: body.locale.nullableChange, currentPassword: body.currentPassword)
        return .versioned(user)
    }

    /// `DELETE /users/me`: the caller's account (body `{"currentPassword": …}`); with
    /// `?tenant=delete`, the tenant of its last owner and all its data. Clears the console's
    /// cookie when the request carried it.
    @Sendable func deleteMe(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        let deleteTenant: Bool
        switch request.uri.queryParameters.get("tenant") {
        case nil: deleteTenant = false
        case "delete": deleteTenant = true
        default: throw AppError.invalidField("tenant", "must be delete (or absent)")
        }
        var request = request
        // Clients often send a DELETE without any body (`curl -X DELETE`): the answer names the
        // field it lacks, as for `{}`, rather than the media type it never set.
        let sent: Int
        do {
            sent = try await request.collectBody(upTo: context.maxUploadSize).readableBytes
        } catch let error as HTTPError where error.status == .contentTooLarge {
            throw AppError(.contentTooLarge, code: .payloadTooLarge, detail: "The body exceeds \(context.maxUploadSize) bytes.")
        }
        if sent == 0 {
            throw AppError.invalidField("currentPassword", "is required (send {\"currentPassword\": \"…\"} as application/json)")
        }
        let body = try await request.decodeJSON(as: DeleteMeBody.self, context: context)
        try await accounts.deleteMe(context.identity, currentPassword: body.currentPassword, deleteTenant: deleteTenant)
        var response = Response(status: .noContent)
        if RefreshCookie.token(in: request) != nil || RefreshCookie.isRequested(by: request) {
            response.headers[.setCookie] = RefreshCookie.clearing(secure: context.forwardedHTTPS)
        }
        return response
    }

    /// `PUT /users/me/password`: a new token pair; other sessions end.
    @Sendable func changePassword(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        var request = request
        let body = try await request.decodeJSON(as: PasswordBody.self, context: context)
        let pair = try await accounts.changePassword(context.identity, current: body.currentPassword, new: body.newPassword)
        return RefreshCookie.response(
            pair, request: request, secure: context.forwardedHTTPS, maxAge: accounts.tokens.settings.refreshTokenTTL)
    }

    /// `GET /users` (admins).
    @Sendable func list(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        let page = try PageRequest.parse(request.uri, validateKey: UUIDv7.isValid)
        return .json(try await accounts.listUsers(context.identity, page: page))
    }

    /// `POST /users` (admins).
    @Sendable func create(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        var request = request
        let body = try await request.decodeJSON(as: CreateBody.self, context: context)
        let user = try await accounts.createUser(context.identity, email: body.email, name: body.name, role: body.role, password: body.password)
        return .versioned(user, status: .created, location: "/users/\(user.id)")
    }

    /// `GET /users/{id}` (admins).
    @Sendable func show(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        let user = try await accounts.user(context.identity, id: try context.parameters.require("id"))
        return ETag.conditional(request, user)
    }

    /// `PATCH /users/{id}` (admins; `If-Match` optional).
    @Sendable func update(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        let expected = try ETag.expectedVersion(request)
        var request = request
        let body = try await request.decodeJSON(as: ProfilePatch.self, context: context)
        let user = try await accounts.updateUser(
            context.identity, id: try context.parameters.require("id"), expectedVersion: expected,
            name: body.name.value, email: body.email.value, role: body.role.value)
        return .versioned(user)
    }

    /// `DELETE /users/{id}` (admins; `If-Match` optional).
    @Sendable func delete(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        try await accounts.deleteUser(
            context.identity, id: try context.parameters.require("id"), expectedVersion: try ETag.expectedVersion(request))
        return Response(status: .noContent)
    }
}

// The context-free checks of each body, run by the body decoder so that one answer lists type
// and value errors together; the service repeats them for callers that are not HTTP (`cairn`).

extension AccountRules {
    /// The issue of an email that is not plausible.
    static let emailIssue = "must be a valid email address"

    /// The issues of the account fields given (nil ones are not checked).
    static func issues(email: String? = nil, name: String? = nil, password: String? = nil) -> [FieldIssue] {
        var issues: [FieldIssue] = []
        if let email, normalizeEmail(email) == nil { issues.append(FieldIssue(field: "email", issue: emailIssue)) }
        if let password, let issue = passwordIssue(password) { issues.append(FieldIssue(field: "password", issue: issue)) }
        if let name, normalizeName(name) == nil { issues.append(FieldIssue(field: "name", issue: nameIssue)) }
        return issues
    }
}

extension AuthController.RegisterBody: ValueChecked {
    func valueIssues() -> [FieldIssue] {
        var issues = AccountRules.issues(email: email, name: name, password: password)
        if let tenantName, AccountRules.normalizeName(tenantName) == nil {
            issues.append(FieldIssue(field: "tenantName", issue: AccountRules.nameIssue))
        }
        return issues
    }
}

extension UsersController.ProfilePatch: ValueChecked {
    func valueIssues() -> [FieldIssue] {
        // Name, email and role cannot be removed (phone and locale can).
        var issues = [("name", name), ("email", email), ("role", role)].compactMap { field, value in
            if case .null = value { FieldIssue(field: field, issue: "must be a string, not null") } else { nil }
        }
        issues += AccountRules.issues(email: email.value, name: name.value)
        if let number = phone.value, !AccountRules.isE164(number) {
            issues.append(FieldIssue(field: "phone", issue: AccountRules.phoneIssue))
        }
        if let tag = locale.value, !AccountRules.isLanguageTag(tag) {
            issues.append(FieldIssue(field: "locale", issue: AccountRules.localeIssue))
        }
        return issues
    }
}

extension UsersController.PasswordBody: ValueChecked {
    func valueIssues() -> [FieldIssue] {
        AccountRules.passwordIssue(newPassword).map { [FieldIssue(field: "newPassword", issue: $0)] } ?? []
    }
}

extension UsersController.CreateBody: ValueChecked {
    func valueIssues() -> [FieldIssue] {
        var issues = AccountRules.issues(email: email, name: name, password: password)
        if Role(rawValue: role) == nil { issues.append(FieldIssue(field: "role", issue: AccountRules.roleIssue)) }
        return issues
    }
}
