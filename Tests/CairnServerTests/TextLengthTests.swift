import CairnHTTP
import CairnNotifications
import CairnTestSupport
import Foundation
import HTTPTypes
import HummingbirdTesting
import Testing

@Suite("Text limits count code points, as openapi's maxLength does")
struct TextLengthTests {
    /// `e` + U+0301: one user-perceived character, two code points.
    static let accented = "e\u{301}"
    /// Four people joined by U+200D: one user-perceived character, seven code points.
    static let family = "👩\u{200D}👩\u{200D}👧\u{200D}👦"

    @Test func lengthIsInCodePoints() {
        #expect(TextSafety.length(Self.accented) == 2)
        #expect(TextSafety.length(Self.family) == 7)
        #expect(TextSafety.length("é") == 1)
    }

    /// A job's `uniqueKey` (maxLength 256) and `queue` (64) were counted in grapheme clusters,
    /// so 256 accented letters (512 code points) passed a 256 limit; now the same count as
    /// every other limit.
    @Test(arguments: TestEngine.available)
    func jobKeysAndQueuesCountCodePoints(engine: TestEngine) async throws {
        try await withTestApp(engine, owner: "lengths@example.com") { client, _, token in
            let long = try await client.json(
                .post, "/jobs", ["kind": "noop", "uniqueKey": String(repeating: Self.accented, count: 256)], token: token)
            #expect(long.status == .badRequest, "\(long.text)")
            #expect((long.object["errors"] as? [[String: Any]])?.compactMap { $0["field"] as? String } == ["uniqueKey"])
            let fits = try await client.json(
                .post, "/jobs", ["kind": "noop", "uniqueKey": String(repeating: Self.accented, count: 128)], token: token)
            #expect(fits.status == .created || fits.status == .accepted, "\(fits.text)")
            let queue = try await client.json(.post, "/jobs", ["kind": "noop", "queue": String(repeating: Self.accented, count: 64)], token: token)
            #expect(queue.status == .badRequest, "\(queue.text)")
            // Titles: 200 code points pass, one family emoji over 200 code points does not.
            let title = try await client.json(.post, "/tasks", ["title": String(repeating: "é", count: 200)], token: token)
            #expect(title.status == .created, "\(title.text)")
            let emoji = try await client.json(.post, "/tasks", ["title": String(repeating: Self.family, count: 29)], token: token)
            #expect(emoji.status == .badRequest, "\(emoji.text)")
        }
    }

    /// A notification's `dedupeKey` ("1 to 200 characters") was counted in UTF-8 bytes.
    @Test func dedupeKeysCountCodePoints() throws {
        let fits = NotificationDraft(type: "message", title: "t", dedupeKey: String(repeating: "é", count: 200))
        try fits.validate()
        let long = NotificationDraft(type: "message", title: "t", dedupeKey: String(repeating: "é", count: 201))
        #expect(throws: AppError.self) { try long.validate() }
    }
}
