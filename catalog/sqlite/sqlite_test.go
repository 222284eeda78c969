package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/kilnvideo/kiln/catalog"
	"github.com/kilnvideo/kiln/catalog/eventtest"
	"github.com/kilnvideo/kiln/catalog/sqlstore"
	"github.com/kilnvideo/kiln/catalog/storetest"
	"github.com/kilnvideo/kiln/internal/policy"
	"github.com/kilnvideo/kiln/internal/sqlmigrate"
	"github.com/kilnvideo/kiln/internal/tenant"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

func openStore(t *testing.T, path string) *Store {
	t.Helper()
	s, err := Open(t.Context(), path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func newStore(t *testing.T) *Store {
	t.Helper()
	return openStore(t, filepath.Join(t.TempDir(), "catalog.db"))
}

func TestContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) catalog.Store { return newStore(t) })
}

// migrationCount is the number of embedded migrations.
func migrationCount(t *testing.T) int {
	t.Helper()
	ms, err := sqlmigrate.Load(Migrations())
	if err != nil {
		t.Fatal(err)
	}
	return len(ms)
}

const (
	queued      = kilnv1.JobState_JOB_STATE_QUEUED
	probing     = kilnv1.JobState_JOB_STATE_PROBING
	transcoding = kilnv1.JobState_JOB_STATE_TRANSCODING
	packaging   = kilnv1.JobState_JOB_STATE_PACKAGING
	ready       = kilnv1.JobState_JOB_STATE_READY
	failed      = kilnv1.JobState_JOB_STATE_FAILED
)

func TestStoreSurvivesRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "catalog.db")
	jobID, assetID := eventtest.Job("a")
	failedJob, _ := eventtest.Job("b")

	s, err := Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range []kilnv1.JobState{queued, probing, transcoding, packaging, ready} {
		if _, err := s.Apply(t.Context(), eventtest.Event(jobID, st, 0.5)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Apply(t.Context(), eventtest.Event(failedJob, failed, 0)); err != nil {
		t.Fatal(err)
	}
	wantJob, err := s.Job(t.Context(), jobID)
	if err != nil {
		t.Fatal(err)
	}
	wantAsset, err := s.Asset(t.Context(), assetID)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openStore(t, path) // migrations must be idempotent
	var mode string
	var fk, version int
	if err := s.db.QueryRowContext(t.Context(), `SELECT (SELECT journal_mode FROM pragma_journal_mode),
			(SELECT foreign_keys FROM pragma_foreign_keys), (SELECT MAX(version) FROM schema_version)`).
		Scan(&mode, &fk, &version); err != nil {
		t.Fatal(err)
	}
	if mode != "wal" || fk != 1 || version != migrationCount(t) || version != 11 {
		t.Errorf("journal_mode=%s foreign_keys=%d schema_version=%d", mode, fk, version)
	}
	gotJob, err := s.Job(t.Context(), jobID)
	if err != nil {
		t.Fatal(err)
	}
	if !storetest.JobsEqual(gotJob, wantJob) {
		t.Errorf("job after restart = %+v, want %+v", gotJob, wantJob)
	}
	gotAsset, err := s.Asset(t.Context(), assetID)
	if err != nil {
		t.Fatal(err)
	}
	if len(gotAsset.Renditions) != 2 || gotAsset.Renditions[0] != wantAsset.Renditions[0] ||
		gotAsset.MP4Key != wantAsset.MP4Key || !gotAsset.ReadyAt.Equal(wantAsset.ReadyAt) {
		t.Errorf("asset after restart = %+v, want %+v", gotAsset, wantAsset)
	}
	if j, err := s.Job(t.Context(), failedJob); err != nil || j.State != catalog.StateFailed || j.ErrorCode != "invalid_media" {
		t.Errorf("failed job after restart = %+v, %v", j, err)
	}
	if changed, err := s.Apply(t.Context(), eventtest.Event(jobID, ready, 0)); err != nil || changed {
		t.Errorf("redelivered READY after restart: changed=%v err=%v", changed, err)
	}
}

// firstMigrations is the embedded migrations up to version n.
func firstMigrations(t *testing.T, n int) fs.FS {
	t.Helper()
	ms, err := sqlmigrate.Load(Migrations())
	if err != nil {
		t.Fatal(err)
	}
	out := fstest.MapFS{}
	for _, m := range ms[:n] {
		out[m.Name] = &fstest.MapFile{Data: []byte(m.SQL)}
	}
	return out
}

// TestMigratePlaybackPolicy: jobs recorded before the playback_policy
// column existed were public.
func TestMigratePlaybackPolicy(t *testing.T) {
	path := filepath.Join(t.TempDir(), "catalog.db")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if err := sqlmigrate.Apply(t.Context(), db, VersionTable, firstMigrations(t, 1)); err != nil {
		t.Fatal(err)
	}
	jobID, assetID := eventtest.Job("old")
	if _, err := db.ExecContext(t.Context(), `INSERT INTO jobs (id, asset_id, state, created_at, updated_at)
		VALUES (?, ?, 'queued', ?, ?)`, jobID, assetID, fmtTime(eventtest.T0), fmtTime(eventtest.T0)); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	s := openStore(t, path)
	if j, err := s.Job(t.Context(), jobID); err != nil || j.PlaybackPolicy != policy.Public {
		t.Fatalf("old job after migration: %+v, %v", j, err)
	}
	if a, err := s.Asset(t.Context(), assetID); err != nil || a.PlaybackPolicy != policy.Public {
		t.Fatalf("old asset after migration: %+v, %v", a, err)
	}
}

// TestMigrateChunks: a job recorded before the chunk columns existed is not
// chunked, and records the chunks of its later events.
func TestMigrateChunks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "catalog.db")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if err := sqlmigrate.Apply(t.Context(), db, VersionTable, firstMigrations(t, 8)); err != nil {
		t.Fatal(err)
	}
	jobID, assetID := eventtest.Job("before-chunks")
	if _, err := db.ExecContext(t.Context(), `INSERT INTO jobs (id, asset_id, state, progress, created_at, updated_at, attempt)
		VALUES (?, ?, 'transcoding', 0.25, ?, ?, 1)`, jobID, assetID, fmtTime(eventtest.T0), fmtTime(eventtest.T0)); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	s := openStore(t, path)
	if j, err := s.Job(t.Context(), jobID); err != nil || j.Chunks != (catalog.Chunks{}) || j.Progress != 0.25 {
		t.Fatalf("old job after migration: %+v, %v", j, err)
	}
	ev := eventtest.Event(jobID, transcoding, 0.5)
	ev.ChunksDone, ev.ChunksTotal = 3, 6
	if changed, err := s.Apply(t.Context(), ev); err != nil || !changed {
		t.Fatalf("chunked event: changed %v, %v", changed, err)
	}
	if j, err := s.Job(t.Context(), jobID); err != nil || j.Chunks != (catalog.Chunks{Done: 3, Total: 6}) {
		t.Fatalf("old job after a chunked event: %+v, %v", j, err)
	}
}

