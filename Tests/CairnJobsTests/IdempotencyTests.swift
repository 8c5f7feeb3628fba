import CairnHTTP
import CairnJobs
import CairnServer
import CairnStorage
import CairnTestSupport
import Crypto
import Foundation
import HTTPTypes
import HummingbirdTesting
import NIOCore
import SQLKit
import Testing

@Suite("Idempotency-Key (draft-ietf-httpapi-idempotency-key-header)")
struct IdempotencyTests {
    static let key = HTTPField.Name("Idempotency-Key")!

    func post(_ client: any TestClientProtocol, _ body: String, key: String, token: String) async throws -> TestResponse {
        try await client.execute(
            uri: "/jobs", method: .post,
            headers: [.contentType: "application/json", .authorization: "Bearer \(token)", Self.key: key],
            body: ByteBuffer(string: body))
    }

    /// Stores `key` as a first request still in flight, fingerprinted as the bytes of `body`
    /// (`POST /jobs`), as a node that has not answered yet (or one before canonical JSON
    /// fingerprints) leaves it.
    func storeInFlight(key: String, body: String, _ client: any TestClientProtocol, _ components: CairnComponents, token: String) async throws {
        var hasher = SHA256()
        hasher.update(data: Array("POST /jobs\n".utf8))
        hasher.update(data: Array(body.utf8))
        let fingerprint = hasher.finalize().map { String(format: "%02x", $0) }.joined()
        let me = try await client.json(.get, "/users/me", token: token).object
        let (tenantId, userId) = (me["tenantId"] as! String, me["id"] as! String)
        try await components.database.write { db in
            try await db.raw(
                """
                INSERT INTO idempotency_keys (tenant_id, caller_id, key, fingerprint, state, created_at)
                VALUES (\(bind: tenantId), \(bind: userId), \(bind: key), \(bind: fingerprint), 'processing', \(bind: WallClock.milliseconds()))
                """
            ).run()
        }
    }

