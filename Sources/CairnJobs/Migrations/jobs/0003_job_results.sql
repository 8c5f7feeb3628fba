-- name: job results
ALTER TABLE jobs ADD COLUMN result TEXT;
