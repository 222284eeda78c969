-- A tenant's quotas (internal/quota.Limits); 0 is no limit.
ALTER TABLE tenants ADD COLUMN quota_concurrent_jobs BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tenants ADD COLUMN quota_stored_bytes BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tenants ADD COLUMN quota_encoded_minutes BIGINT NOT NULL DEFAULT 0;
