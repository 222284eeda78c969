// Package sqlstore is the catalog's Store on a SQL database, written once
// for every dialect (internal/sqldialect): catalog/sqlite and
// catalog/postgres open the database, migrate it and hand it to New. It
// executes the decisions of the catalog's state machine (catalog.Decide) in
// SQL. Other catalog parts that keep tables in the same database (the
// webhook outbox) reach it through DB and record consequences of a change
// atomically with it through the OnApply and OnDelete hooks.
//
// Times are stored as fixed-width UTC text (TimeLayout) on every dialect:
// it sorts as time, keeps nanoseconds and keeps the SQL the same.
package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/kilnvideo/kiln/catalog"
	"github.com/kilnvideo/kiln/internal/layout"
	"github.com/kilnvideo/kiln/internal/policy"
	"github.com/kilnvideo/kiln/internal/sqldialect"
	"github.com/kilnvideo/kiln/internal/tasks"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

var _ catalog.Store = (*Store)(nil)

// Store keeps catalog state in a SQL database. It is safe for concurrent
// use.
type Store struct {
	db          *sql.DB
	q           sqldialect.DB // writes and transactions
	r           sqldialect.DB // reads that need no transaction (WithReadDB)
	now         func() time.Time
	hooks       []ApplyHook
	deleteHooks []DeleteHook
}

// ApplyHook runs inside the transaction that applies a job event, after the
// job row is written; changed reports whether the event changed the job.
// Returning an error rolls the whole event back (it will be redelivered).
// This is how other parts of the catalog (the webhook outbox) record
// consequences of a state change atomically with it. Its SQL is the
// database's own (see Store.Dialect).
type ApplyHook = func(ctx context.Context, tx *sql.Tx, ev *kilnv1.JobEvent, changed bool) error

// DeleteHook runs inside the transaction that marks an asset deleted (the
// webhook outbox records asset.deleted with it); an error rolls it back.
type DeleteHook = func(ctx context.Context, tx *sql.Tx, jobID, assetID string) error

// OnApply registers a hook; call it before the store is used.
func (s *Store) OnApply(h ApplyHook) { s.hooks = append(s.hooks, h) }

// OnDelete registers a hook; call it before the store is used.
func (s *Store) OnDelete(h DeleteHook) { s.deleteHooks = append(s.deleteHooks, h) }

// DB is the store's database, for catalog parts that keep their own tables
// in it (the webhook outbox).
func (s *Store) DB() *sql.DB { return s.db }

// Dialect is the kind of the store's database.
func (s *Store) Dialect() sqldialect.Dialect { return s.q.Dialect }

// Option configures New.
type Option func(*Store)

// WithReadDB makes the reads that need no transaction (Job, ListJobs,
// Asset, OutputsBucket, HasJob, StaleJobs, PendingRenditionRetries — the
// API, the open playback routes and the reconciler) go through ro, a pool
// on the same database, instead of db. SQLite passes a pool of query_only
// connections, so those reads never queue behind its single writer;
// without it (PostgreSQL) reads share db's pool. The store owns ro too:
// Close closes it.
func WithReadDB(ro *sql.DB) Option {
	return func(s *Store) { s.r.DB = ro }
}

