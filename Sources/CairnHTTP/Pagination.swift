package import CairnStorage
import Foundation
import HTTPTypes
import Hummingbird
package import HummingbirdCore

/// A validated `?limit=&cursor=` pair for keyset pagination (DESIGN.md: limit 1..100, default 20,
/// opaque cursor; answers are `{items, nextCursor}`).
package struct PageRequest: Sendable, Equatable {
    /// Rows to return, 1...100.
    package var limit: Int
    /// The sort key after which the page starts, decoded from the opaque cursor; nil for page one.
    package var after: String?
    /// The list the page is of (its path, such as `/files`): the next page's cursor is bound to
    /// it, so a cursor of another list is refused rather than read as a position in this one.
    package var collection: String

    /// Creates a page request.
    package init(limit: Int = 20, after: String? = nil, collection: String = "") {
        self.limit = limit
        self.after = after
        self.collection = collection
    }

    /// Parses and validates the query of a list at `uri`'s path. `validateKey` checks a decoded
    /// cursor's key (for example that it is a UUID); a cursor that fails, or one issued by
    /// another list, is refused → 400 `invalid_input`.
    /// - Throws: `AppError.invalidInput` naming `limit` or `cursor`.
    package static func parse(_ uri: URI, validateKey: (String) -> Bool) throws -> PageRequest {
        var issues: [FieldIssue] = []
        var page = PageRequest(collection: Cursor.collection(of: uri.path))
        if let limit = parseLimit(uri, issues: &issues) { page.limit = limit }
        if let raw = single("cursor", of: uri, issues: &issues) {
            // A UUID key is read in lower case, as ids in paths and bodies are (RFC 9562 §4):
            // in another case it would sort apart from the stored ids and page nothing.
            if let key = Cursor.decode(raw, collection: page.collection).map(UUIDv7.normalized) {
                if validateKey(key) {
                    page.after = key
                } else {
                    issues.append(FieldIssue(field: "cursor", issue: "is not a cursor this server issued"))
                }
            } else if Cursor.decode(raw, collection: nil) != nil {
                issues.append(FieldIssue(field: "cursor", issue: "is a cursor of another list (use this list's nextCursor)"))
            } else {
                issues.append(FieldIssue(field: "cursor", issue: "is not a cursor this server issued"))
            }
        }
        if !issues.isEmpty { throw AppError.invalidInput(issues) }
        return page
    }

    /// `?limit=`, 1...100, for every list (keyset pages and lists with their own cursors); nil
    /// when absent, or when invalid, with an issue appended.
    package static func parseLimit(_ uri: URI, issues: inout [FieldIssue]) -> Int? {
        guard let raw = single("limit", of: uri, issues: &issues) else { return nil }
        guard let value = Int(raw), (1...100).contains(value) else {
            issues.append(FieldIssue(field: "limit", issue: "must be an integer from 1 to 100"))
            return nil
        }
        return value
    }
}

extension PageRequest {
    /// The value of the query parameter `name` of `uri`, when it is given once; nil when it is
    /// absent, and when it is repeated, with an issue appended (`?cursor=a&cursor=b` has no one
    /// meaning, and servers and proxies differ on which one wins).
    package static func single(_ name: String, of uri: URI, issues: inout [FieldIssue]) -> String? {
        let values = uri.queryParameters.getAll(name)
        if values.count > 1 {
            issues.append(FieldIssue(field: name, issue: "must be given at most once"))
            return nil
        }
        return values.first
    }
}

/// Opaque pagination cursors: base64url (RFC 4648 §5) of a versioned sort key, bound to the
/// list that issued it (`c2:<list path>|<key>`). Cursors of the first version (`c1:<key>`,
/// bound to no list) are still read, by any list, so pages a client was walking across an
/// upgrade go on.
package enum Cursor {
    private static let legacyPrefix = "c1:"
    private static let prefix = "c2:"

    /// The list a request path names, as cursors record it: the path without a trailing `/`.
    package static func collection(of path: String) -> String {
        path.count > 1 && path.hasSuffix("/") ? String(path.dropLast()) : path
    }

    /// Encodes a sort key of the list at `collection` (``collection(of:)``) as an opaque cursor.
    package static func encode(_ key: String, collection: String = "") -> String {
        Base64URL.encode(Array((prefix + collection + "|" + key).utf8))
    }

    /// Decodes a cursor to its sort key, or nil when it is not one of ours or, with a
    /// `collection`, was issued by another list (nil `collection`: any list's).
    package static func decode(_ cursor: String, collection: String? = "") -> String? {
        guard cursor.utf8.count <= 256, let bytes = Base64URL.decode(cursor),
            let text = String(validating: bytes, as: UTF8.self)
        else { return nil }
        if text.hasPrefix(legacyPrefix) { return String(text.dropFirst(legacyPrefix.count)) }
        guard text.hasPrefix(prefix) else { return nil }
        let bound = text.dropFirst(prefix.count)
        if let collection {
            guard bound.hasPrefix(collection + "|") else { return nil }
            return String(bound.dropFirst(collection.utf8.count + 1))
        }
        guard let separator = bound.firstIndex(of: "|") else { return nil }
        return String(bound[bound.index(after: separator)...])
    }
}

