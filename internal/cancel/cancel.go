// Package cancel keeps the cancel state of jobs in Redis: which jobs were
// canceled and which attempt of a retried job is current. Every stage checks
// it before it starts (Middleware) and before it hands over to the next;
// Service.Cancel also deletes a job's queued tasks and interrupts a running
// one, whose ffmpeg dies with the task context.
package cancel

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/kilnvideo/kiln/internal/failure"
	"github.com/kilnvideo/kiln/internal/jobevent"
	"github.com/kilnvideo/kiln/internal/tasks"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// markTTL keeps a cancel mark long enough for every retry to see it.
const markTTL = 7 * 24 * time.Hour

// Checker tells a stage whether its job was canceled, or the attempt its
// task belongs to was superseded by a retry: Check returns a permanent error
// wrapping failure.ErrCanceled if so.
type Checker interface {
	Check(ctx context.Context, jobID string, attempt int32) error
}

var _ Checker = (*Service)(nil)

// Never is a Checker for jobs that cannot be canceled (tests, stages built
// without cancel state).
type Never struct{}

// Check implements Checker.
func (Never) Check(context.Context, string, int32) error { return nil }

// Publisher publishes job events (the bus).
type Publisher interface {
	PublishJobEvent(ctx context.Context, ev *kilnv1.JobEvent) error
}

// Tasks is the part of *asynq.Inspector that cancelling uses.
type Tasks interface {
	DeleteTask(queue, id string) error
	CancelProcessing(id string) error
	ListActiveTasks(queue string, opts ...asynq.ListOption) ([]*asynq.TaskInfo, error)
}

var _ Tasks = (*asynq.Inspector)(nil)

// Service reads and writes the cancel state and cancels jobs.
type Service struct {
	Redis     redis.UniversalClient
	Inspector Tasks
	Events    Publisher
	Logger    *zap.Logger
}

// NewRedisClient returns a go-redis client for the asynq connection options.
func NewRedisClient(opt asynq.RedisClientOpt) redis.UniversalClient {
	return opt.MakeRedisClient().(redis.UniversalClient)
}

func markKey(jobID string) string { return "kiln:canceled:" + jobID }

// attemptKey holds a retried job's current attempt (absent: 1).
func attemptKey(jobID string) string { return "kiln:attempt:" + jobID }

// CurrentAttempt returns the job's current attempt: 1 unless it was retried.
func (c *Service) CurrentAttempt(ctx context.Context, jobID string) (int32, error) {
	n, err := c.Redis.Get(ctx, attemptKey(jobID)).Int()
	if errors.Is(err, redis.Nil) {
		return 1, nil
	}
	if err != nil {
		return 0, fmt.Errorf("cancel: attempt of %s: %w", jobID, err)
	}
	return tasks.NormAttempt(int32(n)), nil
}

// Clear removes the job's cancel mark and records attempt as its current
// one, before a retry: tasks of earlier attempts still queued or retrying
// then find themselves superseded (Check) and drop out.
func (c *Service) Clear(ctx context.Context, jobID string, attempt int32) error {
	_, err := c.Redis.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, attemptKey(jobID), tasks.NormAttempt(attempt), markTTL)
		p.Del(ctx, markKey(jobID))
		return nil
	})
	if err != nil {
		return fmt.Errorf("cancel: clear %s: %w", jobID, err)
	}
	return nil
}

// Canceled reports whether jobID was canceled.
func (c *Service) Canceled(ctx context.Context, jobID string) (bool, error) {
	n, err := c.Redis.Exists(ctx, markKey(jobID)).Result()
	if err != nil {
		return false, fmt.Errorf("cancel: mark of %s: %w", jobID, err)
	}
	return n > 0, nil
}