// New returns a Store on db, whose schema the caller has migrated; now is
// the clock of record times (time.Now when nil). The store owns db: Close
// closes it.
func New(db *sql.DB, d sqldialect.Dialect, now func() time.Time, opts ...Option) *Store {
	if now == nil {
		now = time.Now
	}
	s := &Store{db: db, q: sqldialect.DB{DB: db, Dialect: d}, r: sqldialect.DB{DB: db, Dialect: d}, now: now}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Close closes the database (and the read pool, when it is another).
func (s *Store) Close() error {
	if s.r.DB == s.db {
		return s.db.Close()
	}
	return errors.Join(s.r.DB.Close(), s.db.Close())
}

// forUpdate locks the rows a SELECT in a transaction reads until it ends,
// where the dialect needs it: SQLite's transactions begin IMMEDIATE and
// have the database to themselves.
func (s *Store) forUpdate() string {
	if s.q.Dialect == sqldialect.Postgres {
		return " FOR UPDATE"
	}
	return ""
}

// lockJob serialises the transactions that apply events of job id,
// including the first, which finds no row to lock: on PostgreSQL a
// transaction advisory lock on the id (SQLite needs none, see forUpdate).
func (s *Store) lockJob(ctx context.Context, tx sqldialect.Tx, id string) error {
	if s.q.Dialect != sqldialect.Postgres {
		return nil
	}
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(hashtext(?))`, "kiln:job:"+id); err != nil {
		return fmt.Errorf("catalog: job %s: lock: %w", id, err)
	}
	return nil
}

func (s *Store) inTx(ctx context.Context, fn func(sqldialect.Tx) error) error {
	raw, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("catalog: begin: %w", err)
	}
	tx := sqldialect.Tx{Tx: raw, Dialect: s.q.Dialect}
	defer func() { _ = tx.Rollback() }()
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("catalog: commit: %w", err)
	}
	return nil
}

// column is the per-state timestamp column. Column names are only ever
// taken from here.
func column(st catalog.State) string {
	switch st {
	case catalog.StateQueued:
		return "queued_at"
	case catalog.StateProbing:
		return "probing_at"
	case catalog.StateTranscoding:
		return "transcoding_at"
	case catalog.StatePackaging:
		return "packaging_at"
	case catalog.StateReady:
		return "ready_at"
	case catalog.StateFailed:
		return "failed_at"
	case catalog.StateCanceled:
		return "canceled_at"
	}
	panic(fmt.Sprintf("catalog: no column for state %q", st)) // FactOf returns known states only
}

var (
	protoOut = protojson.MarshalOptions{UseProtoNames: true}
	protoIn  = protojson.UnmarshalOptions{DiscardUnknown: true}
)

// row is a fact's JSON columns, and its playable time.
type row struct {
	media, plan, thumbnails sql.NullString // protojson, NULL when absent
	playable                sql.NullString // the event time of a playable event, else NULL
}

func rowOf(f *catalog.Fact) (row, error) {
	var (
		r   row
		err error
	)
	if r.media, err = marshalOpt(f.Media); err != nil {
		return row{}, fmt.Errorf("catalog: job %s: media: %w", f.JobID, err)
	}
	if r.plan, err = marshalOpt(f.Plan); err != nil {
		return row{}, fmt.Errorf("catalog: job %s: plan: %w", f.JobID, err)
	}
	if r.thumbnails, err = marshalOpt(f.Outputs.GetThumbnails()); err != nil {
		return row{}, fmt.Errorf("catalog: job %s: thumbnails: %w", f.JobID, err)
	}
	if f.Playable {
		r.playable = sql.NullString{String: fmtTime(f.At), Valid: true}
	}
	return r, nil
}

func marshalOpt(m proto.Message) (sql.NullString, error) {
	if m == nil || !m.ProtoReflect().IsValid() {
		return sql.NullString{}, nil
	}
	b, err := protoOut.Marshal(m)
	if err != nil {
		return sql.NullString{}, err
	}
	return sql.NullString{String: string(b), Valid: true}, nil
}

// Apply records ev in one transaction, running the apply hooks in it, and
// reports whether it moved the job (see catalog.Store and catalog.Decide).
func (s *Store) Apply(ctx context.Context, ev *kilnv1.JobEvent) (changed bool, err error) {
	now := s.now().UTC()
	f, err := catalog.FactOf(ev, now)
	if err != nil {
		return false, err
	}
	r, err := rowOf(f)
	if err != nil {
		return false, err
	}
	err = s.inTx(ctx, func(tx sqldialect.Tx) error {
		if err := s.lockJob(ctx, tx, f.JobID); err != nil {
			return err
		}
		if changed, err = apply(ctx, tx, f, r, now, s.forUpdate()); err != nil {
			return err
		}
		for _, h := range s.hooks {
			if err := h(ctx, tx.Tx, ev, changed); err != nil {
				return err
			}
		}
		return nil
	})
	return changed, err
}

// current reads what catalog.Decide needs of the job.
// lock is forUpdate's.
func current(ctx context.Context, tx sqldialect.Tx, jobID, lock string) (catalog.Current, error) {
	cur := catalog.Current{Exists: true}
	err := tx.QueryRowContext(ctx, `SELECT state, progress, attempt, chunks_done, chunks_total, deleted_at IS NOT NULL FROM jobs WHERE id = ?`+lock, jobID).
		Scan(&cur.State, &cur.Progress, &cur.Attempt, &cur.ChunksDone, &cur.ChunksTotal, &cur.Deleted)
	if errors.Is(err, sql.ErrNoRows) {
		return catalog.Current{}, nil
	}
	if err != nil {
		return catalog.Current{}, fmt.Errorf("catalog: job %s: read state: %w", jobID, err)
	}
	return cur, nil
}

// apply executes catalog.Decide's decision on f.
func apply(ctx context.Context, tx sqldialect.Tx, f *catalog.Fact, r row, now time.Time, lock string) (bool, error) {
	cur, err := current(ctx, tx, f.JobID, lock)
	if err != nil {
		return false, err
	}
	act := catalog.Decide(cur, f)
	col := column(f.State)

	// Source, preset and playback policy are facts of the job, never
	// contradicted: fill blanks.
	const fillSource = `
		preset        = CASE WHEN preset = '' THEN :preset ELSE preset END,
		playback_policy = CASE WHEN playback_policy = '' THEN :policy ELSE playback_policy END,
		tenant_id     = CASE WHEN tenant_id = '' THEN :tenant ELSE tenant_id END,
		priority      = CASE WHEN priority = '' THEN :priority ELSE priority END,
		source_bucket = CASE WHEN source_bucket = '' THEN :bucket ELSE source_bucket END,
		source_key    = CASE WHEN source_bucket = '' THEN :key ELSE source_key END,
		source_etag   = CASE WHEN source_bucket = '' THEN :etag ELSE source_etag END,
		source_size   = CASE WHEN source_bucket = '' THEN :size ELSE source_size END,`
	// Chunk counts only grow within an attempt: a late event never lowers
	// them (a new attempt sets them).
	const raiseChunks = `
		chunks_done  = CASE WHEN :cdone > chunks_done THEN :cdone ELSE chunks_done END,
		chunks_total = CASE WHEN :ctotal > chunks_total THEN :ctotal ELSE chunks_total END,`
	args := []any{
		sql.Named("id", f.JobID), sql.Named("now", fmtTime(now)),
		sql.Named("preset", f.Preset), sql.Named("policy", f.Policy), sql.Named("priority", f.Priority), sql.Named("tenant", f.Tenant),
		sql.Named("bucket", f.Source.Bucket), sql.Named("key", f.Source.Key),
		sql.Named("etag", f.Source.ETag), sql.Named("size", f.Source.Size),
		sql.Named("media", r.media), sql.Named("plan", r.plan), sql.Named("playable", r.playable),
		sql.Named("cdone", f.ChunksDone), sql.Named("ctotal", f.ChunksTotal),
	}
	switch act {
	case catalog.ActionIgnore:
		return false, nil

	case catalog.ActionPartial:
		return applyPartial(ctx, tx, f, now)

	case catalog.ActionCreate:
		_, err = tx.ExecContext(ctx, `INSERT INTO jobs (id, asset_id, state, progress, preset,
				source_bucket, source_key, source_etag, source_size, error_code, error_message,
				media_json, plan_json, created_at, updated_at, playback_policy, attempt, playable_at,
				chunks_done, chunks_total, priority, tenant_id, `+col+`)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			f.JobID, f.AssetID, f.State, f.Progress, f.Preset,
			f.Source.Bucket, f.Source.Key, f.Source.ETag, f.Source.Size, f.ErrorCode, f.ErrorMessage,
			r.media, r.plan, fmtTime(now), fmtTime(now), f.Policy, f.Attempt, r.playable,
			f.ChunksDone, f.ChunksTotal, f.Priority, f.Tenant, fmtTime(f.At))
		if err != nil {
			return false, fmt.Errorf("catalog: job %s: insert: %w", f.JobID, err)
		}

	case catalog.ActionNewAttempt: // a retry: the job starts over from this event
		args = append(args, sql.Named("state", f.State), sql.Named("progress", f.Progress), sql.Named("attempt", f.Attempt),
			sql.Named("at", fmtTime(f.At)), sql.Named("code", f.ErrorCode), sql.Named("message", f.ErrorMessage))
		var clear []string
		for _, st := range catalog.States() {
			if c := column(st); c != col {
				clear = append(clear, c+" = NULL")
			}
		}
		_, err = tx.ExecContext(ctx, `UPDATE jobs SET `+fillSource+`
			state = :state, progress = :progress, attempt = :attempt, error_code = :code, error_message = :message,
			media_json = COALESCE(:media, media_json), plan_json = COALESCE(:plan, plan_json),
			playable_at = :playable, chunks_done = :cdone, chunks_total = :ctotal,
			`+strings.Join(clear, ", ")+`, `+col+` = :at, updated_at = :now
			WHERE id = :id`, args...)
		if err != nil {
			return false, fmt.Errorf("catalog: job %s: attempt %d: %w", f.JobID, f.Attempt, err)
		}
		for _, stmt := range []string{
			`DELETE FROM renditions WHERE asset_id = ?`,
			`DELETE FROM rendition_failures WHERE asset_id = ?`,
			`DELETE FROM assets WHERE id = ?`,
		} {
			if _, err := tx.ExecContext(ctx, stmt, f.AssetID); err != nil {
				return false, fmt.Errorf("catalog: job %s: attempt %d: %w", f.JobID, f.Attempt, err)
			}
		}

	case catalog.ActionAdvance:
		args = append(args, sql.Named("state", f.State), sql.Named("progress", f.Progress),
			sql.Named("at", fmtTime(f.At)), sql.Named("code", f.ErrorCode), sql.Named("message", f.ErrorMessage))
		_, err = tx.ExecContext(ctx, `UPDATE jobs SET `+fillSource+`
			state = :state, progress = :progress, error_code = :code, error_message = :message,
			media_json = COALESCE(:media, media_json), plan_json = COALESCE(:plan, plan_json),
			playable_at = COALESCE(playable_at, :playable),`+raiseChunks+`
			`+col+` = COALESCE(`+col+`, :at), updated_at = :now
			WHERE id = :id`, args...)
		if err != nil {
			return false, fmt.Errorf("catalog: job %s: %s -> %s: %w", f.JobID, cur.State, f.State, err)
		}

	case catalog.ActionProgress:
		args = append(args, sql.Named("progress", f.Progress))
		_, err = tx.ExecContext(ctx, `UPDATE jobs SET `+fillSource+raiseChunks+`
			progress = :progress,
			media_json = COALESCE(:media, media_json), plan_json = COALESCE(:plan, plan_json),
			updated_at = :now
			WHERE id = :id`, args...)
		if err != nil {
			return false, fmt.Errorf("catalog: job %s: progress: %w", f.JobID, err)
		}

	case catalog.ActionPlayable: // the first playable event of a running job
		res, err := tx.ExecContext(ctx, `UPDATE jobs SET `+fillSource+`
			media_json = COALESCE(media_json, :media), plan_json = COALESCE(plan_json, :plan),
			playable_at = :playable,`+raiseChunks+` updated_at = :now
			WHERE id = :id AND playable_at IS NULL`, args...)
		if err != nil {
			return false, fmt.Errorf("catalog: job %s: playable: %w", f.JobID, err)
		}
		if first, err := affected(res); err != nil || !first {
			return false, err // a repeat: the outputs (and chunks) were written by the first
		}

	case catalog.ActionBackfill:
		_, err = tx.ExecContext(ctx, `UPDATE jobs SET `+fillSource+`
			media_json = COALESCE(media_json, :media), plan_json = COALESCE(plan_json, :plan),
			updated_at = :now
			WHERE id = :id AND (
				(preset = '' AND :preset <> '') OR (source_bucket = '' AND :bucket <> '') OR
				(playback_policy = '' AND :policy <> '') OR (priority = '' AND :priority <> '') OR (tenant_id = '' AND :tenant <> '') OR
				(media_json IS NULL AND CAST(:media AS TEXT) IS NOT NULL) OR (plan_json IS NULL AND CAST(:plan AS TEXT) IS NOT NULL))`, args...)
		if err != nil {
			return false, fmt.Errorf("catalog: job %s: backfill: %w", f.JobID, err)
		}
		return false, nil

	default:
		return false, fmt.Errorf("catalog: job %s: unknown action %v", f.JobID, act)
	}
	if act.WritesAsset(f) {
		if err := writeAsset(ctx, tx, f, r); err != nil {
			return false, err
		}
	}
	return true, nil
}

