package testenv

import (
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
)

// TestRedisDBRefusesStackDB: the stack's own database is never flushed,
// whatever the environment (no connection is attempted).
func TestRedisDBRefusesStackDB(t *testing.T) {
	t.Setenv("KILN_TEST_REDIS_ADDR", "127.0.0.1:1")
	for _, required := range []string{"1", ""} {
		t.Setenv(RequireServicesEnv, required)
		r := run(t, func(tb testing.TB) { RedisDB(tb, 0) })
		if r.outcome != "fatal" || !strings.Contains(r.msg, "database 0") {
			t.Errorf("%s=%q: %s %q, want fatal naming database 0", RequireServicesEnv, required, r.outcome, r.msg)
		}
	}
}

// states is a TaskInfoGetter whose task goes through states, one per call,
// then stays in the last; a "" state is an error.
type states struct {
	calls  atomic.Int32
	states []asynq.TaskState
}

func (s *states) GetTaskInfo(queue, id string) (*asynq.TaskInfo, error) {
	i := min(int(s.calls.Add(1))-1, len(s.states)-1)
	if s.states[i] == 0 {
		return nil, errors.New("NOT_FOUND: no such task")
	}
	return &asynq.TaskInfo{ID: id, Queue: queue, State: s.states[i]}, nil
}

// TestWaitTaskState: it polls until the state comes, and fails naming the
// last state (or error) seen when it does not.
func TestWaitTaskState(t *testing.T) {
	g := &states{states: []asynq.TaskState{0, asynq.TaskStatePending, asynq.TaskStateActive, asynq.TaskStateArchived}}
	var ti *asynq.TaskInfo
	r := run(t, func(tb testing.TB) {
		ti = WaitTaskState(tb, g, "q", "id1", asynq.TaskStateArchived, 10*time.Second)
	})
	if r.outcome != "passed" || ti == nil || ti.ID != "id1" || ti.State != asynq.TaskStateArchived || g.calls.Load() != 4 {
		t.Fatalf("%s %q: task %+v after %d calls, want archived after 4", r.outcome, r.msg, ti, g.calls.Load())
	}

	tests := []struct {
		state asynq.TaskState
		last  string
	}{{asynq.TaskStateRetry, "last: retry"}, {0, "last: NOT_FOUND: no such task"}}
	for _, tt := range tests {
		g := &states{states: []asynq.TaskState{tt.state}}
		r := run(t, func(tb testing.TB) { WaitTaskState(tb, g, "q", "id2", asynq.TaskStateCompleted, 120*time.Millisecond) })
		if r.outcome != "fatal" || !strings.Contains(r.msg, "task id2 in q: not completed after 120ms") || !strings.Contains(r.msg, tt.last) {
			t.Errorf("%s %q, want fatal: not completed, %s", r.outcome, r.msg, tt.last)
		}
	}
}
