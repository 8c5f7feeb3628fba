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

    @Test(arguments: TestEngine.available)
    func sameKeySameBodyReplaysOtherBodyIs422AndInFlightIs409(engine: TestEngine) async throws {
        try await withTestApp(engine) { client, components in
            let token = try await client.registerAndLogin(email: "idem@example.com").tokens.accessToken
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
            var hasher = SHA256()
            hasher.update(data: Array("POST /jobs\n".utf8))
            hasher.update(data: Array(pending.utf8))
            let fingerprint = hasher.finalize().map { String(format: "%02x", $0) }.joined()
            let tenantId = try await client.json(.get, "/users/me", token: token).object["tenantId"] as! String
            try await components.database.write { db in
                try await db.raw(
                    """
                    INSERT INTO idempotency_keys (tenant_id, key, fingerprint, state, created_at)
                    VALUES (\(bind: tenantId), 'slow-1', \(bind: fingerprint), 'processing', \(bind: WallClock.milliseconds()))
                    """
                ).run()
            }
            let inFlight = try await post(client, pending, key: "slow-1", token: token)
            #expect(inFlight.status == .conflict)
            #expect(inFlight.headers[.retryAfter] != nil)
            let invalidKey = try await post(client, body, key: String(repeating: "k", count: 300), token: token)
            #expect(invalidKey.status == .badRequest)
        }
    }
}

@Suite("Jobs: edge cases found by fuzzing")
struct JobEdgeCaseTests {
    @Test(arguments: TestEngine.available)
    func retryHeldUniqueKeyFarDatesNulKindsAndRateLimitedReplays(engine: TestEngine) async throws {
        try await withTestApp(engine, configure: { $0.jobs.maxPendingPerTenant = 2 }) { client, _ in
            let token = try await client.registerAndLogin(email: "edge@example.com").tokens.accessToken
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
        try await withTestApp(.sqlite) { client, _ in
            let owner = try await client.registerAndLogin(email: "boss@example.com").tokens.accessToken
            _ = try await client.json(
                .post, "/users", ["email": "mem@example.com", "name": "M", "role": "member", "password": "member password"], token: owner)
            let member = try await client.login(email: "mem@example.com", password: "member password").accessToken
            let job = try await client.json(.post, "/jobs", ["kind": "noop", "runAt": "2099-01-01T00:00:00Z"], token: owner).object["id"] as! String
            #expect(try await client.json(.post, "/jobs/\(job)/cancel", token: member).status == .forbidden)
            #expect(try await client.json(.delete, "/jobs/\(job)", token: member).status == .forbidden)
            #expect(try await client.json(.post, "/jobs/\(job)/cancel", token: owner).status == .ok)
            #expect(try await client.json(.post, "/jobs/\(job)/retry", token: member).status == .forbidden)
        }
    }
}
