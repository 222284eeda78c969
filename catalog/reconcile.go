package catalog

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kilnvideo/kiln/internal/failure"
	"github.com/kilnvideo/kiln/internal/jobevent"
	"github.com/kilnvideo/kiln/internal/jobid"
	"github.com/kilnvideo/kiln/internal/layout"
	"github.com/kilnvideo/kiln/internal/lease"
	"github.com/kilnvideo/kiln/internal/objstore"
	"github.com/kilnvideo/kiln/internal/tasks"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// SourceObjects is the part of object storage the reconciler reads
// (objstore.Client).
type SourceObjects interface {
	List(ctx context.Context, bucket, prefix string) ([]objstore.Info, error)
	Stat(ctx context.Context, bucket, key string) (objstore.Info, error)
}

var _ SourceObjects = (*objstore.Client)(nil)

// ReconcileEvents publishes the facts the reconciler states (the bus).
type ReconcileEvents interface {
	PublishObjectLanded(ctx context.Context, ev *kilnv1.ObjectLanded) error
	EventPublisher
}

// TaskInspector is the part of *asynq.Inspector the reconciler uses.
type TaskInspector interface {
	GetTaskInfo(queue, id string) (*asynq.TaskInfo, error)
}

var _ TaskInspector = (*asynq.Inspector)(nil)

// CancelChecker tells whether a job was canceled or its attempt replaced
// (cancel.Service): Check returns an error wrapping failure.ErrCanceled if so.
type CancelChecker interface {
	Check(ctx context.Context, jobID string, attempt int32) error
}

