-- name: file origin
-- Files existing before this migration count as uploads: outputs were not told apart.
ALTER TABLE files ADD COLUMN origin TEXT NOT NULL DEFAULT 'upload';
ALTER TABLE files ADD COLUMN origin_pipeline_id TEXT;
ALTER TABLE files ADD COLUMN origin_job_id TEXT;
