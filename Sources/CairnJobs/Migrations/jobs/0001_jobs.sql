-- name: jobs
CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    queue TEXT NOT NULL,
    kind TEXT NOT NULL,
    args TEXT NOT NULL,
    priority INTEGER NOT NULL,
    state TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL,
    run_at BIGINT NOT NULL,
    progress TEXT,
    checkpoint TEXT,
    errors TEXT NOT NULL,
    unique_key TEXT,
    created_by TEXT,
    created_at BIGINT NOT NULL,
    attempted_at BIGINT,
    finished_at BIGINT,
    lease_owner TEXT,
    lease_expires_at BIGINT,
    cancel_requested_at BIGINT);

-- Claiming: the waiting jobs in priority order.
CREATE INDEX jobs_claim ON jobs (priority, run_at, id) WHERE state IN ('scheduled', 'available', 'retryable');

-- Rescue of lapsed leases, and the cancel watcher of each node.
CREATE INDEX jobs_running ON jobs (lease_owner, lease_expires_at) WHERE state = 'running';
CREATE INDEX jobs_tenant ON jobs (tenant_id, id);
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;

-- Unique jobs: one unfinished job per tenant, kind and key.
CREATE UNIQUE INDEX jobs_unique ON jobs (tenant_id, kind, unique_key)
WHERE unique_key IS NOT NULL AND state IN ('scheduled', 'available', 'running', 'retryable');
