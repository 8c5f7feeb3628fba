import CairnFormats
import Foundation

/// A `String`-backed enum accepted in request bodies: a value outside the enum is refused with
/// the allowed values listed (`must be one of: csv, json, ndjson, xml`) instead of Swift's
/// "Cannot initialize … from invalid String value" (which names a Swift type, not the API).
///
/// Conforming is all an enum needs: the default `init(from:)` below serves every decoder.
package protocol JSONEnum: RawRepresentable, CaseIterable, Decodable, Sendable where RawValue == String {}

extension JSONEnum {
    /// The allowed values, comma-separated in declaration order: `csv, json, ndjson, xml`.
    package static var allowedValues: String { allCases.map(\.rawValue).joined(separator: ", ") }

    /// The issue text for a value outside the enum: `must be one of: a, b, c`.
    package static var choiceIssue: String { "must be one of: \(allowedValues)" }

    /// Decodes the raw string.
    /// - Throws: `DecodingError.dataCorrupted` whose description is ``choiceIssue``.
    package init(from decoder: any Decoder) throws {
        // A non-string (a number, null) gets the same answer: the list is what the client needs.
        guard let raw = try? decoder.singleValueContainer().decode(String.self), let value = Self(rawValue: raw) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: Self.choiceIssue))
        }
        self = value
    }
}

/// A body model whose object may carry members it does not read, such as a document pasted as
/// it was downloaded (a Google service account key file has a dozen fields; Cairn needs four).
/// ``BodyDecoder`` does not refuse the others; every other model's unknown fields are refused.
package protocol AllowsUnknownFields {}

/// A body model with value checks that need nothing but the value itself: a name that must not
/// be empty, an email's shape, a range, a choice between two fields. ``BodyDecoder`` runs them on
/// every decoded model (nested ones too, and also when type errors were found, on the value
/// built with placeholders), so one answer lists type and value errors together.
///
/// Checks that need the database or the network (uniqueness, a webhook host's DNS) stay with the
/// service that runs them.
package protocol ValueChecked {
    /// Every value issue, each `field` named relative to this model (`name`, `items[0].sku`;
    /// `body` for the model as a whole). An issue for a field that already has a type error is
    /// dropped, so checks need not guess which fields hold placeholders.
    func valueIssues() -> [FieldIssue]

    /// The accepted range of the model's integer fields whose range is narrower than their
    /// type's, by member name (`["priceMinor": 0...1_000_000_000_000_000]`). ``BodyDecoder``
    /// tells a number beyond the type (`1e20`) this range, `must be an integer from 0 to
    /// 1000000000000000`, rather than the 64-bit one; ``valueIssues()`` checks the values within
    /// the type against it, with the same words, so `-1` and `1e20` get one message. None by
    /// default.
    static var integerRanges: [String: ClosedRange<Int64>] { get }

    /// Optional members that may be left out but not sent as `null`, with the issue to name
    /// (`["data": "must be an object (leave it out for none)"]`): `null` would otherwise read
    /// as left out, and be stored as the default rather than as sent. None by default.
    static var nonNullMembers: [String: String] { get }
}

extension ValueChecked {
    /// No declared ranges: integers are checked against their type alone.
    package static var integerRanges: [String: ClosedRange<Int64>] { [:] }

    /// No member refuses `null`.
    package static var nonNullMembers: [String: String] { [:] }

    /// The field issues of a check written to throw (see ``fieldIssues(_:)``).
    package func issues(of check: () throws -> Void) -> [FieldIssue] { fieldIssues(check) }
}

/// The field issues of a check written to throw: those of the `invalid_input` it throws, none
/// when it passes (or throws anything else, which the handler meets again when it runs it).
package func fieldIssues(_ check: () throws -> Void) -> [FieldIssue] {
    do {
        try check()
        return []
    } catch let error as AppError where error.code == .invalidInput {
        return error.errors
    } catch {
        return []
    }
}

