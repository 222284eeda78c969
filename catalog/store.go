// Package catalog is the single writer of job and asset state. It consumes
// JobEvents, keeps jobs, assets and renditions in SQL, and serves the REST API
// and HLS playback (a master playlist generated from its own state, media
// playlists and segments from object storage).
package catalog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"regexp"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver

	"github.com/kilnvideo/kiln/internal/jobid"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// Sentinel errors. Callers match them with errors.Is.
var (
	// ErrNotFound means no job or asset has the requested id.
	ErrNotFound = errors.New("catalog: not found")
	// ErrInvalidEvent means a JobEvent can never be applied (bad ids, unknown
	// state, unsafe rendition fields, READY without outputs). Redelivering it
	// will not help; a consumer should drop it rather than retry.
	ErrInvalidEvent = errors.New("catalog: invalid job event")
)

// State is a job's position in the pipeline, as stored and as served by the
// API.
type State string

// Job states. Queued < Probing < Transcoding < Packaging < Ready; Failed may
// follow any non-terminal state. Ready and Failed are terminal.
const (
	StateQueued      State = "queued"
	StateProbing     State = "probing"
	StateTranscoding State = "transcoding"
	StatePackaging   State = "packaging"
	StateReady       State = "ready"
	StateFailed      State = "failed"
)

// states lists every state in rank order, with its per-state timestamp
// column. Column names are only ever taken from this table.
var states = []struct {
	state  State
	proto  kilnv1.JobState
	column string
}{
	{StateQueued, kilnv1.JobState_JOB_STATE_QUEUED, "queued_at"},
	{StateProbing, kilnv1.JobState_JOB_STATE_PROBING, "probing_at"},
	{StateTranscoding, kilnv1.JobState_JOB_STATE_TRANSCODING, "transcoding_at"},
	{StatePackaging, kilnv1.JobState_JOB_STATE_PACKAGING, "packaging_at"},
	{StateReady, kilnv1.JobState_JOB_STATE_READY, "ready_at"},
	{StateFailed, kilnv1.JobState_JOB_STATE_FAILED, "failed_at"},
}

// Terminal reports whether no later event can change the state.
func (s State) Terminal() bool { return s == StateReady || s == StateFailed }

// rank orders the linear part of the pipeline; 0 for unknown states.
func (s State) rank() int {
	for i, st := range states {
		if st.state == s {
			return i + 1
		}
	}
	return 0
}

// column is the per-state timestamp column.
func (s State) column() string { return states[s.rank()-1].column }

// advances reports whether moving from cur to next is a forward transition.
func advances(cur, next State) bool {
	switch {
	case cur.Terminal():
		return false
	case next == StateFailed:
		return true
	default:
		return next.rank() > cur.rank()
	}
}

func stateOf(s kilnv1.JobState) (State, bool) {
	for _, st := range states {
		if st.proto == s {
			return st.state, true
		}
	}
	return "", false
}

// Playback policies, recorded from the QUEUED event.
const (
	// PolicyPublic: playback URLs work for anyone who has them.
	PolicyPublic = "public"
	// PolicySigned: every playback URL needs an unexpired token (see
	// MintToken).
	PolicySigned = "signed"
)

// policyOf normalises the playback policy a QUEUED event carries: "signed"
// is signed, anything else — including the empty policy of producers that
// predate policies — is public, as ingest decides.
func policyOf(p string) string {
	if p == PolicySigned {
		return PolicySigned
	}
	return PolicyPublic
}

// Source is the object a job transcodes.
type Source struct {
	Bucket string
	Key    string
	ETag   string
	Size   int64
}

