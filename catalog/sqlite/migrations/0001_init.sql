-- Jobs, assets and their renditions.
CREATE TABLE IF NOT EXISTS jobs (
			id             TEXT PRIMARY KEY,
			asset_id       TEXT NOT NULL UNIQUE,
			state          TEXT NOT NULL,
			progress       REAL NOT NULL DEFAULT 0,
			preset         TEXT NOT NULL DEFAULT '',
			source_bucket  TEXT NOT NULL DEFAULT '',
			source_key     TEXT NOT NULL DEFAULT '',
			source_etag    TEXT NOT NULL DEFAULT '',
			source_size    INTEGER NOT NULL DEFAULT 0,
			error_code     TEXT NOT NULL DEFAULT '',
			error_message  TEXT NOT NULL DEFAULT '',
			media_json     TEXT,
			plan_json      TEXT,
			created_at     TEXT NOT NULL,
			updated_at     TEXT NOT NULL,
			queued_at      TEXT,
			probing_at     TEXT,
			transcoding_at TEXT,
			packaging_at   TEXT,
			ready_at       TEXT,
			failed_at      TEXT
		);
CREATE INDEX IF NOT EXISTS jobs_state_updated ON jobs (state, updated_at);
CREATE TABLE IF NOT EXISTS assets (
			id               TEXT PRIMARY KEY,
			job_id           TEXT NOT NULL UNIQUE REFERENCES jobs (id),
			outputs_bucket   TEXT NOT NULL,
			outputs_prefix   TEXT NOT NULL,
			master_key       TEXT NOT NULL DEFAULT '',
			mp4_key          TEXT NOT NULL DEFAULT '',
			poster_key       TEXT NOT NULL DEFAULT '',
			duration_seconds REAL NOT NULL DEFAULT 0,
			ready_at         TEXT NOT NULL
		);
CREATE TABLE IF NOT EXISTS renditions (
			asset_id          TEXT NOT NULL REFERENCES assets (id) ON DELETE CASCADE,
			name              TEXT NOT NULL,
			width             INTEGER NOT NULL,
			height            INTEGER NOT NULL,
			frame_rate        REAL NOT NULL,
			bandwidth         INTEGER NOT NULL,
			average_bandwidth INTEGER NOT NULL,
			codecs            TEXT NOT NULL,
			playlist_key      TEXT NOT NULL,
			PRIMARY KEY (asset_id, name)
		);
