// Package catalog is the single writer of job and asset state. It consumes
// JobEvents, keeps jobs, assets and renditions in a Store, and serves the
// REST API and HLS playback (a master playlist generated from its own state,
// media playlists and segments from object storage).
//
// The state machine (Decide) and event validation (FactOf) are pure and
// shared by every Store; catalog/sqlite is the SQLite one, and
// catalog/storetest the contract every Store passes.
package catalog

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/kilnvideo/kiln/internal/playlist"
	"github.com/kilnvideo/kiln/internal/quota"
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
	// ErrConflict means the job is in a state that does not allow the
	// operation (e.g. deleting a running job).
	ErrConflict = errors.New("catalog: conflict")
	// ErrNoRendition means a ready asset has no rendition of that name
	// (it wraps ErrNotFound).
	ErrNoRendition = fmt.Errorf("%w: no such rendition", ErrNotFound)
)

// Store keeps the catalog's state: what the Service and its API need of a
// backend. Implementations must be safe for concurrent use and pass
// storetest.Run.
type Store interface {
	// Apply records ev atomically and reports whether it changed the job:
	// it validates ev with FactOf (errors wrap ErrInvalidEvent) and does
	// what Decide says. A READY or playable event that writes the asset
	// replaces its renditions and rendition failures; a playable event
	// changes the job only the first time in its attempt.
	Apply(ctx context.Context, ev *kilnv1.JobEvent) (changed bool, err error)
	// Job returns the job with the given id, or an error wrapping
	// ErrNotFound (also for a deleted job).
	Job(ctx context.Context, id string) (*Job, error)
	// ListJobs returns jobs newest first (created_at, then id, descending),
	// deleted ones and, with f.Tenant, other tenants' excluded, and the cursor of the next page (nil on the
	// last).
	ListJobs(ctx context.Context, f JobFilter) ([]*Job, *Cursor, error)
	// Asset returns the asset with the given id, or an error wrapping
	// ErrNotFound when no job (or a deleted one) produces it. The asset of a
	// job that is neither ready nor playable (Asset.Playable) carries only
	// ID, JobID, State, PlaybackPolicy and PlayableAt.
	Asset(ctx context.Context, id string) (*Asset, error)
	// OutputsBucket returns the outputs bucket an asset's READY or playable
	// event recorded ("" when none), deleted or not.
	OutputsBucket(ctx context.Context, assetID string) (string, error)
	// DeleteJob marks a terminal job (and its asset) deleted: both read as
	// not found from then on and later events are ignored. It returns the
	// job as it was. Deleting a deleted job again succeeds (so that a failed
	// removal of its objects can be repeated); a running job gives
	// ErrConflict, an unknown one ErrNotFound.
	DeleteJob(ctx context.Context, id string) (*Job, error)
	// RetryRendition counts one more retry of the failed rendition name of
	// the ready asset assetID and records it as pending, atomically, and
	// returns it: the caller enqueues its packaging after the commit (no
	// network call inside a transaction) and settles it with
	// RenditionRetryDone. It returns an error wrapping ErrNotFound when the
	// asset is unknown, ErrNoRendition when a ready asset has no such
	// rendition, ErrConflict when the asset is not ready or the rendition is
	// not failed.
	RetryRendition(ctx context.Context, assetID, name string) (RenditionRetry, error)
	// RenditionRetryDone settles retry number retry of a rendition: when
	// enqueued, it is no longer pending; when not, it is taken back (the
	// count goes down again). A retry already settled (or superseded) is
	// left alone.
	RenditionRetryDone(ctx context.Context, assetID, name string, retry int32, enqueued bool) error
	// PendingRenditionRetries returns up to limit rendition retries
	// recorded before before and never settled — their enqueue was lost
	// (a crash between the commit and the enqueue) — oldest first, of ready
	// assets that are not deleted. The reconciler enqueues them.
	PendingRenditionRetries(ctx context.Context, before time.Time, limit int) ([]RenditionRetry, error)
	// JobTenant returns the tenant of job id, deleted or not ("" while its
	// QUEUED is not recorded), or an error wrapping ErrNotFound when no
	// event of it was recorded.
	JobTenant(ctx context.Context, id string) (string, error)
	// HasJob reports whether any event of job id was recorded, deleted or
	// not (what the reconciler asks of a source object's job).
	HasJob(ctx context.Context, id string) (bool, error)
	// StaleJobs returns jobs that are not terminal, not deleted and were
	// last updated before f.Before, least recently updated first (then by
	// id), one page of f.PageLimit() after f.After.
	StaleJobs(ctx context.Context, f StaleFilter) ([]*Job, error)
	// TenantUsage returns what each tenant (only tenant, when not "") uses
	// of the quotas counted here: the bytes of its sources not deleted, and
	// the seconds of video of its jobs that became ready since since
	// (deleted since or not: the encoding happened). A tenant that uses
	// nothing is absent.
	TenantUsage(ctx context.Context, tenant string, since time.Time) (map[string]quota.Usage, error)
	// RunningSources returns the source keys of the jobs that have not
	// ended, deleted ones excluded, by tenant (jobs of no tenant yet left
	// out): what counts against a concurrency limit.
	RunningSources(ctx context.Context) (map[string][]string, error)
	// EndedSources returns which of keys are source keys of recorded jobs
	// that ended (or were deleted).
	EndedSources(ctx context.Context, keys []string) ([]string, error)
	// CountJobs returns how many jobs, deleted ones excluded, are in each
	// state (a state without a job is absent): kiln_jobs on /metrics.
	CountJobs(ctx context.Context) (map[State]int, error)
	// AcquireLease takes or renews the lease name for holder until
	// now+ttl, atomically (a conditional update, else an insert, in one
	// transaction), and reports whether holder holds it now: it does when
	// no one held it, holder held it already, or the lease had expired by
	// now. The times are the callers', so replicas need roughly agreeing
	// clocks (ttl absorbs the difference).
	AcquireLease(ctx context.Context, name, holder string, now time.Time, ttl time.Duration) (bool, error)
	// ReleaseLease gives up holder's lease name; it does nothing when
	// another holder has it.
	ReleaseLease(ctx context.Context, name, holder string) error
	// Close releases the store.
	Close() error
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
	// PlaybackPolicy is policy.Public or policy.Signed (see Asset).
	PlaybackPolicy string
	// TenantID owns the job and its asset; "" until the job's QUEUED event
	// (which alone carries it) is recorded: then no tenant sees it.
	TenantID string
	// Priority is the upload's (tasks.Priorities): the order of its
	// transcode among its tenant's waiting work.
	Priority string
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
	// PlayableAt is the event time of the attempt's first playable event
	// (its outputs play before READY); zero until then, and again in a new
	// attempt.
	PlayableAt time.Time
	// Chunks is a chunked transcode's progress, zero for a job that is not
	// chunked: it only grows within an attempt and a new attempt resets it.
	Chunks Chunks
	// FailedRenditions names the renditions of a ready job whose packaging
	// failed (see Asset.Failed), ordered by name.
	FailedRenditions []string
}

