-- playable_at is the event time of an attempt's first playable event: the
-- transcode stored the first segment of every rendition and the asset plays
-- (EVENT media playlists) before READY. A new attempt clears it. The asset's
-- row is written then too, with ready_at '' (not ready) until READY.
ALTER TABLE jobs ADD COLUMN playable_at TEXT;
