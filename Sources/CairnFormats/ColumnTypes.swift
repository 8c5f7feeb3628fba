/// A column's type in a pipeline's `input` table (SQLite storage classes plus the two
/// conventions SQLite lacks: booleans as 0/1 and timestamps as RFC 3339 text).
package enum ColumnType: String, Sendable, Codable, CaseIterable {
    /// 64-bit signed integers.
    case integer
    /// Floating-point numbers.
    case real
    /// `true`/`false` (any case), stored as 1/0.
    case boolean
    /// RFC 3339 date-times or `YYYY-MM-DD` dates, stored as text.
    case timestamp
    /// Anything else.
    case text
}

/// Infers column types from sample values (the pipeline's first 1,000 records): the narrowest
/// type every non-null sample fits, in the order integer → real → boolean → timestamp → text.
/// A column with no non-null sample is `text`.
package struct ColumnTypeInference: Sendable {
    /// Candidate types still possible for each column.
    private var candidates: [Set<ColumnType>]
    private var seen: [Bool]
    /// Records sampled so far.
    package private(set) var samples = 0
    /// How many records are sampled (default 1,000).
    package let limit: Int

    /// Starts inferring `count` columns.
    package init(columns count: Int, limit: Int = 1000) {
        candidates = Array(repeating: Set(ColumnType.allCases), count: count)
        seen = Array(repeating: false, count: count)
        self.limit = limit
    }

    /// Whether more samples are wanted.
    package var wantsMore: Bool { samples < limit }

    /// Adds one record's values (nil for null); extra values beyond the column count are ignored.
    package mutating func add(_ values: [String?]) {
        guard wantsMore else { return }
        samples += 1
        for (index, value) in values.prefix(candidates.count).enumerated() {
            guard let value else { continue }
            seen[index] = true
            if candidates[index].count == 1 { continue }  // already text
            candidates[index] = candidates[index].filter { Self.fits(value, $0) }
        }
    }

    /// Adds one JSON record's values, aligned to the columns (nil where a member is missing).
    /// JSON carries its own types: a number is never text, and a JSON string is text (or a
    /// timestamp), never a number, so `"007"` stays `"007"`.
    package mutating func add(json values: [FieldValue?]) {
        guard wantsMore else { return }
        samples += 1
        for (index, value) in values.prefix(candidates.count).enumerated() {
            let allowed: Set<ColumnType>
            switch value {
            case nil, .null?: continue
            case .integer?: allowed = [.integer, .real, .text]
            case .real?: allowed = [.real, .text]
            case .bool?: allowed = [.boolean, .text]
            case .text(let text)?: allowed = Self.fits(text, .timestamp) ? [.timestamp, .text] : [.text]
            case .json?: allowed = [.text]
            }
            seen[index] = true
            candidates[index].formIntersection(allowed)
        }
    }

    /// The inferred types, one per column.
    package var types: [ColumnType] {
        candidates.indices.map { index in
            guard seen[index] else { return .text }
            return [ColumnType.integer, .real, .boolean, .timestamp].first { candidates[index].contains($0) } ?? .text
        }
    }

    /// The spellings of infinity a `real` column takes: `Infinity`, `-Infinity`, `+Infinity`.
    package static let infinities: Set<String> = ["Infinity", "-Infinity", "+Infinity"]

    /// Whether `value` can be stored as `type`.
    package static func fits(_ value: String, _ type: ColumnType) -> Bool {
        switch type {
        case .text: return true
        case .integer: return Int64(value) != nil
        case .real:
            // `Infinity` as Cairn's CSV output writes it (PostgreSQL's spelling) reads back as a
            // number; Double's other spellings ("inf", "nan") are not numbers a user means.
            if infinities.contains(value) { return true }
            guard let number = Double(value), number.isFinite else { return false }
            return value.utf8.allSatisfy { (0x30...0x39).contains($0) || $0 == 0x2E || $0 == 0x2D || $0 == 0x2B || $0 == 0x65 || $0 == 0x45 }
        case .boolean:
            let lower = value.lowercased()
            return lower == "true" || lower == "false"
        case .timestamp:
            var value = value
            return value.withUTF8 { fitsTimestamp(utf8: $0) }
        }
    }

    /// Whether UTF-8 `bytes` are a timestamp as `fits(_:_:)` takes one (RFC 3339, or a date
    /// alone read as its midnight UTC), without making a String.
    package static func fitsTimestamp(utf8 bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        if Timestamp.parseMilliseconds(utf8: bytes) != nil { return true }
        guard bytes.count == 10 else { return false }
        let midnight: StaticString = "T00:00:00Z"
        return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 20) { text in
            _ = text.initialize(fromContentsOf: bytes)
            midnight.withUTF8Buffer { _ = UnsafeMutableBufferPointer(rebasing: text[10...]).initialize(fromContentsOf: $0) }
            return Timestamp.parseMilliseconds(utf8: UnsafeBufferPointer(text)) != nil
        }
    }
}
