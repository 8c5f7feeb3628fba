import SwiftSyntax
import SwiftSyntaxBuilder
import SwiftSyntaxMacros

/// `@SQLRow`: an extension holding `sqlColumns`, the struct's stored properties as a SELECT list
/// in declaration order, and `init(row:)`, one `row.decode(column:as:)` per property: exactly
/// the calls a hand-written decoder makes (no reflection, no Codable). It is an extension so that
/// the struct keeps the memberwise initializer Swift or `@MemberwiseInit` gives it.
///
/// A column is named after its property in snake_case (`createdAt` is `created_at`) and decoded
/// as the property's written type (`String?` reads NULL as nil). Markers: `@SQLRawValue` reads
/// text and makes the property's type from it by `init(rawValue:)`, the property's initial value
/// standing in for text it does not know; `@SQLSpaceSeparated` reads text and splits it at
/// spaces into `[String]`.
struct SQLRowMacro: ExtensionMacro {
    static func expansion(
        of node: AttributeSyntax, attachedTo declaration: some DeclGroupSyntax, providingExtensionsOf type: some TypeSyntaxProtocol,
        conformingTo protocols: [TypeSyntax], in context: some MacroExpansionContext
    ) throws -> [ExtensionDeclSyntax] {
        guard declaration.is(StructDeclSyntax.self) else {
            context.diagnose(node, "@SQLRow applies to structs only", id: "notAStruct")
            return []
        }
        var columns: [String] = []
        var assignments: [String] = []
        for property in StoredProperty.all(in: declaration) {
            guard let type = property.type else {
                context.diagnose(property.binding, "@SQLRow needs the type of '\(property.plainName)' written out", id: "noType")
                return []
            }
            guard !(property.isLet && property.initializer != nil) else {
                context.diagnose(property.binding, "@SQLRow cannot set '\(property.plainName)': a let with an initial value", id: "fixedLet")
                return []
            }
            let column = snakeCase(property.plainName)
            let text = "try row.decode(column: \"\(column)\", as: String.self)"
            let value: String
            if property.attribute(named: "SQLRawValue") != nil {
                guard let fallback = property.initializer else {
                    context.diagnose(
                        property.binding, "@SQLRawValue needs an initial value on '\(property.plainName)', for text it does not know",
                        id: "noFallback")
                    return []
                }
                value = "\(type.description)(rawValue: \(text)) ?? \(fallback.description)"
            } else if property.attribute(named: "SQLSpaceSeparated") != nil {
                value = "\(text).split(separator: \" \").map(String.init)"
            } else {
                value = "try row.decode(column: \"\(column)\", as: \(type.description).self)"
            }
            columns.append(column)
            assignments.append("self.\(property.name) = \(value)")
        }
        let decl: DeclSyntax = """
            extension \(type.trimmed) {
                /// The columns ``init(row:)`` reads, in declaration order: a SELECT list.
                static let sqlColumns = "\(raw: columns.joined(separator: ", "))"

                /// Decodes a row holding ``sqlColumns``, by column name.
                /// - Throws: SQLKit's error for a missing column or a value of another type.
                init(row: any SQLRow) throws {
                    \(CodeBlockItemListSyntax("\(raw: assignments.joined(separator: "\n"))"))
                }
            }
            """
        return decl.as(ExtensionDeclSyntax.self).map { [$0] } ?? []
    }

    /// `createdAt` as `created_at`: an underscore before each upper-case letter, lowered.
    static func snakeCase(_ name: String) -> String {
        var result = ""
        for character in name {
            if character.isUppercase {
                result += "_" + character.lowercased()
            } else {
                result.append(character)
            }
        }
        return result
    }
}
