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
	"github.com/kilnvideo/kiln/internal/playlist"
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

// Job states. Queued < Probing < Transcoding < Packaging < Ready; Failed and
// Canceled may follow any non-terminal state. Ready, Failed and Canceled are
// terminal (within an attempt: a retry starts a new attempt from Queued).
const (
	StateQueued      State = "queued"
	StateProbing     State = "probing"
	StateTranscoding State = "transcoding"
	StatePackaging   State = "packaging"
	StateReady       State = "ready"
	StateFailed      State = "failed"
	StateCanceled    State = "canceled"
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
	{StateCanceled, kilnv1.JobState_JOB_STATE_CANCELED, "canceled_at"},
}

// Terminal reports whether no later event can change the state.
func (s State) Terminal() bool { return s == StateReady || s == StateFailed || s == StateCanceled }

// ParseState returns the state called name.
func ParseState(name string) (State, bool) {
	for _, st := range states {
		if string(st.state) == name {
			return st.state, true
		}
	}
	return "", false
}

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
	case next == StateFailed || next == StateCanceled:
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
	// Attempt is the job's current run: 1, or more after retries.
	Attempt int32
	// ErrorCode and ErrorMessage are set when State is StateFailed or
	// StateCanceled.
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
	// FailedRenditions names the renditions of a ready job whose packaging
	// failed (see Asset.Failed).
	FailedRenditions []string
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
	// Thumbnails are the poster, storyboard and scrub thumbnails; nil when
	// the producer recorded none.
	Thumbnails *kilnv1.Thumbnails
	// Failed are the renditions whose packaging failed for good, ordered by
	// name; they are not in Renditions (nor in the master playlist).
	Failed []FailedRendition
}

// FailedRendition is a rendition of a ready asset that could not be
// packaged. It can be retried on its own (Store.RetryRendition).
type FailedRendition struct {
	Name string
	// Width and Height are the plan's for the rung of that name, 0 when
	// unknown.
	Width, Height int
	ErrorCode     string
	ErrorMessage  string
	// Retries counts the retries requested so far.
	Retries int32
}

// FailedRendition returns the failed rendition called name.
func (a *Asset) FailedRendition(name string) (FailedRendition, bool) {
	for _, r := range a.Failed {
		if r.Name == name {
			return r, true
		}
	}
	return FailedRendition{}, false
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
	db          *sql.DB
	now         func() time.Time
	hooks       []ApplyHook
	deleteHooks []DeleteHook
}

// DeleteHook runs inside the transaction that marks an asset deleted
// (the webhook outbox records asset.deleted with it).
type DeleteHook func(ctx context.Context, tx *sql.Tx, jobID, assetID string) error

