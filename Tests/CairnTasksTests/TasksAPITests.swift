import CairnHTTP
import CairnServer
import CairnStorage
import CairnTasks
import CairnTestSupport
import Foundation
import HTTPTypes
import HummingbirdTesting
import NIOCore
import Testing

// MARK: - Helpers

/// The access token of a freshly registered tenant owner, and the owner's user id.
private func signUp(_ client: any TestClientProtocol, _ email: String) async throws -> (token: String, userId: String) {
    let (user, tokens) = try await client.registerAndLogin(email: email)
    let token = tokens.accessToken
    let userId = user.id
    return (token, userId)
}

/// Creates a task and returns its JSON; fails the test unless 201.
@discardableResult
private func createTask(
    _ client: any TestClientProtocol, token: String, _ body: [String: Any], sourceLocation: SourceLocation = #_sourceLocation
) async throws -> [String: Any] {
    let response = try await client.json(.post, "/tasks", body, token: token)
    try #require(response.status == .created, "create failed: \(response.status) \(response.text)", sourceLocation: sourceLocation)
    return response.object
}

/// The `field`s named in a problem document's `errors`.
private func fields(_ response: TestResponse) -> Set<String> {
    Set((response.object["errors"] as? [[String: Any]] ?? []).compactMap { $0["field"] as? String })
}

/// The ids of a `{items, nextCursor}` page, in order.
private func ids(_ response: TestResponse) -> [String] {
    (response.object["items"] as? [[String: Any]] ?? []).compactMap { $0["id"] as? String }
}

/// RFC 3339 UTC with exactly three fractional digits and `Z`.
private func isMillisecondTimestamp(_ text: String?) -> Bool {
    guard let text else { return false }
    return text.wholeMatch(of: /\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z/) != nil
}

private func parseTimestamp(_ text: String?) -> Date? {
    guard let text else { return nil }
    let formatter = ISO8601DateFormatter()
    formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    return formatter.date(from: text)
}

// MARK: - Create and read

@Suite("Tasks: create and read")
struct TasksCreateReadTests {
    @Test(arguments: TestEngine.available)
    func createAnswers201WithLocationETagTrimmedTitleAndDefaults(engine: TestEngine) async throws {
        try await withTestApp(engine) { client, _ in
            let (token, userId) = try await signUp(client, "ann@example.com")
            let before = Date()
            let created = try await client.json(.post, "/tasks", ["title": "  \tBuy milk \n "], token: token)
            let after = Date()
            #expect(created.status == .created)
            let task = created.object
            let id = try #require(task["id"] as? String)
            #expect(UUIDv7.isValid(id))
            #expect(created.headers[.location] == "/tasks/\(id)")
            let etag = try #require(created.headers[.eTag])
            #expect(etag.hasPrefix("\"") && etag.hasSuffix("\"") && etag.count > 2)
            #expect(created.headers[.contentType]?.hasPrefix("application/json") == true)
            #expect(task["title"] as? String == "Buy milk")
            #expect(task["completed"] as? Bool == false)
            #expect(task["description"] is NSNull)
            #expect(task["createdBy"] as? String == userId)
            #expect(task["tenantId"] == nil)  // never shown: it is always the caller's
            #expect(Set(task.keys) == ["id", "title", "description", "completed", "createdBy", "createdAt", "updatedAt"])

            // Timestamps: RFC 3339, milliseconds, Z; equal on create; within the request's time window.
            let createdAt = task["createdAt"] as? String
            #expect(isMillisecondTimestamp(createdAt))
            #expect(isMillisecondTimestamp(task["updatedAt"] as? String))
            #expect(createdAt == task["updatedAt"] as? String)
            let date = try #require(parseTimestamp(createdAt))
            #expect(date.timeIntervalSince(before) >= -0.001)
            #expect(after.timeIntervalSince(date) >= -0.001)

            // GET answers the same representation and ETag.
            let fetched = try await client.json(.get, "/tasks/\(id)", token: token)
            #expect(fetched.status == .ok)
            #expect(fetched.headers[.eTag] == etag)
            #expect(fetched.text == created.text)
        }
    }

