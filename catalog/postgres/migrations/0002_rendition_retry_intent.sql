-- A rendition retry is recorded before its packaging is enqueued (no network
-- call inside a transaction): retry_pending_at is set with the retry's count
-- and cleared once the task is enqueued. One still set after a while is a
-- retry whose enqueue never happened (a crash in between): the reconciler
-- enqueues it (Store.PendingRenditionRetries). SQLite's 0007; times are text
-- here too (sqlstore.TimeLayout).
ALTER TABLE rendition_failures ADD COLUMN retry_pending_at TEXT;
