-- name: email and push providers, push devices
-- A tenant's provider settings (sendgrid, fcm, apns), secrets included: never returned.
CREATE TABLE notification_providers (
    tenant_id TEXT NOT NULL,
    provider TEXT NOT NULL,
    config TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, provider));

CREATE TABLE notification_devices (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    platform TEXT NOT NULL,
    token TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL);

-- A token identifies one app install: one account of the tenant has it at a time.
CREATE UNIQUE INDEX notification_devices_token ON notification_devices (tenant_id, platform, token);
CREATE INDEX notification_devices_user ON notification_devices (tenant_id, user_id);
ALTER TABLE notification_deliveries ADD COLUMN provider_message_id TEXT;
ALTER TABLE notification_deliveries ADD COLUMN dedupe_key TEXT;

CREATE UNIQUE INDEX notification_deliveries_dedupe
ON notification_deliveries (tenant_id, user_id, channel, COALESCE(endpoint_id, ''), dedupe_key) WHERE dedupe_key IS NOT NULL;
