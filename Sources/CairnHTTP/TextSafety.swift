/// Checks for characters that make text display as something other than what it is: the one
/// rule shared by accounts (emails, user and tenant names) and files (names from `POST /files`,
/// its multipart form and tus `Upload-Metadata`).
package enum TextSafety {
    /// Whether `scalar` is a bidirectional formatting character (Unicode UAX #9 §2: ALM U+061C,
    /// LRM U+200E, RLM U+200F, LRE/RLE/PDF/LRO/RLO U+202A–U+202E, LRI/RLI/FSI/PDI U+2066–U+2069),
    /// which can reverse how the rest of a name reads (`U+202E` makes `exe.txt` show as `txt.exe`;
    /// CVE-2021-42574, "Trojan Source").
    package static func isBidiControl(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.value {
        case 0x061C, 0x200E, 0x200F, 0x202A...0x202E, 0x2066...0x2069: true
        default: false
        }
    }

    /// Whether `scalar` shows nothing: controls (Cc), format characters (Cf: zero-width space
    /// U+200B, joiners, BOM, bidi controls…), line and paragraph separators, and the other
    /// default-ignorable code points (Unicode §5.21: variation selectors, Hangul fillers).
    package static func isInvisible(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.properties.generalCategory {
        case .control, .format, .lineSeparator, .paragraphSeparator: return true
        default: return scalar.properties.isDefaultIgnorableCodePoint
        }
    }

    /// The length of `text` as every text limit of the API counts it (titles, names,
    /// descriptions, keys; the `maxLength` of `openapi.yaml`): in Unicode scalars (code points).
    /// JSON Schema's `maxLength` counts characters as RFC 8259 §7 defines them, code points
    /// (JSON Schema Validation §6.3.1), so the contract and the server agree. It is the stricter
    /// of the two counts a client may think of: every user-perceived character (grapheme
    /// cluster, Swift's `String.count`) is one code point or more, so text within a limit in
    /// code points is within it in graphemes too, and stacked combining marks cannot pass a
    /// huge string as "one character". A family emoji (four people joined by U+200D) counts 7.
    package static func length(_ text: some StringProtocol) -> Int {
        text.unicodeScalars.count
    }

    /// Whether `text` contains a bidirectional formatting character (``isBidiControl(_:)``):
    /// refused in names, where other invisible characters (an emoji's zero-width joiner) are fine.
    package static func containsBidiControl(_ text: String) -> Bool {
        text.unicodeScalars.contains(where: isBidiControl)
    }

    /// Whether `text` contains an invisible character (``isInvisible(_:)``): refused in emails,
    /// where `a\u{200B}b@example.com` would be another account that displays the same.
    package static func containsInvisible(_ text: String) -> Bool {
        text.unicodeScalars.contains(where: isInvisible)
    }
}
