import Foundation

/// Path parameters that carry text rather than an id (a SKU): read as RFC 3986 §2.1 defines
/// them, percent-decoded, since the router hands segments on as written (`ABC%2D1` is `ABC-1`).
/// Ids have their own reading (``IDParameterMiddleware``).
package enum PathParameter {
    /// The issue of a parameter whose escapes are malformed (`%G1`, a lone `%`) or decode to
    /// bytes that are not UTF-8 (`%FF`).
    package static let malformedIssue = "must be percent-encoded UTF-8 (RFC 3986 §2.1)"
    /// The issue of a parameter that decodes to a control character (Unicode general category
    /// Cc: `%00`, `%0A`, `%7F`).
    package static let controlIssue = "must not contain control characters"

    /// `value` percent-decoded (RFC 3986 §2.1; `+` stays `+`, as in any path).
    /// - Parameter field: the parameter's name, named in the error.
    /// - Throws: 400 `invalid_input` on `field` when the escapes are malformed, decode to
    ///   invalid UTF-8 (RFC 3629), or the text holds a control character: such a value is bad
    ///   input, not a name that happens to be unknown.
    package static func decoded(_ value: some StringProtocol, field: String) throws -> String {
        let text: String
        if value.utf8.contains(UInt8(ascii: "%")) {
            guard let decoded = String(value).removingPercentEncoding else { throw AppError.invalidField(field, malformedIssue) }
            text = decoded
        } else {
            text = String(value)
        }
        guard !text.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else {
            throw AppError.invalidField(field, controlIssue)
        }
        return text
    }
}