// Job is the catalog's view of one job.
type Job struct {
	ID       string
	AssetID  string
	State    State
	Progress float64 // in [0,1] within State; 1 once ready
	Preset   string
	Source   Source
	// PlaybackPolicy is PolicyPublic or PolicySigned (see Asset).
	PlaybackPolicy string
	// ErrorCode and ErrorMessage are set when State is StateFailed.
	ErrorCode    string
	ErrorMessage string
	// Media and Plan are nil until an event carried them.
	Media *kilnv1.MediaInfo
	Plan  *kilnv1.Plan
	// CreatedAt and UpdatedAt are the catalog's record times.
	CreatedAt time.Time
	UpdatedAt time.Time
	// Timestamps holds the event time at which each reached state was
	// recorded.
	Timestamps map[State]time.Time
}

// Asset is the catalog's view of one asset: the outputs of a job. Everything
// but ID, JobID, State and PlaybackPolicy is zero until the job is ready.
//
// PlaybackPolicy is PolicyPublic or PolicySigned. Until the job's QUEUED
// event (which alone carries the policy) is recorded it reads PolicySigned:
// an asset whose policy is unknown fails closed.
type Asset struct {
	ID              string
	JobID           string
	State           State  // the job's state
	PlaybackPolicy  string // see above
	Bucket          string
	Prefix          string
	MasterKey       string
	MP4Key          string
	PosterKey       string
	DurationSeconds float64
	ReadyAt         time.Time
	Renditions      []Rendition // ordered by bandwidth, ascending
}

// Ready reports whether the asset can be played.
func (a *Asset) Ready() bool { return a.State == StateReady }

// Rendition returns the rendition called name.
func (a *Asset) Rendition(name string) (Rendition, bool) {
	for _, r := range a.Renditions {
		if r.Name == name {
			return r, true
		}
	}
	return Rendition{}, false
}

// Rendition is one packaged HLS variant of an asset.
type Rendition struct {
	Name             string
	Width            int
	Height           int
	FrameRate        float64
	Bandwidth        int64 // peak, bit/s
	AverageBandwidth int64 // bit/s
	Codecs           string
	PlaylistKey      string // media playlist object key in the asset's bucket
}

// Store keeps catalog state in SQLite. It is safe for concurrent use.
type Store struct {
	db    *sql.DB
	now   func() time.Time
	hooks []ApplyHook
}

// ApplyHook runs inside the transaction that applies a job event, after the
// job row is written; changed reports whether the event changed the job.
// Returning an error rolls the whole event back (it will be redelivered).
// This is how other parts of the catalog (the webhook outbox) record
// consequences of a state change atomically with it.
type ApplyHook func(ctx context.Context, tx *sql.Tx, ev *kilnv1.JobEvent, changed bool) error

// OnApply registers a hook; call it before the store is used.
func (s *Store) OnApply(h ApplyHook) { s.hooks = append(s.hooks, h) }

// DB is the store's database, for catalog parts that keep their own tables
// in it (the webhook outbox).
func (s *Store) DB() *sql.DB { return s.db }

// migrations are applied in order, once each; schema_version records how many
// have run. Never edit one that has shipped: append a new one.
var migrations = [][]string{
	{
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
	},
	{
		// '' means "not known yet": the row was created by an event other
		// than QUEUED, which alone carries the policy. Rows older than this
		// migration were all public.
		`ALTER TABLE jobs ADD COLUMN playback_policy TEXT NOT NULL DEFAULT 'public'`,
	},
}

// OpenSQLite opens (creating if needed) the SQLite database at path in WAL
// mode with foreign keys on and a 5 s busy timeout, and migrates its schema.
// Transactions begin IMMEDIATE so concurrent writers queue on the busy
// timeout instead of failing on lock upgrade.
func OpenSQLite(ctx context.Context, path string) (*Store, error) {
	if path == "" || strings.ContainsAny(path, "?#") {
		return nil, fmt.Errorf("catalog: invalid sqlite path %q", path)
	}
	dsn := path + "?_busy_timeout=5000&_journal_mode=WAL&_foreign_keys=1&_synchronous=NORMAL&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("catalog: open %s: %w", path, err)
	}
	// SQLite has one writer; one connection serialises writes in-process and
	// keeps the per-connection PRAGMAs trivially consistent.
	db.SetMaxOpenConns(1)
	s := &Store{db: db, now: time.Now}
	if err := s.migrate(ctx); err != nil {
		_ = db.Close()
		return nil, err
	}
	return s, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

