import SwiftSyntaxMacroExpansion
import SwiftSyntaxMacrosGenericTestSupport
import Testing

@testable import CairnMacros

/// The macros under their names in source.
private let macros: [String: MacroSpec] = [
    "MemberwiseInit": MacroSpec(type: MemberwiseInitMacro.self),
    "JSONObject": MacroSpec(type: JSONObjectMacro.self),
    "JSONSkip": MacroSpec(type: MarkerMacro.self),
    "JSONKey": MacroSpec(type: MarkerMacro.self),
    "JSONRawValue": MacroSpec(type: MarkerMacro.self),
    "JSONTimestamp": MacroSpec(type: MarkerMacro.self),
    "JSONText": MacroSpec(type: MarkerMacro.self),
    "SQLRow": MacroSpec(type: SQLRowMacro.self),
    "SQLRawValue": MacroSpec(type: MarkerMacro.self),
    "SQLSpaceSeparated": MacroSpec(type: MarkerMacro.self),
]

/// Expands `source` (a macro attribute on its first line, then a type whose last line is `}`)
/// and expects the type as written, without its attributes, plus `member` (nil: nothing added)
/// and `diagnostics`. Failures are reported to swift-testing at the caller's line.
private func expect(
    _ source: String, adds member: String?, diagnostics: [DiagnosticSpec] = [], sourceLocation: SourceLocation = #_sourceLocation
) {
    var lines = source.split(separator: "\n", omittingEmptySubsequences: false).dropFirst().map { line in
        // The expansion drops the markers, which are attached macros too.
        String(line.replacing(#/@JSON\w+(\([^)]*\))? /#, with: ""))
    }
    if let member {
        lines.insert(contentsOf: [""] + member.split(separator: "\n").map { "    " + $0 }, at: lines.count - 1)
    }
    assertMacroExpansion(source, expandedSource: lines.joined(separator: "\n"), diagnostics: diagnostics, macroSpecs: macros) { failure in
        Issue.record(Comment(rawValue: failure.message), sourceLocation: sourceLocation)
    }
}

@Suite("MemberwiseInit")
struct MemberwiseInitTests {
    @Test("every stored property, in declaration order, optionals included")
    func plainAndOptional() {
        expect(
            """
            @MemberwiseInit
            struct Item {
                var id: String
                var note: String?
            }
            """,
            adds: """
                /// Creates a value from every stored property.
                package init(id: String, note: String?) {
                    self.id = id
                    self.note = note
                }
                """)
    }

    @Test(
        "a var keeps its initial value as the default, a let without one is a parameter; a let with one, statics and computed properties are left out"
    )
    func defaultsAndSkipped() {
        expect(
            """
            @MemberwiseInit
            struct Item {
                static let limit = 10
                let kind = "item"
                var origin: Origin = .upload
                var handler: (Int) -> Void
                var onDone: @Sendable () -> Void
                var label: String { kind }
                var checked: Bool {
                    get { true }
                    set {}
                }
                var seen: Int {
                    didSet {}
                }
                let count: Int
            }
            """,
            adds: """
                /// Creates a value from every stored property.
                package init(origin: Origin = .upload, handler: @escaping (Int) -> Void, onDone: @escaping @Sendable () -> Void, seen: Int, count: Int) {
                    self.origin = origin
                    self.handler = handler
                    self.onDone = onDone
                    self.seen = seen
                    self.count = count
                }
                """)
    }

    @Test("anything but a struct is an error")
    func notAStruct() {
        expect(
            """
            @MemberwiseInit
            final class Item {
                var id: String
            }
            """,
            adds: nil, diagnostics: [DiagnosticSpec(message: "@MemberwiseInit applies to structs only", line: 1, column: 1)])
    }

    @Test("a stored property without a written type is an error")
    func inferredType() {
        expect(
            """
            @MemberwiseInit
            struct Item {
                var count = 0
            }
            """,
            adds: nil, diagnostics: [DiagnosticSpec(message: "@MemberwiseInit needs the type of 'count' written out", line: 3, column: 9)])
    }
}

@Suite("JSONObject")
struct JSONObjectTests {
    @Test("one field per stored property, the markers choosing key, form and value")
    func fields() {
        expect(
            """
            @JSONObject
            struct Item {
                static let limit = 10
                var id: String
                @JSONSkip var tenantId: String
                var note: String?
                @JSONKey("jobId") var originJobId: String?
                @JSONRawValue var state: State
                @JSONText var data: String
                @JSONTimestamp var createdAt: Int64
                var label: String { id }
            }
            """,
            adds: """
                /// Writes the value as a JSON object, its fields in declaration order.
                package func writeJSON(to writer: inout JSONWriter) {
                    writer.objectStart()
                    writer.field("id", id)
                    writer.field("note", note)
                    writer.field("jobId", originJobId)
                    writer.field("state", state.rawValue)
                    writer.field("data", json: data)
                    writer.field("createdAt", timestamp: createdAt)
                    writer.objectEnd()
                }
                """)
    }

    @Test("anything but a struct is an error")
    func notAStruct() {
        expect(
            """
            @JSONObject
            enum Item {
                case one
            }
            """,
            adds: nil, diagnostics: [DiagnosticSpec(message: "@JSONObject applies to structs only", line: 1, column: 1)])
    }

    @Test("@JSONKey takes a string literal")
    func badKey() {
        expect(
            """
            @JSONObject
            struct Item {
                @JSONKey(name) var id: String
            }
            """,
            adds: nil, diagnostics: [DiagnosticSpec(message: "@JSONKey takes one string literal", line: 3, column: 5)])
    }
}

@Suite("SQLRow")
struct SQLRowTests {
    /// Expands `source` and expects `expanded`; failures are reported at the caller's line.
    private func expect(
        _ source: String, expands expanded: String, diagnostics: [DiagnosticSpec] = [], sourceLocation: SourceLocation = #_sourceLocation
    ) {
        assertMacroExpansion(source, expandedSource: expanded, diagnostics: diagnostics, macroSpecs: macros) { failure in
            Issue.record(Comment(rawValue: failure.message), sourceLocation: sourceLocation)
        }
    }

    @Test("a snake_case column per stored property, decoded as its type; the markers read text")
    func columns() {
        expect(
            """
            @SQLRow
            struct Item {
                static let limit = 10
                var id: String
                var contentType: String?
                var readAt: Int64?
                @SQLRawValue var origin: Origin = .upload
                @SQLSpaceSeparated var scopes: [String]
                var sha256: String
                var label: String { id }
            }
            """,
            expands: """
                struct Item {
                    static let limit = 10
                    var id: String
                    var contentType: String?
                    var readAt: Int64?
                    var origin: Origin = .upload
                    var scopes: [String]
                    var sha256: String
                    var label: String { id }
                }

                extension Item {
                    /// The columns ``init(row:)`` reads, in declaration order: a SELECT list.
                    static let sqlColumns = "id, content_type, read_at, origin, scopes, sha256"

                    /// Decodes a row holding ``sqlColumns``, by column name.
                    /// - Throws: SQLKit's error for a missing column or a value of another type.
                    init(row: any SQLRow) throws {
                        self.id = try row.decode(column: "id", as: String.self)
                        self.contentType = try row.decode(column: "content_type", as: String?.self)
                        self.readAt = try row.decode(column: "read_at", as: Int64?.self)
                        self.origin = Origin(rawValue: try row.decode(column: "origin", as: String.self)) ?? .upload
                        self.scopes = try row.decode(column: "scopes", as: String.self).split(separator: " ").map(String.init)
                        self.sha256 = try row.decode(column: "sha256", as: String.self)
                    }
                }
                """)
    }

    @Test("anything but a struct is an error")
    func notAStruct() {
        expect(
            """
            @SQLRow
            final class Item {
                var id: String
            }
            """,
            expands: """
                final class Item {
                    var id: String
                }
                """,
            diagnostics: [DiagnosticSpec(message: "@SQLRow applies to structs only", line: 1, column: 1)])
    }

    @Test("a raw value without an initial value to fall back on, a let with one and an unwritten type are errors")
    func unfit() {
        for (property, message) in [
            ("@SQLRawValue var origin: Origin", "@SQLRawValue needs an initial value on 'origin', for text it does not know"),
            ("let origin: Origin = .upload", "@SQLRow cannot set 'origin': a let with an initial value"),
            ("var origin = Origin.upload", "@SQLRow needs the type of 'origin' written out"),
        ] {
            expect(
                """
                @SQLRow
                struct Item {
                    \(property)
                }
                """,
                expands: """
                    struct Item {
                        \(property.replacing("@SQLRawValue ", with: ""))
                    }
                    """,
                diagnostics: [
                    DiagnosticSpec(message: message, line: 3, column: property.firstRange(of: "origin")!.lowerBound.utf16Offset(in: property) + 5)
                ])
        }
    }
}
