package catalog

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/kilnvideo/kiln/internal/cancel"
	"github.com/kilnvideo/kiln/internal/httpapi"
	"github.com/kilnvideo/kiln/internal/jobid"
	"github.com/kilnvideo/kiln/internal/layout"
	"github.com/kilnvideo/kiln/internal/objstore"
	"github.com/kilnvideo/kiln/internal/quota"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// Error codes of the jobs and assets API, beside the shared httpapi ones.
const (
	// CodeTooManyStreams (429): the API key holds Config.MaxStreamsPerKey
	// event streams already.
	CodeTooManyStreams = "too_many_streams"
	// CodeConflict (409): the job's state does not allow the operation
	// (cancel a finished job, retry a running one, delete a running one).
	CodeConflict = "conflict"
	// CodeNotConfigured (503): the catalog runs without the dependency the
	// operation needs (canceler, retrier, object removal).
	CodeNotConfigured = "not_configured"
)

// MaxJSONBody bounds the body of JSON endpoints.
const MaxJSONBody = 1 << 20

// JobCanceler cancels a job's current attempt (cancel.Service): it stops
// its tasks and publishes the CANCELED event, which the catalog applies
// when it comes back.
type JobCanceler interface {
	Cancel(ctx context.Context, jobID, assetID string) error
}

// JobRetrier starts a new attempt of a failed or canceled job from its
// probe (Retrier). It returns the QUEUED event of the attempt, which
// the catalog applies at once (the copy from the bus is then a repeat).
type JobRetrier interface {
	Retry(ctx context.Context, task *kilnv1.ProbeTask, playbackPolicy string) (*kilnv1.JobEvent, error)
}

// RenditionRetrier enqueues the packaging of one failed rendition of a
// ready asset (Retrier): t.Only names it and t.RenditionRetry numbers
// the retry. The packager then publishes a partial READY event, which the
// catalog applies when it comes.
type RenditionRetrier interface {
	RetryRendition(ctx context.Context, t *kilnv1.PackageTask) error
}

// ObjectRemover deletes objects (objstore.Client). Removing what does not
// exist is not an error.
type ObjectRemover interface {
	Remove(ctx context.Context, bucket, key string) error
	RemovePrefix(ctx context.Context, bucket, prefix string) error
}

var (
	_ JobCanceler   = (*cancel.Service)(nil)
	_ ObjectRemover = (*objstore.Client)(nil)
)

// listJobsJSON is the body of GET /v1/jobs.
type listJobsJSON struct {
	Jobs       []jobJSON `json:"jobs"`
	NextCursor *string   `json:"next_cursor"`
}

// cursorTime is the fixed-width UTC layout of a cursor's time.
const cursorTime = "2006-01-02T15:04:05.000000000Z"

// encodeCursor and decodeCursor make the opaque page cursor: base64url of
// "<created_at>|<job id>".
func encodeCursor(c *Cursor) string {
	return base64.RawURLEncoding.EncodeToString([]byte(c.CreatedAt.UTC().Format(cursorTime) + "|" + c.ID))
}

func decodeCursor(s string) (*Cursor, error) {
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, errors.New("malformed cursor")
	}
	t, id, ok := strings.Cut(string(raw), "|")
	if !ok || !jobid.ValidJob(id) {
		return nil, errors.New("malformed cursor")
	}
	at, err := time.Parse(cursorTime, t)
	if err != nil {
		return nil, errors.New("malformed cursor")
	}
	return &Cursor{CreatedAt: at, ID: id}, nil
}

// maxSourceKey bounds the source_key filter (S3 keys are at most 1024 bytes).
const maxSourceKey = 1024

