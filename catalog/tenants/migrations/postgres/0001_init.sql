-- Tenants own API keys, jobs, assets and webhooks. The default tenant owns
-- the keys of KILN_API_KEYS and everything recorded before tenants; it
-- cannot be deleted. deleted_at: the tenant is disabled (its keys revoked,
-- its data kept, reachable by no key).
CREATE TABLE IF NOT EXISTS tenants (
			id         TEXT PRIMARY KEY,
			name       TEXT NOT NULL,
			created_at TEXT NOT NULL,
			deleted_at TEXT
		);
INSERT INTO tenants (id, name, created_at) VALUES ('default', 'default', '2026-01-01T00:00:00.000000000Z') ON CONFLICT DO NOTHING;
-- API keys made through the tenant API: the SHA-256 digest of the secret
-- (hex), never the secret, which is shown once. revoked_at: the key no
-- longer authenticates (within the directory cache's bound).
CREATE TABLE IF NOT EXISTS api_keys (
			id         TEXT PRIMARY KEY,
			tenant_id  TEXT NOT NULL REFERENCES tenants (id),
			name       TEXT NOT NULL,
			scope      TEXT NOT NULL,
			digest     TEXT NOT NULL UNIQUE,
			created_at TEXT NOT NULL,
			revoked_at TEXT
		);
CREATE INDEX IF NOT EXISTS api_keys_tenant ON api_keys (tenant_id, created_at, id);
