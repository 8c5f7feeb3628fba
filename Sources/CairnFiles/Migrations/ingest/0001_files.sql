-- name: files
CREATE TABLE files (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    name TEXT NOT NULL,
    size BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    content_type TEXT NOT NULL,
    format TEXT NOT NULL,
    created_by TEXT,
    created_at BIGINT NOT NULL);

CREATE INDEX files_tenant ON files (tenant_id, id);

-- Bytes uploaded per tenant and hour (the hourly upload quota).
CREATE TABLE file_upload_usage (
    tenant_id TEXT NOT NULL,
    hour BIGINT NOT NULL,
    bytes BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, hour));
