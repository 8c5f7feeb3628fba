-- name: attempt throttling for registration and password changes
-- One row per counted attempt; `bucket` names what is limited (`register:<address>`,
-- `password:<user id>`). Rows older than the window are pruned on insert.
CREATE TABLE auth_attempts (
    id TEXT PRIMARY KEY,
    bucket TEXT NOT NULL,
    at BIGINT NOT NULL);

CREATE INDEX auth_attempts_bucket ON auth_attempts (bucket, at);
CREATE INDEX auth_attempts_at ON auth_attempts (at);
