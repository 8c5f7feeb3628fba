import CairnFormats
import Foundation
package import HTTPTypes
package import Hummingbird
package import HummingbirdCore
import NIOCore

/// Maximum nesting of JSON arrays and objects accepted in a request body.
package let maximumJSONDepth = 64

extension Request {
    /// Reads and decodes a JSON request body.
    ///
    /// - Checks `Content-Type` is `application/json` or `application/*+json` (else 415
    ///   `unsupported_media_type`), the size against `context.maxUploadSize` (else 413
    ///   `payload_too_large`) and the nesting depth (else 400 `invalid_json`).
    /// - Malformed JSON, or a member name repeated within one object (RFC 8259 §4) → 400
    ///   `invalid_json`; the repeated name is in `errors`.
    /// - Every missing, null, mistyped, out-of-range or unknown field → one 400 `invalid_input`
    ///   listing them all in `errors`, each named by its dotted path (see ``BodyDecoder``).
    /// - `check`, when given, adds value issues that need more than the body (see
    ///   ``BodyDecoder/decode(_:from:check:)``).
    package mutating func decodeJSON<Value: Decodable>(
        as type: Value.Type, context: some RequestContext, check: ((Value) throws -> [FieldIssue])? = nil
    ) async throws -> Value {
        guard let contentType = headers[.contentType], Self.isJSON(contentType) else {
            throw AppError(.unsupportedMediaType, code: .unsupportedMediaType, detail: "Send the body as application/json.")
        }
        return try Self.decodeJSON(Value.self, from: try await collectBody(context: context), check: check)
    }

    /// Collects the whole body, up to `context.maxUploadSize` bytes.
    /// - Throws: 413 `payload_too_large` for a longer body.
    package mutating func collectBody(context: some RequestContext) async throws -> ByteBuffer {
        do {
            return try await collectBody(upTo: context.maxUploadSize)
        } catch let error as HTTPError where error.status == .contentTooLarge {
            throw AppError.bodyTooLarge(limit: context.maxUploadSize)
        } catch is NIOTooManyBytesError {
            // A streamed body (no `Content-Length`, or one that lies) fails while it is read.
            throw AppError.bodyTooLarge(limit: context.maxUploadSize)
        }
    }

    /// Decodes a JSON buffer with the same checks and error mapping as `decodeJSON(as:context:)`.
    package static func decodeJSON<Value: Decodable>(
        _ type: Value.Type, from buffer: ByteBuffer, check: ((Value) throws -> [FieldIssue])? = nil
    ) throws -> Value {
        let bytes = buffer.readableBytesView
        if bytes.isEmpty {
            throw AppError(.badRequest, code: .invalidJSON, detail: "The body is empty.")
        }
        let verdict = JSONDepth.scan(bytes, limit: maximumJSONDepth)
        switch verdict {
        case .tooDeep:
            throw AppError(.badRequest, code: .invalidJSON, detail: "JSON nests deeper than \(maximumJSONDepth) levels.")
        case .containsNUL:
            break  // refused once parsed, naming the fields that hold it
        case .trailingComma:
            throw AppError(.badRequest, code: .invalidJSON, detail: "The body is not valid JSON (trailing comma).")
        case .acceptable:
            break
        }
        let parsed: Result<JSONNode, JSONTreeError> = buffer.withUnsafeReadableBytes { raw in
            raw.withMemoryRebound(to: UInt8.self) { bytes in Result { () throws(JSONTreeError) in try JSONTree.parse(bytes) } }
        }
        let node: JSONNode
        do {
            node = try parsed.get()
        } catch .invalid(let offset) {
            throw AppError(.badRequest, code: .invalidJSON, detail: "The body is not valid JSON (at byte \(offset)).")
        } catch .duplicateKey(let path) {
            // RFC 8259 §4: with a repeated name, readers disagree on which value counts.
            throw AppError(
                .badRequest, code: .invalidJSON, detail: "The body repeats the member \(path) in one object.",
                errors: [FieldIssue(field: path, issue: "appears more than once")])
        }
        if verdict == .containsNUL {
            // Neither engine stores U+0000 in text (SQLite cuts the string, PostgreSQL refuses it).
            var issues: [FieldIssue] = []
            Self.collectNUL(in: node, path: [], into: &issues)
            if !issues.isEmpty { throw AppError.invalidInput(issues) }
        }
        return try BodyDecoder.decode(Value.self, from: node, check: check)
    }

    /// Adds an issue for every string holding U+0000, on its field (`title`, `data.tags[2]`),
    /// and for every member name holding it, on the object that has the member.
    static func collectNUL(in node: JSONNode, path: [any CodingKey], into issues: inout [FieldIssue]) {
        switch node {
        case .string(let text):
            if text.utf8.contains(0) {
                issues.append(FieldIssue(field: BodyDecodingState.text(path), issue: "must not contain the NUL character (U+0000)"))
            }
        case .array(let elements):
            for (index, element) in elements.enumerated() { collectNUL(in: element, path: path + [AnyKey(intValue: index)], into: &issues) }
        case .object(let object):
            for (key, value) in zip(object.keys, object.values) {
                if key.utf8.contains(0) {
                    issues.append(
                        FieldIssue(field: BodyDecodingState.text(path), issue: "member names must not contain the NUL character (U+0000)"))
                } else {
                    collectNUL(in: value, path: path + [AnyKey(key)], into: &issues)
                }
            }
        case .null, .bool, .number: break
        }
    }

