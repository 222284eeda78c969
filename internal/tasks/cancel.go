package tasks

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// ErrCanceled is returned (wrapped in a permanent error) by a stage that
// finds its job canceled.
var ErrCanceled = errors.New("job canceled")

// cancelTTL keeps a cancel mark long enough for every retry to see it.
const cancelTTL = 7 * 24 * time.Hour

// CancelChecker tells a stage whether its job was canceled, or the attempt
// its task belongs to was superseded by a retry: Check returns a permanent
// error wrapping ErrCanceled if so.
type CancelChecker interface {
	Check(ctx context.Context, jobID string, attempt int32) error
}

var _ CancelChecker = (*Canceler)(nil)

// NoCancel is a CancelChecker for jobs that cannot be canceled (tests).
type NoCancel struct{}

// Check implements CancelChecker.
func (NoCancel) Check(context.Context, string, int32) error { return nil }

// Canceler cancels jobs: it marks the job canceled in Redis (every stage
// checks the mark before it starts and before it hands over), deletes the
// job's queued tasks, interrupts a running one (its ffmpeg dies with the
// task context) and publishes the canceled event.
type Canceler struct {
	Redis     redis.UniversalClient
	Inspector *asynq.Inspector
	Events    Publisher
	Logger    *zap.Logger
}

// NewRedisClient returns a go-redis client for the asynq connection options.
func NewRedisClient(opt asynq.RedisClientOpt) redis.UniversalClient {
	return opt.MakeRedisClient().(redis.UniversalClient)
}

func cancelKey(jobID string) string { return "kiln:canceled:" + jobID }

// attemptKey holds a retried job's current attempt (absent: 1).
func attemptKey(jobID string) string { return "kiln:attempt:" + jobID }

// CurrentAttempt returns the job's current attempt: 1 unless it was retried.
func (c *Canceler) CurrentAttempt(ctx context.Context, jobID string) (int32, error) {
	n, err := c.Redis.Get(ctx, attemptKey(jobID)).Int()
	if errors.Is(err, redis.Nil) {
		return 1, nil
	}
	if err != nil {
		return 0, fmt.Errorf("tasks: attempt of %s: %w", jobID, err)
	}
	return normAttempt(int32(n)), nil
}

// Clear removes the job's cancel mark and records attempt as its current
// one, before a retry: tasks of earlier attempts still queued or retrying
// then find themselves superseded (Check) and drop out.
func (c *Canceler) Clear(ctx context.Context, jobID string, attempt int32) error {
	_, err := c.Redis.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, attemptKey(jobID), normAttempt(attempt), cancelTTL)
		p.Del(ctx, cancelKey(jobID))
		return nil
	})
	if err != nil {
		return fmt.Errorf("tasks: clear cancel of %s: %w", jobID, err)
	}
	return nil
}

// Canceled reports whether jobID was canceled.
func (c *Canceler) Canceled(ctx context.Context, jobID string) (bool, error) {
	n, err := c.Redis.Exists(ctx, cancelKey(jobID)).Result()
	if err != nil {
		return false, fmt.Errorf("tasks: cancel mark: %w", err)
	}
	return n > 0, nil
}

// Check returns a permanent ErrCanceled when the job was canceled or a
// later attempt replaced attempt.
func (c *Canceler) Check(ctx context.Context, jobID string, attempt int32) error {
	canceled, err := c.Canceled(ctx, jobID)
	if err != nil {
		return err
	}
	if canceled {
		return Permanent("canceled", "the job was canceled", ErrCanceled)
	}
	cur, err := c.CurrentAttempt(ctx, jobID)
	if err != nil {
		return err
	}
	if cur > normAttempt(attempt) {
		return Permanent("canceled", "a retry replaced this attempt", ErrCanceled)
	}
	return nil
}

var stages = []struct{ typ, queue string }{
	{TypeProbe, QueueProbe}, {TypeTranscode, QueueTranscode}, {TypeThumbnail, QueueThumbnail}, {TypePackage, QueuePackage},
}

// Cancel cancels the job's current attempt. It is idempotent.
func (c *Canceler) Cancel(ctx context.Context, jobID, assetID string) error {
	attempt, err := c.CurrentAttempt(ctx, jobID)
	if err != nil {
		return err
	}
	if err := c.Redis.Set(ctx, cancelKey(jobID), time.Now().UTC().Format(time.RFC3339), cancelTTL).Err(); err != nil {
		return fmt.Errorf("tasks: cancel %s: %w", jobID, err)
	}
	for _, st := range stages {
		id := TaskID(st.typ, jobID, attempt)
		if err := c.Inspector.DeleteTask(st.queue, id); err != nil && !errors.Is(err, asynq.ErrTaskNotFound) &&
			!errors.Is(err, asynq.ErrQueueNotFound) {
			c.Logger.Debug("delete task", zap.String("job_id", jobID), zap.String("task", id), zap.Error(err))
		}
		// Best effort: only the worker running it acts on the signal.
		if err := c.Inspector.CancelProcessing(id); err != nil {
			return fmt.Errorf("tasks: cancel %s: %w", id, err)
		}
	}
	ev := Event(jobID, assetID, attempt, kilnv1.JobState_JOB_STATE_CANCELED, "canceled")
	ev.Error = &kilnv1.JobError{Code: "canceled", Message: "the job was canceled"}
	if err := c.Events.PublishJobEvent(ctx, ev); err != nil {
		return err
	}
	c.Logger.Info("job canceled", zap.String("job_id", jobID))
	return nil
}

// CancelMiddleware drops a stage task (probe, transcode, thumbnail,
// package) of a canceled job, or of an attempt a retry replaced, before its
// handler runs. Handlers still check again before they hand over to the
// next stage, since a cancel can arrive while they work.
func CancelMiddleware(c CancelChecker) asynq.MiddlewareFunc {
	return func(next asynq.Handler) asynq.Handler {
		return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
			if slices.ContainsFunc(stages, func(s struct{ typ, queue string }) bool { return s.typ == t.Type() }) {
				head := taskHead(t)
				if err := c.Check(ctx, head.GetJobId(), head.GetAttempt()); err != nil {
					return err
				}
			}
			return next.ProcessTask(ctx, t)
		})
	}
}