    @Test(arguments: TestEngine.available)
    func createKeepsGivenDescriptionAndCompleted(engine: TestEngine) async throws {
        try await withTestApp(engine, owner: "ben@example.com") { client, _, token in
            let text = "Line one\nLine \"two\" \\ with \u{1F600} and caf\u{E9}"
            let task = try await createTask(client, token: token, ["title": "Write report", "description": text, "completed": true])
            #expect(task["description"] as? String == text)
            #expect(task["completed"] as? Bool == true)
            let fetched = try await client.json(.get, "/tasks/\(task["id"] as? String ?? "")", token: token)
            #expect(fetched.object["description"] as? String == text)
            #expect(fetched.object["completed"] as? Bool == true)
        }
    }

    @Test(arguments: TestEngine.available)
    func unknownAndMalformedIdsAre404(engine: TestEngine) async throws {
        try await withTestApp(engine, owner: "cat@example.com") { client, _, token in
            _ = try await createTask(client, token: token, ["title": "Exists"])
            for id in [UUIDv7.make(), "not-a-uuid", "12345", "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz", "' OR 1=1 --"] {
                let path = "/tasks/\(id.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed) ?? id)"
                let get = try await client.json(.get, path, token: token)
                #expect(get.status == .notFound, "GET \(id)")
                #expect(get.code == "not_found")
                let patch = try await client.json(.patch, path, ["title": "x"], token: token)
                #expect(patch.status == .notFound, "PATCH \(id)")
                #expect(patch.code == "not_found")
                // With an If-Match, a missing task is still 404, not 412.
                let patchIfMatch = try await client.json(.patch, path, ["title": "x"], token: token, headers: [.ifMatch: "\"1\""])
                #expect(patchIfMatch.status == .notFound, "PATCH If-Match \(id)")
                let delete = try await client.json(.delete, path, token: token)
                #expect(delete.status == .notFound, "DELETE \(id)")
                #expect(delete.code == "not_found")
            }
        }
    }
}

// MARK: - Lists

@Suite("Tasks: lists and pagination")
struct TasksListTests {
    @Test(arguments: TestEngine.available)
    func listIsNewestFirst(engine: TestEngine) async throws {
        try await withTestApp(engine, owner: "dee@example.com") { client, _, token in
            var created: [String] = []
            for title in ["first", "second", "third", "fourth"] {
                created.append(try await createTask(client, token: token, ["title": title])["id"] as! String)
            }
            let list = try await client.json(.get, "/tasks", token: token)
            #expect(list.status == .ok)
            #expect(ids(list) == created.reversed())
            let titles = (list.object["items"] as? [[String: Any]] ?? []).compactMap { $0["title"] as? String }
            #expect(titles == ["fourth", "third", "second", "first"])
            #expect(list.object["nextCursor"] is NSNull)
        }
    }

