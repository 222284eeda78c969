package lease

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"
	"go.uber.org/zap"

	"github.com/kilnvideo/kiln/internal/tasks"
)

// ActiveTasks is the part of *asynq.Inspector the rescuer reads.
type ActiveTasks interface {
	ListActiveTasks(queue string, opts ...asynq.ListOption) ([]*asynq.TaskInfo, error)
}

var _ ActiveTasks = (*asynq.Inspector)(nil)

// Rescuer enqueues a copy of every active stage task whose lease is gone
// (see the package comment).
type Rescuer struct {
	cfg     Config
	active  ActiveTasks
	queue   tasks.Enqueuer
	counts  *Counts
	missing map[string]time.Time // task id → when its lease was first seen missing
	now     func() time.Time
}

// Rescuer returns a rescuer that lists tasks with active and enqueues
// copies with queue.
func (m *Manager) Rescuer(active ActiveTasks, queue tasks.Enqueuer) *Rescuer {
	return &Rescuer{cfg: m.cfg, active: active, queue: queue, counts: m.counts, missing: map[string]time.Time{}, now: time.Now}
}

// Run makes a pass every TTL/3 until ctx ends.
func (r *Rescuer) Run(ctx context.Context) {
	tick := time.NewTicker(r.cfg.ttl() / 3)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if err := r.Pass(ctx); err != nil && ctx.Err() == nil {
			r.cfg.Logger.Warn("task rescue pass failed", zap.Error(err))
		}
	}
}

// Pass looks at every active stage task once and rescues those whose lease
// has been missing for TTL/2 or more.
func (r *Rescuer) Pass(ctx context.Context) error {
	seen := map[string]bool{}
	var errs []error
	for _, st := range tasks.Stages() {
		if err := r.passQueue(ctx, st.Queue, seen); err != nil {
			errs = append(errs, err)
		}
	}
	for id := range r.missing {
		if !seen[id] {
			delete(r.missing, id)
		}
	}
	return errors.Join(errs...)
}

func (r *Rescuer) passQueue(ctx context.Context, queue string, seen map[string]bool) error {
	const pageSize = 200
	for page := 1; ; page++ {
		infos, err := r.active.ListActiveTasks(queue, asynq.PageSize(pageSize), asynq.Page(page))
		if errors.Is(err, asynq.ErrQueueNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("lease: list active %s: %w", queue, err)
		}
		for _, info := range infos {
			if _, ok := tasks.StageOf(info.Type); !ok {
				continue
			}
			seen[info.ID] = true
			if err := r.check(ctx, info); err != nil {
				return err
			}
		}
		if len(infos) < pageSize {
			return nil
		}
	}
}

// check rescues info when its lease has been missing long enough.
func (r *Rescuer) check(ctx context.Context, info *asynq.TaskInfo) error {
	base := BaseID(info.ID)
	n, err := r.cfg.Redis.Exists(ctx, leaseKey(base), doneKey(base)).Result()
	if err != nil {
		return fmt.Errorf("lease: %s: %w", base, err)
	}
	if n > 0 { // running under its lease, or finished (asynq will recover and drop it)
		delete(r.missing, info.ID)
		return nil
	}
	now := r.now()
	first, ok := r.missing[info.ID]
	if !ok {
		r.missing[info.ID] = now
		return nil
	}
	if now.Sub(first) < r.cfg.ttl()/2 {
		return nil
	}
	id := RescueID(info.ID)
	opts := []asynq.Option{asynq.TaskID(id), asynq.Queue(info.Queue), asynq.MaxRetry(info.MaxRetry), asynq.Retention(tasks.Retention)}
	if info.Timeout > 0 {
		opts = append(opts, asynq.Timeout(info.Timeout))
	}
	_, err = r.queue.EnqueueContext(ctx, asynq.NewTask(info.Type, info.Payload), opts...)
	if errors.Is(err, asynq.ErrTaskIDConflict) || errors.Is(err, asynq.ErrDuplicateTask) {
		return nil // rescued already, by this worker or another
	}
	if err != nil {
		return fmt.Errorf("lease: rescue %s: %w", info.ID, err)
	}
	r.counts.Rescued.Add(1)
	jobID, _, _ := tasks.Head(asynq.NewTask(info.Type, info.Payload))
	r.cfg.Logger.Warn("stage task rescued: its worker stopped renewing its lease",
		zap.String("job_id", jobID), zap.String("task_id", info.ID), zap.String("rescue_id", id),
		zap.Duration("lease_missing_for", now.Sub(first)))
	return nil
}
