package import CairnStorage

/// The accounts module's tables: tenants, users, refresh tokens, login failures, service tokens.
/// Timestamps are epoch milliseconds (BIGINT) on both engines.
package enum AccountsMigrations {
    /// All migrations of the module, in order.
    package static let all: [Migration] = [
        Migration(
            module: "accounts", version: 1, name: "tenants, users, refresh tokens, login failures",
            sql: [
                """
                CREATE TABLE tenants (
                    id TEXT PRIMARY KEY,
                    name TEXT NOT NULL,
                    created_at BIGINT NOT NULL)
                """,
                """
                CREATE TABLE users (
                    id TEXT PRIMARY KEY,
                    tenant_id TEXT NOT NULL REFERENCES tenants(id),
                    email TEXT NOT NULL,
                    email_key TEXT NOT NULL UNIQUE,
                    name TEXT NOT NULL,
                    role TEXT NOT NULL,
                    password_hash TEXT NOT NULL,
                    sessions_valid_after BIGINT NOT NULL DEFAULT 0,
                    version INTEGER NOT NULL DEFAULT 1,
                    created_at BIGINT NOT NULL,
                    updated_at BIGINT NOT NULL)
                """,
                "CREATE INDEX users_tenant_id ON users (tenant_id, id)",
                """
                CREATE TABLE refresh_tokens (
                    id TEXT PRIMARY KEY,
                    family_id TEXT NOT NULL,
                    user_id TEXT NOT NULL,
                    tenant_id TEXT NOT NULL,
                    token_hash TEXT NOT NULL UNIQUE,
                    created_at BIGINT NOT NULL,
                    expires_at BIGINT NOT NULL,
                    used_at BIGINT,
                    revoked_at BIGINT)
                """,
                "CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id)",
                "CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id)",
                """
                CREATE TABLE login_failures (
                    id TEXT PRIMARY KEY,
                    email_key TEXT NOT NULL,
                    client TEXT NOT NULL,
                    at BIGINT NOT NULL)
                """,
                "CREATE INDEX login_failures_email ON login_failures (email_key, at)",
                "CREATE INDEX login_failures_client ON login_failures (client, at)",
                "CREATE INDEX login_failures_at ON login_failures (at)",
            ]),
        Migration(
            module: "accounts", version: 2, name: "service tokens",
            sql: [
                // Only the SHA-256 of the secret is stored; scopes are space-separated (RFC 6749 §3.3).
                """
                CREATE TABLE service_tokens (
                    id TEXT PRIMARY KEY,
                    tenant_id TEXT NOT NULL REFERENCES tenants(id),
                    name TEXT NOT NULL,
                    scopes TEXT NOT NULL,
                    token_hash TEXT NOT NULL UNIQUE,
                    hint TEXT NOT NULL,
                    created_by TEXT NOT NULL,
                    created_at BIGINT NOT NULL)
                """,
                "CREATE INDEX service_tokens_tenant ON service_tokens (tenant_id, id)",
            ]),
        Migration(
            module: "accounts", version: 3, name: "attempt throttling for registration and password changes",
            sql: [
                // One row per counted attempt; `bucket` names what is limited (`register:<address>`,
                // `password:<user id>`). Rows older than the window are pruned on insert.
                """
                CREATE TABLE auth_attempts (
                    id TEXT PRIMARY KEY,
                    bucket TEXT NOT NULL,
                    at BIGINT NOT NULL)
                """,
                "CREATE INDEX auth_attempts_bucket ON auth_attempts (bucket, at)",
                "CREATE INDEX auth_attempts_at ON auth_attempts (at)",
            ]),
        Migration(
            module: "accounts", version: 4, name: "signing key ring in the database",
            sql: [
                // Used on PostgreSQL (several nodes); SQLite keeps `jwt-keys.json`. The private
                // key is sealed under the master key (`v1:…`, see SecretBox).
                "CREATE TABLE signing_keys (kid TEXT PRIMARY KEY, private_key TEXT NOT NULL, created_at BIGINT NOT NULL)"
            ]),
        Migration(
            module: "accounts", version: 5, name: "a phone number on the profile, for SMS",
            sql: [
                // E.164 (`+` and digits), checked by the application; NULL when the user gave none.
                "ALTER TABLE users ADD COLUMN phone TEXT"
            ]),
        Migration(
            module: "accounts", version: 6, name: "a locale on the profile, for notification templates",
            sql: [
                // A BCP 47 tag, checked by the application; NULL renders templates' default variant.
                "ALTER TABLE users ADD COLUMN locale TEXT"
            ]),
        Migration(
            module: "accounts", version: 7, name: "refresh-token reuse interval",
            sql: [
                // Random, set when the token is rotated: its successor is HMAC-SHA256(token, salt), so
                // the same successor can be given again within the reuse interval without storing it
                // (a database dump holds neither the token nor its successor).
                "ALTER TABLE refresh_tokens ADD COLUMN successor_salt TEXT"
            ]),
    ]
}