// Check returns a permanent failure.ErrCanceled when the job was canceled
// or a later attempt replaced attempt.
func (c *Service) Check(ctx context.Context, jobID string, attempt int32) error {
	canceled, err := c.Canceled(ctx, jobID)
	if err != nil {
		return err
	}
	if canceled {
		return tasks.Permanent(failure.Canceled, failure.MessageCanceled, failure.ErrCanceled)
	}
	cur, err := c.CurrentAttempt(ctx, jobID)
	if err != nil {
		return err
	}
	if cur > tasks.NormAttempt(attempt) {
		return tasks.Permanent(failure.Canceled, failure.MessageReplaced, failure.ErrCanceled)
	}
	return nil
}

// Cancel cancels the job's current attempt. It is idempotent.
func (c *Service) Cancel(ctx context.Context, jobID, assetID string) error {
	attempt, err := c.CurrentAttempt(ctx, jobID)
	if err != nil {
		return err
	}
	if err := c.Redis.Set(ctx, markKey(jobID), time.Now().UTC().Format(time.RFC3339), markTTL).Err(); err != nil {
		return fmt.Errorf("cancel: %s: %w", jobID, err)
	}
	for _, st := range tasks.Stages() {
		id := tasks.TaskID(st.Type, jobID, attempt)
		if err := c.Inspector.DeleteTask(st.Queue, id); err != nil && !errors.Is(err, asynq.ErrTaskNotFound) &&
			!errors.Is(err, asynq.ErrQueueNotFound) {
			c.Logger.Debug("delete task", zap.String("job_id", jobID), zap.String("task", id), zap.Error(err))
		}
		// Best effort: only the worker running it acts on the signal.
		if err := c.Inspector.CancelProcessing(id); err != nil {
			return fmt.Errorf("cancel: %s: %w", id, err)
		}
	}
	if err := c.cancelParts(jobID, attempt); err != nil {
		return err
	}
	ev := jobevent.New(jobID, assetID, attempt, kilnv1.JobState_JOB_STATE_CANCELED, "canceled")
	ev.Error = &kilnv1.JobError{Code: failure.Canceled, Message: failure.MessageCanceled}
	if err := c.Events.PublishJobEvent(ctx, ev); err != nil {
		return err
	}
	c.Logger.Info("job canceled", zap.String("job_id", jobID))
	return nil
}

// cancelParts stops the running parts (chunks, track) of the attempt's
// chunked transcode: their task ids carry a chunk number, so they are
// found among the transcode queue's active tasks. Queued ones are dropped
// by Middleware when their turn comes.
func (c *Service) cancelParts(jobID string, attempt int32) error {
	const pageSize = 500
	for page := 1; ; page++ {
		infos, err := c.Inspector.ListActiveTasks(tasks.QueueTranscode, asynq.PageSize(pageSize), asynq.Page(page))
		if errors.Is(err, asynq.ErrQueueNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("cancel: %s: active tasks: %w", jobID, err)
		}
		for _, ti := range infos {
			if ti.Type != tasks.TypeTranscodeChunk && ti.Type != tasks.TypeTranscodeTrack {
				continue
			}
			if j, _, a := tasks.Head(asynq.NewTask(ti.Type, ti.Payload)); j == jobID && a == tasks.NormAttempt(attempt) {
				if err := c.Inspector.CancelProcessing(ti.ID); err != nil {
					return fmt.Errorf("cancel: %s: %w", ti.ID, err)
				}
			}
		}
		if len(infos) < pageSize {
			return nil
		}
	}
}

// Middleware drops a stage task (probe, transcode, thumbnail, package) of a
// canceled job, or of an attempt a retry replaced, before its handler runs.
// Handlers still check again before they hand over to the next stage, since
// a cancel can arrive while they work.
func Middleware(c Checker) asynq.MiddlewareFunc {
	return func(next asynq.Handler) asynq.Handler {
		return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
			if _, ok := tasks.StageOf(t.Type()); ok {
				jobID, _, attempt := tasks.Head(t)
				if err := c.Check(ctx, jobID, attempt); err != nil {
					return err
				}
			}
			return next.ProcessTask(ctx, t)
		})
	}
}
