package import CairnHTTP
import CairnStorage
import Foundation

/// A user account as clients see it (never the password hash).
///
/// As JSON: `{id, tenantId, email, name, role, phone, locale, createdAt, updatedAt}` (`phone`,
/// `locale` null when unset).
@JSONObject
package struct User: Sendable, Equatable, Versioned, JSONWritable {
    /// UUIDv7.
    package var id: String
    /// The tenant the user belongs to.
    package var tenantId: String
    /// Email as entered (trimmed, NFC); unique case-insensitively.
    package var email: String
    /// Display name.
    package var name: String
    /// Role within the tenant.
    @JSONRawValue package var role: Role
    /// The user's mobile number for SMS, E.164 (`+` and 8 to 15 digits), when they gave one.
    package var phone: String? = nil
    /// The user's language for notifications, a BCP 47 tag (RFC 5646), when they chose one.
    package var locale: String? = nil
    /// Row version, the `ETag`.
    @JSONSkip package var version: Int
    /// Epoch milliseconds.
    @JSONTimestamp package var createdAt: Int64
    /// Epoch milliseconds.
    @JSONTimestamp package var updatedAt: Int64
}

/// The answer to login and refresh (RFC 6749 §5.1 field meanings, camelCase names).
package struct TokenPair: Sendable, JSONWritable {
    /// The JWT access token.
    package var accessToken: String
    /// The opaque refresh token (256 random bits, base64url).
    package var refreshToken: String
    /// Seconds until the access token expires.
    package var expiresIn: Int

    /// `{accessToken, refreshToken, tokenType: "Bearer", expiresIn}`.
    package func writeJSON(to writer: inout JSONWriter) {
        writer.objectStart()
        writer.field("accessToken", accessToken)
        writer.field("refreshToken", refreshToken)
        writer.field("tokenType", "Bearer")
        writer.field("expiresIn", expiresIn)
        writer.objectEnd()
    }
}

/// Input rules for account fields, shared by registration, admin creation and profile edits.
package enum AccountRules {
    /// Whether `text` has the shape of a BCP 47 language tag (RFC 5646): a primary subtag of
    /// 2 to 8 letters, then subtags of 1 to 8 letters or digits, at most 35 characters.
    package static func isLanguageTag(_ text: String) -> Bool {
        let parts = text.split(separator: "-", omittingEmptySubsequences: false)
        guard let first = parts.first, (2...8).contains(first.count), first.allSatisfy({ $0.isASCII && $0.isLetter }), text.count <= 35 else {
            return false
        }
        return parts.dropFirst().allSatisfy { (1...8).contains($0.count) && $0.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber) } }
    }

    /// Whether `text` is an E.164 number (ITU-T E.164 as Twilio and other SMS APIs take it):
    /// `+`, then 8 to 15 digits, the first not 0.
    package static func isE164(_ text: String) -> Bool {
        let digits = text.utf8.dropFirst()
        return text.utf8.first == UInt8(ascii: "+") && (8...15).contains(digits.count) && digits.first != UInt8(ascii: "0")
            && digits.allSatisfy { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }
    }

    /// Trims and NFC-normalises an email; returns `(email, key)` where `key` is the
    /// case-folded form used for uniqueness, or nil when it is not a plausible address (an
    /// invisible or bidirectional control character anywhere makes it implausible: see
    /// ``TextSafety/containsInvisible(_:)``).
    package static func normalizeEmail(_ raw: String) -> (email: String, key: String)? {
        let email = raw.trimmingCharacters(in: .whitespacesAndNewlines).precomposedStringWithCanonicalMapping
        guard email.utf8.count <= 254, !email.contains(where: { $0.isWhitespace }), !TextSafety.containsInvisible(email) else { return nil }
        let parts = email.split(separator: "@", omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[0].isEmpty, parts[1].contains("."), !parts[1].hasPrefix("."), !parts[1].hasSuffix(".")
        else { return nil }
        return (email, email.lowercased())
    }

    /// Password length rule (NIST SP 800-63B §5.1.1.2): 8 to 128 characters.
    package static func passwordIssue(_ password: String) -> String? {
        let length = TextSafety.length(password)
        if length < 8 { return "must be at least 8 characters" }
        if length > 128 { return "must be at most 128 characters" }
        return nil
    }

    /// Trims a display name (of a user or a tenant) and checks it is 1–100 characters without
    /// bidirectional control characters (``TextSafety/containsBidiControl(_:)``).
    package static func normalizeName(_ raw: String) -> String? {
        let name = raw.trimmingCharacters(in: .whitespacesAndNewlines)
        return (1...100).contains(TextSafety.length(name)) && !TextSafety.containsBidiControl(name) ? name : nil
    }

    /// The issue reported for a name ``normalizeName(_:)`` refuses.
    package static let nameIssue = "must be 1 to 100 characters without bidirectional control characters"
    /// The issue of a phone that is not E.164.
    static let phoneIssue = "must be an E.164 number: + and 8 to 15 digits, the first not 0 (or null to remove it)"
    /// The issue of a locale that is not a BCP 47 tag.
    static let localeIssue = "must be a BCP 47 language tag such as de or de-AT (or null to remove it)"
    /// The issue of a role that is not one of ``Role``'s.
    static let roleIssue = "must be one of owner, admin, member"
}

/// Where other modules keep data of a user or a tenant, for deleting an account or a tenant
/// (`DELETE /users/me`, `DELETE /users/{id}`). The composition root lists each module's tables;
/// a test checks that every table with a `user_id` or `tenant_id` column is listed. Rows are
/// deleted in list order (children before parents).
package struct DataErasure: Sendable {
    /// Tables with `tenant_id` and `user_id` columns whose rows are the user's own (inbox,
    /// devices, preferences): deleted with the user.
    package var userTables: [String]
    /// Tables with a `tenant_id` column: every row is deleted with the tenant.
    package var tenantTables: [String]

    /// Creates the lists.
    package init(userTables: [String] = [], tenantTables: [String] = []) {
        self.userTables = userTables
        self.tenantTables = tenantTables
    }
}