// oldSchema is the schema the binary before versioned .sql files created,
// statement by statement, at schema_version 4.
var oldSchema = []string{
	`CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY)`,
	`CREATE TABLE IF NOT EXISTS jobs (
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
		)`,
	`CREATE INDEX IF NOT EXISTS jobs_state_updated ON jobs (state, updated_at)`,
	`CREATE TABLE IF NOT EXISTS assets (
			id               TEXT PRIMARY KEY,
			job_id           TEXT NOT NULL UNIQUE REFERENCES jobs (id),
			outputs_bucket   TEXT NOT NULL,
			outputs_prefix   TEXT NOT NULL,
			master_key       TEXT NOT NULL DEFAULT '',
			mp4_key          TEXT NOT NULL DEFAULT '',
			poster_key       TEXT NOT NULL DEFAULT '',
			duration_seconds REAL NOT NULL DEFAULT 0,
			ready_at         TEXT NOT NULL
		)`,
	`CREATE TABLE IF NOT EXISTS renditions (
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
		)`,
	`INSERT INTO schema_version (version) VALUES (1)`,
	`ALTER TABLE jobs ADD COLUMN playback_policy TEXT NOT NULL DEFAULT 'public'`,
	`INSERT INTO schema_version (version) VALUES (2)`,
	`ALTER TABLE jobs ADD COLUMN canceled_at TEXT`,
	`ALTER TABLE jobs ADD COLUMN attempt INTEGER NOT NULL DEFAULT 1`,
	`ALTER TABLE jobs ADD COLUMN deleted_at TEXT`,
	`ALTER TABLE assets ADD COLUMN thumbnails_json TEXT`,
	`CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created_at, id)`,
	`CREATE INDEX IF NOT EXISTS jobs_source_key ON jobs (source_key)`,
	`INSERT INTO schema_version (version) VALUES (3)`,
	`CREATE TABLE IF NOT EXISTS rendition_failures (
			asset_id TEXT NOT NULL REFERENCES assets (id) ON DELETE CASCADE,
			name     TEXT NOT NULL,
			code     TEXT NOT NULL,
			message  TEXT NOT NULL DEFAULT '',
			retries  INTEGER NOT NULL DEFAULT 0,
			PRIMARY KEY (asset_id, name)
		)`,
	`INSERT INTO schema_version (version) VALUES (4)`,
}

