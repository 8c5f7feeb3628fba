-- name: tasks belong to a live tenant (foreign key); orphaned tasks dropped
-- A task row names its tenant by a foreign key, so a POST /tasks racing the tenant's deletion
-- either fails or is deleted with the tenant: on PostgreSQL the key check takes FOR KEY SHARE
-- on the tenant row, which the deletion locks FOR UPDATE first; on SQLite the single writer
-- runs them one after the other and the check sees the tenant gone. SQLite cannot add a
-- constraint to a table, so the table is rebuilt (the same statements on both engines); rows
-- of tenants deleted before this migration are not copied.
CREATE TABLE tasks_v2 (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    title TEXT NOT NULL,
    description TEXT,
    completed BOOLEAN NOT NULL,
    created_by TEXT NOT NULL,
    version INTEGER NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL);

INSERT INTO tasks_v2 (id, tenant_id, title, description, completed, created_by, version, created_at, updated_at)
SELECT id, tenant_id, title, description, completed, created_by, version, created_at, updated_at FROM tasks
WHERE EXISTS (SELECT 1 FROM tenants WHERE tenants.id = tasks.tenant_id);

DROP TABLE tasks;

ALTER TABLE tasks_v2 RENAME TO tasks;

-- The key check of a tenant's deletion finds its tasks through this index too.
CREATE INDEX tasks_tenant ON tasks (tenant_id, id);
CREATE INDEX tasks_tenant_completed ON tasks (tenant_id, completed, id);
