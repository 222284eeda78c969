package tasks

import (
	"context"
	"errors"
	"time"

	"github.com/hibiken/asynq"

	"github.com/kilnvideo/kiln/internal/failure"
	"github.com/kilnvideo/kiln/internal/ffmpeg"
)

// A run that ran out of time or memory after the source was accepted will
// most likely do so again: the same input needs the same time and memory.
// Such a run is retried once (another worker may be faster or have more
// room), then the job fails with failure.Timeout or
// failure.ResourcesExhausted, instead of running MaxRetry more times.
//
// The time limit needs care: when a task's context (asynq.Timeout) ends,
// asynq fails the run with ctx.Err() at once, whatever the handler returns,
// and retries it up to MaxRetry. So Bounded gives the handler a deadline a
// margin before asynq's: the handler's work ends first, and its error is the
// one that counts.

// Margins of WorkContext: a tenth of the time left, within [minMargin,
// maxMargin], and never more than half of it.
const (
	minMargin = 10 * time.Second
	maxMargin = time.Minute
)

// WorkContext returns ctx with a deadline a margin before ctx's own (none
// when ctx has none): time for the handler to stop ffmpeg, clean up and
// return its error before asynq gives up on the run.
func WorkContext(ctx context.Context) (context.Context, context.CancelFunc) {
	deadline, ok := ctx.Deadline()
	if !ok {
		return context.WithCancel(ctx)
	}
	left := time.Until(deadline)
	margin := min(max(left/10, minMargin), maxMargin, left/2)
	return context.WithDeadline(ctx, deadline.Add(-margin))
}

// LimitRetries returns err, or when this run is already a retry (retried,
// asynq.GetRetryCount, is at least 1) and err says it ran out of time
// (work, made by WorkContext from task, passed its deadline while task's is
// still ahead) or memory (ffmpeg.CauseMemory), a permanent failure with
// failure.Timeout or failure.ResourcesExhausted.
func LimitRetries(retried int, task, work context.Context, err error) error {
	if err == nil || errors.Is(err, asynq.SkipRetry) {
		return err
	}
	code, message := "", ""
	var ee *ffmpeg.ExitError
	switch {
	case errors.Is(work.Err(), context.DeadlineExceeded) && task.Err() == nil:
		code, message = failure.Timeout, "processing took longer than its time limit, twice"
	case errors.As(err, &ee) && ee.Cause() == ffmpeg.CauseMemory:
		code, message = failure.ResourcesExhausted, "ffmpeg ran out of memory, twice (KILN_FFMPEG_MAX_MEMORY)"
	default:
		return err
	}
	if retried < 1 {
		return err // the one retry
	}
	return Permanent(code, message, err)
}

// Bounded wraps a stage handler: it runs under WorkContext, and its error
// goes through LimitRetries.
func Bounded(handler func(context.Context, *asynq.Task) error) func(context.Context, *asynq.Task) error {
	return func(ctx context.Context, t *asynq.Task) error {
		work, cancel := WorkContext(ctx)
		defer cancel()
		err := handler(work, t)
		retried, _ := asynq.GetRetryCount(ctx)
		return LimitRetries(retried, ctx, work, err)
	}
}
