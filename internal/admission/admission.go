// Package admission shares the transcode fleet fairly between tenants and
// priorities, on top of asynq.
//
// asynq's queues are FIFO: a tenant that uploads 500 videos puts 500
// transcodes ahead of everybody else's. So transcode work (whole
// transcodes, chunks, tracks) is not enqueued into asynq when it is made:
// Queue, the tasks.Enqueuer producers use, keeps it in Redis, one waiting
// list per tenant and priority, and the Admitter moves it into asynq's
// transcode queue while the fleet has a free slot — choosing, each time,
// the tenant that has had the least of the fleet for its weight, and
// within the tenant the priority that has had the least for its own
// (high 4, normal 2, low 1). That is start-time fair queuing: a tenant
// with one waiting job gets the next free slot even behind another
// tenant's 50, and a tenant that had nothing waiting rejoins at the
// current virtual time, so idle time is not saved up as credit.
//
// A transcode's later parts (the chunks and the track of a chunked job)
// go to the front of their tenant's list: a started job finishes before
// the tenant's next one starts, and the chunk share (workers.ChunkConfig)
// still bounds what one job takes.
//
// Every step is one Redis script, so any number of admitters (one per
// worker process) run side by side; a crash between admitting a task and
// enqueueing it is repaired by the next pass, which enqueues it again
// under the same TaskID (asynq deduplicates). A task counts against the
// fleet from its admission until asynq reports it completed, archived or
// gone.
package admission

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"

	"github.com/kilnvideo/kiln/internal/tasks"
)

// DefaultTenant names the work of the default tenant (an empty tenant id).
const DefaultTenant = "default"

// DefaultInterval is how often an admitter looks for free slots and
// finished tasks.
const DefaultInterval = 200 * time.Millisecond

// Slots counts the fleet's transcode slots (the worker processes'
// concurrency on the transcode queue).
type Slots interface {
	TranscodeSlots(ctx context.Context) (int, error)
}

// TaskStates is the part of *asynq.Inspector the admitter reads.
type TaskStates interface {
	GetTaskInfo(queue, id string) (*asynq.TaskInfo, error)
}

// Config configures a Queue.
type Config struct {
	Redis redis.UniversalClient
	// Next receives every task admitted and every task not for the
	// transcode queue (the asynq client).
	Next tasks.Enqueuer
	// Tasks tells whether an admitted task is still in asynq.
	Tasks TaskStates
	// Slots bounds the admitted tasks not yet done: the fleet's slots.
	Slots Slots
	// MaxPerTenant bounds one tenant's admitted tasks; 0: only the fleet
	// bounds them.
	MaxPerTenant int
	// Weights are tenants' shares (a tenant not named has 1).
	Weights map[string]int
	// Interval between an admitter's passes; DefaultInterval when 0.
	Interval time.Duration
	Logger   *zap.Logger
}

// Queue is a tasks.Enqueuer that keeps transcode work waiting for
// admission, and the admitter that admits it.
type Queue struct {
	cfg     Config
	weights string // Config.Weights as the scripts read them
	log     *zap.Logger

	// The fleet's slots, read at most once a slotsTTL: every submit and
	// every finished transcode asks.
	mu      sync.Mutex
	slots   int
	slotsAt time.Time
}

// slotsTTL is how long a count of the fleet's slots is used.
const slotsTTL = time.Second

