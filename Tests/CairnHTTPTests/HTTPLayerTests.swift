import CairnFormats
import CairnHTTP
import CairnServer
import CairnStorage
import CairnTestSupport
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import HummingbirdTesting
import NIOCore
import Testing

// MARK: - JSONWriter

@Suite("JSONWriter")
struct JSONWriterTests {
    static let awkwardStrings: [String] = [
        "",
        "plain",
        "say \"hi\"",
        "back\\slash and \\\" both",
        "\\",
        "\"",
        "nul\u{0}inside",
        "\u{0}",
        "unit separator \u{1F} end",
        "all controls: " + String((0..<0x20).map { Character(Unicode.Scalar(UInt8($0))) }),
        "line\nbreak",
        "tab\there",
        "cr\r\nlf",
        "del \u{7F} stays",
        "caf\u{E9} na\u{EF}ve \u{4E2D}\u{6587} \u{627}\u{644}\u{639}\u{631}\u{628}\u{64A}\u{629}",
        "emoji \u{1F600}\u{1F469}\u{200D}\u{1F4BB} flag \u{1F1EB}\u{1F1F7}",
        "e\u{301} decomposed",
        "</script><script>alert(1)</script>",
        "\u{2028}\u{2029} separators",
    ]

    private static func text(_ writer: JSONWriter) -> String { String(buffer: writer.buffer) }

    private static func parse(_ writer: JSONWriter) throws -> Any {
        try JSONSerialization.jsonObject(with: Data(writer.buffer.readableBytesView), options: [.fragmentsAllowed])
    }

    @Test(arguments: awkwardStrings)
    func stringsRoundTripExactly(_ value: String) throws {
        var writer = JSONWriter()
        writer.string(value)
        // RFC 8259 §7: no raw control character may appear in the output.
        #expect(!writer.buffer.readableBytesView.contains { $0 < 0x20 })
        let parsed = try #require(try Self.parse(writer) as? String)
        #expect(Array(parsed.unicodeScalars) == Array(value.unicodeScalars))
        // Also inside an array with other values, where a mis-escaped quote would break framing.
        var array = JSONWriter()
        array.arrayStart()
        array.string(value)
        array.string(value)
        array.int(7)
        array.arrayEnd()
        let elements = try #require(try Self.parse(array) as? [Any])
        #expect(elements.count == 3)
        #expect((elements[0] as? String).map { Array($0.unicodeScalars) } == Array(value.unicodeScalars))
        #expect((elements[1] as? String).map { Array($0.unicodeScalars) } == Array(value.unicodeScalars))
        #expect(elements[2] as? Int == 7)
    }

    @Test func escapesAreTheShortFormsAndLowercaseHex() {
        var writer = JSONWriter()
        writer.string("\"\\\n\r\t\u{0}\u{1F}\u{8}")
        #expect(Self.text(writer) == #""\"\\\n\r\t\u0000\u001f\u0008""#)
        var plain = JSONWriter()
        plain.string("caf\u{E9} \u{1F600}")
        #expect(Array(plain.buffer.readableBytesView) == Array("\"caf\u{E9} \u{1F600}\"".utf8))  // UTF-8 passes through
    }

    /// A member written in one call is the key and its value, nil as `null`.
    @Test func fieldsWriteTheKeyAndItsValue() {
        var writer = JSONWriter()
        writer.objectStart()
        writer.field("s", "a\"b")
        writer.field("none", String?.none)
        writer.field("some", String?.some("x"))
        writer.field("n", Int64(-3))
        writer.field("b", true)
        writer.field("at", timestamp: 1_700_000_000_123)
        writer.field("never", timestamp: nil)
        writer.field("raw", json: #"{"k":[1]}"#)
        writer.field("missing", json: nil)
        writer.objectEnd()
        #expect(
            Self.text(writer)
                == #"{"s":"a\"b","none":null,"some":"x","n":-3,"b":true,"at":"2023-11-14T22:13:20.123Z","never":null,"raw":{"k":[1]},"missing":null}"#
        )
    }

