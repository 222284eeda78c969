-- job.created is recorded once per job, whichever of its events comes first
-- (OnApply looks for it by job and type).
CREATE INDEX IF NOT EXISTS webhook_events_job ON webhook_events (job_id, type);
