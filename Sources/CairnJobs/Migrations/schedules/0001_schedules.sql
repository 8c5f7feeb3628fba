-- name: schedules
CREATE TABLE schedules (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    name TEXT NOT NULL,
    cron TEXT NOT NULL,
    time_zone TEXT NOT NULL,
    kind TEXT NOT NULL,
    args TEXT NOT NULL,
    enabled BOOLEAN NOT NULL,
    next_run_at BIGINT,
    last_run_at BIGINT,
    created_by TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    version INTEGER NOT NULL);

CREATE INDEX schedules_due ON schedules (next_run_at) WHERE enabled;
CREATE INDEX schedules_tenant ON schedules (tenant_id, id);
