package import CairnStorage
import Foundation

/// The accounts module's tables: tenants, users, refresh tokens, login failures, service tokens,
/// as `Migrations/accounts/*.sql` among its resources. Timestamps are epoch milliseconds (BIGINT)
/// on both engines.
package enum AccountsMigrations {
    /// All migrations of the module, in order.
    package static func all() throws -> [Migration] { try Migration.files(in: .module) }
}
