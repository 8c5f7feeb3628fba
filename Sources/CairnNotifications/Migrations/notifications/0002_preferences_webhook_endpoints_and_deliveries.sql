-- name: preferences, webhook endpoints and deliveries
CREATE TABLE notification_preferences (
    tenant_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    prefs TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, user_id));

CREATE TABLE webhook_endpoints (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    url TEXT NOT NULL,
    types TEXT NOT NULL,
    secret TEXT NOT NULL,
    enabled BOOLEAN NOT NULL,
    dead_letters INTEGER NOT NULL,
    created_at BIGINT NOT NULL,
    disabled_at BIGINT);

CREATE INDEX webhook_endpoints_tenant ON webhook_endpoints (tenant_id, id);

CREATE TABLE notification_deliveries (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    notification_id TEXT NOT NULL,
    channel TEXT NOT NULL,
    endpoint_id TEXT,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    last_error TEXT,
    payload TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL);

CREATE INDEX notification_deliveries_notification ON notification_deliveries (tenant_id, notification_id, id);