/// Base64url without padding (RFC 4648 §5), as used in cursors and tokens.
package enum Base64URL {
    /// Encodes bytes.
    /// Foundation's base64 with the two letters swapped and padding dropped byte by byte: a
    /// string search per letter (`replacingOccurrences`) cost more than the encoding itself on
    /// every page of every list.
    package static func encode(_ bytes: some Collection<UInt8>) -> String {
        let base64 = Data(bytes).base64EncodedData()
        var url = [UInt8]()
        url.reserveCapacity(base64.count)
        for byte in base64 {
            switch byte {
            case UInt8(ascii: "+"): url.append(UInt8(ascii: "-"))
            case UInt8(ascii: "/"): url.append(UInt8(ascii: "_"))
            case UInt8(ascii: "="): continue
            default: url.append(byte)
            }
        }
        return String(decoding: url, as: UTF8.self)
    }

    /// Decodes text, or nil when it is not base64url.
    package static func decode(_ text: String) -> [UInt8]? {
        guard
            text.utf8.allSatisfy({ byte in
                (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
                    || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "_")
            })
        else { return nil }
        var base64 = text.utf8.map { byte -> UInt8 in
            switch byte {
            case UInt8(ascii: "-"): UInt8(ascii: "+")
            case UInt8(ascii: "_"): UInt8(ascii: "/")
            default: byte
            }
        }
        while base64.count % 4 != 0 { base64.append(UInt8(ascii: "=")) }
        return Data(base64Encoded: Data(base64)).map { Array($0) }
    }
}

/// A page of results: `{items, nextCursor}`.
package struct Page<Item: JSONWritable>: JSONWritable {
    /// The rows of this page.
    package var items: [Item]
    /// The cursor of the next page, nil on the last page.
    package var nextCursor: String?

    /// Creates a page.
    package init(items: [Item], nextCursor: String?) {
        self.items = items
        self.nextCursor = nextCursor
    }

    /// A page of `page`'s list from rows fetched with `LIMIT page.limit + 1`: the extra row, if
    /// any, only says there is a next page, whose cursor is the sort key of the last row kept,
    /// bound to the list (``PageRequest/collection``).
    package init(fetched: [Item], page: PageRequest, sortKey: (Item) -> String) {
        var items = fetched
        var next: String?
        if items.count > page.limit {
            items.removeLast(items.count - page.limit)
            next = items.last.map { Cursor.encode(sortKey($0), collection: page.collection) }
        }
        self.init(items: items, nextCursor: next)
    }

    /// Writes `{"items":[...],"nextCursor":...}`.
    package func writeJSON(to writer: inout JSONWriter) {
        writer.objectStart()
        writer.key("items")
        writer.arrayStart()
        for item in items { item.writeJSON(to: &writer) }
        writer.arrayEnd()
        writer.field("nextCursor", nextCursor)
        writer.objectEnd()
    }
}

/// Entity tags and conditional requests (RFC 9110 §8.8.3, §13).
package enum ETag {
    /// A strong ETag for a row version: `"<version>"`.
    package static func of(version: Int) -> String { "\"\(version)\"" }

    /// The version named by `If-Match`: `nil` when absent or `*`; `-1` (matches no row) when
    /// it names no tag of ours, so the caller answers 412, or 404 when the row is gone.
    package static func expectedVersion(_ request: Request) throws -> Int? {
        guard let value = request.headers[.ifMatch]?.trimmingCharacters(in: .whitespaces), !value.isEmpty, value != "*"
        else { return nil }
        // Strong tags only (weak ones never match If-Match, RFC 9110 §13.1.1), properly quoted.
        // A list names the versions it accepts; the newest wins, so `"0", "6"` matches version 6.
        var versions: [Int] = []
        for candidate in value.split(separator: ",") {
            let tag = candidate.trimmingCharacters(in: .whitespaces)
            guard tag.count >= 3, tag.hasPrefix("\""), tag.hasSuffix("\""), let version = Int(tag.dropFirst().dropLast()), version >= 0
            else { continue }
            versions.append(version)
        }
        return versions.max() ?? -1
    }

    /// True when `If-None-Match` names the current tag (or `*`): answer 304.
    package static func notModified(_ request: Request, etag: String) -> Bool {
        guard let value = request.headers[.ifNoneMatch] else { return false }
        if value.trimmingCharacters(in: .whitespaces) == "*" { return true }
        return value.split(separator: ",").contains { candidate in
            var tag = candidate.trimmingCharacters(in: .whitespaces)
            if tag.hasPrefix("W/") { tag.removeFirst(2) }
            return tag == etag
        }
    }

    /// An empty 304 response carrying the tag.
    package static func notModifiedResponse(etag: String) -> Response {
        Response(status: .notModified, headers: [.eTag: etag])
    }

    /// The answer to a read of `resource`: 304 with its tag when `If-None-Match` names it, else
    /// 200 with the resource and its tag.
    package static func conditional(_ request: Request, _ resource: some JSONWritable & Versioned) -> Response {
        let etag = of(version: resource.version)
        return notModified(request, etag: etag) ? notModifiedResponse(etag: etag) : .json(resource, headers: [.eTag: etag])
    }

    /// Why a conditional write or delete found no row to change: 412 when `If-Match` named a
    /// version and the row still `exists` (it moved on since), else 404 with `notFound`.
    package static func writeFailure(
        expected: Int?, notFound: String, exists: () async throws -> Bool
    ) async throws -> AppError {
        if expected != nil, try await exists() { return AppError.preconditionFailed() }
        return AppError.notFound(notFound)
    }
}
