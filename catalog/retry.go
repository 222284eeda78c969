package catalog

import (
	"context"
	"errors"
	"fmt"

	"github.com/kilnvideo/kiln/internal/jobevent"
	"github.com/kilnvideo/kiln/internal/tasks"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// AttemptClearer records a job's new current attempt and clears its cancel
// mark (cancel.Service), so the stale tasks of earlier attempts drop
// themselves.
type AttemptClearer interface {
	Clear(ctx context.Context, jobID string, attempt int32) error
}

// EventPublisher publishes job events (the bus).
type EventPublisher interface {
	PublishJobEvent(ctx context.Context, ev *kilnv1.JobEvent) error
}

// Retrier is the JobRetrier and RenditionRetrier of the API: it enqueues
// the commands of a new attempt of a job, or of one rendition's packaging.
type Retrier struct {
	Queue    tasks.Enqueuer
	Attempts AttemptClearer
	Events   EventPublisher
}

var (
	_ JobRetrier       = (*Retrier)(nil)
	_ RenditionRetrier = (*Retrier)(nil)
)

// Retry starts attempt task.Attempt (≥ 2) of task.JobId from its probe: it
// clears the cancel mark (recording the new attempt), enqueues the probe
// under the attempt's own TaskID and publishes the attempt's QUEUED event,
// which it returns. Retrying the same attempt again is harmless (same
// TaskID, same event id).
func (r *Retrier) Retry(ctx context.Context, task *kilnv1.ProbeTask, playbackPolicy string) (*kilnv1.JobEvent, error) {
	if task.GetAttempt() < 2 {
		return nil, errors.New("catalog: retry: attempt must be at least 2")
	}
	if err := r.Attempts.Clear(ctx, task.JobId, task.Attempt); err != nil {
		return nil, err
	}
	t, err := tasks.NewProbeTask(ctx, task)
	if err != nil {
		return nil, err
	}
	if err := tasks.Enqueue(ctx, r.Queue, t); err != nil {
		return nil, err
	}
	ev := jobevent.New(task.JobId, task.AssetId, task.Attempt, kilnv1.JobState_JOB_STATE_QUEUED, "queued")
	ev.Source, ev.Preset, ev.PlaybackPolicy, ev.Priority = task.Source, task.Preset, playbackPolicy, task.Priority
	ev.TenantId = task.TenantId // the job's already (a tenant is never contradicted)
	if err := r.Events.PublishJobEvent(ctx, ev); err != nil {
		// The probe is enqueued: its PROBING event will still move the job
		// to the new attempt.
		return ev, fmt.Errorf("catalog: retry %s: publish queued: %w", task.JobId, err)
	}
	return ev, nil
}

// RetryRendition enqueues the packaging of one failed rendition
// (task.Only), as retry number task.RenditionRetry.
func (r *Retrier) RetryRendition(ctx context.Context, task *kilnv1.PackageTask) error {
	if task.GetOnly() == "" {
		return errors.New("catalog: rendition retry: a rendition is required")
	}
	t, err := tasks.NewPackageTask(ctx, task)
	if err != nil {
		return err
	}
	return tasks.Enqueue(ctx, r.Queue, t)
}

// renditionTask is the packaging task of rendition retry rr: it packages the
// encoded object the store recorded for the rendition (the packager's key)
// rather than deriving the encoder's layout.
func renditionTask(rr RenditionRetry) (*kilnv1.PackageTask, error) {
	if rr.EncodedKey == "" {
		return nil, errNoEncodedKey
	}
	j, a := rr.Job, rr.Asset
	return &kilnv1.PackageTask{
		JobId: j.ID, AssetId: j.AssetID, Attempt: max(j.Attempt, 1),
		Media: j.Media, Plan: j.Plan,
		Encoded: []*kilnv1.EncodedRung{{Name: rr.Name,
			Object: &kilnv1.ObjectRef{Bucket: a.Bucket, Key: rr.EncodedKey}}},
		PosterKey:      a.PosterKey,
		Thumbnails:     a.Thumbnails,
		Only:           rr.Name,
		RenditionRetry: rr.Retry,
	}, nil
}