// New returns the queue of cfg.
func New(cfg Config) (*Queue, error) {
	if cfg.Redis == nil || cfg.Next == nil || cfg.Tasks == nil || cfg.Slots == nil {
		return nil, errors.New("admission: Redis, Next, Tasks and Slots are required")
	}
	if cfg.MaxPerTenant < 0 {
		return nil, fmt.Errorf("admission: per-tenant bound %d: want ≥ 0 (0 = the fleet's)", cfg.MaxPerTenant)
	}
	w := map[string]int{}
	for t, n := range cfg.Weights {
		if n < 1 {
			return nil, fmt.Errorf("admission: tenant %q: weight %d, want ≥ 1", t, n)
		}
		w[tenantKey(t)] = n
	}
	weights, err := json.Marshal(w)
	if err != nil {
		return nil, fmt.Errorf("admission: %w", err)
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	return &Queue{cfg: cfg, weights: string(weights), log: cfg.Logger}, nil
}

var _ tasks.Enqueuer = (*Queue)(nil)

// Redis keys, in one hash slot.
const (
	prefix     = "{kiln:admit}:"
	keyCommand = prefix + "cmd"     // hash: task id → waiting or admitted command
	keyActive  = prefix + "active"  // set: tenants with waiting work
	keyFlight  = prefix + "flight"  // hash: admitted task id → tenant
	keyCount   = prefix + "count"   // hash: tenant → admitted tasks
	keyQueued  = prefix + "queued"  // set: admitted task ids enqueued in asynq
	keyBacklog = prefix + "backlog" // list: one token per waiting task (LLEN: the backlog, for KEDA)
)

// BacklogKey is a Redis list as long as the transcode work waiting for
// admission (KEDA's redis scaler reads its length).
const BacklogKey = keyBacklog

func tenantKey(tenant string) string {
	if tenant == "" {
		return DefaultTenant
	}
	return tenant
}

// command is a task as it waits: what EnqueueContext was given.
type command struct {
	Tenant    string        `json:"tenant"`
	Priority  string        `json:"priority"`
	Type      string        `json:"type"`
	Payload   []byte        `json:"payload"`
	ID        string        `json:"id"`
	Queue     string        `json:"queue"`
	MaxRetry  int           `json:"max_retry"`
	Timeout   time.Duration `json:"timeout"`
	Retention time.Duration `json:"retention"`
}

func (c command) options() []asynq.Option {
	return []asynq.Option{asynq.TaskID(c.ID), asynq.Queue(c.Queue), asynq.MaxRetry(c.MaxRetry),
		asynq.Timeout(c.Timeout), asynq.Retention(c.Retention)}
}

// commandOf reads the options of a tasks.Command; ok is false for a task
// that is not for the transcode queue.
func commandOf(task *asynq.Task, opts []asynq.Option) (command, bool, error) {
	c := command{Type: task.Type(), Payload: task.Payload(), Queue: "default"}
	var unsupported asynq.Option
	for _, o := range opts {
		switch o.Type() {
		case asynq.TaskIDOpt:
			c.ID, _ = o.Value().(string)
		case asynq.QueueOpt:
			c.Queue, _ = o.Value().(string)
		case asynq.MaxRetryOpt:
			c.MaxRetry, _ = o.Value().(int)
		case asynq.TimeoutOpt:
			c.Timeout, _ = o.Value().(time.Duration)
		case asynq.RetentionOpt:
			c.Retention, _ = o.Value().(time.Duration)
		default:
			unsupported = o
		}
	}
	if c.Queue != tasks.QueueTranscode {
		return c, false, nil
	}
	if unsupported != nil {
		return c, false, fmt.Errorf("admission: %s: option %s cannot wait for admission", c.Type, unsupported)
	}
	if c.ID == "" {
		return c, false, fmt.Errorf("admission: %s: a transcode task needs a TaskID", c.Type)
	}
	var head kilnv1.TaskHead
	if err := proto.Unmarshal(c.Payload, &head); err != nil {
		return c, false, fmt.Errorf("admission: %s: payload: %w", c.Type, err)
	}
	c.Tenant, c.Priority = tenantKey(head.GetTenantId()), tasks.NormPriority(head.GetPriority())
	if !tasks.ValidPriority(c.Priority) {
		return c, false, fmt.Errorf("admission: %s: priority %q", c.Type, c.Priority)
	}
	return c, true, nil
}

// submit adds a command to its tenant's list of its priority: at the back,
// or at the front (ARGV[4] = 1). A tenant, or a tenant's priority, that
// had nothing waiting starts at the current virtual time (keeping its own
// if later). Answers 0 for a task already waiting or admitted.
var submit = redis.NewScript(`
local P = '{kiln:admit}:'
local id, tenant, prio, front, cmd = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if redis.call('HEXISTS', P..'cmd', id) == 1 then return 0 end
redis.call('HSET', P..'cmd', id, cmd)
local list = P..'wait:'..tenant..':'..prio
if redis.call('LLEN', list) == 0 then
  local now = tonumber(redis.call('HGET', P..'pclock', tenant) or '0')
  local own = tonumber(redis.call('HGET', P..'pvt', tenant..'|'..prio) or '0')
  if own < now then redis.call('HSET', P..'pvt', tenant..'|'..prio, tostring(now)) end
end
if front == '1' then redis.call('LPUSH', list, id) else redis.call('RPUSH', list, id) end
redis.call('RPUSH', P..'backlog', '1')
if redis.call('SADD', P..'active', tenant) == 1 then
  local now = tonumber(redis.call('GET', P..'clock') or '0')
  local own = tonumber(redis.call('HGET', P..'vt', tenant) or '0')
  if own < now then redis.call('HSET', P..'vt', tenant, tostring(now)) end
end
return 1`)

// admit admits the next task when fewer than ARGV[1] are admitted: the
// waiting tenant (under its bound ARGV[2], 0 none) with the least virtual
// time, then its priority with the least; each admission adds 1/weight
// to both (tenant weights ARGV[3], JSON). Answers {id, command}, or nil.
var admit = redis.NewScript(`
local P = '{kiln:admit}:'
local capacity, perTenant = tonumber(ARGV[1]), tonumber(ARGV[2])
if redis.call('HLEN', P..'flight') >= capacity then return nil end
local weights = cjson.decode(ARGV[3])
local prios = {'high', 'normal', 'low'}
local pweight = {high = 4, normal = 2, low = 1}
local best, bestV
for _, t in ipairs(redis.call('SMEMBERS', P..'active')) do
  local n = tonumber(redis.call('HGET', P..'count', t) or '0')
  if perTenant <= 0 or n < perTenant then
    local v = tonumber(redis.call('HGET', P..'vt', t) or '0')
    if not best or v < bestV or (v == bestV and t < best) then best, bestV = t, v end
  end
end
if not best then return nil end
local bp, bpv
for _, p in ipairs(prios) do
  if redis.call('LLEN', P..'wait:'..best..':'..p) > 0 then
    local v = tonumber(redis.call('HGET', P..'pvt', best..'|'..p) or '0')
    if not bp or v < bpv then bp, bpv = p, v end
  end
end
if not bp then
  redis.call('SREM', P..'active', best)
  return nil
end
local id = redis.call('LPOP', P..'wait:'..best..':'..bp)
redis.call('LPOP', P..'backlog')
redis.call('SET', P..'clock', tostring(bestV))
redis.call('HSET', P..'vt', best, tostring(bestV + 1 / (tonumber(weights[best]) or 1)))
redis.call('HSET', P..'pclock', best, tostring(bpv))
redis.call('HSET', P..'pvt', best..'|'..bp, tostring(bpv + 1 / pweight[bp]))
redis.call('HSET', P..'flight', id, best)
redis.call('HINCRBY', P..'count', best, 1)
local left = 0
for _, p in ipairs(prios) do left = left + redis.call('LLEN', P..'wait:'..best..':'..p) end
if left == 0 then redis.call('SREM', P..'active', best) end
return {id, redis.call('HGET', P..'cmd', id)}`)

// release forgets an admitted task that is done: 1, or 0 when it was not
// admitted (another admitter released it first).
var release = redis.NewScript(`
local P = '{kiln:admit}:'
local id = ARGV[1]
local t = redis.call('HGET', P..'flight', id)
if not t then return 0 end
redis.call('HDEL', P..'flight', id)
if redis.call('HINCRBY', P..'count', t, -1) <= 0 then redis.call('HDEL', P..'count', t) end
redis.call('SREM', P..'queued', id)
redis.call('HDEL', P..'cmd', id)
return 1`)

// EnqueueContext keeps a transcode-queue task waiting for admission and
// passes any other task to Config.Next. A task already waiting or admitted
// answers asynq.ErrTaskIDConflict, as asynq does for a repeated TaskID.
func (q *Queue) EnqueueContext(ctx context.Context, task *asynq.Task, opts ...asynq.Option) (*asynq.TaskInfo, error) {
	c, wait, err := commandOf(task, opts)
	if err != nil {
		return nil, err
	}
	if !wait {
		return q.cfg.Next.EnqueueContext(ctx, task, opts...)
	}
	data, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("admission: %w", err)
	}
	// A job's later parts go before the tenant's other work.
	front := "0"
	if c.Type != tasks.TypeTranscode {
		front = "1"
	}
	n, err := submit.Run(ctx, q.cfg.Redis, nil, c.ID, c.Tenant, c.Priority, front, data).Int()
	if err != nil {
		return nil, fmt.Errorf("admission: submit %s: %w", c.ID, err)
	}
	if n == 0 {
		return nil, asynq.ErrTaskIDConflict
	}
	// On a fleet with a free slot the task goes on at once, without
	// waiting for the next pass.
	if err := q.admitAll(ctx); err != nil {
		q.log.Warn("admission after submit", zap.String("task_id", c.ID), zap.Error(err))
	}
	return &asynq.TaskInfo{ID: c.ID, Queue: c.Queue, Type: c.Type, Payload: c.Payload, State: asynq.TaskStatePending,
		MaxRetry: c.MaxRetry, Timeout: c.Timeout, Retention: c.Retention}, nil
}