// listJobs answers GET /v1/jobs?state=&source_key=&q=&limit=&cursor=.
func (s *Service) listJobs(w http.ResponseWriter, r *http.Request) {
	bad := func(msg string) { httpapi.WriteError(w, http.StatusBadRequest, httpapi.CodeBadRequest, msg) }
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		bad("malformed query string")
		return
	}
	for k, v := range q {
		switch k {
		case "state", "source_key", "q", "limit", "cursor":
			if len(v) > 1 {
				bad(k + " given more than once")
				return
			}
		default:
			bad("unknown query parameter " + strconv.Quote(k))
			return
		}
	}
	f := JobFilter{Tenant: httpapi.Tenant(r.Context())}
	if v := q.Get("state"); v != "" {
		st, ok := ParseState(v)
		if !ok {
			bad("unknown state " + strconv.Quote(v))
			return
		}
		f.State = st
	}
	if v := q.Get("source_key"); len(v) > maxSourceKey {
		bad("source_key is too long")
		return
	} else {
		f.SourceKey = v
	}
	if v := strings.TrimSpace(q.Get("q")); utf8.RuneCountInString(v) > MaxNameFilter {
		bad(fmt.Sprintf("q is longer than %d characters", MaxNameFilter))
		return
	} else {
		f.Name = v
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxListLimit {
			bad(fmt.Sprintf("limit must be an integer from 1 to %d", MaxListLimit))
			return
		}
		f.Limit = n
	}
	if v := q.Get("cursor"); v != "" {
		c, err := decodeCursor(v)
		if err != nil {
			bad(err.Error())
			return
		}
		f.After = c
	}
	jobs, next, err := s.store.ListJobs(r.Context(), f)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	out := listJobsJSON{Jobs: make([]jobJSON, 0, len(jobs))}
	for _, j := range jobs {
		v, err := s.jobView(j)
		if err != nil {
			s.internal(w, r, err)
			return
		}
		out.Jobs = append(out.Jobs, v)
	}
	if next != nil {
		c := encodeCursor(next)
		out.NextCursor = &c
	}
	httpapi.WriteJSON(w, http.StatusOK, out)
}

// jobOf loads the job named by the {id} path value, answering the request
// itself (and returning false) when it is malformed or unknown.
func (s *Service) jobOf(w http.ResponseWriter, r *http.Request) (*Job, bool) {
	id := r.PathValue("id")
	if !jobid.ValidJob(id) {
		httpapi.WriteError(w, http.StatusBadRequest, httpapi.CodeInvalidID, "malformed job id")
		return nil, false
	}
	j, err := s.store.Job(r.Context(), id)
	if err == nil && !httpapi.Owns(r.Context(), j.TenantID) {
		err = ErrNotFound // another tenant's job is not there for this key
	}
	if err != nil {
		s.storeError(w, r, err, "job")
		return nil, false
	}
	return j, true
}

// owned answers 404 for an asset id that is unknown or not the request's
// tenant's (and returns false), before an operation changes anything. A
// deleted asset of the tenant is its own still (a delete can be repeated).
func (s *Service) owned(w http.ResponseWriter, r *http.Request, assetID string) bool {
	owner, err := s.store.JobTenant(r.Context(), jobid.JobOf(assetID))
	if err == nil && !httpapi.Owns(r.Context(), owner) {
		err = ErrNotFound
	}
	if err != nil {
		s.storeError(w, r, err, "asset")
		return false
	}
	return true
}

// writeJob answers with the job's JSON.
func (s *Service) writeJob(w http.ResponseWriter, r *http.Request, status int, j *Job) {
	v, err := s.jobView(j)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	httpapi.WriteJSON(w, status, v)
}

// reload reads the job again after a change, falling back to j.
func (s *Service) reload(ctx context.Context, j *Job) *Job {
	if fresh, err := s.store.Job(ctx, j.ID); err == nil {
		return fresh
	}
	return j
}

