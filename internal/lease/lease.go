// Package lease makes a stage task whose worker died run again within
// seconds, and never twice at the same time.
//
// asynq notices a dead worker only when the task's 30 s lease has been
// expired for 30 s, on a recoverer pass it makes once a minute: a task of a
// worker killed with -9 waits 60 to 120 s. kiln keeps its own, shorter
// lease per running stage task, in Redis:
//
//   - Manager.Middleware takes kiln:lease:<task> (a random token, TTL
//     Config.TTL) before the handler runs and renews it every TTL/3 while
//     it runs. A run that finds the stage already finished
//     (kiln:done:<task>, set when a run ends with success or a permanent
//     failure) drops its task. A run that finds the lease held by another
//     run returns ErrBusy, which the worker's asynq server neither counts
//     as a failure nor lets exhaust the retries (IsFailure, RetryDelay):
//     the task comes back every BusyRetryDelay until the holder finished
//     (done: dropped) or died (its lease lapses: it runs). A run that sees
//     its lease taken over stops its handler (the context is canceled).
//   - On shutdown, Manager.ReleaseAll lets go of the leases of the tasks
//     asynq handed back, so that another worker takes them at once.
//   - Rescuer, in every worker, lists the active stage tasks of asynq
//     every TTL/3. An active task whose lease stays missing for TTL/2 (its
//     worker stopped renewing it TTL ago, so it is dead or cut off) is
//     enqueued again as a rescue copy, task id <task>~rescue<n>, which any
//     worker takes at once. When asynq recovers the original later, the
//     middleware drops it (done, or leased by the copy).
//
// A task is thus lost for about 1.5×TTL plus one pass (15 to 20 s with
// the default 10 s) instead of 1 to 2 minutes. A worker cut off from Redis
// for longer than TTL while its ffmpeg keeps running may overlap with its
// rescue copy until it reconnects and sees its lease taken; both write the
// same objects with the same content (stages are idempotent), so the
// outcome is unchanged.
package lease

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/kilnvideo/kiln/internal/tasks"
)

// DefaultTTL is the default lease: how long a dead worker's task waits
// before it is rescued, give or take half of it.
const DefaultTTL = 10 * time.Second

// MinTTL is the shortest lease accepted: renewals every TTL/3 must get
// through a loaded Redis.
const MinTTL = 3 * time.Second

// rescueMark separates a task id from its rescue number.
const rescueMark = "~rescue"

// Config is what both halves share.
type Config struct {
	Redis redis.UniversalClient
	// TTL is the lease of a running task (DefaultTTL when zero).
	TTL    time.Duration
	Logger *zap.Logger
}

func (c Config) ttl() time.Duration {
	if c.TTL <= 0 {
		return DefaultTTL
	}
	return max(c.TTL, MinTTL)
}

// BaseID is the task id a rescue copy stands for (id itself for an
// original): every copy of a task shares its lease and done mark.
func BaseID(id string) string {
	if i := strings.Index(id, rescueMark); i >= 0 {
		return id[:i]
	}
	return id
}

// RescueID is the id of the copy that replaces task id when its worker
// died: <base>~rescue1 for an original, ~rescue<n+1> for copy n.
func RescueID(id string) string {
	n := 0
	if i := strings.Index(id, rescueMark); i >= 0 {
		n, _ = strconv.Atoi(id[i+len(rescueMark):])
	}
	return BaseID(id) + rescueMark + strconv.Itoa(n+1)
}

func leaseKey(base string) string { return "kiln:lease:" + base }
func doneKey(base string) string  { return "kiln:done:" + base }

// renew extends the lease if token still holds it: 1 renewed, 0 not ours.
// When the key is gone (expired while Redis or this worker stalled, or the
// database was flushed) it is taken again, unless the stage is done.
var renew = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not v and redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0`)

// release deletes the lease if token holds it.
var release = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0`)

// ErrBusy is the error of a run whose task's lease another run holds.
var ErrBusy = errors.New("lease: another run holds this task")

// BusyRetryDelay is how soon a task that found its lease held runs again.
const BusyRetryDelay = 3 * time.Second

// Counts are what the middleware and the rescuer did since the process
// started (kiln_task_rescues_total, kiln_task_duplicates_dropped_total,
// kiln_task_busy_total).
type Counts struct {
	Rescued, Dropped, Busy atomic.Int64
}

// Manager holds the leases of one worker process.
type Manager struct {
	cfg    Config
	counts *Counts
	mu     sync.Mutex
	held   map[string]string // base task id → token, of the runs in progress
}

// NewManager returns the lease manager of a worker.
func NewManager(cfg Config) *Manager {
	return &Manager{cfg: cfg, counts: &Counts{}, held: map[string]string{}}
}

// Counts returns what the manager's middleware and rescuer did.
func (m *Manager) Counts() *Counts { return m.counts }

// ReleaseAll releases every lease this process holds: after the asynq
// server shut down, the tasks it handed back can run elsewhere at once.
func (m *Manager) ReleaseAll(ctx context.Context) {
	m.mu.Lock()
	held := maps.Clone(m.held)
	m.mu.Unlock()
	for base, token := range held {
		if err := release.Run(ctx, m.cfg.Redis, []string{leaseKey(base)}, token).Err(); err != nil {
			m.cfg.Logger.Warn("task lease release failed; it expires by itself", zap.String("task_id", base), zap.Error(err))
		}
	}
}