// TestMigrateFromOldBinary: a database the previous binary created (schema
// version 4, no encoded keys) opens, reads back, and gets its encoded keys
// backfilled with the layout of the time; a rendition retry then carries it.
func TestMigrateFromOldBinary(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "catalog.db")
	db, err := sql.Open("sqlite", path+"?_foreign_keys=1")
	if err != nil {
		t.Fatal(err)
	}
	for _, stmt := range oldSchema {
		if _, err := db.ExecContext(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	jobID, assetID := eventtest.Job("old-ready")
	audioJob, audioAsset := eventtest.Job("old-audio")
	at := fmtTime(eventtest.T0)
	for _, stmt := range []struct {
		sql  string
		args []any
	}{
		{`INSERT INTO jobs (id, asset_id, state, progress, preset, source_bucket, source_key, created_at, updated_at,
			queued_at, ready_at, playback_policy, attempt) VALUES (?, ?, 'ready', 1, 'default', 'sources', 'in/a.mov', ?, ?, ?, ?, 'signed', 2)`,
			[]any{jobID, assetID, at, at, at, at}},
		{`INSERT INTO assets (id, job_id, outputs_bucket, outputs_prefix, master_key, mp4_key, poster_key, duration_seconds, ready_at)
			VALUES (?, ?, 'outputs', ?, 'old/master.m3u8', 'm.mp4', 'p.jpg', 12.5, ?)`, []any{assetID, jobID, "assets/" + assetID + "/", at}},
		{`INSERT INTO renditions (asset_id, name, width, height, frame_rate, bandwidth, average_bandwidth, codecs, playlist_key)
			VALUES (?, '360p', 640, 360, 30, 950000, 900000, 'avc1.64001e', 'hls/360p/index.m3u8')`, []any{assetID}},
		{`INSERT INTO rendition_failures (asset_id, name, code, message, retries) VALUES (?, '720p', 'package_failed', 'boom', 1)`, []any{assetID}},
		{`INSERT INTO jobs (id, asset_id, state, progress, created_at, updated_at, ready_at)
			VALUES (?, ?, 'ready', 1, ?, ?, ?)`, []any{audioJob, audioAsset, at, at, at}},
		{`INSERT INTO assets (id, job_id, outputs_bucket, outputs_prefix, ready_at) VALUES (?, ?, 'outputs', '', ?)`, []any{audioAsset, audioJob, at}},
		{`INSERT INTO rendition_failures (asset_id, name, code) VALUES (?, 'audio', 'package_failed')`, []any{audioAsset}},
	} {
		if _, err := db.ExecContext(ctx, stmt.sql, stmt.args...); err != nil {
			t.Fatalf("%s: %v", stmt.sql, err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	s := openStore(t, path)
	if v, err := sqlmigrate.Version(ctx, s.db, VersionTable); err != nil || v != migrationCount(t) {
		t.Fatalf("version after migration = %d, %v", v, err)
	}
	j, err := s.Job(ctx, jobID)
	if err != nil {
		t.Fatal(err)
	}
	if j.State != catalog.StateReady || j.Attempt != 2 || j.PlaybackPolicy != policy.Signed || j.Source.Key != "in/a.mov" ||
		!j.Timestamps[catalog.StateReady].Equal(eventtest.T0) || len(j.FailedRenditions) != 1 || j.TenantID != tenant.Default {
		t.Errorf("old job = %+v", j)
	}
	a, err := s.Asset(ctx, assetID)
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Renditions) != 1 || a.Renditions[0].EncodedKey != "assets/"+assetID+"/mp4/360p.mp4" {
		t.Errorf("renditions = %+v", a.Renditions)
	}
	if len(a.Failed) != 1 || a.Failed[0].EncodedKey != "assets/"+assetID+"/mp4/720p.mp4" || a.Failed[0].Retries != 1 {
		t.Errorf("failures = %+v", a.Failed)
	}
	rr, err := s.RetryRendition(ctx, assetID, "720p")
	if err != nil {
		t.Fatal(err)
	}
	if rr.EncodedKey != "assets/"+assetID+"/mp4/720p.mp4" || rr.Retry != 2 {
		t.Errorf("retry = %+v", rr)
	}
	if a, err := s.Asset(ctx, audioAsset); err != nil || len(a.Failed) != 1 || a.Failed[0].EncodedKey != "assets/"+audioAsset+"/mp4/audio.m4a" {
		t.Errorf("audio asset = %+v, %v", a, err)
	}
	// master_key is kept but no longer written.
	mustApply := func(ev *kilnv1.JobEvent) {
		t.Helper()
		if _, err := s.Apply(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	fresh, freshAsset := eventtest.Job("new-ready")
	mustApply(eventtest.Event(fresh, ready, 0))
	var master string
	if err := s.db.QueryRowContext(ctx, `SELECT master_key FROM assets WHERE id = ?`, freshAsset).Scan(&master); err != nil || master != "" {
		t.Errorf("master_key = %q, %v", master, err)
	}
}

func TestNewerDatabaseRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "catalog.db")
	s := openStore(t, path)
	if _, err := s.db.ExecContext(t.Context(), `INSERT INTO schema_version (version) VALUES (99)`); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(t.Context(), path); err == nil || !strings.Contains(err.Error(), "newer than this binary") {
		t.Fatalf("a database newer than the binary: %v", err)
	}
}

func TestInvalidPath(t *testing.T) {
	for _, p := range []string{"", "x.db?mode=ro", "x.db#y"} {
		if _, err := Open(t.Context(), p); err == nil {
			t.Errorf("Open(%q) succeeded", p)
		}
	}
}

func count(t *testing.T, s *Store, table, assetID string) int {
	t.Helper()
	var n int
	if err := s.db.QueryRowContext(t.Context(), `SELECT COUNT(*) FROM `+table+` WHERE asset_id = ?`, assetID).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestPartialReadyRows: the rows behind storetest's PartialReadyIgnored.
func TestPartialReadyRows(t *testing.T) {
	s := newStore(t)
	ctx := t.Context()
	apply := func(ev *kilnv1.JobEvent, attempt int32) {
		t.Helper()
		ev.Attempt = attempt
		if _, err := s.Apply(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	id, asset := eventtest.Job("partial-not-ready")
	apply(eventtest.Event(id, queued, 0), 1)
	apply(eventtest.Event(id, packaging, 0), 1)
	apply(eventtest.PartialReady(id, "1"), 1)
	if n := count(t, s, "renditions", asset); n != 0 {
		t.Errorf("%d rendition rows", n)
	}

	id, asset = eventtest.Job("partial-attempts")
	apply(eventtest.Event(id, queued, 0), 1)
	apply(eventtest.ReadyWithFailure(id), 1)
	if n := count(t, s, "rendition_failures", asset); n != 1 {
		t.Fatalf("%d failure rows", n)
	}
	apply(eventtest.Event(id, queued, 0), 2)
	if n := count(t, s, "rendition_failures", asset); n != 0 {
		t.Errorf("%d failure rows after a new attempt", n)
	}
	if n := count(t, s, "renditions", asset); n != 0 {
		t.Errorf("%d rendition rows after a new attempt", n)
	}
	apply(eventtest.ReadyWithFailure(id), 2)
	apply(eventtest.PartialReady(id, "1"), 2)
	if n := count(t, s, "rendition_failures", asset); n != 0 {
		t.Errorf("%d failure rows after the partial ready", n)
	}
	apply(eventtest.ReadyWithFailure(id), 3)
	apply(eventtest.Event(id, queued, 0), 4)
	apply(eventtest.Event(id, ready, 0), 4)
	if n := count(t, s, "rendition_failures", asset); n != 0 {
		t.Errorf("%d failure rows after a complete ready", n)
	}
}

// TestHooksRollBackWithTheEvent: the apply and delete hooks run in the
// store's transaction; an error of theirs rolls the event (or the delete)
// back, and their writes go with it.
func TestHooksRollBackWithTheEvent(t *testing.T) {
	s := newStore(t)
	ctx := t.Context()
	if _, err := s.db.ExecContext(ctx, `CREATE TABLE outbox (job_id TEXT, changed INTEGER)`); err != nil {
		t.Fatal(err)
	}
	fail := errors.New("outbox full")
	var failApply, failDelete bool
	s.OnApply(func(ctx context.Context, tx *sql.Tx, ev *kilnv1.JobEvent, changed bool) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO outbox VALUES (?, ?)`, ev.GetJobId(), changed); err != nil {
			return err
		}
		if failApply {
			return fail
		}
		return nil
	})
	s.OnDelete(func(ctx context.Context, tx *sql.Tx, jobID, assetID string) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO outbox VALUES (?, -1)`, jobID); err != nil {
			return err
		}
		if failDelete {
			return fail
		}
		return nil
	})
	outbox := func() int {
		t.Helper()
		var n int
		if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM outbox`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	id, asset := eventtest.Job("hooks")
	failApply = true
	if _, err := s.Apply(ctx, eventtest.Event(id, queued, 0)); !errors.Is(err, fail) {
		t.Fatalf("Apply with a failing hook: %v", err)
	}
	if _, err := s.Job(ctx, id); !errors.Is(err, catalog.ErrNotFound) || outbox() != 0 {
		t.Fatalf("a failed hook left the job (%v) or its outbox row (%d)", err, outbox())
	}
	failApply = false
	if changed, err := s.Apply(ctx, eventtest.Event(id, queued, 0)); err != nil || !changed {
		t.Fatalf("Apply: %v, %v", changed, err)
	}
	if changed, err := s.Apply(ctx, eventtest.Event(id, queued, 0)); err != nil || changed {
		t.Fatalf("repeat: %v, %v", changed, err)
	}
	var changedRows int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM outbox WHERE changed = 1`).Scan(&changedRows); err != nil || changedRows != 1 || outbox() != 2 {
		t.Errorf("outbox: %d changed of %d (%v); hooks see every event with changed", changedRows, outbox(), err)
	}
	if _, err := s.Apply(ctx, eventtest.Event(id, ready, 0)); err != nil {
		t.Fatal(err)
	}
	failDelete = true
	if _, err := s.DeleteJob(ctx, id); !errors.Is(err, fail) {
		t.Fatalf("DeleteJob with a failing hook: %v", err)
	}
	if _, err := s.Asset(ctx, asset); err != nil {
		t.Fatalf("a failed delete hook still deleted the asset: %v", err)
	}
	failDelete = false
	before := outbox()
	if _, err := s.DeleteJob(ctx, id); err != nil {
		t.Fatal(err)
	}
	if outbox() != before+1 {
		t.Errorf("outbox %d, want %d", outbox(), before+1)
	}
}

func fmtTime(t time.Time) string { return t.UTC().Format(sqlstore.TimeLayout) }

// TestSecondReplicaRefused: a second catalog on one SQLite file is refused
// while the first has it open (here or in another process: the flock is
// the kernel's), and opens once the first has closed it.
func TestSecondReplicaRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "catalog.db")
	first, err := Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(t.Context(), path); !errors.Is(err, ErrInUse) {
		t.Fatalf("second Open while the first holds the file: %v, want ErrInUse", err)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	openStore(t, path) // free again
}

// TestReadsDoNotQueueBehindWrites: while a write transaction is open (event
// application, an outbox pass), the reads the API and playback make answer
// at once from the read-only pool, see the last committed state, and the
// read pool cannot write.
func TestReadsDoNotQueueBehindWrites(t *testing.T) {
	s := newStore(t)
	jobID, assetID := eventtest.Job("reads")
	for _, st := range []kilnv1.JobState{queued, probing, transcoding, packaging, ready} {
		if _, err := s.Apply(t.Context(), eventtest.Event(jobID, st, 0)); err != nil {
			t.Fatal(err)
		}
	}
	tx, err := s.DB().BeginTx(t.Context(), nil) // BEGIN IMMEDIATE: holds the write lock
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(t.Context(), `UPDATE jobs SET progress = 0.25 WHERE id = ?`, jobID); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	start := time.Now()
	a, err := s.Asset(ctx, assetID)
	if err != nil {
		t.Fatalf("Asset while a write transaction is open: %v (after %s)", err, time.Since(start))
	}
	if !a.Ready() || len(a.Renditions) == 0 {
		t.Fatalf("asset %+v", a)
	}
	j, err := s.Job(ctx, jobID)
	if err != nil {
		t.Fatalf("Job while a write transaction is open: %v", err)
	}
	if j.Progress == 0.25 {
		t.Error("a read saw an uncommitted write")
	}
	if _, _, err := s.ListJobs(ctx, catalog.JobFilter{}); err != nil {
		t.Fatalf("ListJobs while a write transaction is open: %v", err)
	}
	if took := time.Since(start); took > 500*time.Millisecond {
		t.Errorf("reads took %s behind an open write transaction", took)
	}
	if _, err := s.ro.ExecContext(ctx, `UPDATE jobs SET progress = 1`); err == nil {
		t.Error("the read pool can write")
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if j, err := s.Job(t.Context(), jobID); err != nil || j.Progress != 0.25 {
		t.Errorf("after the commit: %v %v", j, err)
	}
}
