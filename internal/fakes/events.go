package fakes

import (
	"context"
	"sync"

	"github.com/kilnvideo/kiln/internal/tasks"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

var _ tasks.Publisher = (*Events)(nil)

// Events is the job-event bus (a tasks.Publisher): it records the events
// published.
type Events struct {
	// Err, when set, is the error of every publish.
	Err error
	// Fail decides the error of publishing ev; nil: success.
	Fail func(ev *kilnv1.JobEvent) error

	mu     sync.Mutex
	events []*kilnv1.JobEvent
	// ctxErrs[i] is ctx.Err() when events[i] was published.
	ctxErrs []error
}

// PublishJobEvent records ev and ctx.Err() (CtxErrs), unless Err or Fail
// fails it.
func (e *Events) PublishJobEvent(ctx context.Context, ev *kilnv1.JobEvent) error {
	if e.Err != nil {
		return e.Err
	}
	if e.Fail != nil {
		if err := e.Fail(ev); err != nil {
			return err
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.events = append(e.events, ev)
	e.ctxErrs = append(e.ctxErrs, ctx.Err())
	return nil
}

// Events are the events published so far, in order.
func (e *Events) Events() []*kilnv1.JobEvent {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]*kilnv1.JobEvent(nil), e.events...)
}

// Of are the events of job jobID published so far, in order.
func (e *Events) Of(jobID string) []*kilnv1.JobEvent {
	var out []*kilnv1.JobEvent
	for _, ev := range e.Events() {
		if ev.GetJobId() == jobID {
			out = append(out, ev)
		}
	}
	return out
}

// CtxErrs are ctx.Err() of the context of each event published so far, in
// order: element i belongs to Events()[i] (take CtxErrs first, and Events
// has at least as many). Publishing must work even when the caller's own
// context is done, so a test can check they are all nil.
func (e *Events) CtxErrs() []error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]error(nil), e.ctxErrs...)
}

// IDs are the ids of the events published so far, in order.
func (e *Events) IDs() []string {
	var ids []string
	for _, ev := range e.Events() {
		ids = append(ids, ev.GetEventId())
	}
	return ids
}
