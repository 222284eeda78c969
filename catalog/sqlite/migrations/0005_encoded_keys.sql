-- A rendition carries the key of its encoded object (Rendition.encoded_key,
-- FailedRendition.encoded_key, filled by the packager), so a rendition retry
-- packages what was recorded instead of a key the catalog derives.
--
-- Rows written before this migration are backfilled with the layout that was
-- in force when they were encoded (layout.EncodedKey at the time):
--   assets/<asset_id>/mp4/<name>.mp4  for a video rendition,
--   assets/<asset_id>/mp4/audio.m4a   for the rendition named audio (an
--                                     audio-only asset).
ALTER TABLE renditions ADD COLUMN encoded_key TEXT NOT NULL DEFAULT '';
ALTER TABLE rendition_failures ADD COLUMN encoded_key TEXT NOT NULL DEFAULT '';
UPDATE renditions SET encoded_key = 'assets/' || asset_id || '/mp4/' ||
	CASE WHEN name = 'audio' THEN 'audio.m4a' ELSE name || '.mp4' END
	WHERE encoded_key = '';
UPDATE rendition_failures SET encoded_key = 'assets/' || asset_id || '/mp4/' ||
	CASE WHEN name = 'audio' THEN 'audio.m4a' ELSE name || '.mp4' END
	WHERE encoded_key = '';