/// Decodes a parsed request body (``JSONNode``) into a model, collecting every field error
/// instead of stopping at the first (RFC 9457 §3 lets a problem carry them as an extension
/// member: Cairn's `errors: [{field, issue}]`).
///
/// - A keyed field that is missing, null, of the wrong type or out of range is recorded and
///   decoding goes on with a placeholder (the model is never returned when anything was
///   recorded), so `{"email":1,"password":2,"name":3}` names all three fields.
/// - Integers are exact: `1.5` and `1e20` for an `Int` field are `invalid_input` naming it,
///   with the accepted range when the number is integral but too large.
/// - Numbers beyond `Double` (`1e400`) are kept as ±infinity by the parser and refused by the
///   field (and anywhere inside a ``JSONValue``), naming it; so are integers beyond ±(2^53 − 1)
///   inside a ``JSONValue``, which its `Double` would round.
/// - ``JSONEnum`` fields list the allowed values.
/// - ``ValueChecked`` models add their value issues to the type issues.
/// - Members of an object that the model never asked for are unknown fields, refused by name
///   (Stripe's and PocketBase's behaviour: a misspelt optional field is not silently ignored).
///   Only checked when the model decoded, so a model that stopped early is not blamed for the
///   members it did not reach.
///
/// Single-value containers throw as usual (types such as `JSONValue` probe with `try?`).
package enum BodyDecoder {
    /// Decodes `type` from `node`. `check` adds the value issues that need more than the value
    /// (the job kinds registered on this server), merged like ``ValueChecked``'s.
    /// - Throws: `AppError` 400 `invalid_input` listing every field issue found; whatever
    ///   `check` throws.
    static func decode<Value: Decodable>(
        _ type: Value.Type, from node: JSONNode, check: ((Value) throws -> [FieldIssue])? = nil
    ) throws -> Value {
        let state = BodyDecodingState()
        var value: Value?
        do {
            value = try state.decodeValue(Value.self, node: node, path: [])
            if let check, let value { state.record(valueIssues: try check(value), at: []) }
        } catch is RecordedFailure {
            // Already in `state.issues`.
        } catch let error as DecodingError {
            state.record(error)
        } catch let error as AppError where error.code == .invalidInput {
            // A model's own validation (thrown from its `init(from:)`) joins the decoder's issues.
            state.issues.append(contentsOf: error.errors.filter { issue in !state.issues.contains { $0.field == issue.field } })
        }
        if value != nil {
            for (object, path) in state.objects {
                for index in object.keys.indices where !object.read[index] {
                    state.issues.append(FieldIssue(field: BodyDecodingState.text(path + [AnyKey(object.keys[index])]), issue: "is not a known field"))
                }
            }
        }
        guard state.issues.isEmpty, let value else { throw AppError.invalidInput(state.issues) }
        return value
    }
}

/// Thrown after a failure has been recorded, to abandon a value that has no placeholder.
struct RecordedFailure: Error {}

/// A coding key for any member name or array index.
struct AnyKey: CodingKey {
    var stringValue: String
    var intValue: Int?
    init(_ string: String) {
        stringValue = string
        intValue = nil
    }
    init(stringValue: String) { self.init(stringValue) }
    init(intValue: Int) {
        stringValue = String(intValue)
        self.intValue = intValue
    }
}

/// What one body decode has found so far.
final class BodyDecodingState {
    /// Field issues, in the order the model asked for the fields.
    var issues: [FieldIssue] = []
    /// Every object a keyed container was opened on, with its path (for unknown members).
    var objects: [(JSONObject, [any CodingKey])] = []
    /// The ranges ``ValueChecked`` models declared for their integer fields, by field path.
    var integerRanges: [String: ClosedRange<Int64>] = [:]
    /// The issue of each ``ValueChecked/nonNullMembers`` member sent as `null`, by field path.
    var nonNullMembers: [String: String] = [:]

    /// The dotted path of a coding path, as `errors[].field` shows it: `jobs[0].kind`; `body`
    /// for the root.
    static func text(_ path: [any CodingKey]) -> String {
        var text = ""
        for key in path {
            if let index = key.intValue {
                text += "[\(index)]"
            } else {
                text += text.isEmpty ? key.stringValue : "." + key.stringValue
            }
        }
        return text.isEmpty ? "body" : text
    }

