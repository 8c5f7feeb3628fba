-- name: pipelines
CREATE TABLE pipelines (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    name TEXT NOT NULL,
    spec TEXT NOT NULL,
    schedule_id TEXT,
    last_scheduled_file_id TEXT,
    created_by TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    version INTEGER NOT NULL);

CREATE INDEX pipelines_tenant ON pipelines (tenant_id, id);
