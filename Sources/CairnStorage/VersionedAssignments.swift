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

/// A row that carries a `version`, moved on by every write that changes it (its `ETag`).
package protocol Versioned {
    /// The row's version.
    var version: Int { get }
}

/// The target of a conditional write: the row `id` of `table`, only in the caller's tenant and,
/// when `expectedVersion` is set (`If-Match`), only at that version. Another tenant's row, or
/// one whose version moved on, is simply not written: the statement returns no row.
package struct VersionedRow: Sendable {
    /// The table (a name from the caller's code, never user input).
    package let table: String
    /// The row's id.
    package let id: String
    /// The caller's tenant.
    package let tenantId: String
    /// The version the write applies to; nil for any.
    package let expectedVersion: Int?

    /// Names the row.
    package init(table: String, id: String, tenantId: String, expectedVersion: Int?) {
        self.table = table
        self.id = id
        self.tenantId = tenantId
        self.expectedVersion = expectedVersion
    }

    /// `WHERE id … AND tenant_id … [AND version …]`.
    private var condition: SQLQueryString {
        var condition: SQLQueryString = " WHERE id = \(bind: id) AND tenant_id = \(bind: tenantId)"
        if let expectedVersion { condition = condition + " AND version = \(bind: expectedVersion)" }
        return condition
    }

    /// `UPDATE … SET sets … RETURNING columns`: no row when the row is missing or at another
    /// version.
    package func update(_ sets: VersionedAssignments, now: Int64, returning columns: String) -> SQLQueryString {
        "UPDATE \(unsafeRaw: table) SET " + sets.sql(now: now) + condition + " RETURNING \(unsafeRaw: columns)"
    }

    /// `DELETE … RETURNING columns`: no row when the row is missing or at another version.
    package func delete(returning columns: String = "id") -> SQLQueryString {
        "DELETE FROM \(unsafeRaw: table)" + condition + " RETURNING \(unsafeRaw: columns)"
    }

    /// What a write that changes nothing (a PATCH `{}`) answers without writing: the row as it
    /// is, when it exists at the expected version, so `If-Match` still applies; else nil.
    package func unchanged<Row: Versioned>(_ current: Row?) -> Row? {
        guard let current, expectedVersion.map({ $0 == current.version }) ?? true else { return nil }
        return current
    }
}