    /// True for `application/json` and `application/*+json` (parameters aside).
    package static func isJSON(_ contentType: String) -> Bool {
        // What clients send nearly always, told without splitting or lowercasing a copy.
        if contentType == "application/json" || contentType == "application/json; charset=utf-8" { return true }
        // An empty field has no media type (and no first element to take).
        let mediaType = (contentType.split(separator: ";", maxSplits: 1).first ?? "").trimmingCharacters(in: .whitespaces).lowercased()
        return mediaType == "application/json" || (mediaType.hasPrefix("application/") && mediaType.hasSuffix("+json"))
    }
}

/// Scans JSON bytes without parsing: nesting depth, and `\u0000` escapes inside strings.
enum JSONDepth {
    enum Verdict: Equatable { case acceptable, tooDeep, containsNUL, trailingComma }

    static func scan(_ bytes: ByteBufferView, limit: Int) -> Verdict {
        var depth = 0
        var inString = false
        var escaped = false
        var index = bytes.startIndex
        var verdict = Verdict.acceptable
        // Foundation's decoder tolerates `[1,]` and `{"a":1,}`; RFC 8259 does not.
        var lastSignificant: UInt8 = 0
        while index < bytes.endIndex {
            let byte = bytes[index]
            if inString {
                if escaped {
                    escaped = false
                    if byte == UInt8(ascii: "u"), bytes.distance(from: index, to: bytes.endIndex) > 4,
                        bytes[bytes.index(index, offsetBy: 1)...bytes.index(index, offsetBy: 4)].allSatisfy({ $0 == UInt8(ascii: "0") })
                    {
                        verdict = .containsNUL
                    }
                } else if byte == UInt8(ascii: "\\") {
                    escaped = true
                } else if byte == UInt8(ascii: "\"") {
                    inString = false
                }
            } else {
                switch byte {
                case UInt8(ascii: "\""): inString = true
                case UInt8(ascii: "{"), UInt8(ascii: "["):
                    depth += 1
                    if depth > limit { return .tooDeep }
                case UInt8(ascii: "}"), UInt8(ascii: "]"):
                    if lastSignificant == UInt8(ascii: ",") { return .trailingComma }
                    depth -= 1
                default: break
                }
                if byte != 0x20 && byte != 0x0A && byte != 0x0D && byte != 0x09 { lastSignificant = byte }
            }
            index = bytes.index(after: index)
        }
        return verdict
    }
}

extension Response {
    /// A JSON response from a `JSONWritable` value.
    package static func json(_ value: some JSONWritable, status: HTTPResponse.Status = .ok, headers: HTTPFields = [:]) -> Response {
        var writer = JSONWriter()
        value.writeJSON(to: &writer)
        var headers = headers
        headers[.contentType] = "application/json"
        return Response(status: status, headers: headers, body: .init(byteBuffer: writer.buffer))
    }

    /// A JSON response from any `Encodable` value, through Foundation's encoder (cold paths).
    package static func json(encodable value: some Encodable, status: HTTPResponse.Status = .ok, headers: HTTPFields = [:]) throws -> Response {
        let data = try JSONEncoder().encode(value)
        var headers = headers
        headers[.contentType] = "application/json"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}

/// A field of a partial update (JSON Merge Patch semantics, RFC 7386): absent, explicitly
/// `null`, or a value.
package enum PatchField<Value: Sendable>: Sendable {
    case absent
    case null
    case value(Value)

    /// The value, when one was given.
    package var value: Value? {
        if case .value(let value) = self { return value }
        return nil
    }

    /// True unless the field was absent.
    package var isPresent: Bool {
        if case .absent = self { return false }
        return true
    }

    /// The field as the change of a nullable value: nil when absent (leave it), `.some(nil)`
    /// for null (clear it), `.some(value)` to set it.
    package var nullableChange: Value?? {
        switch self {
        case .absent: nil
        case .null: .some(nil)
        case .value(let value): .some(value)
        }
    }
}

extension PatchField: Decodable where Value: Decodable {
    /// Decodes a present field: `null` or a value. An absent member never gets here: a body's
    /// synthesized `init(from:)` decodes its `PatchField` members through
    /// `KeyedDecodingContainer.decode(_:forKey:)` below, which answers `.absent` for it.
    package init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        self = container.decodeNil() ? .null : .value(try container.decode(Value.self))
    }
}

extension KeyedDecodingContainer {
    /// Decodes a partial-update field, keeping "absent" and "null" apart.
    package func decodePatch<Value: Decodable & Sendable>(_ type: Value.Type, forKey key: Key) throws -> PatchField<Value> {
        guard contains(key) else { return .absent }
        if try decodeNil(forKey: key) { return .null }
        return .value(try decode(Value.self, forKey: key))
    }

    /// Chosen over the generic `decode(_:forKey:)` for `PatchField` members, so a patch body
    /// can use the synthesized `Decodable` conformance: an absent member is `.absent` rather
    /// than a missing-key error.
    package func decode<Value: Decodable & Sendable>(_ type: PatchField<Value>.Type, forKey key: Key) throws -> PatchField<Value> {
        try decodePatch(Value.self, forKey: key)
    }
}