    /// Records a decoding error at its path (once per field).
    func record(_ error: DecodingError) {
        let (path, issue): ([any CodingKey], String) =
            switch error {
            case .typeMismatch(_, let context), .valueNotFound(_, let context), .dataCorrupted(let context):
                (context.codingPath, Self.readable(context.debugDescription))
            case .keyNotFound(let key, let context): (context.codingPath + [key], "is required")
            @unknown default: ([], "could not be decoded")
            }
        record(path, issue)
    }

    /// Records `issue` for the field at `path`, unless that field already has one.
    func record(_ path: [any CodingKey], _ issue: String) {
        let field = Self.text(path)
        if !issues.contains(where: { $0.field == field }) { issues.append(FieldIssue(field: field, issue: issue)) }
    }

    /// Records the value issues of a model decoded at `path`, leaving out any field that
    /// already has an issue, or whose parent or member has one (its value may be a placeholder).
    func record(valueIssues: [FieldIssue], at path: [any CodingKey]) {
        let prefix = path.isEmpty ? "" : Self.text(path)
        for issue in valueIssues {
            let field =
                if prefix.isEmpty { issue.field } else if issue.field == "body" { prefix } else if issue.field.hasPrefix("[") {
                    prefix + issue.field
                } else { prefix + "." + issue.field }
            let related = issues.contains { recorded in
                recorded.field == field || Self.field(recorded.field, contains: field) || Self.field(field, contains: recorded.field)
            }
            if !related { issues.append(FieldIssue(field: field, issue: issue.issue)) }
        }
    }

    /// True when `inner` is a member or element, at any depth, of `outer` (`a` holds `a.b`
    /// and `a[0]`, not `ab`); the root (`body`) holds every field.
    static func field(_ outer: String, contains inner: String) -> Bool {
        if outer == "body" { return inner != "body" }
        guard inner.count > outer.count, inner.hasPrefix(outer) else { return false }
        let next = inner[inner.index(inner.startIndex, offsetBy: outer.count)]
        return next == "." || next == "["
    }

    /// Swift's own messages name Swift types; replace them with a neutral text.
    static func readable(_ description: String) -> String {
        description.hasPrefix("Cannot initialize") ? "has a value that is not allowed" : description
    }

    /// Decodes `type` from `node`, throwing `DecodingError` with API wording in its description.
    func decodeValue<T: Decodable>(_ type: T.Type, node: JSONNode, path: [any CodingKey]) throws -> T {
        func mismatch(_ expected: String) -> DecodingError {
            let issue = if case .null = node { "must be \(expected), not null" } else { "must be \(expected)" }
            return .typeMismatch(T.self, .init(codingPath: path, debugDescription: issue))
        }
        switch type {
        case is String.Type:
            guard case .string(let text) = node else { throw mismatch("a string") }
            return text as! T
        case is Bool.Type:
            guard case .bool(let flag) = node else { throw mismatch("a boolean") }
            return flag as! T
        case is Double.Type:
            guard case .number(let double, _, _) = node else { throw mismatch("a number") }
            guard double.isFinite else { throw Self.outOfRange(path) }
            return double as! T
        case is Float.Type:
            guard case .number(let double, _, _) = node else { throw mismatch("a number") }
            guard Float(double).isFinite else { throw Self.outOfRange(path, limit: "3.4e38") }
            return Float(double) as! T
        case let integer as any FixedWidthInteger.Type:
            return try Self.integer(integer, node: node, path: path, range: integerRanges[Self.text(path)], mismatch: mismatch) as! T
        case is Date.Type:
            guard case .string(let text) = node else { throw mismatch("an RFC 3339 date-time string") }
            guard let date = Timestamp.parse(text) else {
                throw DecodingError.dataCorrupted(.init(codingPath: path, debugDescription: "must be an RFC 3339 date-time"))
            }
            return date as! T
        case is JSONValue.Type:
            if let (inner, issue) = Self.unheldNumber(in: node) {
                throw DecodingError.dataCorrupted(.init(codingPath: path + inner, debugDescription: issue))
            }
            return Self.jsonValue(node) as! T
        default:
            if let checked = T.self as? any ValueChecked.Type {
                for (name, range) in checked.integerRanges { integerRanges[Self.text(path + [AnyKey(name)])] = range }
                for (name, issue) in checked.nonNullMembers { nonNullMembers[Self.text(path + [AnyKey(name)])] = issue }
            }
            let value: T
            do {
                value = try T(from: NodeDecoder(node: node, codingPath: path, state: self))
            } catch DecodingError.dataCorrupted(let context) where context.codingPath.count == path.count {
                // A `String` enum declared where `JSONEnum` cannot be seen (CairnFormats'
                // `ColumnType`) lists its values all the same, when it can list them.
                guard let choices = Self.choices(of: T.self) else { throw DecodingError.dataCorrupted(context) }
                throw DecodingError.dataCorrupted(.init(codingPath: path, debugDescription: "must be one of: \(choices)"))
            }
            if T.self is any AllowsUnknownFields.Type, case .object(let object) = node {
                object.read = Array(repeating: true, count: object.keys.count)
            }
            if let checked = value as? any ValueChecked {
                record(valueIssues: checked.valueIssues(), at: path)
            }
            return value
        }
    }