func (s *Store) migrate(ctx context.Context) error {
	if _, err := s.db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY)`); err != nil {
		return fmt.Errorf("catalog: migrate: %w", err)
	}
	return s.inTx(ctx, func(tx *sql.Tx) error {
		var v int
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_version`).Scan(&v); err != nil {
			return fmt.Errorf("catalog: migrate: read version: %w", err)
		}
		if v > len(migrations) {
			return fmt.Errorf("catalog: migrate: database schema version %d is newer than this binary (%d)", v, len(migrations))
		}
		for i := v; i < len(migrations); i++ {
			for _, stmt := range migrations[i] {
				if _, err := tx.ExecContext(ctx, stmt); err != nil {
					return fmt.Errorf("catalog: migrate to version %d: %w", i+1, err)
				}
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO schema_version (version) VALUES (?)`, i+1); err != nil {
				return fmt.Errorf("catalog: migrate to version %d: %w", i+1, err)
			}
		}
		return nil
	})
}

func (s *Store) inTx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("catalog: begin: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("catalog: commit: %w", err)
	}
	return nil
}

// fact is a validated JobEvent, ready to bind.
type fact struct {
	jobID, assetID string
	state          State
	at             time.Time // event time, or now when the event has none
	progress       float64
	preset         string
	policy         string // set from QUEUED events only, else ""
	source         Source
	errCode        string
	errMessage     string
	media, plan    sql.NullString // protojson, NULL when absent
	outputs        *kilnv1.AssetOutputs
}

var (
	renditionName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	codecsString  = regexp.MustCompile(`^[A-Za-z0-9._+-]+(,[A-Za-z0-9._+-]+)*$`)
	protoOut      = protojson.MarshalOptions{UseProtoNames: true}
	protoIn       = protojson.UnmarshalOptions{DiscardUnknown: true}
)

func factOf(ev *kilnv1.JobEvent, now time.Time) (*fact, error) {
	if ev == nil {
		return nil, fmt.Errorf("%w: nil event", ErrInvalidEvent)
	}
	if !jobid.ValidJob(ev.GetJobId()) {
		return nil, fmt.Errorf("%w: malformed job id %q", ErrInvalidEvent, ev.GetJobId())
	}
	f := &fact{jobID: ev.GetJobId(), assetID: jobid.AssetOf(ev.GetJobId()), at: now}
	if a := ev.GetAssetId(); a != "" && a != f.assetID {
		return nil, fmt.Errorf("%w: asset id %q does not belong to job %s", ErrInvalidEvent, a, f.jobID)
	}
	st, ok := stateOf(ev.GetState())
	if !ok {
		return nil, fmt.Errorf("%w: job %s: unknown state %v", ErrInvalidEvent, f.jobID, ev.GetState())
	}
	f.state = st
	if t := ev.GetTime(); t != nil && t.IsValid() {
		f.at = t.AsTime()
	}
	f.progress = ev.GetProgress()
	if math.IsNaN(f.progress) || f.progress < 0 {
		f.progress = 0
	}
	f.progress = min(f.progress, 1)
	if st == StateReady {
		f.progress = 1
	}
	f.preset = ev.GetPreset()
	if st == StateQueued {
		f.policy = policyOf(ev.GetPlaybackPolicy())
	}
	if src := ev.GetSource(); src != nil {
		f.source = Source{Bucket: src.GetBucket(), Key: src.GetKey(), ETag: src.GetEtag(), Size: src.GetSize()}
	}
	if st == StateFailed {
		f.errCode, f.errMessage = ev.GetError().GetCode(), ev.GetError().GetMessage()
		if f.errCode == "" {
			f.errCode = "internal"
		}
	}
	var err error
	if f.media, err = marshalOpt(ev.GetMedia()); err != nil {
		return nil, fmt.Errorf("catalog: job %s: media: %w", f.jobID, err)
	}
	if f.plan, err = marshalOpt(ev.GetPlan()); err != nil {
		return nil, fmt.Errorf("catalog: job %s: plan: %w", f.jobID, err)
	}
	if st == StateReady {
		if err := validOutputs(ev.GetOutputs()); err != nil {
			return nil, fmt.Errorf("%w: job %s: %w", ErrInvalidEvent, f.jobID, err)
		}
		f.outputs = ev.GetOutputs()
	}
	return f, nil
}

// validOutputs checks what the master playlist and playback routes will echo:
// rendition names become URI path segments, codecs a quoted attribute.
func validOutputs(o *kilnv1.AssetOutputs) error {
	if o == nil || o.GetBucket() == "" || len(o.GetRenditions()) == 0 {
		return errors.New("ready without outputs bucket and renditions")
	}
	seen := make(map[string]bool)
	for _, r := range o.GetRenditions() {
		switch {
		case !renditionName.MatchString(r.GetName()):
			return fmt.Errorf("bad rendition name %q", r.GetName())
		case seen[r.GetName()]:
			return fmt.Errorf("duplicate rendition %q", r.GetName())
		case !codecsString.MatchString(r.GetCodecs()):
			return fmt.Errorf("rendition %s: bad codecs %q", r.GetName(), r.GetCodecs())
		case r.GetPlaylistKey() == "":
			return fmt.Errorf("rendition %s: no playlist key", r.GetName())
		case r.GetBandwidth() <= 0:
			return fmt.Errorf("rendition %s: no bandwidth", r.GetName())
		}
		seen[r.GetName()] = true
	}
	return nil
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

// Apply records ev in one transaction and reports whether it moved the job:
// created it, advanced its state (or failed it), or raised its progress
// within the current state.
//
// Events are at-least-once and unordered: the first event seen for a job
// creates it from whatever it carries; an event ranking below the current
// state, any event after a terminal state, and repeats are ignored
// (changed=false). Ignored events still fill in facts the row lacks (source,
// preset, media, plan) so that, e.g., a QUEUED arriving after PROBING still
// records the source. Applied events overwrite media and plan when they carry
// them. The transition to READY writes the asset and replaces its renditions.
func (s *Store) Apply(ctx context.Context, ev *kilnv1.JobEvent) (changed bool, err error) {
	now := s.now().UTC()
	f, err := factOf(ev, now)
	if err != nil {
		return false, err
	}
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		if changed, err = apply(ctx, tx, f, now); err != nil {
			return err
		}
		for _, h := range s.hooks {
			if err := h(ctx, tx, ev, changed); err != nil {
				return err
			}
		}
		return nil
	})
	return changed, err
}

func apply(ctx context.Context, tx *sql.Tx, f *fact, now time.Time) (bool, error) {
	col := f.state.column()
	res, err := tx.ExecContext(ctx, `INSERT INTO jobs (id, asset_id, state, progress, preset,
			source_bucket, source_key, source_etag, source_size, error_code, error_message,
			media_json, plan_json, created_at, updated_at, playback_policy, `+col+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT DO NOTHING`,
		f.jobID, f.assetID, f.state, f.progress, f.preset,
		f.source.Bucket, f.source.Key, f.source.ETag, f.source.Size, f.errCode, f.errMessage,
		f.media, f.plan, fmtTime(now), fmtTime(now), f.policy, fmtTime(f.at))
	if err != nil {
		return false, fmt.Errorf("catalog: job %s: insert: %w", f.jobID, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return false, fmt.Errorf("catalog: job %s: insert: %w", f.jobID, err)
	} else if n == 1 {
		return true, writeAsset(ctx, tx, f)
	}

	var cur State
	var progress float64
	if err := tx.QueryRowContext(ctx, `SELECT state, progress FROM jobs WHERE id = ?`, f.jobID).Scan(&cur, &progress); err != nil {
		return false, fmt.Errorf("catalog: job %s: read state: %w", f.jobID, err)
	}

	// Source, preset and playback policy are facts of the job, never
	// contradicted: fill blanks.
	const fillSource = `
		preset        = CASE WHEN preset = '' THEN :preset ELSE preset END,
		playback_policy = CASE WHEN playback_policy = '' THEN :policy ELSE playback_policy END,
		source_bucket = CASE WHEN source_bucket = '' THEN :bucket ELSE source_bucket END,
		source_key    = CASE WHEN source_bucket = '' THEN :key ELSE source_key END,
		source_etag   = CASE WHEN source_bucket = '' THEN :etag ELSE source_etag END,
		source_size   = CASE WHEN source_bucket = '' THEN :size ELSE source_size END,`
	args := []any{
		sql.Named("id", f.jobID), sql.Named("now", fmtTime(now)),
		sql.Named("preset", f.preset), sql.Named("policy", f.policy), sql.Named("bucket", f.source.Bucket), sql.Named("key", f.source.Key),
		sql.Named("etag", f.source.ETag), sql.Named("size", f.source.Size),
		sql.Named("media", f.media), sql.Named("plan", f.plan),
	}
	switch {
	case advances(cur, f.state):
		args = append(args, sql.Named("state", f.state), sql.Named("progress", f.progress),
			sql.Named("at", fmtTime(f.at)), sql.Named("code", f.errCode), sql.Named("message", f.errMessage))
		_, err = tx.ExecContext(ctx, `UPDATE jobs SET `+fillSource+`
			state = :state, progress = :progress, error_code = :code, error_message = :message,
			media_json = COALESCE(:media, media_json), plan_json = COALESCE(:plan, plan_json),
			`+col+` = COALESCE(`+col+`, :at), updated_at = :now
			WHERE id = :id`, args...)
		if err != nil {
			return false, fmt.Errorf("catalog: job %s: %s -> %s: %w", f.jobID, cur, f.state, err)
		}
		return true, writeAsset(ctx, tx, f)

	case cur == f.state && !cur.Terminal() && f.progress > progress:
		args = append(args, sql.Named("progress", f.progress))
		_, err = tx.ExecContext(ctx, `UPDATE jobs SET `+fillSource+`
			progress = :progress,
			media_json = COALESCE(:media, media_json), plan_json = COALESCE(:plan, plan_json),
			updated_at = :now
			WHERE id = :id`, args...)
		if err != nil {
			return false, fmt.Errorf("catalog: job %s: progress: %w", f.jobID, err)
		}
		return true, nil

	default: // stale, repeated, or after a terminal state
		_, err = tx.ExecContext(ctx, `UPDATE jobs SET `+fillSource+`
			media_json = COALESCE(media_json, :media), plan_json = COALESCE(plan_json, :plan),
			updated_at = :now
			WHERE id = :id AND (
				(preset = '' AND :preset <> '') OR (source_bucket = '' AND :bucket <> '') OR
				(playback_policy = '' AND :policy <> '') OR
				(media_json IS NULL AND :media IS NOT NULL) OR (plan_json IS NULL AND :plan IS NOT NULL))`, args...)
		if err != nil {
			return false, fmt.Errorf("catalog: job %s: backfill: %w", f.jobID, err)
		}
		return false, nil
	}
}

// writeAsset records a ready job's outputs, replacing any earlier renditions.
// It does nothing for other states.
func writeAsset(ctx context.Context, tx *sql.Tx, f *fact) error {
	if f.state != StateReady {
		return nil
	}
	o := f.outputs
	duration := o.GetDurationSeconds()
	if duration == 0 && f.media.Valid {
		var m kilnv1.MediaInfo
		if protoIn.Unmarshal([]byte(f.media.String), &m) == nil {
			duration = m.GetDurationSeconds()
		}
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO assets (id, job_id, outputs_bucket, outputs_prefix,
			master_key, mp4_key, poster_key, duration_seconds, ready_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET outputs_bucket = excluded.outputs_bucket,
			outputs_prefix = excluded.outputs_prefix, master_key = excluded.master_key,
			mp4_key = excluded.mp4_key, poster_key = excluded.poster_key,
			duration_seconds = excluded.duration_seconds, ready_at = excluded.ready_at`,
		f.assetID, f.jobID, o.GetBucket(), o.GetPrefix(), o.GetMasterKey(), o.GetMp4Key(), o.GetPosterKey(),
		duration, fmtTime(f.at))
	if err != nil {
		return fmt.Errorf("catalog: asset %s: upsert: %w", f.assetID, err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM renditions WHERE asset_id = ?`, f.assetID); err != nil {
		return fmt.Errorf("catalog: asset %s: clear renditions: %w", f.assetID, err)
	}
	for _, r := range o.GetRenditions() {
		_, err := tx.ExecContext(ctx, `INSERT INTO renditions (asset_id, name, width, height, frame_rate,
				bandwidth, average_bandwidth, codecs, playlist_key)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			f.assetID, r.GetName(), r.GetWidth(), r.GetHeight(), r.GetFrameRate(),
			r.GetBandwidth(), r.GetAverageBandwidth(), r.GetCodecs(), r.GetPlaylistKey())
		if err != nil {
			return fmt.Errorf("catalog: asset %s: rendition %s: %w", f.assetID, r.GetName(), err)
		}
	}
	return nil
}

// Job returns the job with the given id, or an error wrapping ErrNotFound.
func (s *Store) Job(ctx context.Context, id string) (*Job, error) {
	var (
		j                = &Job{ID: id, Timestamps: make(map[State]time.Time)}
		media, plan      sql.NullString
		created, updated string
		ts               = make([]sql.NullString, len(states))
		dest             = []any{&j.AssetID, &j.State, &j.Progress, &j.Preset, &j.PlaybackPolicy,
			&j.Source.Bucket, &j.Source.Key, &j.Source.ETag, &j.Source.Size,
			&j.ErrorCode, &j.ErrorMessage, &media, &plan, &created, &updated}
		cols []string
	)
	for i, st := range states {
		cols = append(cols, st.column)
		dest = append(dest, &ts[i])
	}
	err := s.db.QueryRowContext(ctx, `SELECT asset_id, state, progress, preset, playback_policy,
			source_bucket, source_key, source_etag, source_size, error_code, error_message,
			media_json, plan_json, created_at, updated_at, `+strings.Join(cols, ", ")+`
		FROM jobs WHERE id = ?`, id).Scan(dest...)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("catalog: job %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("catalog: job %s: %w", id, err)
	}
	j.PlaybackPolicy = storedPolicy(j.PlaybackPolicy)
	if j.CreatedAt, err = parseTime(created); err != nil {
		return nil, fmt.Errorf("catalog: job %s: created_at: %w", id, err)
	}
	if j.UpdatedAt, err = parseTime(updated); err != nil {
		return nil, fmt.Errorf("catalog: job %s: updated_at: %w", id, err)
	}
	for i, st := range states {
		if !ts[i].Valid {
			continue
		}
		if j.Timestamps[st.state], err = parseTime(ts[i].String); err != nil {
			return nil, fmt.Errorf("catalog: job %s: %s: %w", id, st.column, err)
		}
	}
	if media.Valid {
		j.Media = new(kilnv1.MediaInfo)
		if err := protoIn.Unmarshal([]byte(media.String), j.Media); err != nil {
			return nil, fmt.Errorf("catalog: job %s: media: %w", id, err)
		}
	}
	if plan.Valid {
		j.Plan = new(kilnv1.Plan)
		if err := protoIn.Unmarshal([]byte(plan.String), j.Plan); err != nil {
			return nil, fmt.Errorf("catalog: job %s: plan: %w", id, err)
		}
	}
	return j, nil
}

// Asset returns the asset with the given id, or an error wrapping
// ErrNotFound when no job produces it. The asset of a job that is not ready
// yet carries only ID, JobID and State.
func (s *Store) Asset(ctx context.Context, id string) (*Asset, error) {
	a := &Asset{ID: id}
	var (
		bucket, prefix, master, mp4, poster, readyAt sql.NullString
		duration                                     sql.NullFloat64
	)
	err := s.db.QueryRowContext(ctx, `SELECT j.id, j.state, j.playback_policy, a.outputs_bucket, a.outputs_prefix,
			a.master_key, a.mp4_key, a.poster_key, a.duration_seconds, a.ready_at
		FROM jobs j LEFT JOIN assets a ON a.id = j.asset_id
		WHERE j.asset_id = ?`, id).
		Scan(&a.JobID, &a.State, &a.PlaybackPolicy, &bucket, &prefix, &master, &mp4, &poster, &duration, &readyAt)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("catalog: asset %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("catalog: asset %s: %w", id, err)
	}
	a.PlaybackPolicy = storedPolicy(a.PlaybackPolicy)
	if !readyAt.Valid { // not ready yet
		return a, nil
	}
	a.Bucket, a.Prefix, a.MasterKey, a.MP4Key, a.PosterKey = bucket.String, prefix.String, master.String, mp4.String, poster.String
	a.DurationSeconds = duration.Float64
	if a.ReadyAt, err = parseTime(readyAt.String); err != nil {
		return nil, fmt.Errorf("catalog: asset %s: ready_at: %w", id, err)
	}
	rows, err := s.db.QueryContext(ctx, `SELECT name, width, height, frame_rate, bandwidth,
			average_bandwidth, codecs, playlist_key
		FROM renditions WHERE asset_id = ? ORDER BY bandwidth, name`, id)
	if err != nil {
		return nil, fmt.Errorf("catalog: asset %s: renditions: %w", id, err)
	}
	defer rows.Close()
	for rows.Next() {
		var r Rendition
		if err := rows.Scan(&r.Name, &r.Width, &r.Height, &r.FrameRate, &r.Bandwidth,
			&r.AverageBandwidth, &r.Codecs, &r.PlaylistKey); err != nil {
			return nil, fmt.Errorf("catalog: asset %s: renditions: %w", id, err)
		}
		a.Renditions = append(a.Renditions, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("catalog: asset %s: renditions: %w", id, err)
	}
	return a, nil
}

// storedPolicy reads the playback_policy column: "" (no QUEUED event
// recorded yet) fails closed as signed.
func storedPolicy(p string) string {
	if p == PolicyPublic {
		return PolicyPublic
	}
	return PolicySigned
}

// timeLayout is fixed-width UTC so stored times sort as text.
const timeLayout = "2006-01-02T15:04:05.000000000Z"

func fmtTime(t time.Time) string { return t.UTC().Format(timeLayout) }

func parseTime(s string) (time.Time, error) { return time.Parse(timeLayout, s) }

// protoRenditions converts the asset's renditions for the packager's
// playlist writer.
func (a *Asset) protoRenditions() []*kilnv1.Rendition {
	out := make([]*kilnv1.Rendition, 0, len(a.Renditions))
	for _, r := range a.Renditions {
		out = append(out, &kilnv1.Rendition{
			Name: r.Name, Width: int32(r.Width), Height: int32(r.Height), FrameRate: r.FrameRate,
			Bandwidth: r.Bandwidth, AverageBandwidth: r.AverageBandwidth, Codecs: r.Codecs, PlaylistKey: r.PlaylistKey,
		})
	}
	return out
}