// Chunks counts the chunks of a chunked transcode: Done encoded and
// stored, out of Total.
type Chunks struct {
	Done, Total int32
}

// Asset is the catalog's view of one asset: the outputs of a job. Everything
// but ID, JobID, State, PlaybackPolicy and PlayableAt is zero until the job
// is ready or playable (Playable), and again when it fails or is canceled
// before READY.
//
// PlaybackPolicy is policy.Public or policy.Signed. Until the job's QUEUED
// event (which alone carries the policy) is recorded it reads policy.Signed:
// an asset whose policy is unknown fails closed (policy.FailClosed).
type Asset struct {
	ID              string
	JobID           string
	State           State  // the job's state
	PlaybackPolicy  string // see above
	TenantID        string // the job's (Job.TenantID)
	Bucket          string
	Prefix          string
	MP4Key          string
	PosterKey       string
	DurationSeconds float64 // the expected one until READY measures it
	ReadyAt         time.Time
	// PlayableAt is the job's (Job.PlayableAt): its outputs play from then
	// on, before READY (bandwidths estimated, media playlists growing).
	PlayableAt time.Time
	Renditions []Rendition // ordered by bandwidth, then name, ascending
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
	// EncodedKey is the key, in the asset's bucket, of the rendition's
	// encoded object: what a retry packages.
	EncodedKey string
	// Retries counts the retries requested so far.
	Retries int32
}

