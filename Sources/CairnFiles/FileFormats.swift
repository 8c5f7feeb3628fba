import CairnHTTP
import Foundation
import HTTPTypes

/// The one allow-list of file formats, applied to every way in (`POST /files` raw or
/// multipart, and tus creation) and to every way out (the type a download is served with).
/// A file is CSV, JSON, NDJSON or XML; nothing else is stored, so no upload can come back as
/// active content (HTML, SVG, script) on Cairn's origin.
package enum FileFormats {
    /// The formats a file may have.
    package static let names: Set<String> = ["csv", "json", "ndjson", "xml"]

    /// Media types (lower-case, without parameters) accepted for a file, and the format each means.
    package static let mediaTypes: [String: String] = [
        "text/csv": "csv", "application/csv": "csv", "application/json": "json", "application/x-ndjson": "ndjson",
        "application/ndjson": "ndjson", "application/jsonl": "ndjson", "application/xml": "xml", "text/xml": "xml",
    ]

    /// File-name suffixes (lower-case, without the dot) accepted for a file, and the format each means.
    package static let suffixes: [String: String] = ["csv": "csv", "json": "json", "ndjson": "ndjson", "jsonl": "ndjson", "xml": "xml"]

    /// The media type a format is served with when its file was stored without an allow-listed one.
    package static let canonicalType: [String: String] = [
        "csv": "text/csv", "json": "application/json", "ndjson": "application/x-ndjson", "xml": "application/xml",
    ]

    /// Refuses a declared media type (a multipart file part's `Content-Type`, tus' `filetype`)
    /// that is neither allow-listed nor `application/octet-stream` (which then needs a format).
    /// - Throws: 415 `unsupported_media_type`.
    package static func checkDeclared(type: String) throws {
        guard mediaTypes[type] == nil, type != "application/octet-stream" else { return }
        throw AppError(
            .unsupportedMediaType, code: .unsupportedMediaType,
            detail:
                "Files are CSV, JSON, NDJSON or XML (text/csv, application/json, application/x-ndjson, application/xml), or application/octet-stream with a format."
        )
    }

    /// `Text/CSV; charset=utf-8` → `text/csv`: the media type without parameters, lower-cased.
    package static func mediaType(_ header: String) -> String {
        header.split(separator: ";", omittingEmptySubsequences: false).first.map { $0.trimmingCharacters(in: .whitespaces).lowercased() } ?? ""
    }

    /// The suffix of a file name (`flights.CSV` → `csv`), or nil when it has none.
    package static func suffix(of name: String) -> String? {
        guard let dot = name.lastIndex(of: "."), dot != name.startIndex, name.index(after: dot) != name.endIndex else { return nil }
        return name[name.index(after: dot)...].lowercased()
    }

    /// The `Content-Type` a file's download is served with: its stored type when allow-listed,
    /// else its format's own type, else `application/octet-stream` (files stored before the
    /// allow-list applied to tus uploads may carry any type).
    package static func servedType(contentType: String, format: String) -> String {
        let type = mediaType(contentType)
        if mediaTypes[type] != nil { return contentType }
        return canonicalType[format] ?? "application/octet-stream"
    }

    /// A `Content-Disposition` that makes a download a download (RFC 6266 §4): `attachment`
    /// with the name twice, as an ASCII `filename` fallback (quoted; other characters become
    /// `_`) and as `filename*` in UTF-8 percent-encoding (RFC 8187 §3.2).
    package static func attachment(name: String) -> String {
        var fallback = ""
        for scalar in name.unicodeScalars {
            let printable = scalar.isASCII && scalar.value >= 0x20 && scalar.value < 0x7F && scalar != "\"" && scalar != "\\"
            fallback.unicodeScalars.append(printable ? scalar : "_")
        }
        var encoded = ""
        for byte in name.utf8 {
            // RFC 8187 attr-char: ALPHA / DIGIT / "!#$&+-.^_`|~"; everything else is %XX.
            let isAttrChar =
                (0x30...0x39).contains(byte) || (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte)
                || "!#$&+-.^_`|~".utf8.contains(byte)
            encoded += isAttrChar ? String(UnicodeScalar(byte)) : String(format: "%%%02X", byte)
        }
        return "attachment; filename=\"\(fallback)\"; filename*=UTF-8''\(encoded)"
    }
}