// cancelJob answers POST /v1/jobs/{id}/cancel: 202 with the job (its state
// turns canceled when the CANCELED event comes back), 409 when it has
// already ended.
func (s *Service) cancelJob(w http.ResponseWriter, r *http.Request) {
	var none struct{}
	if !httpapi.DecodeJSON(w, r, &none, MaxJSONBody, false) {
		return
	}
	j, ok := s.jobOf(w, r)
	if !ok {
		return
	}
	if j.State.Terminal() {
		httpapi.WriteError(w, http.StatusConflict, CodeConflict, "the job has already ended ("+string(j.State)+")")
		return
	}
	if s.canceler == nil {
		httpapi.WriteError(w, http.StatusServiceUnavailable, CodeNotConfigured, "this catalog cannot cancel jobs")
		return
	}
	if err := s.canceler.Cancel(r.Context(), j.ID, j.AssetID); err != nil {
		s.log.Error("cancel job", zap.String("job_id", j.ID), zap.Error(err))
		httpapi.WriteError(w, http.StatusServiceUnavailable, httpapi.CodeUnavailable, "canceling the job failed; retry")
		return
	}
	s.writeJob(w, r, http.StatusAccepted, s.reload(r.Context(), j))
}

// retryJob answers POST /v1/jobs/{id}/retry for a failed or canceled job:
// a new attempt starts from the probe; 202 with the job, now queued.
func (s *Service) retryJob(w http.ResponseWriter, r *http.Request) {
	var none struct{}
	if !httpapi.DecodeJSON(w, r, &none, MaxJSONBody, false) {
		return
	}
	j, ok := s.jobOf(w, r)
	if !ok {
		return
	}
	if j.State != StateFailed && j.State != StateCanceled {
		httpapi.WriteError(w, http.StatusConflict, CodeConflict, "only a failed or canceled job can be retried (it is "+string(j.State)+")")
		return
	}
	if j.Source.Bucket == "" || j.Source.Key == "" {
		httpapi.WriteError(w, http.StatusConflict, CodeConflict, "the job's source is not known yet")
		return
	}
	if s.retrier == nil {
		httpapi.WriteError(w, http.StatusServiceUnavailable, CodeNotConfigured, "this catalog cannot retry jobs")
		return
	}
	// A new attempt is a running job again: its tenant's concurrency and
	// monthly minutes allow it or not (it stores nothing new).
	if s.quotas != nil {
		v, err := s.quotas.Admit(r.Context(), j.TenantID, j.Source.Key, 0, retryHold)
		if err != nil {
			s.log.Error("retry job: quota check", zap.String("job_id", j.ID), zap.Error(err))
			httpapi.WriteError(w, http.StatusServiceUnavailable, httpapi.CodeUnavailable, "the quota store is unavailable; retry")
			return
		}
		if v.Exceeded != "" {
			quota.WriteRefusal(w, v, 0)
			return
		}
	}
	task := &kilnv1.ProbeTask{
		JobId: j.ID, AssetId: j.AssetID, Preset: j.Preset, Attempt: max(j.Attempt, 1) + 1, Priority: j.Priority, TenantId: j.TenantID,
		Source: &kilnv1.ObjectRef{Bucket: j.Source.Bucket, Key: j.Source.Key, Etag: j.Source.ETag, Size: j.Source.Size},
	}
	ev, err := s.retrier.Retry(r.Context(), task, j.PlaybackPolicy)
	if ev != nil {
		// The catalog is the writer of job state: record the new attempt
		// now; the event's copy from the bus will be a repeat.
		if aerr := s.HandleEvent(r.Context(), ev); aerr != nil && err == nil {
			err = aerr
		}
	}
	if err != nil && ev == nil {
		if s.quotas != nil { // the reservation above
			if rerr := s.quotas.Release(context.WithoutCancel(r.Context()), j.TenantID, j.Source.Key); rerr != nil {
				s.log.Warn("retry job: release the quota reservation (it lapses by itself)", zap.String("job_id", j.ID), zap.Error(rerr))
			}
		}
		s.log.Error("retry job", zap.String("job_id", j.ID), zap.Error(err))
		httpapi.WriteError(w, http.StatusServiceUnavailable, httpapi.CodeUnavailable, "retrying the job failed; retry")
		return
	}
	if err != nil { // enqueued, but the QUEUED event was not published
		s.log.Warn("retry job: queued event", zap.String("job_id", j.ID), zap.Error(err))
	}
	s.writeJob(w, r, http.StatusAccepted, s.reload(r.Context(), j))
}