    @Test func scalarsNullNestingAndCommas() throws {
        var writer = JSONWriter()
        writer.objectStart()
        writer.key("int")
        writer.int(42)
        writer.key("negative")
        writer.int(-17)
        writer.key("max")
        writer.int(Int64.max)
        writer.key("min")
        writer.int(Int64.min)
        writer.key("unsigned")
        writer.int(UInt8(255))
        writer.key("yes")
        writer.bool(true)
        writer.key("no")
        writer.bool(false)
        writer.key("nothing")
        writer.null()
        writer.key("optional")
        writer.string(String?.none)
        writer.key("list")
        writer.arrayStart()
        writer.int(1)
        writer.objectStart()
        writer.key("a")
        writer.string("b")
        writer.objectEnd()
        writer.objectStart()
        writer.objectEnd()
        writer.arrayStart()
        writer.arrayEnd()
        writer.arrayStart()
        writer.arrayStart()
        writer.null()
        writer.arrayEnd()
        writer.arrayEnd()
        writer.string("last")
        writer.arrayEnd()
        writer.key("empty")
        writer.objectStart()
        writer.objectEnd()
        writer.key("nested")
        writer.objectStart()
        writer.key("inner")
        writer.objectStart()
        writer.key("deep")
        writer.bool(true)
        writer.objectEnd()
        writer.key("after")
        writer.int(0)
        writer.objectEnd()
        writer.objectEnd()

        #expect(
            Self.text(writer)
                == #"{"int":42,"negative":-17,"max":9223372036854775807,"min":-9223372036854775808,"unsigned":255,"yes":true,"no":false,"nothing":null,"optional":null,"list":[1,{"a":"b"},{},[],[[null]],"last"],"empty":{},"nested":{"inner":{"deep":true},"after":0}}"#
        )
        let object = try #require(try Self.parse(writer) as? [String: Any])
        #expect(object["int"] as? Int == 42)
        #expect(object["negative"] as? Int == -17)
        #expect(object["max"] as? Int64 == Int64.max)
        #expect(object["min"] as? Int64 == Int64.min)
        #expect(object["yes"] as? Bool == true)
        #expect(object["no"] as? Bool == false)
        #expect(object["nothing"] is NSNull)
        #expect(object["optional"] is NSNull)
        let list = try #require(object["list"] as? [Any])
        #expect(list.count == 6)
        #expect((list[1] as? [String: Any])?["a"] as? String == "b")
        #expect(((list[4] as? [Any])?.first as? [Any])?.first is NSNull)
        #expect(((object["nested"] as? [String: Any])?["inner"] as? [String: Any])?["deep"] as? Bool == true)
    }

    @Test func consecutiveTopLevelObjectsInAnArrayAreSeparated() throws {
        var writer = JSONWriter()
        writer.arrayStart()
        for index in 0..<3 {
            writer.objectStart()
            writer.key("i")
            writer.int(index)
            writer.key("s")
            writer.string("v\(index)")
            writer.objectEnd()
        }
        writer.arrayEnd()
        #expect(Self.text(writer) == #"[{"i":0,"s":"v0"},{"i":1,"s":"v1"},{"i":2,"s":"v2"}]"#)
        let rows = try #require(try Self.parse(writer) as? [[String: Any]])
        #expect(rows.map { $0["i"] as? Int } == [0, 1, 2])
    }

    @Test func pageWritesItemsAndNextCursor() throws {
        struct Item: JSONWritable {
            var name: String
            func writeJSON(to writer: inout JSONWriter) {
                writer.objectStart()
                writer.key("name")
                writer.string(name)
                writer.objectEnd()
            }
        }
        var writer = JSONWriter()
        Page(items: [Item(name: "a\"b"), Item(name: "c")], nextCursor: "abc").writeJSON(to: &writer)
        #expect(Self.text(writer) == #"{"items":[{"name":"a\"b"},{"name":"c"}],"nextCursor":"abc"}"#)
        var last = JSONWriter()
        Page<Item>(items: [], nextCursor: nil).writeJSON(to: &last)
        #expect(Self.text(last) == #"{"items":[],"nextCursor":null}"#)
    }
}

// MARK: - Timestamp

