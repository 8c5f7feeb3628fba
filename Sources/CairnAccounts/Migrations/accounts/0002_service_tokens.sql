-- name: service tokens
-- Only the SHA-256 of the secret is stored; scopes are space-separated (RFC 6749 §3.3).
CREATE TABLE service_tokens (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    name TEXT NOT NULL,
    scopes TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    hint TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL);

CREATE INDEX service_tokens_tenant ON service_tokens (tenant_id, id);