// QuotaAdmitter checks a retried job against its tenant's quotas and
// holds its place among the tenant's concurrent jobs (quota.Store).
type QuotaAdmitter interface {
	Admit(ctx context.Context, tenant, sourceKey string, size int64, hold time.Duration) (quota.Verdict, error)
	Release(ctx context.Context, tenant, sourceKey string) error
}

// retryHold is how long a retry's reservation waits for the usage pass
// to see the job running again.
const retryHold = 2 * time.Minute

// errNoEncodedKey aborts a rendition retry: the failed rendition's encoded
// object is not known (a row older than encoded keys that no backfill
// covered).
var errNoEncodedKey = errors.New("catalog: the rendition's encoded object is not known")

// retryRendition answers POST /v1/assets/{id}/renditions/{name}/retry for a
// failed rendition of a ready asset: its retry count goes up and its
// packaging is enqueued again (a failed enqueue takes the count back); 202
// with the asset,
// in which the rendition stays failed until the packager's partial READY
// event comes back. 404 for an unknown asset or rendition, 409 when the
// asset is not ready, the rendition is not failed, or its encoded object is
// not known. The task packages the encoded object the store recorded for the
// rendition (the packager's key) instead of deriving the encoder's layout.
func (s *Service) retryRendition(w http.ResponseWriter, r *http.Request) {
	var none struct{}
	if !httpapi.DecodeJSON(w, r, &none, MaxJSONBody, false) {
		return
	}
	id, name := r.PathValue("id"), r.PathValue("name")
	if !jobid.ValidAsset(id) {
		httpapi.WriteError(w, http.StatusBadRequest, httpapi.CodeInvalidID, "malformed asset id")
		return
	}
	if !renditionName.MatchString(name) {
		httpapi.WriteError(w, http.StatusNotFound, httpapi.CodeNotFound, "no such rendition")
		return
	}
	if !s.owned(w, r, id) {
		return
	}
	if s.rendRetrier == nil {
		httpapi.WriteError(w, http.StatusServiceUnavailable, CodeNotConfigured, "this catalog cannot retry renditions")
		return
	}
	// The retry is recorded first (its own transaction), then enqueued,
	// then settled: no network call inside a transaction. A crash between
	// leaves it pending; the reconciler enqueues it (same task id).
	rr, err := s.store.RetryRendition(r.Context(), id, name)
	switch {
	case errors.Is(err, ErrConflict):
		httpapi.WriteError(w, http.StatusConflict, CodeConflict, "only a failed rendition of a ready asset can be retried")
		return
	case errors.Is(err, ErrNoRendition):
		httpapi.WriteError(w, http.StatusNotFound, httpapi.CodeNotFound, "no such rendition")
		return
	case errors.Is(err, ErrNotFound):
		httpapi.WriteError(w, http.StatusNotFound, httpapi.CodeNotFound, "asset not found")
		return
	case err != nil:
		s.internal(w, r, err)
		return
	}
	task, err := renditionTask(rr)
	if err == nil {
		err = s.rendRetrier.RetryRendition(r.Context(), task)
	}
	// Settled even when the client has gone: the outcome is known now.
	sctx := context.WithoutCancel(r.Context())
	if serr := s.store.RenditionRetryDone(sctx, id, name, rr.Retry, err == nil); serr != nil {
		// Still pending: the reconciler enqueues it again (the same task
		// id, so at most once) or it stays counted.
		s.log.Warn("rendition retry: settle", zap.String("asset_id", id), zap.String("rendition", name), zap.Error(serr))
	}
	switch {
	case errors.Is(err, errNoEncodedKey):
		httpapi.WriteError(w, http.StatusConflict, CodeConflict, "the rendition's encoded object is not known; retry the job instead")
		return
	case err != nil:
		s.log.Error("retry rendition", zap.String("asset_id", id), zap.String("rendition", name), zap.Error(err))
		httpapi.WriteError(w, http.StatusServiceUnavailable, httpapi.CodeUnavailable, "retrying the rendition failed; retry")
		return
	}
	s.log.Info("rendition retry enqueued", zap.String("asset_id", id), zap.String("rendition", name))
	a, err := s.store.Asset(r.Context(), id)
	if err != nil {
		s.storeError(w, r, err, "asset")
		return
	}
	s.writeAssetView(w, r, http.StatusAccepted, a)
}

