-- name: job status versions
-- The version of each job whose change a status consumer (the job_status notifications) has
-- handled. A row inserts at version 1 with nothing to say yet, hence the default of 1; every
-- change moves `version` past it, and the consumer moves it up again once reported. Jobs of
-- before this migration count as reported (their notifications, sent or lost, are history).
ALTER TABLE jobs ADD COLUMN status_version INTEGER NOT NULL DEFAULT 1;
UPDATE jobs SET status_version = version WHERE created_by IS NOT NULL;

-- The changes not yet reported, read in pages by id: small, as a row leaves it once reported.
CREATE INDEX jobs_status_unreported ON jobs (id) WHERE created_by IS NOT NULL AND status_version < version;