    /// The raw values of a `CaseIterable` `String` enum, comma-separated; nil for other types.
    static func choices(of type: Any.Type) -> String? {
        guard let cases = type as? any CaseIterable.Type else { return nil }
        func names<C: CaseIterable>(_: C.Type) -> [String] {
            C.allCases.compactMap { ($0 as? any RawRepresentable)?.rawValue as? String }
        }
        let list = names(cases)
        return list.isEmpty ? nil : list.joined(separator: ", ")
    }

    /// An integer of `type`: exact and within the type; one beyond it is told `range` (the
    /// model's declared range) when given, else the type's range.
    static func integer<I: FixedWidthInteger>(
        _ type: I.Type, node: JSONNode, path: [any CodingKey], range: ClosedRange<Int64>? = nil, mismatch: (String) -> DecodingError
    ) throws -> I {
        guard case .number(let double, let exact, _) = node else { throw mismatch("an integer") }
        let accepted = range.map { "must be an integer from \($0.lowerBound) to \($0.upperBound)" } ?? "must be an integer from \(I.min) to \(I.max)"
        // Within the type, a declared range is the model's own check to make (with its other
        // value checks, so the issues keep the order the model reads its fields in).
        if let exact, let value = I(exactly: exact) { return value }
        // Integral but too large (1e20, or 300 for a UInt8): say which range is accepted.
        if double.rounded() == double || double.isInfinite {
            throw DecodingError.dataCorrupted(.init(codingPath: path, debugDescription: accepted))
        }
        throw mismatch("an integer")
    }

    /// The issue for a number beyond `Double` (the parser keeps `1e400` as infinity), or
    /// beyond `limit` for a narrower type.
    static func outOfRange(_ path: [any CodingKey], limit: String = "1.8e308") -> DecodingError {
        .dataCorrupted(.init(codingPath: path, debugDescription: "must be a finite number (at most \(limit) in magnitude)"))
    }

    /// The largest integer a ``JSONValue`` (a `Double`) holds together with all smaller ones:
    /// 2^53 − 1 (I-JSON, RFC 7493 §2.2; JavaScript's `Number.MAX_SAFE_INTEGER`).
    static let largestExactInteger: Int64 = (1 << 53) - 1

    /// The path, relative to `node`, of its first number a ``JSONValue`` cannot hold, with the
    /// issue: one beyond `Double` (`1e400`), or an integer written as such (digits alone)
    /// beyond ±(2^53 − 1), which a `Double` would silently round (`9007199254740993` would
    /// come back as `…992`). A number written with a fraction or exponent is a floating-point
    /// value and is kept as the nearest `Double`, as every JSON reader does.
    static func unheldNumber(in node: JSONNode) -> ([any CodingKey], String)? {
        switch node {
        case .number(let double, let integer, let plain):
            if !double.isFinite { return ([], "must be a finite number (at most 1.8e308 in magnitude)") }
            if node.isUnderflow {
                return ([], "must be 0 or at least 4.9e-324 in magnitude (a smaller number would be stored as 0)")
            }
            if plain, integer.map({ $0.magnitude > largestExactInteger.magnitude }) ?? true {
                return (
                    [],
                    "must be an integer from -\(largestExactInteger) to \(largestExactInteger) (larger ones would lose precision: send them as strings)"
                )
            }
            return nil
        case .array(let elements):
            for (index, element) in elements.enumerated() {
                if let (inner, issue) = unheldNumber(in: element) { return ([AnyKey(intValue: index)] + inner, issue) }
            }
            return nil
        case .object(let object):
            for (index, member) in object.values.enumerated() {
                if let (inner, issue) = unheldNumber(in: member) { return ([AnyKey(object.keys[index])] + inner, issue) }
            }
            return nil
        case .null, .bool, .string: return nil
        }
    }