@Suite("Timestamp", .dedicatedThreads)
struct TimestampTests {
    @Test func jsonWriterTimestampsMatchTheFormatter() throws {
        var generator = SystemRandomNumberGenerator()
        var values: [Int64] = [0, -1, -86_400_001, 1_709_164_800_123, 4_102_444_800_000, 253_402_300_799_999]
        for _ in 0..<2000 { values.append(Int64.random(in: -2_208_988_800_000...7_258_118_400_000, using: &generator)) }
        for value in values {
            var writer = JSONWriter()
            writer.timestamp(milliseconds: value)
            #expect(String(buffer: writer.buffer) == "\"" + Timestamp.format(milliseconds: value) + "\"", "\(value)")
        }
    }

    @Test func parsingRoundTripsAndAgreesWithFoundationOnOffsetsAndFractions() throws {
        var generator = SeededGenerator(seed: 20_261_129)
        for _ in 0..<2000 {
            let value = Int64.random(in: -2_208_988_800_000...7_258_118_400_000, using: &generator)
            #expect(Timestamp.parseMilliseconds(Timestamp.format(milliseconds: value)) == value, "\(value)")
        }
        let reference = ISO8601DateFormatter()
        reference.formatOptions = [.withInternetDateTime]
        for text in [
            "2026-11-29T16:29:15Z", "2026-11-29T16:29:15+05:30", "2026-11-29T16:29:15-08:00", "1969-12-31T23:59:59Z", "2024-02-29T00:00:00Z",
        ] {
            #expect(Timestamp.parse(text) == reference.date(from: text), "\(text)")
        }
        #expect(Timestamp.parseMilliseconds("2026-11-29T16:29:15.1Z") == Timestamp.parseMilliseconds("2026-11-29T16:29:15Z")! + 100)
        #expect(Timestamp.parseMilliseconds("2026-11-29T16:29:15.123456Z") == Timestamp.parseMilliseconds("2026-11-29T16:29:15Z")! + 123)
        #expect(Timestamp.parseMilliseconds("2026-11-29T16:29:15.1235Z") == Timestamp.parseMilliseconds("2026-11-29T16:29:15Z")! + 124)
        #expect(Timestamp.parseMilliseconds("2026-11-29T16:29:15.9999Z") == Timestamp.parseMilliseconds("2026-11-29T16:29:16Z"))
        for bad in [
            "", "2026-11-29", "2026-11-29T16:29Z", "2026-13-01T00:00:00Z", "2026-02-30T00:00:00Z", "2025-02-29T00:00:00Z", "2026-11-29T24:00:00Z",
            "2026-11-29T16:29:15", "2026-11-29T16:29:15.Z", "2026-11-29T16:29:15+0530", "2026-11-29 16:29:15Z", "2026-11-29T16:29:15Z ",
            "+2026-11-29T16:29:15Z", "2026-11-29t16:29:15z", "2016-12-31T23:59:60Z",
        ] {
            #expect(Timestamp.parse(bad) == nil, "\(bad)")
        }
    }

