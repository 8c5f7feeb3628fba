import SwiftSyntaxMacroExpansion
import SwiftSyntaxMacrosGenericTestSupport
import Testing

@testable import CairnMacros

/// The macros under their names in source.
private let macros: [String: MacroSpec] = [
    "MemberwiseInit": MacroSpec(type: MemberwiseInitMacro.self),
    "JSONObject": MacroSpec(type: JSONObjectMacro.self),
    "JSONSkip": MacroSpec(type: JSONMarkerMacro.self),
    "JSONKey": MacroSpec(type: JSONMarkerMacro.self),
    "JSONRawValue": MacroSpec(type: JSONMarkerMacro.self),
    "JSONTimestamp": MacroSpec(type: JSONMarkerMacro.self),
    "JSONText": MacroSpec(type: JSONMarkerMacro.self),
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
