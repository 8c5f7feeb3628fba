import CairnStorage
import CairnTestSupport
import Foundation
import HTTPTypes
import HummingbirdTesting
import NIOCore
import Testing

@Suite("Ids in any case")
struct IdentifierCaseTests {
    /// RFC 9562 §4: UUIDs are read in either case. An id written in upper case in a path names
    /// the same resource as the lower-case id the server wrote (before: 404 on every `{id}`
    /// route, while a publish body took the same ids), and answers keep ids in lower case.
    @Test(arguments: TestEngine.available)
    func upperCaseIdsInPathsNameTheSameResources(engine: TestEngine) async throws {
        try await withTestApp(engine) { client, _ in
            let (user, tokens) = try await client.registerAndLogin(email: "upper-ids@example.com", name: "Ann")
            let token = tokens.accessToken
            let task = try await client.json(.post, "/tasks", ["title": "Case", "description": "d"], token: token)
            let file = try await client.execute(
                uri: "/files", method: .post, headers: [.contentType: "text/csv", .authorization: "Bearer \(token)"],
                body: .init(string: "a,b\n1,2\n"))
            #expect(file.status == .created, "\(file.text)")
            let schedule = try await client.json(
                .post, "/schedules", ["name": "n", "cron": "@daily", "kind": "noop", "args": ["sleepMs": 1, "checkpointEvery": 100]], token: token)
            let id = { (response: TestResponse) in response.object["id"] as? String ?? "" }
            let cases = [
                ("/users/", user.id, ""), ("/tasks/", id(task), ""), ("/files/", id(file), ""), ("/files/", id(file), "/content"),
                ("/schedules/", id(schedule), ""),
            ]
            for (prefix, resourceId, suffix) in cases {
                let lower = try await client.json(.get, prefix + resourceId + suffix, token: token)
                #expect(lower.status == .ok, "\(prefix)\(suffix): \(lower.text)")
                let upper = try await client.json(.get, prefix + resourceId.uppercased() + suffix, token: token)
                #expect(upper.status == .ok, "\(prefix)\(suffix): \(upper.text)")
                #expect(upper.text == lower.text, "\(prefix)\(suffix)")
            }
            // A write through an upper-case id changes the same row, and the answer's id stays lower case.
            let patched = try await client.json(.patch, "/tasks/\(id(task).uppercased())", ["completed": true], token: token)
            #expect(patched.status == .ok, "\(patched.text)")
            #expect(id(patched) == id(task))
            // The publish body and the path read ids through the same rule.
            let published = try await client.json(
                .post, "/notifications", ["userIds": [user.id.uppercased()], "type": "message", "title": "t", "body": "b"], token: token)
            #expect(published.status == .accepted, "\(published.text)")
            let stored = try #require((published.object["ids"] as? [String])?.first)
            #expect(try await client.json(.get, "/notifications/\(stored.uppercased())", token: token).status == .ok)
            // Percent-encoded (RFC 3986 §2.1), the id is decoded first (it was 404).
            let encoded = id(task).replacingOccurrences(of: "-", with: "%2D").replacingOccurrences(of: "a", with: "%61")
            let decoded = try await client.json(.get, "/tasks/\(encoded)", token: token)
            #expect(decoded.status == .ok, "\(encoded): \(decoded.text)")
            #expect(id(decoded) == id(task))
            #expect(try await client.json(.get, "/tasks/\(encoded.uppercased())", token: token).status == .ok)
            #expect(try await client.json(.get, "/tasks/%ZZ\(id(task).dropFirst(3))", token: token).status == .notFound)
            let deleted = try await client.json(.delete, "/tasks/\(id(task).uppercased())", token: token)
            #expect(deleted.status == .noContent, "\(deleted.text)")
            #expect(try await client.json(.get, "/tasks/\(id(task))", token: token).status == .notFound)
        }
    }

    /// Only UUIDs are lowered: text that is no UUID is left as written (a non-UUID id is still
    /// 404), and so is a parameter that is not an id.
    @Test func onlyUUIDsInIdParametersAreLowered() {
        #expect(UUIDv7.normalized("0190F5A0-0000-7000-8000-00000000000A") == "0190f5a0-0000-7000-8000-00000000000a")
        #expect(UUIDv7.normalized("NOT-A-UUID") == "NOT-A-UUID")
        #expect(UUIDv7.normalized("0190F5A0-0000-7000-8000-00000000000G") == "0190F5A0-0000-7000-8000-00000000000G")
    }
}
