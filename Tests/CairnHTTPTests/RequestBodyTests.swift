import CairnFormats
import CairnHTTP
import CairnServer
import CairnStorage
import CairnTestSupport
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing

/// Decodes `text` with the request-body decoder every route uses.
private func decode<T: Decodable>(_ type: T.Type, _ text: String) throws -> T {
    try Request.decodeJSON(T.self, from: ByteBuffer(string: text))
}

/// The problem `decode` throws for `text` (fails the test when it decodes).
private func problem<T: Decodable>(
    _ type: T.Type, _ text: String, sourceLocation: SourceLocation = #_sourceLocation
) throws -> AppError {
    do {
        _ = try decode(T.self, text)
    } catch let error as AppError {
        return error
    }
    Issue.record("\(text) decoded", sourceLocation: sourceLocation)
    throw TestSetupError("\(text) decoded")
}

/// A request body sent as raw text (so it can hold duplicate keys or exponents).
private func raw(
    _ client: any TestClientProtocol, _ method: HTTPRequest.Method, _ uri: String, _ body: String, token: String? = nil,
    headers: HTTPFields = [:]
) async throws -> TestResponse {
    var headers = headers
    headers[.contentType] = "application/json"
    if let token { headers[.authorization] = "Bearer \(token)" }
    return try await client.execute(uri: uri, method: method, headers: headers, body: ByteBuffer(string: body))
}

/// A body with every kind of field the decoder treats specially.
private struct Sample: Decodable, Equatable {
    enum Format: String, JSONEnum { case csv, json, ndjson }
    enum Plain: String, Decodable { case a, b }
    /// A `String` enum from a module that cannot see `JSONEnum` (as `ColumnType` in CairnFormats).
    enum Listed: String, Decodable, CaseIterable { case integer, real, text }
    struct Inner: Decodable, Equatable {
        var size: Int
        var label: String?
    }
    var name: String
    var priceMinor: Int64
    var priority: Int?
    var ratio: Double?
    var format: Format?
    var plain: Plain?
    var listed: Listed?
    var inner: Inner?
    var list: [Int]?
    var payload: JSONValue?
    var runAt: Date?

    static func == (lhs: Sample, rhs: Sample) -> Bool {
        lhs.name == rhs.name && lhs.priceMinor == rhs.priceMinor && lhs.priority == rhs.priority && lhs.inner == rhs.inner
            && lhs.list == rhs.list && lhs.payload == rhs.payload && lhs.format == rhs.format
    }
}

/// A body with value checks of its own, one of them on a nested model.
private struct Checked: Decodable, ValueChecked {
    struct Line: Decodable, ValueChecked {
        var sku: String
        func valueIssues() -> [FieldIssue] { sku.isEmpty ? [FieldIssue(field: "sku", issue: "must not be empty")] : [] }
    }
    var email: String
    var age: Int
    var name: String
    var lines: [Line]?

    func valueIssues() -> [FieldIssue] {
        var issues: [FieldIssue] = []
        if !email.contains("@") { issues.append(FieldIssue(field: "email", issue: "must be an email address")) }
        // The placeholder of a mistyped `age` (0) fails this check: it must not be reported.
        if !(1...150).contains(age) { issues.append(FieldIssue(field: "age", issue: "must be 1 to 150")) }
        if name.isEmpty { issues.append(FieldIssue(field: "name", issue: "must not be empty")) }
        return issues
    }
}

/// A body declaring the ranges of its integer fields, one of them on a nested model.
private struct Ranged: Decodable, ValueChecked {
    struct Line: Decodable, ValueChecked {
        static let integerRanges: [String: ClosedRange<Int64>] = ["quantity": 1...999]
        var quantity: Int
        func valueIssues() -> [FieldIssue] { [] }
    }
    static let integerRanges: [String: ClosedRange<Int64>] = ["priceMinor": 0...1_000_000_000_000_000]
    var priceMinor: Int64
    var other: Int64?
    var lines: [Line]?
    func valueIssues() -> [FieldIssue] { [] }
}

