-- name: notification templates
-- One document per tenant and type: per locale, per channel Mustache templates (Outbound renders them).
CREATE TABLE notification_templates (
    tenant_id TEXT NOT NULL,
    type TEXT NOT NULL,
    document TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, type));
