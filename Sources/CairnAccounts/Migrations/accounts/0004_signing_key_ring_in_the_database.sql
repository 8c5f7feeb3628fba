-- name: signing key ring in the database
-- Used on PostgreSQL (several nodes); SQLite keeps `jwt-keys.json`. The private
-- key is sealed under the master key (`v1:…`, see SecretBox).
CREATE TABLE signing_keys (kid TEXT PRIMARY KEY, private_key TEXT NOT NULL, created_at BIGINT NOT NULL);
