-- tenant_id is the tenant that owns the job and its asset (the QUEUED
-- event's tenant_id, filled once like the playback policy; '' until the
-- QUEUED is recorded: a job of no tenant, which no key sees). Every job
-- recorded before tenants belongs to the default tenant. SQLite's 0011.
ALTER TABLE jobs ADD COLUMN tenant_id TEXT NOT NULL DEFAULT '';
UPDATE jobs SET tenant_id = 'default';
CREATE INDEX IF NOT EXISTS jobs_tenant_created ON jobs (tenant_id, created_at, id);
