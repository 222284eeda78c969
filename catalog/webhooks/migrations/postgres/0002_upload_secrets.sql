-- Per-upload endpoints created from now on are signed with their own secret,
-- derived from the default one and the job id (UploadSecret) and handed to
-- the uploader once, in the upload answer; those recorded before keep the
-- default secret their receivers were given. An INTEGER (0/1) as in SQLite,
-- so the outbox's SQL is the same on both.
ALTER TABLE webhook_endpoints ADD COLUMN derived_secret INTEGER NOT NULL DEFAULT 0;
