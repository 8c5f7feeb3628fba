package import CairnStorage
package import SQLKit

/// `COUNT(*)` found no row to read: the query is not a count.
private struct NoCountRow: Error {}

extension Database {
    /// How many rows `SELECT COUNT(*) FROM rows` counts, read on a fresh connection: `rows` is
    /// a table and an optional condition, as in `rowCount("jobs WHERE kind = \(bind: kind)")`.
    /// The one way tests count what a request or job left behind in a table.
    package func rowCount(_ rows: SQLQueryString) async throws -> Int {
        try await read { db in
            guard let row = try await db.raw("SELECT COUNT(*) AS n FROM " + rows).first() else { throw NoCountRow() }
            return try row.decode(column: "n", as: Int.self)
        }
    }
}
