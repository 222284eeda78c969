-- '' means "not known yet": the row was created by an event other than
-- QUEUED, which alone carries the policy. Rows older than this migration
-- were all public.
ALTER TABLE jobs ADD COLUMN playback_policy TEXT NOT NULL DEFAULT 'public';