// deleteAsset answers DELETE /v1/assets/{id}: the job must have ended (409
// otherwise; cancel it first). The asset and its job read as not found at
// once; then every output object under the asset's prefix and the source
// object are removed. Repeating the request repeats the removal (204).
func (s *Service) deleteAsset(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !jobid.ValidAsset(id) {
		httpapi.WriteError(w, http.StatusBadRequest, httpapi.CodeInvalidID, "malformed asset id")
		return
	}
	if !s.owned(w, r, id) {
		return
	}
	if s.remover == nil {
		httpapi.WriteError(w, http.StatusServiceUnavailable, CodeNotConfigured, "this catalog cannot delete objects")
		return
	}
	j, err := s.store.DeleteJob(r.Context(), jobid.JobOf(id))
	switch {
	case errors.Is(err, ErrConflict):
		httpapi.WriteError(w, http.StatusConflict, CodeConflict, "the job is still running; cancel it first")
		return
	case err != nil:
		s.storeError(w, r, err, "asset")
		return
	}
	// Playback stops at once here, and on the other replicas at their
	// change notice.
	s.changed(j.ID)
	if s.changes != nil {
		if err := s.changes.AnnounceJobChange(j.ID); err != nil {
			s.log.Warn("announce job change", zap.String("job_id", j.ID), zap.Error(err))
		}
	}
	ctx := r.Context()
	buckets := []string{s.outputsBucket}
	if a, err := s.store.OutputsBucket(ctx, id); err == nil && a != "" && a != s.outputsBucket {
		buckets = append(buckets, a)
	}
	for _, b := range buckets {
		if b == "" {
			continue
		}
		if err := s.remover.RemovePrefix(ctx, b, layout.AssetPrefix(id)); err != nil {
			s.log.Error("delete asset outputs", zap.String("asset_id", id), zap.String("bucket", b), zap.Error(err))
			httpapi.WriteError(w, http.StatusBadGateway, httpapi.CodeUnavailable, "removing the asset's objects failed; repeat the request")
			return
		}
	}
	if j.Source.Bucket != "" && j.Source.Key != "" {
		if err := s.remover.Remove(ctx, j.Source.Bucket, j.Source.Key); err != nil {
			s.log.Error("delete asset source", zap.String("asset_id", id), zap.Error(err))
			httpapi.WriteError(w, http.StatusBadGateway, httpapi.CodeUnavailable, "removing the source failed; repeat the request")
			return
		}
	}
	s.log.Info("asset deleted", zap.String("asset_id", id), zap.String("job_id", j.ID))
	w.WriteHeader(http.StatusNoContent)
}

// streamRetryAfter is the Retry-After of a 429 too_many_streams, seconds.
const streamRetryAfter = 5