// applyPartial applies a partial READY event (catalog.ActionPartial).
func applyPartial(ctx context.Context, tx sqldialect.Tx, f *catalog.Fact, now time.Time) (bool, error) {
	var n int64
	count := func(res sql.Result, err error) error {
		if err != nil {
			return err
		}
		k, err := res.RowsAffected()
		n += k
		return err
	}
	for _, r := range f.Outputs.GetRenditions() {
		if err := count(tx.ExecContext(ctx, `INSERT INTO renditions (asset_id, name, width, height, frame_rate,
				bandwidth, average_bandwidth, codecs, playlist_key, encoded_key)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (asset_id, name) DO UPDATE SET width = excluded.width, height = excluded.height,
				frame_rate = excluded.frame_rate, bandwidth = excluded.bandwidth,
				average_bandwidth = excluded.average_bandwidth, codecs = excluded.codecs,
				playlist_key = excluded.playlist_key, encoded_key = excluded.encoded_key
			WHERE (renditions.width, renditions.height, renditions.frame_rate, renditions.bandwidth,
				renditions.average_bandwidth, renditions.codecs, renditions.playlist_key, renditions.encoded_key) IS DISTINCT FROM
				(excluded.width, excluded.height, excluded.frame_rate, excluded.bandwidth,
				excluded.average_bandwidth, excluded.codecs, excluded.playlist_key, excluded.encoded_key)`,
			f.AssetID, r.GetName(), r.GetWidth(), r.GetHeight(), r.GetFrameRate(),
			r.GetBandwidth(), r.GetAverageBandwidth(), r.GetCodecs(), r.GetPlaylistKey(), r.GetEncodedKey())); err != nil {
			return false, fmt.Errorf("catalog: asset %s: rendition %s: %w", f.AssetID, r.GetName(), err)
		}
		if err := count(tx.ExecContext(ctx, `DELETE FROM rendition_failures WHERE asset_id = ? AND name = ?`,
			f.AssetID, r.GetName())); err != nil {
			return false, fmt.Errorf("catalog: asset %s: rendition %s: %w", f.AssetID, r.GetName(), err)
		}
	}
	for _, r := range f.Outputs.GetFailedRenditions() {
		code, msg := catalog.FailureOf(r)
		// A failure without an encoded key keeps the one recorded.
		if err := count(tx.ExecContext(ctx, `INSERT INTO rendition_failures (asset_id, name, code, message, encoded_key)
			SELECT CAST(?1 AS TEXT), CAST(?2 AS TEXT), CAST(?3 AS TEXT), CAST(?4 AS TEXT), CAST(?5 AS TEXT) WHERE NOT EXISTS (SELECT 1 FROM renditions WHERE asset_id = ?1 AND name = ?2)
			ON CONFLICT (asset_id, name) DO UPDATE SET code = excluded.code, message = excluded.message,
				encoded_key = COALESCE(NULLIF(excluded.encoded_key, ''), rendition_failures.encoded_key)
			WHERE (rendition_failures.code, rendition_failures.message, rendition_failures.encoded_key) IS DISTINCT FROM
				(excluded.code, excluded.message, COALESCE(NULLIF(excluded.encoded_key, ''), rendition_failures.encoded_key))`,
			f.AssetID, r.GetName(), code, msg, r.GetEncodedKey())); err != nil {
			return false, fmt.Errorf("catalog: asset %s: failed rendition %s: %w", f.AssetID, r.GetName(), err)
		}
	}
	if k := f.Outputs.GetMp4Key(); k != "" {
		// The download, built after READY (or while READY is redelivered):
		// it needs the asset's row, written by READY or a playable event.
		if err := count(tx.ExecContext(ctx, `UPDATE assets SET mp4_key = ? WHERE id = ? AND mp4_key <> ?`,
			k, f.AssetID, k)); err != nil {
			return false, fmt.Errorf("catalog: asset %s: download: %w", f.AssetID, err)
		}
	}
	if n == 0 {
		return false, nil // a repeat
	}
	if _, err := tx.ExecContext(ctx, `UPDATE jobs SET updated_at = ? WHERE id = ?`, fmtTime(now), f.JobID); err != nil {
		return false, fmt.Errorf("catalog: job %s: %w", f.JobID, err)
	}
	return true, nil
}

