-- The catalog's schema on PostgreSQL: what SQLite's migrations 0001 to
-- 0006 built, in one version. Times are fixed-width UTC text
-- (sqlstore.TimeLayout), as on SQLite: they sort as time and keep
-- nanoseconds.
CREATE TABLE IF NOT EXISTS jobs (
	id              TEXT PRIMARY KEY,
	asset_id        TEXT NOT NULL UNIQUE,
	state           TEXT NOT NULL,
	progress        DOUBLE PRECISION NOT NULL DEFAULT 0,
	preset          TEXT NOT NULL DEFAULT '',
	source_bucket   TEXT NOT NULL DEFAULT '',
	source_key      TEXT NOT NULL DEFAULT '',
	source_etag     TEXT NOT NULL DEFAULT '',
	source_size     BIGINT NOT NULL DEFAULT 0,
	error_code      TEXT NOT NULL DEFAULT '',
	error_message   TEXT NOT NULL DEFAULT '',
	media_json      TEXT,
	plan_json       TEXT,
	created_at      TEXT NOT NULL,
	updated_at      TEXT NOT NULL,
	queued_at       TEXT,
	probing_at      TEXT,
	transcoding_at  TEXT,
	packaging_at    TEXT,
	ready_at        TEXT,
	failed_at       TEXT,
	-- '' means "not known yet": the row was created by an event other
	-- than QUEUED, which alone carries the policy.
	playback_policy TEXT NOT NULL DEFAULT '',
	canceled_at     TEXT,
	attempt         INTEGER NOT NULL DEFAULT 1,
	deleted_at      TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state_updated ON jobs (state, updated_at);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created_at, id);
CREATE INDEX IF NOT EXISTS jobs_source_key ON jobs (source_key);
CREATE TABLE IF NOT EXISTS assets (
	id               TEXT PRIMARY KEY,
	job_id           TEXT NOT NULL UNIQUE REFERENCES jobs (id),
	outputs_bucket   TEXT NOT NULL,
	outputs_prefix   TEXT NOT NULL,
	master_key       TEXT NOT NULL DEFAULT '',
	mp4_key          TEXT NOT NULL DEFAULT '',
	poster_key       TEXT NOT NULL DEFAULT '',
	duration_seconds DOUBLE PRECISION NOT NULL DEFAULT 0,
	ready_at         TEXT NOT NULL,
	thumbnails_json  TEXT
);
CREATE TABLE IF NOT EXISTS renditions (
	asset_id          TEXT NOT NULL REFERENCES assets (id) ON DELETE CASCADE,
	name              TEXT NOT NULL,
	width             INTEGER NOT NULL,
	height            INTEGER NOT NULL,
	frame_rate        DOUBLE PRECISION NOT NULL,
	bandwidth         BIGINT NOT NULL,
	average_bandwidth BIGINT NOT NULL,
	codecs            TEXT NOT NULL,
	playlist_key      TEXT NOT NULL,
	encoded_key       TEXT NOT NULL DEFAULT '',
	PRIMARY KEY (asset_id, name)
);
-- Renditions whose packaging failed for good while the others succeeded;
-- retries counts the rendition retries requested. A name is in renditions
-- or here, never both.
CREATE TABLE IF NOT EXISTS rendition_failures (
	asset_id    TEXT NOT NULL REFERENCES assets (id) ON DELETE CASCADE,
	name        TEXT NOT NULL,
	code        TEXT NOT NULL,
	message     TEXT NOT NULL DEFAULT '',
	retries     INTEGER NOT NULL DEFAULT 0,
	encoded_key TEXT NOT NULL DEFAULT '',
	PRIMARY KEY (asset_id, name)
);
-- Leases elect one holder of a singleton task among catalog replicas (the
-- reconciler), see Store.AcquireLease.
CREATE TABLE IF NOT EXISTS leases (
	name       TEXT PRIMARY KEY,
	holder     TEXT NOT NULL,
	expires_at TEXT NOT NULL
);