    @Test(arguments: TestEngine.available)
    func paginationWalksAllTasksOnceWithCursors(engine: TestEngine) async throws {
        try await withTestApp(engine, owner: "eve@example.com") { client, _, token in
            var created: [String] = []
            for index in 0..<45 {
                created.append(try await createTask(client, token: token, ["title": "task \(index)"])["id"] as! String)
            }
            var seen: [String] = []
            var pageSizes: [Int] = []
            var cursor: String?
            var lastNextCursor: Any?
            repeat {
                var uri = "/tasks?limit=20"
                if let cursor { uri += "&cursor=\(cursor)" }
                let page = try await client.json(.get, uri, token: token)
                try #require(page.status == .ok, "\(page.text)")
                let pageIds = ids(page)
                pageSizes.append(pageIds.count)
                seen += pageIds
                lastNextCursor = page.object["nextCursor"]
                cursor = lastNextCursor as? String
                if let cursor { #expect(!cursor.contains(pageIds.last ?? "\u{0}"), "cursor is opaque") }
            } while cursor != nil && pageSizes.count < 10
            #expect(pageSizes == [20, 20, 5])
            #expect(Set(seen).count == seen.count, "no duplicates")
            #expect(Set(seen) == Set(created))
            #expect(seen == created.reversed(), "newest first across pages")
            #expect(lastNextCursor is NSNull)

            // Default limit is 20.
            let firstPage = try await client.json(.get, "/tasks", token: token)
            #expect(ids(firstPage).count == 20)
            #expect(firstPage.object["nextCursor"] is String)
        }
    }

    @Test(arguments: TestEngine.available)
    func completedFilter(engine: TestEngine) async throws {
        try await withTestApp(engine, owner: "fay@example.com") { client, _, token in
            var done: [String] = []
            var open: [String] = []
            for index in 0..<7 {
                let completed = index % 3 == 0
                let id = try await createTask(client, token: token, ["title": "t\(index)", "completed": completed])["id"] as! String
                if completed { done.append(id) } else { open.append(id) }
            }
            // One task completed later via PATCH moves between the filters.
            let flipped = open.removeFirst()
            let patched = try await client.json(.patch, "/tasks/\(flipped)", ["completed": true], token: token)
            #expect(patched.status == .ok)
            done.append(flipped)

            let onlyDone = try await client.json(.get, "/tasks?completed=true", token: token)
            #expect(onlyDone.status == .ok)
            #expect(Set(ids(onlyDone)) == Set(done))
            #expect(ids(onlyDone).count == done.count)
            let onlyOpen = try await client.json(.get, "/tasks?completed=false", token: token)
            #expect(onlyOpen.status == .ok)
            #expect(ids(onlyOpen) == open.reversed())
            let all = try await client.json(.get, "/tasks", token: token)
            #expect(ids(all).count == 7)

            // The filter combines with pagination.
            let firstDone = try await client.json(.get, "/tasks?completed=true&limit=2", token: token)
            #expect(ids(firstDone).count == 2)
            let next = try #require(firstDone.object["nextCursor"] as? String)
            let secondDone = try await client.json(.get, "/tasks?completed=true&limit=2&cursor=\(next)", token: token)
            #expect(Set(ids(firstDone) + ids(secondDone)) == Set(done))
            #expect(secondDone.object["nextCursor"] is NSNull)
        }
    }

    @Test(arguments: TestEngine.available)
    func badQueryParametersAre400NamingTheParameter(engine: TestEngine) async throws {
        try await withTestApp(engine, owner: "gus@example.com") { client, _, token in
            let maybe = try await client.json(.get, "/tasks?completed=maybe", token: token)
            #expect(maybe.status == .badRequest)
            #expect(maybe.code == "invalid_input")
            #expect(fields(maybe) == ["completed"])
            let limit = try await client.json(.get, "/tasks?limit=0", token: token)
            #expect(limit.status == .badRequest)
            #expect(fields(limit) == ["limit"])
            let cursor = try await client.json(.get, "/tasks?cursor=forged", token: token)
            #expect(cursor.status == .badRequest)
            #expect(fields(cursor) == ["cursor"])
            // A well-formed cursor whose key is not a task id is forged too.
            let notAnId = try await client.json(.get, "/tasks?cursor=\(Cursor.encode("' OR 1=1 --"))", token: token)
            #expect(notAnId.status == .badRequest)
            #expect(fields(notAnId) == ["cursor"])
        }
    }
}

// MARK: - Validation

@Suite("Tasks: validation")
struct TasksValidationTests {
    @Test(arguments: TestEngine.available)
    func invalidCreateBodiesName(engine: TestEngine) async throws {
        try await withTestApp(engine, owner: "hal@example.com") { client, _, token in
            let cases: [(body: [String: Any], field: String)] = [
                (["title": ""], "title"),
                (["title": "   \t\n  "], "title"),
                (["title": String(repeating: "a", count: 201)], "title"),
                (["title": "ok", "description": String(repeating: "d", count: 10_001)], "description"),
                (["title": 5], "title"),
                (["title": "x", "completed": "yes"], "completed"),
                (["description": "no title"], "title"),
            ]
            for (body, field) in cases {
                let response = try await client.json(.post, "/tasks", body, token: token)
                #expect(response.status == .badRequest, "\(body)")
                #expect(response.code == "invalid_input", "\(body)")
                #expect(fields(response).contains(field), "\(body) → \(response.text)")
                #expect(response.headers[.contentType] == "application/problem+json")
            }
            // Nothing was stored by the refused requests.
            let list = try await client.json(.get, "/tasks", token: token)
            #expect(ids(list).isEmpty)
        }
    }

    @Test(arguments: TestEngine.available)
    func limitsAreInclusive(engine: TestEngine) async throws {
        try await withTestApp(engine, owner: "ida@example.com") { client, _, token in
            let title = String(repeating: "t", count: 200)
            let description = String(repeating: "d", count: 10_000)
            let task = try await createTask(client, token: token, ["title": "  \(title)  ", "description": description])
            #expect(task["title"] as? String == title)
            #expect(task["description"] as? String == description)
            // Limits count characters, not bytes: 200 emoji are a valid title.
            let emoji = String(repeating: "\u{1F680}", count: 200)
            let rockets = try await createTask(client, token: token, ["title": emoji])
            #expect(rockets["title"] as? String == emoji)
        }
    }

    @Test(arguments: TestEngine.available)
    func controlCharactersRoundTrip(engine: TestEngine) async throws {
        try await withTestApp(engine, owner: "ctl@example.com") { client, _, token in
            let text = "bell\u{7} us\u{1F} tab\t cr\r del\u{7F} \"q\" \\ \u{2028}"
            let response = try await client.json(.post, "/tasks", ["title": text, "description": text], token: token)
            #expect(response.status == .created)
            #expect(response.object["title"] as? String == text.trimmingCharacters(in: .whitespacesAndNewlines))
            #expect(response.object["description"] as? String == text)
            let fetched = try await client.json(.get, response.headers[.location] ?? "/", token: token)
            #expect(fetched.text == response.text)
        }
    }

    /// A NUL character cannot be stored on either engine (SQLite truncates the text at the NUL,
    /// PostgreSQL refuses it), so it is refused up front with 400, never stored cut short or 500.
    @Test(arguments: TestEngine.available)
    func nulCharactersAreStoredExactlyOrRefusedWith400(engine: TestEngine) async throws {
        try await withTestApp(engine, owner: "nul@example.com") { client, _, token in
            for body: [String: Any] in [["title": "nul\u{0}inside"], ["title": "ok", "description": "nul\u{0}inside"]] {
                let response = try await client.json(.post, "/tasks", body, token: token)
                #expect(response.status == .badRequest, "\(body) → \(response.status)")
                #expect(response.code == "invalid_input")
            }
        }
    }

    @Test(arguments: TestEngine.available)
    func patchValidationAndClearingTheDescription(engine: TestEngine) async throws {
        try await withTestApp(engine, owner: "jon@example.com") { client, _, token in
            let created = try await client.json(.post, "/tasks", ["title": "Keep", "description": "some text"], token: token)
            let task = created.object
            let path = "/tasks/\(task["id"] as! String)"
            let originalTag = try #require(created.headers[.eTag])

            let nullTitle = try await client.json(.patch, path, ["title": NSNull()], token: token)
            #expect(nullTitle.status == .badRequest)
            #expect(nullTitle.code == "invalid_input")
            #expect(fields(nullTitle) == ["title"])
            let blankTitle = try await client.json(.patch, path, ["title": "  "], token: token)
            #expect(blankTitle.status == .badRequest)
            #expect(fields(blankTitle) == ["title"])
            let nullCompleted = try await client.json(.patch, path, ["completed": NSNull()], token: token)
            #expect(nullCompleted.status == .badRequest)
            #expect(fields(nullCompleted) == ["completed"])
            let longDescription = try await client.json(.patch, path, ["description": String(repeating: "d", count: 10_001)], token: token)
            #expect(longDescription.status == .badRequest)
            #expect(fields(longDescription) == ["description"])
            // A refused PATCH changes nothing, not even the version.
            let unchanged = try await client.json(.get, path, token: token)
            #expect(unchanged.object["title"] as? String == "Keep")
            #expect(unchanged.object["description"] as? String == "some text")
            #expect(unchanged.headers[.eTag] == originalTag)

            // An absent field is left alone; `null` clears the description.
            let retitled = try await client.json(.patch, path, ["title": "  Renamed  "], token: token)
            #expect(retitled.status == .ok)
            #expect(retitled.object["title"] as? String == "Renamed")
            #expect(retitled.object["description"] as? String == "some text")
            let cleared = try await client.json(.patch, path, ["description": NSNull()], token: token)
            #expect(cleared.status == .ok)
            #expect(cleared.object["description"] is NSNull)
            #expect(cleared.object["title"] as? String == "Renamed")
            let fetched = try await client.json(.get, path, token: token)
            #expect(fetched.object["description"] is NSNull)
            #expect(fetched.object["createdAt"] as? String == task["createdAt"] as? String)
            #expect(isMillisecondTimestamp(fetched.object["updatedAt"] as? String))
            let createdDate = try #require(parseTimestamp(task["createdAt"] as? String))
            let updated = try #require(parseTimestamp(fetched.object["updatedAt"] as? String))
            #expect(updated >= createdDate)
        }
    }
}

// MARK: - Conditional requests

@Suite("Tasks: ETags and conditional requests")
struct TasksConditionalTests {
    @Test(arguments: TestEngine.available)
    func ifNoneMatchAnswers304OnlyForTheCurrentTag(engine: TestEngine) async throws {
        try await withTestApp(engine, owner: "kim@example.com") { client, _, token in
            let created = try await client.json(.post, "/tasks", ["title": "Cache me"], token: token)
            let path = created.headers[.location]!
            let etag = try #require(created.headers[.eTag])

            let notModified = try await client.json(.get, path, token: token, headers: [.ifNoneMatch: etag])
            #expect(notModified.status == .notModified)
            #expect(notModified.body.readableBytes == 0)
            #expect(notModified.headers[.eTag] == etag)

            let patched = try await client.json(.patch, path, ["completed": true], token: token)
            let newTag = try #require(patched.headers[.eTag])
            #expect(newTag != etag)
            let stale = try await client.json(.get, path, token: token, headers: [.ifNoneMatch: etag])
            #expect(stale.status == .ok)
            #expect(stale.object["completed"] as? Bool == true)
            #expect(stale.headers[.eTag] == newTag)
            let current = try await client.json(.get, path, token: token, headers: [.ifNoneMatch: newTag])
            #expect(current.status == .notModified)
        }
    }

    @Test(arguments: TestEngine.available)
    func patchWithIfMatch(engine: TestEngine) async throws {
        try await withTestApp(engine, owner: "lea@example.com") { client, _, token in
            let created = try await client.json(.post, "/tasks", ["title": "Original"], token: token)
            let path = created.headers[.location]!
            let firstTag = try #require(created.headers[.eTag])

            // Someone else changes it: the first tag is now stale.
            let other = try await client.json(.patch, path, ["title": "Changed by other"], token: token)
            #expect(other.status == .ok)
            let secondTag = try #require(other.headers[.eTag])
            #expect(secondTag != firstTag)

            let stale = try await client.json(.patch, path, ["title": "Lost update"], token: token, headers: [.ifMatch: firstTag])
            #expect(stale.status == .preconditionFailed)
            #expect(stale.code == "precondition_failed")
            let afterStale = try await client.json(.get, path, token: token)
            #expect(afterStale.object["title"] as? String == "Changed by other")
            #expect(afterStale.headers[.eTag] == secondTag)

            let current = try await client.json(.patch, path, ["title": "Safe update"], token: token, headers: [.ifMatch: secondTag])
            #expect(current.status == .ok)
            #expect(current.object["title"] as? String == "Safe update")
            let thirdTag = try #require(current.headers[.eTag])
            #expect(thirdTag != secondTag && thirdTag != firstTag)
            #expect(try await client.json(.get, path, token: token).headers[.eTag] == thirdTag)

            // A weak tag never satisfies If-Match (RFC 9110 §13.1.1).
            let weak = try await client.json(.patch, path, ["title": "Weak"], token: token, headers: [.ifMatch: "W/\(thirdTag)"])
            #expect(weak.status == .preconditionFailed)
            #expect(try await client.json(.get, path, token: token).object["title"] as? String == "Safe update")
        }
    }

    @Test(arguments: TestEngine.available)
    func deleteWithIfMatch(engine: TestEngine) async throws {
        try await withTestApp(engine, owner: "max@example.com") { client, _, token in
            let created = try await client.json(.post, "/tasks", ["title": "Delete me"], token: token)
            let path = created.headers[.location]!
            let staleTag = try #require(created.headers[.eTag])
            let patched = try await client.json(.patch, path, ["completed": true], token: token)
            let currentTag = try #require(patched.headers[.eTag])

            let stale = try await client.json(.delete, path, token: token, headers: [.ifMatch: staleTag])
            #expect(stale.status == .preconditionFailed)
            #expect(stale.code == "precondition_failed")
            #expect(try await client.json(.get, path, token: token).status == .ok)

            let deleted = try await client.json(.delete, path, token: token, headers: [.ifMatch: currentTag])
            #expect(deleted.status == .noContent)
            #expect(deleted.body.readableBytes == 0)
            let gone = try await client.json(.get, path, token: token)
            #expect(gone.status == .notFound)
            #expect(gone.code == "not_found")
            // Deleting again is 404 (with or without a tag), never 412.
            #expect(try await client.json(.delete, path, token: token, headers: [.ifMatch: currentTag]).status == .notFound)
            #expect(try await client.json(.delete, path, token: token).status == .notFound)
            #expect(ids(try await client.json(.get, "/tasks", token: token)).isEmpty)
        }
    }

    @Test(arguments: TestEngine.available)
    func unconditionalDeleteWorks(engine: TestEngine) async throws {
        try await withTestApp(engine, owner: "ned@example.com") { client, _, token in
            let keep = try await createTask(client, token: token, ["title": "Keep"])["id"] as! String
            let drop = try await createTask(client, token: token, ["title": "Drop"])["id"] as! String
            #expect(try await client.json(.delete, "/tasks/\(drop)", token: token).status == .noContent)
            #expect(ids(try await client.json(.get, "/tasks", token: token)) == [keep])
        }
    }

    /// An empty PATCH changes nothing, so it moves neither `version` (the ETag) nor `updatedAt`;
    /// `If-Match` still applies. An unknown field is refused rather than ignored.
    @Test(arguments: TestEngine.available)
    func emptyPatchKeepsTheVersionAndUnknownFieldsAreRefused(engine: TestEngine) async throws {
        try await withTestApp(engine, owner: "empty@example.com") { client, _, token in
            let task = try await createTask(client, token: token, ["title": "Same"])
            let id = try #require(task["id"] as? String)
            let empty = try await client.json(.patch, "/tasks/\(id)", [String: Any](), token: token)
            #expect(empty.status == .ok)
            #expect(empty.headers[.eTag] == "\"1\"")
            #expect(empty.object["updatedAt"] as? String == task["updatedAt"] as? String)
            let fetched = try await client.json(.get, "/tasks/\(id)", token: token)
            #expect(fetched.headers[.eTag] == "\"1\"")
            let stale = try await client.json(.patch, "/tasks/\(id)", [String: Any](), token: token, headers: [.ifMatch: "\"7\""])
            #expect(stale.status == .preconditionFailed)
            let missing = try await client.json(.patch, "/tasks/\(UUIDv7.make())", [String: Any](), token: token)
            #expect(missing.status == .notFound)
            let unknown = try await client.json(.patch, "/tasks/\(id)", ["done": true, "title": 5], token: token)
            #expect(unknown.status == .badRequest)
            #expect(fields(unknown) == ["title", "done"])
            #expect(try await client.json(.get, "/tasks/\(id)", token: token).headers[.eTag] == "\"1\"")
        }
    }
}

// MARK: - Tenancy and authentication

@Suite("Tasks: tenant isolation and authentication")
struct TasksIsolationTests {
    @Test(arguments: TestEngine.available)
    func anotherTenantCannotSeeOrTouchATask(engine: TestEngine) async throws {
        try await withTestApp(engine) { client, _ in
            let (ownerToken, _) = try await signUp(client, "owner@example.com")
            let (strangerToken, strangerId) = try await signUp(client, "stranger@example.com")
            let created = try await client.json(.post, "/tasks", ["title": "Private", "description": "secret"], token: ownerToken)
            let path = try #require(created.headers[.location])
            let etag = try #require(created.headers[.eTag])
            let strangersOwn = try await createTask(client, token: strangerToken, ["title": "Stranger's"])
            #expect(strangersOwn["createdBy"] as? String == strangerId)

            let get = try await client.json(.get, path, token: strangerToken)
            #expect(get.status == .notFound)
            #expect(get.code == "not_found")
            #expect(!get.text.contains("Private") && !get.text.contains("secret"))
            let conditionalGet = try await client.json(.get, path, token: strangerToken, headers: [.ifNoneMatch: etag])
            #expect(conditionalGet.status == .notFound)
            let patch = try await client.json(.patch, path, ["title": "Hijacked"], token: strangerToken)
            #expect(patch.status == .notFound)
            #expect(patch.code == "not_found")
            // Even with the right ETag: 404, not 412 (no existence leak).
            let patchIfMatch = try await client.json(.patch, path, ["title": "Hijacked"], token: strangerToken, headers: [.ifMatch: etag])
            #expect(patchIfMatch.status == .notFound)
            let delete = try await client.json(.delete, path, token: strangerToken)
            #expect(delete.status == .notFound)
            #expect(delete.code == "not_found")
            let deleteIfMatch = try await client.json(.delete, path, token: strangerToken, headers: [.ifMatch: "\"99\""])
            #expect(deleteIfMatch.status == .notFound)

            let strangerList = try await client.json(.get, "/tasks", token: strangerToken)
            #expect(ids(strangerList) == [strangersOwn["id"] as! String])
            #expect(ids(try await client.json(.get, "/tasks?completed=false", token: strangerToken)) == [strangersOwn["id"] as! String])

            // The owner's task is untouched and the owner does not see the stranger's.
            let mine = try await client.json(.get, path, token: ownerToken)
            #expect(mine.status == .ok)
            #expect(mine.object["title"] as? String == "Private")
            #expect(mine.headers[.eTag] == etag)
            #expect(ids(try await client.json(.get, "/tasks", token: ownerToken)) == [mine.object["id"] as! String])
        }
    }

    @Test(arguments: TestEngine.available)
    func missingOrBadTokenIs401WithBearerChallenge(engine: TestEngine) async throws {
        try await withTestApp(engine, owner: "oli@example.com") { client, _, token in
            let task = try await createTask(client, token: token, ["title": "Mine"])
            let path = "/tasks/\(task["id"] as! String)"
            let requests: [(HTTPRequest.Method, String, [String: Any]?)] = [
                (.get, "/tasks", nil), (.post, "/tasks", ["title": "x"]), (.get, path, nil), (.patch, path, ["title": "x"]), (.delete, path, nil),
            ]
            for (method, uri, body) in requests {
                let response = try await client.json(method, uri, body)
                #expect(response.status == .unauthorized, "\(method) \(uri)")
                #expect(response.code == "unauthorized", "\(method) \(uri)")
                #expect(response.headers[.wwwAuthenticate]?.hasPrefix("Bearer") == true, "\(method) \(uri)")
                #expect(response.headers[.contentType] == "application/problem+json")
            }
            let forged = try await client.json(.get, "/tasks", token: "not.a.jwt")
            #expect(forged.status == .unauthorized)
            #expect(forged.code == "invalid_token")
            #expect(forged.headers[.wwwAuthenticate]?.hasPrefix("Bearer") == true)
            #expect(forged.headers[.wwwAuthenticate]?.contains("error=\"invalid_token\"") == true)
            // Nothing happened to the task.
            let after = try await client.json(.get, path, token: token)
            #expect(after.object["title"] as? String == "Mine")
            #expect(ids(try await client.json(.get, "/tasks", token: token)).count == 1)
        }
    }
}