// writeAsset records a ready or playable job's outputs, replacing any
// earlier renditions and rendition failures; an MP4 key already recorded
// (the download's partial READY) is kept when the outputs name none.
// master_key is no longer used: it is written empty. ready_at is empty for
// outputs that play before READY (the column predates them and is NOT
// NULL; sqlstore reads the empty string as not ready).
func writeAsset(ctx context.Context, tx sqldialect.Tx, f *catalog.Fact, r row) error {
	o := f.Outputs
	readyAt := ""
	if f.State == catalog.StateReady {
		readyAt = fmtTime(f.At)
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO assets (id, job_id, outputs_bucket, outputs_prefix,
			master_key, mp4_key, poster_key, duration_seconds, ready_at, thumbnails_json)
		VALUES (?, ?, ?, ?, '', ?, ?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET outputs_bucket = excluded.outputs_bucket,
			outputs_prefix = excluded.outputs_prefix, master_key = excluded.master_key,
			mp4_key = CASE WHEN excluded.mp4_key = '' THEN assets.mp4_key ELSE excluded.mp4_key END,
			poster_key = excluded.poster_key,
			duration_seconds = excluded.duration_seconds, ready_at = excluded.ready_at,
			thumbnails_json = excluded.thumbnails_json`,
		f.AssetID, f.JobID, o.GetBucket(), o.GetPrefix(), o.GetMp4Key(), o.GetPosterKey(),
		f.Duration(), readyAt, r.thumbnails)
	if err != nil {
		return fmt.Errorf("catalog: asset %s: upsert: %w", f.AssetID, err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM renditions WHERE asset_id = ?`, f.AssetID); err != nil {
		return fmt.Errorf("catalog: asset %s: clear renditions: %w", f.AssetID, err)
	}
	for _, r := range o.GetRenditions() {
		_, err := tx.ExecContext(ctx, `INSERT INTO renditions (asset_id, name, width, height, frame_rate,
				bandwidth, average_bandwidth, codecs, playlist_key, encoded_key)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			f.AssetID, r.GetName(), r.GetWidth(), r.GetHeight(), r.GetFrameRate(),
			r.GetBandwidth(), r.GetAverageBandwidth(), r.GetCodecs(), r.GetPlaylistKey(), r.GetEncodedKey())
		if err != nil {
			return fmt.Errorf("catalog: asset %s: rendition %s: %w", f.AssetID, r.GetName(), err)
		}
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM rendition_failures WHERE asset_id = ?`, f.AssetID); err != nil {
		return fmt.Errorf("catalog: asset %s: clear rendition failures: %w", f.AssetID, err)
	}
	for _, r := range o.GetFailedRenditions() {
		code, msg := catalog.FailureOf(r)
		_, err := tx.ExecContext(ctx, `INSERT INTO rendition_failures (asset_id, name, code, message, encoded_key)
			VALUES (?, ?, ?, ?, ?)`, f.AssetID, r.GetName(), code, msg, r.GetEncodedKey())
		if err != nil {
			return fmt.Errorf("catalog: asset %s: failed rendition %s: %w", f.AssetID, r.GetName(), err)
		}
	}
	return nil
}

// queryer is sqldialect.DB or sqldialect.Tx.
type queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// Job returns the job with the given id, or an error wrapping
// catalog.ErrNotFound (also for a deleted job).
func (s *Store) Job(ctx context.Context, id string) (*catalog.Job, error) {
	row := s.r.QueryRowContext(ctx, `SELECT `+jobColumns()+`, deleted_at IS NOT NULL FROM jobs WHERE id = ?`, id)
	var deleted bool
	j, err := scanJob(row, &deleted)
	switch {
	case errors.Is(err, sql.ErrNoRows) || (err == nil && deleted):
		return nil, fmt.Errorf("catalog: job %s: %w", id, catalog.ErrNotFound)
	case err != nil:
		return nil, fmt.Errorf("catalog: job %s: %w", id, err)
	}
	if err := loadFailed(ctx, s.r, j); err != nil {
		return nil, err
	}
	return j, nil
}

// loadFailed fills in j.FailedRenditions of a ready job.
func loadFailed(ctx context.Context, q queryer, j *catalog.Job) error {
	if j.State != catalog.StateReady {
		return nil
	}
	rows, err := q.QueryContext(ctx, `SELECT name FROM rendition_failures WHERE asset_id = ? ORDER BY name`, j.AssetID)
	if err != nil {
		return fmt.Errorf("catalog: job %s: rendition failures: %w", j.ID, err)
	}
	defer rows.Close()
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return fmt.Errorf("catalog: job %s: rendition failures: %w", j.ID, err)
		}
		j.FailedRenditions = append(j.FailedRenditions, name)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("catalog: job %s: rendition failures: %w", j.ID, err)
	}
	return nil
}