// OnDelete registers a hook; call it before the store is used.
func (s *Store) OnDelete(h DeleteHook) { s.deleteHooks = append(s.deleteHooks, h) }

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
	{
		// Canceled is a terminal state like failed; attempt numbers the
		// runs of a job (retries); deleted_at hides a deleted asset's job
		// for good; thumbnails_json keeps AssetOutputs.thumbnails.
		`ALTER TABLE jobs ADD COLUMN canceled_at TEXT`,
		`ALTER TABLE jobs ADD COLUMN attempt INTEGER NOT NULL DEFAULT 1`,
		`ALTER TABLE jobs ADD COLUMN deleted_at TEXT`,
		`ALTER TABLE assets ADD COLUMN thumbnails_json TEXT`,
		`CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created_at, id)`,
		`CREATE INDEX IF NOT EXISTS jobs_source_key ON jobs (source_key)`,
	},
	{
		// Renditions whose packaging failed for good while the others
		// succeeded (AssetOutputs.failed_renditions); retries counts the
		// rendition retries requested. A name is in renditions or here,
		// never both.
		`CREATE TABLE IF NOT EXISTS rendition_failures (
			asset_id TEXT NOT NULL REFERENCES assets (id) ON DELETE CASCADE,
			name     TEXT NOT NULL,
			code     TEXT NOT NULL,
			message  TEXT NOT NULL DEFAULT '',
			retries  INTEGER NOT NULL DEFAULT 0,
			PRIMARY KEY (asset_id, name)
		)`,
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
	attempt        int32     // ≥ 1
	at             time.Time // event time, or now when the event has none
	progress       float64
	preset         string
	policy         string // set from QUEUED events only, else ""
	source         Source
	errCode        string
	errMessage     string
	media, plan    sql.NullString // protojson, NULL when absent
	outputs        *kilnv1.AssetOutputs
	thumbnails     sql.NullString // protojson of outputs.thumbnails
	partial        bool           // READY updating only the renditions it names
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
	f.attempt = max(ev.GetAttempt(), 1)
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
	switch st {
	case StateFailed:
		f.errCode, f.errMessage = ev.GetError().GetCode(), ev.GetError().GetMessage()
		if f.errCode == "" {
			f.errCode = "internal"
		}
	case StateCanceled:
		f.errCode, f.errMessage = ev.GetError().GetCode(), ev.GetError().GetMessage()
		if f.errCode == "" {
			f.errCode, f.errMessage = "canceled", "the job was canceled"
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
		f.partial = f.outputs.GetPartial()
		if f.thumbnails, err = marshalOpt(f.outputs.GetThumbnails()); err != nil {
			return nil, fmt.Errorf("catalog: job %s: thumbnails: %w", f.jobID, err)
		}
	}
	return f, nil
}

// validOutputs checks what the master playlist and playback routes will echo:
// rendition names become URI path segments, codecs a quoted attribute.
// A partial READY (a rendition retry) needs only the renditions it names,
// ready or failed.
func validOutputs(o *kilnv1.AssetOutputs) error {
	switch {
	case o.GetPartial():
		if len(o.GetRenditions())+len(o.GetFailedRenditions()) == 0 {
			return errors.New("partial ready without renditions")
		}
	case o == nil || o.GetBucket() == "" || len(o.GetRenditions()) == 0:
		return errors.New("ready without outputs bucket and renditions")
	}
	seen := make(map[string]bool)
	for _, r := range o.GetFailedRenditions() {
		switch {
		case !renditionName.MatchString(r.GetName()):
			return fmt.Errorf("bad failed rendition name %q", r.GetName())
		case seen[r.GetName()]:
			return fmt.Errorf("duplicate failed rendition %q", r.GetName())
		}
		seen[r.GetName()] = true
	}
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
// (changed=false), and so is every event of an attempt older than the job's
// or of a deleted job; an event of a newer attempt (a retry) resets the job to
// its state — this is the only way out of a terminal state. Ignored events of
// the current attempt still fill in facts the row lacks (source,
// preset, media, plan) so that, e.g., a QUEUED arriving after PROBING still
// records the source. Applied events overwrite media and plan when they carry
// them. The transition to READY writes the asset and replaces its renditions
// and rendition failures.
//
// A partial READY (outputs.partial, a rendition retry) applies only to a job
// that is ready in the same attempt, and is ignored otherwise: each ready
// rendition it names is upserted (and its failure row removed), each failed
// one upserted into the failures, keeping its retry count, unless that
// rendition is ready already (a late failure never hides a working
// rendition). changed reports whether a row actually changed, so a repeated
// partial event is a harmless no-op.
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
	if f.partial {
		return applyPartial(ctx, tx, f, now)
	}
	col := f.state.column()
	res, err := tx.ExecContext(ctx, `INSERT INTO jobs (id, asset_id, state, progress, preset,
			source_bucket, source_key, source_etag, source_size, error_code, error_message,
			media_json, plan_json, created_at, updated_at, playback_policy, attempt, `+col+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT DO NOTHING`,
		f.jobID, f.assetID, f.state, f.progress, f.preset,
		f.source.Bucket, f.source.Key, f.source.ETag, f.source.Size, f.errCode, f.errMessage,
		f.media, f.plan, fmtTime(now), fmtTime(now), f.policy, f.attempt, fmtTime(f.at))
	if err != nil {
		return false, fmt.Errorf("catalog: job %s: insert: %w", f.jobID, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return false, fmt.Errorf("catalog: job %s: insert: %w", f.jobID, err)
	} else if n == 1 {
		return true, writeAsset(ctx, tx, f)
	}

	var (
		cur      State
		progress float64
		attempt  int32
		deleted  sql.NullString
	)
	if err := tx.QueryRowContext(ctx, `SELECT state, progress, attempt, deleted_at FROM jobs WHERE id = ?`, f.jobID).
		Scan(&cur, &progress, &attempt, &deleted); err != nil {
		return false, fmt.Errorf("catalog: job %s: read state: %w", f.jobID, err)
	}
	if deleted.Valid || f.attempt < attempt {
		return false, nil // a deleted job never changes; an older attempt is over
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
	case f.attempt > attempt: // a retry: the job starts over from this event
		args = append(args, sql.Named("state", f.state), sql.Named("progress", f.progress), sql.Named("attempt", f.attempt),
			sql.Named("at", fmtTime(f.at)), sql.Named("code", f.errCode), sql.Named("message", f.errMessage))
		var clear []string
		for _, st := range states {
			if st.column != col {
				clear = append(clear, st.column+" = NULL")
			}
		}
		_, err = tx.ExecContext(ctx, `UPDATE jobs SET `+fillSource+`
			state = :state, progress = :progress, attempt = :attempt, error_code = :code, error_message = :message,
			media_json = COALESCE(:media, media_json), plan_json = COALESCE(:plan, plan_json),
			`+strings.Join(clear, ", ")+`, `+col+` = :at, updated_at = :now
			WHERE id = :id`, args...)
		if err != nil {
			return false, fmt.Errorf("catalog: job %s: attempt %d: %w", f.jobID, f.attempt, err)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM renditions WHERE asset_id = ?`, f.assetID); err != nil {
			return false, fmt.Errorf("catalog: job %s: attempt %d: %w", f.jobID, f.attempt, err)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM rendition_failures WHERE asset_id = ?`, f.assetID); err != nil {
			return false, fmt.Errorf("catalog: job %s: attempt %d: %w", f.jobID, f.attempt, err)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM assets WHERE id = ?`, f.assetID); err != nil {
			return false, fmt.Errorf("catalog: job %s: attempt %d: %w", f.jobID, f.attempt, err)
		}
		return true, writeAsset(ctx, tx, f)

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

// applyPartial applies a partial READY event (see Apply).
func applyPartial(ctx context.Context, tx *sql.Tx, f *fact, now time.Time) (bool, error) {
	var (
		cur     State
		attempt int32
		deleted sql.NullString
	)
	err := tx.QueryRowContext(ctx, `SELECT state, attempt, deleted_at FROM jobs WHERE id = ?`, f.jobID).
		Scan(&cur, &attempt, &deleted)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("catalog: job %s: read state: %w", f.jobID, err)
	}
	if deleted.Valid || cur != StateReady || attempt != f.attempt {
		return false, nil // only a ready job's current attempt takes rendition retries
	}
	var n int64
	count := func(res sql.Result, err error) error {
		if err != nil {
			return err
		}
		k, err := res.RowsAffected()
		n += k
		return err
	}
	for _, r := range f.outputs.GetRenditions() {
		if err := count(tx.ExecContext(ctx, `INSERT INTO renditions (asset_id, name, width, height, frame_rate,
				bandwidth, average_bandwidth, codecs, playlist_key)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (asset_id, name) DO UPDATE SET width = excluded.width, height = excluded.height,
				frame_rate = excluded.frame_rate, bandwidth = excluded.bandwidth,
				average_bandwidth = excluded.average_bandwidth, codecs = excluded.codecs,
				playlist_key = excluded.playlist_key
			WHERE (width, height, frame_rate, bandwidth, average_bandwidth, codecs, playlist_key) IS NOT
				(excluded.width, excluded.height, excluded.frame_rate, excluded.bandwidth,
				excluded.average_bandwidth, excluded.codecs, excluded.playlist_key)`,
			f.assetID, r.GetName(), r.GetWidth(), r.GetHeight(), r.GetFrameRate(),
			r.GetBandwidth(), r.GetAverageBandwidth(), r.GetCodecs(), r.GetPlaylistKey())); err != nil {
			return false, fmt.Errorf("catalog: asset %s: rendition %s: %w", f.assetID, r.GetName(), err)
		}
		if err := count(tx.ExecContext(ctx, `DELETE FROM rendition_failures WHERE asset_id = ? AND name = ?`,
			f.assetID, r.GetName())); err != nil {
			return false, fmt.Errorf("catalog: asset %s: rendition %s: %w", f.assetID, r.GetName(), err)
		}
	}
	for _, r := range f.outputs.GetFailedRenditions() {
		code, msg := failureOf(r)
		if err := count(tx.ExecContext(ctx, `INSERT INTO rendition_failures (asset_id, name, code, message)
			SELECT ?1, ?2, ?3, ?4 WHERE NOT EXISTS (SELECT 1 FROM renditions WHERE asset_id = ?1 AND name = ?2)
			ON CONFLICT (asset_id, name) DO UPDATE SET code = excluded.code, message = excluded.message
			WHERE (code, message) IS NOT (excluded.code, excluded.message)`,
			f.assetID, r.GetName(), code, msg)); err != nil {
			return false, fmt.Errorf("catalog: asset %s: failed rendition %s: %w", f.assetID, r.GetName(), err)
		}
	}
	if n == 0 {
		return false, nil // a repeat
	}
	if _, err := tx.ExecContext(ctx, `UPDATE jobs SET updated_at = ? WHERE id = ?`, fmtTime(now), f.jobID); err != nil {
		return false, fmt.Errorf("catalog: job %s: %w", f.jobID, err)
	}
	return true, nil
}

// failureOf is a failed rendition's error code (internal when none) and
// message.
func failureOf(r *kilnv1.FailedRendition) (code, message string) {
	code, message = r.GetError().GetCode(), r.GetError().GetMessage()
	if code == "" {
		code = "internal"
	}
	return code, message
}

// writeAsset records a ready job's outputs, replacing any earlier renditions
// and rendition failures. It does nothing for other states.
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
			master_key, mp4_key, poster_key, duration_seconds, ready_at, thumbnails_json)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET outputs_bucket = excluded.outputs_bucket,
			outputs_prefix = excluded.outputs_prefix, master_key = excluded.master_key,
			mp4_key = excluded.mp4_key, poster_key = excluded.poster_key,
			duration_seconds = excluded.duration_seconds, ready_at = excluded.ready_at,
			thumbnails_json = excluded.thumbnails_json`,
		f.assetID, f.jobID, o.GetBucket(), o.GetPrefix(), "", o.GetMp4Key(), o.GetPosterKey(),
		duration, fmtTime(f.at), f.thumbnails)
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
	if _, err := tx.ExecContext(ctx, `DELETE FROM rendition_failures WHERE asset_id = ?`, f.assetID); err != nil {
		return fmt.Errorf("catalog: asset %s: clear rendition failures: %w", f.assetID, err)
	}
	for _, r := range o.GetFailedRenditions() {
		code, msg := failureOf(r)
		_, err := tx.ExecContext(ctx, `INSERT INTO rendition_failures (asset_id, name, code, message)
			VALUES (?, ?, ?, ?)`, f.assetID, r.GetName(), code, msg)
		if err != nil {
			return fmt.Errorf("catalog: asset %s: failed rendition %s: %w", f.assetID, r.GetName(), err)
		}
	}
	return nil
}

// Job returns the job with the given id, or an error wrapping ErrNotFound
// (also for a deleted job).
func (s *Store) Job(ctx context.Context, id string) (*Job, error) {
	j, deleted, err := s.job(ctx, id)
	if err == nil && deleted {
		err = fmt.Errorf("catalog: job %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return j, err
	}
	if err := s.loadFailed(ctx, j); err != nil {
		return nil, err
	}
	return j, nil
}

// loadFailed fills in j.FailedRenditions of a ready job.
func (s *Store) loadFailed(ctx context.Context, j *Job) error {
	if j.State != StateReady {
		return nil
	}
	rows, err := s.db.QueryContext(ctx, `SELECT name FROM rendition_failures WHERE asset_id = ? ORDER BY name`, j.AssetID)
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

// job reads the job with the given id, deleted or not.
func (s *Store) job(ctx context.Context, id string) (*Job, bool, error) {
	row := s.db.QueryRowContext(ctx, `SELECT `+jobColumns()+`, deleted_at IS NOT NULL FROM jobs WHERE id = ?`, id)
	var deleted bool
	j, err := scanJob(row, &deleted)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, false, fmt.Errorf("catalog: job %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, false, fmt.Errorf("catalog: job %s: %w", id, err)
	}
	return j, deleted, nil
}

// jobColumns are the columns scanJob reads, in order.
func jobColumns() string {
	cols := []string{"id", "asset_id", "state", "progress", "preset", "playback_policy", "attempt",
		"source_bucket", "source_key", "source_etag", "source_size", "error_code", "error_message",
		"media_json", "plan_json", "created_at", "updated_at"}
	for _, st := range states {
		cols = append(cols, st.column)
	}
	return strings.Join(cols, ", ")
}

// scanJob reads one row of jobColumns, then extra.
func scanJob(row interface{ Scan(...any) error }, extra ...any) (*Job, error) {
	var (
		j                = &Job{Timestamps: make(map[State]time.Time)}
		media, plan      sql.NullString
		created, updated string
		ts               = make([]sql.NullString, len(states))
		dest             = []any{&j.ID, &j.AssetID, &j.State, &j.Progress, &j.Preset, &j.PlaybackPolicy, &j.Attempt,
			&j.Source.Bucket, &j.Source.Key, &j.Source.ETag, &j.Source.Size,
			&j.ErrorCode, &j.ErrorMessage, &media, &plan, &created, &updated}
	)
	for i := range states {
		dest = append(dest, &ts[i])
	}
	if err := row.Scan(append(dest, extra...)...); err != nil {
		return nil, err
	}
	var err error
	j.PlaybackPolicy = storedPolicy(j.PlaybackPolicy)
	if j.CreatedAt, err = parseTime(created); err != nil {
		return nil, fmt.Errorf("created_at: %w", err)
	}
	if j.UpdatedAt, err = parseTime(updated); err != nil {
		return nil, fmt.Errorf("updated_at: %w", err)
	}
	for i, st := range states {
		if !ts[i].Valid {
			continue
		}
		if j.Timestamps[st.state], err = parseTime(ts[i].String); err != nil {
			return nil, fmt.Errorf("%s: %w", st.column, err)
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

// JobFilter selects jobs for ListJobs.
type JobFilter struct {
	// State, when set, keeps jobs in that state.
	State State
	// SourceKey, when set, keeps jobs of that source object key.
	SourceKey string
	// Limit bounds the page; 1 to MaxListLimit, default DefaultListLimit.
	Limit int
	// After continues a listing after this position (the page's last job).
	After *Cursor
}

// Page sizes of ListJobs.
const (
	DefaultListLimit = 20
	MaxListLimit     = 100
)

// Cursor is a position in the newest-first job order.
type Cursor struct {
	CreatedAt time.Time
	ID        string
}

// ListJobs returns jobs newest first (created_at, then id, descending),
// deleted ones excluded, and the cursor of the next page (nil on the last).
func (s *Store) ListJobs(ctx context.Context, f JobFilter) ([]*Job, *Cursor, error) {
	if f.Limit <= 0 {
		f.Limit = DefaultListLimit
	}
	f.Limit = min(f.Limit, MaxListLimit)
	where, args := []string{"deleted_at IS NULL"}, []any{}
	if f.State != "" {
		where, args = append(where, "state = ?"), append(args, f.State)
	}
	if f.SourceKey != "" {
		where, args = append(where, "source_key = ?"), append(args, f.SourceKey)
	}
	if f.After != nil {
		where = append(where, "(created_at < ? OR (created_at = ? AND id < ?))")
		t := fmtTime(f.After.CreatedAt)
		args = append(args, t, t, f.After.ID)
	}
	args = append(args, f.Limit+1)
	rows, err := s.db.QueryContext(ctx, `SELECT `+jobColumns()+` FROM jobs WHERE `+strings.Join(where, " AND ")+`
		ORDER BY created_at DESC, id DESC LIMIT ?`, args...)
	if err != nil {
		return nil, nil, fmt.Errorf("catalog: list jobs: %w", err)
	}
	defer rows.Close()
	var jobs []*Job
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
	_ = rows.Close() // one connection: release it before the next queries
	for _, j := range jobs {
		if err := s.loadFailed(ctx, j); err != nil {
			return nil, nil, err
		}
	}
	var next *Cursor
	if len(jobs) > f.Limit {
		jobs = jobs[:f.Limit]
		last := jobs[len(jobs)-1]
		next = &Cursor{CreatedAt: last.CreatedAt, ID: last.ID}
	}
	return jobs, next, nil
}

// ErrConflict means the job is in a state that does not allow the
// operation (e.g. deleting a running job).
var ErrConflict = errors.New("catalog: conflict")

// DeleteJob marks a terminal job (and its asset) deleted: both read as not
// found from then on and later events are ignored. It returns the job as it
// was. Deleting a deleted job again succeeds (so that a failed removal of its
// objects can be repeated); a running job gives ErrConflict.
func (s *Store) DeleteJob(ctx context.Context, id string) (*Job, error) {
	var j *Job
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		var deleted bool
		var err error
		j, err = scanJob(tx.QueryRowContext(ctx, `SELECT `+jobColumns()+`, deleted_at IS NOT NULL FROM jobs WHERE id = ?`, id), &deleted)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("catalog: job %s: %w", id, ErrNotFound)
		case err != nil:
			return fmt.Errorf("catalog: job %s: %w", id, err)
		case deleted:
			return nil
		case !j.State.Terminal():
			return fmt.Errorf("catalog: job %s is %s: %w", id, j.State, ErrConflict)
		}
		now := fmtTime(s.now())
		if _, err := tx.ExecContext(ctx, `UPDATE jobs SET deleted_at = ?, updated_at = ? WHERE id = ?`, now, now, id); err != nil {
			return fmt.Errorf("catalog: delete job %s: %w", id, err)
		}
		for _, h := range s.deleteHooks {
			if err := h(ctx, tx, j.ID, j.AssetID); err != nil {
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

// assetOutputs returns the outputs bucket an asset's READY event recorded
// ("" when none), deleted or not.
func (s *Store) assetOutputs(ctx context.Context, id string) (string, error) {
	var b string
	err := s.db.QueryRowContext(ctx, `SELECT outputs_bucket FROM assets WHERE id = ?`, id).Scan(&b)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return b, err
}

// Asset returns the asset with the given id, or an error wrapping
// ErrNotFound when no job produces it. The asset of a job that is not ready
// yet carries only ID, JobID and State.
func (s *Store) Asset(ctx context.Context, id string) (*Asset, error) {
	a := &Asset{ID: id}
	var (
		bucket, prefix, master, mp4, poster, readyAt, thumbs, plan sql.NullString
		duration                                                   sql.NullFloat64
	)
	err := s.db.QueryRowContext(ctx, `SELECT j.id, j.state, j.playback_policy, a.outputs_bucket, a.outputs_prefix,
			a.master_key, a.mp4_key, a.poster_key, a.duration_seconds, a.ready_at, a.thumbnails_json, j.plan_json
		FROM jobs j LEFT JOIN assets a ON a.id = j.asset_id
		WHERE j.asset_id = ? AND j.deleted_at IS NULL`, id).
		Scan(&a.JobID, &a.State, &a.PlaybackPolicy, &bucket, &prefix, &master, &mp4, &poster, &duration, &readyAt, &thumbs, &plan)
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
	if thumbs.Valid {
		a.Thumbnails = new(kilnv1.Thumbnails)
		if err := protoIn.Unmarshal([]byte(thumbs.String), a.Thumbnails); err != nil {
			return nil, fmt.Errorf("catalog: asset %s: thumbnails: %w", id, err)
		}
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
	_ = rows.Close() // one connection: release it before the next query
	if err := s.loadFailures(ctx, a, plan); err != nil {
		return nil, fmt.Errorf("catalog: asset %s: rendition failures: %w", id, err)
	}
	return a, nil
}

// loadFailures fills in a.Failed, sizes from the plan (protojson) when it
// has a rung of that name.
func (s *Store) loadFailures(ctx context.Context, a *Asset, plan sql.NullString) error {
	rows, err := s.db.QueryContext(ctx, `SELECT name, code, message, retries
		FROM rendition_failures WHERE asset_id = ? ORDER BY name`, a.ID)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var r FailedRendition
		if err := rows.Scan(&r.Name, &r.ErrorCode, &r.ErrorMessage, &r.Retries); err != nil {
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

// errNoRendition: the asset has no such rendition (wraps ErrNotFound).
var errNoRendition = fmt.Errorf("%w: no such rendition", ErrNotFound)

// RenditionRetry is what a rendition retry needs, read in the transaction
// that counts it.
type RenditionRetry struct {
	Job   *Job
	Asset *Asset // Bucket, PosterKey and Thumbnails are set
	Name  string
	// Retry is the new value of the rendition's retry count (1, 2, …).
	Retry int32
}

// RetryRendition counts one more retry of the failed rendition name of the
// ready asset assetID and calls enqueue with it, in one transaction: when
// enqueue fails the count is rolled back. It returns an error wrapping
// ErrNotFound when the asset (or, on a ready asset, the rendition) is
// unknown, ErrConflict when the asset is not ready or the rendition is not
// failed, or enqueue's error as is.
func (s *Store) RetryRendition(ctx context.Context, assetID, name string, enqueue func(RenditionRetry) error) error {
	return s.inTx(ctx, func(tx *sql.Tx) error {
		j, err := scanJob(tx.QueryRowContext(ctx, `SELECT `+jobColumns()+` FROM jobs
			WHERE asset_id = ? AND deleted_at IS NULL`, assetID))
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("catalog: asset %s: %w", assetID, ErrNotFound)
		case err != nil:
			return fmt.Errorf("catalog: asset %s: %w", assetID, err)
		case j.State != StateReady:
			return fmt.Errorf("catalog: asset %s is %s: %w", assetID, j.State, ErrConflict)
		}
		var ready int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM renditions WHERE asset_id = ? AND name = ?`,
			assetID, name).Scan(&ready); err != nil {
			return fmt.Errorf("catalog: asset %s: rendition %s: %w", assetID, name, err)
		}
		if ready > 0 {
			return fmt.Errorf("catalog: asset %s: rendition %s is ready: %w", assetID, name, ErrConflict)
		}
		rr := RenditionRetry{Job: j, Name: name, Asset: &Asset{ID: assetID, JobID: j.ID, State: j.State}}
		err = tx.QueryRowContext(ctx, `UPDATE rendition_failures SET retries = retries + 1
			WHERE asset_id = ? AND name = ? RETURNING retries`, assetID, name).Scan(&rr.Retry)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("catalog: asset %s: rendition %s: %w", assetID, name, errNoRendition)
		case err != nil:
			return fmt.Errorf("catalog: asset %s: rendition %s: count retry: %w", assetID, name, err)
		}
		var thumbs sql.NullString
		if err := tx.QueryRowContext(ctx, `SELECT outputs_bucket, outputs_prefix, poster_key, thumbnails_json
			FROM assets WHERE id = ?`, assetID).Scan(&rr.Asset.Bucket, &rr.Asset.Prefix, &rr.Asset.PosterKey, &thumbs); err != nil {
			return fmt.Errorf("catalog: asset %s: %w", assetID, err)
		}
		if thumbs.Valid {
			rr.Asset.Thumbnails = new(kilnv1.Thumbnails)
			if err := protoIn.Unmarshal([]byte(thumbs.String), rr.Asset.Thumbnails); err != nil {
				return fmt.Errorf("catalog: asset %s: thumbnails: %w", assetID, err)
			}
		}
		return enqueue(rr)
	})
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

// variants are the asset's renditions as master playlist variants.
func (a *Asset) variants() []playlist.Variant {
	out := make([]playlist.Variant, 0, len(a.Renditions))
	for _, r := range a.Renditions {
		out = append(out, playlist.Variant{
			Name: r.Name, Width: r.Width, Height: r.Height, FrameRate: r.FrameRate,
			Bandwidth: r.Bandwidth, AverageBandwidth: r.AverageBandwidth, Codecs: r.Codecs,
		})
	}
	return out
}