    static func reference(_ milliseconds: Int64) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        formatter.timeZone = TimeZone(identifier: "UTC")
        // A fifth of a millisecond past the instant: the formatter then prints the same
        // millisecond whether it truncates or rounds, and Double error cannot push it back.
        return formatter.string(from: Date(timeIntervalSince1970: Double(milliseconds) / 1000 + 0.000_2))
    }

    static let fixed: [Int64] = [
        0, 1, 999, 1000, -1, -999, -1000, -1001, -86_400_000, -86_400_001,
        1_709_164_800_000,  // 2024-02-29T00:00:00.000Z (leap day)
        1_709_251_199_999,  // 2024-02-29T23:59:59.999Z
        1_709_251_200_000,  // 2024-03-01
        951_782_400_000,  // 2000-02-29 (a leap year divisible by 400)
        4_107_542_399_999,  // 2100-02-28T23:59:59.999Z (2100 is not a leap year)
        4_107_542_400_000,  // 2100-03-01T00:00:00.000Z
        4_133_980_799_999,  // 2100-12-31T23:59:59.999Z
        -2_208_988_800_000,  // 1900-01-01
        -2_203_891_200_001,  // 1900-02-28T23:59:59.999Z (1900 is not a leap year)
        -14_182_940_000,  // 1969-07-20T20:17:40Z
        253_402_300_799_999,  // 9999-12-31T23:59:59.999Z
        1_234_567_890_123,
    ]

    @Test func knownValues() {
        #expect(Timestamp.format(milliseconds: 0) == "1970-01-01T00:00:00.000Z")
        #expect(Timestamp.format(milliseconds: -1) == "1969-12-31T23:59:59.999Z")
        #expect(Timestamp.format(milliseconds: -1001) == "1969-12-31T23:59:58.999Z")
        #expect(Timestamp.format(milliseconds: 1_709_164_800_000) == "2024-02-29T00:00:00.000Z")
        #expect(Timestamp.format(milliseconds: 4_107_542_400_000) == "2100-03-01T00:00:00.000Z")
        #expect(Timestamp.format(milliseconds: 4_107_542_399_999) == "2100-02-28T23:59:59.999Z")
        #expect(Timestamp.format(milliseconds: 1_234_567_890_123) == "2009-02-13T23:31:30.123Z")
        #expect(Timestamp.format(milliseconds: 253_402_300_799_999) == "9999-12-31T23:59:59.999Z")
    }

    @Test(arguments: fixed)
    func matchesFoundationForFixedValues(_ milliseconds: Int64) {
        #expect(Timestamp.format(milliseconds: milliseconds) == Self.reference(milliseconds))
    }

    @Test func matchesFoundationForRandomValues() {
        var generator = SeededGenerator(seed: 0xC0FFEE)
        // 1900-01-01 ... 2200-01-01
        let range: ClosedRange<Int64> = -2_208_988_800_000...7_258_118_400_000
        for _ in 0..<5000 {
            let value = Int64.random(in: range, using: &generator)
            let ours = Timestamp.format(milliseconds: value)
            let theirs = Self.reference(value)
            #expect(ours == theirs, "milliseconds \(value)")
            if ours != theirs { break }
        }
    }
}

// MARK: - Cursors and page requests

@Suite("Cursor and PageRequest")
struct PaginationTests {
    @Test(arguments: [UUIDv7.make(), "", "plain", "with:colons:c1:", "caf\u{E9} \u{1F600}", String(repeating: "k", count: 150)])
    func cursorRoundTrips(_ key: String) {
        let cursor = Cursor.encode(key)
        #expect(Cursor.decode(cursor) == key)
        // Opaque and URL-safe: base64url without padding.
        #expect(
            cursor.utf8.allSatisfy {
                $0 < 0x80
                    && (Character(Unicode.Scalar($0)).isLetter || Character(Unicode.Scalar($0)).isNumber || $0 == UInt8(ascii: "-")
                        || $0 == UInt8(ascii: "_"))
            })
        if !key.isEmpty { #expect(!cursor.contains(key)) }
    }

    /// RFC 4648 §10's vectors, in the URL-safe alphabet of §5 without padding, and the two
    /// letters that differ from standard base64 (`+/` → `-_`).
    @Test(arguments: [
        ("", ""), ("f", "Zg"), ("fo", "Zm8"), ("foo", "Zm9v"), ("foob", "Zm9vYg"), ("fooba", "Zm9vYmE"), ("foobar", "Zm9vYmFy"),
    ])
    func base64URLFollowsRFC4648(text: String, encoded: String) {
        #expect(Base64URL.encode(Array(text.utf8)) == encoded)
        #expect(Base64URL.decode(encoded) == Array(text.utf8))
    }

    @Test func base64URLUsesTheURLSafeLetters() {
        #expect(Base64URL.encode([0xFB, 0xFF, 0xBF]) == "-_-_")
        #expect(Base64URL.encode([0xFB, 0xFF]) == "-_8")
        #expect(Base64URL.decode("-_8") == [0xFB, 0xFF])
        #expect(Base64URL.decode("+/8") == nil)
        #expect(Base64URL.decode("Zg==") == nil)
    }