// Waiting reports whether the transcode task id waits for admission or was
// admitted and not yet handed to asynq: a reconciler asking asynq alone
// would think it lost.
func (q *Queue) Waiting(ctx context.Context, id string) (bool, error) {
	known, err := q.cfg.Redis.HExists(ctx, keyCommand, id).Result()
	if err != nil || !known {
		return false, wrap(err)
	}
	queued, err := q.cfg.Redis.SIsMember(ctx, keyQueued, id).Result()
	return !queued, wrap(err)
}

func wrap(err error) error {
	if err != nil {
		return fmt.Errorf("admission: %w", err)
	}
	return nil
}

// sweepEvery is how many of Run's ticks go by between two sweeps: a
// finished task's slot is released by Middleware as it ends, so the sweep
// (one asynq lookup per admitted task) is only the safety net for a
// worker that died.
const sweepEvery = 10

// Run admits waiting work every Config.Interval, and makes a whole Pass
// every sweepEvery intervals, until ctx ends.
func (q *Queue) Run(ctx context.Context) {
	t := time.NewTicker(q.cfg.Interval)
	defer t.Stop()
	for tick := 0; ; tick++ {
		pass := q.admitAll
		if tick%sweepEvery == 0 {
			pass = q.Pass
		}
		if err := pass(ctx); err != nil && ctx.Err() == nil {
			q.log.Warn("admission pass", zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Pass releases the admitted tasks that are done, enqueues again those an
// admitter admitted and did not enqueue (it died in between), then admits
// waiting work while the fleet has free slots. Submitting (EnqueueContext)
// and finishing a task (Middleware) admit at once too: the passes are for
// what those missed.
func (q *Queue) Pass(ctx context.Context) error {
	if err := q.sweep(ctx); err != nil {
		return err
	}
	return q.admitAll(ctx)
}

// fleetSlots is the fleet's transcode slots, read again once slotsTTL has
// passed.
func (q *Queue) fleetSlots(ctx context.Context) (int, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.slotsAt.IsZero() && time.Since(q.slotsAt) < slotsTTL {
		return q.slots, nil
	}
	n, err := q.cfg.Slots.TranscodeSlots(ctx)
	if err != nil {
		return 0, fmt.Errorf("admission: %w", err)
	}
	q.slots, q.slotsAt = n, time.Now()
	return n, nil
}

// admitAll admits waiting work while the fleet has free slots.
func (q *Queue) admitAll(ctx context.Context) error {
	slots, err := q.fleetSlots(ctx)
	if err != nil {
		return err
	}
	for {
		res, err := admit.Run(ctx, q.cfg.Redis, nil, max(slots, 1), q.cfg.MaxPerTenant, q.weights).StringSlice()
		if errors.Is(err, redis.Nil) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("admission: admit: %w", err)
		}
		if len(res) != 2 {
			return fmt.Errorf("admission: admit answered %d values", len(res))
		}
		if err := q.enqueue(ctx, res[0], res[1]); err != nil {
			return err
		}
	}
}

// enqueue hands an admitted command to asynq and records that it did.
func (q *Queue) enqueue(ctx context.Context, id, data string) error {
	var c command
	if err := json.Unmarshal([]byte(data), &c); err != nil {
		return fmt.Errorf("admission: command %s: %w", id, err)
	}
	if err := tasks.Enqueue(ctx, q.cfg.Next, tasks.Command{Task: asynq.NewTask(c.Type, c.Payload), Options: c.options()}); err != nil {
		return fmt.Errorf("admission: %w", err)
	}
	if err := q.cfg.Redis.SAdd(ctx, keyQueued, id).Err(); err != nil {
		return fmt.Errorf("admission: %w", err)
	}
	q.log.Debug("admitted", zap.String("task_id", id), zap.String("tenant", c.Tenant), zap.String("priority", c.Priority))
	return nil
}

// sweep releases the admitted tasks asynq has finished (completed,
// archived, or gone past its retention) and enqueues those never handed
// to it.
func (q *Queue) sweep(ctx context.Context) error {
	flight, err := q.cfg.Redis.HKeys(ctx, keyFlight).Result()
	if err != nil {
		return fmt.Errorf("admission: %w", err)
	}
	if len(flight) == 0 {
		return nil
	}
	queued, err := q.cfg.Redis.SMembers(ctx, keyQueued).Result()
	if err != nil {
		return fmt.Errorf("admission: %w", err)
	}
	enqueued := map[string]bool{}
	for _, id := range queued {
		enqueued[id] = true
	}
	for _, id := range flight {
		if !enqueued[id] {
			data, err := q.cfg.Redis.HGet(ctx, keyCommand, id).Result()
			if errors.Is(err, redis.Nil) {
				continue // released meanwhile
			}
			if err != nil {
				return fmt.Errorf("admission: %w", err)
			}
			if err := q.enqueue(ctx, id, data); err != nil {
				return err
			}
			continue
		}
		info, err := q.cfg.Tasks.GetTaskInfo(tasks.QueueTranscode, id)
		switch {
		case errors.Is(err, asynq.ErrTaskNotFound), errors.Is(err, asynq.ErrQueueNotFound):
		case err != nil:
			return fmt.Errorf("admission: task %s: %w", id, err)
		case info.State != asynq.TaskStateCompleted && info.State != asynq.TaskStateArchived:
			continue
		}
		if err := release.Run(ctx, q.cfg.Redis, nil, id).Err(); err != nil {
			return fmt.Errorf("admission: release %s: %w", id, err)
		}
	}
	return nil
}

// Tenant is one tenant's transcode work: waiting for admission, per
// priority, and admitted (in asynq, queued or running).
type Tenant struct {
	Waiting  map[string]int
	Admitted int
}

// Snapshot is every tenant's work, for metrics and tests.
func (q *Queue) Snapshot(ctx context.Context) (map[string]Tenant, error) {
	counts, err := q.cfg.Redis.HGetAll(ctx, keyCount).Result()
	if err != nil {
		return nil, fmt.Errorf("admission: %w", err)
	}
	active, err := q.cfg.Redis.SMembers(ctx, keyActive).Result()
	if err != nil {
		return nil, fmt.Errorf("admission: %w", err)
	}
	out := map[string]Tenant{}
	for _, t := range slices.Sorted(maps.Keys(counts)) {
		var n int
		_, _ = fmt.Sscan(counts[t], &n)
		out[t] = Tenant{Waiting: map[string]int{}, Admitted: n}
	}
	for _, t := range active {
		st, ok := out[t]
		if !ok {
			st = Tenant{Waiting: map[string]int{}}
		}
		for _, p := range tasks.Priorities() {
			n, err := q.cfg.Redis.LLen(ctx, prefix+"wait:"+t+":"+p).Result()
			if err != nil {
				return nil, fmt.Errorf("admission: %w", err)
			}
			if n > 0 {
				st.Waiting[p] = int(n)
			}
		}
		out[t] = st
	}
	return out, nil
}

// Middleware releases a transcode-queue task's admission as soon as its
// handler is done with it — succeeded, or failed for good — and admits the
// next waiting work, so a hand-over does not wait for the next pass. A
// task that will be retried keeps its admission.
func (q *Queue) Middleware() asynq.MiddlewareFunc {
	return func(next asynq.Handler) asynq.Handler {
		return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
			err := next.ProcessTask(ctx, t)
			queue, _ := asynq.GetQueueName(ctx)
			id, _ := asynq.GetTaskID(ctx)
			if queue != tasks.QueueTranscode || err != nil && !errors.Is(err, asynq.SkipRetry) || ctx.Err() != nil {
				return err
			}
			if rerr := release.Run(ctx, q.cfg.Redis, nil, id).Err(); rerr != nil {
				q.log.Warn("admission release", zap.String("task_id", id), zap.Error(rerr))
			} else if aerr := q.admitAll(ctx); aerr != nil {
				q.log.Warn("admission after release", zap.String("task_id", id), zap.Error(aerr))
			}
			return err
		})
	}
}

// Tasks wraps next (the asynq inspector) for a reconciler: a transcode
// task waiting for admission is pending, not lost. ctx bounds its Redis
// reads (GetTaskInfo takes none).
func (q *Queue) Tasks(ctx context.Context, next TaskStates) TaskStates {
	return waitingTasks{ctx: ctx, q: q, next: next}
}

type waitingTasks struct {
	ctx  context.Context
	q    *Queue
	next TaskStates
}

func (w waitingTasks) GetTaskInfo(queue, id string) (*asynq.TaskInfo, error) {
	if queue == tasks.QueueTranscode {
		waiting, err := w.q.Waiting(w.ctx, id)
		if err != nil {
			return nil, err
		}
		if waiting {
			return &asynq.TaskInfo{ID: id, Queue: queue, State: asynq.TaskStatePending}, nil
		}
	}
	return w.next.GetTaskInfo(queue, id)
}