// jobColumns are the columns scanJob reads, in order.
func jobColumns() string {
	cols := []string{"id", "asset_id", "state", "progress", "preset", "playback_policy", "attempt",
		"source_bucket", "source_key", "source_etag", "source_size", "error_code", "error_message",
		"media_json", "plan_json", "created_at", "updated_at", "playable_at", "chunks_done", "chunks_total", "priority", "tenant_id"}
	for _, st := range catalog.States() {
		cols = append(cols, column(st))
	}
	return strings.Join(cols, ", ")
}

// scanJob reads one row of jobColumns, then extra.
func scanJob(row interface{ Scan(...any) error }, extra ...any) (*catalog.Job, error) {
	var (
		j                = &catalog.Job{Timestamps: make(map[catalog.State]time.Time)}
		all              = catalog.States()
		media, plan      sql.NullString
		created, updated string
		playable         sql.NullString
		ts               = make([]sql.NullString, len(all))
		dest             = []any{&j.ID, &j.AssetID, &j.State, &j.Progress, &j.Preset, &j.PlaybackPolicy, &j.Attempt,
			&j.Source.Bucket, &j.Source.Key, &j.Source.ETag, &j.Source.Size,
			&j.ErrorCode, &j.ErrorMessage, &media, &plan, &created, &updated, &playable,
			&j.Chunks.Done, &j.Chunks.Total, &j.Priority, &j.TenantID}
	)
	for i := range all {
		dest = append(dest, &ts[i])
	}
	if err := row.Scan(append(dest, extra...)...); err != nil {
		return nil, err
	}
	var err error
	j.PlaybackPolicy = policy.FailClosed(j.PlaybackPolicy)
	j.Priority = tasks.NormPriority(j.Priority)
	if j.CreatedAt, err = parseTime(created); err != nil {
		return nil, fmt.Errorf("created_at: %w", err)
	}
	if j.UpdatedAt, err = parseTime(updated); err != nil {
		return nil, fmt.Errorf("updated_at: %w", err)
	}
	if playable.Valid {
		if j.PlayableAt, err = parseTime(playable.String); err != nil {
			return nil, fmt.Errorf("playable_at: %w", err)
		}
	}
	for i, st := range all {
		if !ts[i].Valid {
			continue
		}
		if j.Timestamps[st], err = parseTime(ts[i].String); err != nil {
			return nil, fmt.Errorf("%s: %w", column(st), err)
		}
	}
	if media.Valid {
		j.Media = new(kilnv1.MediaInfo)
		if err := protoIn.Unmarshal([]byte(media.String), j.Media); err != nil {
			return nil, fmt.Errorf("media: %w", err)
		}
	}
	if plan.Valid {
		j.Plan = new(kilnv1.Plan)
		if err := protoIn.Unmarshal([]byte(plan.String), j.Plan); err != nil {
			return nil, fmt.Errorf("plan: %w", err)
		}
	}
	return j, nil
}

// likeEscaper escapes LIKE's wildcards (and its escape character, '!').
var likeEscaper = strings.NewReplacer("!", "!!", "%", "!%", "_", "!_")

// ListJobs returns jobs newest first (created_at, then id, descending),
// deleted ones excluded, and the cursor of the next page (nil on the last).
func (s *Store) ListJobs(ctx context.Context, f catalog.JobFilter) ([]*catalog.Job, *catalog.Cursor, error) {
	limit := f.PageLimit()
	where, args := []string{"deleted_at IS NULL"}, []any{}
	if f.State != "" {
		where, args = append(where, "state = ?"), append(args, f.State)
	}
	if f.SourceKey != "" {
		where, args = append(where, "source_key = ?"), append(args, f.SourceKey)
	}
	if f.Name != "" {
		// The file name of an upload's key (layout.NewSourceKey,
		// "uploads/<24 hex>/<name>") is what follows its fixed-length
		// prefix; of another key (put in the bucket directly), the
		// whole key is searched.
		prefix := layout.SourcePrefix + strings.Repeat("_", 24) + "/"
		like := "%" + likeEscaper.Replace(strings.ToLower(catalog.FileNameFilter(f.Name))) + "%"
		where = append(where, `(LOWER(source_key) LIKE ? ESCAPE '!' OR (source_key NOT LIKE ? AND LOWER(source_key) LIKE ? ESCAPE '!'))`)
		args = append(args, prefix+like, prefix+"%", like)
	}
	if f.Tenant != "" {
		where, args = append(where, "tenant_id = ?"), append(args, f.Tenant)
	}
	if f.After != nil {
		where = append(where, "(created_at < ? OR (created_at = ? AND id < ?))")
		t := fmtTime(f.After.CreatedAt)
		args = append(args, t, t, f.After.ID)
	}
	args = append(args, limit+1)
	rows, err := s.r.QueryContext(ctx, `SELECT `+jobColumns()+` FROM jobs WHERE `+strings.Join(where, " AND ")+`
		ORDER BY created_at DESC, id DESC LIMIT ?`, args...)
	if err != nil {
		return nil, nil, fmt.Errorf("catalog: list jobs: %w", err)
	}
	defer rows.Close()
	var jobs []*catalog.Job
	for rows.Next() {
		j, err := scanJob(rows)
		if err != nil {
			return nil, nil, fmt.Errorf("catalog: list jobs: %w", err)
		}
		jobs = append(jobs, j)
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("catalog: list jobs: %w", err)
	}
	_ = rows.Close() // release the connection before the next queries
	for _, j := range jobs {
		if err := loadFailed(ctx, s.r, j); err != nil {
			return nil, nil, err
		}
	}
	var next *catalog.Cursor
	if len(jobs) > limit {
		jobs = jobs[:limit]
		last := jobs[len(jobs)-1]
		next = &catalog.Cursor{CreatedAt: last.CreatedAt, ID: last.ID}
	}
	return jobs, next, nil
}