    @Test func garbageCursorsDecodeToNil() {
        #expect(Cursor.decode("!!!not base64!!!") == nil)
        #expect(Cursor.decode("abc def") == nil)
        #expect(Cursor.decode("YWJj+/==") == nil)  // standard base64 alphabet and padding are not ours
        #expect(Cursor.decode("") == nil)
        #expect(Cursor.decode("x") == nil)
        // Well-formed base64url, but of text without the version prefix.
        #expect(Cursor.decode(Base64URL.encode(Array("0190f5a0-0000-7000-8000-000000000000".utf8))) == nil)
        #expect(Cursor.decode(Base64URL.encode(Array("c2:something".utf8))) == nil)
        // Base64url of bytes that are not UTF-8.
        #expect(Cursor.decode(Base64URL.encode([0x63, 0x31, 0x3A, 0xFF, 0xFE])) == nil)
        // Too long: refused before decoding, even when it is otherwise one of ours.
        let long = Cursor.encode(String(repeating: "k", count: 300))
        #expect(long.utf8.count > 256)
        #expect(Cursor.decode(long) == nil)
        #expect(Cursor.decode(String(repeating: "A", count: 10_000)) == nil)
    }

    private static func failingFields(_ query: String) -> [String]? {
        do {
            _ = try PageRequest.parse(URI("/x?\(query)"), validateKey: { UUIDv7.isValid($0) })
            return nil
        } catch let error as AppError {
            #expect(error.status == .badRequest)
            #expect(error.code == .invalidInput)
            return error.errors.map(\.field)
        } catch {
            Issue.record("unexpected error \(error)")
            return nil
        }
    }

    @Test(arguments: ["-1", "0", "101", "abc", "1e12", "", "1.5", "99999999999999999999999", "%2010"])
    func invalidLimitsNameLimit(_ raw: String) {
        #expect(Self.failingFields("limit=\(raw)") == ["limit"])
    }

    @Test func validLimitsAndDefault() throws {
        #expect(try PageRequest.parse(URI("/x?limit=1"), validateKey: { _ in true }).limit == 1)
        #expect(try PageRequest.parse(URI("/x?limit=100"), validateKey: { _ in true }).limit == 100)
        #expect(try PageRequest.parse(URI("/x?limit=37"), validateKey: { _ in true }).limit == 37)
        let defaults = try PageRequest.parse(URI("/x"), validateKey: { _ in true })
        #expect(defaults == PageRequest(limit: 20, after: nil, collection: "/x"))
        #expect(try PageRequest.parse(URI("/x?other=1"), validateKey: { _ in true }).limit == 20)
    }

    @Test func cursorsAreValidatedAndDecoded() throws {
        let id = UUIDv7.make()
        let page = try PageRequest.parse(URI("/x?limit=5&cursor=\(Cursor.encode(id, collection: "/x"))"), validateKey: { UUIDv7.isValid($0) })
        #expect(page == PageRequest(limit: 5, after: id, collection: "/x"))
        // Forged: not a cursor at all; ours but with a key the caller's validator refuses.
        #expect(Self.failingFields("cursor=forged!") == ["cursor"])
        #expect(Self.failingFields("cursor=\(Base64URL.encode(Array(id.utf8)))") == ["cursor"])
        #expect(Self.failingFields("cursor=\(Cursor.encode("1 OR 1=1"))") == ["cursor"])
        // Both problems are reported together.
        #expect(Set(Self.failingFields("limit=0&cursor=forged") ?? []) == ["limit", "cursor"])
    }

    /// A cursor is bound to the list that issued it: another list's is refused naming `cursor`
    /// (a task list's cursor was taken by `GET /files`, found by a fresh-user trial), while a
    /// cursor of the first version, bound to no list, is still read.
    @Test func cursorsAreBoundToTheirList() throws {
        let id = UUIDv7.make()
        let tasks = Cursor.encode(id, collection: "/tasks")
        #expect(try PageRequest.parse(URI("/tasks?cursor=\(tasks)"), validateKey: { UUIDv7.isValid($0) }).after == id)
        #expect(try PageRequest.parse(URI("/tasks/?cursor=\(tasks)"), validateKey: { UUIDv7.isValid($0) }).after == id)
        #expect(Self.failingFields("cursor=\(tasks)") == ["cursor"])
        do {
            _ = try PageRequest.parse(URI("/files?cursor=\(tasks)"), validateKey: { UUIDv7.isValid($0) })
            Issue.record("another list's cursor was taken")
        } catch let error as AppError {
            #expect(error.errors.map(\.issue) == ["is a cursor of another list (use this list's nextCursor)"])
        }
        // This list's cursor with a key its validator refuses is forged, not another list's.
        do {
            _ = try PageRequest.parse(URI("/tasks?cursor=\(Cursor.encode("1 OR 1=1", collection: "/tasks"))"), validateKey: { UUIDv7.isValid($0) })
            Issue.record("a forged key was taken")
        } catch let error as AppError {
            #expect(error.errors.map(\.issue) == ["is not a cursor this server issued"])
        }
        let legacy = Base64URL.encode(Array("c1:\(id)".utf8))
        #expect(try PageRequest.parse(URI("/files?cursor=\(legacy)"), validateKey: { UUIDv7.isValid($0) }).after == id)
    }
}

