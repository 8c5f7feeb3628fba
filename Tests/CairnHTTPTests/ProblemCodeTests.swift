import CairnHTTP
import Foundation
import Testing

/// The problem codes a client can meet are one closed set: `AppError.Code` in the code, the
/// `Problem` schema's `code` enum (and its table) in openapi.yaml. Adding a code on one side
/// only fails here.
@Suite("Problem codes: AppError.Code is the set openapi.yaml documents")
struct ProblemCodeTests {
    static let specURL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Sources/CairnServer/Resources/openapi.yaml")

    static let codes = Set(AppError.Code.allCases.map(\.rawValue))

    static func spec() throws -> [Substring] {
        try String(contentsOf: specURL, encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false)
    }

    /// The lines of the `Problem` schema under `components/schemas`.
    static func problemSchema(_ lines: [Substring]) throws -> ArraySlice<Substring> {
        let start = try #require(lines.firstIndex(of: "    Problem:"), "openapi.yaml has no Problem schema")
        let end = lines[(start + 1)...].firstIndex { $0.hasPrefix("    ") && !$0.hasPrefix("     ") && $0.hasSuffix(":") } ?? lines.endIndex
        return lines[start..<end]
    }

    @Test func theProblemSchemaEnumIsExactlyAppErrorCode() throws {
        let schema = try Self.problemSchema(try Self.spec())
        let code = try #require(schema.firstIndex(of: "        code:"), "Problem has no code property")
        let enumLine = try #require(schema[code...].firstIndex(of: "          enum:"), "Problem.code has no enum")
        let documented = schema[(enumLine + 1)...].prefix { $0.hasPrefix("            - ") }.map {
            String($0.dropFirst("            - ".count)).trimmingCharacters(in: .whitespaces)
        }
        #expect(documented.count == Set(documented).count, "a code is listed twice")
        #expect(Set(documented).subtracting(Self.codes).isEmpty, "documented, but not an AppError.Code member")
        #expect(Self.codes.subtracting(documented).isEmpty, "AppError.Code members openapi.yaml does not document")
    }

    @Test func theProblemTableListsEveryCodeOnce() throws {
        let schema = try Self.problemSchema(try Self.spec())
        let rows = schema.compactMap { line -> String? in
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            guard trimmed.hasPrefix("| `") else { return nil }
            return trimmed.dropFirst(3).split(separator: "`").first.map(String.init)
        }
        #expect(rows.count == Set(rows).count)
        #expect(Set(rows) == Self.codes)
    }

    /// Responses narrow `code` with `const` or `enum`; each named code must be in the set.
    @Test func everyCodeAResponseNamesIsInTheSet() throws {
        var named: Set<String> = []
        for line in try Self.spec() {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.hasPrefix("code: { const: ") {
                named.insert(String(trimmed.dropFirst("code: { const: ".count).prefix { $0 != " " && $0 != "}" }))
            } else if trimmed.hasPrefix("code: { enum: [") {
                let list = trimmed.dropFirst("code: { enum: [".count).prefix { $0 != "]" }
                named.formUnion(list.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) })
            }
        }
        #expect(!named.isEmpty)
        #expect(named.subtracting(Self.codes).isEmpty, "responses name codes outside AppError.Code")
    }

    @Test func aProblemDocumentCarriesTheRawCode() throws {
        for code in AppError.Code.allCases {
            #expect("\(code)" == code.rawValue)
            #expect(code.rawValue.allSatisfy { $0 == "_" || ("a"..."z").contains($0) })
        }
    }
}
