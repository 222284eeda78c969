package metrics

import (
	"context"
	"errors"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kilnvideo/kiln/internal/failure"
	"github.com/kilnvideo/kiln/internal/lease"
)

// Task run results (the result label of kiln_task_duration_seconds).
const (
	ResultOK      = "ok"      // the handler succeeded
	ResultRetry   = "retry"   // it failed and asynq runs it again
	ResultFailed  = "failed"  // it failed for good (permanent, or its last retry)
	ResultDropped = "dropped" // its job was canceled or its attempt replaced
	ResultBusy    = "busy"    // another run held its lease: put back, no failure
)

// Tasks times the worker's task runs.
type Tasks struct {
	duration *prometheus.HistogramVec
}

// NewTasks returns the task metrics, registered with reg:
// kiln_task_duration_seconds{type,result}, with an (empty) ok series for
// each of types, so the family is there before the first run.
func NewTasks(reg prometheus.Registerer, types ...string) (*Tasks, error) {
	t := &Tasks{duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "kiln_task_duration_seconds",
		Help:    "Time a worker spent on one run of a task (stage tasks and webhook deliveries), by task type and result (ok, retry, failed, dropped, busy).",
		Buckets: []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 3600},
	}, []string{"type", "result"})}
	if err := reg.Register(t.duration); err != nil {
		return nil, err
	}
	for _, typ := range types {
		t.duration.WithLabelValues(typ, ResultOK)
	}
	return t, nil
}

// Middleware times every task run; it goes first on the asynq mux, so
// the runs the cancel and lease middlewares stop are counted too.
func (m *Tasks) Middleware() asynq.MiddlewareFunc {
	return func(next asynq.Handler) asynq.Handler {
		return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
			start := time.Now()
			err := next.ProcessTask(ctx, t)
			m.duration.WithLabelValues(t.Type(), Result(ctx, err)).Observe(time.Since(start).Seconds())
			return err
		})
	}
}

// Result classifies the outcome of a task run that returned err.
func Result(ctx context.Context, err error) string {
	switch {
	case err == nil:
		return ResultOK
	case errors.Is(err, failure.ErrCanceled):
		return ResultDropped
	case errors.Is(err, lease.ErrBusy):
		return ResultBusy
	case errors.Is(err, asynq.SkipRetry):
		return ResultFailed
	}
	retried, ok1 := asynq.GetRetryCount(ctx)
	maxRetry, ok2 := asynq.GetMaxRetry(ctx)
	if ok1 && ok2 && retried >= maxRetry {
		return ResultFailed
	}
	return ResultRetry
}