// MARK: - Over the real router

@Suite("HTTP layer over the real router")
struct RoutingTests {
    static let requestID = HTTPField.Name("X-Request-Id")!
    static let registration = #"{"email":"pat@example.com","password":"long enough pw","name":"Pat"}"#

    private static func raw(
        _ client: any TestClientProtocol, _ method: HTTPRequest.Method, _ uri: String, body: String? = nil,
        contentType: String? = "application/json", headers: HTTPFields = [:]
    ) async throws -> TestResponse {
        var headers = headers
        if let contentType, body != nil { headers[.contentType] = contentType }
        return try await client.execute(uri: uri, method: method, headers: headers, body: body.map { ByteBuffer(string: $0) })
    }

    private static func isUUID(_ text: String?) -> Bool {
        guard let text else { return false }
        return UUID(uuidString: text) != nil
    }

    @Test func unknownRouteIs404ProblemJSON() async throws {
        try await withTestApp(.sqlite) { client, _ in
            for path in ["/nope", "/tasks/a/b", "/auth", "/health"] {
                let response = try await client.execute(uri: path, method: .get)
                #expect(response.status == .notFound, "\(path)")
                #expect(response.headers[.contentType] == "application/problem+json", "\(path)")
                #expect(response.code == "not_found", "\(path)")
                #expect(response.object["status"] as? Int == 404)
                #expect(response.object["type"] as? String != nil)
            }
        }
    }

