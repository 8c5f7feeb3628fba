/// Why bytes are not JSON (RFC 8259), and where. ``explanation`` words the reason and picks the
/// byte to name; each reader frames it its own way (a configuration file names a line and a
/// column, a record reader the record and the byte offset).
package struct JSONScanError: Error, Equatable, Sendable {
    /// What does not fit the grammar.
    package enum Reason: Sendable, Equatable {
        /// The input ends where JSON needs more.
        case unexpectedEnd
        /// No value starts here (a stray character, or `-` without a digit).
        case invalidValue
        /// `t`, `f` or `n` that does not spell `true`, `false` or `null`.
        case invalidLiteral
        /// A fraction or an exponent without digits.
        case invalidNumber
        /// A string without its closing quote.
        case unclosedString
        /// A raw control character (below U+0020) inside a string.
        case controlCharacter
        /// A backslash followed by anything but `"` `\` `/` `b` `f` `n` `r` `t` `u`.
        case invalidEscape
        /// `\u` without four hex digits.
        case invalidUnicodeEscape
        /// A `\u` surrogate without its pair (only when ``JSONScanner/LoneSurrogates/refuse``).
        case loneSurrogate
        /// A string's bytes are not UTF-8.
        case invalidUTF8
        /// An object member that does not start with a string.
        case expectedName
        /// A member name without `:` after it.
        case expectedColon
        /// An object member followed by neither `,` nor `}`.
        case expectedCommaOrBrace
        /// An array element followed by neither `,` nor `]`.
        case expectedCommaOrBracket
    }

    /// What does not fit.
    package var reason: Reason
    /// The first byte that does not fit (the input's end when it ends too soon).
    package var offset: Int
    /// Where the token that failed starts: a literal's or number's first byte, a string's
    /// content (for `invalidUTF8`) or opening quote (for `unclosedString`), an escape's
    /// backslash, or a `\u` escape's first hex digit. `offset` for the other reasons.
    package var tokenStart: Int

    /// Creates an error.
    package init(_ reason: Reason, at offset: Int, tokenStart: Int? = nil) {
        self.reason = reason
        self.offset = offset
        self.tokenStart = tokenStart ?? offset
    }

    /// The reason in a few words, and the byte to point at: the failing token's start for a
    /// token that went wrong (a literal, a number, a string, an escape), else ``offset``.
    package var explanation: (message: String, at: Int) {
        switch reason {
        case .unexpectedEnd: ("the text ends where JSON needs more", offset)
        case .invalidValue: ("no JSON value starts here", tokenStart)
        case .invalidLiteral: ("not true, false or null", tokenStart)
        case .invalidNumber: ("an invalid number", tokenStart)
        case .unclosedString: ("a string is never closed", tokenStart)
        case .controlCharacter: ("a control character inside a string", offset)
        case .invalidEscape: ("an invalid escape", tokenStart)
        case .invalidUnicodeEscape, .loneSurrogate: ("an invalid \\u escape", tokenStart)
        case .invalidUTF8: ("the text is not UTF-8", tokenStart)
        case .expectedName: ("expected a member name in double quotes", offset)
        case .expectedColon: ("expected :", offset)
        case .expectedCommaOrBrace: ("expected , or }", offset)
        case .expectedCommaOrBracket: ("expected , or ]", offset)
        }
    }
}

/// A number as JSON writes it.
package enum JSONNumber: Equatable, Sendable {
    /// Written without fraction or exponent, and within `Int64`: its exact value.
    case integer(Int64)
    /// Any other number, through `Double`; ±infinity beyond its range (`1e400` is JSON).
    case real(Double)
}

/// A JSON value that is not an object or an array.
package enum JSONScalar: Equatable, Sendable {
    case null
    case bool(Bool)
    case number(JSONNumber)
    case string(String)
}

