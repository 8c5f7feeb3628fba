import SwiftSyntax
import SwiftSyntaxBuilder
import SwiftSyntaxMacros

/// `@JSONObject`: the `writeJSON(to:)` of `JSONWritable`, one `writer.field` per stored property
/// in declaration order, exactly the calls a hand-written one makes (no reflection, no Codable).
///
/// Markers on a property change its field: `@JSONSkip` leaves it out, `@JSONKey("name")` names
/// the key, `@JSONRawValue` writes `.rawValue`, `@JSONTimestamp` writes epoch milliseconds as an
/// RFC 3339 time (`timestamp:`), `@JSONText` writes JSON text as it is (`json:`).
struct JSONObjectMacro: StructMemberMacro {
    static let name = "JSONObject"

    static func member(for properties: [StoredProperty], in context: some MacroExpansionContext) -> DeclSyntax? {
        var lines = ["writer.objectStart()"]
        for property in properties where property.attribute(named: "JSONSkip") == nil {
            // The key as a string literal: the property's name, or @JSONKey's literal as written.
            var key = "\"\(property.plainName)\""
            if let marker = property.attribute(named: "JSONKey") {
                guard case .argumentList(let arguments) = marker.arguments, arguments.count == 1,
                    let literal = arguments.first?.expression.as(StringLiteralExprSyntax.self), literal.segments.count == 1,
                    case .some(.stringSegment) = literal.segments.first
                else {
                    context.diagnose(marker, "@JSONKey takes one string literal", id: "badKey")
                    return nil
                }
                key = literal.trimmedDescription
            }
            let value = property.attribute(named: "JSONRawValue") == nil ? property.name : "\(property.name).rawValue"
            let label =
                property.attribute(named: "JSONTimestamp") != nil ? "timestamp: " : property.attribute(named: "JSONText") != nil ? "json: " : ""
            lines.append("writer.field(\(key), \(label)\(value))")
        }
        lines.append("writer.objectEnd()")
        return """
            /// Writes the value as a JSON object, its fields in declaration order.
            package func writeJSON(to writer: inout JSONWriter) {
            \(raw: lines.joined(separator: "\n"))
            }
            """
    }
}

/// The per-property markers of `@JSONObject` (`@JSONSkip`, `@JSONKey`, …) and of `@SQLRow`
/// (`@SQLRawValue`, …): they add nothing themselves; `JSONObjectMacro` and `SQLRowMacro` read them.
struct MarkerMacro: PeerMacro {
    /// Nothing: the marker only marks.
    static func expansion(
        of node: AttributeSyntax, providingPeersOf declaration: some DeclSyntaxProtocol, in context: some MacroExpansionContext
    ) throws -> [DeclSyntax] {
        []
    }
}
