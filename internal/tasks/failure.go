package tasks

import (
	"context"
	"errors"
	"time"

	"github.com/hibiken/asynq"
	"go.uber.org/zap"

	"github.com/kilnvideo/kiln/internal/failure"
	"github.com/kilnvideo/kiln/internal/jobevent"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// Publisher publishes job events (the bus).
type Publisher interface {
	PublishJobEvent(ctx context.Context, ev *kilnv1.JobEvent) error
}

// FailureHandler is the asynq ErrorHandler of every stage: it logs each
// failed attempt and, when the task will not run again (a permanent error or
// retries exhausted), publishes the job's failed event with a reason code.
type FailureHandler struct {
	Events Publisher
	Logger *zap.Logger
}

var _ asynq.ErrorHandler = (*FailureHandler)(nil)

// HandleError implements asynq.ErrorHandler.
func (h *FailureHandler) HandleError(ctx context.Context, task *asynq.Task, err error) {
	jobID, assetID, attempt := Head(task)
	retried, _ := asynq.GetRetryCount(ctx)
	maxRetry, _ := asynq.GetMaxRetry(ctx)
	final := errors.Is(err, asynq.SkipRetry) || retried >= maxRetry
	log := h.Logger.With(zap.String("job_id", jobID), zap.String("task", task.Type()),
		zap.Int("retried", retried), zap.Int("max_retry", maxRetry), zap.Bool("final", final))
	if !final {
		log.Warn("task failed; will retry", zap.Error(err))
		return
	}
	if errors.Is(err, failure.ErrCanceled) {
		log.Info("task dropped: job canceled")
		return
	}
	log.Error("task failed", zap.Error(err))
	if _, stage := StageOf(task.Type()); jobID == "" || !stage {
		return
	}
	code, msg := failure.CodeOf(err)
	ev := jobevent.Failed(jobID, assetID, attempt, code, msg)
	// The task context may be done (timeout); publishing the failure must
	// still happen, bounded by its own deadline. The task will not run
	// again, so a bus that is restarting is waited for (retried every
	// second): a lost FAILED would leave the reconciler only "stalled" to
	// say, not the real reason.
	// Its trace context is the task's: the failure belongs to the upload's
	// trace.
	pctx, cancel := context.WithTimeout(TraceContext(context.WithoutCancel(ctx), task), publishFailedFor)
	defer cancel()
	for {
		perr := h.Events.PublishJobEvent(pctx, ev)
		if perr == nil {
			return
		}
		select {
		case <-pctx.Done():
			log.Error("publish failed event", zap.Error(perr))
			return
		case <-time.After(time.Second):
			log.Warn("publish failed event; retrying", zap.Error(perr))
		}
	}
}

// publishFailedFor bounds the retries of publishing a job's FAILED event.
const publishFailedFor = 30 * time.Second