/// The JSON (RFC 8259) tokenizer behind every JSON reader: the request-body tree (``JSONTree``)
/// and the streaming records (``JSONRecordReader``). It reads one token or one scalar at a time
/// from bytes in memory, strictly (no comments, no trailing commas, no leading zeros, no raw
/// control characters in strings, UTF-8 only), and leaves what to build (and how deep to go:
/// both callers bound nesting before they parse) to its caller.
package struct JSONScanner {
    /// What a `\u` escape of a lone UTF-16 surrogate (`"\ud800"`) becomes.
    package enum LoneSurrogates: Sendable {
        /// A syntax error (``JSONScanError/Reason/loneSurrogate``).
        case refuse
        /// U+FFFD, as most decoders make it.
        case replace
    }

    /// Which error a string that breaks several rules reports (each reader has always
    /// reported its own; they agree on every string with one fault).
    package enum StringFaults: Sendable {
        /// The first bad escape or control character, in byte order; then invalid UTF-8.
        case inOrder
        /// The string is checked whole before its escapes are read: a control character, then
        /// a missing closing quote, then invalid UTF-8, then the first bad escape.
        case wholeStringFirst
    }

    /// The input.
    package let bytes: UnsafeBufferPointer<UInt8>
    /// The next byte to read.
    package var position: Int
    private let replacesLoneSurrogates: Bool
    private let checksWholeStringFirst: Bool

    /// A scanner at the start of `bytes`.
    package init(_ bytes: UnsafeBufferPointer<UInt8>, loneSurrogates: LoneSurrogates, stringFaults: StringFaults) {
        self.bytes = bytes
        self.position = 0
        self.replacesLoneSurrogates = loneSurrogates == .replace
        self.checksWholeStringFirst = stringFaults == .wholeStringFirst
    }

    /// True when every byte is read.
    @inline(__always)
    package var atEnd: Bool { position >= bytes.count }

    /// The byte at `position` (not at the end).
    @inline(__always)
    package var current: UInt8 { bytes[position] }

    /// Steps over spaces, tabs, CRs and LFs.
    @inline(__always)
    package mutating func skipWhitespace() {
        while position < bytes.count {
            switch bytes[position] {
            case 0x20, 0x09, 0x0A, 0x0D: position += 1
            default: return
            }
        }
    }

    // MARK: Structure

    /// Steps past the `{` or `[` at `position` and the whitespace after it; true, and past the
    /// `closing` bracket too, when the object or array is empty.
    @inline(__always)
    package mutating func enter(closing: UInt8) -> Bool {
        position += 1
        skipWhitespace()
        guard position < bytes.count, bytes[position] == closing else { return false }
        position += 1
        return true
    }

    /// A member name at `position` (whitespace already skipped), without the `:` after it.
    @inline(__always)
    package mutating func memberName() throws(JSONScanError) -> String {
        guard position < bytes.count, bytes[position] == UInt8(ascii: "\"") else { throw JSONScanError(.expectedName, at: position) }
        return try string()
    }

    /// Steps past the `:` after a member name and the whitespace around it.
    @inline(__always)
    package mutating func colon() throws(JSONScanError) {
        skipWhitespace()
        guard position < bytes.count, bytes[position] == UInt8(ascii: ":") else { throw JSONScanError(.expectedColon, at: position) }
        position += 1
        skipWhitespace()
    }

    /// After a member or element: true past a `,` (and the whitespace after it: another
    /// follows), false past the `closing` bracket.
    @inline(__always)
    package mutating func next(closing: UInt8) throws(JSONScanError) -> Bool {
        skipWhitespace()
        guard position < bytes.count else { throw JSONScanError(.unexpectedEnd, at: position) }
        if bytes[position] == UInt8(ascii: ",") {
            position += 1
            skipWhitespace()
            return true
        }
        guard bytes[position] == closing else {
            throw JSONScanError(closing == UInt8(ascii: "}") ? .expectedCommaOrBrace : .expectedCommaOrBracket, at: position)
        }
        position += 1
        return false
    }

    /// Steps over one whole value (after optional whitespace), checking it as strictly as
    /// reading it would.
    package mutating func skipValue() throws(JSONScanError) {
        skipWhitespace()
        guard position < bytes.count else { throw JSONScanError(.unexpectedEnd, at: position) }
        switch bytes[position] {
        case UInt8(ascii: "{"):
            if enter(closing: UInt8(ascii: "}")) { return }
            repeat {
                _ = try memberName()
                try colon()
                try skipValue()
            } while try next(closing: UInt8(ascii: "}"))
        case UInt8(ascii: "["):
            if enter(closing: UInt8(ascii: "]")) { return }
            repeat { try skipValue() } while try next(closing: UInt8(ascii: "]"))
        default:
            _ = try scalar()
        }
    }

    // MARK: Scalars

    /// The string, literal or number at `position`.
    package mutating func scalar() throws(JSONScanError) -> JSONScalar {
        guard position < bytes.count else { throw JSONScanError(.unexpectedEnd, at: position) }
        switch bytes[position] {
        case UInt8(ascii: "\""): return .string(try string())
        case UInt8(ascii: "t"):
            try literal("true")
            return .bool(true)
        case UInt8(ascii: "f"):
            try literal("false")
            return .bool(false)
        case UInt8(ascii: "n"):
            try literal("null")
            return .null
        default: return .number(try number())
        }
    }

    private mutating func literal(_ word: StaticString) throws(JSONScanError) {
        let count = word.utf8CodeUnitCount
        guard bytes.count - position >= count else { throw JSONScanError(.invalidLiteral, at: position) }
        for offset in 0..<count where bytes[position + offset] != word.utf8Start[offset] {
            throw JSONScanError(.invalidLiteral, at: position + offset, tokenStart: position)
        }
        position += count
    }

    /// `-? int frac? exp?` (RFC 8259 §6). An integer without fraction or exponent is read
    /// exactly, digit by digit, when it fits `Int64`; anything else goes through `Double`.
    package mutating func number() throws(JSONScanError) -> JSONNumber {
        let start = position
        var negative = false
        if bytes[position] == UInt8(ascii: "-") {
            negative = true
            position += 1
        }
        guard position < bytes.count, Self.isDigit(bytes[position]) else {
            throw JSONScanError(.invalidValue, at: position, tokenStart: start)
        }
        // Accumulated negatively, so that Int64.min fits too; nil once it overflows.
        var exact: Int64? = 0
        if bytes[position] == UInt8(ascii: "0") {
            position += 1
        } else {
            while position < bytes.count, Self.isDigit(bytes[position]) {
                let digit = Int64(bytes[position] &- UInt8(ascii: "0"))
                if let value = exact {
                    let (times, overflow1) = value.multipliedReportingOverflow(by: 10)
                    let (sum, overflow2) = times.subtractingReportingOverflow(digit)
                    exact = overflow1 || overflow2 ? nil : sum
                }
                position += 1
            }
        }
        var isInteger = true
        if position < bytes.count, bytes[position] == UInt8(ascii: ".") {
            isInteger = false
            position += 1
            try digits(of: start)
        }
        if position < bytes.count, bytes[position] == UInt8(ascii: "e") || bytes[position] == UInt8(ascii: "E") {
            isInteger = false
            position += 1
            if position < bytes.count, bytes[position] == UInt8(ascii: "+") || bytes[position] == UInt8(ascii: "-") { position += 1 }
            try digits(of: start)
        }
        if isInteger, let value = exact {
            if negative { return .integer(value) }
            if value != .min { return .integer(-value) }
        }
        // `Double` reads beyond its range as ±infinity, never as a failure.
        guard let double = Double(String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<position]), as: UTF8.self)) else {
            throw JSONScanError(.invalidNumber, at: start)
        }
        return .real(double)
    }

    /// One or more digits of a fraction or exponent of the number at `start`.
    @inline(__always)
    private mutating func digits(of start: Int) throws(JSONScanError) {
        guard position < bytes.count, Self.isDigit(bytes[position]) else {
            throw JSONScanError(.invalidNumber, at: position, tokenStart: start)
        }
        repeat { position += 1 } while position < bytes.count && Self.isDigit(bytes[position])
    }

    @inline(__always)
    private static func isDigit(_ byte: UInt8) -> Bool {
        byte &- UInt8(ascii: "0") < 10
    }

    /// The string whose opening quote is at `position`, escapes decoded. Refuses raw control
    /// characters, bad escapes, invalid UTF-8 and (unless replaced) lone surrogates; which one
    /// a string that breaks several reports is ``StringFaults``'.
    package mutating func string() throws(JSONScanError) -> String {
        let open = position
        position += 1
        let start = position
        // Fast path: no escapes, so the bytes are the string.
        while position < bytes.count {
            let byte = bytes[position]
            if byte == UInt8(ascii: "\"") {
                let raw = UnsafeBufferPointer(rebasing: bytes[start..<position])
                position += 1
                return try Self.text(raw, at: start)
            }
            if byte == UInt8(ascii: "\\") { break }
            if byte < 0x20 { throw JSONScanError(.controlCharacter, at: position) }
            position += 1
        }
        if checksWholeStringFirst { try checkWhole(open: open, from: position) }
        var utf8 = Array(UnsafeBufferPointer(rebasing: bytes[start..<position]))
        while position < bytes.count {
            let byte = bytes[position]
            switch byte {
            case UInt8(ascii: "\""):
                position += 1
                // Escapes are ASCII: they never make or mend invalid UTF-8, so the bytes as
                // written are checked, for the offset of a bad one.
                guard UTF8Validation.firstInvalidByte(UnsafeBufferPointer(rebasing: bytes[start..<(position - 1)])) == nil else {
                    throw invalidUTF8(start..<(position - 1))
                }
                return String(decoding: utf8, as: UTF8.self)
            case UInt8(ascii: "\\"):
                let backslash = position
                position += 1
                guard position < bytes.count else { throw JSONScanError(.unclosedString, at: position, tokenStart: open) }
                let escape = bytes[position]
                position += 1
                switch escape {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): utf8.append(escape)
                case UInt8(ascii: "b"): utf8.append(0x08)
                case UInt8(ascii: "f"): utf8.append(0x0C)
                case UInt8(ascii: "n"): utf8.append(0x0A)
                case UInt8(ascii: "r"): utf8.append(0x0D)
                case UInt8(ascii: "t"): utf8.append(0x09)
                case UInt8(ascii: "u"):
                    let scalar = try unicodeEscape()
                    utf8.append(contentsOf: UTF8.encode(scalar)!)
                default: throw JSONScanError(.invalidEscape, at: position - 1, tokenStart: backslash)
                }
            default:
                if byte < 0x20 { throw JSONScanError(.controlCharacter, at: position) }
                utf8.append(byte)
                position += 1
            }
        }
        throw JSONScanError(.unclosedString, at: position, tokenStart: open)
    }

    /// For ``StringFaults/wholeStringFirst``: checks the raw bytes of the string opened at
    /// `open`, from its first escape at `from` to its closing quote, before any escape is read.
    private func checkWhole(open: Int, from: Int) throws(JSONScanError) {
        var index = from
        while index < bytes.count && bytes[index] != UInt8(ascii: "\"") {
            if bytes[index] == UInt8(ascii: "\\") {
                index += 2
                continue
            }
            if bytes[index] < 0x20 { throw JSONScanError(.controlCharacter, at: index) }
            index += 1
        }
        guard index < bytes.count else { throw JSONScanError(.unclosedString, at: bytes.count, tokenStart: open) }
        if UTF8Validation.firstInvalidByte(UnsafeBufferPointer(rebasing: bytes[(open + 1)..<index])) != nil { throw invalidUTF8((open + 1)..<index) }
    }

    /// The scalar of the `\u` escape whose hex digits start at `position`, with the low half
    /// of a surrogate pair when one follows (RFC 8259 §7).
    private mutating func unicodeEscape() throws(JSONScanError) -> Unicode.Scalar {
        let digits = position
        var scalar = try hex4(at: position)
        position += 4
        if (0xD800...0xDBFF).contains(scalar) {
            if bytes.count - position >= 6, bytes[position] == UInt8(ascii: "\\"), bytes[position + 1] == UInt8(ascii: "u") {
                let low = try hex4(at: position + 2)
                if (0xDC00...0xDFFF).contains(low) {
                    scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                    position += 6
                } else {
                    // Not a pair: the next escape is read on its own.
                    guard replacesLoneSurrogates else { throw JSONScanError(.loneSurrogate, at: position + 2, tokenStart: digits) }
                    scalar = 0xFFFD
                }
            } else {
                guard replacesLoneSurrogates else { throw JSONScanError(.loneSurrogate, at: position, tokenStart: digits) }
                scalar = 0xFFFD
            }
        } else if (0xDC00...0xDFFF).contains(scalar) {
            guard replacesLoneSurrogates else { throw JSONScanError(.loneSurrogate, at: digits) }
            scalar = 0xFFFD
        }
        // Surrogates are handled above, so every other value up to 0xFFFF is a scalar.
        return Unicode.Scalar(scalar)!
    }

    /// Four hex digits at `start`.
    private func hex4(at start: Int) throws(JSONScanError) -> UInt32 {
        guard bytes.count - start >= 4 else { throw JSONScanError(.invalidUnicodeEscape, at: start) }
        var value: UInt32 = 0
        for index in start..<(start + 4) {
            let byte = bytes[index]
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
            default: throw JSONScanError(.invalidUnicodeEscape, at: index, tokenStart: start)
            }
            value = value << 4 | UInt32(digit)
        }
        return value
    }

    /// The string of `raw`, a string's content without escapes starting at `offset`.
    /// (`String(validating:as:)` would check it in one pass but, generic and unspecialized, it
    /// costs more than the two here.)
    @inline(__always)
    private static func text(_ raw: UnsafeBufferPointer<UInt8>, at offset: Int) throws(JSONScanError) -> String {
        if let bad = UTF8Validation.firstInvalidByte(raw) { throw JSONScanError(.invalidUTF8, at: offset + bad, tokenStart: offset) }
        return String(decoding: raw, as: UTF8.self)
    }

    /// The error for a string whose bytes in `content` (escapes included) are not UTF-8: at
    /// the first bad byte.
    private func invalidUTF8(_ content: Range<Int>) -> JSONScanError {
        let bad = UTF8Validation.firstInvalidByte(UnsafeBufferPointer(rebasing: bytes[content])) ?? 0
        return JSONScanError(.invalidUTF8, at: content.lowerBound + bad, tokenStart: content.lowerBound)
    }
}