// startStream answers 200 with a text/event-stream and returns what sends
// one chunk of it within Config.StreamWriteTimeout (false: the stream is
// over). A writer without deadlines (tests' recorders) is written without
// one.
func (s *Service) startStream(w http.ResponseWriter) (write func([]byte) bool) {
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	w.WriteHeader(http.StatusOK)
	return func(b []byte) bool {
		if err := rc.SetWriteDeadline(time.Now().Add(s.streamWrite)); err != nil && !errors.Is(err, http.ErrNotSupported) {
			return false
		}
		if _, err := w.Write(b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
}

// tooManyStreams answers 429 too_many_streams.
func (s *Service) tooManyStreams(w http.ResponseWriter, r *http.Request, poll string) {
	s.log.Warn("events: too many streams", zap.String("key", httpapi.KeyName(r.Context())), zap.String("path", r.URL.Path))
	w.Header().Set("Retry-After", strconv.Itoa(streamRetryAfter))
	httpapi.WriteError(w, http.StatusTooManyRequests, CodeTooManyStreams,
		fmt.Sprintf("this API key has %d event streams open already; close one or poll %s", s.hub.maxPerKey, poll))
}

// streamKey is the hub's name of the request's API key (names repeat
// across tenants).
func streamKey(r *http.Request) string {
	return httpapi.Tenant(r.Context()) + "/" + httpapi.KeyName(r.Context())
}

// jobEvents answers GET /v1/jobs/{id}/events with a text/event-stream: an
// "job" event with the current job, then one per change of its state,
// attempt, progress, chunk counts or playable time, a comment every
// heartbeat, until the job ends (or the client goes). When the job is playable and not ended yet
// — on the first event, or when it becomes so — a "playable" event with
// the same job follows its "job" event: the moment a player can start
// (playable_at set), once per attempt and stream. Every write has
// Config.StreamWriteTimeout: a client that stops reading loses its stream
// instead of holding its goroutine. An API key
// holding Config.MaxStreamsPerKey streams gets 429 too_many_streams.
func (s *Service) jobEvents(w http.ResponseWriter, r *http.Request) {
	j, ok := s.jobOf(w, r)
	if !ok {
		return
	}
	sub := s.hub.subscribe(j.ID, streamKey(r))
	if sub == nil {
		s.tooManyStreams(w, r, "GET /v1/jobs/{id}")
		return
	}
	defer s.hub.unsubscribe(sub)
	write := s.startStream(w)

	seq := 0
	var playable time.Time // the playable time announced last
	send := func(j *Job) bool {
		v, err := s.jobView(j)
		if err != nil {
			s.log.Error("render job event", zap.String("job_id", j.ID), zap.Error(err))
			return false
		}
		data, _ := json.Marshal(v) // one line: JSON escapes newlines
		seq++
		if !write(fmt.Appendf(nil, "id: %d\nevent: job\ndata: %s\n\n", seq, data)) {
			return false
		}
		if j.PlayableAt.IsZero() || j.PlayableAt.Equal(playable) || j.State.Terminal() {
			return true
		}
		playable = j.PlayableAt
		seq++
		return write(fmt.Appendf(nil, "id: %d\nevent: playable\ndata: %s\n\n", seq, data))
	}
	if !send(j) || j.State.Terminal() {
		return
	}
	last := j
	heartbeat := time.NewTicker(s.heartbeat)
	defer heartbeat.Stop()
	ctx := r.Context()
	for {
		select {
		case <-ctx.Done():
			return
		case <-heartbeat.C:
			if !write([]byte(": heartbeat\n\n")) {
				return
			}
			// Also a safety net for a change notice of another replica
			// lost while NATS was unreachable (Config.Changes).
		case <-sub.ch:
		}
		cur, err := s.store.Job(ctx, j.ID)
		if err != nil {
			if errors.Is(err, ErrNotFound) { // deleted
				return
			}
			if ctx.Err() != nil {
				return
			}
			s.log.Warn("job events: read job", zap.String("job_id", j.ID), zap.Error(err))
			continue
		}
		if cur.State == last.State && cur.Attempt == last.Attempt && cur.Progress == last.Progress && cur.PlayableAt.Equal(last.PlayableAt) &&
			cur.Chunks == last.Chunks {
			continue
		}
		if !send(cur) || cur.State.Terminal() {
			return
		}
		last = cur
	}
}
