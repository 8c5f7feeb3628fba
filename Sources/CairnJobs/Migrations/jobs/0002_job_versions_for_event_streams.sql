-- name: job versions for event streams
ALTER TABLE jobs ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
