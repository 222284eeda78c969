-- Canceled is a terminal state like failed; attempt numbers the runs of a
-- job (retries); deleted_at hides a deleted asset's job for good;
-- thumbnails_json keeps AssetOutputs.thumbnails.
ALTER TABLE jobs ADD COLUMN canceled_at TEXT;
ALTER TABLE jobs ADD COLUMN attempt INTEGER NOT NULL DEFAULT 1;
ALTER TABLE jobs ADD COLUMN deleted_at TEXT;
ALTER TABLE assets ADD COLUMN thumbnails_json TEXT;
CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created_at, id);
CREATE INDEX IF NOT EXISTS jobs_source_key ON jobs (source_key);
