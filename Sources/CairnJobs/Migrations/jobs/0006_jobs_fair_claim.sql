-- name: jobs claimed fairly across tenants
-- A worker with free slots first lists the tenants that have waiting jobs (a skip scan over
-- tenant_id: one index probe per tenant, however long each tenant's queue is), with each one's
-- most urgent due job, then claims per tenant in that tenant's own order. Both read this index.
CREATE INDEX jobs_tenant_waiting ON jobs (tenant_id, priority, run_at, id) WHERE state IN ('scheduled', 'available', 'retryable');
