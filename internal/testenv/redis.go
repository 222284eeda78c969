package testenv

import (
	"context"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// The databases of the test stack's Redis. `go test ./...` runs the
// packages' tests in parallel processes, and RedisDB flushes its database,
// so every package that uses one owns it alone:
//
//	0   the test stack itself (never flushed: RedisDB refuses it)
//	1   internal/ledger
//	2   catalog/tenants (the key directory)
//	3   internal/quota
//	4   ingest (quotas)
//	5   internal/admission
//	6   catalog/webhooks (two replicas' dispatchers)
//	7   internal/tasks
//	8   internal/cancel
//	9   internal/app (its kiln processes)
//	10  catalog
//	11  catalog (the reconciler's integration test)
//	12  workers (retry limits through a real asynq server)
//	13  internal/lease
//	14  deploy (the metrics test's kiln serve, the KEDA scaler's keys)
//	15  internal/profiling
//
// Every number is taken: a new package shares one only if its tests use
// their own keys and never flush.

// RedisDB returns the connection options of database db of the test
// stack's Redis (Redis), flushed now and again at the end of the test; the
// test skips without a Redis, or fails under `go tool task test`. The tests
// of one package share db, so they must not run in parallel with each
// other.
func RedisDB(tb testing.TB, db int) asynq.RedisClientOpt {
	tb.Helper()
	if db == 0 {
		tb.Fatalf("testenv.RedisDB: database 0 is the test stack's own; use one of your package's (see testenv/redis.go)")
	}
	opt := RedisOpt(tb)
	opt.DB = db
	rc := RedisClient(tb, opt)
	flush := func() {
		// Not tb.Context(): cleanups run after it is canceled.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(tb.Context()), 10*time.Second)
		defer cancel()
		if err := rc.FlushDB(ctx).Err(); err != nil {
			tb.Errorf("flush redis db %d: %v", db, err)
		}
	}
	flush()
	// Registered after RedisClient's Close, so it runs before it.
	tb.Cleanup(flush)
	return opt
}

// RedisOpt returns the connection options of the test stack's Redis: its
// address (Redis) and password (RedisPassword), database 0 — the stack's
// own: a test that writes takes RedisDB instead.
func RedisOpt(tb testing.TB) asynq.RedisClientOpt {
	tb.Helper()
	return asynq.RedisClientOpt{Addr: Redis(tb), Password: RedisPassword()}
}

// RedisClient returns a go-redis client for opt (what asynq itself
// connects with), closed at the end of the test.
func RedisClient(tb testing.TB, opt asynq.RedisClientOpt) redis.UniversalClient {
	tb.Helper()
	rc := opt.MakeRedisClient().(redis.UniversalClient)
	tb.Cleanup(func() { _ = rc.Close() })
	return rc
}

// AsynqServer runs a real asynq server on queues (equal weights) until the
// end of the test, with handler and errorHandler (may be nil). It polls and
// retries fast (every retry after 100ms), so tests need not wait.
func AsynqServer(tb testing.TB, opt asynq.RedisClientOpt, queues []string, handler asynq.Handler, errorHandler asynq.ErrorHandler) {
	tb.Helper()
	qs := map[string]int{}
	for _, q := range queues {
		qs[q] = 1
	}
	srv := asynq.NewServer(opt, asynq.Config{
		Concurrency:              8,
		Queues:                   qs,
		ErrorHandler:             errorHandler,
		RetryDelayFunc:           func(int, error, *asynq.Task) time.Duration { return 100 * time.Millisecond },
		TaskCheckInterval:        50 * time.Millisecond,
		DelayedTaskCheckInterval: 100 * time.Millisecond,
		ShutdownTimeout:          5 * time.Second,
		LogLevel:                 asynq.ErrorLevel,
	})
	if err := srv.Start(handler); err != nil {
		tb.Fatalf("start asynq server: %v", err)
	}
	tb.Cleanup(srv.Shutdown)
}

// AsynqClient returns an asynq client for opt, closed at the end of the
// test.
func AsynqClient(tb testing.TB, opt asynq.RedisClientOpt) *asynq.Client {
	tb.Helper()
	c := asynq.NewClient(opt)
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// AsynqInspector returns an asynq inspector for opt, closed at the end of
// the test.
func AsynqInspector(tb testing.TB, opt asynq.RedisClientOpt) *asynq.Inspector {
	tb.Helper()
	insp := asynq.NewInspector(opt)
	tb.Cleanup(func() { _ = insp.Close() })
	return insp
}

// TaskInfoGetter is the part of *asynq.Inspector WaitTaskState uses.
type TaskInfoGetter interface {
	GetTaskInfo(queue, id string) (*asynq.TaskInfo, error)
}

var _ TaskInfoGetter = (*asynq.Inspector)(nil)

// WaitTaskState polls until task id in queue is in state and returns it;
// after timeout it fails tb, naming the last state (or error) seen.
func WaitTaskState(tb testing.TB, insp TaskInfoGetter, queue, id string, state asynq.TaskState, timeout time.Duration) *asynq.TaskInfo {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for {
		ti, err := insp.GetTaskInfo(queue, id)
		if err == nil && ti.State == state {
			return ti
		}
		if err != nil {
			last = err.Error()
		} else {
			last = ti.State.String()
		}
		if time.Now().After(deadline) {
			tb.Fatalf("task %s in %s: not %s after %s (last: %s)", id, queue, state, timeout, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
