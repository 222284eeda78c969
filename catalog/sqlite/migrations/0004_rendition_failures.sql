-- Renditions whose packaging failed for good while the others succeeded
-- (AssetOutputs.failed_renditions); retries counts the rendition retries
-- requested. A name is in renditions or here, never both.
CREATE TABLE IF NOT EXISTS rendition_failures (
			asset_id TEXT NOT NULL REFERENCES assets (id) ON DELETE CASCADE,
			name     TEXT NOT NULL,
			code     TEXT NOT NULL,
			message  TEXT NOT NULL DEFAULT '',
			retries  INTEGER NOT NULL DEFAULT 0,
			PRIMARY KEY (asset_id, name)
		);