    /// The node as a ``JSONValue``, every member read.
    static func jsonValue(_ node: JSONNode) -> JSONValue {
        switch node {
        case .null: return .null
        case .bool(let flag): return .bool(flag)
        case .number(let double, _, _): return .number(double)
        case .string(let text): return .string(text)
        case .array(let elements): return .array(elements.map(jsonValue))
        case .object(let object):
            var members: [String: JSONValue] = [:]
            members.reserveCapacity(object.keys.count)
            for index in object.keys.indices { members[object.keys[index]] = jsonValue(object.values[index]) }
            return .object(members)
        }
    }

    /// A stand-in for a field that failed, so the model's decoding can go on to its other
    /// fields; thrown away with the model.
    /// - Throws: ``RecordedFailure`` for types without one (the enclosing model then stops).
    func placeholder<T>(_ type: T.Type) throws -> T {
        switch type {
        case is String.Type: return "" as! T
        case is Bool.Type: return false as! T
        case is Double.Type: return 0.0 as! T
        case is Float.Type: return Float(0) as! T
        case let integer as any FixedWidthInteger.Type: return integer.zero as! T
        case is Date.Type: return Date(timeIntervalSince1970: 0) as! T
        case is JSONValue.Type: return JSONValue.null as! T
        case let choice as any JSONEnum.Type: return choice.firstCase as! T
        default: throw RecordedFailure()
        }
    }

    /// Decodes a member or array element that the model requires, recording a failure.
    func field<T: Decodable>(_ type: T.Type, node: JSONNode?, path: [any CodingKey]) throws -> T {
        guard let node else {
            record(path, "is required")
            return try placeholder(type)
        }
        do {
            return try decodeValue(type, node: node, path: path)
        } catch let error as DecodingError {
            record(error)
            return try placeholder(type)
        }
    }
}

extension JSONEnum {
    /// The first case, type-erased, for ``BodyDecodingState/placeholder(_:)``.
    fileprivate static var firstCase: Any? { allCases.first }
}

/// A `Decoder` over one ``JSONNode``.
struct NodeDecoder: Decoder {
    let node: JSONNode
    let codingPath: [any CodingKey]
    let state: BodyDecodingState
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
        guard case .object(let object) = node else {
            let issue = if case .null = node { "must be an object, not null" } else { "must be an object" }
            throw DecodingError.typeMismatch([String: Any].self, .init(codingPath: codingPath, debugDescription: issue))
        }
        state.objects.append((object, codingPath))
        return KeyedDecodingContainer(NodeKeyedContainer<Key>(object: object, codingPath: codingPath, state: state))
    }

    func unkeyedContainer() throws -> any UnkeyedDecodingContainer {
        guard case .array(let elements) = node else {
            let issue = if case .null = node { "must be an array, not null" } else { "must be an array" }
            throw DecodingError.typeMismatch([Any].self, .init(codingPath: codingPath, debugDescription: issue))
        }
        return NodeUnkeyedContainer(elements: elements, codingPath: codingPath, state: state)
    }

    func singleValueContainer() throws -> any SingleValueDecodingContainer {
        NodeSingleValueContainer(node: node, codingPath: codingPath, state: state)
    }
}

/// Members of one object; every question about a key marks it read.
struct NodeKeyedContainer<Key: CodingKey>: KeyedDecodingContainerProtocol {
    let object: JSONObject
    let codingPath: [any CodingKey]
    let state: BodyDecodingState

    var allKeys: [Key] { object.keys.compactMap { Key(stringValue: $0) } }

    private func member(_ key: Key) -> JSONNode? {
        guard let index = object.position(of: key.stringValue) else { return nil }
        object.read[index] = true
        return object.values[index]
    }

