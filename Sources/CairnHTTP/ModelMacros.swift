/// Adds `package init(...)` taking every stored property in declaration order, with the
/// doc comment "Creates a value from every stored property." Swift's own memberwise initializer
/// is internal, and the models are built from other modules (stores, seeders, tests).
///
/// A `var` with an initial value becomes a parameter with that default; a `let` with one is left
/// out, as are static, `lazy` and computed properties. Structs only (an error elsewhere); every
/// stored property needs a written type.
@attached(member, names: named(init))
package macro MemberwiseInit() = #externalMacro(module: "CairnMacros", type: "MemberwiseInitMacro")

/// Adds `JSONWritable`'s `writeJSON(to:)`: `writer.objectStart()`, one `writer.field(...)` per
/// stored property in declaration order, `writer.objectEnd()`: the same calls as a hand-written
/// one, so no reflection or Codable on the hot path. Mark properties with ``JSONSkip()``,
/// ``JSONKey(_:)``, ``JSONRawValue()``, ``JSONTimestamp()`` and ``JSONText()``. Structs only.
@attached(member, names: named(writeJSON))
package macro JSONObject() = #externalMacro(module: "CairnMacros", type: "JSONObjectMacro")

/// On a property of a ``JSONObject()`` struct: not written.
@attached(peer)
package macro JSONSkip() = #externalMacro(module: "CairnMacros", type: "MarkerMacro")

/// On a property of a ``JSONObject()`` struct: written under `name` (a string literal) instead
/// of the property's own name.
@attached(peer)
package macro JSONKey(_ name: StaticString) = #externalMacro(module: "CairnMacros", type: "MarkerMacro")

/// On a `RawRepresentable` property of a ``JSONObject()`` struct: its `rawValue` is written.
@attached(peer)
package macro JSONRawValue() = #externalMacro(module: "CairnMacros", type: "MarkerMacro")

/// On an `Int64` or `Int64?` property (epoch milliseconds) of a ``JSONObject()`` struct: written
/// as an RFC 3339 time, `JSONWriter.field(_:timestamp:)`.
@attached(peer)
package macro JSONTimestamp() = #externalMacro(module: "CairnMacros", type: "MarkerMacro")

/// On a `String` or `String?` property holding JSON text, of a ``JSONObject()`` struct: written
/// as it is, `JSONWriter.field(_:json:)`.
@attached(peer)
package macro JSONText() = #externalMacro(module: "CairnMacros", type: "MarkerMacro")

/// Adds, in an extension (so the struct keeps its memberwise initializer), `sqlColumns`, the
/// stored properties' columns as a SELECT list in declaration order, and `init(row: any SQLRow)`,
/// one `row.decode(column:as:)` per property: the same calls as a hand-written decoder, so no
/// reflection or Codable. Columns are the properties' names in snake_case (`createdAt` is
/// `created_at`), decoded as the written type (an optional reads NULL as nil); mark properties
/// with ``SQLRawValue()`` and ``SQLSpaceSeparated()``. Structs only; the file needs SQLKit.
@attached(extension, names: named(sqlColumns), named(init))
package macro SQLRow() = #externalMacro(module: "CairnMacros", type: "SQLRowMacro")

/// On a `RawRepresentable` property (raw value `String`) of a ``SQLRow()`` struct: its column is
/// text, made into the property's type by `init(rawValue:)`; the property's initial value (which
/// it must have) stands in for text that is no case.
@attached(peer)
package macro SQLRawValue() = #externalMacro(module: "CairnMacros", type: "MarkerMacro")

/// On a `[String]` property of a ``SQLRow()`` struct: its column is text, the items separated
/// by single spaces.
@attached(peer)
package macro SQLSpaceSeparated() = #externalMacro(module: "CairnMacros", type: "MarkerMacro")
