-- The upload's priority (high, normal, low), from the job's QUEUED event;
-- '' until that event is applied, and for jobs older than this migration
-- (read as normal).
ALTER TABLE jobs ADD COLUMN priority TEXT NOT NULL DEFAULT '';
