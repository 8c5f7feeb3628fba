-- name: webhook secret rotation and endpoint versions
-- The secret before the last rotation (sealed like `secret`), still signing until it expires.
ALTER TABLE webhook_endpoints ADD COLUMN previous_secret TEXT;
ALTER TABLE webhook_endpoints ADD COLUMN previous_secret_expires_at BIGINT;

-- Grows with every change: the endpoint's `ETag`.
ALTER TABLE webhook_endpoints ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