    @Test func wrongMethodIs405WithAllow() async throws {
        try await withTestApp(.sqlite) { client, _ in
            let (_, tokens) = try await client.registerAndLogin(email: "ray@example.com")
            let token = tokens.accessToken
            for authorization in [nil, token] {
                let put = try await client.json(.put, "/tasks", ["title": "x"], token: authorization)
                #expect(put.status == .methodNotAllowed)
                #expect(put.code == "method_not_allowed")
                #expect(put.headers[.contentType] == "application/problem+json")
                let allow = Set((put.headers[.allow] ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) })
                // HEAD may be listed too (auto-generated for GET routes); the rest must not be.
                #expect(allow.isSuperset(of: ["GET", "POST"]))
                #expect(allow.isSubset(of: ["GET", "HEAD", "POST"]))
            }
            let onItem = try await client.json(.put, "/tasks/\(UUIDv7.make())", ["title": "x"], token: token)
            #expect(onItem.status == .methodNotAllowed)
            let itemAllow = Set((onItem.headers[.allow] ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) })
            #expect(itemAllow.isSuperset(of: ["GET", "PATCH", "DELETE"]))
            #expect(itemAllow.isSubset(of: ["GET", "HEAD", "PATCH", "DELETE"]))
            let getRegister = try await client.execute(uri: "/auth/register", method: .get)
            #expect(getRegister.status == .methodNotAllowed)
            #expect(getRegister.headers[.allow] == "POST")
            #expect(getRegister.code == "method_not_allowed")
        }
    }

    @Test func malformedJSONIs400InvalidJSON() async throws {
        try await withTestApp(.sqlite) { client, _ in
            for body in [
                #"{"email": "#, "not json", #"{"email":"a@b.co""#, "{'email':'a@b.co'}", #"{"email":"a@b.co",,}"#, "", "\u{FEFF}", "nul\u{0}",
            ] {
                let response = try await Self.raw(client, .post, "/auth/register", body: body)
                #expect(response.status == .badRequest, "\(body)")
                #expect(response.code == "invalid_json", "\(body) → \(response.text)")
                #expect(response.headers[.contentType] == "application/problem+json")
            }
            // A well-formed body of the wrong shape is invalid_input, not invalid_json.
            let wrongShape = try await Self.raw(client, .post, "/auth/register", body: "[1,2]")
            #expect(wrongShape.status == .badRequest)
            #expect(wrongShape.code == "invalid_input")
        }
    }

    /// RFC 8259 has no trailing commas, but Foundation's `JSONDecoder` accepts them by design
    /// (swiftlang/swift-corelibs-foundation#4682); `decodeJSON` refuses them itself.
    @Test func trailingCommaIsInvalidJSON() async throws {
        try await withTestApp(.sqlite) { client, _ in
            let object = try await Self.raw(
                client, .post, "/auth/register", body: #"{"email":"tc@example.com","password":"long enough pw","name":"Pat",}"#)
            let login = try await Self.raw(client, .post, "/auth/login", body: #"{"email":"tc@example.com","password":"long enough pw",}"#)
            let array = try await Self.raw(
                client, .post, "/auth/register", body: #"{"email":"tc@example.com","password":"long enough pw","name":"Pat","x":[1,]}"#)
            let inString = try await Self.raw(
                client, .post, "/auth/register", body: #"{"email":"tc@example.com","password":"long, enough]","name":"Pat"}"#)
            #expect(object.status == .badRequest)
            #expect(object.code == "invalid_json")
            #expect(login.status == .badRequest)
            #expect(login.code == "invalid_json")
            #expect(array.code == "invalid_json")
            #expect(inString.status == .created)
        }
    }

    @Test func nestingDeeperThan64LevelsIsInvalidJSON() async throws {
        try await withTestApp(.sqlite) { client, _ in
            // The object is level 1; arrays add the rest.
            func body(depth: Int) -> String {
                #"{"email":"# + String(repeating: "[", count: depth - 1) + String(repeating: "]", count: depth - 1)
                    + #","password":"long enough pw","name":"Pat"}"#
            }
            let tooDeep = try await Self.raw(client, .post, "/auth/register", body: body(depth: 65))
            #expect(tooDeep.status == .badRequest)
            #expect(tooDeep.code == "invalid_json")
            let atLimit = try await Self.raw(client, .post, "/auth/register", body: body(depth: 64))
            #expect(atLimit.status == .badRequest)
            #expect(atLimit.code == "invalid_input", "\(atLimit.text)")  // email is not a string, but depth is fine
            let fields = (atLimit.object["errors"] as? [[String: Any]] ?? []).compactMap { $0["field"] as? String }
            #expect(fields == ["email"])
            // Deeply nested *objects* count the same way.
            let objects = String(repeating: #"{"a":"#, count: 65) + "1" + String(repeating: "}", count: 65)
            #expect(try await Self.raw(client, .post, "/auth/register", body: objects).code == "invalid_json")
            // Brackets inside strings are text, not nesting.
            let inString = #"{"email":"a@b.co","password":"long enough pw","name":""# + String(repeating: "[{", count: 70) + #""}"#
            let bracketsInString = try await Self.raw(client, .post, "/auth/register", body: inString)
            #expect(bracketsInString.code != "invalid_json", "\(bracketsInString.text)")
        }
    }

    @Test func bodiesOver1MiBAre413() async throws {
        try await withTestApp(.sqlite) { client, _ in
            let limit = 1 << 20
            let padded = Self.registration + String(repeating: " ", count: limit + 1 - Self.registration.utf8.count)
            #expect(padded.utf8.count == limit + 1)
            let tooLarge = try await Self.raw(client, .post, "/auth/register", body: padded)
            #expect(tooLarge.status == .contentTooLarge)
            #expect(tooLarge.code == "payload_too_large")
            #expect(tooLarge.headers[.contentType] == "application/problem+json")
            let huge = try await Self.raw(client, .post, "/auth/register", body: String(repeating: "x", count: 3 * limit))
            #expect(huge.status == .contentTooLarge)
            // Exactly 1 MiB is accepted.
            let exact = Self.registration + String(repeating: " ", count: limit - Self.registration.utf8.count)
            #expect(exact.utf8.count == limit)
            let accepted = try await Self.raw(client, .post, "/auth/register", body: exact)
            #expect(accepted.status == .created, "\(accepted.text)")
            // Also on an authenticated route.
            let (_, tokens) = try await client.registerAndLogin(email: "big@example.com")
            let task = #"{"title":"t"}"#
            let bigTask = try await Self.raw(
                client, .post, "/tasks", body: task + String(repeating: " ", count: limit),
                headers: [.authorization: "Bearer \(tokens.accessToken)"])
            #expect(bigTask.status == .contentTooLarge)
            #expect(bigTask.code == "payload_too_large")
        }
    }

    @Test func nonJSONContentTypeIs415() async throws {
        try await withTestApp(.sqlite) { client, _ in
            for contentType in [
                "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/jsonx", "text/json",
                // An empty field names no media type (it once trapped the server).
                "",
            ] {
                let response = try await Self.raw(client, .post, "/auth/register", body: Self.registration, contentType: contentType)
                #expect(response.status == .unsupportedMediaType, "\(contentType)")
                #expect(response.code == "unsupported_media_type", "\(contentType)")
                #expect(response.headers[.contentType] == "application/problem+json")
            }
            let missing = try await Self.raw(client, .post, "/auth/register", body: Self.registration, contentType: nil)
            #expect(missing.status == .unsupportedMediaType)
            // JSON media types, with parameters and in any case, are accepted.
            let charset = try await Self.raw(client, .post, "/auth/register", body: Self.registration, contentType: "Application/JSON; charset=utf-8")
            #expect(charset.status == .created, "\(charset.text)")
        }
    }

    @Test func requestIdIsEchoedOrGenerated() async throws {
        try await withTestApp(.sqlite) { client, _ in
            let echoed = try await client.execute(uri: "/health/live", method: .get, headers: [Self.requestID: "abc-123"])
            #expect(echoed.status == .ok)
            #expect(echoed.headers[Self.requestID] == "abc-123")
            let maxLength = String(repeating: "a", count: 128)
            #expect(
                try await client.execute(uri: "/health/live", method: .get, headers: [Self.requestID: maxLength]).headers[Self.requestID] == maxLength
            )

            let first = try await client.execute(uri: "/health/live", method: .get)
            let second = try await client.execute(uri: "/health/live", method: .get)
            #expect(Self.isUUID(first.headers[Self.requestID]))
            #expect(Self.isUUID(second.headers[Self.requestID]))
            #expect(first.headers[Self.requestID] != second.headers[Self.requestID])

            // Error responses carry it too.
            let notFound = try await client.execute(uri: "/nope", method: .get, headers: [Self.requestID: "err-42"])
            #expect(notFound.status == .notFound)
            #expect(notFound.headers[Self.requestID] == "err-42")
            let unauthorized = try await client.execute(uri: "/tasks", method: .get, headers: [Self.requestID: "auth-7"])
            #expect(unauthorized.status == .unauthorized)
            #expect(unauthorized.headers[Self.requestID] == "auth-7")
            let generatedOnError = try await client.execute(uri: "/nope", method: .get)
            #expect(Self.isUUID(generatedOnError.headers[Self.requestID]))
        }
    }

    @Test(arguments: [
        "abc 123", "line\nbreak", "fake\r\nX-Injected: yes", String(repeating: "a", count: 129), "quote\"d", "semi;colon", "caf\u{E9}",
        "{\"json\":1}",
    ])
    func hostileRequestIdsAreReplaced(_ hostile: String) async throws {
        try await withTestApp(.sqlite) { client, _ in
            var headers = HTTPFields()
            headers[Self.requestID] = hostile
            let response = try await client.execute(uri: "/health/live", method: .get, headers: headers)
            #expect(response.status == .ok)
            let id = response.headers[Self.requestID]
            #expect(id != hostile)
            #expect(id != headers[Self.requestID])  // not even the header-legalised form
            #expect(Self.isUUID(id), "\(id ?? "nil")")
        }
    }
}
