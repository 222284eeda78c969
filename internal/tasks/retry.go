package tasks

import (
	"context"
	"errors"
	"fmt"
	"time"

	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// ProbeTimeout is the time limit of a probe task.
const ProbeTimeout = 2 * time.Minute

// Retrier starts a new attempt of a failed or canceled job: it clears the
// cancel mark (recording the new attempt, so the stale tasks of earlier
// attempts drop themselves), enqueues the probe under the attempt's own
// TaskID and publishes the attempt's QUEUED event.
type Retrier struct {
	Queue    Enqueuer
	Canceler *Canceler
	Events   Publisher
}

// Retry starts attempt task.Attempt (≥ 2) of task.JobId from its probe. It
// returns the QUEUED event it published. Retrying the same attempt again is
// harmless (same TaskID, same event id).
func (r *Retrier) Retry(ctx context.Context, task *kilnv1.ProbeTask, playbackPolicy string) (*kilnv1.JobEvent, error) {
	if task.GetAttempt() < 2 {
		return nil, errors.New("tasks: retry: attempt must be at least 2")
	}
	if err := r.Canceler.Clear(ctx, task.JobId, task.Attempt); err != nil {
		return nil, err
	}
	if err := Enqueue(ctx, r.Queue, TypeProbe, QueueProbe, task.JobId, task.Attempt, task, ProbeTimeout); err != nil {
		return nil, err
	}
	ev := Event(task.JobId, task.AssetId, task.Attempt, kilnv1.JobState_JOB_STATE_QUEUED, "queued")
	ev.Source, ev.Preset, ev.PlaybackPolicy = task.Source, task.Preset, playbackPolicy
	if err := r.Events.PublishJobEvent(ctx, ev); err != nil {
		// The probe is enqueued: its PROBING event will still move the job
		// to the new attempt.
		return ev, fmt.Errorf("tasks: retry %s: publish queued: %w", task.JobId, err)
	}
	return ev, nil
}

// PackageTimeout is the time limit of a package task.
const PackageTimeout = 15 * time.Minute

// RetryRendition enqueues the packaging of one failed rendition
// (task.Only), as retry number task.RenditionRetry: each retry has its own
// TaskID, and repeating the same retry collapses into one task.
func (r *Retrier) RetryRendition(ctx context.Context, task *kilnv1.PackageTask) error {
	if task.GetOnly() == "" || task.GetRenditionRetry() < 1 {
		return errors.New("tasks: rendition retry: a rendition and a retry number are required")
	}
	id := fmt.Sprintf("%s:r:%s:%d", TaskID(TypePackage, task.JobId, task.Attempt), task.Only, task.RenditionRetry)
	return enqueue(ctx, r.Queue, TypePackage, QueuePackage, id, task, PackageTimeout)
}
