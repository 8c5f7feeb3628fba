-- name: tasks
CREATE TABLE tasks (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    title TEXT NOT NULL,
    description TEXT,
    completed BOOLEAN NOT NULL,
    created_by TEXT NOT NULL,
    version INTEGER NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL);

CREATE INDEX tasks_tenant ON tasks (tenant_id, id);
CREATE INDEX tasks_tenant_completed ON tasks (tenant_id, completed, id);
