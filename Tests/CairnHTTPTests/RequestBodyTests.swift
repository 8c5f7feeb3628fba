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
    var inner: Inner?
    var list: [Int]?
    var payload: JSONValue?
    var runAt: Date?

    static func == (lhs: Sample, rhs: Sample) -> Bool {
        lhs.name == rhs.name && lhs.priceMinor == rhs.priceMinor && lhs.priority == rhs.priority && lhs.inner == rhs.inner
            && lhs.list == rhs.list && lhs.payload == rhs.payload && lhs.format == rhs.format
    }
}

@Suite("Request bodies: decoding")
struct RequestBodyDecodingTests {
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
            "{\"a\":1}}", "[1]]", "\"\\x\"", "\"\\ud83d\"", "\"\\ude00\"", "\"\\ud83dx\"", "\"a\tb\"", "\"\\u12\"", "'a'", "[1,]", "1 2", "1e400",
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