    func contains(_ key: Key) -> Bool {
        member(key) != nil
    }

    func decodeNil(forKey key: Key) throws -> Bool {
        guard let node = member(key) else {
            throw DecodingError.keyNotFound(key, .init(codingPath: codingPath, debugDescription: "is required"))
        }
        if case .null = node { return true }
        return false
    }

    func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T {
        try state.field(type, node: member(key), path: codingPath + [key])
    }

    func decodeIfPresent<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T? {
        guard let node = member(key) else { return nil }
        if case .null = node {
            if let issue = state.nonNullMembers[BodyDecodingState.text(codingPath + [key])] { state.record(codingPath + [key], issue) }
            return nil
        }
        do {
            return try state.decodeValue(type, node: node, path: codingPath + [key])
        } catch let error as DecodingError {
            state.record(error)
            return nil
        } catch is RecordedFailure {
            return nil
        }
    }

    func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type, forKey key: Key) throws -> KeyedDecodingContainer<NestedKey> {
        guard let node = member(key) else {
            throw DecodingError.keyNotFound(key, .init(codingPath: codingPath, debugDescription: "is required"))
        }
        return try NodeDecoder(node: node, codingPath: codingPath + [key], state: state).container(keyedBy: type)
    }

    func nestedUnkeyedContainer(forKey key: Key) throws -> any UnkeyedDecodingContainer {
        guard let node = member(key) else {
            throw DecodingError.keyNotFound(key, .init(codingPath: codingPath, debugDescription: "is required"))
        }
        return try NodeDecoder(node: node, codingPath: codingPath + [key], state: state).unkeyedContainer()
    }

    func superDecoder() throws -> any Decoder {
        NodeDecoder(node: .object(object), codingPath: codingPath, state: state)
    }

    func superDecoder(forKey key: Key) throws -> any Decoder {
        NodeDecoder(node: member(key) ?? .null, codingPath: codingPath + [key], state: state)
    }
}

/// Elements of one array, read in order.
struct NodeUnkeyedContainer: UnkeyedDecodingContainer {
    let elements: [JSONNode]
    let codingPath: [any CodingKey]
    let state: BodyDecodingState
    var currentIndex = 0

    init(elements: [JSONNode], codingPath: [any CodingKey], state: BodyDecodingState) {
        self.elements = elements
        self.codingPath = codingPath
        self.state = state
    }

    var count: Int? { elements.count }
    var isAtEnd: Bool { currentIndex >= elements.count }

    private var path: [any CodingKey] { codingPath + [AnyKey(intValue: currentIndex)] }

    private mutating func next() throws -> JSONNode {
        guard !isAtEnd else {
            throw DecodingError.valueNotFound(JSONNode.self, .init(codingPath: path, debugDescription: "is required"))
        }
        defer { currentIndex += 1 }
        return elements[currentIndex]
    }

    mutating func decodeNil() throws -> Bool {
        guard !isAtEnd else { return false }
        if case .null = elements[currentIndex] {
            currentIndex += 1
            return true
        }
        return false
    }

    mutating func decode<T: Decodable>(_ type: T.Type) throws -> T {
        let path = self.path
        return try state.field(type, node: try next(), path: path)
    }

    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type) throws -> KeyedDecodingContainer<NestedKey> {
        let path = self.path
        return try NodeDecoder(node: try next(), codingPath: path, state: state).container(keyedBy: type)
    }

    mutating func nestedUnkeyedContainer() throws -> any UnkeyedDecodingContainer {
        let path = self.path
        return try NodeDecoder(node: try next(), codingPath: path, state: state).unkeyedContainer()
    }

    mutating func superDecoder() throws -> any Decoder {
        let path = self.path
        return NodeDecoder(node: try next(), codingPath: path, state: state)
    }
}

/// One value; throws on mismatch without recording (callers may probe with `try?`).
struct NodeSingleValueContainer: SingleValueDecodingContainer {
    let node: JSONNode
    let codingPath: [any CodingKey]
    let state: BodyDecodingState

    func decodeNil() -> Bool {
        if case .null = node { return true }
        return false
    }

    func decode<T: Decodable>(_ type: T.Type) throws -> T {
        try state.decodeValue(type, node: node, path: codingPath)
    }
}
