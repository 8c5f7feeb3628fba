package import CairnStorage

/// Settings of accounts and tokens, read from the top of the configuration:
/// `CAIRN_JWT_SECRET`, `CAIRN_ACCESS_TOKEN_TTL`, `CAIRN_REFRESH_TOKEN_TTL`, `CAIRN_BCRYPT_COST`,
/// `CAIRN_BCRYPT_THREADS`.
package struct AccountSettings: Sendable {
    /// HS256 secret (≥ 32 bytes, RFC 7518 §3.2) instead of Ed25519 keys. Never logged.
    package var jwtSecret: String?
    /// Access token lifetime in seconds (default 900; accepts 15m, 1h).
    package var accessTokenTTL = 900
    /// Refresh token lifetime in seconds (default 30d).
    package var refreshTokenTTL = 30 * 86_400
    /// bcrypt cost 4...31 (default 12).
    package var bcryptCost = 12
    /// Threads that may hash passwords at once (default 1).
    package var bcryptThreads = 1

    /// The defaults.
    package init() {}

    /// Reads the settings that are set.
    /// - Throws: `ConfigurationError` naming the first bad one.
    package mutating func read(from settings: SettingsReader) throws {
        if let secret = settings.text("jwt.secret"), !secret.isEmpty {
            guard secret.utf8.count >= 32 else { throw settings.invalid("jwt.secret", "must be at least 32 bytes (RFC 7518 §3.2)") }
            jwtSecret = secret
        }
        accessTokenTTL = try settings.seconds("access.token.ttl", default: accessTokenTTL)
        refreshTokenTTL = try settings.seconds("refresh.token.ttl", default: refreshTokenTTL)
        bcryptCost = try settings.integer("bcrypt.cost", in: 4...31, default: bcryptCost)
        bcryptThreads = try settings.integer("bcrypt.threads", in: 1...64, default: bcryptThreads)
    }
}
