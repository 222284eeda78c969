-- chunks_done and chunks_total are a chunked transcode's progress (its
-- TRANSCODING events' chunks_done and chunks_total): chunks encoded and
-- stored so far, out of how many; 0 and 0 for a transcode that is not
-- chunked. They only grow within an attempt (a late event never lowers
-- them); a new attempt sets them from its first event. SQLite's 0009.
ALTER TABLE jobs ADD COLUMN chunks_done INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN chunks_total INTEGER NOT NULL DEFAULT 0;