// DeleteJob marks a terminal job (and its asset) deleted, running the delete
// hooks in the same transaction (see catalog.Store).
func (s *Store) DeleteJob(ctx context.Context, id string) (*catalog.Job, error) {
	var j *catalog.Job
	err := s.inTx(ctx, func(tx sqldialect.Tx) error {
		var deleted bool
		var err error
		j, err = scanJob(tx.QueryRowContext(ctx, `SELECT `+jobColumns()+`, deleted_at IS NOT NULL FROM jobs WHERE id = ?`+s.forUpdate(), id), &deleted)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("catalog: job %s: %w", id, catalog.ErrNotFound)
		case err != nil:
			return fmt.Errorf("catalog: job %s: %w", id, err)
		case deleted:
			return nil
		case !j.State.Terminal():
			return fmt.Errorf("catalog: job %s is %s: %w", id, j.State, catalog.ErrConflict)
		}
		now := fmtTime(s.now())
		if _, err := tx.ExecContext(ctx, `UPDATE jobs SET deleted_at = ?, updated_at = ? WHERE id = ?`, now, now, id); err != nil {
			return fmt.Errorf("catalog: delete job %s: %w", id, err)
		}
		for _, h := range s.deleteHooks {
			if err := h(ctx, tx.Tx, j.ID, j.AssetID); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return j, nil
}

// OutputsBucket returns the outputs bucket an asset's READY event recorded
// ("" when none), deleted or not.
func (s *Store) OutputsBucket(ctx context.Context, assetID string) (string, error) {
	var b string
	err := s.r.QueryRowContext(ctx, `SELECT outputs_bucket FROM assets WHERE id = ?`, assetID).Scan(&b)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("catalog: asset %s: outputs bucket: %w", assetID, err)
	}
	return b, nil
}

// Asset returns the asset with the given id (see catalog.Store).
func (s *Store) Asset(ctx context.Context, id string) (*catalog.Asset, error) {
	a := &catalog.Asset{ID: id}
	var (
		bucket, prefix, mp4, poster, readyAt, thumbs, plan, playable sql.NullString
		duration                                                     sql.NullFloat64
	)
	err := s.r.QueryRowContext(ctx, `SELECT j.id, j.state, j.playback_policy, j.tenant_id, a.outputs_bucket, a.outputs_prefix,
			a.mp4_key, a.poster_key, a.duration_seconds, a.ready_at, a.thumbnails_json, j.plan_json, j.playable_at
		FROM jobs j LEFT JOIN assets a ON a.id = j.asset_id
		WHERE j.asset_id = ? AND j.deleted_at IS NULL`, id).
		Scan(&a.JobID, &a.State, &a.PlaybackPolicy, &a.TenantID, &bucket, &prefix, &mp4, &poster, &duration, &readyAt, &thumbs, &plan, &playable)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("catalog: asset %s: %w", id, catalog.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("catalog: asset %s: %w", id, err)
	}
	a.PlaybackPolicy = policy.FailClosed(a.PlaybackPolicy)
	if playable.Valid {
		if a.PlayableAt, err = parseTime(playable.String); err != nil {
			return nil, fmt.Errorf("catalog: asset %s: playable_at: %w", id, err)
		}
	}
	ready := readyAt.Valid && readyAt.String != "" && a.State == catalog.StateReady
	if !ready && !a.Playable() || !bucket.Valid { // no outputs to show (yet, or any more)
		return a, nil
	}
	a.Bucket, a.Prefix, a.MP4Key, a.PosterKey = bucket.String, prefix.String, mp4.String, poster.String
	a.DurationSeconds = duration.Float64
	if ready {
		if a.ReadyAt, err = parseTime(readyAt.String); err != nil {
			return nil, fmt.Errorf("catalog: asset %s: ready_at: %w", id, err)
		}
	}
	if a.Thumbnails, err = thumbnailsOf(thumbs); err != nil {
		return nil, fmt.Errorf("catalog: asset %s: %w", id, err)
	}
	rows, err := s.r.QueryContext(ctx, `SELECT name, width, height, frame_rate, bandwidth,
			average_bandwidth, codecs, playlist_key, encoded_key
		FROM renditions WHERE asset_id = ? ORDER BY bandwidth, name`, id)
	if err != nil {
		return nil, fmt.Errorf("catalog: asset %s: renditions: %w", id, err)
	}
	defer rows.Close()
	for rows.Next() {
		var r catalog.Rendition
		if err := rows.Scan(&r.Name, &r.Width, &r.Height, &r.FrameRate, &r.Bandwidth,
			&r.AverageBandwidth, &r.Codecs, &r.PlaylistKey, &r.EncodedKey); err != nil {
			return nil, fmt.Errorf("catalog: asset %s: renditions: %w", id, err)
		}
		a.Renditions = append(a.Renditions, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("catalog: asset %s: renditions: %w", id, err)
	}
	_ = rows.Close() // release the connection before the next query
	if err := loadFailures(ctx, s.r, a, plan); err != nil {
		return nil, fmt.Errorf("catalog: asset %s: rendition failures: %w", id, err)
	}
	return a, nil
}

func thumbnailsOf(thumbs sql.NullString) (*kilnv1.Thumbnails, error) {
	if !thumbs.Valid {
		return nil, nil
	}
	t := new(kilnv1.Thumbnails)
	if err := protoIn.Unmarshal([]byte(thumbs.String), t); err != nil {
		return nil, fmt.Errorf("thumbnails: %w", err)
	}
	return t, nil
}

// loadFailures fills in a.Failed, sizes from the plan (protojson) when it
// has a rung of that name.
func loadFailures(ctx context.Context, q queryer, a *catalog.Asset, plan sql.NullString) error {
	rows, err := q.QueryContext(ctx, `SELECT name, code, message, encoded_key, retries
		FROM rendition_failures WHERE asset_id = ? ORDER BY name`, a.ID)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var r catalog.FailedRendition
		if err := rows.Scan(&r.Name, &r.ErrorCode, &r.ErrorMessage, &r.EncodedKey, &r.Retries); err != nil {
			return err
		}
		a.Failed = append(a.Failed, r)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if len(a.Failed) == 0 || !plan.Valid {
		return nil
	}
	var p kilnv1.Plan
	if protoIn.Unmarshal([]byte(plan.String), &p) != nil {
		return nil // sizes are cosmetic
	}
	for i, r := range a.Failed {
		for _, rung := range p.GetRungs() {
			if rung.GetName() == r.Name {
				a.Failed[i].Width, a.Failed[i].Height = int(rung.GetWidth()), int(rung.GetHeight())
			}
		}
	}
	return nil
}

// RetryRendition counts one more retry of a failed rendition and records
// it as pending, in one transaction that makes no network call (see
// catalog.Store).
func (s *Store) RetryRendition(ctx context.Context, assetID, name string) (catalog.RenditionRetry, error) {
	var rr catalog.RenditionRetry
	err := s.inTx(ctx, func(tx sqldialect.Tx) error {
		j, err := scanJob(tx.QueryRowContext(ctx, `SELECT `+jobColumns()+` FROM jobs
			WHERE asset_id = ? AND deleted_at IS NULL`+s.forUpdate(), assetID))
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("catalog: asset %s: %w", assetID, catalog.ErrNotFound)
		case err != nil:
			return fmt.Errorf("catalog: asset %s: %w", assetID, err)
		case j.State != catalog.StateReady:
			return fmt.Errorf("catalog: asset %s is %s: %w", assetID, j.State, catalog.ErrConflict)
		}
		var ready int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM renditions WHERE asset_id = ? AND name = ?`,
			assetID, name).Scan(&ready); err != nil {
			return fmt.Errorf("catalog: asset %s: rendition %s: %w", assetID, name, err)
		}
		if ready > 0 {
			return fmt.Errorf("catalog: asset %s: rendition %s is ready: %w", assetID, name, catalog.ErrConflict)
		}
		rr = catalog.RenditionRetry{Job: j, Name: name}
		err = tx.QueryRowContext(ctx, `UPDATE rendition_failures SET retries = retries + 1, retry_pending_at = ?
			WHERE asset_id = ? AND name = ? RETURNING retries, encoded_key`, fmtTime(s.now()), assetID, name).Scan(&rr.Retry, &rr.EncodedKey)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("catalog: asset %s: rendition %s: %w", assetID, name, catalog.ErrNoRendition)
		case err != nil:
			return fmt.Errorf("catalog: asset %s: rendition %s: count retry: %w", assetID, name, err)
		}
		rr.Asset, err = retryAsset(ctx, tx, j)
		return err
	})
	if err != nil {
		return catalog.RenditionRetry{}, err
	}
	return rr, nil
}

// retryAsset is what a rendition retry needs of j's asset.
func retryAsset(ctx context.Context, q queryer, j *catalog.Job) (*catalog.Asset, error) {
	a := &catalog.Asset{ID: j.AssetID, JobID: j.ID, State: j.State, PlaybackPolicy: j.PlaybackPolicy, TenantID: j.TenantID}
	var thumbs sql.NullString
	if err := q.QueryRowContext(ctx, `SELECT outputs_bucket, outputs_prefix, poster_key, thumbnails_json
		FROM assets WHERE id = ?`, a.ID).Scan(&a.Bucket, &a.Prefix, &a.PosterKey, &thumbs); err != nil {
		return nil, fmt.Errorf("catalog: asset %s: %w", a.ID, err)
	}
	var err error
	if a.Thumbnails, err = thumbnailsOf(thumbs); err != nil {
		return nil, fmt.Errorf("catalog: asset %s: %w", a.ID, err)
	}
	return a, nil
}

// RenditionRetryDone settles retry number retry of a rendition once its
// enqueue was tried: enqueued clears the pending mark, not enqueued takes
// the retry back (see catalog.Store).
func (s *Store) RenditionRetryDone(ctx context.Context, assetID, name string, retry int32, enqueued bool) error {
	q := `UPDATE rendition_failures SET retry_pending_at = NULL
		WHERE asset_id = ? AND name = ? AND retries = ? AND retry_pending_at IS NOT NULL`
	if !enqueued {
		q = `UPDATE rendition_failures SET retry_pending_at = NULL, retries = retries - 1
		WHERE asset_id = ? AND name = ? AND retries = ? AND retry_pending_at IS NOT NULL`
	}
	if _, err := s.q.ExecContext(ctx, q, assetID, name, retry); err != nil {
		return fmt.Errorf("catalog: asset %s: rendition %s: settle retry %d: %w", assetID, name, retry, err)
	}
	return nil
}

// PendingRenditionRetries returns the rendition retries recorded before
// before and still not settled, oldest first, at most limit (see
// catalog.Store).
func (s *Store) PendingRenditionRetries(ctx context.Context, before time.Time, limit int) ([]catalog.RenditionRetry, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT f.asset_id, f.name, f.retries, f.encoded_key FROM rendition_failures f
		JOIN jobs j ON j.asset_id = f.asset_id AND j.deleted_at IS NULL AND j.state = ?
		WHERE f.retry_pending_at IS NOT NULL AND f.retry_pending_at < ?
		ORDER BY f.retry_pending_at, f.asset_id, f.name LIMIT ?`, string(catalog.StateReady), fmtTime(before), max(limit, 1))
	if err != nil {
		return nil, fmt.Errorf("catalog: pending rendition retries: %w", err)
	}
	defer rows.Close()
	var out []catalog.RenditionRetry
	var assets []string
	for rows.Next() {
		var rr catalog.RenditionRetry
		var asset string
		if err := rows.Scan(&asset, &rr.Name, &rr.Retry, &rr.EncodedKey); err != nil {
			return nil, fmt.Errorf("catalog: pending rendition retries: %w", err)
		}
		out, assets = append(out, rr), append(assets, asset)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("catalog: pending rendition retries: %w", err)
	}
	_ = rows.Close() // release the connection before the next queries
	for i, asset := range assets {
		j, err := scanJob(s.r.QueryRowContext(ctx, `SELECT `+jobColumns()+` FROM jobs WHERE asset_id = ? AND deleted_at IS NULL`, asset))
		if err != nil {
			return nil, fmt.Errorf("catalog: pending rendition retries: asset %s: %w", asset, err)
		}
		out[i].Job = j
		if out[i].Asset, err = retryAsset(ctx, s.r, j); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// TimeLayout is how times are stored: fixed-width UTC, so they sort as
// text.
const TimeLayout = "2006-01-02T15:04:05.000000000Z"

const timeLayout = TimeLayout

func fmtTime(t time.Time) string { return t.UTC().Format(timeLayout) }

func parseTime(s string) (time.Time, error) { return time.Parse(timeLayout, s) }

// JobTenant returns the tenant of job id, deleted or not (see
// catalog.Store).
func (s *Store) JobTenant(ctx context.Context, id string) (string, error) {
	var t string
	err := s.r.QueryRowContext(ctx, `SELECT tenant_id FROM jobs WHERE id = ?`, id).Scan(&t)
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("catalog: job %s: %w", id, catalog.ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("catalog: job %s: tenant: %w", id, err)
	}
	return t, nil
}

// HasJob reports whether job id was ever recorded, deleted or not.
func (s *Store) HasJob(ctx context.Context, id string) (bool, error) {
	var n int
	if err := s.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM jobs WHERE id = ?`, id).Scan(&n); err != nil {
		return false, fmt.Errorf("catalog: job %s: %w", id, err)
	}
	return n > 0, nil
}

// CountJobs returns the number of jobs per state, deleted ones excluded
// (see catalog.Store).
func (s *Store) CountJobs(ctx context.Context) (map[catalog.State]int, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT state, COUNT(*) FROM jobs WHERE deleted_at IS NULL GROUP BY state`)
	if err != nil {
		return nil, fmt.Errorf("catalog: count jobs: %w", err)
	}
	defer func() { _ = rows.Close() }()
	counts := map[catalog.State]int{}
	for rows.Next() {
		var st string
		var n int
		if err := rows.Scan(&st, &n); err != nil {
			return nil, fmt.Errorf("catalog: count jobs: %w", err)
		}
		counts[catalog.State(st)] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("catalog: count jobs: %w", err)
	}
	return counts, nil
}

// StaleJobs returns a page of the running jobs not updated since
// f.Before, least recently updated first (see catalog.Store).
func (s *Store) StaleJobs(ctx context.Context, f catalog.StaleFilter) ([]*catalog.Job, error) {
	running, marks := runningStates()
	where, args := "state IN ("+marks+") AND deleted_at IS NULL AND updated_at < ?", append(running, fmtTime(f.Before))
	if f.After != nil {
		t := fmtTime(f.After.UpdatedAt)
		where, args = where+" AND (updated_at > ? OR (updated_at = ? AND id > ?))", append(args, t, t, f.After.ID)
	}
	args = append(args, f.PageLimit())
	rows, err := s.r.QueryContext(ctx, `SELECT `+jobColumns()+` FROM jobs WHERE `+where+`
		ORDER BY updated_at, id LIMIT ?`, args...)
	if err != nil {
		return nil, fmt.Errorf("catalog: stale jobs: %w", err)
	}
	defer rows.Close()
	var jobs []*catalog.Job
	for rows.Next() {
		j, err := scanJob(rows)
		if err != nil {
			return nil, fmt.Errorf("catalog: stale jobs: %w", err)
		}
		jobs = append(jobs, j)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("catalog: stale jobs: %w", err)
	}
	return jobs, nil
}

// AcquireLease takes or renews a lease: a conditional UPDATE (the holder's
// own lease, or an expired one), else an INSERT of a lease no one has, in
// one transaction (see catalog.Store).
func (s *Store) AcquireLease(ctx context.Context, name, holder string, now time.Time, ttl time.Duration) (bool, error) {
	if name == "" || holder == "" || ttl <= 0 {
		return false, errors.New("catalog: lease: name, holder and a positive ttl are required")
	}
	var held bool
	err := s.inTx(ctx, func(tx sqldialect.Tx) error {
		until, at := fmtTime(now.Add(ttl)), fmtTime(now)
		res, err := tx.ExecContext(ctx, `UPDATE leases SET holder = ?, expires_at = ?
			WHERE name = ? AND (holder = ? OR expires_at <= ?)`, holder, until, name, holder, at)
		if err != nil {
			return fmt.Errorf("catalog: lease %s: %w", name, err)
		}
		if held, err = affected(res); err != nil || held {
			return err
		}
		res, err = tx.ExecContext(ctx, `INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?)
			ON CONFLICT (name) DO NOTHING`, name, holder, until)
		if err != nil {
			return fmt.Errorf("catalog: lease %s: %w", name, err)
		}
		held, err = affected(res)
		return err
	})
	if err != nil {
		return false, err
	}
	return held, nil
}

// ReleaseLease deletes holder's lease name.
func (s *Store) ReleaseLease(ctx context.Context, name, holder string) error {
	if _, err := s.q.ExecContext(ctx, `DELETE FROM leases WHERE name = ? AND holder = ?`, name, holder); err != nil {
		return fmt.Errorf("catalog: release lease %s: %w", name, err)
	}
	return nil
}

// affected reports whether res changed a row.
func affected(res sql.Result) (bool, error) {
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("catalog: rows affected: %w", err)
	}
	return n > 0, nil
}
