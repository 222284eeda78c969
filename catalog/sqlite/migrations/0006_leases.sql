-- Leases elect one holder of a singleton task among catalog replicas (the
-- reconciler): a lease is held by holder until expires_at (timeLayout text,
-- which sorts as time), then anyone may take it (Store.AcquireLease).
CREATE TABLE IF NOT EXISTS leases (
	name       TEXT PRIMARY KEY,
	holder     TEXT NOT NULL,
	expires_at TEXT NOT NULL
);
