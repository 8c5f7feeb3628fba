package import CairnStorage

/// Settings of accounts and tokens, read from the top of the configuration:
/// `CAIRN_JWT_SECRET`, `CAIRN_ACCESS_TOKEN_TTL`, `CAIRN_REFRESH_TOKEN_TTL`, `CAIRN_REFRESH_REUSE_INTERVAL`,
/// `CAIRN_BCRYPT_COST`,
/// `CAIRN_BCRYPT_THREADS`, `CAIRN_BCRYPT_QUEUE`, and the attempt limits `CAIRN_LOGIN_*`,
/// `CAIRN_REGISTER_*` and `CAIRN_PASSWORD_CHANGE_*` (OWASP Authentication Cheat Sheet).
package struct AccountSettings: Sendable {
    /// HS256 secret (≥ 32 bytes, RFC 7518 §3.2) instead of Ed25519 keys. Never logged.
    package var jwtSecret: String?
    /// Access token lifetime in seconds (default 900; accepts 15m, 1h).
    package var accessTokenTTL = 900
    /// Refresh token lifetime in seconds (default 30d).
    package var refreshTokenTTL = 30 * 86_400
    /// Seconds during which a refresh token already rotated may be presented again and get the
    /// same successor instead of a reuse alarm (default 10, as Supabase's
    /// `refresh_token_reuse_interval`; 0 turns it off). `CAIRN_REFRESH_REUSE_INTERVAL`.
    package var refreshReuseInterval = 10
    /// bcrypt cost 4...31 (default 12).
    package var bcryptCost = 12
    /// Threads that may hash passwords at once (default 1).
    package var bcryptThreads = 1
    /// Password checks and hashes admitted at once, running or waiting for a thread (default
    /// 64); beyond it requests get 503 `unavailable` with `Retry-After` rather than queueing.
    package var bcryptQueue = 64
    /// Failed logins per email from one client address within `loginWindow` before that
    /// address gets 429 for it (default 5).
    package var loginMaxPerEmail = 5
    /// Failed logins per client address within `loginWindow` before 429 (default 20).
    package var loginMaxPerClient = 20
    /// The sliding window of login failures, in seconds (default 15 minutes).
    package var loginWindow = 15 * 60
    /// Registrations per client address within `registerWindow` before 429 (default 10).
    package var registerMaxPerClient = 10
    /// The sliding window of registrations, in seconds (default 1 hour).
    package var registerWindow = 3600
    /// Wrong `currentPassword` attempts per user within `passwordChangeWindow` before 429
    /// (default 5).
    package var passwordChangeMaxFailures = 5
    /// The sliding window of wrong current passwords, in seconds (default 15 minutes).
    package var passwordChangeWindow = 15 * 60

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
        refreshReuseInterval = try settings.seconds("refresh.reuse.interval", in: 0...300, default: refreshReuseInterval)
        bcryptCost = try settings.integer("bcrypt.cost", in: 4...31, default: bcryptCost)
        bcryptThreads = try settings.integer("bcrypt.threads", in: 1...64, default: bcryptThreads)
        bcryptQueue = try settings.integer("bcrypt.queue", in: 1...100_000, default: bcryptQueue)
        loginMaxPerEmail = try settings.integer("login.max.per.email", in: 1...10_000, default: loginMaxPerEmail)
        loginMaxPerClient = try settings.integer("login.max.per.client", in: 1...1_000_000, default: loginMaxPerClient)
        loginWindow = try settings.seconds("login.window", default: loginWindow)
        registerMaxPerClient = try settings.integer("register.max.per.client", in: 1...1_000_000, default: registerMaxPerClient)
        registerWindow = try settings.seconds("register.window", default: registerWindow)
        passwordChangeMaxFailures = try settings.integer("password.change.max.failures", in: 1...10_000, default: passwordChangeMaxFailures)
        passwordChangeWindow = try settings.seconds("password.change.window", default: passwordChangeWindow)
    }
}