// Ready reports whether the asset's job is done: its outputs are complete.
func (a *Asset) Ready() bool { return a.State == StateReady }

// Playable reports whether the asset can be played: it is ready, or its job
// is still running and its outputs play already (EVENT media playlists).
func (a *Asset) Playable() bool {
	return a.Ready() || (!a.PlayableAt.IsZero() && !a.State.Terminal())
}

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
	// EncodedKey is the key of the encoded object it was packaged from.
	EncodedKey string
}

// JobFilter selects jobs for ListJobs.
type JobFilter struct {
	// State, when set, keeps jobs in that state.
	State State
	// SourceKey, when set, keeps jobs of that source object key.
	SourceKey string
	// Name, when set, keeps jobs whose source file name contains it,
	// ignoring ASCII case (FileNameFilter): the library's search.
	Name string
	// Tenant, when set, keeps the jobs of that tenant (the API always
	// sets it: a key lists its own tenant's jobs only).
	Tenant string
	// Limit bounds the page; 1 to MaxListLimit, default DefaultListLimit.
	Limit int
	// After continues a listing after this position (the page's last job).
	After *Cursor
}

// MaxNameFilter bounds JobFilter.Name (GET /v1/jobs?q=).
const MaxNameFilter = 100

// unsafeNameRun is what layout.SafeName replaces in a file name ('/'
// stays: a key put in the bucket directly is searched whole).
var unsafeNameRun = regexp.MustCompile(`[^A-Za-z0-9._/-]+`)

// FileNameFilter is the text JobFilter.Name searches for in the stored
// file names: as layout.SafeName stored them, every run of other
// characters than letters, digits, '.', '_', '-' and '/' is one '_' ("my
// clip.mp4" finds my_clip.mp4).
func FileNameFilter(name string) string { return unsafeNameRun.ReplaceAllString(name, "_") }

// StaleFilter selects a page of StaleJobs.
type StaleFilter struct {
	Before time.Time
	// After, when set, continues after this job (its UpdatedAt and ID):
	// the last of the previous page.
	After *Job
	// Limit bounds the page as JobFilter.Limit does.
	Limit int
}

// PageLimit is f.Limit bounded as StaleJobs uses it.
func (f StaleFilter) PageLimit() int { return JobFilter{Limit: f.Limit}.PageLimit() }

// Page sizes of ListJobs.
const (
	DefaultListLimit = 20
	MaxListLimit     = 100
)

// PageLimit is f.Limit bounded as ListJobs uses it.
func (f JobFilter) PageLimit() int {
	if f.Limit <= 0 {
		return DefaultListLimit
	}
	return min(f.Limit, MaxListLimit)
}

// Cursor is a position in the newest-first job order.
type Cursor struct {
	CreatedAt time.Time
	ID        string
}

// RenditionRetry is what a rendition retry needs, read atomically with the
// count of the retry (or, for a pending one, with its listing).
type RenditionRetry struct {
	Job   *Job
	Asset *Asset // ID, JobID, State, Bucket, Prefix, PosterKey and Thumbnails are set
	Name  string
	// EncodedKey is the failed rendition's encoded object in Asset.Bucket
	// ("" when unknown).
	EncodedKey string
	// Retry is the new value of the rendition's retry count (1, 2, …).
	Retry int32
}

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
