-- Every endpoint, and every event (with its deliveries), belongs to a
-- tenant: a registered endpoint to the tenant of the key that registered
-- it, a per-upload one and an event to their job's. An endpoint receives
-- its own tenant's events only. What was recorded before tenants is the
-- default tenant's.
ALTER TABLE webhook_endpoints ADD COLUMN tenant_id TEXT NOT NULL DEFAULT '';
UPDATE webhook_endpoints SET tenant_id = 'default';
ALTER TABLE webhook_events ADD COLUMN tenant_id TEXT NOT NULL DEFAULT '';
UPDATE webhook_events SET tenant_id = 'default';
CREATE INDEX IF NOT EXISTS webhook_endpoints_tenant ON webhook_endpoints (tenant_id, created_at, id);
