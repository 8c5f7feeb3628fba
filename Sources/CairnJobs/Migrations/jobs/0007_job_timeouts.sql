-- name: job timeouts
-- The most milliseconds one attempt of the job may run, when it asked for less than its kind's
-- limit on the node (CAIRN_JOBS_TIMEOUT); NULL for that limit alone.
ALTER TABLE jobs ADD COLUMN timeout_ms BIGINT;
