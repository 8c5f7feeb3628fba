package import CairnStorage
import Crypto
import Foundation
import HTTPTypes
package import Hummingbird
import NIOCore
import SQLKit

/// The idempotency module's table (draft-ietf-httpapi-idempotency-key-header):
/// `Migrations/idempotency/*.sql` among CairnHTTP's resources. It moved here from CairnJobs with
/// the middleware; its migration key (`idempotency`, version 1) is unchanged, so existing
/// databases do not run it again.
package enum IdempotencyMigrations {
    /// All migrations of the module, in order.
    package static func all() throws -> [Migration] { try Migration.files(in: .module) }
}

/// Settings of `Idempotency-Key` handling (`CAIRN_IDEMPOTENCY_*`).
package struct IdempotencySettings: Sendable {
    /// Seconds after which a key whose request never finished (the node died, or the client
    /// went away mid-request) is released for a new attempt (default 60; `CAIRN_IDEMPOTENCY_LEASE`).
    package var leaseSeconds = 60
    /// Creates the defaults.
    package init() {}

    /// Reads the settings that are set, in the `idempotency` scope: `CAIRN_IDEMPOTENCY_LEASE`
    /// (a duration such as `60`, `90s` or `5m`).
    /// - Throws: `ConfigurationError` naming a bad value.
    package mutating func read(from settings: SettingsReader) throws {
        leaseSeconds = try settings.seconds("lease", default: leaseSeconds)
    }
}