    @Test(arguments: TestEngine.available)
    func sameKeySameBodyReplaysOtherBodyIs422AndInFlightIs409(engine: TestEngine) async throws {
        try await withTestApp(engine, owner: "idem@example.com") { client, components, token in
            let body = #"{"kind":"noop","runAt":"2099-01-01T00:00:00Z"}"#
            let first = try await post(client, body, key: "order-1", token: token)
            #expect(first.status == .created)
            let again = try await post(client, body, key: "order-1", token: token)
            #expect(again.status == .created)
            #expect(again.text == first.text)
            #expect(again.headers[.location] == first.headers[.location])
            #expect(again.headers[HTTPField.Name("Idempotent-Replayed")!] == "true")
            let jobs = try await client.json(.get, "/jobs", token: token).object["items"] as? [Any]
            #expect(jobs?.count == 1)

            let other = try await post(client, #"{"kind":"noop","runAt":"2099-01-02T00:00:00Z"}"#, key: "order-1", token: token)
            #expect(other.status == .unprocessableContent)
            #expect(other.code == "idempotency_key_mismatch")

            // Client errors are answered again too; the key is per tenant.
            let bad = try await post(client, #"{"kind":"nope"}"#, key: "bad-1", token: token)
            #expect(bad.status == .badRequest)
            #expect(try await post(client, #"{"kind":"nope"}"#, key: "bad-1", token: token).headers[HTTPField.Name("Idempotent-Replayed")!] == "true")
            let stranger = try await client.registerAndLogin(email: "idem2@example.com").tokens.accessToken
            let theirs = try await post(client, body, key: "order-1", token: stranger)
            #expect(theirs.status == .created)
            #expect(theirs.object["id"] as? String != first.object["id"] as? String)

            // A first request still in flight: the same request again gets 409.
            let pending = #"{"kind":"noop","runAt":"2099-01-03T00:00:00Z"}"#
            try await storeInFlight(key: "slow-1", body: pending, client, components, token: token)
            let inFlight = try await post(client, pending, key: "slow-1", token: token)
            #expect(inFlight.status == .conflict)
            #expect(inFlight.headers[.retryAfter] != nil)
            let invalidKey = try await post(client, body, key: String(repeating: "k", count: 300), token: token)
            #expect(invalidKey.status == .badRequest)
        }
    }
}

extension IdempotencyTests {
    /// A retry whose JSON body differs only in whitespace, member order or string escapes is
    /// the same request and replays (found by a fresh-user trial: it was 422, the fingerprint
    /// hashed the bytes); a retry with another value is still 422; a body that is not JSON is
    /// still compared byte for byte; and a key stored with the byte fingerprint (before JSON was
    /// canonicalised) still matches its own bytes.
    @Test(arguments: TestEngine.available)
    func jsonRetriesAreComparedInCanonicalForm(engine: TestEngine) async throws {
        try await withTestApp(engine, owner: "idem-canonical@example.com") { client, components, token in
            let replayed = HTTPField.Name("Idempotent-Replayed")!
            let first = try await post(client, #"{"kind":"noop","runAt":"2099-01-01T00:00:00Z","priority":2}"#, key: "c-1", token: token)
            #expect(first.status == .created, "\(first.text)")
            for retry in [
                "{ \"runAt\" : \"2099-01-01T00:00:00Z\",\n\t\"priority\": 2, \"kind\":\"noop\" }\r\n",
                #"{"priority":2,"kind":"no\u006fp","runAt":"2099-01-01T00:00:00Z"}"#,
            ] {
                let again = try await post(client, retry, key: "c-1", token: token)
                #expect(again.status == .created, "\(retry): \(again.text)")
                #expect(again.headers[replayed] == "true", "\(retry)")
                #expect(again.text == first.text, "\(retry)")
            }
            #expect((try await client.json(.get, "/jobs", token: token).object["items"] as? [Any])?.count == 1)
            for other in [
                #"{"runAt":"2099-01-02T00:00:00Z","kind":"noop","priority":2}"#, #"{"kind":"noop","runAt":"2099-01-01T00:00:00Z","priority":3}"#,
                #"{"kind":"noop","runAt":"2099-01-01T00:00:00Z"}"#,
            ] {
                let refused = try await post(client, other, key: "c-1", token: token)
                #expect(refused.status == .unprocessableContent, "\(other): \(refused.text)")
                #expect(refused.code == "idempotency_key_mismatch", "\(other)")
            }
            // Not JSON: the bytes are the request.
            let broken = try await post(client, #"{"kind": "noop","#, key: "c-2", token: token)
            #expect(broken.status == .badRequest)
            #expect(try await post(client, #"{"kind": "noop","#, key: "c-2", token: token).headers[replayed] == "true")
            #expect(try await post(client, #"{"kind":"noop","#, key: "c-2", token: token).status == .unprocessableContent)
            // A key stored with the byte fingerprint of a body that is not in canonical form.
            let pending = #"{ "runAt":"2099-01-03T00:00:00Z", "kind":"noop" }"#
            try await storeInFlight(key: "c-3", body: pending, client, components, token: token)
            #expect(try await post(client, pending, key: "c-3", token: token).status == .conflict, "the same request, still in flight")
        }
    }
}

@Suite("Idempotency-Key: per caller, and released after a lease")
struct IdempotencyScopeTests {
    /// Two users of one tenant (owner and admin: members may not enqueue) pick the same key for the same request (issue 13): each gets
    /// their own job, never the other's reply.
    /// The fingerprint reads ids in the path in lower case, as the routes do: a retry of
    /// `POST /pipelines/{id}/runs` that writes the pipeline's id in upper case is the same
    /// request (replayed), not a 422 mismatch.
    @Test(arguments: TestEngine.available)
    func aRetryWithTheIdInAnotherCaseIsTheSameRequest(engine: TestEngine) async throws {
        try await withTestApp(engine, owner: "idem-case@example.com") { client, _, token in
            let file = try await client.execute(
                uri: "/files", method: .post, headers: [.contentType: "text/csv", .authorization: "Bearer \(token)"],
                body: ByteBuffer(string: "a,b\n1,2\n"))
            let fileId = try #require(file.object["id"] as? String, "\(file.text)")
            let pipeline = try await client.json(
                .post, "/pipelines", ["name": "p", "input": ["format": "csv"], "sql": "SELECT * FROM input"], token: token)
            let id = try #require(pipeline.object["id"] as? String, "\(pipeline.text)")
            let first = try await client.json(
                .post, "/pipelines/\(id)/runs", ["fileId": fileId], token: token, headers: [IdempotencyTests.key: "run-1"])
            #expect(first.status == .accepted, "\(first.text)")
            let upper = try await client.json(
                .post, "/pipelines/\(id.uppercased())/runs", ["fileId": fileId], token: token, headers: [IdempotencyTests.key: "run-1"])
            #expect(upper.status == .accepted, "\(upper.text)")
            #expect(upper.headers[HTTPField.Name("Idempotent-Replayed")!] == "true")
            #expect(upper.text == first.text)
            // Other text in the path is still read as written.
            #expect(IdempotencyMiddleware.normalizedPath("/jobs/\(id.uppercased())/cancel") == "/jobs/\(id)/cancel")
            #expect(IdempotencyMiddleware.normalizedPath("/Jobs/ABC") == "/Jobs/ABC")
            // Percent-encoded, as a client may write a path segment (RFC 3986 §2.1).
            let encoded = id.uppercased().replacingOccurrences(of: "-", with: "%2D")
            #expect(IdempotencyMiddleware.normalizedPath("/jobs/\(encoded)/cancel") == "/jobs/\(id)/cancel")
            #expect(IdempotencyMiddleware.normalizedPath("/jobs/%2D/cancel") == "/jobs/%2D/cancel")
        }
    }

    @Test(arguments: TestEngine.available)
    func twoUsersOfOneTenantDoNotShareKeys(engine: TestEngine) async throws {
        try await withTestApp(engine, owner: "idem-owner@example.com") { client, _, owner in
            let (admin, adminTokens) = try await client.addUser(email: "idem-member@example.com", role: "admin", token: owner)
            let member = adminTokens.accessToken
            let body = #"{"kind":"noop","runAt":"2099-01-01T00:00:00Z"}"#
            let first = try await IdempotencyTests().post(client, body, key: "shared-1", token: owner)
            #expect(first.status == .created)
            let second = try await IdempotencyTests().post(client, body, key: "shared-1", token: member)
            #expect(second.status == .created)
            #expect(second.headers[IdempotencyMiddleware.replayed] == nil, "not the owner's reply")
            #expect(second.object["id"] as? String != first.object["id"] as? String)
            #expect(second.object["createdBy"] as? String == admin.id)
            // Each still replays their own.
            let again = try await IdempotencyTests().post(client, body, key: "shared-1", token: member)
            #expect(again.headers[IdempotencyMiddleware.replayed] == "true")
            #expect(again.object["id"] as? String == second.object["id"] as? String)
        }
    }

    /// A request that claimed its key and never finished (its node died): the key answers 409
    /// until its 60 s lease has passed on the node's clock, then the request may run again.
    @Test(arguments: TestEngine.available)
    func aKeyWhoseRequestDiedIsReleasedAfterItsLease(engine: TestEngine) async throws {
        let clock = TestClock()
        try await withTestApp(engine, clock: clock) { app in
            let (user, tokens) = try await app.client.registerAndLogin(email: "idem-lease@example.com")
            let body = #"{"kind":"noop","runAt":"2099-01-01T00:00:00Z"}"#
            var hasher = SHA256()
            hasher.update(data: Array("POST /jobs\n".utf8))
            hasher.update(data: Array(body.utf8))
            let fingerprint = hasher.finalize().map { String(format: "%02x", $0) }.joined()
            // What a request leaves behind when its node dies between claiming and answering.
            try await app.components.database.write { db in
                try await db.raw(
                    """
                    INSERT INTO idempotency_keys (tenant_id, caller_id, key, fingerprint, state, created_at)
                    VALUES (\(bind: user.tenantId), \(bind: user.id), 'died-1', \(bind: fingerprint), 'processing', \(bind: clock.milliseconds))
                    """
                ).run()
            }
            let held = try await IdempotencyTests().post(app.client, body, key: "died-1", token: tokens.accessToken)
            #expect(held.status == .conflict)
            clock.advance(by: .seconds(59))
            #expect(try await IdempotencyTests().post(app.client, body, key: "died-1", token: tokens.accessToken).status == .conflict)
            clock.advance(by: .seconds(2))
            let released = try await IdempotencyTests().post(app.client, body, key: "died-1", token: tokens.accessToken)
            #expect(released.status == .created)
            #expect(released.headers[IdempotencyMiddleware.replayed] == nil)
            // Completed now: replayed, not released again, long after the lease (within the
            // access token's 15 minutes).
            clock.advance(by: .seconds(600))
            let replayed = try await IdempotencyTests().post(app.client, body, key: "died-1", token: tokens.accessToken)
            #expect(replayed.headers[IdempotencyMiddleware.replayed] == "true")
            #expect(replayed.object["id"] as? String == released.object["id"] as? String)
        }
    }
}

@Suite("Jobs: edge cases found by fuzzing")
struct JobEdgeCaseTests {
    @Test(arguments: TestEngine.available)
    func retryHeldUniqueKeyFarDatesNulKindsAndRateLimitedReplays(engine: TestEngine) async throws {
        try await withTestApp(engine, owner: "edge@example.com", configure: { $0.jobs.maxPendingPerTenant = 2 }) { client, _, token in
            let body: [String: Any] = ["kind": "noop", "uniqueKey": "u2", "runAt": "2099-01-01T00:00:00Z"]
            let first = try await client.json(.post, "/jobs", body, token: token).object["id"] as! String
            _ = try await client.json(.post, "/jobs/\(first)/cancel", token: token)
            #expect(try await client.json(.post, "/jobs", body, token: token).status == .created)
            let retry = try await client.json(.post, "/jobs/\(first)/retry", token: token)
            #expect(retry.status == .conflict)

            let ancient = try await client.json(.post, "/jobs", ["kind": "noop", "runAt": "0000-01-01T00:00:00+23:59"], token: token)
            #expect(ancient.status == .badRequest)
            #expect((ancient.object["errors"] as? [[String: Any]])?.first?["field"] as? String == "runAt")
            #expect(try await client.json(.get, "/jobs?kind=%00", token: token).status == .badRequest)

            // The tenant now has 2 pending jobs (the cap): a 429 is not remembered under its key.
            _ = try await client.json(.post, "/jobs", ["kind": "noop", "runAt": "2099-01-01T00:00:00Z"], token: token)
            let limited = try await client.json(
                .post, "/jobs", ["kind": "noop"], token: token, headers: [IdempotencyTests.key: "cap-1"])
            #expect(limited.status == .tooManyRequests)
            let pending = try await client.json(.get, "/jobs?state=scheduled", token: token).object["items"] as? [[String: Any]] ?? []
            _ = try await client.json(.post, "/jobs/\(pending.first?["id"] as? String ?? "")/cancel", token: token)
            let later = try await client.json(.post, "/jobs", ["kind": "noop"], token: token, headers: [IdempotencyTests.key: "cap-1"])
            #expect(later.status == .created)
            #expect(later.headers[HTTPField.Name("Idempotent-Replayed")!] == nil)
        }
    }
}

@Suite("Jobs: who may change a job")
struct JobPermissionTests {
    @Test func membersChangeOnlyJobsTheyEnqueued() async throws {
        try await withTestApp(.sqlite, owner: "boss@example.com") { client, _, owner in
            let member = try await client.addUser(email: "mem@example.com", token: owner).tokens.accessToken
            let job = try await client.json(.post, "/jobs", ["kind": "noop", "runAt": "2099-01-01T00:00:00Z"], token: owner).object["id"] as! String
            #expect(try await client.json(.post, "/jobs/\(job)/cancel", token: member).status == .forbidden)
            #expect(try await client.json(.delete, "/jobs/\(job)", token: member).status == .forbidden)
            #expect(try await client.json(.post, "/jobs/\(job)/cancel", token: owner).status == .ok)
            #expect(try await client.json(.post, "/jobs/\(job)/retry", token: member).status == .forbidden)
        }
    }
}
