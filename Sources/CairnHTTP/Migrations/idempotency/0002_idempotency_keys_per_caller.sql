-- name: idempotency keys per caller
-- Keys belong to their caller (user or service token), not to the whole tenant: two
-- users of one tenant picking the same key must not see each other's responses. The
-- table only caches replies for a day, so it is recreated rather than converted (a
-- request retried across the upgrade runs again, as after the key's lifetime).
DROP TABLE idempotency_keys;

CREATE TABLE idempotency_keys (
    tenant_id TEXT NOT NULL,
    caller_id TEXT NOT NULL,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    state TEXT NOT NULL,
    status INTEGER,
    content_type TEXT,
    location TEXT,
    body TEXT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, caller_id, key));

CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