/// `Idempotency-Key` on POSTs that start work (draft-ietf-httpapi-idempotency-key-header-06):
/// the same key with the same request within 24 h answers the first response again (same
/// status, same body, `Idempotent-Replayed: true`); the same key with another request → 422
/// `idempotency_key_mismatch`; a key whose first request is still being processed → 409
/// `conflict`, until the first request finishes or, if it never does (its node died), until
/// its lease (``IdempotencySettings/leaseSeconds``, 60 s) has passed. Keys belong to their
/// caller (the user, or the service token) within the tenant: another caller's same key is
/// another key. They are stored in the database, so they hold across nodes and restarts.
/// Server errors (5xx) and 429s are not stored: the client may retry them with the same key
/// once the condition has passed.
package struct IdempotencyMiddleware: RouterMiddleware {
    /// The request header.
    package static let header = HTTPField.Name("Idempotency-Key")!
    /// Set on a replayed response.
    package static let replayed = HTTPField.Name("Idempotent-Replayed")!
    /// How long a key is remembered.
    package static let lifetimeMs: Int64 = 24 * 3600 * 1000

    let database: Database
    let clock: any CairnClock
    let leaseMs: Int64

    /// Creates the middleware; key ages are read from `clock`.
    package init(database: Database, settings: IdempotencySettings = IdempotencySettings(), clock: any CairnClock = SystemClock()) {
        self.database = database
        self.clock = clock
        self.leaseMs = Int64(settings.leaseSeconds) * 1000
    }

    /// Handles one request.
    package func handle(
        _ request: Request, context: AuthenticatedContext, next: (Request, AuthenticatedContext) async throws -> Response
    ) async throws -> Response {
        guard request.method == .post, let key = request.headers[Self.header] else { return try await next(request, context) }
        guard (1...255).contains(key.utf8.count), key.utf8.allSatisfy({ $0 >= 0x21 && $0 <= 0x7E }) else {
            throw AppError.invalidField("Idempotency-Key", "must be 1 to 255 visible ASCII characters")
        }
        var request = request
        let body = try await request.collectBody(context: context)
        let (fingerprint, byteFingerprint) = Self.fingerprints(
            method: request.method, path: request.uri.path, contentType: request.headers[.contentType], body: body)
        let scope = Scope(tenantId: context.identity.tenantId, callerId: context.identity.userId, key: key)
        let now = clock.milliseconds
        let (lifetimeMs, leaseMs) = (Self.lifetimeMs, self.leaseMs)

        let claimed = try await database.write { db in
            // Expired, or claimed by a request that never finished within its lease.
            try await db.raw(
                """
                DELETE FROM idempotency_keys
                WHERE tenant_id = \(bind: scope.tenantId) AND caller_id = \(bind: scope.callerId) AND key = \(bind: key)
                    AND (created_at < \(bind: now - lifetimeMs) OR (state = 'processing' AND created_at < \(bind: now - leaseMs)))
                """
            ).run()
            return try await db.raw(
                """
                INSERT INTO idempotency_keys (tenant_id, caller_id, key, fingerprint, state, created_at)
                VALUES (\(bind: scope.tenantId), \(bind: scope.callerId), \(bind: key), \(bind: fingerprint), 'processing', \(bind: now))
                ON CONFLICT DO NOTHING RETURNING key
                """
            ).first() != nil
        }
        if !claimed {
            return try await replay(scope, fingerprints: [fingerprint, byteFingerprint])
        }

        let response: Response
        do {
            response = try await next(request, context)
        } catch let error as AppError where error.status.code < 500 && error.status != .tooManyRequests {
            let problem = try error.response(from: request, context: context)
            return try await store(problem, scope)
        } catch {
            try? await forget(scope)
            throw error
        }
        if response.status.code >= 500 || response.status == .tooManyRequests {
            try? await forget(scope)
            return response
        }
        return try await store(response, scope)
    }

    /// The fingerprint of a request, which a retry with the same key must match: SHA-256 (hex)
    /// over the method, the ``normalizedPath(_:)`` and the body. A JSON body (`application/json`
    /// or `application/*+json`) is hashed in its ``CanonicalJSON`` form, so a retry whose body
    /// differs only in whitespace, member order or string escapes (`"\u0041"` for `"A"`) is
    /// the same request and replays; numbers are compared as written (`1.0` is not `1`), and a
    /// retry with any other value is another request (422). A body that is not JSON, or not
    /// valid JSON, is hashed byte for byte. Whose key it is (tenant, caller) is part of the
    /// key's row, not of the hash.
    /// - Returns: the fingerprint stored for a new key, and the byte-for-byte one (the same for
    ///   a body that is not JSON), which keys stored before JSON was canonicalised hold: a match
    ///   with either is the same request, as equal bytes are equal JSON.
    package static func fingerprints(
        method: HTTPRequest.Method, path: String, contentType: String?, body: ByteBuffer
    ) -> (stored: String, bytes: String) {
        func hash(_ bytes: some Sequence<UInt8>) -> String {
            var hasher = SHA256()
            hasher.update(data: Array("\(method.rawValue) \(normalizedPath(path))\n".utf8))
            hasher.update(data: Array(bytes))
            return hasher.finalize().map { String(format: "%02x", $0) }.joined()
        }
        let raw = hash(body.readableBytesView)
        guard let contentType, Request.isJSON(contentType),
            let canonical = body.withUnsafeReadableBytes({ pointer in
                pointer.withMemoryRebound(to: UInt8.self) { CanonicalJSON.canonical($0) }
            })
        else { return (raw, raw) }
        return (hash(canonical), raw)
    }

    /// `path` as the request fingerprint reads it: each segment that is a UUID, in any case or
    /// percent-encoded (RFC 3986 §2.1), in its stored form (RFC 9562 §4), as the routes read ids
    /// (``IDParameterMiddleware/storedForm(ofPathId:)``), so `/jobs/{ID}/cancel` retried with
    /// the id written another way is the same request, not a 422 mismatch.
    package static func normalizedPath(_ path: String) -> String {
        guard path.utf8.contains(where: { ($0 >= 0x41 && $0 <= 0x46) || $0 == UInt8(ascii: "%") }) else { return path }
        return path.split(separator: "/", omittingEmptySubsequences: false)
            .map { IDParameterMiddleware.storedForm(ofPathId: $0) ?? String($0) }.joined(separator: "/")
    }

    /// Whose key: a key is one caller's (user or service token) within one tenant.
    struct Scope {
        var tenantId: String
        var callerId: String
        var key: String
    }

    /// Deletes keys older than their lifetime (run periodically by the job worker).
    package static func prune(database: Database) async throws {
        let cutoff = WallClock.milliseconds() - lifetimeMs
        try await database.write { db in try await db.raw("DELETE FROM idempotency_keys WHERE created_at < \(bind: cutoff)").run() }
    }

    private func forget(_ scope: Scope) async throws {
        try await database.write { db in
            try await db.raw(
                """
                DELETE FROM idempotency_keys
                WHERE tenant_id = \(bind: scope.tenantId) AND caller_id = \(bind: scope.callerId) AND key = \(bind: scope.key)
                """
            ).run()
        }
    }

    /// Records a finished response and returns it (rebuilt from the captured body).
    private func store(_ response: Response, _ scope: Scope) async throws -> Response {
        let collector = BodyCollector()
        var response = response
        try await response.body.write(collector)
        let text = String(buffer: collector.buffer)
        let status = response.status.code
        let contentType = response.headers[.contentType]
        let location = response.headers[.location]
        try await database.write { db in
            try await db.raw(
                """
                UPDATE idempotency_keys SET state = 'completed', status = \(bind: status), content_type = \(bind: contentType),
                    location = \(bind: location), body = \(bind: text)
                WHERE tenant_id = \(bind: scope.tenantId) AND caller_id = \(bind: scope.callerId) AND key = \(bind: scope.key)
                """
            ).run()
        }
        response.body = ResponseBody(byteBuffer: collector.buffer)
        return response
    }

    private func replay(_ scope: Scope, fingerprints: [String]) async throws -> Response {
        let row = try await database.read { db in
            try await db.raw(
                """
                SELECT fingerprint, state, status, content_type, location, body FROM idempotency_keys
                WHERE tenant_id = \(bind: scope.tenantId) AND caller_id = \(bind: scope.callerId) AND key = \(bind: scope.key)
                """
            ).first()
        }
        guard let row else {
            throw AppError(
                .conflict, code: .conflict, detail: "The request with this Idempotency-Key is still being processed.", headers: [.retryAfter: "1"])
        }
        guard fingerprints.contains(try row.decode(column: "fingerprint", as: String.self)) else {
            throw AppError(
                .unprocessableContent, code: .idempotencyKeyMismatch,
                detail: "This Idempotency-Key was used with a different request.")
        }
        guard try row.decode(column: "state", as: String.self) == "completed", let status = try row.decode(column: "status", as: Int?.self)
        else {
            throw AppError(
                .conflict, code: .conflict, detail: "The request with this Idempotency-Key is still being processed.", headers: [.retryAfter: "1"])
        }
        var headers: HTTPFields = [Self.replayed: "true"]
        if let contentType = try row.decode(column: "content_type", as: String?.self) { headers[.contentType] = contentType }
        if let location = try row.decode(column: "location", as: String?.self) { headers[.location] = location }
        let body = try row.decode(column: "body", as: String?.self) ?? ""
        return Response(status: .init(code: status), headers: headers, body: .init(byteBuffer: ByteBuffer(string: body)))
    }
}

/// Captures a response body so it can be stored and sent.
final class BodyCollector: ResponseBodyWriter {
    var buffer = ByteBuffer()
    func write(_ part: ByteBuffer) async throws { buffer.writeImmutableBuffer(part) }
    func finish(_ trailingHeaders: HTTPFields?) async throws {}
}
