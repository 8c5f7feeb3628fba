package import SQLKit

/// The `SET` list of an `UPDATE` on a row that carries `version` and `updated_at`: the new
/// values, with `version` moved on and `updated_at` stamped only when one of them differs from
/// the stored value (`IS DISTINCT FROM`, so NULL compares as a value, on SQLite 3.39+ and
/// PostgreSQL alike). A write that changes nothing keeps the row's version, its `ETag` and its
/// `updatedAt`, as HTTP caches and PocketBase/Supabase clients expect.
package struct VersionedAssignments: Sendable {
    private var values: [(column: String, value: any Encodable & Sendable)] = []

    /// No assignment yet.
    package init() {}

    /// Whether no column is set.
    package var isEmpty: Bool { values.isEmpty }

    /// Sets `column` (a name from the caller's code, never user input) to `value`.
    package mutating func set(_ column: String, _ value: some Encodable & Sendable) {
        values.append((column, value))
    }

    /// The `SET` list: `version` and `updated_at` (to `now`) when a value changes, then the
    /// assignments themselves.
    package func sql(now: Int64) -> SQLQueryString {
        // The CASE sees the row as stored: every expression of one UPDATE reads the old values.
        var changed: SQLQueryString = "("
        for (index, item) in values.enumerated() {
            if index > 0 { changed = changed + " OR " }
            changed = changed + "\(unsafeRaw: item.column) IS DISTINCT FROM \(bind: item.value)"
        }
        changed = changed + ")"
        var list: SQLQueryString = "version = CASE WHEN "
        list = list + changed + " THEN version + 1 ELSE version END, updated_at = CASE WHEN " + changed
        list = list + " THEN \(bind: now) ELSE updated_at END"
        for item in values {
            list = list + ", \(unsafeRaw: item.column) = \(bind: item.value)"
        }
        return list
    }
}
