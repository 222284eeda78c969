package fakes

import (
	"context"
	"sync"

	"github.com/hibiken/asynq"

	"github.com/kilnvideo/kiln/internal/tasks"
)

var _ tasks.Enqueuer = (*Queue)(nil)

// Enqueued is one task enqueued, with its options.
type Enqueued struct {
	Task *asynq.Task
	Opts []asynq.Option
}

// Opt is the value of the option of type typ, or nil.
func (e Enqueued) Opt(typ asynq.OptionType) any {
	for _, o := range e.Opts {
		if o.Type() == typ {
			return o.Value()
		}
	}
	return nil
}

// Queue is the task queue (a tasks.Enqueuer): it records the tasks
// enqueued and their options.
type Queue struct {
	// Err, when set, is the error of every enqueue.
	Err error

	mu  sync.Mutex
	got []Enqueued
}

// EnqueueContext records task and opts, unless Err is set.
func (q *Queue) EnqueueContext(_ context.Context, task *asynq.Task, opts ...asynq.Option) (*asynq.TaskInfo, error) {
	if q.Err != nil {
		return nil, q.Err
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.got = append(q.got, Enqueued{task, opts})
	return &asynq.TaskInfo{Type: task.Type()}, nil
}

// Enqueued are the tasks enqueued so far, in order.
func (q *Queue) Enqueued() []Enqueued {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]Enqueued(nil), q.got...)
}