// Middleware holds a lease on each stage task while its handler runs (see
// the package comment). Tasks that are not stage tasks (webhooks) pass
// through. When Redis cannot be reached the task runs without a lease
// rather than not at all: asynq's own lease still covers it.
func (m *Manager) Middleware() asynq.MiddlewareFunc {
	cfg, counts, ttl := m.cfg, m.counts, m.cfg.ttl()
	return func(next asynq.Handler) asynq.Handler {
		return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
			if _, ok := tasks.StageOf(t.Type()); !ok {
				return next.ProcessTask(ctx, t)
			}
			id, _ := asynq.GetTaskID(ctx)
			base := BaseID(id)
			jobID, _, _ := tasks.Head(t)
			log := cfg.Logger.With(zap.String("job_id", jobID), zap.String("task_id", id))
			token, err := newToken()
			if err != nil {
				return err
			}
			held, done, err := acquire(ctx, cfg.Redis, base, token, ttl)
			switch {
			case err != nil:
				log.Warn("task lease unavailable; running without it", zap.Error(err))
				return next.ProcessTask(ctx, t)
			case done:
				counts.Dropped.Add(1)
				log.Info("stage task dropped: another run finished it")
				return nil
			case !held:
				counts.Busy.Add(1)
				log.Debug("stage task waits: another run holds its lease")
				return ErrBusy
			}
			m.hold(base, token)
			defer m.unhold(base)
			runCtx, stop := context.WithCancelCause(ctx)
			renewed := make(chan struct{})
			go func() {
				defer close(renewed)
				keep(runCtx, cfg.Redis, base, token, ttl, log, stop)
			}()
			herr := next.ProcessTask(runCtx, t)
			stop(nil)
			<-renewed
			if cause := context.Cause(runCtx); errors.Is(cause, errLeaseLost) && herr != nil {
				herr = fmt.Errorf("%w (%w)", herr, errLeaseLost)
			}
			finish(ctx, cfg.Redis, base, token, herr == nil || isPermanent(herr), log)
			return herr
		})
	}
}

func (m *Manager) hold(base, token string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.held[base] = token
}

func (m *Manager) unhold(base string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.held, base)
}

var errLeaseLost = errors.New("lease: another run took this task over")

func newToken() (string, error) {
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("lease: token: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// acquire takes the lease of base unless it is held or the stage is done.
func acquire(ctx context.Context, rc redis.UniversalClient, base, token string, ttl time.Duration) (held, done bool, err error) {
	n, err := rc.Exists(ctx, doneKey(base)).Result()
	if err != nil {
		return false, false, fmt.Errorf("lease: %s: %w", base, err)
	}
	if n > 0 {
		return false, true, nil
	}
	ok, err := rc.SetNX(ctx, leaseKey(base), token, ttl).Result()
	if err != nil {
		return false, false, fmt.Errorf("lease: %s: %w", base, err)
	}
	return ok, false, nil
}

// keep renews the lease every ttl/3 until ctx ends, and stops the run when
// another run holds it. A failed renewal (Redis away) is retried on the
// next tick: the run goes on.
func keep(ctx context.Context, rc redis.UniversalClient, base, token string, ttl time.Duration, log *zap.Logger, stop context.CancelCauseFunc) {
	tick := time.NewTicker(ttl / 3)
	defer tick.Stop()
	keys := []string{leaseKey(base), doneKey(base)}
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		n, err := renew.Run(ctx, rc, keys, token, ttl.Milliseconds()).Int()
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			log.Warn("task lease renewal failed; retrying", zap.Error(err))
		case n == 0:
			log.Warn("task lease taken over by another run; stopping this one")
			stop(errLeaseLost)
			return
		}
	}
}

// finish releases the lease and, when the stage ended for good, marks it
// done so that later copies drop out. It runs after the handler, even when
// the task's context ended (shutdown), with a short deadline of its own.
func finish(ctx context.Context, rc redis.UniversalClient, base, token string, done bool, log *zap.Logger) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if done {
		if err := rc.Set(ctx, doneKey(base), token, tasks.Retention).Err(); err != nil {
			log.Warn("task done mark not written; a late copy may run the stage again", zap.Error(err))
		}
	}
	if err := release.Run(ctx, rc, []string{leaseKey(base)}, token).Err(); err != nil {
		log.Warn("task lease release failed; it expires by itself", zap.Error(err))
	}
}

// isPermanent reports whether asynq will not retry after err.
func isPermanent(err error) bool { return errors.Is(err, asynq.SkipRetry) }

// Describe implements prometheus.Collector.
func (c *Counts) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(c, ch) }

// Collect implements prometheus.Collector: kiln_task_rescues_total,
// kiln_task_duplicates_dropped_total and kiln_task_busy_total.
func (c *Counts) Collect(ch chan<- prometheus.Metric) {
	for _, m := range []struct {
		name, help string
		n          int64
	}{
		{"kiln_task_rescues_total", "Stage tasks enqueued again because their worker stopped renewing its lease.", c.Rescued.Load()},
		{"kiln_task_duplicates_dropped_total", "Stage task runs dropped because another run had finished the same task.", c.Dropped.Load()},
		{"kiln_task_busy_total", "Stage task runs put back because another run held the task's lease.", c.Busy.Load()},
	} {
		ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(m.name, m.help, nil, nil), prometheus.CounterValue, float64(m.n))
	}
}
