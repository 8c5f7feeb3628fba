import SwiftCompilerPlugin
import SwiftSyntaxMacros

/// The compiler plug-in: the macros `CairnHTTP` declares in `ModelMacros.swift`.
@main
struct CairnMacrosPlugin: CompilerPlugin {
    let providingMacros: [any Macro.Type] = [MemberwiseInitMacro.self, JSONObjectMacro.self, SQLRowMacro.self, MarkerMacro.self]
}
