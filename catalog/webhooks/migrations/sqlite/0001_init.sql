-- Endpoints: registered by API (job_id NULL) or implicit per-upload
-- ones (job_id set, secret '' = the server's default secret).
CREATE TABLE IF NOT EXISTS webhook_endpoints (
			id                     TEXT PRIMARY KEY,
			url                    TEXT NOT NULL,
			secret                 TEXT NOT NULL DEFAULT '',
			previous_secret        TEXT NOT NULL DEFAULT '',
			previous_expires_at    TEXT,
			event_types            TEXT NOT NULL,
			job_id                 TEXT,
			disabled_at            TEXT,
			disabled_reason        TEXT NOT NULL DEFAULT '',
			created_at             TEXT NOT NULL,
			updated_at             TEXT NOT NULL
		);
CREATE INDEX IF NOT EXISTS webhook_endpoints_job ON webhook_endpoints (job_id);
-- Events: the outbox's facts, with the exact JSON body every
-- delivery (and replay) sends.
CREATE TABLE IF NOT EXISTS webhook_events (
			id         TEXT PRIMARY KEY,
			type       TEXT NOT NULL,
			job_id     TEXT NOT NULL DEFAULT '',
			asset_id   TEXT NOT NULL DEFAULT '',
			body       TEXT NOT NULL,
			created_at TEXT NOT NULL
		);
-- Deliveries: one per (event, endpoint) — the outbox rows the
-- dispatcher turns into asynq tasks, one task per attempt.
-- status: pending (due at next_attempt_at), enqueued (task_id in
-- flight), succeeded, failed.
CREATE TABLE IF NOT EXISTS webhook_deliveries (
			id              TEXT PRIMARY KEY,
			event_id        TEXT NOT NULL REFERENCES webhook_events (id),
			endpoint_id     TEXT NOT NULL REFERENCES webhook_endpoints (id),
			status          TEXT NOT NULL,
			attempts        INTEGER NOT NULL DEFAULT 0,
			next_attempt_at TEXT NOT NULL,
			task_id         TEXT NOT NULL DEFAULT '',
			last_error      TEXT NOT NULL DEFAULT '',
			created_at      TEXT NOT NULL,
			updated_at      TEXT NOT NULL
		);
CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);
CREATE INDEX IF NOT EXISTS webhook_deliveries_event ON webhook_deliveries (event_id);
CREATE INDEX IF NOT EXISTS webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id);
-- Attempts: the delivery log, one row per HTTP attempt.
CREATE TABLE IF NOT EXISTS webhook_attempts (
			id          INTEGER PRIMARY KEY AUTOINCREMENT,
			delivery_id TEXT NOT NULL,
			event_id    TEXT NOT NULL,
			event_type  TEXT NOT NULL,
			endpoint_id TEXT NOT NULL,
			attempt     INTEGER NOT NULL,
			status_code INTEGER NOT NULL DEFAULT 0,
			latency_ms  INTEGER NOT NULL DEFAULT 0,
			error       TEXT NOT NULL DEFAULT '',
			at          TEXT NOT NULL
		);
CREATE INDEX IF NOT EXISTS webhook_attempts_endpoint ON webhook_attempts (endpoint_id, id);
