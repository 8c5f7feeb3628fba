-- name: notifications inbox
CREATE TABLE notifications (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    type TEXT NOT NULL,
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    data TEXT NOT NULL,
    dedupe_key TEXT,
    created_at BIGINT NOT NULL,
    read_at BIGINT);

-- The inbox and the catch-up cursor: one user's notifications by seq.
CREATE UNIQUE INDEX notifications_user_seq ON notifications (tenant_id, user_id, seq);
CREATE INDEX notifications_unread ON notifications (tenant_id, user_id, seq) WHERE read_at IS NULL;
CREATE INDEX notifications_read_at ON notifications (read_at) WHERE read_at IS NOT NULL;
CREATE UNIQUE INDEX notifications_dedupe ON notifications (tenant_id, user_id, dedupe_key) WHERE dedupe_key IS NOT NULL;

-- Per-user sequence: incremented in the publishing transaction, so the row lock
-- orders concurrent publishers and seq order is commit order for each user.
CREATE TABLE notification_counters (
    tenant_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, user_id));
