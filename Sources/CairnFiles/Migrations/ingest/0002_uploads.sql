-- name: uploads
-- tus uploads under way: their length, offset and lease.
CREATE TABLE uploads (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    created_by TEXT,
    length BIGINT NOT NULL,
    upload_offset BIGINT NOT NULL,
    name TEXT NOT NULL,
    content_type TEXT NOT NULL,
    format TEXT NOT NULL,
    file_id TEXT,
    lock_token TEXT,
    locked_until BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL);

CREATE INDEX uploads_expiry ON uploads (expires_at);
