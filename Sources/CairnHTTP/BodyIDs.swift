package import CairnStorage

extension UUIDv7 {
    /// The issue reported for a request-body id that is no UUID (RFC 9562 §4), as
    /// `400 invalid_input` on its field.
    package static let malformedBodyIdIssue = "is not an id (a UUID string)"

    /// An id read from a request body (`fileId`, …), as path ids are read: a UUID in either
    /// case (RFC 9562 §4) comes back in lower case, the case ids are stored and compared in.
    /// - Parameter field: the body member, named in the error.
    /// - Throws: 400 `invalid_input` on `field` when `text` is no UUID: a malformed id is bad
    ///   input, not a resource that happens not to exist.
    package static func bodyID(_ text: String, field: String) throws -> String {
        guard isValid(text) else { throw AppError.invalidField(field, malformedBodyIdIssue) }
        return text.lowercased()
    }

    /// The issue of a request-body id for a ``ValueChecked`` model's ``ValueChecked/valueIssues()``:
    /// none for a UUID (RFC 9562 §4), else ``malformedBodyIdIssue`` on `field`. Checked there,
    /// a malformed id is listed in one answer with the body's other issues (an unknown member,
    /// say) instead of after they are fixed.
    package static func bodyIDIssues(_ text: String, field: String) -> [FieldIssue] {
        isValid(text) ? [] : [FieldIssue(field: field, issue: malformedBodyIdIssue)]
    }
}
