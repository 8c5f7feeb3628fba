import SwiftDiagnostics
import SwiftSyntax
import SwiftSyntaxMacros

/// A stored instance property of a struct, in declaration order: what both macros work from.
struct StoredProperty {
    /// The declaration it is in (its attributes, `let` or `var`).
    let variable: VariableDeclSyntax
    /// Its own binding of that declaration (`var a: Int, b: Int` has two).
    let binding: PatternBindingSyntax
    /// The name as written (backticks kept, so it is a valid identifier in generated code).
    let name: String

    /// The declared type, nil when it is left to inference.
    var type: TypeSyntax? { binding.typeAnnotation?.type.trimmed }
    /// The initial value, if any.
    var initializer: ExprSyntax? { binding.initializer?.value.trimmed }
    /// True for a `let`.
    var isLet: Bool { variable.bindingSpecifier.tokenKind == .keyword(.let) }
    /// The name without backticks: the JSON key unless `@JSONKey` gives another.
    var plainName: String { name.hasPrefix("`") ? String(name.dropFirst().dropLast()) : name }

    /// The stored instance properties of `group`: static, `lazy` and computed properties are
    /// not stored per value, so they are left out; observed (`willSet`/`didSet`) ones are kept.
    static func all(in group: some DeclGroupSyntax) -> [StoredProperty] {
        group.memberBlock.members.compactMap { $0.decl.as(VariableDeclSyntax.self) }.flatMap { variable -> [StoredProperty] in
            let skipped: [Keyword] = [.static, .class, .lazy]
            if variable.modifiers.contains(where: { modifier in skipped.contains { modifier.name.tokenKind == .keyword($0) } }) {
                return []
            }
            return variable.bindings.compactMap { binding in
                guard let pattern = binding.pattern.as(IdentifierPatternSyntax.self), !isComputed(binding.accessorBlock) else {
                    return nil
                }
                return StoredProperty(variable: variable, binding: binding, name: pattern.identifier.text)
            }
        }
    }

    /// True for a getter or `get`/`set` accessors; false for none or observers only.
    private static func isComputed(_ block: AccessorBlockSyntax?) -> Bool {
        switch block?.accessors {
        case nil: false
        case .some(.getter): true
        case .some(.accessors(let accessors)):
            !accessors.allSatisfy { [.keyword(.willSet), .keyword(.didSet)].contains($0.accessorSpecifier.tokenKind) }
        }
    }

    /// The marker attribute of that name (`JSONKey`, …) on this property, if present.
    func attribute(named name: String) -> AttributeSyntax? {
        variable.attributes.lazy.compactMap { $0.as(AttributeSyntax.self) }.first { $0.attributeName.trimmedDescription == name }
    }
}

/// A member macro that generates one member of a struct from its stored properties.
protocol StructMemberMacro: MemberMacro {
    /// The attribute's name, for diagnostics (`MemberwiseInit`).
    static var name: String { get }
    /// The member for `properties`; nil after diagnosing what does not fit.
    static func member(for properties: [StoredProperty], in context: some MacroExpansionContext) -> DeclSyntax?
}

extension StructMemberMacro {
    /// The generated member; nothing, with an error, on anything but a struct.
    static func expansion(
        of node: AttributeSyntax, providingMembersOf declaration: some DeclGroupSyntax, conformingTo protocols: [TypeSyntax],
        in context: some MacroExpansionContext
    ) throws -> [DeclSyntax] {
        guard declaration.is(StructDeclSyntax.self) else {
            context.diagnose(node, "@\(name) applies to structs only", id: "notAStruct")
            return []
        }
        return member(for: StoredProperty.all(in: declaration), in: context).map { [$0] } ?? []
    }
}

extension MacroExpansionContext {
    /// Reports an error at `node`.
    func diagnose(_ node: some SyntaxProtocol, _ message: String, id: String) {
        diagnose(Diagnostic(node: node, message: MacroMessage(message: message, id: id)))
    }
}

/// An error the macros report at the offending declaration.
struct MacroMessage: DiagnosticMessage {
    let message: String
    let id: String
    var diagnosticID: MessageID { MessageID(domain: "CairnMacros", id: id) }
    var severity: DiagnosticSeverity { .error }
}