// ReconcilerConfig configures NewReconciler.
type ReconcilerConfig struct {
	Store Store
	// Objects lists and stats the sources bucket, SourcesBucket.
	Objects       SourceObjects
	SourcesBucket string
	Events        ReconcileEvents
	// Queue and Tasks are asynq's client and inspector.
	Queue tasks.Enqueuer
	Tasks TaskInspector
	// Attempts records the new attempt of a job the reconciler re-drives
	// from its probe (cancel.Service; see Retrier).
	Attempts AttemptClearer
	// Jobs tells canceled jobs apart (cancel.Service); nil: none is.
	Jobs CancelChecker
	// Renditions enqueues rendition retries whose enqueue was lost (the
	// Retrier); nil: they are left pending.
	Renditions RenditionRetrier
	// Interval is the time between two passes (Run); Grace how long a job
	// or a source may go without news before the reconciler acts on it.
	Interval, Grace time.Duration
	// Holder names this replica in the lease; default host name, process
	// id and start time.
	Holder string
	// PageSize is how many stale jobs the store returns at once; default
	// MaxListLimit.
	PageSize int
	Logger   *zap.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// LeaseName is the reconciler's lease (Store.AcquireLease).
const LeaseName = "reconciler"

// OriginReconciler is the origin of the "object landed" facts the
// reconciler publishes for sources without a job.
const OriginReconciler = "reconciler"

// MaxRedriveAttempt is the last attempt the reconciler starts: a job whose
// attempts keep getting lost is failed as stalled rather than started over
// for ever.
const MaxRedriveAttempt = 5

// maxRetryDelay bounds one delay of tasks.RetryDelay (10 min, +20 %
// jitter); a test keeps the two in step.
const maxRetryDelay = 12 * time.Minute

// Reconciler actions: the kinds of Report and of the
// kiln_reconciler_actions_total counter.
const (
	// ActionSourceLanded: a source without a job was announced again.
	ActionSourceLanded = "source_landed"
	// ActionTaskEnqueued: a lost task was enqueued again, same TaskID.
	ActionTaskEnqueued = "task_enqueued"
	// ActionJobRedriven: a job was started over as a new attempt.
	ActionJobRedriven = "job_redriven"
	// ActionJobStalled: a job past its deadline was failed (stalled).
	ActionJobStalled = "job_stalled"
	// ActionFailureRecorded: a stage that failed for good (its task is
	// archived) without the job failing got its FAILED fact.
	ActionFailureRecorded = "failure_recorded"
	// ActionCancelRecorded: a canceled job that was still running got its
	// CANCELED fact.
	ActionCancelRecorded = "cancel_recorded"
	// ActionRenditionRetryEnqueued: a rendition retry recorded but never
	// enqueued (a crash in between) was enqueued.
	ActionRenditionRetryEnqueued = "rendition_retry_enqueued"
)

var reconcileActions = []string{ActionSourceLanded, ActionTaskEnqueued, ActionJobRedriven, ActionJobStalled,
	ActionFailureRecorded, ActionCancelRecorded, ActionRenditionRetryEnqueued}

// Report is what one pass did.
type Report struct {
	// Leader: this replica held the lease and made the pass.
	Leader bool
	// Actions counts what was done, by action (Action* constants).
	Actions map[string]int
	// Errors counts the sources and jobs that could not be reconciled.
	Errors int
}

// Reconciler notices what the pipeline lost — a source whose job never
// started, a job whose task vanished from the queue, a job that will never
// finish — and states the fact or re-sends the command that repairs it.
// One replica at a time is active (a lease in the store).
type Reconciler struct {
	cfg ReconcilerConfig
	log *zap.Logger

	mu      sync.Mutex
	actions map[string]int64
	errors  int64
	passes  int64
}

// NewReconciler returns a reconciler.
func NewReconciler(cfg ReconcilerConfig) (*Reconciler, error) {
	if cfg.Store == nil || cfg.Objects == nil || cfg.Events == nil || cfg.Queue == nil || cfg.Tasks == nil || cfg.Attempts == nil {
		return nil, errors.New("catalog: reconciler: store, objects, events, queue, tasks and attempts are required")
	}
	if cfg.SourcesBucket == "" || cfg.Interval <= 0 || cfg.Grace <= 0 {
		return nil, errors.New("catalog: reconciler: a sources bucket, a positive interval and a positive grace are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.PageSize <= 0 {
		cfg.PageSize = MaxListLimit
	}
	if cfg.Holder == "" {
		host, _ := os.Hostname()
		cfg.Holder = host + "/" + strconv.Itoa(os.Getpid()) + "/" + strconv.FormatInt(time.Now().UnixNano(), 36)
	}
	return &Reconciler{cfg: cfg, log: cfg.Logger, actions: map[string]int64{}}, nil
}

// leaseTTL outlives a pass and the wait for the next, so the holder renews
// it in time; a replica that died is replaced within about three intervals.
func (r *Reconciler) leaseTTL() time.Duration { return max(3*r.cfg.Interval, 30*time.Second) }

// Run makes a pass every interval until ctx ends, then gives the lease up.
func (r *Reconciler) Run(ctx context.Context) error {
	r.log.Info("reconciler started", zap.Duration("interval", r.cfg.Interval), zap.Duration("grace", r.cfg.Grace),
		zap.String("holder", r.cfg.Holder))
	t := time.NewTicker(r.cfg.Interval)
	defer t.Stop()
	for {
		if _, err := r.Once(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("reconcile pass", zap.Error(err))
		}
		select {
		case <-ctx.Done():
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if err := r.cfg.Store.ReleaseLease(rctx, LeaseName, r.cfg.Holder); err != nil {
				r.log.Warn("release reconciler lease", zap.Error(err))
			}
			return nil
		case <-t.C:
		}
	}
}

// Once makes one pass if this replica holds (or takes) the lease: sources
// without jobs first, then the running jobs nothing happened to for the
// grace period. An error means the pass could not run (the lease, the
// listing); a source or job that could not be reconciled is counted in
// Report.Errors and logged.
func (r *Reconciler) Once(ctx context.Context) (Report, error) {
	rep := Report{Actions: map[string]int{}}
	now := r.cfg.Now()
	held, err := r.cfg.Store.AcquireLease(ctx, LeaseName, r.cfg.Holder, now, r.leaseTTL())
	if err != nil {
		return rep, fmt.Errorf("catalog: reconciler lease: %w", err)
	}
	if !held {
		return rep, nil
	}
	rep.Leader = true
	defer r.record(&rep)
	errS := r.sources(ctx, now, &rep)
	errJ := r.jobs(ctx, now, &rep)
	errR := r.renditionRetries(ctx, now, &rep)
	return rep, errors.Join(errS, errJ, errR)
}

// renditionRetries enqueues the rendition retries that were recorded more
// than the grace period ago and never settled: their request recorded them
// and died before (or while) enqueueing. The task id is the retry's, so one
// that was in fact enqueued collapses into it.
func (r *Reconciler) renditionRetries(ctx context.Context, now time.Time, rep *Report) error {
	if r.cfg.Renditions == nil {
		return nil
	}
	pending, err := r.cfg.Store.PendingRenditionRetries(ctx, now.Add(-r.cfg.Grace), r.cfg.PageSize)
	if err != nil {
		return fmt.Errorf("catalog: reconciler: %w", err)
	}
	for _, rr := range pending {
		log := r.log.With(zap.String("job_id", rr.Job.ID), zap.String("asset_id", rr.Asset.ID),
			zap.String("rendition", rr.Name), zap.Int32("retry", rr.Retry))
		task, err := renditionTask(rr)
		if err == nil {
			err = r.cfg.Renditions.RetryRendition(ctx, task)
		}
		if err == nil {
			err = r.cfg.Store.RenditionRetryDone(ctx, rr.Asset.ID, rr.Name, rr.Retry, true)
		}
		if err != nil {
			r.fail(rep, log, "reconciler: rendition retry", err)
			continue
		}
		r.act(rep, ActionRenditionRetryEnqueued, log, "reconciler: lost rendition retry enqueued")
	}
	return nil
}

func (r *Reconciler) record(rep *Report) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.passes++
	for a, n := range rep.Actions {
		r.actions[a] += int64(n)
	}
	r.errors += int64(rep.Errors)
}

// act counts and logs one action on a job.
func (r *Reconciler) act(rep *Report, action string, log *zap.Logger, msg string, fields ...zap.Field) {
	rep.Actions[action]++
	log.Info(msg, append(fields, zap.String("action", action))...)
}

func (r *Reconciler) fail(rep *Report, log *zap.Logger, msg string, err error) {
	rep.Errors++
	log.Warn(msg, zap.Error(err))
}

// sources announces again every source object older than the grace period
// that has no job: ingest then starts the job exactly as for an upload.
func (r *Reconciler) sources(ctx context.Context, now time.Time, rep *Report) error {
	bucket := r.cfg.SourcesBucket
	objs, err := r.cfg.Objects.List(ctx, bucket, layout.SourcePrefix)
	if err != nil {
		return fmt.Errorf("catalog: reconciler: list sources: %w", err)
	}
	for _, o := range objs {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if strings.HasSuffix(o.Key, "/") || (!o.LastModified.IsZero() && now.Sub(o.LastModified) < r.cfg.Grace) {
			continue // a folder marker, or an upload whose own facts may still be on their way
		}
		jobID, _ := jobid.FromObject(bucket, o.Key, o.ETag)
		log := r.log.With(zap.String("job_id", jobID), zap.String("bucket", bucket), zap.String("key", o.Key))
		has, err := r.cfg.Store.HasJob(ctx, jobID)
		if err != nil {
			r.fail(rep, log, "reconcile source: job lookup", err)
			continue
		}
		if has {
			continue
		}
		info, err := r.cfg.Objects.Stat(ctx, bucket, o.Key)
		if errors.Is(err, objstore.ErrNotFound) {
			continue // removed since the listing
		}
		if err != nil {
			r.fail(rep, log, "reconcile source: stat", err)
			continue
		}
		if info.ETag != "" && info.ETag != o.ETag {
			continue // replaced since the listing: the next pass sees the new object
		}
		ev := &kilnv1.ObjectLanded{
			Object: &kilnv1.ObjectRef{Bucket: bucket, Key: o.Key, Etag: strings.Trim(o.ETag, `"`),
				Size: cmp.Or(info.Size, o.Size), ContentType: info.ContentType},
			Origin:         OriginReconciler,
			Preset:         layout.SourceMeta(info.Metadata, layout.MetaPreset),
			PlaybackPolicy: layout.SourceMeta(info.Metadata, layout.MetaPolicy),
			TenantId:       layout.SourceMeta(info.Metadata, layout.MetaTenant),
			WebhookUrl:     layout.SourceMeta(info.Metadata, layout.MetaWebhook),
			Priority:       layout.SourceMeta(info.Metadata, layout.MetaPriority),
			Time:           timestamppb.New(now),
		}
		if err := r.cfg.Events.PublishObjectLanded(ctx, ev); err != nil {
			r.fail(rep, log, "reconcile source: publish object landed", err)
			continue
		}
		r.act(rep, ActionSourceLanded, log, "reconciler: source without a job announced again", zap.Time("last_modified", o.LastModified))
	}
	return nil
}

// taskState is what the queue holds of one stage task of a job's attempt.
type taskState int

const (
	taskMissing   taskState = iota // no such task (never enqueued, deleted, retention over, Redis lost it)
	taskLive                       // pending, active, scheduled, retry or aggregating: it will run
	taskCompleted                  // ran to the end; kept for deduplication
	taskArchived                   // failed for good
)

// pipeline is the stage task types in pipeline order.
var pipeline = []string{tasks.TypeProbe, tasks.TypeTranscode, tasks.TypePackage}

// jobs looks at every running job nothing happened to for the grace
// period, a page at a time (the oldest are often the busiest: a backlog of
// pending tasks must not hide a lost one behind it).
func (r *Reconciler) jobs(ctx context.Context, now time.Time, rep *Report) error {
	f := StaleFilter{Before: now.Add(-r.cfg.Grace), Limit: r.cfg.PageSize}
	for {
		page, err := r.cfg.Store.StaleJobs(ctx, f)
		if err != nil {
			return fmt.Errorf("catalog: reconciler: %w", err)
		}
		for _, j := range page {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			log := r.log.With(zap.String("job_id", j.ID), zap.String("state", string(j.State)), zap.Int32("attempt", tasks.NormAttempt(j.Attempt)))
			if err := r.job(ctx, now, j, rep, log); err != nil {
				r.fail(rep, log, "reconcile job", err)
			}
		}
		if len(page) < f.PageLimit() {
			return nil
		}
		f.After = page[len(page)-1]
	}
}

// job reconciles one stale running job of the current attempt:
//
//  1. A task of the attempt that will still run (any stage: the next stage's
//     task is queued before the job's state moves) means the job is moving.
//  2. A canceled job gets its CANCELED fact (the cancel's own was lost).
//  3. A job in its state past the state's deadline is failed as stalled.
//  4. Otherwise the latest stage task that exists tells what was lost:
//     none at all — the probe (same TaskID, same attempt); an archived one
//     — the FAILED fact of a stage that failed for good; a completed probe
//     — the transcode, rebuilt from the probed media and plan; anything
//     later — a new attempt from the probe, because the thumbnail and
//     package payloads carry worker outputs the catalog does not know.
func (r *Reconciler) job(ctx context.Context, now time.Time, j *Job, rep *Report, log *zap.Logger) error {
	attempt := tasks.NormAttempt(j.Attempt)
	// A chunked transcode runs as its parts' tasks once the transcode's
	// own task has queued them: any of them live, the job is moving.
	if live, err := r.partsLive(j, attempt); err != nil || live {
		return err
	}
	states := make([]taskState, len(pipeline))
	last := -1
	for i, typ := range pipeline {
		st, ti, err := r.taskState(typ, j.ID, attempt)
		if err != nil {
			return err
		}
		if st == taskLive {
			return nil
		}
		states[i] = st
		if st != taskMissing {
			last = i
			if st == taskArchived {
				log = log.With(zap.String("last_error", ti.LastErr))
			}
		}
	}
	if r.cfg.Jobs != nil {
		if err := r.cfg.Jobs.Check(ctx, j.ID, attempt); errors.Is(err, failure.ErrCanceled) {
			code, msg := failure.CodeOf(err)
			if perr := r.cfg.Events.PublishJobEvent(ctx, jobevent.Failed(j.ID, j.AssetID, attempt, code, msg)); perr != nil {
				return fmt.Errorf("publish canceled: %w", perr)
			}
			r.act(rep, ActionCancelRecorded, log, "reconciler: canceled job recorded as canceled")
			return nil
		} else if err != nil {
			return err
		}
	}
	since := j.Timestamps[j.State]
	if since.IsZero() || since.After(j.UpdatedAt) {
		since = j.UpdatedAt
	}
	if d := StallDeadline(j.State, j.Media) + r.cfg.Grace; now.Sub(since) > d {
		msg := fmt.Sprintf("the job made no progress while %s for more than %s", j.State, d.Round(time.Minute))
		return r.stall(ctx, j, attempt, ActionJobStalled, msg, rep, log)
	}
	switch {
	case last < 0:
		return r.enqueueProbe(ctx, j, attempt, rep, log)
	case states[last] == taskArchived:
		msg := fmt.Sprintf("the %s stage failed for good but the job's failure was never recorded", strings.TrimPrefix(pipeline[last], "kiln:"))
		return r.stall(ctx, j, attempt, ActionFailureRecorded, msg, rep, log)
	case pipeline[last] == tasks.TypeProbe && j.Media != nil && j.Plan != nil && j.Source.Key != "":
		next := &kilnv1.TranscodeTask{JobId: j.ID, AssetId: j.AssetID, Attempt: attempt, Source: j.sourceRef(), Media: j.Media, Plan: j.Plan,
			Priority: j.Priority, TenantId: j.TenantID}
		cmd, err := tasks.NewTranscodeTask(ctx, next)
		if err != nil {
			return err
		}
		if err := tasks.Enqueue(ctx, r.cfg.Queue, cmd); err != nil {
			return err
		}
		r.act(rep, ActionTaskEnqueued, log, "reconciler: lost task enqueued again", zap.String("task", tasks.TypeTranscode))
		return nil
	default:
		return r.redrive(ctx, j, attempt, pipeline[last], rep, log)
	}
}

// taskState asks the queue for the stage task typ of one attempt of a job:
// the state of its last copy, since a task whose worker died runs on as a
// rescue copy (lease.RescueID) while the original is dropped or waits for
// asynq's recovery.
func (r *Reconciler) taskState(typ, jobID string, attempt int32) (taskState, *asynq.TaskInfo, error) {
	st, _ := tasks.StageOf(typ)
	id := tasks.TaskID(typ, jobID, attempt)
	state, info, err := r.oneTaskState(st.Queue, id)
	for err == nil && state != taskLive && state != taskMissing {
		id = lease.RescueID(id)
		s, i, e := r.oneTaskState(st.Queue, id)
		if e != nil || s == taskMissing {
			return state, info, e
		}
		state, info, err = s, i, e
	}
	return state, info, err
}

// partsLive reports whether a task of the job's chunked transcode (a
// chunk, or the track, or a rescue copy of one) will still run.
func (r *Reconciler) partsLive(j *Job, attempt int32) (bool, error) {
	c := j.Plan.GetChunking()
	if c == nil {
		return false, nil
	}
	ids := []string{tasks.TaskID(tasks.TypeTranscodeTrack, j.ID, attempt)}
	for i := range int(c.GetCount()) {
		ids = append(ids, tasks.ChunkTaskID(j.ID, attempt, i))
	}
	for _, id := range ids {
		for _, id := range []string{id, lease.RescueID(id)} {
			st, _, err := r.oneTaskState(tasks.QueueTranscode, id)
			if err != nil {
				return false, err
			}
			if st == taskLive {
				return true, nil
			}
		}
	}
	return false, nil
}

func (r *Reconciler) oneTaskState(queue, id string) (taskState, *asynq.TaskInfo, error) {
	ti, err := r.cfg.Tasks.GetTaskInfo(queue, id)
	switch {
	case errors.Is(err, asynq.ErrTaskNotFound) || errors.Is(err, asynq.ErrQueueNotFound):
		return taskMissing, nil, nil
	case err != nil:
		return 0, nil, fmt.Errorf("task %s: %w", id, err)
	}
	switch ti.State {
	case asynq.TaskStateCompleted:
		return taskCompleted, ti, nil
	case asynq.TaskStateArchived:
		return taskArchived, ti, nil
	default:
		return taskLive, ti, nil
	}
}

func (j *Job) sourceRef() *kilnv1.ObjectRef {
	return &kilnv1.ObjectRef{Bucket: j.Source.Bucket, Key: j.Source.Key, Etag: j.Source.ETag, Size: j.Source.Size}
}

// enqueueProbe enqueues the probe of the job's attempt again, with its own
// TaskID: the probe's payload is exactly what ingest (or a retry) enqueued.
func (r *Reconciler) enqueueProbe(ctx context.Context, j *Job, attempt int32, rep *Report, log *zap.Logger) error {
	if j.Source.Bucket == "" || j.Source.Key == "" {
		log.Warn("reconciler: job lost its probe, but its source is not known; left to its deadline")
		return nil
	}
	cmd, err := tasks.NewProbeTask(ctx, &kilnv1.ProbeTask{JobId: j.ID, AssetId: j.AssetID, Source: j.sourceRef(), Preset: j.Preset, Attempt: attempt,
		Priority: j.Priority, TenantId: j.TenantID})
	if err != nil {
		return err
	}
	if err := tasks.Enqueue(ctx, r.cfg.Queue, cmd); err != nil {
		return err
	}
	r.act(rep, ActionTaskEnqueued, log, "reconciler: lost task enqueued again", zap.String("task", tasks.TypeProbe))
	return nil
}

// redrive starts the job over as its next attempt, as POST
// /v1/jobs/{id}/retry does (Retrier): a later stage's command cannot be
// rebuilt exactly, and the same attempt's probe would be deduplicated
// against its retained TaskID.
func (r *Reconciler) redrive(ctx context.Context, j *Job, attempt int32, lastTask string, rep *Report, log *zap.Logger) error {
	if attempt >= MaxRedriveAttempt {
		msg := fmt.Sprintf("the job's attempt %d lost its progress after the %s stage, and it was started over too often", attempt,
			strings.TrimPrefix(lastTask, "kiln:"))
		return r.stall(ctx, j, attempt, ActionJobStalled, msg, rep, log)
	}
	if j.Source.Bucket == "" || j.Source.Key == "" {
		log.Warn("reconciler: job lost its progress, but its source is not known; left to its deadline")
		return nil
	}
	retrier := &Retrier{Queue: r.cfg.Queue, Attempts: r.cfg.Attempts, Events: r.cfg.Events}
	task := &kilnv1.ProbeTask{JobId: j.ID, AssetId: j.AssetID, Source: j.sourceRef(), Preset: j.Preset, Attempt: attempt + 1,
		Priority: j.Priority, TenantId: j.TenantID}
	if _, err := retrier.Retry(ctx, task, j.PlaybackPolicy); err != nil {
		return err
	}
	r.act(rep, ActionJobRedriven, log, "reconciler: job started over as a new attempt",
		zap.String("last_task", lastTask), zap.Int32("new_attempt", attempt+1))
	return nil
}

// stall publishes the FAILED fact of the job's attempt with code stalled.
func (r *Reconciler) stall(ctx context.Context, j *Job, attempt int32, action, msg string, rep *Report, log *zap.Logger) error {
	if err := r.cfg.Events.PublishJobEvent(ctx, jobevent.Failed(j.ID, j.AssetID, attempt, failure.Stalled, msg)); err != nil {
		return fmt.Errorf("publish failed: %w", err)
	}
	r.act(rep, action, log, "reconciler: job failed", zap.String("reason", msg))
	return nil
}

// StallDeadline is how long a job may stay in a running state before the
// reconciler fails it (when no task of it is left to run), grace aside:
// the time limit of every run of the state's stages (retries+1 of them)
// plus the longest backoff between them. A transcoding job covers the
// transcode, whose limit grows with the source duration.
func StallDeadline(st State, media *kilnv1.MediaInfo) time.Duration {
	budget := func(typ string, timeout time.Duration) time.Duration {
		s, _ := tasks.StageOf(typ)
		if timeout == 0 {
			timeout = s.Timeout
		}
		return timeout*time.Duration(s.MaxRetry+1) + maxRetryDelay*time.Duration(s.MaxRetry)
	}
	switch st {
	case StateQueued, StateProbing:
		return budget(tasks.TypeProbe, 0)
	case StateTranscoding:
		return budget(tasks.TypeTranscode, tasks.TranscodeTimeout(media))
	case StatePackaging:
		return budget(tasks.TypePackage, 0)
	}
	return 0
}

// Describe implements prometheus.Collector.
func (r *Reconciler) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(r, ch) }

// Collect implements prometheus.Collector: the reconciler's counters
// kiln_reconciler_actions_total{action}, kiln_reconciler_errors_total and
// kiln_reconciler_passes_total.
func (r *Reconciler) Collect(ch chan<- prometheus.Metric) {
	r.mu.Lock()
	defer r.mu.Unlock()
	actions := prometheus.NewDesc("kiln_reconciler_actions_total", "Repairs made by the catalog's reconciler, by action.", []string{"action"}, nil)
	for _, a := range reconcileActions {
		ch <- prometheus.MustNewConstMetric(actions, prometheus.CounterValue, float64(r.actions[a]), a)
	}
	ch <- prometheus.MustNewConstMetric(prometheus.NewDesc("kiln_reconciler_errors_total", "Sources and jobs the reconciler could not reconcile.", nil, nil),
		prometheus.CounterValue, float64(r.errors))
	ch <- prometheus.MustNewConstMetric(prometheus.NewDesc("kiln_reconciler_passes_total", "Passes made while holding the reconciler lease.", nil, nil),
		prometheus.CounterValue, float64(r.passes))
}
