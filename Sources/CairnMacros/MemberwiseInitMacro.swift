import SwiftSyntax
import SwiftSyntaxBuilder
import SwiftSyntaxMacros

/// `@MemberwiseInit`: a `package init` taking every stored property, in declaration order.
///
/// The rule: a `let` with an initial value cannot be set again, so it is left out; a `var` with
/// an initial value becomes a parameter with that value as its default (as Swift's own
/// memberwise initializer does); an optional without one gets no default. Static, `lazy` and
/// computed properties are left out. Every parameter needs a written type; a function type gets
/// `@escaping`.
struct MemberwiseInitMacro: StructMemberMacro {
    static let name = "MemberwiseInit"

    static func member(for properties: [StoredProperty], in context: some MacroExpansionContext) -> DeclSyntax? {
        var parameters: [String] = []
        var assignments: [String] = []
        for property in properties where !(property.isLet && property.initializer != nil) {
            guard let type = property.type else {
                context.diagnose(property.binding, "@MemberwiseInit needs the type of '\(property.plainName)' written out", id: "noType")
                return nil
            }
            // A closure stored in the value escapes the initializer.
            let function = type.as(AttributedTypeSyntax.self)?.baseType ?? type
            let escaping = function.is(FunctionTypeSyntax.self) ? "@escaping " : ""
            let defaultValue = property.initializer.map { " = \($0.description)" } ?? ""
            parameters.append("\(property.name): \(escaping)\(type.description)\(defaultValue)")
            assignments.append("self.\(property.name) = \(property.name)")
        }
        return """
            /// Creates a value from every stored property.
            package init(\(raw: parameters.joined(separator: ", "))) {
            \(raw: assignments.joined(separator: "\n"))
            }
            """
    }
}
