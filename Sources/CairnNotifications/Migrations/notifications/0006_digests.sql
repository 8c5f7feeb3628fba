-- name: digests
-- One row per digest window (user, type, channel, device, window end): `open`
-- while notifications join it, `pending` once its job closed it, then `sent` or
-- `failed`. The unique key makes every node's publishers share one window.
CREATE TABLE notification_digests (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    type TEXT NOT NULL,
    channel TEXT NOT NULL,
    endpoint_id TEXT,
    period TEXT NOT NULL,
    window_key TEXT NOT NULL,
    window_end BIGINT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    last_error TEXT,
    provider_message_id TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL);

CREATE UNIQUE INDEX notification_digests_window ON notification_digests (tenant_id, window_key);
CREATE INDEX notification_digests_user ON notification_digests (tenant_id, user_id);

-- The digest that carries a delivery (state `batched` until it is sent).
ALTER TABLE notification_deliveries ADD COLUMN digest_id TEXT;
CREATE INDEX notification_deliveries_digest ON notification_deliveries (tenant_id, digest_id) WHERE digest_id IS NOT NULL;