@Suite("Request bodies: decoding", .dedicatedThreads)
struct RequestBodyDecodingTests {
    /// A model's declared range is the one an integer beyond its type (`1e20`) is told, at any
    /// depth; fields without one keep their type's range.
    @Test(arguments: [
        (#"{"priceMinor":1e20}"#, "priceMinor", "must be an integer from 0 to 1000000000000000"),
        (#"{"priceMinor":-1e20}"#, "priceMinor", "must be an integer from 0 to 1000000000000000"),
        (#"{"priceMinor":9223372036854775808}"#, "priceMinor", "must be an integer from 0 to 1000000000000000"),
        (#"{"priceMinor":1,"other":1e20}"#, "other", "must be an integer from \(Int64.min) to \(Int64.max)"),
        (#"{"priceMinor":1,"lines":[{"quantity":1},{"quantity":1e30}]}"#, "lines[1].quantity", "must be an integer from 1 to 999"),
    ])
    func declaredRangesAreTheOnesTold(body: String, field: String, issue: String) throws {
        let error = try problem(Ranged.self, body)
        #expect(error.errors == [FieldIssue(field: field, issue: issue)], "\(body)")
        #expect(try decode(Ranged.self, #"{"priceMinor":1000000000000000,"lines":[{"quantity":999}]}"#).priceMinor == 1_000_000_000_000_000)
    }

    /// Issue 20: type and value errors in one answer; a field with a type error is not blamed
    /// again for its placeholder; nested models' checks are named by their path.
    @Test func valueIssuesJoinTypeIssues() throws {
        let both = try problem(Checked.self, #"{"email":"x","age":"old","name":""}"#)
        #expect(both.code == .invalidInput)
        #expect(
            both.errors == [
                FieldIssue(field: "age", issue: "must be an integer"), FieldIssue(field: "email", issue: "must be an email address"),
                FieldIssue(field: "name", issue: "must not be empty"),
            ])
        let values = try problem(Checked.self, #"{"email":"x","age":200,"name":"n"}"#)
        #expect(values.errors.map(\.field) == ["email", "age"])
        let nested = try problem(Checked.self, #"{"email":"a@b","age":3,"name":"n","lines":[{"sku":""},{"sku":5}],"extra":1}"#)
        #expect(
            nested.errors == [
                FieldIssue(field: "lines[0].sku", issue: "must not be empty"), FieldIssue(field: "lines[1].sku", issue: "must be a string"),
                FieldIssue(field: "extra", issue: "is not a known field"),
            ])
        #expect(try decode(Checked.self, #"{"email":"a@b","age":3,"name":"n","lines":[{"sku":"A"}]}"#).lines?.first?.sku == "A")
        // A check given by the handler (it needs more than the body) joins the same answer.
        do {
            _ = try Request.decodeJSON(Checked.self, from: ByteBuffer(string: #"{"email":"x","age":3,"name":5}"#)) { _ in
                [FieldIssue(field: "name", issue: "ignored: already mistyped"), FieldIssue(field: "age", issue: "is taken")]
            }
            Issue.record("decoded")
        } catch let error as AppError {
            #expect(error.errors.map(\.field) == ["name", "email", "age"])
            #expect(error.errors.last?.issue == "is taken")
        }
    }

    /// Issue 20: a number beyond `Double` is valid JSON of the wrong range: `invalid_input`
    /// naming the field (inside free-form JSON too), not `invalid_json`.
    @Test func numbersBeyondDoubleAreInvalidInputNamingTheField() throws {
        let finite = "must be a finite number (at most 1.8e308 in magnitude)"
        let cases = [
            (#"{"name":"n","priceMinor":1e999}"#, "priceMinor", "must be an integer from \(Int64.min) to \(Int64.max)"),
            (#"{"name":"n","priceMinor":1,"priority":-1e999}"#, "priority", "must be an integer from \(Int.min) to \(Int.max)"),
            (#"{"name":"n","priceMinor":1,"list":[2,1e400]}"#, "list[1]", "must be an integer from \(Int.min) to \(Int.max)"),
            (#"{"name":"n","priceMinor":1,"ratio":1e400}"#, "ratio", finite),
            (#"{"name":"n","priceMinor":1,"ratio":-1E+999}"#, "ratio", finite),
            (#"{"name":"n","priceMinor":1,"payload":{"a":[1,{"b":1e999}]}}"#, "payload.a[1].b", finite),
        ]
        for (body, field, issue) in cases {
            let error = try problem(Sample.self, body)
            #expect(error.code == .invalidInput, "\(body)")
            #expect(error.errors == [FieldIssue(field: field, issue: issue)], "\(body)")
        }
        let root = try problem(JSONValue.self, "[1e400]")
        #expect(root.code == .invalidInput)
        #expect(root.errors == [FieldIssue(field: "[0]", issue: finite)])
        #expect(try problem(JSONValue.self, "-1e400").errors.map(\.field) == ["body"])
        // The largest doubles are numbers like any other; a non-zero number that underflows to
        // zero is refused in free-form JSON, where it would be stored as 0 (a fresh-user trial).
        #expect(try decode(Sample.self, #"{"name":"n","priceMinor":1,"ratio":1.7e308}"#).ratio == 1.7e308)
        #expect(
            try problem(JSONValue.self, "1e-400").errors == [
                FieldIssue(field: "body", issue: "must be 0 or at least 4.9e-324 in magnitude (a smaller number would be stored as 0)")
            ])
        #expect(try decode(JSONValue.self, "0e-400") == .number(0))
    }

    @Test func wellFormedBodiesDecodeExactly() throws {
        let sample = try decode(
            Sample.self,
            #"""
            {"name":"caf\u00e9 \ud83d\ude00","priceMinor":9007199254740993,"priority":-3,"ratio":0.5,"format":"ndjson",
             "inner":{"size":1e2,"label":null},"list":[1,2.0,-0],"payload":{"a":[true,null,"x"],"b":{"c":1.5}},
             "runAt":"2026-01-02T03:04:05.678Z"}
            """#)
        #expect(sample.name == "café 😀")
        // Exact: a trip through Double would give ...992.
        #expect(sample.priceMinor == 9_007_199_254_740_993)
        #expect(sample.priority == -3)
        #expect(sample.format == .ndjson)
        #expect(sample.inner == Sample.Inner(size: 100, label: nil))
        #expect(sample.list == [1, 2, 0])
        #expect(sample.payload == .object(["a": .array([.bool(true), .null, .string("x")]), "b": .object(["c": .number(1.5)])]))
        #expect(sample.runAt == Timestamp.parse("2026-01-02T03:04:05.678Z"))
        #expect(try decode(Int64.self, "-9223372036854775808") == .min)
        #expect(try decode(JSONValue.self, "\u{FEFF} [1, \"\\/\"] \n") == .array([.number(1), .string("/")]))
    }

    @Test(arguments: [
        (#"{"name":"n","priceMinor":1.5}"#, "priceMinor", "must be an integer"),
        (#"{"name":"n","priceMinor":1,"priority":1e20}"#, "priority", "must be an integer from \(Int.min) to \(Int.max)"),
        (#"{"name":"n","priceMinor":9223372036854775808}"#, "priceMinor", "must be an integer from \(Int64.min) to \(Int64.max)"),
        (#"{"name":"n","priceMinor":"5"}"#, "priceMinor", "must be an integer"),
        (#"{"name":null,"priceMinor":1}"#, "name", "must be a string, not null"),
        (#"{"name":"n","priceMinor":1,"inner":{"size":2.5}}"#, "inner.size", "must be an integer"),
        (#"{"name":"n","priceMinor":1,"list":[1,"2"]}"#, "list[1]", "must be an integer"),
        (#"{"name":"n","priceMinor":1,"ratio":"x"}"#, "ratio", "must be a number"),
        (#"{"name":"n","priceMinor":1,"runAt":"yesterday"}"#, "runAt", "must be an RFC 3339 date-time"),
    ])
    func wrongTypeOrRangeIsInvalidInputNamingTheField(body: String, field: String, issue: String) throws {
        let error = try problem(Sample.self, body)
        #expect(error.code == .invalidInput, "\(body)")
        #expect(error.errors == [FieldIssue(field: field, issue: issue)], "\(body)")
    }

    @Test func enumsListTheirAllowedValues() throws {
        let error = try problem(Sample.self, #"{"name":"n","priceMinor":1,"format":"parquet"}"#)
        #expect(error.errors == [FieldIssue(field: "format", issue: "must be one of: csv, json, ndjson")])
        let number = try problem(Sample.self, #"{"name":"n","priceMinor":1,"format":7}"#)
        #expect(number.errors == [FieldIssue(field: "format", issue: "must be one of: csv, json, ndjson")])
        // An enum that is not a JSONEnum still never shows Swift's "Cannot initialize … Plain".
        let plain = try problem(Sample.self, #"{"name":"n","priceMinor":1,"plain":"c"}"#)
        #expect(plain.errors.map(\.field) == ["plain"])
        #expect(!plain.errors.contains { $0.issue.contains("Cannot initialize") || $0.issue.contains("Plain") })
        // A String enum that is CaseIterable lists its values too, though it is not a JSONEnum.
        let listed = try problem(Sample.self, #"{"name":"n","priceMinor":1,"listed":"float"}"#)
        #expect(listed.errors == [FieldIssue(field: "listed", issue: "must be one of: integer, real, text")])
    }

    @Test func everyFieldErrorIsInOneAnswer() throws {
        struct Registration: Decodable {
            var email: String
            var password: String
            var name: String
        }
        let error = try problem(Registration.self, #"{"email":1,"password":2,"name":3}"#)
        #expect(error.code == .invalidInput)
        #expect(error.errors.map(\.field) == ["email", "password", "name"])
        #expect(error.errors.allSatisfy { $0.issue == "must be a string" })
        let mixed = try problem(Sample.self, #"{"priceMinor":true,"format":"x","inner":{"size":"1","label":2},"list":[1,"a",3,"b"]}"#)
        #expect(mixed.errors.map(\.field) == ["name", "priceMinor", "format", "inner.size", "inner.label", "list[1]", "list[3]"])
        #expect(mixed.errors.first == FieldIssue(field: "name", issue: "is required"))
    }

    @Test func unknownFieldsAreRefusedByName() throws {
        let error = try problem(Sample.self, #"{"name":"n","priceMinor":1,"colour":"red","inner":{"size":1,"sise":2}}"#)
        #expect(error.code == .invalidInput)
        #expect(
            error.errors == [
                FieldIssue(field: "colour", issue: "is not a known field"), FieldIssue(field: "inner.sise", issue: "is not a known field"),
            ])
        // Unknown fields are reported with the other field errors.
        let both = try problem(Sample.self, #"{"name":5,"priceMinor":1,"extra":true}"#)
        #expect(both.errors.map(\.field) == ["name", "extra"])
        // Free-form members (JSONValue) take any keys.
        #expect(try decode(Sample.self, #"{"name":"n","priceMinor":1,"payload":{"anything":{"goes":1}}}"#).payload != nil)
    }

    @Test func repeatedMemberNamesAreInvalidJSONNamingTheKey() throws {
        let cases = [
            (#"{"kind":"noop","kind":"pipeline.run"}"#, "kind"),
            (#"{"jobs":[{"kind":"a"},{"kind":"b","args":{"x":1,"x":2}}]}"#, "jobs[1].args.x"),
            (#"[[{"a":1}],[{"a":1,"a":1}]]"#, "[1][0].a"),
            // Past the size where objects switch to a dictionary index.
            ("{" + (0..<40).map { "\"k\($0)\":\($0)" }.joined(separator: ",") + ",\"k7\":0}", "k7"),
            ("{\"caf\\u00e9\":1,\"café\":2}", "café"),
        ]
        for (body, field) in cases {
            let error = try problem(JSONValue.self, body)
            #expect(error.code == .invalidJSON, "\(body)")
            #expect(error.errors == [FieldIssue(field: field, issue: "appears more than once")], "\(body)")
        }
        // The same name in different objects is fine.
        #expect(try decode(JSONValue.self, #"{"a":{"a":{"a":1}},"b":[{"a":1},{"a":2}]}"#) != .null)
    }

    /// The parser accepts exactly RFC 8259 JSON (Foundation agrees on every valid text here).
    @Test func strictRFC8259Syntax() throws {
        let valid = [
            "0", "-0", "1.25e-3", "1E+2", "true", "null", #""\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00""#, "[]", "{}", " [ 1 , { } ] ",
            #"{"a":[{"b":[]}]}"#,
        ]
        for text in valid {
            let ours = try decode(JSONValue.self, text)
            let foundation = try JSONDecoder().decode(JSONValue.self, from: Data(text.utf8))
            #expect(ours == foundation, "\(text)")
        }
        let invalid = [
            "01", "1.", ".5", "+1", "-", "1e", "1e+", "0x10", "NaN", "Infinity", "tru", "nul", "[1 2]", "{\"a\" 1}", "{\"a\":}", "{a:1}",
            "{\"a\":1}}", "[1]]", "\"\\x\"", "\"\\ud83d\"", "\"\\ude00\"", "\"\\ud83dx\"", "\"a\tb\"", "\"\\u12\"", "'a'", "[1,]", "1 2",
        ]
        for text in invalid {
            #expect(try problem(JSONValue.self, text).code == .invalidJSON, "\(text)")
        }
        // Invalid UTF-8 inside a string.
        var bytes = ByteBuffer(string: "\"a")
        bytes.writeBytes([0xC3, 0x28, 0x22])
        #expect(throws: AppError.self) { try Request.decodeJSON(JSONValue.self, from: bytes) }
    }

    /// Random bytes and random mutations of a valid body never crash and only ever answer the
    /// documented 400 codes.
    @Test func randomBodiesAreAnsweredWithProblems() {
        var generator = SeededGenerator(seed: 20)
        let seed = Array(#"{"name":"n","priceMinor":12,"inner":{"size":1,"label":"x"},"list":[1,2],"payload":{"a":[1e3,null]}}"#.utf8)
        let alphabet = Array(#"{}[]:,"\-+.eE0123456789 tfnul\"#.utf8)
        for round in 0..<3000 {
            var bytes = seed
            for _ in 0..<Int.random(in: 1...4, using: &generator) {
                let index = Int.random(in: 0..<bytes.count, using: &generator)
                switch Int.random(in: 0..<3, using: &generator) {
                case 0: bytes[index] = alphabet.randomElement(using: &generator)!
                case 1: bytes.insert(alphabet.randomElement(using: &generator)!, at: index)
                default: if bytes.count > 1 { bytes.remove(at: index) }
                }
            }
            do {
                _ = try Request.decodeJSON(Sample.self, from: ByteBuffer(bytes: bytes))
            } catch let error as AppError {
                #expect([.invalidJSON, .invalidInput].contains(error.code), "round \(round)")
            } catch {
                Issue.record("round \(round): \(error)")
            }
        }
    }
}

@Suite("Request bodies: over real routes")
struct RequestBodyRouteTests {
    @Test(arguments: TestEngine.available)
    func registrationReportsEveryBadFieldAtOnce(engine: TestEngine) async throws {
        try await withTestApp(engine) { client, _ in
            let response = try await raw(client, .post, "/auth/register", #"{"email":1,"password":2,"name":3}"#)
            #expect(response.status == .badRequest)
            let problem = try response.decode(ProblemBody.self)
            #expect(problem.code == "invalid_input")
            #expect(problem.fields == ["email", "password", "name"])
            let unknown = try await raw(
                client, .post, "/auth/register", #"{"email":"u@example.com","password":"long enough pw","name":"U","nmae":"typo"}"#)
            #expect(unknown.status == .badRequest)
            #expect(try unknown.decode(ProblemBody.self).errors?.map { [$0.field, $0.issue] } == [["nmae", "is not a known field"]])
        }
    }

    /// Issue 20: on every JSON body endpoint, one answer lists the type errors and the value
    /// errors together (before, types came first and each fix revealed the next error).
    @Test(arguments: TestEngine.available)
    func everyEndpointListsTypeAndValueErrorsTogether(engine: TestEngine) async throws {
        try await withTestApp(engine) { client, _ in
            let register = try await raw(client, .post, "/auth/register", #"{"email":"x","password":2,"name":""}"#)
            #expect(register.status == .badRequest)
            #expect(register.code == "invalid_input")
            let registerIssues = try register.decode(ProblemBody.self).errors ?? []
            #expect(registerIssues.count == 3)
            #expect(registerIssues.first.map { [$0.field, $0.issue] } == ["password", "must be a string"])
            #expect(Set(registerIssues.map(\.field)) == ["email", "password", "name"])

            let (_, tokens) = try await client.registerAndLogin(email: "all-at-once@example.com")
            let token = tokens.accessToken
            let id = "0190a0d0-0000-7000-8000-000000000000"
            let cases: [(HTTPRequest.Method, String, String, Set<String>)] = [
                (.patch, "/users/me", #"{"name":"","locale":"not a tag!","phone":5}"#, ["phone", "name", "locale"]),
                (.post, "/users", #"{"email":"x","name":"","role":"boss","password":1}"#, ["password", "email", "name", "role"]),
                (.post, "/service-tokens", #"{"name":"","scopes":["nope",5]}"#, ["scopes[1]", "name", "scopes[0]"]),
                (.post, "/tasks", #"{"title":"   ","completed":"yes"}"#, ["completed", "title"]),
                (.patch, "/tasks/\(id)", #"{"title":"","completed":1}"#, ["completed", "title"]),
                (
                    .post, "/products", #"{"sku":"bad sku","name":"","priceMinor":"1","currency":"EURO"}"#,
                    ["priceMinor", "sku", "name", "currency"]
                ),
                (.patch, "/products/\(id)", #"{"name":"","priceMinor":1.5,"currency":"x"}"#, ["priceMinor", "name", "currency"]),
                (.post, "/notifications", #"{"userIds":[],"type":"Bad Type","title":5}"#, ["title", "type", "userIds"]),
                (
                    .put, "/users/me/notification-preferences",
                    #"{"types":{"*":{"fax":true}},"quietHours":{"start":"25:00","end":9,"timeZone":"Mars/Base"}}"#,
                    ["quietHours.end", "types.*.fax", "quietHours.start", "quietHours.timeZone"]
                ),
                (.post, "/webhooks", #"{"url":"ftp://example.com","types":[1]}"#, ["types[0]", "url"]),
                (
                    .patch, "/webhooks/\(id)", #"{"url":"nope","secretOverlapSeconds":5,"enabled":"yes"}"#,
                    ["enabled", "url", "secretOverlapSeconds"]
                ),
                (.post, "/jobs", #"{"kind":"nope","priority":9,"maxAttempts":"3"}"#, ["maxAttempts", "kind", "priority"]),
                (.post, "/jobs/batch", #"{"jobs":[{"kind":"noop","priority":0},{"kind":7}]}"#, ["jobs[1].kind", "jobs[0].priority"]),
                (.post, "/schedules", #"{"name":"","cron":"bad","kind":5}"#, ["kind", "name", "cron"]),
                (.patch, "/schedules/\(id)", #"{"name":"","timeZone":"Mars/Base","enabled":"no"}"#, ["enabled", "name", "timeZone"]),
                (.post, "/pipelines", #"{"name":"","input":{"format":"parquet"},"sql":5}"#, ["input.format", "sql", "name"]),
                (.put, "/notification-templates/order_shipped", #"{"default":{"fax":{}},"variables":5}"#, ["variables", "default.fax"]),
                (.put, "/notification-providers/sendgrid", #"{"apiKey":5,"fromEmail":"not-an-email"}"#, ["apiKey", "fromEmail"]),
                (.post, "/users/me/devices", #"{"platform":"fax","token":5}"#, ["token", "platform"]),
            ]
            for (method, path, body, fields) in cases {
                let response = try await raw(client, method, path, body, token: token)
                #expect(response.status == .badRequest, "\(path): \(response.text)")
                #expect(response.code == "invalid_input", "\(path): \(response.text)")
                let issues = try response.decode(ProblemBody.self).errors ?? []
                #expect(Set(issues.map(\.field)) == fields, "\(method) \(path): \(response.text)")
                #expect(issues.count == fields.count, "\(method) \(path): \(response.text)")
            }
        }
    }

    /// Issue 20: `1e999` is a number of the wrong range for the field it is sent in.
    @Test(arguments: TestEngine.available)
    func numbersBeyondDoubleNameTheirField(engine: TestEngine) async throws {
        try await withTestApp(engine) { client, _ in
            let (_, tokens) = try await client.registerAndLogin(email: "inf@example.com")
            let token = tokens.accessToken
            for (path, body, field) in [
                ("/jobs", #"{"kind":"noop","priority":1e999}"#, "priority"),
                ("/jobs", #"{"kind":"noop","priority":-1e999}"#, "priority"),
                ("/jobs", #"{"kind":"noop","args":{"n":[1e400]}}"#, "args.n[0]"),
                ("/products", #"{"sku":"A-1","name":"A","priceMinor":1e400,"currency":"EUR"}"#, "priceMinor"),
                ("/products", #"{"sku":"A-1","name":"A","priceMinor":1,"currency":"EUR","attributes":{"w":-1e999}}"#, "attributes.w"),
            ] {
                let response = try await raw(client, .post, path, body, token: token)
                #expect(response.status == .badRequest, "\(body)")
                #expect(response.code == "invalid_input", "\(body): \(response.text)")
                #expect(try response.decode(ProblemBody.self).fields == [field], "\(body): \(response.text)")
            }
        }
    }

    @Test(arguments: TestEngine.available)
    func wrongNumbersEnumsAndDuplicatesOnJobsAndPipelines(engine: TestEngine) async throws {
        try await withTestApp(engine) { client, _ in
            let (_, tokens) = try await client.registerAndLogin(email: "body@example.com")
            let token = tokens.accessToken
            let priority = try await raw(client, .post, "/jobs", #"{"kind":"noop","priority":1e20}"#, token: token)
            #expect(priority.status == .badRequest)
            #expect(try priority.decode(ProblemBody.self).fields == ["priority"])
            #expect(priority.code == "invalid_input")
            let fraction = try await raw(client, .post, "/jobs", #"{"kind":"noop","maxAttempts":1.5}"#, token: token)
            #expect(try fraction.decode(ProblemBody.self).errors?.map { [$0.field, $0.issue] } == [["maxAttempts", "must be an integer"]])
            // The second `kind` must not win (nor the first): the body is refused.
            let duplicate = try await raw(client, .post, "/jobs", #"{"kind":"noop","kind":"pipeline.run"}"#, token: token)
            #expect(duplicate.status == .badRequest)
            #expect(duplicate.code == "invalid_json")
            #expect(try duplicate.decode(ProblemBody.self).fields == ["kind"])
            let jobs = try await client.json(.get, "/jobs", token: token)
            #expect((jobs.object["items"] as? [Any])?.isEmpty == true)
            let format = try await client.json(
                .post, "/pipelines", ["name": "p", "input": ["format": "parquet"], "sql": "SELECT 1", "output": ["format": "csv"]], token: token)
            #expect(format.status == .badRequest)
            let issues = try format.decode(ProblemBody.self).errors ?? []
            #expect(issues.map { [$0.field, $0.issue] } == [["input.format", "must be one of: csv, json, ndjson, xml"]])
            #expect(!format.text.contains("Cannot initialize"))
        }
    }

    /// `PATCH {}` on schedules, the caller's profile and pipelines answers the resource as it
    /// is: the same `ETag` (version) and `updatedAt` (tasks and products have their own tests).
    @Test(arguments: TestEngine.available)
    func emptyPatchesChangeNothing(engine: TestEngine) async throws {
        try await withTestApp(engine) { client, _ in
            let (_, tokens) = try await client.registerAndLogin(email: "same@example.com")
            let token = tokens.accessToken
            let schedule = try await client.json(.post, "/schedules", ["name": "n", "cron": "@daily", "kind": "noop"], token: token)
            let pipeline = try await client.json(
                .post, "/pipelines", ["name": "p", "input": ["format": "csv"], "sql": "SELECT * FROM input", "output": ["format": "csv"]],
                token: token)
            let me = try await client.json(.get, "/users/me", token: token)
            for (path, created) in [
                ("/schedules/\(schedule.object["id"] as? String ?? "")", schedule),
                ("/pipelines/\(pipeline.object["id"] as? String ?? "")", pipeline),
                ("/users/me", me),
            ] {
                #expect(created.status == .created || created.status == .ok, "\(path): \(created.text)")
                let before = try #require(created.headers[.eTag], "\(path)")
                let empty = try await client.json(.patch, path, [String: Any](), token: token)
                #expect(empty.status == .ok, "\(path): \(empty.text)")
                #expect(empty.headers[.eTag] == before, "\(path)")
                #expect(empty.object["updatedAt"] as? String == created.object["updatedAt"] as? String, "\(path)")
                #expect(try await client.json(.get, path, token: token).headers[.eTag] == before, "\(path)")
            }
        }
    }
}
